"""`gramc recommend`: top-k next items for a history of item IDs, from a trained run.

    gramc recommend --run RUN_DIR --history ASIN1,ASIN2,... [--k 10] [--checkpoint best|last|PATH]
                    [--json] [eval.unknown_history=skip ...]

The history is oldest first. Prints rank, item ID, score and title (or a JSON list with --json).
Unknown item IDs are an error naming them (exit 2) unless eval.unknown_history=skip.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from ..cliargs import add_run_args

# Each command imports the code it runs inside its own function, not here, for start-up time:
# `gramc --help` and argument errors then load neither torch nor the other stages.


def _recommend(args: argparse.Namespace) -> int:
    from ..errors import GramcError
    from .recommend import Recommender

    history = [a.strip() for a in args.history.split(",") if a.strip()]
    if not history:
        raise GramcError("--history needs at least one item ID (comma-separated)")
    if args.k < 1:
        raise GramcError(f"--k must be >= 1 (how many items to recommend), got {args.k}")
    # any GramcError (no run, other assets, unknown items) is printed by gramc.cli.main
    rec = Recommender.from_run(args.run, args.checkpoint, list(args.overrides or []))
    recs = rec.recommend(history, k=args.k)
    if args.json:
        print(json.dumps([asdict(r) for r in recs], indent=2))
    else:
        print(f"{'rank':>4}  {'item':<14} {'score':>9}  title")
        for n, r in enumerate(recs, 1):
            print(f"{n:>4}  {r.item_id:<14} {r.score:>9.4f}  {r.title[:80]}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("recommend", help="top-k next items for a history of item IDs",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_args(p, "eval.unknown_history=skip")
    p.add_argument("--history", required=True, help="item IDs, oldest first, comma-separated")
    p.add_argument("--k", type=int, default=10, help="number of recommendations")
    p.add_argument("--json", action="store_true", help="print a JSON list of {item_id, score, title}")
    p.set_defaults(func=_recommend)
