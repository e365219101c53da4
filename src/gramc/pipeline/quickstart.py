"""`gramc quickstart [--out DIR]`: the whole GRAM-C pipeline on synthetic data in a few minutes.

synthetic dataset -> item IDs (trained tokenizer, TF-IDF/SVD, hierarchical clustering) ->
LightGCN -> GRAM-C (tiny T5, collaborative prefix) -> test evaluation -> popularity and LightGCN
baselines -> DIR/report.md with a metrics table and curves. Settings: configs/quickstart.yaml
(loaded by default; `--config` and `key=value` overrides as everywhere). It is an ordinary
`gramc pipeline` run, so a second call skips every finished stage.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ..config import Config, ConfigError, load_config
from ..io import read_json
from ..lock import output_lock
from .pipeline import run_pipeline

DEFAULT_CONFIG = Path(__file__).resolve().parents[3] / "configs" / "quickstart.yaml"


def quickstart_config(config: str | None, overrides: list[str], out: str | None) -> Config:
    path = Path(config) if config else DEFAULT_CONFIG
    if not path.is_file():
        raise ConfigError(f"quickstart config '{path}' not found; pass --config configs/quickstart.yaml")
    cfg = load_config(path, overrides)
    if out:
        cfg.run.out = out
    return cfg


def run_quickstart(cfg: Config, progress: bool = True) -> dict:
    """Run the pipeline into cfg.run.out; copy the report to its top; return the headline figures."""
    root = Path(cfg.run.out)
    with output_lock(root, "quickstart folder (--out)"):  # also over the copy (run_pipeline's lock is this one)
        run_pipeline(cfg, progress=progress)
        for f in (root / "report").glob("report*"):
            shutil.copy2(f, root / f.name)
    test = read_json(root / "eval" / "metrics.json")["metrics"]
    out = {"gramc": test}
    for name in cfg.pipeline.baselines:
        out[name] = read_json(root / "baselines" / name / "metrics.json")["metrics"]
    return out


def summary_table(figures: dict) -> str:
    keys = ("hit@5", "ndcg@5", "hit@10", "ndcg@10")
    lines = ["| model | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    for name, m in figures.items():
        lines.append(f"| {name} | " + " | ".join(f"{m.get(k, 0.0):.4f}" for k in keys) + " |")
    if "pop" in figures and figures["pop"].get("hit@10"):
        ratio = figures["gramc"]["hit@10"] / figures["pop"]["hit@10"]
        lines.append(f"\nGRAM-C hit@10 is {ratio:.2f}x popularity's.")
    return "\n".join(lines)
