"""Numeric precision of training on a device: bf16 autocast (`train.bf16`) and TF32 matmuls on CUDA.

`train.bf16=auto` turns bf16 autocast on where the hardware multiplies bf16 natively: a CUDA card
that supports bf16, or a CPU with bf16 matrix instructions (Intel AMX tiles, AVX512-BF16, or the
Arm BF16 extension). Elsewhere bf16 is emulated and slower than fp32, so "auto" keeps fp32. Under
autocast only the matmul-heavy ops run in bf16: the weights, the optimiser state, the loss and the
gradients' accumulation stay fp32 (`Precision` records what was detected and what was used).
"""

from __future__ import annotations

import contextlib
import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch


def _torch_flag(name: str) -> bool:
    """A capability probe of `torch.cpu` (private helpers that exist on x86 builds of torch >= 2.3)."""
    probe = getattr(torch.cpu, name, None)
    try:
        return bool(probe()) if callable(probe) else False
    except Exception:  # noqa: BLE001 - a probe that cannot run means: not detected
        return False


def arm_bf16(cpuinfo: Path = Path("/proc/cpuinfo"), machine: str | None = None) -> bool:
    """Whether an Arm CPU lists the BF16 extension among its features (Linux /proc/cpuinfo)."""
    if (machine or platform.machine()).lower() not in ("aarch64", "arm64"):
        return False
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return any(line.split(":", 1)[0].strip() == "Features" and "bf16" in line.split(":", 1)[1].split()
               for line in text.splitlines() if ":" in line)


@dataclass(frozen=True)
class CpuBf16:
    """What the CPU offers for bf16 matmuls."""

    amx_tile: bool
    avx512_bf16: bool
    arm_bf16: bool

    @property
    def native(self) -> bool:
        return self.amx_tile or self.avx512_bf16 or self.arm_bf16

    @classmethod
    def detect(cls) -> "CpuBf16":
        return cls(amx_tile=_torch_flag("_is_amx_tile_supported"),
                   avx512_bf16=_torch_flag("_is_avx512_bf16_supported"), arm_bf16=arm_bf16())


@dataclass(frozen=True)
class Precision:
    """`train.bf16` as set, where the run trains, what the hardware offers, and what is used."""

    setting: Any
    device: str
    cpu: CpuBf16 | None  # on the CPU only
    bf16: bool

    def describe(self) -> str:
        used = "bf16 autocast (weights, optimiser and loss in fp32)" if self.bf16 else "fp32"
        if self.setting != "auto":
            return f"{used}: train.bf16={self.setting}"
        if self.device == "cpu":
            found = [k for k, v in asdict(self.cpu).items() if v] if self.cpu else []
            why = f"the CPU has native bf16 ({', '.join(found)})" if found else "the CPU has no native bf16"
        else:
            why = f"{self.device} {'supports' if self.bf16 else 'does not support'} bf16"
        return f"{used}: train.bf16=auto and {why}"

    def to_json(self) -> dict[str, Any]:
        return {"setting": self.setting, "device": self.device, "bf16": self.bf16,
                "cpu_bf16": asdict(self.cpu) if self.cpu is not None else None, "reason": self.describe()}


def resolve_precision(setting: Any, device: torch.device, cpu: CpuBf16 | None = None) -> Precision:
    """`train.bf16` on `device` -> `Precision`. "auto": bf16 where the hardware has it natively (a
    bf16-capable CUDA card; a CPU with AMX, AVX512-BF16 or Arm BF16), fp32 elsewhere; true / false:
    always / never. `cpu` overrides the detection (tests)."""
    on_cpu = device.type == "cpu"
    found = (cpu or CpuBf16.detect()) if on_cpu else None
    if setting == "auto":
        if device.type == "cuda":
            used = torch.cuda.is_bf16_supported()
        else:
            used = bool(found and found.native)
    else:
        used = bool(setting)
    return Precision(setting, device.type, found, used)


def bf16_enabled(setting: Any, device: torch.device) -> bool:
    """`train.bf16` -> whether forward passes run under bf16 autocast on `device` (`resolve_precision`)."""
    return resolve_precision(setting, device).bf16


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
