"""The one typed configuration of gramc: dataclasses, YAML loading, `key.sub=value` overrides.

Every component receives its settings from a `Config` (or one of its sections) that was
validated once here. Nothing else in gramc reads flags or environment variables with defaults
of its own. Unknown keys and values of the wrong type are errors that name the key.
"""

from __future__ import annotations

import copy
import dataclasses
import io
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Sequence

import yaml

from .errors import GramcError


class ConfigError(GramcError, ValueError):
    """A configuration key is unknown, has the wrong type, or an invalid value."""


MAX_BOOTSTRAP = 100_000  # eval.bootstrap: checked when the config loads, not after a whole search


def check_problems(problems: list[str]) -> None:
    """Raise one ConfigError listing every problem (none: return)."""
    if problems:
        raise ConfigError(problems[0] if len(problems) == 1 else
                          f"{len(problems)} config problems:\n  " + "\n  ".join(problems))


def failed(rules: list[tuple[bool, str, str]]) -> list[str]:
    """The message of every rule `(holds, full key, what it must be)` that does not hold."""
    return [f"config key '{key}' {what}" for ok, key, what in rules if not ok]


# --------------------------------------------------------------------------------------------
# Sections: each one's `problems()` lists its out-of-range keys (nested sections included)
# --------------------------------------------------------------------------------------------


@dataclass
class RunConfig:
    """Where outputs go and how the run is seeded."""

    out: str = "runs/default"  # run folder (config, checkpoints, logs, metrics)
    seed: int = 2023
    device: str = "auto"  # auto | cpu | cuda | cuda:N (checked where the device is opened)

    def problems(self) -> list[str]:
        return []


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

    def problems(self) -> list[str]:
        return failed([
            (self.num_users >= 1, "data.synthetic.num_users", "must be >= 1"),
            (self.num_items >= 2, "data.synthetic.num_items", "must be >= 2"),
            (self.num_topics >= 1, "data.synthetic.num_topics", "must be >= 1"),
            (5 <= self.min_len <= self.max_len, "data.synthetic.min_len", "must be >= 5 and <= data.synthetic.max_len"),
            (0 <= self.successor_prob <= 1, "data.synthetic.successor_prob", "must be a probability in [0, 1]"),
            (0 <= self.topic_prob <= 1, "data.synthetic.topic_prob", "must be a probability in [0, 1]"),
        ])


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

    def problems(self) -> list[str]:
        return failed([
            (self.max_his >= 1, "data.max_his", "must be >= 1"),
            (self.kcore >= 0, "data.kcore", "must be >= 0 (0 = off)"),
        ]) + self.synthetic.problems()


@dataclass
class IdsConfig:
    """Textual item IDs: load a GRAM ID file or build hierarchical semantic IDs."""

    file: str = ""  # GRAM-format ID file; "" = build with the settings below
    # local folder / hub name of a T5 tokenizer, or "train" (SentencePiece on item texts); with
    # model.preset=pretrained, `Config.resolved` turns "train" into model.pretrained (weights only
    # work with their own vocabulary)
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

    def problems(self) -> list[str]:
        return failed([
            (self.clusters >= 2, "ids.clusters", "must be >= 2"),
            (self.levels >= 1, "ids.levels", "must be >= 1"),
            (self.vocab_size >= 100, "ids.vocab_size", "must be >= 100"),
            (self.svd_dim >= 1, "ids.svd_dim", "must be >= 1"),
            (self.text_tokens >= 1, "ids.text_tokens", "must be >= 1"),
            (self.threads >= 0, "ids.threads", "must be >= 0 (0 = library default)"),
        ])


@dataclass
class GcnConfig:
    """LightGCN item embeddings (the collaborative prefix's table) and similar items."""

    dim: int = 64
    layers: int = 3
    epochs: int = 10
    lr: float = 2e-2  # Adam learning rate
    batch_size: int = 0  # BPR triples per step; 0 = auto, about 20 steps per epoch
    reg: float = 1e-4  # L2 regularisation of the ego embeddings used in a batch
    seed: int = 2023
    device: str = "cpu"
    interactions: Literal["train", "train+valid", "all"] = "train"  # anything but "train" leaks
    similar_k: int = 20  # neighbours written to similar_items.txt; 0 = no file
    out: str = ""  # GCN folder; "" = <run.out>/gcn
    init_std: float = 0.1  # std of the normal init of the ego embeddings (LightGCN's choice)
    eval_every: int = 2  # epochs between validation points (curve, keep_best); 0 = end only
    keep_best: bool = True  # keep the embeddings of the curve point with the best validation ndcg@10

    def problems(self) -> list[str]:
        """Also checked by `train_lightgcn`, for a GcnConfig built without a Config."""
        return failed([
            (self.dim >= 1, "gcn.dim", "must be >= 1"),
            (self.layers >= 0, "gcn.layers", "must be >= 0"),
            (self.epochs >= 1, "gcn.epochs", "must be >= 1"),
            (self.lr > 0, "gcn.lr", "must be > 0"),
            (self.reg >= 0, "gcn.reg", "must be >= 0"),
            (self.batch_size >= 0, "gcn.batch_size", "must be >= 0 (0 = automatic)"),
            (self.eval_every >= 0, "gcn.eval_every", "must be >= 0 (0 = end only)"),
            (self.similar_k >= 0, "gcn.similar_k", "must be >= 0"),
            (self.init_std > 0, "gcn.init_std", "must be > 0"),
        ])


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
    # control for the ablation: permute the GCN table's item rows (row 0, padding, stays), so the
    # prefix has the same parameters and inputs' statistics but no collaborative signal per item
    shuffle_table: bool = False
    shuffle_seed: int = 0  # seed of that permutation (torch.Generator)

    def problems(self) -> list[str]:
        return failed([
            (self.num_items >= 1, "model.prefix.num_items", "must be >= 1"),
            (self.hidden >= 0, "model.prefix.hidden", "must be >= 0 (0 = d_model)"),
            (0.0 <= self.prefix_dropout < 1.0, "model.prefix.prefix_dropout", "must be in [0, 1)"),
            (0.0 <= self.dropout < 1.0, "model.prefix.dropout", "must be in [0, 1)"),
        ])


@dataclass
class DenseConfig:
    """The dense retrieval head (gramc.model.dense): user and item vectors scored by a dot product."""

    enabled: bool = False
    # what an item's vector is projected from: "text" = its passage encoding (mean over real tokens),
    # "gcn" = its LightGCN row, "both" = the sum of the two projections
    item: Literal["text", "gcn", "both"] = "text"
    dim: int = 128  # size of the shared user/item space
    temperature: float = 0.05  # logits = cosine(user, item) / temperature
    weight: float = 1.0  # the dense loss's weight beside the generation loss (per target token)
    negatives: int = 32  # uniformly drawn catalogue items added to each batch's own items as negatives
    logq: bool = True  # subtract log of each candidate's sampling probability (popularity-sampled in-batch items)
    # the head trains on the backbone's states without sending its gradient back into them: generation
    # then trains exactly as without the head
    detach: bool = False

    def problems(self) -> list[str]:
        return failed([
            (self.dim >= 1, "model.dense.dim", "must be >= 1"),
            (self.temperature > 0, "model.dense.temperature", "must be > 0"),
            (self.weight >= 0, "model.dense.weight", "must be >= 0"),
            (self.negatives >= 0, "model.dense.negatives", "must be >= 0"),
        ])


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
    dense: DenseConfig = field(default_factory=DenseConfig)

    def problems(self) -> list[str]:
        return self.prefix.problems() + self.dense.problems() + failed([
            (0.0 <= self.dropout < 1.0, "model.dropout", "must be in [0, 1)"),
            (self.passage_len >= 8, "model.passage_len", "must be >= 8"),
            (self.user_passage_len >= 8, "model.user_passage_len", "must be >= 8"),
            (self.target_len >= 2, "model.target_len", "must be >= 2 (an ID token and </s>)"),
            (self.similar_items >= 0, "model.similar_items", "must be >= 0"),
            (self.preset != "pretrained" or bool(self.pretrained), "model.pretrained",
             "must name a folder or hub model when model.preset is 'pretrained'"),
            (not (self.dense.enabled and self.prefix.enabled and self.prefix.placement == "every_passage"),
             "model.dense.enabled", "needs item passages that do not depend on the user: not possible with "
             "model.prefix.placement=every_passage"),
        ])


@dataclass
class IndexingConfig:
    """The item-indexing task: extra training samples whose only passage is one item's own passage
    without its ID, and whose target is that item's ID."""

    enabled: bool = False
    ratio: float = 0.25  # indexing samples per ordinary training sample
    # which items: "train" = items with a training interaction; "catalogue" = every item of the
    # dataset (an item's text is not an interaction, and the trie already holds every item)
    items: Literal["train", "catalogue"] = "catalogue"

    def problems(self) -> list[str]:
        return failed([(self.ratio > 0, "train.indexing.ratio",
                        "must be > 0 (set train.indexing.enabled=false to turn it off)")])


@dataclass
class HeadFitConfig:
    """`gramc train-head`: a dense head fitted on a trained run's frozen backbone, from cached states,
    with a full softmax over the catalogue (gramc.recipes.dense_head)."""

    epochs: int = 20  # the epoch kept is the one with the best validation ndcg@10 (eval.fusion.tune_users)
    lr: float = 2e-3
    batch_size: int = 256

    def problems(self) -> list[str]:
        return failed([(self.epochs >= 1, "train.head.epochs", "must be >= 1"),
                       (self.lr > 0, "train.head.lr", "must be > 0"),
                       (self.batch_size >= 1, "train.head.batch_size", "must be >= 1")])


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
    # bf16 autocast of forward passes (training and validation loss; the loss itself is fp32):
    # "auto" = on where the hardware has native bf16 matmuls (a bf16-capable CUDA card; a CPU with AMX,
    # AVX512-BF16 or Arm BF16), fp32 elsewhere; true = on any device; false = fp32
    bf16: Literal["auto", True, False] = "auto"
    num_workers: int = 0  # DataLoader worker processes collating training batches; 0 = in the training process
    log_every: int = 20  # optimiser steps
    save_every: int = 0  # optimiser steps; 0 = only at epoch end
    eval_every: int = 1  # epochs between validations
    eval_users: int = 0  # validation users during training; 0 = all
    patience: int = 0  # early stopping: stop when this many epochs passed without a better validation metric; 0 = off
    # the validation figure that picks the best checkpoint and drives early stopping: hit@K or ndcg@K
    # (K one of eval.ks) or mrr, higher is better; valid_loss, lower is better. A run without beam-search
    # evaluation selects by valid_loss whatever this says
    select_metric: str = "ndcg@10"
    max_steps: int = 0  # stop after this many optimiser steps (0 = no limit)
    final_eval: bool = True  # evaluate the best checkpoint on valid and test when training ends
    final_eval_users: int = 0  # users of that final evaluation (first N); 0 = all (published numbers)
    # validation-loss samples (a subset drawn once with run.seed, the same at every validation and in
    # the final evaluation); 0 = all
    valid_loss_samples: int = 0
    indexing: IndexingConfig = field(default_factory=IndexingConfig)
    head: HeadFitConfig = field(default_factory=HeadFitConfig)

    def problems(self) -> list[str]:
        """Range checks; `train.select_metric` against `eval.ks` is `Config.problems`'s."""
        return self.indexing.problems() + self.head.problems() + failed([
            (self.epochs >= 1, "train.epochs", "must be >= 1 (use train.max_steps to stop earlier)"),
            (self.max_steps >= 0, "train.max_steps", "must be >= 0 (0 = no limit)"),
            (self.batch_size >= 1, "train.batch_size", "must be >= 1"),
            (self.grad_accum >= 1, "train.grad_accum", "must be >= 1"),
            (self.lr > 0, "train.lr", "must be > 0"),
            (self.weight_decay >= 0, "train.weight_decay", "must be >= 0 (a negative decay grows the weights)"),
            (self.eps > 0, "train.eps", "must be > 0"),
            (0.0 <= self.warmup < 1.0, "train.warmup", "must be a fraction in [0, 1)"),
            (self.clip >= 0, "train.clip", "must be >= 0"),
            (self.log_every >= 1, "train.log_every", "must be >= 1"),
            (self.eval_every >= 1, "train.eval_every", "must be >= 1"),
            (self.patience >= 0, "train.patience", "must be >= 0 (0 = no early stopping)"),
        ] + [(getattr(self, key) >= 0, f"train.{key}", "must be >= 0")
             for key in ("save_every", "eval_users", "final_eval_users", "valid_loss_samples", "num_workers")])


@dataclass
class FusionConfig:
    """Fused ranking (gramc.eval.fusion): beam items + a collaborative scorer's top K, scored exactly."""

    enabled: bool = False
    # the scorers fused with generation: "lightgcn" = LightGCN fold-in over the history the model
    # reads; "dense" = the model's dense head (model.dense); "both" = the two together
    scorer: Literal["lightgcn", "dense", "both"] = "lightgcn"
    candidates: int = 50  # each scorer's top K added to the beam's items
    # weight of the scorers in [0, 1] (split equally between them with "both"); null = tuned on
    # validation users (with "both": every split of the weight between the two, in steps of 0.05)
    weight: Optional[float] = None
    tune_users: int = 1000  # seeded validation users (run.seed) the weight is tuned on; 0 = all

    def problems(self) -> list[str]:
        return failed([
            (self.candidates >= 1, "eval.fusion.candidates", "must be >= 1"),
            (self.tune_users >= 0, "eval.fusion.tune_users", "must be >= 0 (0 = every validation user)"),
            (self.weight is None or 0.0 <= self.weight <= 1.0, "eval.fusion.weight",
             "must be between 0 and 1, or null (tuned on validation users)"),
        ])


@dataclass
class EvalConfig:
    """Trie-constrained beam search and metrics."""

    beams: int = 50
    length_penalty: float = 0.0  # 0 = raw sum of log-probabilities; GRAM used 1.0
    ks: list[int] = field(default_factory=lambda: [1, 5, 10, 20, 50])
    batch_size: int = 64  # users per beam-search batch
    exclude_history: bool = False  # never recommend an item the user had before (every one, not just the window)
    # full ranking (baselines, fusion's collaborative candidates): a target tied with other items takes
    # a seeded random place among them (run.seed, per user), or "worst", the last place
    ties: Literal["random", "worst"] = "random"
    bootstrap: int = 1000  # bootstrap resamples for confidence intervals
    unknown_history: Literal["error", "skip"] = "error"  # for `gramc recommend`
    # when the search may stop: heuristic = HF early_stopping=False bounded by the best running
    # beam (exact when length_penalty=0), hf4 = HF 4.x's rule as GRAM ran it (best candidate of the
    # step, finished ones included), never = HF "never" (exact bound for any penalty), finished = HF True
    early_stopping: Literal["heuristic", "hf4", "never", "finished"] = "heuristic"
    item_batch_size: int = 256  # item passages encoded per chunk when the item states are computed
    bf16: bool = True  # encode item passages in bf16 autocast on CUDA (CPU always fp32)
    predictions_top: int = 50  # items per user written to predictions.jsonl
    # beams < max(ks) caps hit@k / ndcg@k for k > beams (a target past the beam list counts as a
    # miss): an error unless this says the capped figures are wanted
    allow_capped: bool = False
    fusion: FusionConfig = field(default_factory=FusionConfig)

    def problems(self) -> list[str]:
        ks_ok = len(self.ks) > 0 and all(k >= 1 for k in self.ks)
        rules = [
            (self.beams >= 1, "eval.beams", "must be >= 1"),
            (ks_ok, "eval.ks", "must be positive integers"),
            (len(set(self.ks)) == len(self.ks), "eval.ks", "must not repeat a k"),
        ]
        if ks_ok:
            rules.append((self.beams >= max(self.ks) or self.allow_capped, "eval.beams",
                          f"({self.beams}) is below the largest k of eval.ks ({max(self.ks)}): hit@k and ndcg@k "
                          f"for k > {self.beams} would be capped (a target past the beam list counts as a miss). "
                          f"Raise eval.beams, drop those ks from eval.ks, or set eval.allow_capped=true"))
        return self.fusion.problems() + failed(rules + [
            (self.length_penalty >= 0, "eval.length_penalty", "must be >= 0"),
            (self.batch_size >= 1, "eval.batch_size", "must be >= 1"),
            (self.item_batch_size >= 1, "eval.item_batch_size", "must be >= 1"),
            (0 <= self.bootstrap <= MAX_BOOTSTRAP, "eval.bootstrap",
             f"must be between 0 and {MAX_BOOTSTRAP:,} (a 95% interval is stable to 3 digits from about "
             f"10,000 resamples; more only costs time)"),
            (self.predictions_top >= 1, "eval.predictions_top", "must be >= 1"),
        ])


@dataclass
class SasrecConfig:
    """SASRec trained with cross-entropy over all items (`gramc baseline sasrec`)."""

    dim: int = 64
    layers: int = 2
    heads: int = 1
    ffn: int = 64  # inner size of the feed-forward layer (the SASRec paper: = dim)
    dropout: float = 0.5
    max_len: int = 50  # most recent training items of a user the model reads
    epochs: int = 200
    lr: float = 3e-3  # AdamW learning rate
    batch_size: int = 128  # user sequences per step (every position is a target)
    patience: int = 10  # epochs without a better validation ndcg@10 before stopping
    lr_decay: float = 0.5  # multiply the lr by this after decay_patience epochs without
    decay_patience: int = 3  # a better validation ndcg@10 (1.0 = constant lr)
    weight_decay: float = 0.0
    temperature: float = 0.0  # > 0: logits = cosine(state, item) / temperature; 0 = dot product
    tied_output: bool = True  # score items with the input item embeddings (False: a separate table)
    # learn one logit offset for items already in the input sequence (with a tied output table the
    # input item's own embedding otherwise tends to put a history item at the top)
    repeat_bias: bool = True
    max_minutes: float = 0.0  # wall-time budget for training; 0 = no limit

    def problems(self) -> list[str]:
        return failed([
            (self.heads >= 1 and self.dim % max(1, self.heads) == 0, "baseline.sasrec.heads",
             "must be >= 1 and divide baseline.sasrec.dim"),
            (self.ffn >= 1, "baseline.sasrec.ffn", "must be >= 1"),
            (self.epochs >= 1, "baseline.sasrec.epochs", "must be >= 1"),
            (self.max_len >= 1, "baseline.sasrec.max_len", "must be >= 1"),
            (self.batch_size >= 1, "baseline.sasrec.batch_size", "must be >= 1"),
            (self.lr > 0, "baseline.sasrec.lr", "must be > 0"),
            (0.0 <= self.dropout < 1.0, "baseline.sasrec.dropout", "must be in [0, 1)"),
            (self.weight_decay >= 0, "baseline.sasrec.weight_decay", "must be >= 0"),
            (0.0 < self.lr_decay <= 1.0, "baseline.sasrec.lr_decay", "must be in (0, 1] (1 = constant lr)"),
            (self.patience >= 0, "baseline.sasrec.patience", "must be >= 0"),
            (self.decay_patience >= 0, "baseline.sasrec.decay_patience", "must be >= 0"),
            (self.temperature >= 0, "baseline.sasrec.temperature", "must be >= 0 (0 = plain dot product)"),
            (self.max_minutes >= 0, "baseline.sasrec.max_minutes", "must be >= 0 (0 = no limit)"),
        ])


@dataclass
class BaselineConfig:
    """Settings of the non-generative baselines (popularity and LightGCN have none of their own)."""

    sasrec: SasrecConfig = field(default_factory=SasrecConfig)

    def problems(self) -> list[str]:
        return self.sasrec.problems()


BASELINES = ("pop", "sasrec", "lightgcn")  # what `pipeline.baselines` may name (gramc.baselines)


@dataclass
class PipelineConfig:
    """`gramc pipeline` / `gramc quickstart`: raw inputs of the prepare stage, budgets, baselines."""

    sequences: str = ""  # raw sequence file for the prepare stage; "" = data.path as is, or synthetic
    items: str = ""  # raw item metadata file (RecBole .item, Amazon meta, GRAM text); "" = none
    seq_format: str = "auto"  # reader of `sequences` (see `gramc data prepare --help`)
    item_format: str = "auto"  # reader of `items`
    baselines: list[str] = field(default_factory=lambda: ["pop"])  # pop | sasrec | lightgcn, compared in the report
    train_minutes: float = 0.0  # > 0: train.max_steps set from a measured probe to fit this wall budget

    def problems(self) -> list[str]:
        return failed([
            (self.train_minutes >= 0, "pipeline.train_minutes", "must be >= 0 (0 = no budget)"),
        ] + [(name in BASELINES, "pipeline.baselines", f"has unknown baseline {name!r} (expected {', '.join(BASELINES)})")
             for name in self.baselines])


@dataclass
class Config:
    """The whole configuration of a gramc run."""

    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    ids: IdsConfig = field(default_factory=IdsConfig)
    gcn: GcnConfig = field(default_factory=GcnConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    baseline: BaselineConfig = field(default_factory=BaselineConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)

    def problems(self) -> list[str]:
        """Every section's problems, then the rules that span sections or the whole run."""
        out = [p for f in dataclasses.fields(self) for p in getattr(self, f.name).problems()]
        ks_ok = len(self.eval.ks) > 0 and all(k >= 1 for k in self.eval.ks)  # else eval.problems names eval.ks
        return out + failed([
            # a run's GCN folder writes its similar items (model.similar_source=gcn reads them);
            # 0, no similar_items.txt, is for a GcnConfig given to train_lightgcn on its own
            (self.gcn.similar_k != 0, "gcn.similar_k", "must be >= 1"),
            (not ks_ok or select_metric_ok(self.train.select_metric, self.eval.ks), "train.select_metric",
             f"({self.train.select_metric!r}) must be hit@K or ndcg@K with K one of eval.ks {self.eval.ks}, mrr, "
             "or valid_loss: no validation would report it, so no checkpoint would ever count as best. Add "
             "that K to eval.ks or choose another train.select_metric"),
            (self.eval.fusion.scorer == "lightgcn" or self.model.dense.enabled or not self.eval.fusion.enabled,
             "eval.fusion.scorer", f"is {self.eval.fusion.scorer!r} but the model has no dense head "
             "(model.dense.enabled=false)"),
        ])

    def validate(self) -> "Config":
        """Raise one ConfigError naming every bad key (`problems`); return self unchanged."""
        check_problems(self.problems())
        return self

    def resolved(self) -> "Config":
        """A copy with the placeholders that depend on other keys filled in: `ids.tokenizer` "train"
        under `model.preset=pretrained` becomes `model.pretrained` (the checkpoint's own vocabulary).
        `load_config` and `from_dict` return resolved configs; resolving twice changes nothing."""
        c = copy.deepcopy(self)
        if c.model.preset == "pretrained" and c.model.pretrained and c.ids.tokenizer == "train":
            c.ids.tokenizer = c.model.pretrained
        return c


def select_metric_ok(name: str, ks: list[int]) -> bool:
    """`train.select_metric` names a figure every validation reports with these `eval.ks`."""
    if name in ("mrr", "valid_loss"):
        return True
    kind, _, k = name.partition("@")
    return kind in ("hit", "ndcg") and k.isdigit() and int(k) in ks


# --------------------------------------------------------------------------------------------
# Loading, overriding, dumping
# --------------------------------------------------------------------------------------------


# flat spellings of keys that live in a nested section (`baseline.sasrec_dim`): the error for one
# names the key to write instead (`baseline.sasrec.dim`)
# keys that no longer exist, with what to write instead
MOVED_KEYS = {"pipeline.eval_users": "the final evaluation's users are train.final_eval_users (one setting for "
                                     "`gramc train` and the pipeline)"}
NESTED_KEYS = {f"baseline.sasrec_{f.name}": f"baseline.sasrec.{f.name}" for f in dataclasses.fields(SasrecConfig)}


def upgrade_saved(tree: dict) -> list[str]:
    """Rewrite, in place, the keys an earlier gramc wrote into a run's config.yaml under their current
    names (`baseline.sasrec_X` -> `baseline.sasrec.X`; `pipeline.eval_users` -> `train.final_eval_users`,
    which then played the same part). Only for configs gramc saved itself: a config a person writes
    with an old key gets the error naming the new one. Returns the keys rewritten."""
    done = []
    base = tree.get("baseline")
    if isinstance(base, dict):
        for key in [k for k in base if f"baseline.{k}" in NESTED_KEYS]:
            base.setdefault("sasrec", {})[key[len("sasrec_"):]] = base.pop(key)
            done.append(f"baseline.{key}")
    pipe = tree.get("pipeline")
    if isinstance(pipe, dict) and "eval_users" in pipe:
        users = pipe.pop("eval_users")
        train = tree.setdefault("train", {})
        if users and not train.get("final_eval_users"):
            train["final_eval_users"] = users
        done.append("pipeline.eval_users")
    return done


def unknown_key(key: str, known: typing.Iterable[str] = ()) -> str:
    """The message for an unknown `key`: the nested key it should be, or the keys known beside it."""
    if key in NESTED_KEYS:
        return f"unknown config key '{key}': the SASRec settings are a section, write '{NESTED_KEYS[key]}'"
    if key in MOVED_KEYS:
        return f"unknown config key '{key}': {MOVED_KEYS[key]}"
    return f"unknown config key '{key}'" + (f" (known keys here: {sorted(known)})" if known else "")


def _coerce(value: Any, tp: Any, key: str, problems: list[str] | None = None) -> Any:
    """Convert a YAML/CLI value to the declared type `tp`, or raise ConfigError naming `key`
    (problems inside a nested section go to `problems` when given)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a mapping, got {type(value).__name__}")
        return _build(tp, value, key, problems)
    if origin is Literal:
        # the type must match too: 1 is not `true` and 0 is not `false`
        if not any(value == a and type(value) is type(a) for a in args):
            raise ConfigError(f"config key '{key}' must be one of {list(args)}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        non_none = [a for a in args if a is not type(None)]
        if value is None and type(None) in args:
            return None
        return _coerce(value, non_none[0], key, problems)
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
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key '{key}' must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"config key '{key}' must be a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key '{key}' must be a string, got {value!r}")
        return value
    raise ConfigError(f"config key '{key}' has an unsupported type {tp}")  # pragma: no cover


def _build(cls: type, values: dict, prefix: str = "", problems: list[str] | None = None) -> Any:
    """`cls` from a mapping; every unknown key and wrong type is collected into `problems` (a bad key
    keeps its default), or, without a list, raised together as one ConfigError."""
    collect: list[str] = [] if problems is None else problems
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for k in values:
        if k not in names:
            collect.append(unknown_key(f"{prefix}.{k}" if prefix else k, names))
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in values:
            key = f"{prefix}.{f.name}" if prefix else f.name
            try:
                kwargs[f.name] = _coerce(values[f.name], hints[f.name], key, collect)
            except ConfigError as e:
                collect.append(str(e))
    if problems is None:
        check_problems(collect)
    return cls(**kwargs)


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error (PyYAML keeps
    the last one silently, so a config could say one thing and do another)."""


def _unique_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict:
    first: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if key in first:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} is given twice, at lines {first[key]} and {line}", key_node.start_mark)
        first[key] = line
    return loader.construct_mapping(node, deep=True)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def read_yaml(text: str, name: str = "<text>") -> Any:
    """YAML text (from file `name`) -> Python values, refusing duplicate keys (`yaml.YAMLError`
    names the key and both lines)."""
    stream = io.StringIO(text)
    stream.name = name  # what PyYAML's error marks call the source
    return yaml.load(stream, Loader=_UniqueKeyLoader)


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
            raise ConfigError(unknown_key(".".join(path[: i + 1])))
        tp = hints[part]
    return tp


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load YAML (optional), apply `key.sub=value` overrides, validate, and return the resolved Config
    (`Config.resolved`)."""
    tree: dict = {}
    if path:
        p = Path(path)
        if p.is_dir():
            raise ConfigError(f"config file '{p}' is a folder; give a YAML file (see configs/)")
        if not p.is_file():
            raise ConfigError(f"config file '{p}' does not exist")
        try:
            loaded = read_yaml(p.read_text(encoding="utf-8"), str(p))
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise ConfigError(f"config file '{p}' is not valid YAML: {e}") from e
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file '{p}' must hold a mapping at the top level")
        tree = loaded
    problems: list[str] = []  # every unknown key and wrong type at once, then every range problem
    apply_overrides(tree, overrides or [], problems)
    cfg = _build(Config, tree, problems=problems)
    check_problems(problems)
    return cfg.validate().resolved()


def apply_overrides(tree: dict, overrides: Sequence[str], problems: list[str] | None = None) -> dict:
    """Set each `key.sub=value` of `overrides` in the nested dict `tree` (in place; returned).

    Values are read as YAML scalars, except that a str field keeps the text as written (a
    `run.name=007` stays "007"). The one override rule of `load_config` and of run folders. With
    `problems`, a bad override is added to it (reported with the others) instead of raised."""
    for text in overrides:
        try:
            keys, value = _parse_override(text)
            if _expected_type(keys) is str and not isinstance(value, str):
                value = text.split("=", 1)[1]
            _deep_set(tree, keys, value)
        except ConfigError as e:
            if problems is None:
                raise
            problems.append(str(e))
    return tree


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


def absolute_paths(cfg: Config, *bases: Path) -> Config:
    """A copy of `cfg` with every path it names made absolute: resolved against the first of
    `bases` (default: the working directory) where it exists, else the first. Hub names and the
    placeholders "", "train" and "gcn" stay as they are."""
    import copy

    bases = tuple(Path(b) for b in bases) or (Path.cwd(),)
    c = copy.deepcopy(cfg)

    def fix(value: str, hub_ok: bool = False) -> str:
        if not value or value in ("train", "gcn"):
            return value
        p = Path(value).expanduser()
        if p.is_absolute():
            return str(p)
        found = [b / p for b in bases if (b / p).exists()]
        if hub_ok and not found:
            return value  # a hub name, not a path
        return str((found[0] if found else bases[0] / p).resolve())

    c.run.out = fix(c.run.out)
    c.data.path = fix(c.data.path)
    c.ids.file = fix(c.ids.file)
    c.ids.embedding_file = fix(c.ids.embedding_file)
    c.ids.tokenizer = fix(c.ids.tokenizer, hub_ok=True)
    c.gcn.out = fix(c.gcn.out)
    c.model.similar_source = fix(c.model.similar_source)
    c.model.pretrained = fix(c.model.pretrained, hub_ok=True)
    c.pipeline.sequences = fix(c.pipeline.sequences)
    c.pipeline.items = fix(c.pipeline.items)
    return c


def from_dict(tree: dict) -> Config:
    """Rebuild a Config from `to_dict` output (e.g. a run folder's config.yaml), validated and resolved."""
    return _build(Config, tree).validate().resolved()


__all__ = [
    "Config", "ConfigError", "RunConfig", "DataConfig", "SyntheticConfig", "IdsConfig", "GcnConfig",
    "PrefixConfig", "ModelConfig", "TrainConfig", "EvalConfig", "FusionConfig", "SasrecConfig", "BaselineConfig",
    "PipelineConfig", "load_config", "apply_overrides", "to_dict", "dump_yaml", "flatten", "from_dict", "absolute_paths",
]
