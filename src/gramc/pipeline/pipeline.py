"""`gramc pipeline`: prepare -> ids -> gcn -> train -> evaluate -> baselines -> report, restartable.

Every stage writes one folder under `run.out` (the pipeline root):

    data/      prepared dataset (or none: `data.path` used as is / synthetic data built in memory)
    ids/       tokenizer/ + ids.txt (or a check of the given GRAM ID file)
    gcn/       LightGCN artefacts (gcn.out when set)
    train/     the training run (checkpoints, log.jsonl, metrics of the best checkpoint)
    eval/      metrics.json (test) + metrics_valid.json of the best checkpoint
    baselines/<name>/   metrics of each baseline on the same splits
    report.md  (+ PNGs) the comparison

A stage's fingerprint is the sha256 of its config section(s) and of its inputs' fingerprints (an
upstream stage's fingerprint, or a file's sha256). It is stored in `<stage>/.stage.json`, written
atomically and last; a stage whose `.stage.json` holds the current fingerprint is skipped, so a
crashed run restarts at the stage that did not finish (training itself resumes from its last
checkpoint when its fingerprint is unchanged). A changed config reruns that stage and every stage
downstream of it; an old training folder is kept beside the new one, never deleted.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from ..errors import GramcError
from ..config import Config, to_dict
from ..io import atomic_dir, claim_output, read_json, sha256_file, sha256_text, write_json

# Each stage imports its stage's code inside its own function, for start-up time: a pipeline whose
# stages are up to date (or `--stages prepare`) loads neither torch nor the model.

STAGE_FILE = ".stage.json"
PENDING_FILE = ".stage.pending.json"
STAGES = ("prepare", "ids", "gcn", "train", "evaluate", "baselines", "report")


class PipelineError(GramcError, RuntimeError):
    """A stage cannot run; the message names the stage and what is missing."""

    exit_code = 1


# --------------------------------------------------------------------------------------------
# Fingerprints and stage records
# --------------------------------------------------------------------------------------------


def input_fingerprint(path: str | Path) -> str:
    """A stage folder's recorded fingerprint, a file's sha256, or a folder's combined file hashes."""
    p = Path(path)
    if (p / STAGE_FILE).is_file():
        return read_json(p / STAGE_FILE)["fingerprint"]
    if p.is_file():
        return sha256_file(p)
    if p.is_dir():
        parts = [f"{f.relative_to(p)}:{sha256_file(f)}" for f in sorted(p.rglob("*"))
                 if f.is_file() and not any(x.startswith(".") for x in f.relative_to(p).parts)]
        return sha256_text("\n".join(parts))
    raise PipelineError(f"input {p} does not exist")


def stage_fingerprint(config: dict[str, Any], inputs: dict[str, str]) -> str:
    """sha256 of the stage's config section(s) and its inputs' fingerprints (order-independent)."""
    return sha256_text(json.dumps({"config": config, "inputs": inputs}, sort_keys=True, default=str))


def stage_done(folder: Path, fingerprint: str) -> bool:
    rec = folder / STAGE_FILE
    return rec.is_file() and read_json(rec).get("fingerprint") == fingerprint


@dataclass
class Stage:
    """One step: its output folder, the config it depends on, its inputs, and how to build it."""

    name: str
    folder: Path
    config: dict[str, Any]
    inputs: dict[str, str]  # name -> fingerprint
    build: Callable[[Path], dict[str, Any] | None]  # builds into the given folder; returns a summary
    atomic: bool = True  # build in a temporary sibling and swap in (False: build in place, e.g. training)
    # an output without a record that provably matches this stage's settings and inputs (e.g. a
    # GCN folder trained by `gramc gcn train`): returns a summary to adopt it, None to rebuild
    adopt: Callable[[Path], dict[str, Any] | None] | None = None
    # gramc.io.MARKERS kinds besides "stage" that mark an existing folder as replaceable (e.g. "gcn")
    kinds: tuple[str, ...] = ("stage",)

    @property
    def fingerprint(self) -> str:
        return stage_fingerprint(self.config, self.inputs)


@dataclass
class StageResult:
    name: str
    status: str  # "skipped" (up to date) | "ran" | "adopted" (matching output without a record)
    folder: str
    fingerprint: str
    seconds: float = 0.0
    summary: dict[str, Any] = field(default_factory=dict)


def _written_files(folder: Path) -> list[str]:
    """Top-level names a stage build wrote (recorded so that a rebuild replaces only those)."""
    return sorted(p.name for p in folder.iterdir() if p.name not in (STAGE_FILE, PENDING_FILE))


def claim_stage_folder(stage: Stage) -> None:
    """Refuse to replace a stage folder that holds anything the pipeline did not write there."""
    folder = stage.folder
    own = None
    if not stage.atomic:  # an in-place stage never deletes: an old folder is moved aside whole
        pass
    elif (folder / STAGE_FILE).is_file():
        files = read_json(folder / STAGE_FILE).get("files")
        own = None if files is None else [*files, STAGE_FILE, PENDING_FILE]
    elif stage.name == "gcn":
        from ..graph.lightgcn import OWN_FILES

        own = [*OWN_FILES, STAGE_FILE, PENDING_FILE]
    claim_output(folder, ("stage", *stage.kinds), what=f"[{stage.name}] stage folder", own=own)


def run_stage(stage: Stage, log: Callable[[str], None] = print) -> StageResult:
    """Skip the stage when its record matches, else build it and write the record last.

    A stage folder is only ever replaced when it holds nothing but what this pipeline wrote there
    (its `.stage.json` lists the files); anything else is refused (gramc.io.claim_output)."""
    fp = stage.fingerprint
    if stage_done(stage.folder, fp):
        log(f"[{stage.name}] up to date ({stage.folder}), skipped")
        return StageResult(stage.name, "skipped", str(stage.folder), fp,
                           summary=read_json(stage.folder / STAGE_FILE).get("summary", {}))
    t0 = time.time()
    record = {"stage": stage.name, "fingerprint": fp, "config": stage.config, "inputs": stage.inputs,
              "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    adopted = stage.adopt(stage.folder) if stage.adopt is not None and stage.folder.is_dir() else None
    if adopted is not None:
        record.update(summary={"adopted": True, **adopted}, seconds=0.0)
        write_json(stage.folder / STAGE_FILE, record)
        log(f"[{stage.name}] existing output matches the settings and inputs: adopted ({stage.folder})")
        return StageResult(stage.name, "adopted", str(stage.folder), fp, 0.0, record["summary"])
    log(f"[{stage.name}] running -> {stage.folder}")
    claim_stage_folder(stage)
    if stage.atomic:
        with atomic_dir(stage.folder) as tmp:
            summary = stage.build(tmp) or {}
            record.update(summary=summary, seconds=round(time.time() - t0, 2), files=_written_files(tmp))
            write_json(tmp / STAGE_FILE, record)
    else:
        folder = stage.folder
        pending = folder / PENDING_FILE
        if folder.exists() and not (pending.is_file() and read_json(pending).get("fingerprint") == fp):
            if any(folder.iterdir()):  # built from other settings: keep it, out of the way
                aside = folder.with_name(f"{folder.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}")
                log(f"[{stage.name}] settings changed: previous output kept as {aside}")
                folder.rename(aside)
        folder.mkdir(parents=True, exist_ok=True)
        write_json(pending, {"stage": stage.name, "fingerprint": fp})
        summary = stage.build(folder) or {}
        record.update(summary=summary, seconds=round(time.time() - t0, 2), files=_written_files(folder))
        write_json(folder / STAGE_FILE, record)
        pending.unlink(missing_ok=True)
    log(f"[{stage.name}] done in {time.time() - t0:.1f} s")
    return StageResult(stage.name, "ran", str(stage.folder), fp, record["seconds"], summary)


def resumable(folder: Path, fingerprint: str) -> bool:
    """True when an unfinished in-place stage with this fingerprint left a folder behind."""
    pending = folder / PENDING_FILE
    return pending.is_file() and read_json(pending).get("fingerprint") == fingerprint


# --------------------------------------------------------------------------------------------
# The GRAM-C pipeline
# --------------------------------------------------------------------------------------------


def _sections(cfg: Config, *names: str, drop: Sequence[str] = ()) -> dict[str, Any]:
    """The named config sections (dotted names allowed), without the `drop` keys (dotted)."""
    full = to_dict(cfg)
    out: dict[str, Any] = {}
    for name in names:
        node: Any = full
        for part in name.split("."):
            node = node[part]
        out[name] = json.loads(json.dumps(node))
    for key in drop:
        sec, _, leaf = key.rpartition(".")
        if sec in out and isinstance(out[sec], dict):
            out[sec].pop(leaf, None)
    return out


def stage_config(cfg: Config, root: Path) -> Config:
    """The config every downstream stage sees: data/ids/gcn paths pointing into the pipeline root."""
    c = _deepcopy(cfg)
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


def _deepcopy(cfg: Config) -> Config:
    import copy

    return copy.deepcopy(cfg)


def build_stages(cfg: Config, progress: bool = True) -> list[Stage]:
    """The ordered stages for `cfg` (root = run.out)."""
    check_eval_users(cfg)
    root = Path(cfg.run.out)
    sc = stage_config(cfg, root)
    stages: list[Stage] = []

    # ---- prepare ------------------------------------------------------------------------
    if cfg.pipeline.sequences:
        inputs = {"sequences": input_fingerprint(cfg.pipeline.sequences)}
        if cfg.pipeline.items:
            inputs["items"] = input_fingerprint(cfg.pipeline.items)

        def build_prepare(folder: Path) -> dict:
            from ..data.prepare import build_dataset
            from ..runinfo import write_run_info

            ds = build_dataset(cfg.pipeline.sequences, cfg.pipeline.items or None, cfg,
                               cfg.pipeline.seq_format, cfg.pipeline.item_format)
            ds.save(folder)
            src = {"sequences": cfg.pipeline.sequences, **({"items": cfg.pipeline.items} if cfg.pipeline.items else {})}
            write_run_info(folder, cfg, src)
            return {"users": ds.num_users, "items": ds.num_items, "interactions": ds.num_interactions}

        stages.append(Stage("prepare", root / "data", _sections(cfg, "data.kcore", "data.missing_metadata",
                                                                "pipeline.seq_format", "pipeline.item_format"),
                            inputs, build_prepare))
        data_fp = {"data": "@prepare"}
    elif cfg.data.path:
        data_fp = {"data": input_fingerprint(cfg.data.path)}
    else:
        data_fp = {"data": stage_fingerprint(_sections(cfg, "data.synthetic"), {})}

    def dep(name: str) -> str:
        for s in stages:
            if s.name == name:
                return s.fingerprint
        raise KeyError(name)

    def data_inputs() -> dict[str, str]:
        return {"data": dep("prepare")} if data_fp.get("data") == "@prepare" else dict(data_fp)

    # ---- ids ----------------------------------------------------------------------------
    ids_inputs = data_inputs()
    if cfg.ids.file:
        ids_inputs["id_file"] = input_fingerprint(cfg.ids.file)
    if cfg.ids.tokenizer != "train" and Path(cfg.ids.tokenizer).exists():
        ids_inputs["tokenizer"] = input_fingerprint(cfg.ids.tokenizer)

    def build_ids_stage(folder: Path) -> dict:
        from ..checks import Report
        from ..data.source import load_dataset
        from ..data.text import item_texts
        from ..ids.itemids import check_ids
        from ..ids.tokenizer import resolve_tokenizer

        ds = load_dataset(sc.data)
        texts = item_texts(ds, sc.data)
        tok = resolve_tokenizer(cfg.ids.tokenizer, folder / "tokenizer", texts, cfg.ids.vocab_size, reuse=False)
        if cfg.ids.file:  # given IDs: check them against the dataset and tokenizer, record the report
            report = Report(check_ids(cfg.ids.file, ds, tok))
            write_json(folder / "ids_check.json", report.to_dict())
            if not report.ok:
                raise PipelineError(f"[ids] {cfg.ids.file} failed its checks:\n{report.table()}")
            return {"source": cfg.ids.file, "checks_ok": True}
        from ..ids.build import build_ids, save_built_ids

        ids = build_ids(ds, texts, tok, cfg.ids, progress=progress)
        report, _ = save_built_ids(ids, ds, tok, sc, folder / "ids.txt", {}, plot=True)
        return {"items": ids.num_items, "checks_ok": report.ok}

    stages.append(Stage("ids", root / "ids", _sections(cfg, "ids", "data.text_fields", "data.lowercase"),
                        ids_inputs, build_ids_stage))

    # ---- gcn ----------------------------------------------------------------------------
    from ..graph import artifacts as gcn_files  # here, not at the top: it loads torch

    gcn_needed = gcn_files.gcn_needed(cfg) or "lightgcn" in cfg.pipeline.baselines

    def build_gcn(folder: Path) -> dict:
        from ..data.source import load_dataset
        from ..graph.lightgcn import train_lightgcn

        meta = train_lightgcn(load_dataset(sc.data), cfg.gcn, folder, run_cfg=sc, progress=progress)
        return {"valid_recall@10": meta.get("valid", {}).get("recall@10")}

    def adopt_gcn(folder: Path) -> dict | None:
        """A complete GCN folder trained with these hyper-parameters on exactly these interactions."""
        from ..data.source import load_dataset
        from ..graph.artifacts import META_FILE, MODEL_FILE
        from ..graph.lightgcn import interaction_sequences, pairs_fingerprint

        if not ((folder / META_FILE).is_file() and (folder / MODEL_FILE).is_file()):
            return None
        meta = read_json(folder / META_FILE)
        ignore = ("out", "device")
        have = {k: v for k, v in meta.get("hyper_parameters", {}).items() if k not in ignore}
        want = {k: v for k, v in to_dict(cfg.gcn).items() if k not in ignore}
        if have != want:
            return None
        ds = load_dataset(sc.data)
        fp = pairs_fingerprint(ds, interaction_sequences(ds, cfg.gcn.interactions))
        if meta.get("interactions", {}).get("sha256") != fp:
            return None
        return {"valid_recall@10": meta.get("valid", {}).get("recall@10")}

    if gcn_needed:
        stages.append(Stage("gcn", gcn_files.gcn_folder(cfg, root),
                            _sections(cfg, "gcn", drop=["gcn.out", "gcn.device"]),
                            data_inputs(), build_gcn, adopt=adopt_gcn, kinds=("gcn",)))

    # ---- train --------------------------------------------------------------------------
    train_inputs = {**data_inputs(), "ids": dep("ids")}
    if gcn_needed:
        train_inputs["gcn"] = dep("gcn")
    if cfg.model.similar_source != "gcn":
        train_inputs["similar"] = input_fingerprint(cfg.model.similar_source)
    train_cfg = _sections(cfg, "run.seed", "data.max_his", "data.text_fields", "data.lowercase", "model", "train",
                          "pipeline.train_minutes", "eval.beams", "eval.length_penalty", "eval.early_stopping",
                          drop=["train.num_workers", "train.log_every"])
    train_folder = root / "train"

    def build_train(folder: Path) -> dict:
        return train_stage(sc, folder, cfg.pipeline.eval_users, cfg.pipeline.train_minutes,
                           resume=(folder / "checkpoints" / "last").is_dir())

    stages.append(Stage("train", train_folder, train_cfg, train_inputs, build_train, atomic=False, kinds=("run",)))

    # ---- evaluate -----------------------------------------------------------------------
    def build_eval(folder: Path) -> dict:
        return evaluate_stage(sc, train_folder, folder, cfg.pipeline.eval_users)

    stages.append(Stage("evaluate", root / "eval", _sections(cfg, "eval", "pipeline.eval_users"),
                        {"train": dep("train")}, build_eval))

    # ---- baselines ----------------------------------------------------------------------
    for name in cfg.pipeline.baselines:
        if name not in ("pop", "sasrec", "lightgcn"):
            from ..config import ConfigError

            raise ConfigError(f"config key 'pipeline.baselines' has unknown baseline {name!r} "
                              "(expected pop, sasrec or lightgcn)")
        secs = ["eval.ks", "eval.exclude_history", "eval.bootstrap", "run.seed", "data.max_his"]
        if name == "sasrec":
            secs += ["baseline", "run.device"]
        b_inputs = data_inputs()
        if name == "lightgcn":
            b_inputs["gcn"] = dep("gcn")

        def build_baseline(folder: Path, name: str = name) -> dict:
            return baseline_stage(name, sc, folder)

        stages.append(Stage(f"baseline-{name}", root / "baselines" / name, _sections(cfg, *secs), b_inputs,
                            build_baseline))

    # ---- report -------------------------------------------------------------------------
    def build_report(folder: Path) -> dict:
        from .report import write_report

        runs = [root / "eval"] + [root / "baselines" / n for n in cfg.pipeline.baselines]
        path = write_report(runs, folder / "report.md", curves_from={str(root / "eval"): train_folder})
        return {"report": str(path)}

    rep_inputs = {"eval": dep("evaluate"), **{f"baseline-{n}": dep(f"baseline-{n}") for n in cfg.pipeline.baselines}}
    stages.append(Stage("report", root / "report", {}, rep_inputs, build_report))
    return stages


def train_stage(sc: Config, folder: Path, eval_users: int, train_minutes: float, resume: bool) -> dict:
    """Train GRAM-C into `folder` (resuming its last checkpoint if asked) and return a summary.

    `eval_users` (`pipeline.eval_users`) > 0 caps the final valid/test evaluation to the first N
    users: in a pipeline it sets `train.final_eval_users` (the two must agree, see
    `check_eval_users`) and, where `train.eval_users` is 0, validation during training too;
    `train_minutes` > 0 sets train.max_steps from the throughput measured on a few probe steps.
    """
    import copy

    from ..recipes.train_gramc import gramc_parts
    from ..runtime import init_distributed
    from ..train.trainer import fit

    from ..config import absolute_paths

    c = copy.deepcopy(sc)
    c.run.out = str(folder)
    c = absolute_paths(c)  # the run's config.yaml reads back from any working directory
    c.train.final_eval_users = eval_users
    info = init_distributed(c.run.device)
    parts = gramc_parts(c, info)
    if eval_users > 0 and parts.evaluate is not None:
        inner = parts.evaluate

        def capped(model, split: str, max_users: int) -> dict:
            return inner(model, split, max_users if max_users > 0 else eval_users)

        parts.evaluate = capped
    summary: dict[str, Any] = {}
    budget_file = folder / "train_budget.json"  # the step count chosen for the budget, kept for a resume
    if train_minutes > 0 and resume and budget_file.is_file():
        summary.update(read_json(budget_file))
        c.train.max_steps = summary["max_steps"]
    elif train_minutes > 0:
        sec_per_step = measure_step_seconds(parts, c)
        steps = max(1, int(train_minutes * 60 / sec_per_step))
        if c.train.max_steps == 0 or steps < c.train.max_steps:
            c.train.max_steps = steps
        summary.update(seconds_per_step=round(sec_per_step, 3), max_steps=c.train.max_steps,
                       train_minutes=train_minutes)
        write_json(budget_file, summary)
    result = fit(parts, c, folder, resume=resume, info=info)
    summary.update(steps=result.state.step, best_step=result.state.best_step, best_value=result.state.best_value,
                   interrupted=result.interrupted)
    if result.metrics:
        summary["test"] = result.metrics.get("test", {}).get("metrics", {})
    return summary


def check_eval_users(cfg: Config) -> None:
    """`pipeline.eval_users` is the pipeline's one count of final-evaluation users (train stage and
    evaluate stage alike); a different `train.final_eval_users` is an error, not a silent choice."""
    t, p = cfg.train.final_eval_users, cfg.pipeline.eval_users
    if t not in (0, p):
        from ..config import ConfigError

        raise ConfigError(f"config key 'train.final_eval_users' is {t} but 'pipeline.eval_users' is {p}: in a "
                          "pipeline the final evaluation's users are set by pipeline.eval_users (set that one, "
                          "leave train.final_eval_users at 0)")


def measure_step_seconds(parts, cfg: Config, steps: int = 3) -> float:
    """Seconds per optimiser step of this model/batching, measured on a throw-away copy."""
    import copy

    import torch

    from ..train.batching import Batcher
    from ..train.trainer import Trainer, init_distributed, to_device

    info = init_distributed(cfg.run.device)
    model = copy.deepcopy(parts.model)
    batcher = Batcher(parts.train_samples, cfg.train.batching, cfg.train.batch_size, cfg.train.grad_accum,
                      cfg.run.seed, info.rank, info.world)
    plan = batcher.plan(0)
    trainer = Trainer(model, cfg.train, max(steps + 1, 10), info, seed=cfg.run.seed, count_tokens=parts.count_tokens)
    times = []
    for i in range(min(steps + 1, plan.num_steps)):
        t0 = time.perf_counter()
        stats = trainer.train_step([to_device(parts.collate(mb), info.device) for mb in plan.step(i)])
        stats.loss  # reads the loss: waits for the device, so the time is the step's, not its launch's
        times.append(time.perf_counter() - t0)
    del trainer, model
    torch.manual_seed(cfg.run.seed)
    later = times[1:] or times  # the first step pays one-off costs
    return sum(later) / len(later)


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
        from ..eval.evaluate import evaluate_split
        from ..model.runs import load_model_from_run
        from ..ids.trie import trie_for

        model, assets, cfg = load_model_from_run(train_folder, "best")
        trie = trie_for(assets.item_ids).to(next(model.parameters()).device)  # once for both splits
        for split, name in (("valid", "metrics_valid.json"), ("test", "metrics.json")):
            res = evaluate_split(model, assets, sc, split, max_users=eval_users, trie=trie)
            write_json(folder / name, {**res.to_json(), "model": "gramc"})
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
    """Run (or skip) every stage in order; `stages` restricts to those names (plus nothing else)."""
    root = Path(cfg.run.out)
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
