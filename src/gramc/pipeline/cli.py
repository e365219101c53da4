"""`gramc quickstart`, `gramc pipeline` and `gramc report`."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..cliargs import add_config_args, config_from_args

# Each command imports the code it runs inside its own function, not here, for start-up time:
# `gramc --help` and argument errors then load neither torch nor the other stages.


def _quickstart(args: argparse.Namespace) -> int:
    from .quickstart import quickstart_config, run_quickstart, summary_table

    cfg = quickstart_config(args.config, args.overrides, args.out)
    figures = run_quickstart(cfg)
    print(summary_table(figures))
    print(f"report: {Path(cfg.run.out) / 'report.md'}")
    return 0


def _pipeline(args: argparse.Namespace) -> int:
    from .pipeline import STAGES, run_pipeline

    cfg = config_from_args(args)
    stages = args.stages.split(",") if args.stages else None
    if stages:
        bad = [s for s in stages if s not in STAGES and not s.startswith("baseline-")]
        if bad:
            from ..config import ConfigError

            raise ConfigError(f"--stages: unknown stage(s) {bad}; stages are {list(STAGES)}")
    results = run_pipeline(cfg, stages=stages)
    for r in results:
        print(f"{r.name:18} {r.status:8} {r.seconds:8.1f} s  {r.folder}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from .report import write_report

    path = write_report(args.runs, args.out, title=args.title)
    print(f"report written to {path}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    q = sub.add_parser("quickstart", help="whole pipeline on synthetic data, with baselines and a report (minutes)",
                       description="Synthetic data -> IDs -> LightGCN -> GRAM-C -> evaluation -> report.md in "
                                   "--out. Settings from configs/quickstart.yaml unless --config is given.")
    q.add_argument("--out", default=None, help="output folder (default: run.out of the config, runs/quickstart)")
    add_config_args(q)
    q.set_defaults(func=_quickstart)

    p = sub.add_parser("pipeline", help="prepare -> ids -> gcn -> train -> evaluate -> baselines -> report, "
                                        "skipping stages whose inputs and settings are unchanged",
                       description="Runs every stage into run.out; a stage whose .stage.json fingerprint matches "
                                   "is skipped, so a crashed run restarts where it stopped.")
    p.add_argument("--stages", default="", help="comma list of stages to run (default: all)")
    add_config_args(p, required=True)
    p.set_defaults(func=_pipeline)

    r = sub.add_parser("report", help="one markdown page (and PNGs) comparing run folders",
                       description="Settings that differ, test metrics with bootstrap CIs, training curves.")
    r.add_argument("runs", nargs="+", help="run folders (training runs, baseline folders, pipeline roots)")
    r.add_argument("--out", default="report.md", help="markdown file to write (PNGs beside it)")
    r.add_argument("--title", default="gramc report")
    r.set_defaults(func=_report)
