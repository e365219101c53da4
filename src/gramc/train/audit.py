"""The step-0 audit's checks that hold for any batch with `labels` (the trainer's contract).

`fit` runs the audit a model's recipe gives it (`TrainParts.audit`) on the first real batch,
before any optimiser step, and refuses to train on a failure. The checks here describe any
batch; a recipe adds its model's own checks (`gramc.doctor.batch_audit`).
"""

from __future__ import annotations

from typing import Any

import torch

from ..checks import Check, check, passed
from ..ids.tokens import IGNORE_INDEX


def batch_shapes(batch: Any) -> dict[str, Any]:
    """Every field of the batch: its shape for tensors, its value otherwise."""
    fields = getattr(batch, "__dataclass_fields__", None) or vars(batch)
    out = {}
    for name in fields:
        v = getattr(batch, name)
        out[name] = list(v.shape) if isinstance(v, torch.Tensor) else v
    return out


def batch_fields_check(batch: Any) -> Check:
    """`audit.batch_fields`: the batch's fields and shapes, for the reader."""
    return passed("audit.batch_fields", batch_shapes(batch))


def target_lengths_check(batch: Any) -> Check:
    """`audit.target_lengths`: target tokens per sample (labels that are not padding); a sample
    without any fails."""
    tl = (batch.labels != IGNORE_INDEX).sum(1)
    return check("audit.target_lengths", int(tl.min()) > 0,
                 {"min": int(tl.min()), "mean": round(float(tl.float().mean()), 2), "max": int(tl.max())},
                 "a sample has no target tokens (all labels are padding); check the item IDs")
