"""The one typed configuration of gramc: dataclasses, YAML loading, `key.sub=value` overrides.

Every component receives its settings from a `Config` (or one of its sections) that was
validated once here. Nothing else in gramc reads flags or environment variables with defaults
of its own. Unknown keys and values of the wrong type are errors that name the key.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import yaml


class ConfigError(ValueError):
    """A configuration key is unknown, has the wrong type, or an invalid value."""


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------


@dataclass
class RunConfig:
    """Where outputs go and how the run is seeded."""

    out: str = "runs/default"  # run folder (config, checkpoints, logs, metrics)
    seed: int = 2023
    device: str = "auto"  # auto | cpu | cuda | cuda:N


@dataclass
class SyntheticConfig:
    """Sizes of the built-in synthetic dataset (see docs/synthetic.md)."""

    num_users: int = 600
    num_items: int = 300
    num_topics: int = 12
    min_len: int = 5  # interactions per user (>= 5)
    max_len: int = 20
    num_successors: int = 3  # "successor" items per item (strong item-to-item affinities)
    successor_prob: float = 0.6  # next item is one of the current item's successors
    topic_prob: float = 0.25  # else an item of the current (30%: the next) topic; else a popular item
    seed: int = 7


@dataclass
class DataConfig:
    """Which dataset to read and how item text and histories are rendered."""

    path: str = ""  # prepared dataset folder (from `gramc data prepare`); "" = build synthetic
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    max_his: int = 20  # most recent history items kept per sample
    text_fields: list[str] = field(
        default_factory=lambda: ["title", "brand", "categories", "price", "salesrank"]
    )
    lowercase: bool = True
    missing_metadata: Literal["drop", "error"] = "drop"  # items in sequences without metadata
    kcore: int = 5  # k-core filter (to a fixpoint) of raw Amazon reviews in `gramc data prepare`; 0 = off


@dataclass
class IdsConfig:
    """Textual item IDs: load a GRAM ID file or build hierarchical semantic IDs."""

    file: str = ""  # GRAM-format ID file; "" = build with the settings below
    # local folder / hub name of a T5 tokenizer, or "train" (SentencePiece on item texts); with
    # model.preset=pretrained, "train" resolves to model.pretrained (weights only with their own vocabulary)
    tokenizer: str = "train"
    vocab_size: int = 2000  # for a trained SentencePiece tokenizer
    clusters: int = 32  # c: clusters per level
    levels: int = 3  # l: levels of the hierarchy
    embedding: Literal["tfidf", "minilm", "npy"] = "tfidf"
    embedding_file: str = ""  # .npy when embedding == "npy"
    svd_dim: int = 64
    seed: int = 42
    text_tokens: int = 128  # label TF counts the first N tokens of each item text
    threads: int = 0  # BLAS/OpenMP threads for SVD and k-means; 0 = library default


@dataclass
class GcnConfig:
    """LightGCN item embeddings (the collaborative prefix's table) and similar items."""

    dim: int = 64
    layers: int = 3
    epochs: int = 10  # validation peaks within 10 epochs on Amazon Beauty at this lr (docs/benchmarks.md)
    lr: float = 2e-2  # Adam; chosen by the Beauty sweep (bench/lightgcn_beauty.py)
    batch_size: int = 0  # BPR triples per step; 0 = auto, ~20 steps per epoch (8192 on Beauty)
    reg: float = 1e-4  # L2 regularisation of the ego embeddings used in a batch
    seed: int = 2023
    device: str = "cpu"
    interactions: Literal["train", "train+valid", "all"] = "train"  # anything but "train" leaks
    similar_k: int = 20  # neighbours written to similar_items.txt
    out: str = ""  # GCN folder; "" = <run.out>/gcn
    init_std: float = 0.1  # std of the normal init of the ego embeddings (LightGCN's choice)
    eval_every: int = 2  # epochs between validation points (curve, keep_best); 0 = end only
    keep_best: bool = True  # keep the embeddings of the curve point with the best validation ndcg@10


@dataclass
class PrefixConfig:
    """The collaborative prefix: frozen GCN rows of recent items -> adapter -> soft tokens."""

    enabled: bool = True
    num_items: int = 5  # K most recent history items
    placement: Literal["user_passage", "every_passage", "memory"] = "user_passage"
    hidden: int = 0  # adapter hidden size; 0 = d_model
    init_scale: float = 0.3
    learn_scale: bool = True
    dropout: float = 0.1  # dropout inside the adapter
    prefix_dropout: float = 0.1  # whole-prefix dropout per sample (multiplicative mask)


@dataclass
class ModelConfig:
    """Backbone and input construction of GRAM-C."""

    preset: Literal["tiny", "small", "pretrained"] = "tiny"
    pretrained: str = ""  # local folder or hub name when preset == "pretrained"
    dropout: float = 0.1
    similar_items: int = 10  # CF neighbours verbalised per item passage
    similar_source: str = "gcn"  # "gcn" (computed from training interactions) or a GRAM file path
    id_linking: bool = True
    history_order: Literal["recent_first", "oldest_first"] = "recent_first"
    passage_len: int = 128  # tokens per item passage (incl. </s>)
    user_passage_len: int = 128  # tokens for the user passage (incl. </s>)
    target_len: int = 32
    # output normalisation of the decoder: "vocab" = softmax over the whole vocabulary (GRAM);
    # "trie" = softmax over the trie children of the target's prefix only (training and search)
    softmax: Literal["vocab", "trie"] = "vocab"
    prefix: PrefixConfig = field(default_factory=PrefixConfig)


@dataclass
class TrainConfig:
    """Optimisation and batching."""

    epochs: int = 30
    batch_size: int = 32  # targets (samples) per micro-batch per process
    # "sample": independent shuffled samples (GRAM: 128 per optimiser step); "sequence": a speed mode,
    # micro-batches of whole user sequences (all consecutive prefixes together, each item passage
    # encoded once per batch): fewer samples per step than nominal and other gradient statistics
    batching: Literal["sequence", "sample"] = "sequence"
    grad_accum: int = 1
    lr: float = 1e-3
    weight_decay: float = 0.01
    eps: float = 1e-6
    warmup: float = 0.05  # fraction of optimiser steps
    clip: float = 1.0
    bf16: bool = False
    num_workers: int = 0
    log_every: int = 20  # optimiser steps
    save_every: int = 0  # optimiser steps; 0 = only at epoch end
    eval_every: int = 1  # epochs between validations
    eval_users: int = 0  # validation users during training; 0 = all
    max_steps: int = 0  # stop after this many optimiser steps (0 = no limit)
    final_eval: bool = True  # evaluate the best checkpoint on valid and test when training ends
    final_eval_users: int = 0  # users of that final evaluation (first N); 0 = all (published numbers)
    valid_loss_samples: int = 0  # validation-loss samples per validation (seeded subset); 0 = all


@dataclass
class EvalConfig:
    """Trie-constrained beam search and metrics."""

    beams: int = 50
    length_penalty: float = 0.0  # 0 = raw sum of log-probabilities; GRAM used 1.0
    ks: list[int] = field(default_factory=lambda: [1, 5, 10, 20, 50])
    batch_size: int = 64  # users per beam-search batch
    exclude_history: bool = False  # never recommend an item already in the user's history
    bootstrap: int = 1000  # bootstrap resamples for confidence intervals
    unknown_history: Literal["error", "skip"] = "error"  # for `gramc recommend`
    # when the search may stop: heuristic = HF early_stopping=False bounded by the best running
    # beam (exact when length_penalty=0), hf4 = HF 4.x's rule as GRAM ran it (best candidate of the
    # step, finished ones included), never = HF "never" (exact bound for any penalty), finished = HF True
    early_stopping: Literal["heuristic", "hf4", "never", "finished"] = "heuristic"
    item_batch_size: int = 256  # item passages encoded per chunk (once per checkpoint)
    bf16: bool = True  # encode item passages in bf16 autocast on CUDA (CPU always fp32)
    predictions_top: int = 50  # items per user written to predictions.jsonl


@dataclass
class BaselineConfig:
    """Settings of the non-generative baselines (SASRec with cross-entropy)."""

    sasrec_dim: int = 64
    sasrec_layers: int = 2
    sasrec_heads: int = 1
    sasrec_ffn: int = 64  # inner size of the feed-forward layer (the SASRec paper: = sasrec_dim)
    sasrec_dropout: float = 0.5
    sasrec_max_len: int = 50
    sasrec_epochs: int = 200
    sasrec_lr: float = 3e-3  # 1e-3 learns ~3x slower per epoch on Beauty (docs/benchmarks.md)
    sasrec_batch_size: int = 128  # user sequences per step (every position is a target)
    sasrec_patience: int = 10  # epochs without a better validation ndcg@10 before stopping
    sasrec_lr_decay: float = 0.5  # multiply the lr by this after sasrec_decay_patience epochs without
    sasrec_decay_patience: int = 3  # a better validation ndcg@10 (1.0 = constant lr)
    sasrec_weight_decay: float = 0.0
    sasrec_temperature: float = 0.0  # > 0: logits = cosine(state, item) / temperature; 0 = dot product
    sasrec_tied_output: bool = True  # score items with the input item embeddings (False: a separate table)
    # learn one logit offset for items already in the input sequence (Beauty: it goes to about -12
    # and validation ndcg@10 rises from 0.047 to 0.063; without it a history item is the top-1)
    sasrec_repeat_bias: bool = True
    sasrec_max_minutes: float = 0.0  # wall-time budget for training; 0 = no limit


@dataclass
class PipelineConfig:
    """`gramc pipeline` / `gramc quickstart`: raw inputs of the prepare stage, budgets, baselines."""

    sequences: str = ""  # raw sequence file for the prepare stage; "" = data.path as is, or synthetic
    items: str = ""  # raw item metadata file (RecBole .item, Amazon meta, GRAM text); "" = none
    seq_format: str = "auto"  # reader of `sequences` (see `gramc data prepare --help`)
    item_format: str = "auto"  # reader of `items`
    baselines: list[str] = field(default_factory=lambda: ["pop"])  # pop | sasrec | lightgcn, compared in the report
    eval_users: int = 0  # users of the final valid/test evaluation (first N); 0 = all
    train_minutes: float = 0.0  # > 0: train.max_steps set from a measured probe to fit this wall budget


@dataclass
class Config:
    """The whole resolved configuration of a gramc run."""

    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    ids: IdsConfig = field(default_factory=IdsConfig)
    gcn: GcnConfig = field(default_factory=GcnConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    baseline: BaselineConfig = field(default_factory=BaselineConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)

    def validate(self) -> "Config":
        """Check cross-field constraints; raise ConfigError naming the key."""
        _check(self.data.max_his >= 1, "data.max_his", "must be >= 1")
        _check(self.ids.clusters >= 2, "ids.clusters", "must be >= 2")
        _check(self.ids.levels >= 1, "ids.levels", "must be >= 1")
        _check(self.gcn.dim >= 1 and self.gcn.layers >= 0, "gcn.dim/gcn.layers", "must be positive")
        _check(self.model.prefix.num_items >= 1, "model.prefix.num_items", "must be >= 1")
        _check(0.0 <= self.model.prefix.prefix_dropout < 1.0, "model.prefix.prefix_dropout", "must be in [0, 1)")
        _check(self.model.passage_len >= 8, "model.passage_len", "must be >= 8")
        _check(self.model.similar_items >= 0, "model.similar_items", "must be >= 0")
        _check(self.model.preset != "pretrained" or bool(self.model.pretrained), "model.pretrained",
               "must name a folder or hub model when model.preset is 'pretrained'")
        if self.model.preset == "pretrained" and self.ids.tokenizer == "train":
            self.ids.tokenizer = self.model.pretrained  # the checkpoint's own vocabulary
        _check(self.train.batch_size >= 1, "train.batch_size", "must be >= 1")
        _check(self.train.grad_accum >= 1, "train.grad_accum", "must be >= 1")
        _check(self.train.lr > 0, "train.lr", "must be > 0")
        _check(0.0 <= self.train.warmup < 1.0, "train.warmup", "must be a fraction in [0, 1)")
        _check(self.eval.beams >= 1, "eval.beams", "must be >= 1")
        _check(len(self.eval.ks) > 0 and all(k >= 1 for k in self.eval.ks), "eval.ks", "must be positive integers")
        b = self.baseline
        _check(b.sasrec_dim % b.sasrec_heads == 0, "baseline.sasrec_heads", "must divide baseline.sasrec_dim")
        _check(b.sasrec_ffn >= 1, "baseline.sasrec_ffn", "must be >= 1")
        _check(0.0 < b.sasrec_lr_decay <= 1.0, "baseline.sasrec_lr_decay", "must be in (0, 1] (1 = constant lr)")
        _check(b.sasrec_decay_patience >= 0, "baseline.sasrec_decay_patience", "must be >= 0")
        _check(b.sasrec_temperature >= 0, "baseline.sasrec_temperature", "must be >= 0 (0 = plain dot product)")
        return self


def _check(ok: bool, key: str, what: str) -> None:
    if not ok:
        raise ConfigError(f"config key '{key}' {what}")


# --------------------------------------------------------------------------------------------
# Loading, overriding, dumping
# --------------------------------------------------------------------------------------------


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert a YAML/CLI value to the declared type `tp`, or raise ConfigError naming `key`."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a mapping, got {type(value).__name__}")
        return _build(tp, value, key)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"config key '{key}' must be one of {list(args)}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        non_none = [a for a in args if a is not type(None)]
        if value is None and type(None) in args:
            return None
        return _coerce(value, non_none[0], key)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}' must be a list, got {value!r}")
        return [_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"config key '{key}' must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key '{key}' must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key '{key}' must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key '{key}' must be a string, got {value!r}")
        return value
    raise ConfigError(f"config key '{key}' has an unsupported type {tp}")  # pragma: no cover


def _build(cls: type, values: dict, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for k in values:
        if k not in names:
            where = f"{prefix}.{k}" if prefix else k
            raise ConfigError(f"unknown config key '{where}' (known keys here: {sorted(names)})")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in values:
            key = f"{prefix}.{f.name}" if prefix else f.name
            kwargs[f.name] = _coerce(values[f.name], hints[f.name], key)
    return cls(**kwargs)


def _parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like key.sub=value")
    key, raw = text.split("=", 1)
    value = yaml.safe_load(raw) if raw != "" else ""
    return key.strip().split("."), value


def _deep_set(tree: dict, path: list[str], value: Any) -> None:
    node = tree
    for part in path[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override '{'.'.join(path)}': '{part}' is not a section")
    node[path[-1]] = value


def _expected_type(path: list[str]) -> Any:
    tp: Any = Config
    for i, part in enumerate(path):
        if not dataclasses.is_dataclass(tp):
            raise ConfigError(f"unknown config key '{'.'.join(path)}'")
        hints = typing.get_type_hints(tp)
        if part not in hints:
            raise ConfigError(f"unknown config key '{'.'.join(path[: i + 1])}'")
        tp = hints[part]
    return tp


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load YAML (optional), apply `key.sub=value` overrides, validate, and return a Config."""
    tree: dict = {}
    if path:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file '{p}' does not exist")
        try:
            loaded = yaml.safe_load(p.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise ConfigError(f"config file '{p}' is not valid YAML: {e}") from e
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file '{p}' must hold a mapping at the top level")
        tree = loaded
    for text in overrides or []:
        keys, value = _parse_override(text)
        tp = _expected_type(keys)
        # a string override of a str field stays a string even if YAML would read a number
        if tp is str and not isinstance(value, str):
            value = text.split("=", 1)[1]
        _deep_set(tree, keys, value)
    cfg = _build(Config, tree)
    return cfg.validate()


def to_dict(cfg: Any) -> dict:
    """The config (or a section) as plain nested dicts."""
    return dataclasses.asdict(cfg)


def dump_yaml(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; used for config diffs."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else k
        if isinstance(v, dict):
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out


def from_dict(tree: dict) -> Config:
    """Rebuild a Config from `to_dict` output (e.g. a run folder's config.yaml)."""
    return _build(Config, tree).validate()


__all__ = [
    "Config", "ConfigError", "RunConfig", "DataConfig", "SyntheticConfig", "IdsConfig", "GcnConfig",
    "PrefixConfig", "ModelConfig", "TrainConfig", "EvalConfig", "BaselineConfig", "PipelineConfig",
    "load_config", "to_dict", "dump_yaml", "flatten", "from_dict", "Optional",
]
