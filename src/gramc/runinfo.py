"""Reproducibility record written into every output folder: config, versions, commit, seed, inputs."""

from __future__ import annotations

import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from .config import Config, dump_yaml, to_dict
from .io import sha256_file, write_json, write_text

_PACKAGES = ["gramc", "torch", "transformers", "tokenizers", "sentencepiece", "numpy", "scipy",
             "scikit-learn", "safetensors"]


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo, else `platform.processor()`)."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def package_versions() -> dict[str, str]:
    """Interpreter, machine and library versions. The CPU, and the vector instructions torch uses where
    the run loaded torch, are recorded because float results (so a trained model) differ between CPUs
    at equal seeds, versions and data."""
    out = {"python": sys.version.split()[0], "platform": platform.platform(), "cpu": cpu_model()}
    torch = sys.modules.get("torch")  # not imported here: data-only stages do not load it
    if torch is not None:
        out["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_commit() -> str:
    """The commit of the gramc source tree, with '+dirty' when it has local changes."""
    root = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return (sha or "unknown") + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def fingerprints(paths: dict[str, str | Path]) -> dict[str, dict[str, Any]]:
    """sha256 and size of each named input file (folders: each file inside)."""
    out: dict[str, dict[str, Any]] = {}
    for name, p in paths.items():
        p = Path(p)
        if p.is_file():
            out[name] = {"path": str(p), "sha256": sha256_file(p), "bytes": p.stat().st_size}
        elif p.is_dir():
            for f in sorted(x for x in p.rglob("*") if x.is_file() and not x.name.startswith(".")):
                out[f"{name}/{f.relative_to(p)}"] = {"path": str(f), "sha256": sha256_file(f),
                                                     "bytes": f.stat().st_size}
    return out


def write_run_info(out_dir: str | Path, cfg: Config | None, inputs: dict[str, str | Path] | None = None,
                   extra: dict[str, Any] | None = None, name: str = "run_info.json") -> dict[str, Any]:
    """Write `config.yaml` (resolved) and `run_info.json` (versions, commit, seed, input sha256)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    info: dict[str, Any] = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": sys.argv,
        "versions": package_versions(),
        "git_commit": git_commit(),
        "seed": cfg.run.seed if cfg is not None else None,
        "inputs": fingerprints(inputs or {}),
    }
    if cfg is not None:
        info["config"] = to_dict(cfg)
        write_text(out_dir / "config.yaml", dump_yaml(cfg))
    if extra:
        info.update(extra)
    write_json(out_dir / name, info)
    return info
