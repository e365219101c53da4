"""Numeric precision of training on a device: bf16 autocast (`train.bf16`) and TF32 matmuls on CUDA."""

from __future__ import annotations

import contextlib
from typing import Any

import torch


def bf16_enabled(setting: Any, device: torch.device) -> bool:
    """`train.bf16` -> whether forward passes run under bf16 autocast on `device`.

    "auto": on CUDA when the card supports bf16, off elsewhere; true / false: always / never.
    """
    if setting == "auto":
        return device.type == "cuda" and torch.cuda.is_bf16_supported()
    return bool(setting)


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on `device` (a no-op context when disabled)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


@contextlib.contextmanager
def tf32_matmuls(device: torch.device):
    """TF32 for fp32 matmuls while training on CUDA; the previous setting is restored afterwards,
    so evaluation (beam-search scores) keeps full fp32 precision."""
    if device.type != "cuda":
        yield
        return
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)
