"""The `gramc` command: one subcommand per pipeline stage.

Each stage's folder owns its commands in a `cli.py` with `register(subparsers)`; this module
only collects them (it is the top of the package: nothing imports it but `gramc.__main__`). The
shared `--config FILE key.sub=value` arguments live below the stages, in `gramc.cliargs`.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys

from .errors import GramcError

# pipeline order; each module defines register(subparsers)
_COMMAND_MODULES = [
    "gramc.data.cli",  # data prepare | download | stats
    "gramc.ids.cli",  # ids build | check
    "gramc.graph.cli",  # gcn train
    "gramc.recipes.cli",  # train (the GRAM-C recipe: model + train + eval)
    "gramc.train.cli",  # plot
    "gramc.eval.cli",  # evaluate
    "gramc.serve.cli",  # recommend
    "gramc.baselines.cli",  # baseline pop | sasrec | lightgcn
    "gramc.doctor.cli",  # doctor ...
    "gramc.pipeline.cli",  # quickstart | pipeline | report
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gramc",
        description="GRAM-C: generative recommendation with late fusion and a collaborative prefix.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in _COMMAND_MODULES:
        if importlib.util.find_spec(name) is None:
            continue
        importlib.import_module(name).register(sub)
    return parser


# commands that write a run whose training resumes from its last checkpoint
_RESUMABLE = ("train", "pipeline", "quickstart")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    name = f"gramc {args.command}"
    try:
        rc = args.func(args)
        sys.stdout.flush()  # here, so that a closed pipe is caught below and not at exit
    except GramcError as e:  # the one exit path for every gramc error: no traceback
        print(f"{name}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        hint = ("; a training run resumes from its last checkpoint with `gramc train --resume RUN_FOLDER`, "
                "and `gramc pipeline` / `gramc quickstart` continue where they stopped when run again"
                if args.command in _RESUMABLE else "")
        print(f"\n{name}: interrupted (Ctrl-C){hint}", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`... | head -1`): stop quietly, as Unix tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so that flushing stdout at exit raises nothing more
        return 141
    except OSError as e:  # permission denied, disk full, read-only folder, ...
        where = f": {e.filename}" if e.filename else ""
        print(f"{name}: error: {e.strerror or e}{where} (nothing already written was removed; free the space "
              f"or fix the permissions, then run the command again)", file=sys.stderr)
        return 1
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
