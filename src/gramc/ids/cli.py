"""`gramc ids {check,build}`: validate a GRAM item-ID file, or build hierarchical textual IDs."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..cliargs import add_config_args, config_from_args
from ..config import Config
from ..data.dataset import DataError, SeqDataset
from ..lock import output_lock

# Each command imports the code it runs inside its own function, not here, for start-up time:
# `gramc --help` and argument errors then load neither torch nor the other stages.


def _dataset(args: argparse.Namespace, cfg: Config) -> tuple[SeqDataset, dict[str, Path]]:
    """`--data DIR` (a prepared folder), else data.path / the synthetic dataset of the config."""
    from ..data.source import load_dataset

    if args.data:
        folder = Path(args.data)
        if not folder.is_dir():
            raise DataError(f"--data '{folder}' is not a folder (expected a prepared dataset from "
                            f"`gramc data prepare`)")
        return SeqDataset.load(folder), {"data": folder}
    ds = load_dataset(cfg.data)
    return ds, ({"data": Path(cfg.data.path)} if cfg.data.path else {})


def _check(args: argparse.Namespace) -> int:
    from ..checks import Report
    from .itemids import check_ids
    from .tokenizer import load_tokenizer

    cfg = config_from_args(args)
    ids_file = args.ids or cfg.ids.file
    if not ids_file:
        raise DataError("give --ids FILE (or ids.file=FILE)")
    spec = args.tokenizer or cfg.ids.tokenizer
    if spec == "train":
        raise DataError("--tokenizer must name the tokenizer the IDs were made with (a folder or hub "
                        "name), not 'train'")
    ds, _ = _dataset(args, cfg)
    tok = load_tokenizer(spec)
    report = Report(check_ids(ids_file, ds, tok))
    print(report.to_json() if args.json else report.table())
    return report.exit_code


def _build(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    if args.tokenizer:
        cfg.ids.tokenizer = args.tokenizer
    out = Path(args.out)
    with output_lock(out, "--out"):  # one writer per ID file (and its tokenizer folder beside it)
        return _build_into(args, cfg, out)


def _build_into(args: argparse.Namespace, cfg: Config, out: Path) -> int:
    """Build the item IDs (and a tokenizer, if asked) and write them to `out`; the report's exit code."""
    from ..data.text import item_texts
    from ..io import claim_file, claim_output, keep_file
    from .build import build_ids, save_built_ids
    from .tokenizer import resolve_tokenizer

    ds, inputs = _dataset(args, cfg)
    given = [*inputs.values(), cfg.ids.embedding_file, cfg.ids.tokenizer if Path(cfg.ids.tokenizer).exists() else None]
    claim_file(out, given, what="--out")
    texts = item_texts(ds, cfg.data)
    t0 = time.perf_counter()
    tok_dir = out.with_name(out.name + ".tokenizer")
    if cfg.ids.tokenizer == "train":
        claim_output(tok_dir, "tokenizer", given, what="tokenizer folder")
    elif Path(cfg.ids.tokenizer).exists():
        inputs["tokenizer"] = Path(cfg.ids.tokenizer)
    tok = resolve_tokenizer(cfg.ids.tokenizer, tok_dir, texts, cfg.ids.vocab_size, reuse=False)
    if cfg.ids.tokenizer == "train":
        print(f"trained tokenizer ({tok.vocab_size} pieces): {tok_dir}")
    if cfg.ids.embedding == "npy" and cfg.ids.embedding_file:
        inputs["embeddings"] = Path(cfg.ids.embedding_file)
    ids = build_ids(ds, texts, tok, cfg.ids, progress=not args.quiet)
    seconds = time.perf_counter() - t0
    with keep_file(out, "--out"):  # an earlier ID table with other IDs (runs are bound to it) is kept aside
        report, paths = save_built_ids(ids, ds, tok, cfg, out, inputs,
                                       extra={"build_seconds": round(seconds, 2)})
    print(report.table())
    print(f"{ids.meta['dedup_items']:,} items needed a de-duplication level; mean levels "
          f"{ids.meta['mean_levels']}")
    print(f"wrote {paths.ids} ({ids.num_items:,} items, {seconds:.1f} s); report {paths.stats}; "
          f"provenance {paths.run_info}; plot {paths.plot}")
    return report.exit_code


def register(subparsers) -> None:
    p = subparsers.add_parser("ids", help="check or build textual item IDs",
                              description="Validate a GRAM-format item-ID file (`ASIN |tok|tok|...`) "
                                          "against a dataset and tokenizer, or build hierarchical "
                                          "textual IDs from item texts (see docs/architecture.md).")
    sub = p.add_subparsers(dest="ids_command", metavar="SUBCOMMAND")
    sub.required = True

    c = sub.add_parser("check", help="validate an ID file; exit 1 on any violation, 2 on unusable arguments",
                       description="Every level one vocabulary piece, every item an ID, no two IDs alike "
                                   "(also after decoding); prints levels, items per level-1 token, "
                                   "branching per level.")
    c.add_argument("--data", help="prepared dataset folder (default: data.path or the synthetic dataset)")
    c.add_argument("--ids", help="GRAM-format ID file (default: ids.file)")
    c.add_argument("--tokenizer", help="tokenizer folder or hub name the IDs use (default: ids.tokenizer)")
    c.add_argument("--json", action="store_true", help="print the report as JSON")
    add_config_args(c)
    c.set_defaults(func=_check)

    b = sub.add_parser("build", help="build hierarchical textual IDs from item texts",
                       description="Embed item texts (ids.embedding=tfidf|minilm|npy), cluster them "
                                   "hierarchically (ids.clusters, ids.levels, ids.seed), label every "
                                   "node with a TF-IDF vocabulary piece, de-duplicate. Writes OUT, "
                                   "OUT.stats.json, OUT.run_info.json, OUT.png (and OUT.tokenizer/ "
                                   "with --tokenizer train).")
    b.add_argument("--data", help="prepared dataset folder (default: data.path or the synthetic dataset)")
    b.add_argument("--tokenizer", help="tokenizer folder / hub name, or 'train' (default: ids.tokenizer)")
    b.add_argument("--out", required=True, help="output ID file (GRAM format)")
    b.add_argument("--quiet", action="store_true", help="no progress bars")
    add_config_args(b)
    b.set_defaults(func=_build)
