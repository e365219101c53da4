"""`gramc pipeline`: prepare -> ids -> gcn -> train -> evaluate -> baselines -> report, restartable.

Every stage writes one folder under `run.out` (the pipeline root):

    data/      prepared dataset (or none: `data.path` used as is / synthetic data built in memory)
    ids/       tokenizer/ + ids.txt (or a check of the given GRAM ID file)
    gcn/       LightGCN artefacts (gcn.out when set)
    train/     the training run (checkpoints, log.jsonl, metrics of the best checkpoint)
    eval/      metrics.json (test) + metrics_valid.json of the best checkpoint
    baselines/<name>/   metrics of each baseline on the same splits
    report.md  (+ PNGs) the comparison

Each stage has a module-level builder (`make_<stage>(plan) -> list[Stage]`) with, declared next
to it, the config keys it reads (`Reads`); its fingerprint is computed from exactly those keys and
its inputs' fingerprints (gramc.pipeline.stage). A stage whose record holds the current
fingerprint is skipped, so a crashed run restarts at the stage that did not finish (training
itself resumes from its last checkpoint when its fingerprint is unchanged). A changed config
reruns that stage and every stage downstream of it; an old training folder is kept beside the new
one, never deleted.
"""

from __future__ import annotations

import copy
import dataclasses
import shutil
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Sequence

from ..config import Config, to_dict
from ..io import claim_output, read_json, write_json
from ..lock import output_lock

# Each stage's builder imports its stage's code inside its own function, for start-up time: a
# pipeline whose stages are up to date (or `--stages prepare`) loads neither torch nor the model.
# STAGE_FILE, PENDING_FILE, Stage, StageResult: the stage machinery's names, used here by callers
from .stage import (PENDING_FILE, STAGE_FILE, PipelineError, Reads, Stage, StageResult,  # noqa: F401
                    input_fingerprint, run_stage, stage_fingerprint)

STAGES = ("prepare", "ids", "gcn", "train", "evaluate", "baselines", "report")


@dataclass
class Plan:
    """What the stage builders share: the config as given, the config the stages run with (data,
    ids and gcn paths pointing into the pipeline root), and the stages planned so far."""

    cfg: Config
    root: Path
    sc: Config
    progress: bool = True
    stages: list[Stage] = field(default_factory=list)

    def has(self, name: str) -> bool:
        return any(s.name == name for s in self.stages)

    def fingerprint(self, name: str) -> str:
        for s in self.stages:
            if s.name == name:
                return s.fingerprint
        raise KeyError(name)

    def data_inputs(self) -> dict[str, str]:
        """The dataset's fingerprint: the prepare stage's, the prepared folder's, or the synthetic settings'."""
        if self.has("prepare"):
            return {"data": self.fingerprint("prepare")}
        if self.cfg.data.path:
            return {"data": input_fingerprint(self.cfg.data.path)}
        return {"data": stage_fingerprint(DATA_READS.config(self.cfg), {})}

    def stage(self, name: str, reads: Reads, folder: Path, inputs: dict[str, str],
              build: Callable[[Path], dict | None], **kw: Any) -> Stage:
        return Stage(name, folder, reads.config(self.cfg), inputs, build, reads=reads, **kw)


def stage_config(cfg: Config, root: Path) -> Config:
    """The config every downstream stage sees: data/ids/gcn paths pointing into the pipeline root."""
    c = copy.deepcopy(cfg)
    if cfg.pipeline.sequences:
        c.data.path = str(root / "data")
    if not cfg.ids.file:
        c.ids.file = str(root / "ids" / "ids.txt")
        if cfg.ids.tokenizer == "train":
            c.ids.tokenizer = str(root / "ids" / "tokenizer")
    if not cfg.gcn.out:
        c.gcn.out = str(root / "gcn")
    c.run.out = str(root / "train")
    return c


def _local(path: str) -> bool:
    """A tokenizer or pretrained model named by a local path (fingerprinted), not a hub name."""
    return bool(path) and path != "train" and Path(path).exists()


# The dataset every stage reads: a prepare stage's output, a prepared folder, or synthetic data.
DATA_READS = Reads(keys=("data.synthetic",), paths=("data.path",), after=("prepare",))


# ---- prepare --------------------------------------------------------------------------------
PREPARE_READS = Reads(keys=("data.kcore", "data.missing_metadata", "pipeline.seq_format", "pipeline.item_format"),
                      paths=("pipeline.sequences", "pipeline.items"), outputs=("data.path",))


def make_prepare(p: Plan) -> list[Stage]:
    cfg = p.cfg
    if not cfg.pipeline.sequences:
        return []
    inputs = {"sequences": input_fingerprint(cfg.pipeline.sequences)}
    if cfg.pipeline.items:
        inputs["items"] = input_fingerprint(cfg.pipeline.items)
    return [p.stage("prepare", PREPARE_READS, p.root / "data", inputs, partial(_build_prepare, cfg))]


def _build_prepare(cfg: Config, folder: Path) -> dict:
    from ..data.prepare import build_dataset
    from ..runinfo import write_run_info

    ds = build_dataset(cfg.pipeline.sequences, cfg.pipeline.items or None, cfg,
                       cfg.pipeline.seq_format, cfg.pipeline.item_format)
    ds.save(folder)
    src = {"sequences": cfg.pipeline.sequences, **({"items": cfg.pipeline.items} if cfg.pipeline.items else {})}
    write_run_info(folder, cfg, src)
    return {"users": ds.num_users, "items": ds.num_items, "interactions": ds.num_interactions}


# ---- ids ------------------------------------------------------------------------------------
IDS_READS = Reads(keys=("ids", "data.text_fields", "data.lowercase"), after=("data",),
                  paths=("ids.file", "ids.tokenizer", "ids.embedding_file"), outputs=("ids.file", "ids.tokenizer"))


def make_ids(p: Plan) -> list[Stage]:
    cfg = p.cfg
    inputs = p.data_inputs()
    if cfg.ids.file:
        inputs["id_file"] = input_fingerprint(cfg.ids.file)
    if _local(cfg.ids.tokenizer):
        inputs["tokenizer"] = input_fingerprint(cfg.ids.tokenizer)
    if cfg.ids.embedding == "npy" and not cfg.ids.file:
        inputs["embedding_file"] = input_fingerprint(cfg.ids.embedding_file)
    return [p.stage("ids", IDS_READS, p.root / "ids", inputs, partial(_build_ids, p))]


def _build_ids(p: Plan, folder: Path) -> dict:
    from ..checks import Report
    from ..data.source import load_dataset
    from ..data.text import item_texts
    from ..ids.build import build_ids, save_built_ids
    from ..ids.itemids import check_ids
    from ..ids.tokenizer import resolve_tokenizer

    cfg, sc = p.cfg, p.sc
    ds = load_dataset(sc.data)
    texts = item_texts(ds, sc.data)
    tok = resolve_tokenizer(cfg.ids.tokenizer, folder / "tokenizer", texts, cfg.ids.vocab_size, reuse=False)
    if cfg.ids.file:  # given IDs: check them against the dataset and tokenizer, record the report
        report = Report(check_ids(cfg.ids.file, ds, tok))
        write_json(folder / "ids_check.json", report.to_dict())
        if not report.ok:
            raise PipelineError(f"[ids] {cfg.ids.file} failed its checks:\n{report.table()}")
        return {"source": cfg.ids.file, "checks_ok": True}
    ids = build_ids(ds, texts, tok, cfg.ids, progress=p.progress)
    report, _ = save_built_ids(ids, ds, tok, sc, folder / "ids.txt", {}, plot=True)
    return {"items": ids.num_items, "checks_ok": report.ok}


# ---- gcn ------------------------------------------------------------------------------------
# gcn.out is where the output goes, gcn.device where it is computed (same numbers): neither is
# part of what the stage computes
GCN_READS = Reads(keys=("gcn",), ignore=("gcn.out", "gcn.device"), after=("data",), outputs=("gcn.out",),
                  when=("model.prefix.enabled", "model.similar_items", "model.similar_source", "pipeline.baselines"))


def pipeline_needs_gcn(cfg: Config) -> bool:
    """The pipeline trains a LightGCN: the model reads one (`graph.artifacts.gcn_needed`: prefix,
    GCN similar items) or the LightGCN baseline is among `pipeline.baselines`."""
    from ..graph.artifacts import gcn_needed

    return gcn_needed(cfg) or "lightgcn" in cfg.pipeline.baselines


def make_gcn(p: Plan) -> list[Stage]:
    from ..graph.artifacts import gcn_folder
    from ..graph.lightgcn import OWN_FILES

    if not pipeline_needs_gcn(p.cfg):
        return []
    return [p.stage("gcn", GCN_READS, gcn_folder(p.cfg, p.root), p.data_inputs(), partial(_build_gcn, p),
                    adopt=partial(_adopt_gcn, p), kinds=("gcn",), own_files=tuple(sorted(OWN_FILES)))]


def _build_gcn(p: Plan, folder: Path) -> dict:
    from ..data.source import load_dataset
    from ..graph.lightgcn import train_lightgcn

    meta = train_lightgcn(load_dataset(p.sc.data), p.cfg.gcn, folder, run_cfg=p.sc, progress=p.progress)
    return {"valid_recall@10": meta.get("valid", {}).get("recall@10")}


def _adopt_gcn(p: Plan, folder: Path) -> dict | None:
    """A complete GCN folder trained with these hyper-parameters on exactly these interactions."""
    from ..data.source import load_dataset
    from ..graph.artifacts import META_FILE, MODEL_FILE
    from ..graph.lightgcn import interaction_sequences, pairs_fingerprint

    if not ((folder / META_FILE).is_file() and (folder / MODEL_FILE).is_file()):
        return None
    meta = read_json(folder / META_FILE)
    have = {k: v for k, v in meta.get("hyper_parameters", {}).items() if f"gcn.{k}" not in GCN_READS.ignore}
    want = {k: v for k, v in to_dict(p.cfg.gcn).items() if f"gcn.{k}" not in GCN_READS.ignore}
    if have != want:
        return None
    ds = load_dataset(p.sc.data)
    fp = pairs_fingerprint(ds, interaction_sequences(ds, p.cfg.gcn.interactions))
    if meta.get("interactions", {}).get("sha256") != fp:
        return None
    return {"valid_recall@10": meta.get("valid", {}).get("recall@10")}


# ---- train ----------------------------------------------------------------------------------
# Best-checkpoint selection depends on the validation metrics: which ks, history exclusion and
# the beam search that computes them.
TRAIN_READS = Reads(
    keys=("run.seed", "data.max_his", "data.text_fields", "data.lowercase", "model", "train",
          "pipeline.train_minutes", "eval.beams", "eval.length_penalty",
          "eval.early_stopping", "eval.ks", "eval.exclude_history"),
    after=("data", "ids", "gcn"), paths=("model.similar_source", "model.pretrained"),
    # where it runs and writes (run.out, run.device, train.num_workers: the same batches), how often
    # it logs, and how the final evaluation is batched and reported (batch sizes and eval.bf16 change
    # float rounding only; eval.bootstrap only the intervals; the evaluate stage re-evaluates when
    # the train run's eval settings differ from its own)
    ignore=("run.out", "run.device", "train.num_workers", "train.log_every", "eval.batch_size",
            "eval.item_batch_size", "eval.bf16", "eval.bootstrap"))


def make_train(p: Plan) -> list[Stage]:
    from ..train.runfolder import RESUMABLE_KEYS  # the budgets a resumed training run may change

    cfg = p.cfg
    inputs = {**p.data_inputs(), "ids": p.fingerprint("ids")}
    if p.has("gcn"):
        inputs["gcn"] = p.fingerprint("gcn")
    if cfg.model.similar_source != "gcn":
        inputs["similar"] = input_fingerprint(cfg.model.similar_source)
    if _local(cfg.model.pretrained):
        inputs["pretrained"] = input_fingerprint(cfg.model.pretrained)
    return [p.stage("train", TRAIN_READS, p.root / "train", inputs, partial(_build_train, p), atomic=False,
                    kinds=("run",), resumable=RESUMABLE_KEYS)]


def _build_train(p: Plan, folder: Path) -> dict:
    return train_stage(p.sc, folder, p.cfg.pipeline.train_minutes, resume=(folder / "checkpoints" / "last").is_dir())


# ---- evaluate -------------------------------------------------------------------------------
# the evaluate stage evaluates (or reuses the train stage's evaluation of) the same users
EVALUATE_READS = Reads(keys=("eval", "train.final_eval_users"), after=("train",))


def make_evaluate(p: Plan) -> list[Stage]:
    return [p.stage("evaluate", EVALUATE_READS, p.root / "eval", {"train": p.fingerprint("train")},
                    partial(_build_evaluate, p))]


def _build_evaluate(p: Plan, folder: Path) -> dict:
    return evaluate_stage(p.sc, p.root / "train", folder, p.cfg.train.final_eval_users)


# ---- baselines ------------------------------------------------------------------------------
_BASELINE_KEYS = ("eval.ks", "eval.exclude_history", "eval.ties", "eval.bootstrap", "run.seed", "data.max_his")
BASELINE_READS = {
    "pop": Reads(keys=_BASELINE_KEYS, after=("data",), when=("pipeline.baselines",)),
    "sasrec": Reads(keys=(*_BASELINE_KEYS, "baseline", "run.device"), after=("data",), when=("pipeline.baselines",)),
    "lightgcn": Reads(keys=_BASELINE_KEYS, after=("data", "gcn"), when=("pipeline.baselines",)),
}


def make_baselines(p: Plan) -> list[Stage]:
    out = []
    for name in p.cfg.pipeline.baselines:  # names checked by Config.validate (config.BASELINES)
        inputs = p.data_inputs()
        if name == "lightgcn":
            inputs["gcn"] = p.fingerprint("gcn")
        out.append(p.stage(f"baseline-{name}", BASELINE_READS[name], p.root / "baselines" / name, inputs,
                           partial(_build_baseline, p, name)))
    return out


def _build_baseline(p: Plan, name: str, folder: Path) -> dict:
    return baseline_stage(name, p.sc, folder)


# ---- report ---------------------------------------------------------------------------------
REPORT_READS = Reads(keys=("pipeline.baselines",), after=("evaluate", *(f"baseline-{n}" for n in BASELINE_READS)))


def make_report(p: Plan) -> list[Stage]:
    names = p.cfg.pipeline.baselines
    inputs = {"eval": p.fingerprint("evaluate"), **{f"baseline-{n}": p.fingerprint(f"baseline-{n}") for n in names}}
    return [p.stage("report", REPORT_READS, p.root / "report", inputs, partial(_build_report, p))]


def _build_report(p: Plan, folder: Path) -> dict:
    from .report import write_report

    runs = [p.root / "eval"] + [p.root / "baselines" / n for n in p.cfg.pipeline.baselines]
    path = write_report(runs, folder / "report.md", curves_from={str(p.root / "eval"): p.root / "train"})
    return {"report": str(path)}


BUILDERS = (make_prepare, make_ids, make_gcn, make_train, make_evaluate, make_baselines, make_report)


def build_stages(cfg: Config, progress: bool = True) -> list[Stage]:
    """The ordered stages for `cfg` (root = run.out)."""
    root = Path(cfg.run.out)
    plan = Plan(cfg, root, stage_config(cfg, root), progress)
    for make in BUILDERS:
        plan.stages.extend(make(plan))
    return plan.stages


def train_stage(sc: Config, folder: Path, train_minutes: float, resume: bool) -> dict:
    """Train GRAM-C into `folder` with the recipe `gramc train` runs (resuming its last checkpoint
    if asked) and return a summary. `train_minutes` > 0 sets train.max_steps from the throughput
    measured on a few probe steps (`gramc.train.budget`). The final evaluation's users are
    `train.final_eval_users`."""
    from ..recipes.train_gramc import train
    from ..train.budget import BUDGET_FILE

    c = copy.deepcopy(sc)
    c.run.out = str(folder)
    result = train(c, resume=resume, budget_minutes=train_minutes, stage=True)
    summary: dict[str, Any] = read_json(folder / BUDGET_FILE) if train_minutes > 0 else {}
    summary.update(steps=result.state.step, best_step=result.state.best_step, best_value=result.state.best_value,
                   interrupted=result.interrupted)
    if result.metrics:
        summary["test"] = result.metrics.get("test", {}).get("metrics", {})
    return summary


def evaluate_stage(sc: Config, train_folder: Path, folder: Path, eval_users: int) -> dict:
    """metrics.json (test) + metrics_valid.json of the best checkpoint under the `eval` settings.

    The train stage already evaluated the best checkpoint with the same settings; when its
    metrics files exist they are reused (copied), otherwise the checkpoint is evaluated here.
    """
    from ..runinfo import write_run_info

    from ..config import from_dict
    from ..data.source import load_dataset
    from ..data.splits import samples

    have = [train_folder / "metrics.json", train_folder / "metrics_valid.json"]
    n_test = len(samples(load_dataset(sc.data), "test", sc.data.max_his))
    expected_users = min(eval_users, n_test) if eval_users > 0 else n_test
    reusable = all(p.is_file() for p in have) and (train_folder / "config.yaml").is_file()
    if reusable:
        import yaml

        trained = from_dict(yaml.safe_load((train_folder / "config.yaml").read_text(encoding="utf-8")))
        test = read_json(have[0])
        reusable = ("metrics" in test and test.get("users") == expected_users
                    and to_dict(trained.eval) == to_dict(sc.eval))
    if reusable:
        for p in have:
            shutil.copy2(p, folder / p.name)
        source = "train stage's final evaluation of the best checkpoint"
    else:
        from ..eval.evaluate import evaluate_splits
        from ..model.runs import load_model_from_run
        from ..recipes.train_gramc import MODEL_NAME

        model, assets, cfg = load_model_from_run(train_folder, "best")
        results = evaluate_splits(model, assets, sc, ("valid", "test"), max_users=eval_users)  # one item pass
        for split, name in (("valid", "metrics_valid.json"), ("test", "metrics.json")):
            write_json(folder / name, {**results[split].to_json(), "model": MODEL_NAME})
        source = "evaluated here"
    write_run_info(folder, sc, {"checkpoint": train_folder / "checkpoints"})
    write_json(folder / "source.json", {"train_run": str(train_folder), "how": source})
    test = read_json(folder / "metrics.json")
    return {"test": test.get("metrics", {}), "users": test.get("users")}


def baseline_stage(name: str, sc: Config, folder: Path) -> dict:
    from ..baselines.common import load_data

    ds = load_data(sc)
    inputs = {"data": sc.data.path} if sc.data.path else {}
    if name == "pop":
        from ..baselines.pop import run_pop

        recs = run_pop(ds, sc, folder, inputs)
    elif name == "sasrec":
        from ..baselines.sasrec import run_sasrec

        recs = run_sasrec(ds, sc, folder, inputs)
    else:
        from ..baselines.lightgcn import run_lightgcn

        recs = run_lightgcn(ds, sc, folder, inputs)
    return {"test": recs["test"]["metrics"]}


def pipeline_inputs(cfg: Config) -> list[str]:
    """The files and folders the pipeline reads (never inside its output folder)."""
    paths = [cfg.pipeline.sequences, cfg.pipeline.items, cfg.data.path, cfg.ids.file, cfg.ids.embedding_file]
    if cfg.ids.tokenizer != "train" and Path(cfg.ids.tokenizer).exists():
        paths.append(cfg.ids.tokenizer)
    if cfg.model.similar_source != "gcn":
        paths.append(cfg.model.similar_source)
    return [p for p in paths if p]


def run_pipeline(cfg: Config, stages: Sequence[str] | None = None, progress: bool = True,
                 log: Callable[[str], None] = print) -> list[StageResult]:
    """Run (or skip) every stage in order; `stages` restricts to those names (plus nothing else).

    The pipeline root's lock (gramc.lock) is held throughout, and each stage's folder's while it
    runs: a second pipeline into the same root, or a command writing a stage's folder, is refused."""
    root = Path(cfg.run.out)
    with output_lock(root, "pipeline folder (run.out)"):
        return _run_stages(cfg, root, stages, progress, log)


def _run_stages(cfg: Config, root: Path, stages: Sequence[str] | None, progress: bool,
                log: Callable[[str], None]) -> list[StageResult]:
    """run_pipeline's work, under the root's lock."""
    claim_output(root, "pipeline", inputs=pipeline_inputs(cfg), what="pipeline folder (run.out)")
    root.mkdir(parents=True, exist_ok=True)
    from ..runinfo import write_run_info

    write_run_info(root, cfg, {k: v for k, v in (("sequences", cfg.pipeline.sequences), ("items", cfg.pipeline.items))
                               if v}, name="pipeline_run_info.json")
    results = []
    for st in build_stages(cfg, progress=progress):
        group = "baselines" if st.name.startswith("baseline-") else st.name
        if stages is not None and st.name not in stages and group not in stages:
            continue
        results.append(run_stage(st, log))
    write_json(root / "pipeline.json", {"stages": [dataclasses.asdict(r) for r in results]})
    return results
