"""GRAM vs GRAM-C on a seeded Amazon Beauty subset, every model a resumable stage (issue 15).

    python bench/evidence_beauty.py --probe        # cost probe: training samples/s, beam users/s
    python bench/evidence_beauty.py                # every model of the subset benchmark (resumes)
    python bench/evidence_beauty.py --models gram,gramc-user_passage
    python bench/evidence_beauty.py --full --train-minutes 70   # GRAM + the best GRAM-C on the full split
    python bench/evidence_beauty.py --render-only
    python bench/evidence_beauty.py --progress     # validation curves so far (runs still training too)

Models (each a `gramc pipeline` root under WORK/models/NAME, trained by its ids/gcn/train stages,
then a `test` stage that evaluates the best checkpoint on every test user and keeps the per-user
ranks for the paired intervals). A stage whose `.stage.json` fingerprint matches its settings is
skipped, so an interrupted call continues where it stopped (training resumes its last checkpoint):

* phase 1: pop, lightgcn, sasrec; gram (prefix off); gramc-<placement> for each placement;
* phase 2 (needs phase 1's placements): the best placement P by validation ndcg@10, then
  gram-s2 and gramc-P-s2 (a second seed), and the prefix ablation on P, one factor at a time:
  abl-items1 (1 recent item), abl-fixed_scale (scale not learnt), abl-no_prefix_dropout,
  abl-shuffled (GCN rows permuted: the same parameters without the collaborative signal);
  and a redundancy control, nosim-gram and nosim-gramc (GRAM and GRAM-C on P with no similar
  items in the item passages: does the prefix add more where the text carries no CF neighbours?).

Results: bench/results/evidence_beauty.json (+ _curves.png), docs/benchmarks.md "Evidence on
Beauty (results)". The plan with the budget arithmetic is the section "Evidence on Beauty (plan)".
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import functools
import gzip
import json
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from gramc.config import Config, load_config  # noqa: E402
from gramc.io import atomic_path, read_json, write_json  # noqa: E402
from _docs import replace_section  # noqa: E402

SHARED = ROOT.parent / "shared"
BEAUTY_IDS = SHARED / "datasets" / "amazon-beauty" / "item_generative_indexing_hierarchy_v1_c128_l7_len32768_split.txt"
T5_TOKENIZER = SHARED / "tokenizers" / "t5-base-spm"
PLACEMENTS = ("user_passage", "every_passage", "memory")
BASELINES = ("pop", "lightgcn", "sasrec")
SEED2_OFFSET = 1  # the second seed is run.seed + 1
ABLATIONS = {  # one factor at a time, on the best placement
    "abl-items1": ["model.prefix.num_items=1"],
    "abl-fixed_scale": ["model.prefix.learn_scale=false"],
    "abl-no_prefix_dropout": ["model.prefix.prefix_dropout=0.0"],
    "abl-shuffled": ["model.prefix.shuffle_table=true"],
}
# The item passages list each item's LightGCN neighbours, from the table that also feeds the prefix:
# the same pair without them says whether the text already carries what the prefix would add.
CONTROLS = {"nosim-gram": ["model.prefix.enabled=false", "model.similar_items=0"],
            "nosim-gramc": ["model.prefix.enabled=true", "model.similar_items=0"]}  # + the best placement
# A row of the best placement's first seed trained again in a later session (renamed so when merged):
# the first run's per-user ranks were lost with its machine, so later ablations pair with this one.
RERUN = "-rerun"
KS_SHOWN = (5, 10, 20)
SECTION = "## Evidence on Beauty (results)"
# published numbers on the full Beauty split (results-anchors.md): R@5, N@5, R@10, N@10
PUBLISHED = {"GRAM, published (GPU, pretrained t5-small, 30 epochs)": (0.0641, 0.0451, 0.0890, 0.0531),
             "SASRec-CE, published reproduction (GPU)": (0.0538, 0.0320, 0.0851, 0.0421)}


@dataclass
class Bench:
    """Everything a call needs: where data, config and outputs are, and what to override."""

    parent: Path  # prepared Beauty folder (gramc data prepare)
    work: Path  # runs/... (not committed)
    config: Path
    ids_file: str
    tokenizer: str
    fraction: float
    subset_seed: int
    kcore: int
    threads: int
    train_minutes: float  # per generative model; 0 = no wall cap (epochs + patience decide)
    sasrec_minutes: float
    eval_users: int  # test users of the bench's test stage; 0 = all
    placements: tuple[str, ...]
    extra: list[str] = field(default_factory=list)  # --set overrides for every model
    results: Path = ROOT / "bench" / "results" / "evidence_beauty.json"
    doc: Path = ROOT / "docs" / "benchmarks.md"
    full: bool = False
    lanes: int = 1

    @property
    def data(self) -> Path:
        return self.parent if self.full else self.work / "data"

    @property
    def models_dir(self) -> Path:
        return self.work / ("full" if self.full else "models")


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


def ensure_parent(b: Bench) -> Path:
    """The prepared full Beauty folder: `--parent` when it exists, else prepared once from ../shared."""
    if (b.parent / "dataset.json").is_file():
        return b.parent
    from gramc.data.prepare import prepare

    beauty = SHARED / "datasets" / "amazon-beauty"
    ds = prepare(beauty / "user_sequence.txt", beauty / "Amazon_Beauty.item", b.parent, load_config(None, []))
    print(f"prepared {b.parent}: {ds.num_users:,} users, {ds.num_items:,} items", flush=True)
    return b.parent


def ensure_subset(b: Bench) -> Path:
    """Write the subset once; a folder from other sampling settings or another parent is an error."""
    from gramc.data.dataset import SeqDataset
    from gramc.data.subset import SubsetSpec, write_subset

    spec = SubsetSpec(fraction=b.fraction, seed=b.subset_seed, kcore=b.kcore)
    meta_file = b.data / "dataset.json"
    if meta_file.is_file():
        sub = read_json(meta_file).get("subset", {})
        want = {"fraction": spec.fraction, "users": 0, "seed": spec.seed, "kcore": spec.kcore}
        have = {k: sub.get("sampling", {}).get(k) for k in want}
        if have != want or sub.get("parent", {}).get("fingerprint") != SeqDataset.load(b.parent).fingerprint():
            raise SystemExit(f"{b.data} holds another subset ({have}, parent {sub.get('parent', {}).get('path')}); "
                             f"use another --work or remove it")
        return b.data
    ds = write_subset(b.parent, b.data, spec, load_config(None, []))
    print(f"subset {b.data}: {ds.num_users:,} users, {ds.num_items:,} items, {ds.num_interactions:,} interactions",
          flush=True)
    return b.data


# --------------------------------------------------------------------------------------------
# Models: names -> overrides
# --------------------------------------------------------------------------------------------


def best_placement(b: Bench) -> str:
    """The placement with the best validation ndcg@10 among phase 1's finished GRAM-C runs; when their
    run folders are gone (a new machine), the one the results file recorded from them."""
    vals = {}
    for p in b.placements:
        v = valid_selection(b.models_dir / f"gramc-{p}")
        if v is None or not (b.models_dir / f"gramc-{p}" / "test" / ".stage.json").is_file():
            recorded = read_json(b.results).get("subset", {}).get("best_placement") if b.results.is_file() else None
            if recorded in b.placements:
                return recorded
            raise SystemExit(f"phase 2 needs every placement's run first; gramc-{p} has not finished "
                             f"(run: python bench/evidence_beauty.py --models gramc-{p})")
        vals[p] = v["value"]
    return max(vals, key=lambda p: vals[p])


def phase1(b: Bench) -> list[str]:
    return [*BASELINES, "gram", *(f"gramc-{p}" for p in b.placements)]


def phase2(best: str) -> list[str]:
    """Most telling first (seed, shuffled control, redundancy pair): the subset run spans sessions."""
    return ["gram-s2", f"gramc-{best}-s2", "abl-shuffled", *CONTROLS,
            *(a for a in ABLATIONS if a != "abl-shuffled")]


def needs_best(name: str) -> bool:
    """Whether model `name` runs on phase 1's best placement."""
    return name in ABLATIONS or name == "nosim-gramc" or (name.endswith("-s2") and name != "gram-s2")


def model_overrides(name: str, b: Bench, best: str | None) -> list[str]:
    """Config overrides that make model `name` (beyond the bench's common ones)."""
    seed = []
    base = name
    if name.endswith("-s2"):
        base = name[:-3]
        seed = [f"run.seed={load_config(b.config, b.extra).run.seed + SEED2_OFFSET}"]
    if base == "gram":
        return ["model.prefix.enabled=false", *seed]
    if base.startswith("gramc-") and base[6:] in PLACEMENTS:
        return ["model.prefix.enabled=true", f"model.prefix.placement={base[6:]}", *seed]
    if needs_best(base) and best is None:  # an ablation or nosim-gramc
        raise SystemExit(f"{name} is run on the best placement: finish phase 1 first")
    if base in ABLATIONS:
        return ["model.prefix.enabled=true", f"model.prefix.placement={best}", *ABLATIONS[base]]
    if base in CONTROLS:
        return CONTROLS[base] + ([f"model.prefix.placement={best}"] if needs_best(base) else [])
    raise SystemExit(f"unknown model {name!r}")


def common_overrides(b: Bench, root: Path) -> list[str]:
    o = [f"data.path={b.data}", f"run.out={root}", "run.device=cpu", f"gcn.out={b.models_dir / 'gcn'}",
         f"ids.tokenizer={b.tokenizer}", "train.final_eval=false"]
    if b.ids_file:
        o.append(f"ids.file={b.ids_file}")
    if b.train_minutes > 0:
        o.append(f"pipeline.train_minutes={b.train_minutes}")
    return o


def model_config(name: str, b: Bench, best: str | None) -> Config:
    root = b.models_dir / name
    return load_config(b.config, common_overrides(b, root) + model_overrides(name, b, best) + b.extra)


# --------------------------------------------------------------------------------------------
# Running one model: the pipeline's stages, then a test stage keeping per-user ranks
# --------------------------------------------------------------------------------------------


def run_generative(name: str, b: Bench, best: str | None) -> dict[str, Any]:
    from gramc.pipeline.pipeline import run_pipeline

    cfg = model_config(name, b, best)
    results = {r.name: r for r in run_pipeline(cfg, stages=("ids", "gcn", "train"), progress=True)}
    train = results["train"]
    train_to_schedule_end(Path(cfg.run.out) / "train")
    # the subset's placements are chosen by validation: their best checkpoints also get every validation
    # user (not on the full split, where the placement comes from the subset and 22k more users cost ~30 min)
    selects = not b.full and name.startswith("gramc-") and name[6:] in PLACEMENTS
    test = run_test_stage(cfg, Path(cfg.run.out), train.fingerprint, b.eval_users, valid_too=selects)
    return summarise_generative(name, cfg, Path(cfg.run.out), train, test)


CONTINUED_FILE = "continued.json"  # in a train folder: where early stopping had stopped it


def continued_record(train_folder: Path) -> dict[str, Any] | None:
    """The CONTINUED_FILE of a train folder, None when early stopping never stopped the run."""
    marker = train_folder / CONTINUED_FILE
    return read_json(marker) if marker.is_file() else None


def train_to_schedule_end(train_folder: Path) -> dict[str, Any] | None:
    """Every generative model trains the whole schedule (train.epochs); the best checkpoint by
    validation is kept. A run that early stopping (train.patience) stopped before the end is continued
    from its last checkpoint with train.patience=0, and CONTINUED_FILE records where it had stopped.

    Why: with 1,000 validation users, ndcg@10 moves by less than its noise from epoch to epoch; in
    run 2 patience 3 stopped GRAM-C at epoch 7 while GRAM, never stopped, rose for five more epochs.
    Patience stays in the config because the train stage's fingerprint covers it (changing it would
    retrain the finished models)."""
    state = read_json(train_folder / "checkpoints" / "last" / "state.json")
    total = int(read_json(train_folder / "run_info.json")["total_steps"])
    marker = train_folder / CONTINUED_FILE
    record = continued_record(train_folder)
    pending = record is not None and not record.get("finished")  # an interrupted continuation
    if pending or (state.get("done") and int(state["step"]) < total):
        if not pending:
            write_json(marker, {"stopped_step": int(state["step"]), "stopped_epoch": int(state["epoch"]),
                                "best_epoch_then": int(state["best_epoch"]), "best_value_then": state["best_value"],
                                "to_step": total, "finished": False})
        print(f"[train] {train_folder}: early stopping had stopped it at step "
              f"{read_json(marker)['stopped_step']} of {total}; training on to the end of the schedule "
              f"(train.patience=0)", flush=True)
        env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
        subprocess.run([sys.executable, "-m", "gramc", "train", "--resume", str(train_folder), "train.patience=0"],
                       check=True, env=env)
        write_json(marker, {**read_json(marker), "finished": True})
    return continued_record(train_folder)


def run_test_stage(cfg: Config, root: Path, train_fp: str, eval_users: int, valid_too: bool = False):
    """Evaluate the best checkpoint on the test split (first `eval_users`, 0 = all) and keep per-user
    ranks; `valid_too` also evaluates the validation split (same users cap) into metrics_valid.json."""
    from gramc.config import to_dict
    from gramc.pipeline.pipeline import Stage, run_stage

    train_folder = root / "train"

    def build(folder: Path) -> dict[str, Any]:
        from gramc.eval.evaluate import evaluate_split
        from gramc.model.runs import load_model_from_run

        from gramc.runinfo import write_run_info

        model, assets, rcfg = load_model_from_run(train_folder, "best")
        write_run_info(folder, rcfg, {"checkpoint": train_folder / "checkpoints" / "best", **assets.inputs})
        summary: dict[str, Any] = {}
        for split in (("valid", "test") if valid_too else ("test",)):
            res = evaluate_split(model, assets, rcfg, split, max_users=eval_users)
            name = "metrics.json" if split == "test" else "metrics_valid.json"
            write_json(folder / name, {**res.to_json(), "model": "gramc"})
            summary[split] = res.metrics
            summary[f"{split}_eval_seconds"] = round(res.time_s, 1)
            if split == "test":
                write_json(folder / "ranks.json", {"users": [assets.ds.users[u] for u in res.users],
                                                   "ranks": [int(r) for r in res.ranks]})
                summary.update(users=res.num_users, eval_seconds=round(res.time_s, 1))
        return summary

    config = {"eval": to_dict(cfg.eval), "data.max_his": cfg.data.max_his, "eval_users": eval_users,
              "valid_too": valid_too}
    if (cont := continued_record(train_folder)) is not None:  # a continued run's best checkpoint may have changed
        config["continued_to_step"] = cont["to_step"]
    return run_stage(Stage("test", root / "test", config, {"train": train_fp}, build))


def valid_selection(root: Path) -> dict[str, Any] | None:
    """Validation ndcg@10 of a finished model: every validation user when its test stage evaluated
    them (the placements), else the best in-training value (train.eval_users); None if unfinished."""
    state_file = root / "train" / "checkpoints" / "last" / "state.json"
    if not state_file.is_file() or not read_json(state_file).get("done"):
        return None
    state = read_json(state_file)
    out = {"metric": state["best_metric"], "value": state["best_value"], "epoch": state["best_epoch"],
           "step": state["best_step"], "users": "train.eval_users"}
    full = root / "test" / "metrics_valid.json"
    if full.is_file() and (root / "test" / ".stage.json").is_file():
        rec = read_json(full)
        out.update(value=rec["metrics"]["ndcg@10"], users=rec["users"])
    return out


def curve(train_folder: Path) -> list[dict[str, Any]]:
    log = train_folder / "log.jsonl"
    if not log.is_file():
        return []
    recs = [json.loads(x) for x in log.read_text(encoding="utf-8").splitlines() if x.strip()]
    return [{k: r.get(k) for k in ("epoch", "step", "valid_loss", "ndcg@10", "hit@10")}
            for r in recs if r.get("kind") == "valid"]


def optimisation_seconds(train_folder: Path) -> float:
    """Time spent in training steps (collation + forward/backward/step) from log.jsonl's step records."""
    recs = [json.loads(x) for x in (train_folder / "log.jsonl").read_text(encoding="utf-8").splitlines() if x.strip()]
    return round(sum(r.get("data_s", 0.0) + r.get("compute_s", 0.0) for r in recs if r.get("kind") == "step"), 1)


def summarise_generative(name: str, cfg: Config, root: Path, train, test) -> dict[str, Any]:
    metrics = read_json(root / "test" / "metrics.json")
    state = read_json(root / "train" / "checkpoints" / "last" / "state.json")
    return {"name": name, "kind": "generative", "test": metrics, "valid": valid_selection(root),
            "curve": curve(root / "train"), "train_seconds": optimisation_seconds(root / "train"),
            "train_stage_seconds": train.seconds or read_json(root / "train" / ".stage.json").get("seconds"),
            "eval_seconds": test.summary.get("eval_seconds"), "test_stage_seconds": test.seconds or read_json(
                root / "test" / ".stage.json").get("seconds"), "steps": state["step"], "epochs_run": state["epoch"],
            "prefix": {"enabled": cfg.model.prefix.enabled, "placement": cfg.model.prefix.placement,
                       "num_items": cfg.model.prefix.num_items, "learn_scale": cfg.model.prefix.learn_scale,
                       "prefix_dropout": cfg.model.prefix.prefix_dropout,
                       "shuffle_table": cfg.model.prefix.shuffle_table},
            "similar_items": cfg.model.similar_items,
            "seed": cfg.run.seed, "out": str(root),
            "continued": continued_record(root / "train")}


def run_baseline(name: str, b: Bench) -> dict[str, Any]:
    from gramc.pipeline.pipeline import run_pipeline

    root = b.models_dir / "reference"  # a pipeline root: its baselines/<name> stages
    extra = [f"pipeline.baselines=[{','.join(BASELINES)}]", f"baseline.sasrec.max_minutes={b.sasrec_minutes}"]
    cfg = load_config(b.config, common_overrides(b, root) + extra + b.extra)
    stages = ("gcn", f"baseline-{name}") if name == "lightgcn" else (f"baseline-{name}",)
    res = {r.name: r for r in run_pipeline(cfg, stages=stages, progress=True)}[f"baseline-{name}"]
    metrics = read_json(Path(res.folder) / "metrics.json")
    valid = read_json(Path(res.folder) / "metrics_valid.json")
    return {"name": name, "kind": "baseline", "test": metrics,
            "valid": {"metric": "ndcg@10", "value": valid["metrics"].get("ndcg@10"), "users": valid["users"]},
            "train_seconds": metrics.get("train_seconds"),
            "train_stage_seconds": res.seconds or read_json(Path(res.folder) / ".stage.json").get("seconds"),
            "eval_seconds": None, "out": res.folder}


# --------------------------------------------------------------------------------------------
# Paired differences, table, curves
# --------------------------------------------------------------------------------------------


def ranks_path(row: dict[str, Any]) -> Path | None:
    """A row's per-user test ranks: in its run folder while they are the row's own, else the committed
    copy `keep_ranks` made (run folders are not committed: on a new machine only the copy is left to
    pair a new model against); None when neither is there."""
    out = Path(row["out"])
    own = out / "test" / "ranks.json" if row["kind"] == "generative" else out / "ranks_test.json"
    if own.is_file() and ranks_match(own, row):
        return own
    kept = ROOT / row["ranks_kept"] if row.get("ranks_kept") else None  # relative to ROOT
    return kept if kept is not None and kept.is_file() else None


def ranks_match(path: Path, row: dict[str, Any]) -> bool:
    """Whether the ranks at `path` give the row's test ndcg@10: a later run in the same folder (a rerun
    on a new machine) has other ranks, and must not stand in for the row's."""
    mean = _mean_ndcg10(str(path), path.stat().st_mtime_ns)
    return mean is not None and abs(mean - row["test"]["metrics"]["ndcg@10"]) < 1e-9


@functools.lru_cache(maxsize=None)
def _mean_ndcg10(path: str, mtime_ns: int) -> float | None:
    """Mean ndcg@10 of a ranks file, read once per version (a summary asks for each row's many times)."""
    from gramc.metrics import per_user_metrics

    ranks = read_ranks(Path(path))["ranks"]
    return float(per_user_metrics(np.array(ranks), [10])["ndcg@10"].mean()) if ranks else None


def read_ranks(path: Path) -> dict[str, Any]:
    """{"users": [...], "ranks": [...]} from a run's ranks JSON or its gzip copy."""
    if path.suffix == ".gz":
        with gzip.open(path, "rt", encoding="utf-8") as f:
            return json.load(f)
    return read_json(path)


def keep_ranks(b: Bench, part: dict[str, Any], mode: str) -> None:
    """Copy each row's per-user test ranks, gzipped, to RESULTS_ranks/MODE/NAME.json.gz beside the results
    file and note it in the row (`ranks_kept`, relative to the repository when inside it): committed with
    the results, they let a later session pair a new model against finished ones, or recompute an
    interval, without the run folders."""
    for name, row in part.get("models", {}).items():
        src = ranks_path(row)
        if src is None or src.suffix == ".gz":
            continue
        dest = (b.results.parent / f"{b.results.stem}_ranks" / mode / f"{name}.json.gz").resolve()
        if not dest.is_file() or dest.stat().st_mtime < src.stat().st_mtime:  # every summary calls this
            with atomic_path(dest) as tmp, gzip.GzipFile(tmp, "wb", mtime=0) as f:
                f.write(json.dumps(read_ranks(src), separators=(",", ":")).encode("utf-8"))
        row["ranks_kept"] = str(dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else dest)


def per_user(row: dict[str, Any], ks: list[int]) -> tuple[list[str], dict[str, np.ndarray]]:
    from gramc.metrics import per_user_metrics

    r = read_ranks(ranks_path(row))
    return r["users"], per_user_metrics(np.array(r["ranks"]), ks)


def paired(rows: dict[str, dict], a: list[str], b: list[str], ks: list[int], n: int, seed: int) -> dict | None:
    """Paired bootstrap of mean-over-runs(b) - mean-over-runs(a), per user (same users in every run)."""
    from gramc.metrics import paired_bootstrap_ci

    if not all(x in rows and ranks_path(rows[x]) is not None for x in a + b):
        return None  # a model not run yet (or a baseline run before per-user ranks were kept)
    users, means = None, []
    for group in (a, b):
        acc: dict[str, np.ndarray] = {}
        for name in group:
            u, m = per_user(rows[name], ks)
            if users is not None and u != users:
                raise SystemExit(f"{name} was evaluated on other test users than {a[0]}; cannot pair them")
            users = u
            for k, v in m.items():
                acc[k] = acc.get(k, 0) + v / len(group)
        means.append(acc)
    return {"a": a, "b": b, "users": len(users), "rows": row_stamps(rows, a + b),
            "diff": paired_bootstrap_ci(means[0], means[1], n=n, seed=seed)}


def row_stamps(rows: dict[str, dict], names: list[str]) -> dict[str, Any]:
    """Each named row's test metrics: what a paired interval was computed from."""
    return {n: dict(rows[n]["test"]["metrics"]) if n in rows else None for n in names}


def carry_pairings(old: dict[str, Any], fresh: dict[str, Any], rows: dict[str, dict]) -> dict[str, Any]:
    """The fresh paired intervals, plus each earlier one that cannot be recomputed (a run's per-user ranks
    were lost with its machine) while every row it was computed from is unchanged; one whose rows were
    rerun since is dropped, not kept stale."""
    out = dict(fresh)
    for key, rec in old.items():
        if key not in fresh and rec.get("rows") and rec["rows"] == row_stamps(rows, rec["a"] + rec["b"]):
            out[key] = {**rec, "carried": "per-user ranks gone; kept from an earlier summary of the same rows"}
    return out


def comparisons(rows: dict[str, dict], best: str | None, ks: list[int], n: int, seed: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for p in PLACEMENTS:
        out[f"gramc-{p} - gram"] = paired(rows, ["gram"], [f"gramc-{p}"], ks, n, seed)
        for base in BASELINES:  # before phase 2 too: how far each placement is from the baselines
            out[f"gramc-{p} - {base}"] = paired(rows, [base], [f"gramc-{p}"], ks, n, seed)
    # the yardstick: how far two training seeds of GRAM are apart (the paired CIs cover test users only)
    out["gram-s2 - gram"] = paired(rows, ["gram"], ["gram-s2"], ks, n, seed)
    for p in PLACEMENTS:
        out[f"gramc-{p} - GRAM (2 seeds)"] = paired(rows, ["gram", "gram-s2"], [f"gramc-{p}"], ks, n, seed)
    if best:
        out["GRAM-C (best, 2 seeds) - GRAM (2 seeds)"] = paired(rows, ["gram", "gram-s2"],
                                                                [f"gramc-{best}", f"gramc-{best}-s2"], ks, n, seed)
        refs = (f"gramc-{best}", f"gramc-{best}{RERUN}")  # the best placement's first seed, each run of it
        for abl in ABLATIONS:  # against each of those runs that kept its ranks
            for ref in refs:
                out[f"{abl} - {ref}"] = paired(rows, [ref], [abl], ks, n, seed)
        # the redundancy control: the prefix's gain when the passages carry no CF neighbours, and what the
        # neighbours give GRAM and GRAM-C
        out["nosim-gramc - nosim-gram"] = paired(rows, ["nosim-gram"], ["nosim-gramc"], ks, n, seed)
        out["nosim-gram - gram"] = paired(rows, ["gram"], ["nosim-gram"], ks, n, seed)
        for ref in refs:
            out[f"nosim-gramc - {ref}"] = paired(rows, [ref], ["nosim-gramc"], ks, n, seed)
        for base in BASELINES:  # does GRAM-C beat the baselines, and by how much does it fall short
            out[f"GRAM-C (best, 2 seeds) - {base}"] = paired(rows, [base], [f"gramc-{best}", f"gramc-{best}-s2"],
                                                              ks, n, seed)
    return {k: v for k, v in out.items() if v is not None}


def plot_curves(rows: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax in axes:  # 20 colours: the default cycle repeats after 10 runs, and there are more
        ax.set_prop_cycle(color=plt.cm.tab20.colors)
    for name, row in rows.items():
        pts = row.get("curve") or []
        if not pts:  # a baseline: no validation curve
            continue
        style = "-" if name.startswith("gram") else ":"  # ablations and controls dotted
        ep = [p["epoch"] + 1 for p in pts]
        axes[0].plot(ep, [p.get("ndcg@10") for p in pts], style, marker="o", label=name)
        axes[1].plot(ep, [p.get("valid_loss") for p in pts], style, marker="o", label=name)
    axes[0].set(xlabel="epoch", ylabel="validation ndcg@10 (in-training users)", title="validation ndcg@10")
    axes[1].set(xlabel="epoch", ylabel="validation loss", title="validation loss")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def progress(b: Bench) -> dict[str, Any]:
    """Validation curves of every generative model so far, finished or still training (read from each
    train/log.jsonl; nothing is run): printed, saved beside the results as _progress.json and .png."""
    rows: dict[str, dict[str, Any]] = {}
    for log in sorted(b.models_dir.glob("*/train/log.jsonl")):
        name = log.parent.parent.name
        done = (log.parent.parent / "test" / ".stage.json").is_file()
        rows[name] = {"curve": curve(log.parent), "finished": done}
        print(f"{name} ({'finished' if done else 'training'})", flush=True)
        for p in rows[name]["curve"]:
            print(f"  epoch {p['epoch'] + 1:>2}  step {p['step']:>5}  valid loss {p['valid_loss']:.3f}  "
                  f"ndcg@10 {p['ndcg@10']:.4f}  hit@10 {p['hit@10']:.4f}", flush=True)
    stem = b.results.stem + ("_full" if b.full else "")
    out = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "work": str(b.work), "models": rows}
    write_json(b.results.with_name(stem + "_progress.json"), out)
    plot_curves(rows, b.results.with_name(stem + "_progress.png"))
    return out


def _f(x: Any) -> str:
    return "-" if x is None else f"{x:.4f}"


def epochs_cell(row: dict[str, Any]) -> str:
    """`12 (best 12)` for a generative row, `-` for a baseline; notes a run trained on after early stopping."""
    if row.get("kind") != "generative" or row.get("epochs_run") is None:
        return "-"
    best = (row.get("valid") or {}).get("epoch")
    cell = f"{row['epochs_run']}" + (f" (best {best + 1})" if isinstance(best, int) else "")
    cont = row.get("continued")
    return cell + (f"; stopped at {cont['stopped_epoch']}, trained on" if cont else "")


def render(res: dict[str, Any]) -> str:
    lines = [SECTION, ""]
    for mode in ("subset", "full"):
        part = res.get(mode)
        if not part or not part.get("models"):
            continue
        lines += [f"### {'Subset' if mode == 'subset' else 'Full Beauty split'}: {part.get('data_note', '')}", "",
                  f"Training budget: {part.get('budget', '-')}; {part.get('machine', '')}. Test metrics on every "
                  "test user listed, 95% bootstrap CIs in brackets.", "",
                  "Protocol of these rows, as they ran: history **not** excluded (eval.exclude_history=false for "
                  "every model), full-ranking ties counted against the target, GRAM / GRAM-C reading 20 history "
                  "items and SASRec-CE 50. Every model under one fair protocol (history excluded, random ties): "
                  "\"Fused ranking on Beauty (issue 29)\" below.", "",
                  "```", *part.get("commands", []), "```", "",
                  "| model | " + " | ".join(f"hit@{k} | ndcg@{k}" for k in KS_SHOWN) + " | users | valid ndcg@10 (users) | "
                  "epochs (best) | train min | train stage min | test eval min |",
                  "|---" * (5 + 2 * len(KS_SHOWN) + 2) + "|"]
        for name, row in part["models"].items():
            m, ci = row["test"]["metrics"], row["test"].get("ci", {})
            cells = []
            for k in KS_SHOWN:
                for metric in (f"hit@{k}", f"ndcg@{k}"):
                    lo, hi = ci.get(metric, (None, None))
                    cells.append(f"{_f(m.get(metric))}" + (f" [{lo:.4f}, {hi:.4f}]" if lo is not None else ""))
            v = row.get("valid") or {}
            vu = v.get("users")
            valid = _f(v.get("value")) + (f" ({vu})" if isinstance(vu, int) else " (in training)")
            mins = [row.get(k) for k in ("train_seconds", "train_stage_seconds", "eval_seconds")]
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {row['test'].get('users')} | {valid} | "
                         f"{epochs_cell(row)} | " + " | ".join("-" if x is None else f"{x / 60:.1f}" for x in mins) + " |")
        if mode == "full":
            for name, vals in PUBLISHED.items():
                lines.append(f"| {name} | {_f(vals[0])} | {_f(vals[1])} | {_f(vals[2])} | "
                             f"{_f(vals[3])} | - | - | 22363 | - | 30 | - | - | - |")
        lines += ["", "*epochs (best)*: epochs trained and, in brackets, the epoch of the best checkpoint (1-based); "
                  "*stopped at N, trained on* marks a run early stopping had stopped after epoch N, trained on to the "
                  "schedule's end. *train min*: time in training steps (log.jsonl); *train stage min*: the last invocation of the train stage "
                  "(steps, in-training validation, the step probe of the budget; for a run resumed or trained on, only that "
                  "last part; for baselines, training and evaluation); "
                  "*test eval min*: the test stage's beam search over the test users.", "",
                  "Paired differences (same test users; per-user mean over runs where a side has several):", "",
                  "| comparison | " + " | ".join(f"ndcg@{k} [95% CI]" for k in KS_SHOWN) + " | hit@10 [95% CI] |",
                  "|---" * (2 + len(KS_SHOWN)) + "|"]
        for label, c in part.get("paired", {}).items():
            d = c["diff"]
            cells = [f"{d[m]['mean']:+.4f} [{d[m]['lo']:+.4f}, {d[m]['hi']:+.4f}]"
                     for m in [f"ndcg@{k}" for k in KS_SHOWN] + ["hit@10"]]
            lines.append(f"| {label}{' (carried)' if c.get('carried') else ''} | " + " | ".join(cells) + " |")
        if any(c.get("carried") for c in part.get("paired", {}).values()):
            lines += ["", "*(carried)*: computed by an earlier summary from the same rows, whose per-user ranks "
                      "were lost with that session's machine; kept because none of those rows was rerun since."]
        if part.get("best_placement"):
            lines += ["", f"Best placement by validation ndcg@10: `{part['best_placement']}`."]
        if part.get("curves"):
            lines += ["", f"![validation curves](../bench/results/{Path(part['curves']).name})"]
        lines.append("")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# Probe: what the benchmark costs on this CPU
# --------------------------------------------------------------------------------------------


def probe(b: Bench, steps: int, users: int) -> dict[str, Any]:
    """Training samples/s (tiny, random init) and beam-search users/s on the subset's validation users."""
    from gramc.eval.evaluate import evaluate_split
    from gramc.train.batching import Batcher
    from gramc.recipes.train_gramc import gramc_parts
    from gramc.runtime import init_distributed
    from gramc.train.trainer import Trainer

    cfg = model_config("gramc-user_passage", b, None)
    cfg.run.out = str(b.work / "probe")
    info = init_distributed("cpu")
    parts = gramc_parts(cfg, info)
    plan = Batcher.from_config(cfg, parts.train_samples).plan(0)
    trainer = Trainer(parts.model, cfg.train, steps + 1, info)
    n, t_total, cpu_total = 0, 0.0, 0.0
    for i in range(min(steps + 1, plan.num_steps)):
        mbs = [parts.collate(mb).to(info.device) for mb in plan.step(i)]
        t0, c0 = time.perf_counter(), time.process_time()
        stats = trainer.train_step(mbs)
        if i > 0:  # the first step pays one-off costs
            n, t_total, cpu_total = n + stats.samples, t_total + time.perf_counter() - t0, cpu_total + time.process_time() - c0
    from gramc.model.assets import Assets

    assets = Assets.from_config(cfg, progress=False)
    model = parts.model.eval()
    t0 = time.perf_counter()
    with torch.no_grad():
        ev = evaluate_split(model, assets, cfg, "valid", max_users=users)
    eval_s = time.perf_counter() - t0
    return {"train_samples_per_s": n / t_total, "train_samples_per_cpu_s": n / cpu_total, "steps": steps,
            "samples": n, "eval_users_per_s": ev.num_users / eval_s, "eval_users": ev.num_users,
            "softmax": cfg.model.softmax, "beams": cfg.eval.beams, "threads": torch.get_num_threads(),
            "train_samples_per_epoch": len(parts.train_samples), "valid_users": len(parts.valid_samples),
            "load_average": os.getloadavg()}


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def locked_results(b: Bench):
    """The results file, read and written under an exclusive lock: parallel lanes each add their rows."""
    b.results.parent.mkdir(parents=True, exist_ok=True)
    with open(b.results.with_name(b.results.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        results = read_json(b.results) if b.results.is_file() else {}
        yield results
        write_json(b.results, results)


def record(b: Bench, name: str | None, row: dict[str, Any] | None, log_cmd: str | None) -> None:
    """Add one model's row (and the command that made it, unless None: a lane's child) to the results file."""
    with locked_results(b) as results:
        part = results.setdefault("full" if b.full else "subset", {"models": {}, "commands": []})
        if log_cmd is not None and log_cmd not in part["commands"]:
            part["commands"].append(log_cmd)
        if name is not None:
            part["models"][name] = row


def lane_jobs(b: Bench, names: list[str]) -> list[list[str]]:
    """Models split into independent jobs: the baselines share one pipeline root, so they stay together
    (last: they are cheap, and the generative runs are the ones worth seeing early)."""
    base = [n for n in names if n in BASELINES]
    return [[n] for n in names if n not in BASELINES] + ([base] if base else [])


def run_lanes(b: Bench, a: argparse.Namespace, names: list[str]) -> None:
    """Run `names` in `a.lanes` child processes of this script, one thread each (on this 2-core CPU one
    tiny-T5 process at 1 thread trains about as fast as one at 2, so two lanes double the throughput)."""
    if any(n not in BASELINES for n in names):  # the shared GCN stage first, so lanes never race on it
        from gramc.pipeline.pipeline import run_pipeline

        first = next(n for n in names if n not in BASELINES)
        run_pipeline(model_config(first, b, None if first in phase1(b) else best_placement(b)), stages=("gcn",))
    logs = b.work / "lanes"
    logs.mkdir(parents=True, exist_ok=True)

    def child(job: list[str]) -> tuple[list[str], int]:
        cmd = [sys.executable, str(Path(__file__).resolve()), *a.child_argv, "--models", ",".join(job),
               "--lanes", "1", "--threads", "1", "--no-summary"]
        with open(logs / f"{job[0]}.log", "a", encoding="utf-8") as log:
            print(f"lane start {job} (log {logs / (job[0] + '.log')})", flush=True)
            rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT).returncode
        print(f"lane done {job}: exit {rc}", flush=True)
        return job, rc

    with ThreadPoolExecutor(max_workers=a.lanes) as pool:
        failed = [job for job, rc in pool.map(child, lane_jobs(b, names)) if rc != 0]
    if failed:
        raise SystemExit(f"lanes failed: {failed} (logs in {logs})")


def run_models(b: Bench, wanted: list[str] | None, log_cmd: str | None, lanes: argparse.Namespace | None = None,
               summary: bool = True) -> dict[str, Any]:
    """Run the wanted models (default: phase 1 then phase 2), each a resumable stage, in this process or
    in parallel lanes; then (unless `summary` is off) the paired intervals, curves and budget note."""
    mode = "full" if b.full else "subset"
    if b.full:
        best_cfg = read_json(b.results).get("subset", {}).get("best_placement")
        if not best_cfg:
            best_cfg = "user_passage"
            print("no best placement from the subset benchmark yet: --full uses user_passage", flush=True)
        names = wanted or ["gram", f"gramc-{best_cfg}"]
        best = best_cfg
    else:
        names = wanted or phase1(b)
        best = None
    known = {*phase1(b), "gram-s2", *ABLATIONS, *CONTROLS, *(f"gramc-{p}" for p in PLACEMENTS),
             *(f"gramc-{p}-s2" for p in PLACEMENTS)}
    unknown = [n for n in names if n not in known]
    if unknown:  # before anything runs
        raise SystemExit(f"unknown model(s) {unknown}; choose from {sorted(known)}")
    record(b, None, None, log_cmd)
    phases = [names] + ([None] if not b.full and wanted is None else [])  # None: phase 2, once phase 1 is done
    for todo in phases:
        if todo is None:
            best = best_placement(b)
            todo = phase2(best)
            print(f"== phase 2, best placement {best}", flush=True)
        if lanes is not None and lanes.lanes > 1:
            run_lanes(b, lanes, todo)
            continue
        for name in todo:
            if not b.full and needs_best(name):
                best = best or best_placement(b)
            print(f"== {name}", flush=True)
            row = run_baseline(name, b) if name in BASELINES else run_generative(name, b, best)
            record(b, name, row, log_cmd)  # after every model: an interruption keeps what finished
    if not summary:
        return read_json(b.results)
    with locked_results(b) as results:
        summarise(b, results[mode], best)
    return read_json(b.results)


def summarise(b: Bench, part: dict[str, Any], best: str | None) -> None:
    """Best placement, kept ranks, paired intervals, curves and the machine/budget notes of one mode's results."""
    keep_ranks(b, part, "full" if b.full else "subset")
    if not b.full:
        try:
            part["best_placement"] = best_placement(b)
        except SystemExit:
            pass
    cfg = load_config(b.config, b.extra)
    fresh = comparisons(part["models"], part.get("best_placement") if not b.full else best,
                        list(cfg.eval.ks), cfg.eval.bootstrap, cfg.run.seed)
    if b.full and f"gramc-{best}" in part["models"]:
        fresh = {f"gramc-{best} - gram": paired(part["models"], ["gram"], [f"gramc-{best}"],
                                                list(cfg.eval.ks), cfg.eval.bootstrap, cfg.run.seed)}
        fresh = {k: v for k, v in fresh.items() if v is not None}
    part["paired"] = carry_pairings(part.get("paired", {}), fresh, part["models"])
    curves = b.results.with_name(b.results.stem + ("_full" if b.full else "") + "_curves.png")
    plot_curves(part["models"], curves)
    part["curves"] = str(curves)
    part["machine"] = (f"{platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}, "
                       f"{b.threads} threads" + (f" x {b.lanes} lanes" if b.lanes > 1 else ""))
    part["data_note"] = data_note(b)
    schedule = (f"the whole schedule of {cfg.train.epochs} epochs, best checkpoint by validation ndcg@10 "
                f"(a run train.patience {cfg.train.patience} stopped is trained on to the end: *epochs* column)")
    part["budget"] = (f"at most {b.train_minutes:g} min of training per generative model (pipeline.train_minutes), "
                      f"{schedule}" if b.train_minutes > 0 else f"{schedule}, no wall cap")


def data_note(b: Bench) -> str:
    meta = read_json(b.data / "dataset.json")
    c = meta["counts"]
    sub = meta.get("subset")
    what = (f"{sub['sampling']['fraction']:.0%} of the users, seed {sub['sampling']['seed']}, k-core "
            f"{sub['sampling']['kcore']}" if sub else "full split")
    return f"{c['users']:,} users, {c['items']:,} items, {c['interactions']:,} interactions ({what})"


def parse(argv: list[str] | None) -> tuple[argparse.Namespace, Bench]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parent", default=None, help="prepared Beauty folder (gramc data prepare); default "
                    "WORK/parent, prepared from ../shared on first use")
    ap.add_argument("--work", default=str(ROOT / "runs" / "evidence_beauty"))
    ap.add_argument("--config", default=str(ROOT / "configs" / "beauty-subset.yaml"))
    ap.add_argument("--ids-file", default=str(BEAUTY_IDS), help="GRAM ID file ('' = build IDs per the config)")
    ap.add_argument("--tokenizer", default=str(T5_TOKENIZER))
    ap.add_argument("--fraction", type=float, default=0.2)
    ap.add_argument("--subset-seed", type=int, default=2023)
    ap.add_argument("--kcore", type=int, default=3)
    ap.add_argument("--placements", default=",".join(PLACEMENTS))
    ap.add_argument("--models", default=None, help="comma list (default: phase 1 then phase 2; --full: gram and "
                                                   "the best GRAM-C placement)")
    ap.add_argument("--train-minutes", type=float, default=0.0, help="wall cap per generative model (0 = none)")
    ap.add_argument("--sasrec-minutes", type=float, default=8.0)
    ap.add_argument("--eval-users", type=int, default=0, help="test users of each model (0 = every one)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads of this process (lanes: 1 each)")
    ap.add_argument("--lanes", type=int, default=1, help="models trained at once, each in a 1-thread child process")
    ap.add_argument("--no-summary", action="store_true", help=argparse.SUPPRESS)  # a lane's child: rows only
    ap.add_argument("--full", action="store_true", help="GRAM and the best GRAM-C on the full split (issue item 5)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every model")
    ap.add_argument("--results", default=str(ROOT / "bench" / "results" / "evidence_beauty.json"))
    ap.add_argument("--doc", default=str(ROOT / "docs" / "benchmarks.md"))
    ap.add_argument("--probe", action="store_true", help="measure training samples/s and beam users/s, then stop")
    ap.add_argument("--probe-steps", type=int, default=20)
    ap.add_argument("--probe-users", type=int, default=100)
    ap.add_argument("--render-only", action="store_true", help="recompute the intervals and curves from the rows "
                    "in the results file and rewrite the doc section (nothing is trained)")
    ap.add_argument("--progress", action="store_true", help="print and plot the validation curves so far, then stop")
    a = ap.parse_args(argv)
    placements = tuple(p for p in a.placements.split(",") if p)
    bad = [p for p in placements if p not in PLACEMENTS]
    if bad:
        ap.error(f"--placements: unknown {bad}; choose from {list(PLACEMENTS)}")
    b = Bench(parent=Path(a.parent or Path(a.work) / "parent"), work=Path(a.work), config=Path(a.config), ids_file=a.ids_file,
              tokenizer=a.tokenizer, fraction=a.fraction, subset_seed=a.subset_seed, kcore=a.kcore,
              threads=a.threads, train_minutes=a.train_minutes, sasrec_minutes=a.sasrec_minutes,
              eval_users=a.eval_users, placements=placements, extra=list(a.set), results=Path(a.results),
              doc=Path(a.doc), full=a.full, lanes=a.lanes)
    if a.lanes < 1:
        ap.error("--lanes must be >= 1")
    # what a lane's child repeats: every option but the model list, lanes, threads and summary flag
    a.child_argv = strip_options(argv if argv is not None else sys.argv[1:], ("--models", "--lanes", "--threads"),
                                 ("--no-summary",))
    return a, b


def strip_options(argv: list[str], with_value: tuple[str, ...], flags: tuple[str, ...]) -> list[str]:
    out, skip = [], False
    for x in argv:
        if skip:
            skip = False
        elif x in with_value:
            skip = True
        elif x in flags or any(x.startswith(o + "=") for o in with_value):
            continue
        else:
            out.append(x)
    return out


def main(argv: list[str] | None = None) -> int:
    a, b = parse(argv)
    torch.set_num_threads(b.threads)
    if a.render_only:  # the summary (intervals, curves) again from the rows there, then the section
        mode = "full" if b.full else "subset"
        with locked_results(b) as results:
            if mode in results:
                best = results.get("subset", {}).get("best_placement") if b.full else None
                summarise(b, results[mode], best)
        replace_section(SECTION, render(read_json(b.results)), b.doc)
        return 0
    if a.progress:
        progress(b)
        return 0
    ensure_parent(b)
    if not b.full:
        ensure_subset(b)
    if a.probe:
        out = {"command": "python bench/evidence_beauty.py " + " ".join(argv if argv is not None else sys.argv[1:]),
               "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **probe(b, a.probe_steps, a.probe_users)}
        print(json.dumps(out, indent=2))
        path = b.results.with_name(b.results.stem + "_probe.json")  # every probe kept: loads differ
        runs = read_json(path).get("runs", []) if path.is_file() else []
        write_json(path, {"runs": runs + [out]})
        return 0
    cmd = "python bench/evidence_beauty.py " + " ".join(argv if argv is not None else sys.argv[1:])
    wanted = [m.strip() for m in a.models.split(",") if m.strip()] if a.models else None
    results = run_models(b, wanted, None if a.no_summary else cmd, lanes=a, summary=not a.no_summary)
    if not a.no_summary:
        replace_section(SECTION, render(results), b.doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
