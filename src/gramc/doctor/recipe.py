"""`gramc doctor recipe`: the run's resolved config against a named reference recipe.

A recipe (`src/gramc/doctor/recipes/<name>.yaml`, e.g. `gram-beauty`) holds the settings that
produced published numbers. Every difference that changes results is reported with its expected
effect. Levels: the known traps fail (a learning rate 5x or more away from the recipe, as in the
seed report's 1e-4 vs 1e-3, except 5x above on a deliberately reduced preset such as `tiny`; fewer beams than the largest metric cut-off, which caps hit@k; a
pretrained checkpoint with a foreign vocabulary; an ID or similar-items file that does not exist),
every other difference warns (a tiny preset or fewer epochs are often deliberate reductions).

The checks are grouped by concern: model (architecture, init, output softmax), sources (tokenizer,
item IDs, neighbours: files are recognised by sha256, a hub checkpoint by name, a local checkpoint
folder by its config.json), batching (samples per optimiser step *measured* on the real `Batcher`
plan of the training samples), optimiser, inputs, search, prefix.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

import yaml

from ..checks import Check, failed, passed, warned
from ..config import Config, ConfigError
from ..data.splits import Sample
from ..ids.tokenizer import TokenizerError, load_tokenizer, vocabulary_mismatch
from ..io import sha256_file
from ..model.t5 import T5Dims
from ..train.batching import Batcher

LR_TRAP = 5.0  # learning-rate ratios at or beyond this (either way) are failures

_SETTING_KEYS = {
    "model.preset", "model.pretrained", "model.softmax", "data.max_his", "model.passage_len",
    "model.user_passage_len", "model.similar_items", "model.id_linking", "model.history_order",
    "ids.vocabulary_sha256", "ids.file", "ids.file_sha256", "ids.clusters", "ids.levels",
    "model.similar_source", "model.similar_sha256", "train.batching", "train.effective_batch",
    "train.lr", "train.weight_decay", "train.eps", "train.warmup", "train.clip", "train.epochs",
    "train.bf16", "train.select_metric", "eval.beams", "eval.length_penalty", "eval.early_stopping", "eval.ks",
}
# hub names of checkpoints with the T5 vocabulary, and those of them with the t5-small architecture
# (t5 v1.1 and flan-t5 "small" are gated-GELU models of other sizes)
T5_HUB_NAMES = ("t5-small", "google-t5/t5-small", "google/t5-v1_1-small", "google/flan-t5-small")
ARCHITECTURE_NAMES = {"small": ("t5-small", "google-t5/t5-small")}
_PREFIX_KEYS = {"enabled", "init_scale", "prefix_dropout", "dropout", "placement", "num_items"}


@dataclass
class Recipe:
    """A reference recipe: the settings behind published numbers."""

    name: str
    description: str = ""
    published: dict[str, float] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    prefix: dict[str, Any] = field(default_factory=dict)
    source: str = ""


def available_recipes() -> list[str]:
    """Names of the recipes shipped with gramc."""
    folder = resources.files("gramc.doctor") / "recipes"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_recipe(name: str) -> Recipe:
    """A shipped recipe by name, or a recipe YAML file by path; ConfigError names what is wrong."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        text, source = path.read_text(encoding="utf-8"), str(path)
    else:
        res = resources.files("gramc.doctor") / "recipes" / f"{name}.yaml"
        if not res.is_file():
            raise ConfigError(f"unknown recipe {name!r}; known recipes: {available_recipes()} "
                              f"(or give a path to a recipe .yaml file)")
        text, source = res.read_text(encoding="utf-8"), f"recipes/{name}.yaml"
    try:
        tree = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"recipe {source} is not valid YAML: {e}") from e
    if not isinstance(tree, dict):
        raise ConfigError(f"recipe {source} must hold a mapping")
    unknown = set(tree) - {"name", "description", "published", "settings", "prefix"}
    if unknown:
        raise ConfigError(f"recipe {source}: unknown top-level keys {sorted(unknown)}")
    settings = tree.get("settings") or {}
    bad = set(settings) - _SETTING_KEYS
    if bad:
        raise ConfigError(f"recipe {source}: unknown settings {sorted(bad)} (known: {sorted(_SETTING_KEYS)})")
    prefix = tree.get("prefix") or {}
    bad = set(prefix) - _PREFIX_KEYS
    if bad:
        raise ConfigError(f"recipe {source}: unknown prefix keys {sorted(bad)} (known: {sorted(_PREFIX_KEYS)})")
    return Recipe(name=str(tree.get("name", name)), description=str(tree.get("description", "")),
                  published=dict(tree.get("published") or {}), settings=dict(settings), prefix=dict(prefix),
                  source=source)


# --------------------------------------------------------------------------------------------
# The comparison
# --------------------------------------------------------------------------------------------


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        try:
            return abs(float(a) - float(b)) <= 1e-12 * max(1.0, abs(float(b)))
        except (TypeError, ValueError):
            return False
    return a == b


def _diff(name: str, got: Any, want: Any, effect: str) -> Check:
    value = {"run": got, "recipe": want}
    return passed(name, value) if _same(got, want) else warned(name, value, effect)


def recipe_checks(cfg: Config, recipe: Recipe, world: int = 1, truncation: dict[str, float] | None = None,
                  train_samples: Sequence[Sample] | None = None) -> list[Check]:
    """Every difference between `cfg` and `recipe` that changes results, with its expected effect.

    `world`: processes the run trains on; `train_samples`: the training samples, to measure the
    samples per optimiser step on the real batch plan (without them that check warns: not measured);
    `truncation`: measured share of tokens cut per passage field (`item_text`, `similar_ids`,
    `user_ids`), added to the passage-length findings when given.
    """
    s = recipe.settings
    out = (_model_checks(cfg, s) + _source_checks(cfg, s) + _batching_checks(cfg, s, world, train_samples)
           + _optim_checks(cfg, s) + _input_checks(cfg, s, truncation or {}) + _search_checks(cfg, s)
           + _prefix_checks(cfg, recipe))
    n_fail = sum(c.level == "fail" for c in out)
    n_warn = sum(c.level == "warn" for c in out)
    summary = {"recipe": recipe.name, "differences": n_fail + n_warn, "traps": n_fail,
               "published": recipe.published}
    return [passed("recipe.summary", summary, recipe.description)] + out


# ---- model: architecture, init, output softmax ----------------------------------------------


def _checkpoint_dims(name: str) -> Any:
    """T5Dims of a local checkpoint folder (its config.json), or None for a hub name."""
    path = Path(name)
    if not (path / "config.json").is_file():
        return None
    from transformers import T5Config

    return T5Dims.from_hf_config(T5Config.from_pretrained(str(path)))


def _same_architecture(dims: Any, preset: str) -> bool:
    want = T5Dims.preset(preset, vocab_size=dims.vocab_size)
    keys = ("d_model", "d_kv", "d_ff", "num_layers", "num_decoder_layers", "num_heads", "feed_forward_proj")
    return all(getattr(dims, k) == getattr(want, k) for k in keys)


def _model_checks(cfg: Config, s: dict) -> list[Check]:
    m = cfg.model
    out: list[Check] = []
    if "model.preset" in s:
        want = s["model.preset"]
        value = {"run": m.preset if m.preset != "pretrained" else f"pretrained:{m.pretrained}", "recipe": f"t5-{want}"}
        if m.preset == "pretrained":
            dims = _checkpoint_dims(m.pretrained)
            ok = _same_architecture(dims, want) if dims is not None else m.pretrained in ARCHITECTURE_NAMES.get(want, ())
            how = "config.json of the folder" if dims is not None else "hub name"
            out.append(passed("recipe.model", value, f"t5-{want} architecture ({how})") if ok else
                       warned("recipe.model", value, f"model.pretrained={m.pretrained!r} is not the t5-{want} "
                                                     f"architecture ({how}): results not comparable"))
        elif m.preset == want:
            out.append(passed("recipe.model", value, f"the t5-{want} architecture (init: see recipe.init)"))
        else:
            out.append(warned("recipe.model", value,
                              f"model.preset={m.preset} vs t5-{want}: a deliberate reduction (quick runs, tests) "
                              f"gives lower numbers than published; use model.preset=pretrained "
                              f"model.pretrained=t5-{want} to compare"))
    if "model.pretrained" in s:
        out.append(_init_check(m.preset, m.pretrained, str(s["model.pretrained"])))
    if "model.softmax" in s:
        out.append(_diff("recipe.softmax", m.softmax, s["model.softmax"],
                         f"model.softmax={m.softmax} vs {s['model.softmax']}: the decoder normalises over the trie "
                         f"children only, another training objective than GRAM's softmax over the vocabulary"))
    return out


def _init_check(preset: str, pretrained: str, want: str) -> Check:
    value = {"run": f"pretrained:{pretrained}" if preset == "pretrained" else f"random ({preset})",
             "recipe": f"pretrained:{want}"}
    if preset != "pretrained":
        return warned("recipe.init", value,
                      f"random init vs GRAM's pretrained {want}: learns more slowly and usually ends lower; the "
                      f"paper's numbers need pretrained weights (model.preset=pretrained model.pretrained={want})")
    if Path(pretrained).is_dir():
        return passed("recipe.init", value, "a local checkpoint folder (architecture: recipe.model; the weights "
                                            "themselves are not verified)")
    if pretrained == want or pretrained.endswith("/" + want):
        return passed("recipe.init", value)
    return warned("recipe.init", value, f"pretrained weights {pretrained!r} vs GRAM's {want!r}: another "
                                        f"starting point (e.g. flan or v1.1 weights), numbers not comparable")


# ---- sources: tokenizer, item IDs, neighbours ------------------------------------------------


def _file_check(name: str, path: str, want_name: str, want_sha: str, what: str, otherwise: str) -> Check:
    """A file named by the config against the recipe's file (by sha256): pass, warn, or fail if missing."""
    if not Path(path).is_file():
        return failed(name, {"run": path, "recipe": want_name}, f"{what} file {path!r} does not exist")
    sha = sha256_file(path)
    value = {"run": path, "sha256": sha[:12], "recipe": want_name}
    if sha == want_sha:
        return passed(name, value, f"GRAM's {want_name} (sha256 {sha[:8]}...)")
    return warned(name, value, f"{path} is not GRAM's {want_name} (sha256 {sha[:8]}... vs {want_sha[:8]}...): "
                               f"{otherwise}")


def _source_checks(cfg: Config, s: dict) -> list[Check]:
    out: list[Check] = []
    if "ids.vocabulary_sha256" in s:
        out += _tokenizer_checks(cfg, str(s["ids.vocabulary_sha256"]))
    if "ids.file" in s:
        out.append(_ids_check(cfg, s))
    if "model.similar_source" in s and cfg.model.similar_items > 0:
        want = str(s["model.similar_source"])
        if cfg.model.similar_source == "gcn":
            out.append(warned("recipe.neighbours", {"run": "gcn", "recipe": want},
                              f"similar items from gramc's LightGCN on training interactions (leak-free) vs GRAM's "
                              f"{want} (SASRec neighbours, possibly trained on validation/test interactions): other "
                              f"collaborative signal in every item passage; the paper's numbers use GRAM's file"))
        else:
            out.append(_file_check("recipe.neighbours", cfg.model.similar_source, want,
                                   str(s.get("model.similar_sha256", "")), "similar-items",
                                   "other neighbours in every item passage"))
    return out


def _tokenizer_checks(cfg: Config, want_sha: str) -> list[Check]:
    """The vocabulary against T5's (by piece-table sha256), and, for pretrained weights, against the
    checkpoint's own tokenizer."""
    spec = cfg.ids.tokenizer
    if spec == "train":
        return [warned("recipe.tokenizer", {"run": f"train (<= {cfg.ids.vocab_size} pieces)", "recipe": "T5 vocabulary"},
                       f"a SentencePiece vocabulary trained on the item texts (at most {cfg.ids.vocab_size} pieces) "
                       f"vs T5's 32,100 pieces: item IDs and texts become other tokens (fine for a model from "
                       f"scratch; pretrained weights need their own vocabulary)")]
    tok = None
    value: dict[str, Any] = {"run": spec, "recipe": "T5 vocabulary"}
    if Path(spec).exists():
        try:
            tok = load_tokenizer(spec)
        except TokenizerError as e:
            return [failed("recipe.tokenizer", value, str(e))]
        sha = tok.vocabulary_sha256
        value["vocabulary_sha256"] = sha[:12]
        check = (passed("recipe.tokenizer", value, "the T5 vocabulary") if sha == want_sha else
                 warned("recipe.tokenizer", value, f"{spec} is not the T5 vocabulary ({tok.vocab_size} ids, piece "
                                                   f"table sha256 {sha[:8]}... vs {want_sha[:8]}...)"))
    elif spec in T5_HUB_NAMES:
        check = passed("recipe.tokenizer", value, "a T5 hub name (the T5 vocabulary; not loaded offline)")
    else:
        check = warned("recipe.tokenizer", value, f"hub tokenizer {spec!r}: not known to hold the T5 vocabulary")
    if cfg.model.preset != "pretrained":
        return [check]
    return [check, _tokenizer_model_check(spec, cfg.model.pretrained, tok, check.level == "pass")]


def _tokenizer_model_check(spec: str, pretrained: str, tok: Any, is_t5: bool) -> Check:
    """Pretrained weights only with their own vocabulary (training enforces it; here what the config shows)."""
    value = {"tokenizer": spec, "pretrained": pretrained}
    if spec == pretrained:
        return passed("recipe.tokenizer_model", value, "the checkpoint's own tokenizer")
    if tok is not None and (Path(pretrained) / "tokenizer.json").is_file():
        diff = vocabulary_mismatch(tok, load_tokenizer(pretrained))
        return (passed("recipe.tokenizer_model", value, "same piece table as the checkpoint's tokenizer") if not diff
                else failed("recipe.tokenizer_model", value, f"ids.tokenizer is not the vocabulary of model.pretrained "
                                                             f"({diff}): training refuses it; leave ids.tokenizer at "
                                                             f"'train' to use the checkpoint's"))
    if is_t5 and pretrained in T5_HUB_NAMES:
        return passed("recipe.tokenizer_model", value, "the T5 vocabulary with a T5 checkpoint")
    return warned("recipe.tokenizer_model", value, "cannot compare the tokenizer with the checkpoint's own here; "
                                                   "training does (and refuses a foreign one)")


def _ids_check(cfg: Config, s: dict) -> Check:
    want = str(s["ids.file"])
    if cfg.ids.file:
        return _file_check("recipe.ids", cfg.ids.file, want, str(s.get("ids.file_sha256", "")), "item-ID",
                           "other item IDs (other target sequences and trie)")
    got = {"built": cfg.ids.embedding, "clusters": cfg.ids.clusters, "levels": cfg.ids.levels}
    shape = (f"; also c={cfg.ids.clusters}, l={cfg.ids.levels} vs c={s.get('ids.clusters')}, l={s.get('ids.levels')} "
             f"(other ID lengths and sharing; GRAM's ablation without hierarchical IDs: R@5 0.0641 -> 0.0605)"
             if (cfg.ids.clusters, cfg.ids.levels) != (s.get("ids.clusters"), s.get("ids.levels")) else "")
    return warned("recipe.ids", {"run": got, "recipe": want},
                  f"IDs built by gramc ({cfg.ids.embedding} embeddings, hierarchical k-means) vs GRAM's released "
                  f"{want} (NV-Embed + k-means + TF-IDF labels): other item IDs{shape}; set ids.file to GRAM's file")


# ---- batching: measured samples per optimiser step ------------------------------------------


def measured_steps(cfg: Config, train_samples: Sequence[Sample], world: int, epoch: int = 0) -> list[list[Sample]]:
    """The samples of every optimiser step of `epoch`, all ranks together, from the real `Batcher` plan."""
    plans = [Batcher.from_config(cfg, train_samples, r, world).plan(epoch) for r in range(world)]
    return [[x for p in plans for mb in p.step(i) for x in mb] for i in range(plans[0].num_steps)]


def _batching_checks(cfg: Config, s: dict, world: int, train_samples: Sequence[Sample] | None) -> list[Check]:
    if "train.effective_batch" not in s:
        return []
    t = cfg.train
    want, mode = int(s["train.effective_batch"]), s.get("train.batching", t.batching)
    value: dict[str, Any] = {"batching": t.batching, "nominal": t.batch_size * t.grad_accum * world,
                             "recipe": f"{want} ({mode})", "world": world}
    if not train_samples:
        return [warned("recipe.batching", value, "samples per optimiser step not measured (no training samples "
                                                 "given): the nominal product hides sequence packing")]
    steps = measured_steps(cfg, train_samples, world)
    sizes = [len(x) for x in steps]
    mean = sum(sizes) / len(sizes)
    users = sum(len({x.user for x in st}) for st in steps) / len(steps)
    value.update(measured_mean=round(mean, 2), measured_min=min(sizes), measured_max=max(sizes),
                 users_per_step=round(users, 2), steps_per_epoch=len(steps))
    if t.batching == mode and abs(mean - want) <= 0.01 * want:
        return [passed("recipe.batching", value, f"{mean:.1f} samples per step (measured, epoch 0)")]
    if t.batching != mode:
        msg = (f"train.batching={t.batching}: a step holds {users:.1f} users with all their consecutive prefixes, "
               f"{mean:.1f} samples on average (measured on the batch plan; nominal {value['nominal']}) vs GRAM's "
               f"{want} independent samples: correlated samples within a step, other gradient statistics (a speed "
               f"mode); set train.batching={mode} to reproduce GRAM")
    else:
        msg = (f"{mean:.1f} samples per optimiser step (measured) vs the recipe's {want}: set train.batch_size x "
               f"train.grad_accum x {world} processes = {want}")
    return [warned("recipe.batching", value, msg)]


# ---- optimiser ------------------------------------------------------------------------------


def _lr_check(lr: float, want: float, reduced: str = "") -> Check:
    """`reduced`: the preset when the model is a deliberate reduction (not the recipe's architecture):
    a learning rate far above the recipe's then warns (small models take larger ones), below still fails."""
    ratio = lr / want
    value = {"run": lr, "recipe": want, "ratio": round(ratio, 4)}
    if _same(lr, want):
        return passed("recipe.lr", value)
    if ratio <= 1 / LR_TRAP:
        return failed("recipe.lr", value,
                      f"train.lr={lr:g} is {1 / ratio:.0f}x below the recipe's {want:g}: training learns far "
                      f"more slowly (the seed report's run used 1e-4 vs GRAM's 1e-3 and reached hit@10 0.080 "
                      f"after 10 epochs vs GRAM's 0.089). Set train.lr={want:g}")
    if ratio >= LR_TRAP and reduced:
        return warned("recipe.lr", value, f"train.lr={lr:g} is {ratio:.0f}x above the recipe's {want:g}: on the "
                                          f"recipe's architecture a trap (unstable training), on the {reduced} "
                                          f"preset a deliberate choice; compare only with runs of the same preset")
    if ratio >= LR_TRAP:
        return failed("recipe.lr", value, f"train.lr={lr:g} is {ratio:.0f}x above the recipe's {want:g}: expect "
                                          f"unstable or diverging training. Set train.lr={want:g}")
    return warned("recipe.lr", value, f"train.lr={lr:g} differs from the recipe's {want:g} ({ratio:.2g}x): "
                                      f"convergence speed and final quality change; keep it only if the effective "
                                      f"batch changed in proportion")


_OPTIM_EFFECTS = {
    "train.warmup": "a different warmup changes the early updates (too little with lr 1e-3 can destabilise T5)",
    "train.weight_decay": "a different regularisation strength",
    "train.eps": "AdamW eps sets the update size of rarely-updated parameters (ID token embeddings)",
    "train.clip": "gradient clipping at another norm changes the update size of large steps",
    "train.bf16": "bf16 autocast differs from the recipe's fp32 (small numeric differences)",
    "train.select_metric": "the best checkpoint (and early stopping) follows another validation figure, so the "
                           "tested checkpoint can differ from the one the recipe's selection would test",
}


def _optim_checks(cfg: Config, s: dict) -> list[Check]:
    t = cfg.train
    out: list[Check] = []
    if "train.lr" in s:
        arch = s.get("model.preset", "")
        reduced = cfg.model.preset if arch and cfg.model.preset not in (arch, "pretrained") else ""
        out.append(_lr_check(t.lr, float(s["train.lr"]), reduced))
    if "train.epochs" in s:
        want = int(s["train.epochs"])
        value = {"run": t.epochs, "recipe": want, "max_steps": t.max_steps}
        short = t.epochs < want or t.max_steps
        out.append(passed("recipe.epochs", value) if t.epochs == want and not t.max_steps else
                   warned("recipe.epochs", value,
                          f"{t.epochs} epochs{f' (capped at {t.max_steps} steps)' if t.max_steps else ''} vs the "
                          f"recipe's {want}: " + ("fewer updates, an under-trained model unless this is a "
                                                  "deliberate quick run" if short else
                                                  "longer training; select the best validation checkpoint")))
    for key, effect in _OPTIM_EFFECTS.items():
        if key in s:
            got = getattr(t, key.split(".")[1])
            out.append(_diff(f"recipe.{key.split('.')[1]}", got, s[key], f"{key}={got} vs {s[key]}: {effect}"))
    return out


# ---- inputs ---------------------------------------------------------------------------------


def _input_checks(cfg: Config, s: dict, trunc: dict[str, float]) -> list[Check]:
    m, out = cfg.model, []
    if "data.max_his" in s:
        out.append(_diff("recipe.max_his", cfg.data.max_his, s["data.max_his"],
                         f"data.max_his={cfg.data.max_his} vs {s['data.max_his']}: "
                         + ("fewer history items (fewer item passages) per sample"
                            if cfg.data.max_his < s["data.max_his"] else "more passages per sample (slower)")))
    if "model.passage_len" in s:
        c = _diff("recipe.passage_len", m.passage_len, s["model.passage_len"],
                  f"model.passage_len={m.passage_len} vs {s['model.passage_len']}: item text (and, when IDs "
                  f"alone overflow, similar items) is cut to fit")
        if trunc:
            c.value["text_cut"] = trunc.get("item_text")
            c.value["similar_ids_cut"] = trunc.get("similar_ids")
            if c.level == "warn":
                c.message += (f"; measured: {trunc.get('item_text', 0):.1%} of item-text tokens and "
                              f"{trunc.get('similar_ids', 0):.1%} of similar-item ID tokens are cut")
        out.append(c)
    if "model.user_passage_len" in s:
        c = _diff("recipe.user_passage_len", m.user_passage_len, s["model.user_passage_len"],
                  f"model.user_passage_len={m.user_passage_len} vs {s['model.user_passage_len']}: the user "
                  f"passage keeps only the most recent IDs that fit")
        if trunc:
            c.value["user_ids_cut"] = trunc.get("user_ids")
            if c.level == "warn":
                c.message += f"; measured: {trunc.get('user_ids', 0):.1%} of history ID tokens are cut"
        out.append(c)
    if "model.similar_items" in s:
        want = s["model.similar_items"]
        out.append(_diff("recipe.similar_items", m.similar_items, want,
                         f"model.similar_items=0 vs {want}: GRAM's ablation without CF verbalisation drops Beauty "
                         f"R@5 from 0.0641 to 0.0567" if m.similar_items == 0 else
                         f"model.similar_items={m.similar_items} vs {want}: a different amount of collaborative "
                         f"signal per item passage"))
    if "model.id_linking" in s:
        out.append(_diff("recipe.id_linking", m.id_linking, s["model.id_linking"],
                         "ID linking off: GRAM's ablation drops Beauty R@5 from 0.0641 to 0.0628"))
    if "model.history_order" in s:
        out.append(_diff("recipe.history_order", m.history_order, s["model.history_order"],
                         f"model.history_order={m.history_order}: the passage-position embedding then numbers "
                         f"passages from the oldest item, unlike the recipe"))
    return out


# ---- search and metrics ---------------------------------------------------------------------


def _search_checks(cfg: Config, s: dict) -> list[Check]:
    e = cfg.eval
    max_k = max(e.ks)
    value = {"beams": e.beams, "largest_k": max_k}
    out = [failed("recipe.beams_vs_ks", value,
                  f"eval.beams={e.beams} < the largest cut-off {max_k}: the beam returns only {e.beams} items, so "
                  f"hit@{max_k} and ndcg@{max_k} are capped and not comparable with any published number. Set "
                  f"eval.beams >= {max_k}") if e.beams < max_k else passed("recipe.beams_vs_ks", value)]
    if "eval.beams" in s:
        want = int(s["eval.beams"])
        small_ks = [k for k in e.ks if k <= e.beams]
        msg = (f"eval.beams={e.beams} vs the recipe's {want}: a narrower beam prunes good candidates early, "
               f"so even hit@{max(small_ks) if small_ks else e.beams} is lower than with {want} beams; the "
               f"published numbers use {want} (the seed report's 10 beams with hit@10 are not comparable)"
               if e.beams < want else f"eval.beams={e.beams} vs {want}: slower search, metrics comparable or higher")
        out.append(_diff("recipe.beams", e.beams, want, msg))
    if "eval.length_penalty" in s:
        want = float(s["eval.length_penalty"])
        out.append(_diff("recipe.length_penalty", e.length_penalty, want,
                         f"eval.length_penalty={e.length_penalty:g} vs {want:g}: beams are ranked by "
                         f"log-probability / length^penalty, so IDs of different lengths (a de-duplication "
                         f"level) are ordered differently; identical when every ID has the same length"))
    if "eval.early_stopping" in s:
        want = s["eval.early_stopping"]
        out.append(_diff("recipe.early_stopping", e.early_stopping, want,
                         f"eval.early_stopping={e.early_stopping} vs {want} (the rule of HF 4.x that GRAM ran): the "
                         f"search may stop at another step, so the returned beams can differ when "
                         f"eval.length_penalty is not 0"))
    if "eval.ks" in s:
        missing = [k for k in s["eval.ks"] if k not in e.ks]
        value = {"run": list(e.ks), "recipe": list(s["eval.ks"])}
        out.append(passed("recipe.ks", value) if not missing else
                   warned("recipe.ks", value, f"no metrics at k={missing}: those published numbers cannot be "
                                              f"compared; add them to eval.ks"))
    return out


# ---- prefix (GRAM-C's own reference) ---------------------------------------------------------


def _prefix_checks(cfg: Config, recipe: Recipe) -> list[Check]:
    p, ref = cfg.model.prefix, recipe.prefix
    if not ref:
        return []
    if not p.enabled:
        return [passed("recipe.prefix", {"enabled": False}, "plain GRAM (no collaborative prefix)")]
    out: list[Check] = [passed("recipe.prefix", {"enabled": True, "placement": p.placement})]
    if "placement" in ref and p.placement != ref["placement"]:
        effect = {"every_passage": "the prefix is prepended to every FiD passage (~21 copies per sample, the "
                                   "seed report's design): more encoder work for the same signal, and item "
                                   "passages can no longer be encoded once for all users",
                  "memory": "the prefix joins the fused memory without passing through the encoder"}
        out.append(warned("recipe.prefix_placement", {"run": p.placement, "reference": ref["placement"]},
                          effect.get(p.placement, f"placement {p.placement}")))
    if "init_scale" in ref and not _same(p.init_scale, ref["init_scale"]):
        quiet = p.init_scale <= 0.1 * float(ref["init_scale"])
        out.append(warned("recipe.prefix_scale", {"run": p.init_scale, "reference": ref["init_scale"],
                                                  "learn_scale": p.learn_scale},
                          f"model.prefix.init_scale={p.init_scale:g} vs {ref['init_scale']:g}: "
                          + ("the prefix starts much quieter than the tokens beside it"
                             + ("" if p.learn_scale else " and cannot grow (learn_scale is false)")
                             if quiet else "a different starting loudness of the prefix")))
    if "prefix_dropout" in ref and not _same(p.prefix_dropout, ref["prefix_dropout"]):
        out.append(warned("recipe.prefix_dropout", {"run": p.prefix_dropout, "reference": ref["prefix_dropout"]},
                          f"whole-prefix dropout {p.prefix_dropout:g} vs {ref['prefix_dropout']:g}: the prefix is "
                          f"removed for {p.prefix_dropout:.0%} of training samples"))
    if "dropout" in ref and not _same(p.dropout, ref["dropout"]):
        out.append(warned("recipe.prefix_adapter_dropout", {"run": p.dropout, "reference": ref["dropout"]},
                          "a different dropout inside the prefix adapter"))
    if "num_items" in ref and p.num_items != ref["num_items"]:
        out.append(warned("recipe.prefix_items", {"run": p.num_items, "reference": ref["num_items"]},
                          f"the prefix reads the {p.num_items} most recent items instead of {ref['num_items']}"))
    return out


def truncation_shares(cache: Any, samples: Sequence[Any], cfg: Config, limit: int = 2000) -> dict[str, float]:
    """Share of tokens cut per field over (a slice of) `samples` (see `PassageCache.truncation`)."""
    step = max(1, len(samples) // limit)
    trunc = cache.truncation(list(samples[::step]), cfg.data.max_his, cfg.model.history_order)
    return {k: round(v.share_cut, 4) for k, v in trunc.items()}
