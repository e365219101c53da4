"""Where the prefix helps, if anywhere: issue 15's test users split three ways (no model is run).

    python bench/evidence_segments.py --data /work/ev2/data
        [--results bench/results/evidence_beauty.json] [--out bench/results/evidence_beauty_segments.json]
    python bench/evidence_segments.py --part full --data /work/evidence_beauty/parent   # the full split's rows

Reads every finished model's per-user test ranks (the rows of evidence_beauty.json say where they
are) and the subset's dataset, splits the test users three ways and gives, inside each group,
ndcg@10 and hit@10 of every model and the paired 95% bootstrap interval of each GRAM-C run minus
GRAM (both seeds), of all GRAM-C runs pooled minus GRAM, and of GRAM's seed 2 minus seed 1:

* history: how many items the user had before the test item (terciles of the test users);
* target popularity: the test item's interactions in the training part, s[:-2] (terciles);
* LightGCN finds it: whether LightGCN ranks the test item in its top 50 (where the collaborative
  signal reaches). If the prefix passes LightGCN's signal on, its gain should sit there.

The groups are many small comparisons: read a lone interval that excludes 0 with that in mind.
Writes the JSON, a PNG beside it, and the section "Evidence on Beauty (by segment)" of
docs/benchmarks.md (`--part full`: "..._full" files and "Evidence on Beauty (by segment, full split)").
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from gramc.data.dataset import SeqDataset  # noqa: E402
from gramc.data.splits import item_training_counts  # noqa: E402
from gramc.io import atomic_path, pyplot, read_json, sha256_file, write_json  # noqa: E402
from gramc.metrics import bootstrap_ci, paired_bootstrap_ci, tercile_groups  # noqa: E402
from _docs import replace_section  # noqa: E402
from evidence_beauty import per_user, ranks_path, read_ranks  # noqa: E402

SECTION = "## Evidence on Beauty (by segment)"
# --part: its doc section, how its text names it, its output files' suffix
PARTS = {"subset": (SECTION, "subset", ""), "full": ("## Evidence on Beauty (by segment, full split)", "full split", "_full")}
SECTIONS = {part: v[0] for part, v in PARTS.items()}
METRICS = ("ndcg@10", "hit@10")
KS = [10]
CF_TOP = 50  # "LightGCN finds it": the test item within LightGCN's top 50
GRAM = ("gram", "gram-s2")


def user_features(ds: SeqDataset, users: list[str], cf_ranks: dict[str, int] | None) -> dict[str, np.ndarray]:
    """Per test user (in `users` order): history length, the test item's training count, LightGCN's rank."""
    index = {u: i for i, u in enumerate(ds.users)}
    missing = [u for u in users if u not in index]
    if missing:
        raise SystemExit(f"{len(missing)} test users of the ranks are not in the dataset (first {missing[0]!r}); "
                         "--data must be the folder the models were trained on")
    counts = item_training_counts(ds)
    seqs = [ds.sequences[index[u]] for u in users]
    out = {"history": np.array([len(s) - 1 for s in seqs]),
           "target popularity": np.array([counts[s[-1]] for s in seqs])}
    if cf_ranks is not None:
        r = np.array([cf_ranks[u] for u in users])
        out["LightGCN finds it"] = ((r >= 0) & (r < CF_TOP)).astype(np.int64)
    return out


def groups(name: str, values: np.ndarray) -> list[tuple[str, np.ndarray, int]]:
    """(label, boolean mask, smallest value) per group: two for the LightGCN flag, else terciles
    (ties kept together, so there may be fewer than three)."""
    if name == "LightGCN finds it":
        two = [(f"not in LightGCN's top {CF_TOP}", values == 0, 0), (f"in LightGCN's top {CF_TOP}", values == 1, 1)]
        return [g for g in two if g[1].any()]
    return [(f"{lo}" if lo == hi else f"{lo}-{hi}", mask, lo) for lo, hi, mask in tercile_groups(values)]


def shares(values: np.ndarray, lows: list[int]) -> list[float]:
    """Fraction of `values` in each group [lows[g], lows[g+1]) (the first and last open-ended): how another
    split's users (the full split's) fall into the groups drawn on the subset."""
    which = np.searchsorted(np.array(lows[1:]), values, side="right")
    return [float((which == g).mean()) for g in range(len(lows))]


def _mean_of(per: dict[str, dict[str, np.ndarray]], names: list[str]) -> dict[str, np.ndarray]:
    return {k: sum(per[n][k] for n in names) / len(names) for k in METRICS}


def comparisons(per: dict[str, dict[str, np.ndarray]]) -> dict[str, tuple[list[str], list[str]]]:
    """name -> (a runs, b runs): each paired interval is mean(b) - mean(a), the same users."""
    gram = [n for n in GRAM if n in per]
    gramc = sorted(n for n in per if n.startswith("gramc-"))
    out: dict[str, tuple[list[str], list[str]]] = {}
    if not gram:
        return out
    label = f"GRAM ({len(gram)} seed{'s' if len(gram) > 1 else ''})"
    for n in gramc:
        out[f"{n} - {label}"] = (gram, [n])
    if len(gramc) > 1:
        out[f"GRAM-C (all {len(gramc)} runs) - {label}"] = (gram, gramc)
    if len(gram) == 2:
        out["gram-s2 - gram"] = (["gram"], ["gram-s2"])
    if "sasrec" in per:
        out[f"sasrec - {label}"] = (gram, ["sasrec"])
    return out


def segment(per: dict[str, dict[str, np.ndarray]], features: dict[str, np.ndarray], boot: int,
            seed: int, parent: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """Per feature, per group: users, every model's means and CIs, the paired intervals; with
    `parent` (the full split's features), the share of its test users in each group too."""
    cmps = comparisons(per)
    out: dict[str, Any] = {}
    for name, values in features.items():
        rows = []
        found = groups(name, values)
        share = shares(parent[name], [g[2] for g in found]) if parent and name in parent else None
        for i, (label, mask, _) in enumerate(found):
            sub = {n: {k: v[mask] for k, v in m.items()} for n, m in per.items()}
            means = {n: {k: float(v.mean()) for k, v in m.items()} for n, m in sub.items()}
            ci = {n: bootstrap_ci(m, n=boot, seed=seed) for n, m in sub.items()}
            paired = {c: paired_bootstrap_ci(_mean_of(sub, a), _mean_of(sub, b), n=boot, seed=seed)
                      for c, (a, b) in cmps.items()}
            rows.append({"group": label, "users": int(mask.sum()), "metrics": means, "ci": ci, "paired": paired})
            if share is not None:
                rows[-1]["parent_share"] = share[i]
        out[name] = rows
    return out


def load(results: Path, ds: SeqDataset, part: str = "subset"
         ) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, np.ndarray], list[str]]:
    """Per-user ndcg@10/hit@10 of every model of `part` (subset / full) with test ranks, the test users'
    features, the users."""
    rows = read_json(results).get(part, {}).get("models")
    if not rows:
        raise SystemExit(f"{results} has no {part!r} models")
    per, users = {}, None
    for name, row in rows.items():
        if ranks_path(row) is None:
            print(f"skipped {name}: no per-user test ranks of its own in {row['out']} nor a kept copy")
            continue
        u, m = per_user(row, KS)
        if users is not None and u != users:
            raise SystemExit(f"{name} was evaluated on other test users than the first model; cannot pair them")
        users = u
        per[name] = {k: m[k] for k in METRICS}
    if users is None:
        raise SystemExit(f"no model in {results} has per-user test ranks")
    cf = None
    if "lightgcn" in per:
        r = read_ranks(ranks_path(rows["lightgcn"]))
        cf = dict(zip(r["users"], r["ranks"]))
    return per, user_features(ds, users, cf), users


def shown_values(row: dict[str, Any]) -> dict[str, float]:
    """ndcg@10 of the baselines, and of GRAM and GRAM-C as the mean of their runs, in one group."""
    value = {n: row["metrics"][n]["ndcg@10"] for n in row["metrics"]}
    runs = {"GRAM": [n for n in GRAM if n in value], "GRAM-C": [n for n in value if n.startswith("gramc-")]}
    out = {n: value[n] for n in ("lightgcn", "sasrec") if n in value}
    out.update({k: float(np.mean([value[n] for n in v])) for k, v in runs.items() if v})
    return out


def plot(res: dict[str, Any], path: Path) -> None:
    """Top: ndcg@10 per group and model; bottom: the paired differences with their intervals."""
    plt = pyplot()
    if plt is None:
        return
    segs = list(res["segments"])
    fig, axes = plt.subplots(2, len(segs), figsize=(5 * len(segs), 7), squeeze=False)
    for col, seg in enumerate(segs):
        rows = res["segments"][seg]
        ticks = [f"{r['group']}\n({r['users']:,})" for r in rows]
        models = list(shown_values(rows[0]))
        top, bottom = axes[0][col], axes[1][col]
        for j, n in enumerate(models):
            x = np.arange(len(rows)) + (j - (len(models) - 1) / 2) * 0.8 / len(models)
            top.bar(x, [shown_values(r)[n] for r in rows], width=0.8 / len(models), label=n)
        top.set_xticks(range(len(rows)), ticks, fontsize=8)
        top.set_title(seg)
        top.set_ylabel("test ndcg@10")
        cmps = [c for c in rows[0]["paired"] if c.startswith("GRAM-C (all") or c == "gram-s2 - gram"]
        if not any(c.startswith("GRAM-C (all") for c in cmps):  # one GRAM-C run (the full split): its own
            cmps = [c for c in rows[0]["paired"] if c.startswith("gramc-")] + cmps
        for j, c in enumerate(cmps):
            x = np.arange(len(rows)) + (j - (len(cmps) - 1) / 2) * 0.15
            d = [r["paired"][c]["ndcg@10"] for r in rows]
            m = np.array([v["mean"] for v in d])
            bottom.errorbar(x, m, yerr=[m - [v["lo"] for v in d], [v["hi"] for v in d] - m], fmt="o", capsize=3,
                            label=c)
        bottom.axhline(0, color="grey", lw=0.8)
        bottom.set_xticks(range(len(rows)), ticks, fontsize=8)
        bottom.set_ylabel("paired diff of ndcg@10 (95% CI)")
    axes[0][0].legend(fontsize=7)
    axes[1][0].legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def _ci(d: dict[str, float]) -> str:
    return f"{d['mean']:+.4f} [{d['lo']:+.4f}, {d['hi']:+.4f}]"


def render(res: dict[str, Any]) -> str:
    section, label, _ = PARTS[res.get("part", "subset")]
    lines = [section, "",
             f"Test users of the {label} ({res['users']:,}), split three ways; inside each group ndcg@10 of "
             "the baselines and GRAM, and the paired 95% interval of ndcg@10 differences (the same users, "
             f"{res['bootstrap']} resamples). No model is run: the ranks are those of the table above. "
             "Many small groups: one interval clear of 0 among them is weak evidence.", "",
             f"    {res['command']}", "", f"Plot: `bench/results/{Path(res['plot']).name}`.", ""]
    for seg, rows in res["segments"].items():
        cmps = list(rows[0]["paired"])
        if any(c.startswith("GRAM-C (all") for c in cmps):  # the pooled one here, each run's own in the JSON
            cmps = [c for c in cmps if not c.startswith("gramc-")]
        shown = list(shown_values(rows[0]))
        full = "parent_share" in rows[0]
        lines += [f"**{seg}** (ndcg@10; GRAM and GRAM-C: the mean of their runs)", "",
                  "| group | users | " + ("full split's share | " if full else "") + " | ".join(shown) + " | "
                  + " | ".join(cmps) + " |",
                  "|---|---:|" + ("---:|" if full else "") + "---:|" * len(shown) + "---|" * len(cmps)]
        for r in rows:
            value = shown_values(r)
            share = f"{r['parent_share']:.0%} | " if full else ""
            lines.append(f"| {r['group']} | {r['users']:,} ({r['users'] / res['users']:.0%}) | {share}"
                         + " | ".join(f"{value[n]:.4f}" for n in shown)
                         + " | " + " | ".join(_ci(r["paired"][c]["ndcg@10"]) for c in cmps) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, type=Path, help="the dataset folder the models were trained on "
                    "(the subset's WORK/data; with --part full, the prepared full split)")
    ap.add_argument("--part", choices=sorted(PARTS), default="subset", help="which rows of --results")
    ap.add_argument("--results", type=Path, default=ROOT / "bench" / "results" / "evidence_beauty.json")
    ap.add_argument("--out", type=Path, default=None,
                    help="default bench/results/evidence_beauty_segments.json (_full.json with --part full)")
    ap.add_argument("--doc", type=Path, default=ROOT / "docs" / "benchmarks.md")
    ap.add_argument("--parent", type=Path, default=None,
                    help="the full split's dataset folder: the share of its test users in each group")
    ap.add_argument("--bootstrap", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    if a.out is None:
        a.out = ROOT / "bench" / "results" / f"evidence_beauty_segments{PARTS[a.part][2]}.json"
    ds = SeqDataset.load(a.data)
    per, features, users = load(a.results, ds, a.part)
    parent = None
    if a.parent:
        full = SeqDataset.load(a.parent)
        parent = user_features(full, list(full.users), None)
    res = {"part": a.part, "users": len(users), "bootstrap": a.bootstrap, "seed": a.seed, "models": sorted(per),
           "results_sha256": sha256_file(a.results), "data_fingerprint": ds.fingerprint(),
           "command": "python bench/evidence_segments.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "plot": str(a.out.with_suffix(".png")),
           "parent_fingerprint": full.fingerprint() if a.parent else None,
           "segments": segment(per, features, a.bootstrap, a.seed, parent)}
    write_json(a.out, res)
    plot(res, a.out.with_suffix(".png"))
    body = render(res)
    replace_section(SECTIONS[a.part], body, a.doc)
    print(body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
