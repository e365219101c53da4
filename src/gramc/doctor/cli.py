"""`gramc doctor [data|ids|flow|grad-sync|recipe|leakage|eval|all|prefix|search]`: measure what is wrong with a run.

    gramc doctor all --config FILE [key.sub=value ...] [--json]
    gramc doctor prefix --run RUN_DIR [--users N] [--rank-users N]   (a trained GRAM-C run)
    gramc doctor search --run RUN_DIR [--users N] [--k 10]           (a trained run: search or model misses)
    gramc doctor data --data DIR --gcn GCN_DIR          gramc doctor ids --ids FILE --tokenizer PATH

Every check prints its figure, pass / warn / fail and what to do (`gramc.checks.Report.table()`);
`--json` prints `{"ok", "checks": [{"name", "ok", "level", "value", "message"}]}`. Exit code 1
when a check fails, 2 when the arguments are unusable. `all` runs every check the config makes
possible. Assets (dataset, tokenizer, IDs, GCN, passage cache) come from `Assets.from_config`,
which reuses what run.out holds and builds what is missing, except in a trained run folder: there a
missing asset is an error (the doctor never rebuilds the assets of a run).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path
from typing import Any, Callable

from ..cliargs import add_config_args, add_run_args, config_from_args
from ..data.dataset import DataError

# Each command imports the code it runs inside its own function, not here, for start-up time:
# `gramc --help` and argument errors then load neither torch nor the other stages.

SECTIONS = ["data", "ids", "flow", "recipe", "leakage", "eval", "grad-sync"]


class _Context:
    """The resolved config and, built once on first use, the assets of the run."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.cfg = config_from_args(args)
        self._assets: Any = None

    @property
    def has_assets(self) -> bool:
        return self._assets is not None

    @property
    def assets(self) -> Any:
        if self._assets is None:
            from ..model.assets import Assets
            from ..train.runfolder import holds_run

            build = not holds_run(Path(self.cfg.run.out))  # a trained run's assets are only loaded
            with contextlib.redirect_stdout(sys.stderr):  # keep stdout for the report (--json)
                self._assets = Assets.from_config(self.cfg, progress=not getattr(self.args, "quiet", False),
                                                  build=build)
        return self._assets

    @property
    def gcn_dir(self) -> Path:
        from ..graph.artifacts import gcn_folder

        return gcn_folder(self.cfg)

    @property
    def gcn_needed(self) -> bool:
        from ..graph.artifacts import gcn_needed

        return gcn_needed(self.cfg)

    def dataset(self) -> Any:
        data = getattr(self.args, "data", None)
        if data:
            from ..data.dataset import SeqDataset

            if not Path(data).is_dir():
                raise DataError(f"--data {data}: no such folder (expected a prepared dataset from "
                                f"`gramc data prepare`)")
            return SeqDataset.load(data)
        return self.assets.ds


# --------------------------------------------------------------------------------------------
# Sections: each returns list[Check]
# --------------------------------------------------------------------------------------------


def _data(ctx: _Context) -> list:
    from ..checks import passed
    from ..graph.checks import check_gcn

    gcn = getattr(ctx.args, "gcn", None)
    if gcn:
        if not Path(gcn).is_dir():
            raise DataError(f"--gcn {gcn}: no such folder; build one with `gramc gcn train --out {gcn}`")
        return check_gcn(ctx.dataset(), gcn)
    if not ctx.gcn_needed:
        return [passed("gcn.files", "not used", "the prefix is off and similar items do not come from the GCN")]
    ds = ctx.dataset()
    if not ctx.gcn_dir.is_dir():
        ctx.assets  # builds the GCN folder the config names
    return check_gcn(ds, ctx.gcn_dir)


def _ids(ctx: _Context) -> list:
    from ..ids.itemids import check_ids
    from ..ids.tokenizer import load_tokenizer

    ids_file = getattr(ctx.args, "ids", None)
    if ids_file:
        if not Path(ids_file).is_file():
            raise DataError(f"--ids {ids_file}: no such file (a GRAM-format ID file `ASIN |tok|tok|...`)")
        spec = getattr(ctx.args, "tokenizer", None) or ctx.cfg.ids.tokenizer
        if spec == "train":
            spec = str(Path(ctx.cfg.run.out) / "tokenizer")
            if not Path(spec).is_dir():
                raise DataError("--ids needs --tokenizer PATH (the tokenizer the IDs were made with)")
        return check_ids(ids_file, ctx.dataset(), load_tokenizer(spec))
    a = ctx.assets
    return check_ids(a.item_ids, a.ds, a.tokenizer)


def _flow(ctx: _Context) -> list:
    from .flow import flow_checks

    return flow_checks(ctx.cfg, ctx.assets)


def _recipe_dataset(ctx: _Context) -> Any:
    """The run's dataset without building any asset: the assets' when built, `--data`, `data.path`,
    the raw files of `pipeline.sequences` (read in memory), or the synthetic data."""
    cfg = ctx.cfg
    if ctx.has_assets or getattr(ctx.args, "data", None):
        return ctx.dataset()
    if cfg.pipeline.sequences and not cfg.data.path:
        from ..data.prepare import build_dataset

        return build_dataset(cfg.pipeline.sequences, cfg.pipeline.items or None, cfg, cfg.pipeline.seq_format,
                             cfg.pipeline.item_format)
    from ..data.source import load_dataset

    return load_dataset(cfg.data)


def _recipe(ctx: _Context) -> list:
    from ..data.splits import samples, training_samples
    from ..runtime import launch
    from .recipe import load_recipe, recipe_checks, truncation_shares

    world = getattr(ctx.args, "world", 0) or launch().world
    trunc = None
    if ctx.has_assets:
        a = ctx.assets
        trunc = truncation_shares(a.cache, samples(a.ds, "train", ctx.cfg.data.max_his), ctx.cfg)
    c = ctx.cfg
    train = training_samples(_recipe_dataset(ctx), c.data.max_his, c.train.indexing, c.run.seed)
    return recipe_checks(ctx.cfg, load_recipe(getattr(ctx.args, "recipe", None) or "gram-beauty"), world, trunc,
                         train)


def _leakage(ctx: _Context) -> list:
    from .leakage import leakage_checks

    a = ctx.assets
    return leakage_checks(ctx.cfg, a, ctx.gcn_dir if ctx.gcn_needed else None)


def _eval(ctx: _Context) -> list:
    from ..data.splits import samples
    from .evalchecks import checkpoint_asset_checks, eval_checks

    a = ctx.assets
    return [*eval_checks(ctx.cfg, a.item_ids, a.tokenizer, len(samples(a.ds, "test", ctx.cfg.data.max_his))),
            *checkpoint_asset_checks(ctx.cfg.run.out, a.fingerprints())]


def _grad_sync(ctx: _Context) -> list:
    from .gradsync import run_grad_sync

    a = ctx.args
    return run_grad_sync(ctx.cfg, nproc=getattr(a, "nproc", 0), steps=getattr(a, "steps", 2),
                         per_rank=getattr(a, "per_rank", 2), fault=getattr(a, "inject_fault", None),
                         quiet=getattr(a, "quiet", False), assets=ctx.assets)


_RUNNERS: dict[str, Callable[[_Context], list]] = {
    "data": _data, "ids": _ids, "flow": _flow, "recipe": _recipe, "leakage": _leakage, "eval": _eval,
    "grad-sync": _grad_sync,
}


def run_sections(ctx: _Context, sections: list[str]) -> tuple[Any, dict[str, float]]:
    """Run the sections in order; return the Report and the seconds each took."""
    from ..checks import Report

    report = Report()
    seconds: dict[str, float] = {}
    for name in sections:
        t0 = time.perf_counter()
        report.extend(_RUNNERS[name](ctx))
        seconds[name] = round(time.perf_counter() - t0, 2)
        if not getattr(ctx.args, "quiet", False):
            print(f"doctor {name}: {seconds[name]:.1f}s", file=sys.stderr)
    return report, seconds


def _run_trained(args: argparse.Namespace, name: str, checks: Callable[..., list]) -> int:
    """`gramc doctor NAME --run DIR`: the trained run's own config and checkpoint, then `checks(model,
    assets, cfg)` (the command's own options bound already); the report on stdout."""
    from ..checks import Report
    from ..model.runs import load_model_from_run

    t0 = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # keep stdout for the report (--json)
        model, assets, cfg = load_model_from_run(args.run, args.checkpoint, args.overrides, progress=not args.quiet)
    report = Report()
    report.extend(checks(model, assets, cfg))
    print(report.to_json() if args.json else report.table())
    if not args.json and not args.quiet:
        print(f"doctor {name}: {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    return report.exit_code


def _run_prefix(args: argparse.Namespace) -> int:
    """`gramc doctor prefix --run DIR`: does the trained GRAM-C use its prefix, and for what?"""
    from .prefix import prefix_checks

    return _run_trained(args, "prefix", lambda model, assets, cfg: prefix_checks(
        model, assets, cfg, split=args.split, users=args.users, rank_users=args.rank_users, beams=args.beams,
        progress=not args.quiet))


def _run_search(args: argparse.Namespace) -> int:
    """`gramc doctor search --run DIR`: are the trained run's misses the search's or the model's?"""
    from .search import search_checks

    return _run_trained(args, "search", lambda model, assets, cfg: search_checks(
        model, assets, cfg, split=args.split, users=args.users, k=args.k, progress=not args.quiet))


def _run(args: argparse.Namespace) -> int:
    ctx = _Context(args)
    sections = SECTIONS if args.doctor_command == "all" else [args.doctor_command]
    if args.doctor_command == "all" and getattr(args, "skip", None):
        sections = [s for s in sections if s not in args.skip]
    t0 = time.perf_counter()
    report, seconds = run_sections(ctx, sections)
    print(report.to_json() if args.json else report.table())
    if not args.json and len(sections) > 1:
        print(f"doctor: {time.perf_counter() - t0:.1f}s ({', '.join(f'{k} {v:.1f}s' for k, v in seconds.items())})")
    return report.exit_code


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "doctor", help="diagnose a run: data, IDs, input flow, gradient sync, recipe, leakage, evaluation",
        description="Measure instead of guessing: every check prints its figure, pass/warn/fail and what to "
                    "do. Exit 1 on a failed check, 2 on unusable arguments. See docs/doctor.md.")
    sub = p.add_subparsers(dest="doctor_command", metavar="CHECK")
    sub.required = True

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help_text, description=help_text)
        c.add_argument("--json", action="store_true", help='print {"ok", "checks": [...]} instead of a table')
        c.add_argument("--quiet", action="store_true", help="no progress bars or timings on stderr")
        add_config_args(c)
        c.set_defaults(func=_run)
        return c

    d = add("data", "GCN mapping, embedding table, consistency and leakage checks (gramc.graph.checks)")
    d.add_argument("--data", help="prepared dataset folder (default: data.path or the synthetic dataset)")
    d.add_argument("--gcn", help="GCN folder (default: gcn.out or <run.out>/gcn, built if missing)")

    i = add("ids", "item-ID checks (gramc.ids.check_ids): single-piece levels, coverage, collisions, statistics")
    i.add_argument("--data", help="prepared dataset folder (default: data.path or the synthetic dataset)")
    i.add_argument("--ids", help="GRAM-format ID file (default: the run's IDs from the config)")
    i.add_argument("--tokenizer", help="tokenizer folder or hub name the IDs use (default: ids.tokenizer)")

    add("flow", "one real batch through the collator and model: the step-0 audit and the history order")

    def grad_args(c: argparse.ArgumentParser) -> None:
        c.add_argument("--nproc", type=int, default=0,
                       help="processes of the multi-process run (default: every GPU if 2+, else 2 on CPU)")
        c.add_argument("--steps", type=int, default=2, help="optimiser steps compared (default 2)")
        c.add_argument("--per-rank", type=int, default=2, help="training samples per process per step (default 2)")
        c.add_argument("--inject-fault", choices=["double_reduce", "module_call"], help=argparse.SUPPRESS)

    def recipe_args(c: argparse.ArgumentParser) -> None:
        c.add_argument("--recipe", default="gram-beauty", help="reference recipe name or .yaml path "
                                                               "(default gram-beauty)")
        c.add_argument("--world", type=int, default=0,
                       help="processes the run trains on, for the effective batch (default: $WORLD_SIZE or 1)")

    g = add("grad-sync", "1 process vs N processes (torchrun): gradient ratio, rank agreement, parameters")
    grad_args(g)
    r = add("recipe", "the resolved config against a reference recipe, with the expected effect of each difference")
    recipe_args(r)
    add("leakage", "GCN/similar items trained on training interactions only; splits; inputs never hold the future")
    add("eval", "ID collisions, beams vs k, trie coverage, distributed sharding, metrics vs a reference")
    def trained(name: str, help_text: str, description: str, example: str, users_help: str,
                func: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help_text, description=description)
        add_run_args(c, example)
        c.add_argument("--split", choices=["valid", "test"], default="valid", help="samples to read (default valid)")
        c.add_argument("--users", type=int, default=1000, help=users_help)
        c.add_argument("--json", action="store_true", help='print {"ok", "checks": [...]} instead of a table')
        c.add_argument("--quiet", action="store_true", help="no progress bars or timings on stderr")
        c.set_defaults(func=func)
        return c

    pr = trained("prefix", "a trained GRAM-C run: does it use its prefix, and is that the collaborative signal? "
                           "(own vs no vs another user's prefix)",
                 "Load a trained run and compare each sample's target likelihood with its own prefix, with none "
                 "and with another user's; optionally the ranking with and without the prefix. See docs/doctor.md.",
                 "run.device=cpu", "samples drawn by run.seed for the likelihood checks; 0 = every user "
                                   "(default 1000)", _run_prefix)
    pr.add_argument("--rank-users", type=int, default=0,
                    help="of those, the first N also beam-searched with and without the prefix (default 0: off)")
    pr.add_argument("--beams", type=int, default=0, help="beams of the ranking check (default eval.beams)")
    se = trained("search", "a trained run: are its misses the beam search's or the model's? (each target's "
                           "exact score against the search's k-th item)",
                 "Load a trained run, beam-search seeded samples as `gramc evaluate` does and score each target "
                 "teacher forced: a target that scores above the search's k-th item but was not returned is a "
                 "search error. See docs/doctor.md.", "eval.beams=100",
                 "samples drawn by run.seed; 0 = every user (default 1000)", _run_search)
    se.add_argument("--k", type=int, default=10, help="the cut-off (default 10)")
    a = add("all", "every check the config makes possible")
    a.add_argument("--skip", action="append", choices=SECTIONS, default=[], metavar="SECTION",
                   help=f"a section to leave out (repeatable): {', '.join(SECTIONS)}")
    grad_args(a)
    recipe_args(a)
