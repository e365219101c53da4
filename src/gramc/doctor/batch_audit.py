"""GRAM-C's step-0 audit: look at the first real batch and the model before any optimiser step.

GRAM-C's collaborative prefix fails silently when it is fed nothing (all-zero `recent_item_ids`,
a GCN mapping that resolves few items, a collator and model built from different configs): the
model trains, just without collaborative signal. The audit measures those things on the first
batch and returns them as `gramc.checks.Check`s. The GRAM-C recipe hands it to training as
`TrainParts.audit` (training refuses to start on any failure); `gramc doctor flow` reports it.

* prefix enabled but `recent_item_ids` missing or all zero;
* the GCN mapping resolves under 99% of the history items of the training samples;
* dataset/collator and model disagree on whether the prefix is on.

Everything else (batch shapes, passages per sample, truncation per field, target lengths, prefix
norm against token-embedding norm) is reported for the reader.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch

from ..checks import Check, check, failed, passed, warned
from ..config import Config
from ..data.splits import Sample
from ..model.gramc import GramC
from ..model.inputs import Batch, PassageCache
from ..train.audit import batch_fields_check, target_lengths_check

MIN_MAPPING_SHARE = 0.99
TRUNCATION_SAMPLES = 2000  # training samples over which truncation shares are measured


def mapping_share(samples: Sequence[Sample], gcn_rows: torch.Tensor, max_his: int) -> tuple[float, int]:
    """Share of history positions (over `samples`) whose item has a GCN row (!= 0), and their count."""
    items = [i for s in samples for i in s.history[-max_his:]]
    counts = torch.bincount(torch.tensor(items, dtype=torch.long), minlength=len(gcn_rows))
    total = int(counts.sum())
    resolved = int(counts[gcn_rows != 0].sum())
    return (resolved / total if total else 0.0), total


def audit_first_batch(batch: Batch, model: GramC, cfg: Config, gcn_rows: Optional[torch.Tensor] = None,
                      samples: Optional[Sequence[Sample]] = None,
                      cache: Optional[PassageCache] = None) -> list[Check]:
    """The step-0 checks for a GRAM-C batch and model.

    `gcn_rows`: GCN row per dataset item (`GcnArtifacts.rows_for(ds)`); `samples`: training samples
    (mapping share, truncation); `cache`: the `PassageCache` (truncation per field).
    """
    checks = [batch_fields_check(batch), prefix_agreement_check(batch, model, cfg),
              recent_items_check(batch, cfg)]
    checks += mapping_checks(cfg, gcn_rows, samples)
    checks += prefix_norm_checks(batch, model)
    per = (batch.history >= 0).sum(1) + 1  # + the user passage
    checks.append(passed("audit.passages_per_sample",
                         {"min": int(per.min()), "mean": round(float(per.float().mean()), 2), "max": int(per.max())}))
    checks.append(target_lengths_check(batch))
    if cache is not None and samples is not None:
        checks.append(truncation_check(cache, samples, cfg))
    return checks


def prefix_agreement_check(batch: Batch, model: GramC, cfg: Config) -> Check:
    """One config object: dataset/collator, model and config agree on the prefix."""
    prefix_cfg, batch_prefix, model_prefix = cfg.model.prefix.enabled, batch.prefix_enabled, model.prefix is not None
    return check(
        "audit.prefix_config_agrees", prefix_cfg == batch_prefix == model_prefix,
        {"config": prefix_cfg, "collator": batch_prefix, "model": model_prefix},
        "the config, the collator and the model disagree on model.prefix.enabled; build the Collator "
        "and GramC from the same Config object")


def recent_items_check(batch: Batch, cfg: Config) -> Check:
    """`recent_item_ids` present and non-zero when the prefix is on."""
    prefix_cfg, recent = cfg.model.prefix.enabled, batch.recent_item_ids
    if recent.numel() == 0:
        value: dict[str, Any] = {"shape": list(recent.shape), "nonzero_ratio": 0.0}
        ok = not prefix_cfg
    else:
        nz = float((recent != 0).float().mean())
        value = {"shape": list(recent.shape), "nonzero_ratio": round(nz, 4), "first_rows": recent[:3].tolist()}
        ok = (not prefix_cfg) or nz > 0
    return check(
        "audit.recent_item_ids", ok, value,
        "model.prefix.enabled is true but the batch's recent_item_ids are missing or all zero, so the prefix "
        "would carry no collaborative signal; check the GCN mapping (item_id_to_gcn_index.json) against the "
        "dataset's item IDs, or set model.prefix.enabled=false to train plain GRAM")


def mapping_checks(cfg: Config, gcn_rows: Optional[torch.Tensor], samples: Optional[Sequence[Sample]]) -> list[Check]:
    """The GCN mapping must resolve (nearly) every history item when the prefix is on."""
    prefix_cfg = cfg.model.prefix.enabled
    if gcn_rows is None or samples is None:
        return [failed("audit.gcn_mapping", None, "model.prefix.enabled is true but no GCN rows were given to "
                                                  "the audit")] if prefix_cfg else []
    share, total = mapping_share(samples, gcn_rows, cfg.data.max_his)
    val = {"share": round(share, 4), "history_items": total}
    if not prefix_cfg:
        return [passed("audit.gcn_mapping", val, "prefix disabled: not used")]
    msg = (f"the GCN mapping resolves only {share:.1%} of history items (< {MIN_MAPPING_SHARE:.0%}); the "
           f"prefix would be mostly padding. Rebuild the GCN artefacts for this dataset (`gramc gcn train`) "
           f"or fix item_id_to_gcn_index.json")
    return [check("audit.gcn_mapping", share >= MIN_MAPPING_SHARE, val, msg)]


def prefix_norm_checks(batch: Batch, model: GramC) -> list[Check]:
    """How loud the prefix is next to the token embeddings beside it (with a prefix only)."""
    if model.prefix is None or not batch.prefix_enabled:
        return []
    st = model.prefix_norm_stats(batch)
    val = {"prefix_norm": round(st.prefix_norm, 4), "token_norm": round(st.token_norm, 4),
           "ratio": round(st.ratio, 4), "slots": st.slots}
    if 0.01 <= st.ratio <= 100:
        return [passed("audit.prefix_norm", val)]
    return [warned("audit.prefix_norm", val, "the prefix is far louder or quieter than the token embeddings "
                                             "beside it; consider model.prefix.init_scale")]


def truncation_check(cache: PassageCache, samples: Sequence[Sample], cfg: Config) -> Check:
    """Share of tokens cut per passage field, over up to TRUNCATION_SAMPLES training samples."""
    step = max(1, len(samples) // TRUNCATION_SAMPLES)
    trunc = cache.truncation(list(samples[::step]), cfg.data.max_his, cfg.model.history_order)
    shares = {k: round(v.share_cut, 4) for k, v in trunc.items()}
    id_cut = max(shares.get("user_ids", 0.0), shares.get("similar_ids", 0.0))
    if id_cut <= 0.1:
        return passed("audit.truncation", shares)
    return warned("audit.truncation", shares, "over 10% of ID tokens are cut from user or similar-item lists; raise "
                                              "model.user_passage_len / model.passage_len or lower model.similar_items")
