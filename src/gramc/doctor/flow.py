"""`gramc doctor flow`: build the real dataset, collator and model from the config and push one
batch through (no training).

Reports training's step-0 audit (`gramc.doctor.batch_audit.audit_first_batch`, names `flow.*`): batch
fields, `recent_item_ids` non-zero ratio, GCN mapping resolution of history items, prefix flag in
config / collator / model, prefix norm vs token norm, passages per sample, truncated share per
field, target lengths. Adds:

* `flow.forward`: the batch goes through the model (finite loss, target tokens > 0);
* `flow.history_order`: the order of the history in the user passage (decoded from its token
  IDs) and in the item passages (the rows' dataset items) both match `model.history_order` for
  every sample of the batch. Original GRAM reversed the user passage always but the item passages
  only with `reverse_history=1`, so the two could silently disagree.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional, Sequence

import torch

from ..checks import Check, check, failed
from ..config import Config
from ..data.splits import Sample, samples as split_samples
from ..model.gramc import GramC
from ..model.inputs import Collator
from .batch_audit import audit_first_batch
from ..seeding import seeded

FLOW_BATCH = 8  # samples in the batch pushed through
AUDIT_SAMPLES = 5000  # training samples (spread over the split) for mapping share and truncation


def user_passage_items(tokens: Sequence[int], cache: Any, item_ids: Any) -> list[int]:
    """Dataset items of a user passage's token IDs, in passage order (-1: a segment that is no ID).

    The passage is `head ID ; ID ; ... tail </s>`; IDs may have different lengths, so at each
    position the ID that is followed by the separator (or the end) is taken.
    """
    toks = list(tokens)
    head, sep = list(cache.user_head), list(cache.user_sep)
    tail = list(cache.user_tail) + [1]
    if toks[: len(head)] != head or toks[len(toks) - len(tail):] != tail:
        return [-1]
    body = toks[len(head): len(toks) - len(tail)]
    by_id = {tuple(t): i for i, t in enumerate(item_ids.tokens)}
    lengths = sorted({len(t) for t in item_ids.tokens}, reverse=True)
    out: list[int] = []
    k = 0
    while k < len(body):
        for n in lengths:
            seg = tuple(body[k: k + n])
            end = k + n
            if seg in by_id and (end == len(body) or body[end: end + len(sep)] == sep):
                out.append(by_id[seg])
                k = end + len(sep)
                break
        else:
            out.append(-1)
            break
    return out


def history_rows(batch: Any, r: int) -> list[int]:
    """Dataset items of sample r's item passages, in passage order."""
    rows = [int(x) for x in batch.history[r].tolist() if x >= 0]
    if getattr(batch, "global_items", False):
        return rows
    return [int(batch.item_index[x]) for x in rows]


def _order_of(seen: list[int], history: Sequence[int], suffix_kept: bool) -> str:
    """Which order `seen` shows of `history` (oldest first): recent_first, oldest_first or other.

    `suffix_kept`: only the most recent items may be present (the user passage drops the oldest).
    """
    h = list(history)
    if not seen:
        return "empty"
    n = len(seen)
    recent = h[::-1][:n] if suffix_kept else h[::-1]
    oldest = h[-n:] if suffix_kept else h
    if seen == recent and seen == oldest:
        return "ambiguous"
    if seen == recent:
        return "recent_first"
    if seen == oldest:
        return "oldest_first"
    return "other"


def history_order_check(batch: Any, chunk: Sequence[Sample], cache: Any, item_ids: Any, cfg: Config) -> Check:
    """User passage and item passages show each sample's history in `model.history_order`."""
    want = cfg.model.history_order
    first: Optional[dict[str, Any]] = None
    bad: list[str] = []
    for r, s in enumerate(chunk):
        hist = list(s.history[-cfg.data.max_his:])
        user = user_passage_items(batch.user_input[r][batch.user_mask[r]].tolist(), cache, item_ids)
        items = history_rows(batch, r)
        u, i = _order_of(user, hist, True), _order_of(items, hist, False)
        if first is None and len(set(hist)) >= 2:
            first = {"config": want, "user_passage": u, "item_passages": i, "history": len(hist)}
        if any(o not in (want, "ambiguous") for o in (u, i)):
            bad.append(f"sample {r} (user {s.user}): user passage {u}, item passages {i}")
    value = first or {"config": want, "user_passage": "ambiguous", "item_passages": "ambiguous"}
    value["samples"] = len(chunk)
    msg = (f"model.history_order is {want} but " + "; ".join(bad[:3]) + ". "
           + ("The user passage and the item passages disagree (original GRAM reversed the user passage "
              "always and the item passages only with reverse_history=1): the passage-position embedding "
              "and the user passage then describe different orders. " if bad else "")
           + "Build both from gramc.model.inputs.Collator with one config")
    return check("flow.history_order", not bad, value, msg)


def flow_checks(cfg: Config, assets: Any, model: Optional[torch.nn.Module] = None,
                collate: Optional[Callable[[Sequence[Sample]], Any]] = None,
                gcn_rows: Optional[torch.Tensor] = None, batch_size: int = FLOW_BATCH) -> list[Check]:
    """One batch through the real collator and model; `model`/`collate`/`gcn_rows` default to what
    the config builds (tests pass broken ones to prove the checks catch them)."""
    rows = assets.gcn_rows if gcn_rows is None else gcn_rows
    out: list[Check] = []
    train = split_samples(assets.ds, "train", cfg.data.max_his)
    if not train:
        return [failed("flow.samples", 0, "the dataset has no training samples (sequences need >= 4 items)")]
    step = max(1, len(train) // batch_size)
    chunk = train[::step][:batch_size]
    try:
        collate = collate or Collator(assets.cache, cfg, gcn_rows=rows)
        batch = collate(chunk)
    except Exception as e:  # noqa: BLE001 - the doctor reports, it does not crash
        return [failed("flow.collate", None, f"the collator fails on training samples: {e}")]
    if model is None:
        with seeded(cfg.run.seed):  # the weights a training run would start from
            model = GramC.from_config(cfg, assets)
    model.eval()
    try:
        with torch.no_grad():
            spread = train[:: max(1, len(train) // AUDIT_SAMPLES)]
            audit = audit_first_batch(batch, model, cfg, rows, spread, assets.cache)
    except Exception as e:  # noqa: BLE001
        audit = [failed("audit.run", None, f"the step-0 audit could not run: {e}")]
    for c in audit:
        c.name = "flow." + c.name.split(".", 1)[1]
        out.append(c)
    try:
        with torch.no_grad():
            loss, n = model(batch)
        value = {"loss_per_token": round(float(loss) / max(int(n), 1), 4), "target_tokens": int(n),
                 "batch": len(chunk)}
        ok = math.isfinite(float(loss)) and int(n) > 0
        out.append(check("flow.forward", ok, value, "the loss is not finite or there are no target tokens; "
                                                    "check the GCN table (NaN rows) and the labels"))
    except Exception as e:  # noqa: BLE001
        out.append(failed("flow.forward", None, f"the model fails on the collated batch: {e}"))
    out.append(history_order_check(batch, chunk, assets.cache, assets.item_ids, cfg))
    return out
