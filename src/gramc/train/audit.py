"""Step-0 audit: look at the first real batch and the model before any optimiser step.

GRAM-C's collaborative prefix fails silently when it is fed nothing (all-zero `recent_item_ids`,
a GCN mapping that resolves few items, a collator and model built from different configs): the
model trains, just without collaborative signal. The audit measures those things on the first
batch, returns them as `gramc.checks.Check`s (the doctor's `flow` check reuses them), and
training refuses to start on any failure:

* prefix enabled but `recent_item_ids` missing or all zero;
* the GCN mapping resolves under 99% of the history items of the training samples;
* dataset/collator and model disagree on whether the prefix is on.

Everything else (batch shapes, passages per sample, truncation per field, target lengths, prefix
norm against token-embedding norm) is reported for the reader.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
from torch import nn

from ..checks import Check, check, failed, passed, warned
from ..config import Config
from ..data.splits import Sample
from ..ids.tokens import IGNORE_INDEX

MIN_MAPPING_SHARE = 0.99
TRUNCATION_SAMPLES = 2000  # training samples over which truncation shares are measured


def batch_shapes(batch: Any) -> dict[str, Any]:
    """Every field of the batch: its shape for tensors, its value otherwise."""
    fields = getattr(batch, "__dataclass_fields__", None) or vars(batch)
    out = {}
    for name in fields:
        v = getattr(batch, name)
        out[name] = list(v.shape) if isinstance(v, torch.Tensor) else v
    return out


def mapping_share(samples: Sequence[Sample], gcn_rows: torch.Tensor, max_his: int) -> tuple[float, int]:
    """Share of history positions (over `samples`) whose item has a GCN row (!= 0), and their count."""
    items = [i for s in samples for i in s.history[-max_his:]]
    counts = torch.bincount(torch.tensor(items, dtype=torch.long), minlength=len(gcn_rows))
    total = int(counts.sum())
    resolved = int(counts[gcn_rows != 0].sum())
    return (resolved / total if total else 0.0), total


def audit_first_batch(batch: Any, model: nn.Module, cfg: Config, gcn_rows: Optional[torch.Tensor] = None,
                      samples: Optional[Sequence[Sample]] = None, cache: Any = None) -> list[Check]:
    """The step-0 checks for a GRAM-C batch (`gramc.model.inputs.Batch`) and model (`GramC`).

    `gcn_rows`: GCN row per dataset item (`GcnArtifacts.rows_for(ds)`); `samples`: training samples
    (mapping share, truncation); `cache`: the `PassageCache` (truncation per field).
    """
    checks: list[Check] = []
    prefix_cfg = cfg.model.prefix.enabled
    checks.append(passed("audit.batch_fields", batch_shapes(batch)))

    # one config object: dataset/collator, model and config agree on the prefix
    batch_prefix = bool(getattr(batch, "prefix_enabled", False))
    model_prefix = getattr(model, "prefix", None) is not None
    checks.append(check(
        "audit.prefix_config_agrees", prefix_cfg == batch_prefix == model_prefix,
        {"config": prefix_cfg, "collator": batch_prefix, "model": model_prefix},
        "the config, the collator and the model disagree on model.prefix.enabled; build the Collator "
        "and GramC from the same Config object"))

    # recent_item_ids: present and non-zero when the prefix is on
    recent = getattr(batch, "recent_item_ids", None)
    if recent is None or recent.numel() == 0:
        value: dict[str, Any] = {"shape": None if recent is None else list(recent.shape), "nonzero_ratio": 0.0}
        ok = not prefix_cfg
    else:
        nz = float((recent != 0).float().mean())
        value = {"shape": list(recent.shape), "nonzero_ratio": round(nz, 4), "first_rows": recent[:3].tolist()}
        ok = (not prefix_cfg) or nz > 0
    checks.append(check(
        "audit.recent_item_ids", ok, value,
        "model.prefix.enabled is true but the batch's recent_item_ids are missing or all zero, so the prefix "
        "would carry no collaborative signal; check the GCN mapping (item_id_to_gcn_index.json) against the "
        "dataset's item IDs, or set model.prefix.enabled=false to train plain GRAM"))

    # the GCN mapping must resolve (nearly) every history item
    if gcn_rows is not None and samples is not None:
        share, total = mapping_share(samples, gcn_rows, cfg.data.max_his)
        val = {"share": round(share, 4), "history_items": total}
        msg = (f"the GCN mapping resolves only {share:.1%} of history items (< {MIN_MAPPING_SHARE:.0%}); the "
               f"prefix would be mostly padding. Rebuild the GCN artefacts for this dataset (`gramc gcn train`) "
               f"or fix item_id_to_gcn_index.json")
        if prefix_cfg:
            checks.append(check("audit.gcn_mapping", share >= MIN_MAPPING_SHARE, val, msg))
        else:
            checks.append(passed("audit.gcn_mapping", val, "prefix disabled: not used"))
    elif prefix_cfg:
        checks.append(failed("audit.gcn_mapping", None,
                             "model.prefix.enabled is true but no GCN rows were given to the audit"))

    # prefix loudness
    stats_fn = getattr(model, "prefix_norm_stats", None)
    if model_prefix and callable(stats_fn) and batch_prefix:
        st = stats_fn(batch)
        val = {"prefix_norm": round(st.prefix_norm, 4), "token_norm": round(st.token_norm, 4),
               "ratio": round(st.ratio, 4), "slots": st.slots}
        if 0.01 <= st.ratio <= 100:
            checks.append(passed("audit.prefix_norm", val))
        else:
            checks.append(warned("audit.prefix_norm", val,
                                 "the prefix is far louder or quieter than the token embeddings beside it; "
                                 "consider model.prefix.init_scale"))

    # passages per sample and target lengths
    history = getattr(batch, "history", None)
    if history is not None:
        per = (history >= 0).sum(1) + 1  # + the user passage
        checks.append(passed("audit.passages_per_sample",
                             {"min": int(per.min()), "mean": round(float(per.float().mean()), 2), "max": int(per.max())}))
    labels = batch.labels
    tl = (labels != IGNORE_INDEX).sum(1)
    checks.append(check("audit.target_lengths", int(tl.min()) > 0,
                        {"min": int(tl.min()), "mean": round(float(tl.float().mean()), 2), "max": int(tl.max())},
                        "a sample has no target tokens (all labels are padding); check the item IDs"))

    # truncation per field
    if cache is not None and samples is not None and hasattr(cache, "truncation"):
        step = max(1, len(samples) // TRUNCATION_SAMPLES)
        trunc = cache.truncation(list(samples[::step]), cfg.data.max_his, cfg.model.history_order)
        shares = {k: round(v.share_cut, 4) for k, v in trunc.items()}
        id_cut = max(shares.get("user_ids", 0.0), shares.get("similar_ids", 0.0))
        if id_cut <= 0.1:
            checks.append(passed("audit.truncation", shares))
        else:
            checks.append(warned("audit.truncation", shares,
                                 "over 10% of ID tokens are cut from user or similar-item lists; raise "
                                 "model.user_passage_len / model.passage_len or lower model.similar_items"))
    return checks
