"""`gramc doctor recipe`: the run's resolved config against a named reference recipe.

A recipe (`src/gramc/doctor/recipes/<name>.yaml`, e.g. `gram-beauty`) holds the settings that
produced published numbers. Every difference that changes results is reported with its expected
effect. Levels: the known traps fail (a learning rate 5x or more away from the recipe, as in the
seed report's 1e-4 vs 1e-3; fewer beams than the largest metric cut-off, which caps hit@k), every
other difference warns (a tiny preset or fewer epochs are often deliberate reductions).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

import yaml

from ..checks import Check, failed, passed, warned
from ..config import Config, ConfigError

LR_TRAP = 5.0  # learning-rate ratios at or beyond this (either way) are failures

_SETTING_KEYS = {
    "model.preset", "data.max_his", "model.passage_len", "model.user_passage_len", "model.similar_items",
    "model.id_linking", "model.history_order", "ids.clusters", "ids.levels", "train.effective_batch",
    "train.lr", "train.weight_decay", "train.eps", "train.warmup", "train.clip", "train.epochs",
    "train.bf16", "eval.beams", "eval.length_penalty", "eval.ks",
}
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


def recipe_checks(cfg: Config, recipe: Recipe, world: int = 1, truncation: dict[str, float] | None = None
                  ) -> list[Check]:
    """Every difference between `cfg` and `recipe` that changes results, with its expected effect.

    `world`: processes the run trains on (the effective batch is batch x accumulation x world);
    `truncation`: measured share of tokens cut per passage field (`item_text`, `similar_ids`,
    `user_ids`), added to the passage-length findings when given.
    """
    s = recipe.settings
    out: list[Check] = []
    t, m, e = cfg.train, cfg.model, cfg.eval

    if "train.lr" in s:
        want = float(s["train.lr"])
        ratio = t.lr / want
        value = {"run": t.lr, "recipe": want, "ratio": round(ratio, 4)}
        if _same(t.lr, want):
            out.append(passed("recipe.lr", value))
        elif ratio <= 1 / LR_TRAP:
            out.append(failed("recipe.lr", value,
                              f"train.lr={t.lr:g} is {1 / ratio:.0f}x below the recipe's {want:g}: training "
                              f"learns far more slowly (the seed report's run used 1e-4 vs GRAM's 1e-3 and "
                              f"reached hit@10 0.080 after 10 epochs vs GRAM's 0.089). Set train.lr={want:g}"))
        elif ratio >= LR_TRAP:
            out.append(failed("recipe.lr", value,
                              f"train.lr={t.lr:g} is {ratio:.0f}x above the recipe's {want:g}: expect "
                              f"unstable or diverging training. Set train.lr={want:g}"))
        else:
            out.append(warned("recipe.lr", value,
                              f"train.lr={t.lr:g} differs from the recipe's {want:g} ({ratio:.2g}x): "
                              f"convergence speed and final quality change; keep it only if the effective "
                              f"batch changed in proportion"))

    if "train.effective_batch" in s:
        want = int(s["train.effective_batch"])
        eff = t.batch_size * t.grad_accum * world
        value = {"run": eff, "recipe": want, "batch_size": t.batch_size, "grad_accum": t.grad_accum,
                 "world": world}
        if eff == want:
            out.append(passed("recipe.effective_batch", value))
        else:
            out.append(warned("recipe.effective_batch", value,
                              f"effective batch {eff} (train.batch_size {t.batch_size} x train.grad_accum "
                              f"{t.grad_accum} x {world} processes) vs the recipe's {want}: "
                              + ("more optimiser steps per epoch with noisier gradients"
                                 if eff < want else "fewer optimiser steps per epoch")
                              + f"; for the recipe's numbers set train.grad_accum so that the product is {want}"))

    if "train.epochs" in s:
        want = int(s["train.epochs"])
        value = {"run": t.epochs, "recipe": want, "max_steps": t.max_steps}
        if t.epochs == want and not t.max_steps:
            out.append(passed("recipe.epochs", value))
        else:
            out.append(warned("recipe.epochs", value,
                              f"{t.epochs} epochs{f' (capped at {t.max_steps} steps)' if t.max_steps else ''} "
                              f"vs the recipe's {want}: "
                              + ("fewer updates, an under-trained model unless this is a deliberate quick run"
                                 if t.epochs < want or t.max_steps else "longer training; select the best "
                                                                        "validation checkpoint")))

    effects = {
        "train.warmup": "a different warmup changes the early updates (too little with lr 1e-3 can destabilise T5)",
        "train.weight_decay": "a different regularisation strength",
        "train.eps": "AdamW eps sets the update size of rarely-updated parameters (ID token embeddings)",
        "train.clip": "gradient clipping at another norm changes the update size of large steps",
        "train.bf16": "bf16 autocast differs from the recipe's fp32 (small numeric differences)",
    }
    for key, effect in effects.items():
        if key in s:
            got = getattr(t, key.split(".")[1])
            out.append(_diff(f"recipe.{key.split('.')[1]}", got, s[key], f"{key}={got} vs {s[key]}: {effect}"))

    # beams and cut-offs
    max_k = max(e.ks)
    value = {"beams": e.beams, "largest_k": max_k}
    if e.beams < max_k:
        out.append(failed("recipe.beams_vs_ks", value,
                          f"eval.beams={e.beams} < the largest cut-off {max_k}: the beam returns only {e.beams} "
                          f"items, so hit@{max_k} and ndcg@{max_k} are capped and not comparable with any "
                          f"published number. Set eval.beams >= {max_k}"))
    else:
        out.append(passed("recipe.beams_vs_ks", value))
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
    if "eval.ks" in s:
        missing = [k for k in s["eval.ks"] if k not in e.ks]
        value = {"run": list(e.ks), "recipe": list(s["eval.ks"])}
        out.append(passed("recipe.ks", value) if not missing else
                   warned("recipe.ks", value, f"no metrics at k={missing}: those published numbers cannot be "
                                              f"compared; add them to eval.ks"))

    # inputs
    trunc = truncation or {}
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
        out.append(_diff("recipe.similar_items", m.similar_items, s["model.similar_items"],
                         f"model.similar_items={m.similar_items} vs {s['model.similar_items']}: GRAM's ablation "
                         f"without CF verbalisation drops Beauty R@5 from 0.0641 to 0.0567"
                         if m.similar_items == 0 else
                         f"model.similar_items={m.similar_items} vs {s['model.similar_items']}: a different amount "
                         f"of collaborative signal per item passage"))
    if "model.id_linking" in s:
        out.append(_diff("recipe.id_linking", m.id_linking, s["model.id_linking"],
                         "ID linking off: GRAM's ablation drops Beauty R@5 from 0.0641 to 0.0628"))
    if "model.history_order" in s:
        out.append(_diff("recipe.history_order", m.history_order, s["model.history_order"],
                         f"model.history_order={m.history_order}: the passage-position embedding then numbers "
                         f"passages from the oldest item, unlike the recipe"))
    if "model.preset" in s:
        want = s["model.preset"]
        pre = m.preset
        value = {"run": pre if pre != "pretrained" else f"pretrained:{m.pretrained}", "recipe": f"t5-{want}"}
        if pre == "pretrained" and f"t5-{want}" in m.pretrained:
            out.append(passed("recipe.model", value))
        elif pre == want:
            out.append(warned("recipe.model", value,
                              f"the t5-{want} architecture from random init: GRAM fine-tunes pretrained "
                              f"t5-{want}, which learns faster and usually ends higher"))
        else:
            out.append(warned("recipe.model", value,
                              f"model.preset={pre} vs t5-{want}: a deliberate reduction (quick runs, tests) gives "
                              f"lower numbers than published; use model.preset=pretrained model.pretrained=t5-{want}"
                              f" to compare"))
    if "ids.clusters" in s or "ids.levels" in s:
        if cfg.ids.file:
            out.append(passed("recipe.ids", {"file": cfg.ids.file}, "IDs read from a file"))
        else:
            got = {"clusters": cfg.ids.clusters, "levels": cfg.ids.levels}
            want_ids = {"clusters": s.get("ids.clusters"), "levels": s.get("ids.levels")}
            out.append(_diff("recipe.ids", got, want_ids,
                             f"built IDs with c={cfg.ids.clusters}, l={cfg.ids.levels} vs the recipe's "
                             f"c={want_ids['clusters']}, l={want_ids['levels']}: other ID lengths and sharing "
                             f"(GRAM's ablation without hierarchical IDs: R@5 0.0641 -> 0.0605)"))
    out += _prefix_checks(cfg, recipe)
    n_fail = sum(c.level == "fail" for c in out)
    n_warn = sum(c.level == "warn" for c in out)
    summary = {"recipe": recipe.name, "differences": n_fail + n_warn, "traps": n_fail,
               "published": recipe.published}
    head = passed("recipe.summary", summary, recipe.description)
    return [head] + out


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
