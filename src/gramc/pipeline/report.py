"""`gramc report RUN_DIR... [--out FILE.md]`: one markdown page comparing runs.

A run folder is anything holding `metrics.json` (test; `metrics_valid.json` beside it) and a
`config.yaml`: a training run, a `gramc evaluate` folder, a baseline folder, or a pipeline root
(expanded into its eval/ and baselines/*). The page shows the settings that differ between runs
(`gramc.config.flatten`), the test metrics with their bootstrap 95% intervals, and PNGs of the
training curves (each run's `log.jsonl`) and of the metrics with their intervals.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import yaml

from ..errors import GramcError
from ..config import flatten
from ..io import atomic_path, pyplot, read_json, write_text

METRIC_COLUMNS = ("hit@1", "hit@5", "ndcg@5", "hit@10", "ndcg@10", "hit@20", "mrr")


class ReportError(GramcError, ValueError):
    """A folder given to `gramc report` holds no run."""


@dataclass
class RunView:
    """What the report reads from one run folder."""

    name: str
    folder: Path
    config: dict[str, Any]  # flattened
    test: dict[str, Any] | None
    valid: dict[str, Any] | None
    log: list[dict[str, Any]] = field(default_factory=list)


def _read_log(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut by a crash: ignore it
    return out


def expand(folders: Sequence[str | Path]) -> list[Path]:
    """Pipeline roots -> their eval/ and baselines/* folders; other folders as they are."""
    out: list[Path] = []
    for f in map(Path, folders):
        if not f.is_dir():
            raise ReportError(f"{f}: not a folder")
        if (f / "pipeline.json").is_file() or ((f / "eval").is_dir() and not (f / "metrics.json").is_file()):
            if (f / "eval" / "metrics.json").is_file():
                out.append(f / "eval")
            out.extend(sorted(p for p in (f / "baselines").glob("*") if (p / "metrics.json").is_file()))
        else:
            out.append(f)
    return out


def load_run(folder: Path, name: str | None = None, curves_from: Path | None = None) -> RunView:
    """Read one run folder (metrics, config, curves from its log.jsonl or `curves_from`)."""
    if not (folder / "metrics.json").is_file() and not (folder / "log.jsonl").is_file():
        raise ReportError(f"{folder}: no metrics.json or log.jsonl (is it a gramc run folder?)")
    cfg = {}
    if (folder / "config.yaml").is_file():
        cfg = flatten(yaml.safe_load((folder / "config.yaml").read_text(encoding="utf-8")) or {})
    test = read_json(folder / "metrics.json") if (folder / "metrics.json").is_file() else None
    valid = read_json(folder / "metrics_valid.json") if (folder / "metrics_valid.json").is_file() else None
    if curves_from is None and (folder / "source.json").is_file():
        curves_from = Path(read_json(folder / "source.json").get("train_run", ""))
    log = _read_log((curves_from or folder) / "log.jsonl")
    label = name or (test or {}).get("model") or folder.name
    if label in ("gramc", "eval") and cfg:
        label = "GRAM-C" if cfg.get("model.prefix.enabled") else "GRAM"
    return RunView(label, folder, cfg, test, valid, log)


def _unique_names(runs: list[RunView]) -> None:
    seen: dict[str, int] = {}
    for r in runs:
        seen[r.name] = seen.get(r.name, 0) + 1
    for r in runs:
        if seen[r.name] > 1:
            r.name = f"{r.name} ({r.folder.parent.name}/{r.folder.name})"


def config_diff(runs: list[RunView], ignore: Sequence[str] = ("run.out",)) -> list[str]:
    """Keys whose values differ between the runs (missing counts as different)."""
    keys = sorted(set().union(*[r.config for r in runs])) if runs else []
    diff = []
    for k in keys:
        if k in ignore or k.endswith(".out") or k == "data.path":
            continue
        values = {json.dumps(r.config.get(k, "<absent>"), sort_keys=True, default=str) for r in runs}
        if len(values) > 1:
            diff.append(k)
    return diff


def _curve_points(log: list[dict[str, Any]]) -> tuple[list, list, list, list, str]:
    """(x_loss, loss, x_valid, ndcg@10, x label) from a trainer or a SASRec log."""
    steps = [r for r in log if r.get("kind") == "step"]
    valid = [r for r in log if r.get("kind") == "valid" and "ndcg@10" in r]
    if steps or valid:
        return ([r["step"] for r in steps], [r["loss"] for r in steps],
                [r["step"] for r in valid], [r["ndcg@10"] for r in valid], "optimiser step")
    ep = [r for r in log if "epoch" in r and "train_loss" in r]
    return ([r["epoch"] for r in ep], [r["train_loss"] for r in ep],
            [r["epoch"] for r in ep if "valid_ndcg@10" in r], [r["valid_ndcg@10"] for r in ep if "valid_ndcg@10" in r],
            "epoch")


def _savefig(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def plot_curves(runs: list[RunView], path: Path) -> bool:
    """Training loss and validation ndcg@10 of every run that has a log; False when none has."""
    plt = pyplot()
    if plt is None:
        return False

    with_log = [r for r in runs if r.log]
    if not with_log:
        return False
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    for r in with_log:
        xl, loss, xv, nd, xlabel = _curve_points(r.log)
        if loss:
            ax[0].plot(xl, loss, label=f"{r.name} ({xlabel})")
        if nd:
            ax[1].plot(xv, nd, marker="o", ms=3, label=f"{r.name} ({xlabel})")
    for a, title in zip(ax, ("training loss", "validation ndcg@10")):
        a.set_title(title), a.set_xlabel("step / epoch")
        if a.get_legend_handles_labels()[0]:
            a.legend(fontsize=7)
    fig.tight_layout()
    _savefig(fig, path)
    plt.close(fig)
    return True


def plot_metrics(runs: list[RunView], path: Path, metrics: Sequence[str] = ("hit@10", "ndcg@10")) -> bool:
    """Bars of test metrics with bootstrap 95% intervals as error bars."""
    plt = pyplot()
    if plt is None:
        return False
    import numpy as np

    rows = [r for r in runs if r.test and "metrics" in r.test]
    if not rows:
        return False
    fig, ax = plt.subplots(figsize=(2 + 1.4 * len(rows) * len(metrics) / 2, 3.4))
    width = 0.8 / len(metrics)
    x = np.arange(len(rows))
    for j, m in enumerate(metrics):
        vals = [r.test["metrics"].get(m, 0.0) for r in rows]
        cis = [r.test.get("ci", {}).get(m) for r in rows]
        err = np.array([[v - c[0], c[1] - v] if c else [0.0, 0.0] for v, c in zip(vals, cis)]).T
        ax.bar(x + j * width, vals, width, yerr=err, capsize=3, label=m)
    ax.set_xticks(x + width * (len(metrics) - 1) / 2, [r.name for r in rows], rotation=15, fontsize=8)
    ax.set_title("test metrics (95% bootstrap CI)")
    ax.legend()
    fig.tight_layout()
    _savefig(fig, path)
    plt.close(fig)
    return True


def _cell(rec: dict[str, Any] | None, key: str, with_ci: bool = False) -> str:
    if not rec or key not in rec.get("metrics", {}):
        return "-"
    v = rec["metrics"][key]
    ci = rec.get("ci", {}).get(key)
    return f"{v:.4f} [{ci[0]:.4f}, {ci[1]:.4f}]" if with_ci and ci else f"{v:.4f}"


def render(runs: list[RunView], images: dict[str, str], title: str = "gramc report") -> str:
    lines = [f"# {title}", "", "| run | folder | test users | beams |", "|---|---|---|---|"]
    for r in runs:
        users = (r.test or {}).get("users", "-")
        beams = (r.test or {}).get("beams", "full ranking")
        lines.append(f"| {r.name} | `{r.folder}` | {users} | {beams} |")
    lines += ["", "## Test metrics", "",
              "Means over test users; ndcg@10 and hit@10 with bootstrap 95% confidence intervals.", "",
              "| run | " + " | ".join(METRIC_COLUMNS) + " |", "|---|" + "---|" * len(METRIC_COLUMNS)]
    for r in runs:
        cells = [_cell(r.test, k, with_ci=k in ("hit@10", "ndcg@10")) for k in METRIC_COLUMNS]
        lines.append(f"| {r.name} | " + " | ".join(cells) + " |")
    if any(r.valid for r in runs):
        lines += ["", "Validation (best checkpoint / epoch):", "", "| run | hit@10 | ndcg@10 |", "|---|---|---|"]
        for r in runs:
            lines.append(f"| {r.name} | {_cell(r.valid, 'hit@10')} | {_cell(r.valid, 'ndcg@10')} |")
    if "metrics" in images:
        lines += ["", f"![test metrics]({images['metrics']})"]
    if "curves" in images:
        lines += ["", "## Training curves", "", f"![curves]({images['curves']})"]
    diff = config_diff([r for r in runs if r.config])
    lines += ["", "## Settings that differ", ""]
    if not diff:
        lines.append("All runs share the same settings (apart from output paths)." if len(runs) > 1
                     else "One run: nothing to compare.")
    else:
        lines += ["| key | " + " | ".join(r.name for r in runs) + " |", "|---|" + "---|" * len(runs)]
        for k in diff:
            lines.append(f"| `{k}` | " + " | ".join(
                f"`{json.dumps(r.config[k], default=str)}`" if k in r.config else "-" for r in runs) + " |")
    return "\n".join(lines) + "\n"


def write_report(folders: Sequence[str | Path], out: str | Path, curves_from: dict[str, Path] | None = None,
                 title: str = "gramc report") -> Path:
    """Write the markdown page (and PNGs beside it) comparing the runs in `folders`."""
    out = Path(out)
    runs = [load_run(f, curves_from=(curves_from or {}).get(str(f))) for f in expand(folders)]
    if not runs:
        raise ReportError("no run folders to report on")
    _unique_names(runs)
    out.parent.mkdir(parents=True, exist_ok=True)
    images: dict[str, str] = {}
    stem = out.stem
    if plot_curves(runs, out.parent / f"{stem}_curves.png"):
        images["curves"] = f"{stem}_curves.png"
    if plot_metrics(runs, out.parent / f"{stem}_metrics.png"):
        images["metrics"] = f"{stem}_metrics.png"
    write_text(out, render(runs, images, title))
    return out
