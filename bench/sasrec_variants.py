"""Compare SASRec-CE variants on Beauty by their validation curves (and test, where they finished).

    .venv/bin/python bench/sasrec_variants.py tied=runs/bench_beauty/sasrec \
        repeat_bias=runs/exp/sasrec_rep untied=runs/exp/sasrec_untied ...

Each NAME=DIR is a `gramc baseline sasrec --out DIR` folder (log.jsonl, run_info.json, and
metrics.json when it finished; a run stopped by hand has no test row). Writes
bench/results/sasrec_variants.{json,png} and prints a markdown table: best validation epoch,
validation ndcg@10 / hit@10 at fixed epochs, test R@10 / N@10, and the test users whose top-1
is an item already in their history.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from gramc.io import atomic_path, read_json, write_json  # noqa: E402

OUT = ROOT / "bench" / "results" / "sasrec_variants"
EPOCHS = (6, 12, 24)  # validation compared at equal epochs: the runs had different budgets and speeds


def _settings(info: dict) -> str:
    """The run's non-default baseline.sasrec.* settings, e.g. 'dim=128 repeat_bias=False'."""
    from gramc.config import load_config, to_dict

    default = to_dict(load_config(None, []))["baseline"]["sasrec"]
    mine = info["config"]["baseline"]["sasrec"]
    return " ".join(f"{k}={v}" for k, v in mine.items() if default.get(k) != v and k != "max_minutes")


def summarize_run(name: str, folder: Path) -> dict:
    rows = [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines() if line.strip()]
    if not rows:
        raise SystemExit(f"{folder / 'log.jsonl'}: no epochs logged")
    info = read_json(folder / "run_info.json")
    best = max(rows, key=lambda r: r["valid_ndcg@10"])
    at = {r["epoch"]: r for r in rows}
    rec = {"name": name, "folder": str(folder), "settings": _settings(info),
           "budget_minutes": info["config"]["baseline"]["sasrec"]["max_minutes"], "epochs": len(rows),
           "seconds_per_epoch": round(rows[-1]["seconds"] / len(rows), 1), "best_epoch": best["epoch"],
           "best_valid_ndcg@10": best["valid_ndcg@10"], "best_valid_hit@10": best["valid_hit@10"],
           "at_epoch": {e: [at[e]["valid_ndcg@10"], at[e]["valid_hit@10"]] for e in EPOCHS if e in at},
           "curve": [[r["epoch"], r["valid_ndcg@10"], r["valid_hit@10"]] for r in rows],
           "repeat_bias": rows[-1].get("repeat_bias"), "finished": (folder / "metrics.json").is_file()}
    if rec["finished"]:
        test = read_json(folder / "metrics.json")
        rec["test"] = {k: test["metrics"][k] for k in ("hit@5", "ndcg@5", "hit@10", "ndcg@10")}
        rec["test_top1_in_history"] = test.get("repeats", {}).get("top1_in_history")
        if rec["test_top1_in_history"] is None and (folder / "sasrec.pt").is_file():
            rec["test_top1_in_history"] = _test_repeats(folder, info)["top1_in_history"]
    return rec


def _test_repeats(folder: Path, info: dict) -> dict:
    """`repeats` of a run whose metrics.json predates that field, from its saved best weights."""
    import torch

    from gramc.baselines.common import evaluate_scorer, load_data
    from gramc.baselines.sasrec import SASRec, make_scorer
    from gramc.config import from_dict

    cfg = from_dict(info["config"])
    cfg.eval.bootstrap = 0
    ds = load_data(cfg)
    model = SASRec(ds.num_items, cfg.baseline.sasrec)
    model.load_state_dict(torch.load(folder / "sasrec.pt", map_location="cpu")["state_dict"])
    rec = evaluate_scorer(ds, cfg, make_scorer(model, torch.device("cpu")), "sasrec", None,
                          history_window=cfg.baseline.sasrec.max_len, splits=("test",))["test"]
    old = read_json(folder / "metrics.json")["metrics"]["hit@10"]
    if abs(rec["metrics"]["hit@10"] - old) > 1e-9:
        raise SystemExit(f"{folder}: its sasrec.pt gives test hit@10 {rec['metrics']['hit@10']}, metrics.json {old}")
    return rec["repeats"]


def table(runs: list[dict]) -> str:
    head = ("| variant | non-default settings | epochs (s/epoch) | best valid ndcg@10 / hit@10 (epoch) | "
            + " | ".join(f"valid at epoch {e}" for e in EPOCHS) + " | test R@10 | test N@10 | test top-1 in history | learned repeat bias |")
    lines = [head, "|" + "---|" * (8 + len(EPOCHS))]
    for r in runs:
        at = " | ".join(f"{r['at_epoch'][e][0]:.4f} / {r['at_epoch'][e][1]:.4f}" if e in r["at_epoch"] else "-"
                        for e in EPOCHS)
        t, top1 = r.get("test"), r.get("test_top1_in_history")
        test = f"{t['hit@10']:.4f} | {t['ndcg@10']:.4f}" if t else "stopped | stopped"
        lines.append(f"| {r['name']} | {r['settings'] or '(defaults)'} | {r['epochs']} ({r['seconds_per_epoch']}) | "
                     f"{r['best_valid_ndcg@10']:.4f} / {r['best_valid_hit@10']:.4f} ({r['best_epoch']}) | {at} | "
                     f"{test} | " + (f"{top1:.0%} |" if top1 is not None else "- |")
                     + (f" {r['repeat_bias']:.2f} |" if r["repeat_bias"] is not None else " - |"))
    return "\n".join(lines)


def plot(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    for r in runs:
        ep = [c[0] for c in r["curve"]]
        ax[0].plot(ep, [c[1] for c in r["curve"]], label=r["name"])
        ax[1].plot(ep, [c[2] for c in r["curve"]], label=r["name"])
    ax[0].set_title("validation ndcg@10"), ax[1].set_title("validation hit@10")
    for a in ax:
        a.set_xlabel("epoch")
    ax[1].legend(fontsize=7)
    fig.suptitle("SASRec-CE variants on Beauty (same data, same evaluator)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def main(argv: list[str]) -> int:
    if not argv or any("=" not in a for a in argv):
        raise SystemExit(__doc__)
    runs = [summarize_run(name, Path(folder)) for name, folder in (a.split("=", 1) for a in argv)]
    write_json(OUT.with_suffix(".json"), {"command": "python bench/sasrec_variants.py " + " ".join(argv),
                                          "runs": runs})
    plot(runs, OUT.with_suffix(".png"))
    print(table(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
