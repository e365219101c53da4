"""A trained run folder read back: its config, one of its checkpoints, the model with its assets.

Shared by every stage that opens a run: `gramc train --resume` (train), `gramc evaluate` (eval),
`gramc doctor` on a run, `gramc recommend` (serve) and the pipeline. It sits with the model
because loading needs nothing later than the model and the checkpoint format (`gramc.checkpoint`).

* `run_config(run_dir, overrides=())`: RUN_DIR/config.yaml with `run.out` = RUN_DIR and
  `key.sub=value` overrides applied by the rule of `load_config` (`config.apply_overrides`).
* `checkpoint_folder(run_dir, which)`: `best` / `last` under RUN_DIR/checkpoints, or a path.
* `load_model_from_run(run_dir, which, overrides)` -> (GramC on `run.device`, eval mode; Assets; Config).

Every failure is a `RunError` (exit code 2) that names the folder or file and what to do.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

import yaml

from ..checkpoint import CheckpointError, load_weights, verify_assets
from ..config import Config, absolute_paths, apply_overrides, from_dict, read_yaml, upgrade_saved
from ..errors import GramcError
from ..runtime import resolve_device
from .assets import Assets
from .gramc import GramC


class RunError(GramcError):
    """A run folder or checkpoint cannot be read back (missing, damaged, or for another model)."""

    exit_code = 2


def run_config(run_dir: str | Path, overrides: Sequence[str] = ()) -> Config:
    """The resolved config of a run folder (its config.yaml), with run.out pointing at the folder."""
    run_dir = Path(run_dir)
    path = run_dir / "config.yaml"
    if run_dir.is_file():
        raise RunError(f"{run_dir} is a file; give the run folder (the one holding config.yaml and checkpoints/)")
    if not path.is_file():
        raise RunError(f"{run_dir} is not a gramc run folder (no config.yaml); train one with `gramc train`")
    try:
        tree = read_yaml(path.read_text(encoding="utf-8"), str(path)) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise RunError(f"{path} is damaged ({e}); it is not a readable run config") from e
    tree.setdefault("run", {})["out"] = str(run_dir)
    upgrade_saved(tree)  # keys of an earlier gramc, read under their current names
    apply_overrides(tree, overrides)
    # relative paths (runs of older gramc) are resolved against the run folder where they exist there
    return absolute_paths(from_dict(tree), run_dir, Path.cwd())


def checkpoint_folder(run_dir: str | Path, which: str = "best") -> Path:
    """`best`, `last` (under RUN_DIR/checkpoints/) or a path to a checkpoint folder / model.safetensors."""
    run_dir = Path(run_dir)
    if which in ("best", "last"):
        folder = run_dir / "checkpoints" / which
        if not (folder / "model.safetensors").is_file():
            other = "last" if which == "best" else "best"
            hint = (f"; try --checkpoint {other}" if (run_dir / "checkpoints" / other / "model.safetensors").is_file()
                    else "; has the run been trained?")
            raise RunError(f"no checkpoint at {folder / 'model.safetensors'}{hint}")
        return folder
    p = Path(which)
    if p.is_file() and p.name.endswith(".safetensors"):
        return p.parent
    if (p / "model.safetensors").is_file():
        return p
    raise RunError(f"checkpoint {which!r} is neither best, last, a checkpoint folder nor a model.safetensors file")


def load_model_from_run(run_dir: str | Path, which: str = "best", overrides: Sequence[str] = (),
                        progress: bool = True, cfg: Config | None = None,
                        folder: Path | None = None) -> tuple[GramC, Assets, Config]:
    """(model on run.device in eval mode, assets, cfg) of a trained run folder. `cfg` / `folder`: the
    run's config (with `overrides` applied) and checkpoint folder when the caller resolved them already."""
    cfg = cfg if cfg is not None else run_config(run_dir, overrides)
    folder = folder if folder is not None else checkpoint_folder(run_dir, which)
    assets = Assets.from_config(cfg, progress=progress, build=False)  # a missing asset is an error, never a rebuild
    for warning in verify_assets(folder, assets.fingerprints()):  # refuses other assets than trained with
        warnings.warn(warning, stacklevel=2)
    model = GramC.from_config(cfg, assets)
    try:
        load_weights(folder, model)
    except CheckpointError as e:
        raise RunError(str(e)) from e
    model.to(resolve_device(cfg.run.device)).eval()
    return model, assets, cfg
