"""Run folders: never overwritten silently, resumed only with the config they were trained with.

* `claim_run(cfg, overwrite)`: a fresh `gramc train` into `run.out` that already holds a run is
  refused unless `overwrite`, which moves the old run aside to `<run.out>.replaced-<time>` (never
  deletes it), and only under the run's lock (gramc.lock). A folder with files gramc did not write
  is refused (gramc.io.claim_output).
* `resume_config(saved, new)`: `--resume` refuses a config that differs from the run's own
  config.yaml except in `RESUMABLE_KEYS` (budgets, logging, evaluation speed), naming the keys.
* `open_run(cfg, resume, overwrite)`: both checks, and the paths of the config made absolute
  (`gramc.config.absolute_paths`) so that config.yaml reads back from any working directory.
* `resume_configs(run_dir, overrides)`: a run's config.yaml, read once, and the config to resume
  it with (the same plus the overrides).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

from ..config import Config, absolute_paths, apply_overrides, flatten, from_dict, to_dict
from ..errors import GramcError
from ..io import aside_path, claim_output, holds_marker
from ..lock import output_lock
from ..model.runs import RunError, run_config
from ..runtime import launch

# keys that may change on --resume: more epochs or steps (training then goes on), how often it
# logs, saves and validates, and how fast (not what) it evaluates
RESUMABLE_KEYS = (
    "train.epochs", "train.max_steps", "train.patience", "train.log_every", "train.save_every", "train.eval_every",
    "train.eval_users", "train.final_eval", "train.final_eval_users", "train.num_workers", "run.device",
    "eval.batch_size", "eval.item_batch_size", "eval.bf16", "eval.bootstrap", "eval.predictions_top", "gcn.device",
)


class RunFolderError(GramcError):
    """A run folder would be overwritten, or resumed with another config."""


def holds_run(folder: Path) -> bool:
    return folder.is_dir() and holds_marker(folder, "run")


def claim_run(cfg: Config, overwrite: bool = False, is_main: bool = True, assets: Sequence[str] = ()) -> Path | None:
    """Check that a fresh training may write `run.out`; with `overwrite` move an old run aside.

    `assets`: the names a recipe builds into the run folder before training starts (a folder
    holding only these is claimed). Returns where the old run went (None when there was none)."""
    out = Path(cfg.run.out)
    inputs = [cfg.data.path, cfg.ids.file, cfg.ids.embedding_file,
              cfg.ids.tokenizer if cfg.ids.tokenizer != "train" and Path(cfg.ids.tokenizer).exists() else None,
              cfg.model.similar_source if cfg.model.similar_source != "gcn" else None,
              cfg.gcn.out if cfg.gcn.out and Path(cfg.gcn.out).resolve() != (out / "gcn").resolve() else None]
    if not holds_run(out):
        if out.is_dir() and any(out.iterdir()) and all(p.name in assets for p in out.iterdir()):
            claim_output(out, "run", inputs, what="run folder (run.out)", own=assets)
            return None  # only assets built for this run so far (their stamps guard them)
        claim_output(out, "run", inputs, what="run folder (run.out)")
        return None
    claim_output(out, "run", inputs, what="run folder (run.out)")
    if not overwrite:
        step = _last_step(out)
        raise RunFolderError(
            f"{out} already holds a run ({step}); continue it with `gramc train --resume {out}`, train "
            f"into another run.out, or pass --overwrite to move it aside (kept as {out.name}.replaced-<time>)")
    aside = aside_path(out)  # a free name: two overwrites in one second never collide
    if is_main:
        # only under the run's lock: never from under a process still writing the run (a no-op
        # inside `train`, which holds it already)
        with output_lock(out, "run folder (run.out)"):
            out.rename(aside)
        print(f"--overwrite: previous run moved to {aside}")
    return aside


def _last_step(out: Path) -> str:
    state = out / "checkpoints" / "last" / "state.json"
    try:
        s = json.loads(state.read_text(encoding="utf-8"))
        return f"last checkpoint at step {s.get('step')}, epoch {s.get('epoch')}" + (", finished" if s.get("done") else "")
    except (OSError, ValueError):
        return "no checkpoint yet"


def resume_config(saved: Config, new: Config) -> None:
    """Refuse `new` for resuming a run trained with `saved` when keys outside RESUMABLE_KEYS differ."""
    a, b = flatten(to_dict(saved)), flatten(to_dict(new))
    diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k) and k != "run.out")
    bad = [k for k in diff if k not in RESUMABLE_KEYS]
    if bad:
        shown = ", ".join(f"{k} ({a.get(k)!r} -> {b.get(k)!r})" for k in bad[:8])
        raise RunFolderError(
            f"--resume continues a run with the config it was trained with, but these keys differ: {shown}"
            f"{' (+%d more)' % (len(bad) - 8) if len(bad) > 8 else ''}. Only these may change on resume: "
            f"{', '.join(RESUMABLE_KEYS)}. Start a new run (another run.out, or --overwrite) to change the others")


def saved_config(run_dir: Path) -> Config:
    """The config.yaml a run was trained with (paths resolved as `gramc evaluate` resolves them)."""
    try:
        return run_config(run_dir)
    except RunError as e:
        raise RunFolderError(f"cannot resume: {e}") from e


def resume_configs(run_dir: Path, overrides: Sequence[str] = ()) -> tuple[Config, Config]:
    """(the config.yaml of the run in `run_dir`, that config with `overrides` applied): the file is
    read once; `open_run` checks the second against the first."""
    saved = saved_config(run_dir)
    tree = apply_overrides(to_dict(saved), overrides)
    return saved, absolute_paths(from_dict(tree), run_dir, Path.cwd())


def open_run(cfg: Config, resume: bool, overwrite: bool, saved: Optional[Config] = None,
             stage: bool = False, assets: Sequence[str] = ()) -> tuple[Config, bool]:
    """Check `run.out` for a fresh run or a resume; return (config with absolute paths, resume).

    `saved`: the run's own config.yaml when the caller read it already (`resume_configs`);
    `assets`: what the recipe builds into the run folder (`claim_run`).
    `stage=True`: `run.out` is a pipeline stage's folder, claimed by the stage and resumed only with
    the settings its fingerprint allows (gramc.pipeline.stage), so neither check is made again.
    A resume of a run that died before its first checkpoint starts it again from step 0."""
    cfg = absolute_paths(cfg)
    out = Path(cfg.run.out)
    if resume and overwrite:
        raise RunFolderError("--resume continues a run and --overwrite moves it aside: give one of them")
    if not resume:
        if not stage:
            claim_run(cfg, overwrite, is_main=launch().is_main, assets=assets)
        return cfg, False
    _refuse_other_outputs(out)
    if not stage:
        resume_config(saved if saved is not None else saved_config(out), cfg)
    ckpts = out / "checkpoints"
    if not (ckpts / "last").is_dir():
        others = sorted(p.name for p in ckpts.iterdir() if p.is_dir()) if ckpts.is_dir() else []
        if others:  # never train from step 0 over a run that has checkpoints
            step = _checkpoint_step(ckpts / others[0])
            raise RunFolderError(
                f"{ckpts / 'last'} is missing but {', '.join(str(ckpts / o) for o in others)} "
                f"{'is' if len(others) == 1 else 'are'} there ({others[0]}: step {step}); --resume starts from "
                f"checkpoints/last only. To resume from {others[0]}, copy it: `cp -r {ckpts / others[0]} "
                f"{ckpts / 'last'}`, then run the same command again")
        if launch().is_main:
            print(f"{out} has no checkpoint yet (stopped before its first save): training it from step 0")
        return cfg, False
    return cfg, True


# what other commands' folders hold (they also hold config.yaml and run_info.json, as runs do)
_OTHER_OUTPUTS = {"dataset.json": "a dataset folder (gramc data prepare)",
                  "gcn_meta.json": "a GCN folder (gramc gcn train)",
                  "pipeline.json": "a pipeline folder (its run is in train/)",
                  "pipeline_run_info.json": "a pipeline folder (its run is in train/)",
                  "tokenizer.json": "a tokenizer folder"}


def _refuse_other_outputs(out: Path) -> None:
    """`--resume` writes checkpoints and a log into `out`: refuse a folder another command wrote."""
    for name, what in _OTHER_OUTPUTS.items():
        if (out / name).exists():
            raise RunFolderError(f"cannot resume {out}: it is {what} (it holds {name}), not a training run; "
                                 f"--resume continues a folder written by `gramc train`, and nothing was written")


def _checkpoint_step(folder: Path) -> str:
    """The step a checkpoint folder holds (its state.json), or '?' when it cannot be read."""
    try:
        return str(json.loads((folder / "state.json").read_text(encoding="utf-8")).get("step", "?"))
    except (OSError, ValueError):
        return "?"
