"""`gramc plot RUN_DIR`: training curves from a run's log.jsonl as PNG files.

    loss.png      training loss per logged step, validation loss per validation
    lr.png        learning rate and gradient norm (before clipping) per logged step
    metrics.png   validation metrics (ndcg@k, hit@k) per validation, when the run has them
"""

from __future__ import annotations

from pathlib import Path

from ..errors import GramcError
from ..io import atomic_path, pyplot, read_jsonl


class PlotError(GramcError, ValueError):
    """The run folder has no usable log."""


def read_log(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / "log.jsonl"
    if not path.is_file():
        raise PlotError(f"{path} does not exist; is {run_dir} a gramc training run folder?")
    return read_jsonl(path)  # a torn last line (a crash) is left out; a bad line elsewhere names it


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")


def plot_run(run_dir: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    """Write the PNGs (into `out_dir`, default RUN_DIR) and return their paths."""
    plt = pyplot()
    if plt is None:
        return []

    records = read_log(run_dir)
    steps = [r for r in records if r.get("kind") == "step"]
    valids = [r for r in records if r.get("kind") == "valid"]
    if not steps:
        raise PlotError(f"{Path(run_dir) / 'log.jsonl'} has no step records yet")
    out = Path(out_dir) if out_dir else Path(run_dir)
    written: list[Path] = []

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([r["step"] for r in steps], [r["loss"] for r in steps], label="train loss", lw=1)
    if valids:
        ax.plot([r["step"] for r in valids], [r["valid_loss"] for r in valids], "o-", label="validation loss")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("token cross-entropy")
    ax.set_title(f"loss: {Path(run_dir).name}")
    ax.grid(alpha=0.3)
    ax.legend()
    _save(fig, out / "loss.png")
    plt.close(fig)
    written.append(out / "loss.png")

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([r["step"] for r in steps], [r["lr"] for r in steps], color="tab:blue", label="learning rate")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("learning rate", color="tab:blue")
    ax2 = ax.twinx()
    ax2.plot([r["step"] for r in steps], [r["grad_norm"] for r in steps], color="tab:orange", lw=0.8)
    ax2.set_ylabel("gradient norm before clipping", color="tab:orange")
    ax.set_title("learning rate and gradient norm")
    ax.grid(alpha=0.3)
    _save(fig, out / "lr.png")
    plt.close(fig)
    written.append(out / "lr.png")

    names = sorted({k for r in valids for k in r if k.startswith(("ndcg@", "hit@"))},
                   key=lambda k: (k.split("@")[0], int(k.split("@")[1])))
    if names:
        fig, ax = plt.subplots(figsize=(7, 4))
        for k in names:
            pts = [(r["step"], r[k]) for r in valids if k in r]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=k)
        best = [r for r in valids if r.get("best")]
        if best:
            ax.axvline(best[-1]["step"], color="grey", ls="--", lw=0.8, label="best checkpoint")
        ax.set_xlabel("optimiser step")
        ax.set_ylabel("validation metric")
        ax.set_title("validation metrics")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, ncol=2)
        _save(fig, out / "metrics.png")
        plt.close(fig)
        written.append(out / "metrics.png")
    return written
