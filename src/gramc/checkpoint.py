"""Training checkpoints: everything needed to continue a run exactly where it stopped.

A checkpoint is a folder (written atomically: built in a temporary sibling, then renamed, so an
interrupted save never damages the previous one):

    model.safetensors   model weights (tied weights stored once; safetensors.torch.save_model), with
                        the model's `checkpoint_metadata()` (e.g. `gramc.softmax`) in the header
    optimizer.pt        optimiser and LR-scheduler state
    rng.pt              RNG states (python, numpy, torch CPU, CUDA) of *every* rank, by rank
    state.json          TrainState: epoch, global step, step within the epoch, best score so far
    assets.json         fingerprint and source of each asset the weights were trained with
                        (dataset, tokenizer, ids, gcn, passage_cache); `verify_assets` checks it

Run folders keep `checkpoints/last` (the most recent) and `checkpoints/best` (the best by
validation). Only rank 0 writes; every rank reads its own RNG state back on resume.

The format sits below the stages: training writes it, and run loading (`gramc.model.runs`),
evaluation and the doctor read it without importing the trainer.
"""

from __future__ import annotations

import errno
import os
import random
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_model, save_model
from torch import nn

from .errors import GramcError
from .errors import AssetMismatchError
from .io import atomic_dir, read_json, torch_write, write_json

ASSETS_FILE = "assets.json"
ASSET_NAMES = {"dataset": "dataset", "tokenizer": "tokenizer", "ids": "item-ID table", "gcn": "GCN table",
               "passage_cache": "passage cache"}


class CheckpointError(GramcError, RuntimeError):
    """A checkpoint folder is missing, incomplete or does not match the run."""

    exit_code = 1


@dataclass
class TrainState:
    """Where a run stands. `epoch`/`step_in_epoch` say which optimiser step comes next."""

    epoch: int = 0  # epoch of the next optimiser step
    step: int = 0  # optimiser steps done in total
    step_in_epoch: int = 0  # optimiser steps done in `epoch`
    world: int = 1  # processes that wrote this state
    best_metric: str = ""  # name of the selection metric
    best_value: Optional[float] = None
    best_step: int = -1
    best_epoch: int = -1
    done: bool = False  # training finished (the test split may still be pending)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainState":
        d = dict(d)
        if not d.get("extra", {}):  # checkpoints written before the unused `extra` field was removed
            d.pop("extra", None)
        return cls(**d)


def rng_state() -> dict[str, Any]:
    """This process's RNG states, in a form `torch.load(weights_only=True)` accepts."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                  int(np_state[3]), float(np_state[4])),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(folder: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: Any, state: TrainState, rng_states: list[dict[str, Any]],
                    assets: dict[str, Any] | None = None) -> Path:
    """Write a complete checkpoint folder atomically (replacing an older one at `folder`);
    `assets` (`Assets.fingerprints()`) goes into assets.json."""
    folder = Path(folder)
    with atomic_dir(folder) as tmp:
        if assets:
            write_json(tmp / ASSETS_FILE, assets)
        save_model_file(tmp / "model.safetensors", model)
        torch_write({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()},
                    tmp / "optimizer.pt", target=folder / "optimizer.pt")
        torch_write(rng_states, tmp / "rng.pt", target=folder / "rng.pt")
        write_json(tmp / "state.json", asdict(state))
    return folder


def save_model_file(path: str | Path, model: nn.Module) -> None:
    """Write the weights to `path` with the model's `checkpoint_metadata()` (if it has one) in the header."""
    module = getattr(model, "module", model)  # a DDP wrapper: the module's metadata
    meta = module.checkpoint_metadata() if hasattr(module, "checkpoint_metadata") else None
    try:
        save_model(model, str(path), metadata=meta)
    except SafetensorError as e:  # safetensors reports I/O failures (a full disk) as its own error
        raise os_error(e, path) from e


def os_error(e: Exception, path: str | Path) -> OSError:
    """The OSError a library's I/O failure stands for ("... (os error 28)" -> ENOSPC), naming `path`,
    so that `gramc.cli.main` reports it in one line as it does every OSError."""
    found = re.search(r"os error (\d+)", str(e))
    code = int(found.group(1)) if found else errno.EIO
    return OSError(code, os.strerror(code), str(path))


def copy_checkpoint(src: str | Path, dst: str | Path) -> None:
    """Copy a checkpoint folder (e.g. last -> best) atomically."""
    src = Path(src)
    with atomic_dir(dst) as tmp:
        for f in src.iterdir():
            shutil.copy2(f, tmp / f.name)


def verify_assets(folder: str | Path, current: dict[str, Any] | None) -> list[str]:
    """Refuse (AssetMismatchError) when checkpoint `folder` was trained with other assets than
    `current` (`Assets.fingerprints()`); returns warnings (e.g. a checkpoint without a record)."""
    folder = Path(folder)
    path = folder / ASSETS_FILE
    if current is None:
        return []
    if not path.is_file():
        return [f"{folder} has no {ASSETS_FILE} (written by an older gramc): cannot verify that it is used "
                f"with the dataset, tokenizer, IDs and GCN it was trained with"]
    saved = _read_json(path)
    bad = [k for k in ASSET_NAMES if k in saved and k in current
           and saved[k].get("fingerprint") != current[k].get("fingerprint")]
    bad += [k for k in ASSET_NAMES if (k in saved) != (k in current) and k in ("gcn",)]
    if not bad:
        return []
    lines = [f"  {ASSET_NAMES[k]}: trained with {saved.get(k, {}).get('source', 'none')} "
             f"(fingerprint {str(saved.get(k, {}).get('fingerprint', '-'))[:12]}), now "
             f"{current.get(k, {}).get('source', 'none')} ({str(current.get(k, {}).get('fingerprint', '-'))[:12]})"
             for k in bad]
    raise AssetMismatchError(
        f"checkpoint {folder} was trained with other assets than the ones now found:\n" + "\n".join(lines) +
        "\nIts scores would be those of a model read against other data. Restore the assets it was "
        "trained with (the sources above), or train a new run on the current ones "
        "(`gramc train --overwrite`, or a new run.out).")


def _read_json(path: Path) -> Any:
    try:
        return read_json(path)
    except (ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is damaged (not valid JSON: {e}); the checkpoint folder "
                              f"{path.parent} cannot be used") from e


def _require(folder: Path, names: tuple[str, ...]) -> None:
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint folder {folder} does not exist; nothing to resume "
                              f"(was the run saved? see train.save_every)")
    for n in names:
        if not (folder / n).is_file():
            raise CheckpointError(f"checkpoint {folder} is incomplete: {n} is missing")


def load_weights(folder: str | Path, model: nn.Module) -> None:
    """Load only the model weights of a checkpoint (strict: names and shapes must match)."""
    folder = Path(folder)
    _require(folder, ("model.safetensors",))
    path = folder / "model.safetensors"
    try:
        missing, unexpected = load_model(model, str(path), strict=False)
    except RuntimeError as e:  # shape mismatch
        raise CheckpointError(f"{path} does not fit the model: {e}") from e
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types for a damaged file
        raise CheckpointError(f"{path} is damaged or not a safetensors file ({type(e).__name__}: {e})") from e
    if missing or unexpected:
        raise CheckpointError(f"{folder / 'model.safetensors'} does not fit the model: missing "
                              f"{sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}")
    poisoned = [n for n, t in model.state_dict().items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if poisoned:
        raise CheckpointError(f"{path} holds non-finite values (NaN or infinity) in {len(poisoned)} tensor(s), e.g. "
                              f"{poisoned[:3]}: a model with them scores nothing; use an earlier checkpoint or "
                              f"train again")
    if hasattr(model, "check_checkpoint"):  # e.g. GramC: trained with the same model.softmax
        with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
            meta = f.metadata() or {}
        try:
            model.check_checkpoint(meta, str(folder / "model.safetensors"))
        except ValueError as e:
            raise CheckpointError(str(e)) from e


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(path, weights_only=True)
    except Exception as e:  # noqa: BLE001 - a truncated/corrupt file raises many kinds of error
        raise CheckpointError(f"{path} is damaged or truncated ({type(e).__name__}: {e}); "
                              f"the checkpoint folder {path.parent} cannot be used") from e


def load_checkpoint(folder: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: Any, rank: int = 0, world: int = 1) -> TrainState:
    """Restore weights, optimiser, scheduler and this rank's RNG state; return the TrainState."""
    folder = Path(folder)
    _require(folder, ("model.safetensors", "optimizer.pt", "rng.pt", "state.json"))
    try:
        state = TrainState.from_dict(_read_json(folder / "state.json"))
    except TypeError as e:
        raise CheckpointError(f"{folder / 'state.json'} does not hold a TrainState ({e})") from e
    if state.world != world:
        raise CheckpointError(f"{folder} was written by {state.world} process(es) but this run has "
                              f"{world}; resume with the same number of processes (the data order "
                              f"and per-rank RNG depend on it)")
    load_weights(folder, model)
    opt = _torch_load(folder / "optimizer.pt")
    try:
        optimizer.load_state_dict(opt["optimizer"])
        scheduler.load_state_dict(opt["scheduler"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{folder / 'optimizer.pt'} does not fit this optimiser ({e})") from e
    rngs = _torch_load(folder / "rng.pt")
    try:
        set_rng_state(rngs[rank])
    except (IndexError, KeyError, TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{folder / 'rng.pt'} holds no usable RNG state for rank {rank} ({e})") from e
    return state
