"""`gramc data {prepare,subset,download,stats}`: build canonical datasets, derive subsets, fetch dumps, describe."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..cliargs import add_config_args, config_from_args
from ..lock import output_lock
from .dataset import DataError, SeqDataset
from .readers import ITEM_FORMATS, SEQUENCE_FORMATS

# Each command imports the code it runs inside its own function, not here, for start-up time:
# `gramc --help` and argument errors then load neither torch nor the other stages.


def _prepare(args: argparse.Namespace) -> int:
    from .prepare import prepare, prepare_synthetic

    cfg = config_from_args(args)
    if args.synthetic and (args.sequences or args.items):
        raise DataError("--synthetic takes no --sequences/--items (settings come from data.synthetic.*)")
    if not args.synthetic and not args.sequences:
        raise DataError("give --sequences FILE (and usually --items FILE), or --synthetic")
    with output_lock(args.out, "--out"):  # one writer per output folder
        if args.synthetic:
            ds = prepare_synthetic(args.out, cfg)
        else:
            ds = prepare(args.sequences, args.items, args.out, cfg, args.format, args.item_format)
    dropped = {k: v for k, v in ds.meta.get("dropped", {}).items() if not k.endswith("_examples")}
    print(f"wrote {args.out}: {ds.num_users:,} users, {ds.num_items:,} items, "
          f"{ds.num_interactions:,} interactions; dropped: {json.dumps(dropped)}")
    return 0


def _subset(args: argparse.Namespace) -> int:
    from .stats import dataset_stats, format_stats
    from .subset import SubsetSpec, write_subset

    cfg = config_from_args(args)
    spec = SubsetSpec(fraction=args.fraction or 0.0, users=args.users or 0,
                      seed=cfg.run.seed if args.seed is None else args.seed, kcore=args.kcore)
    with output_lock(args.out, "--out"):  # one writer per output folder
        ds = write_subset(args.data, args.out, spec, cfg)
    sub = ds.meta["subset"]
    print(f"wrote {args.out}: {ds.num_users:,} of {sub['parent']['users']:,} users (seed {spec.seed}), "
          f"{ds.num_items:,} of {sub['parent']['items']:,} items, {ds.num_interactions:,} interactions; "
          f"fingerprint {sub['fingerprint'][:16]} (parent {sub['parent']['fingerprint'][:16]})")
    if "kcore" in ds.meta["dropped"]:
        print(f"k-core: {json.dumps(ds.meta['dropped']['kcore'])}")
    print(format_stats(dataset_stats(ds, max_his=cfg.data.max_his)))
    return 0


def _download(args: argparse.Namespace) -> int:
    from .download import (AMAZON_2014_BASE_URL, amazon_2014_files, download_files, parse_sha256_args,
                           read_sha256_file)

    sums = read_sha256_file(args.sha256_file) if args.sha256_file else {}
    sums.update(parse_sha256_args(args.sha256 or []))
    names = amazon_2014_files(args.category)
    results = download_files(args.base_url or AMAZON_2014_BASE_URL, names, args.out, sums)
    for r in results:
        state = "verified" if r.verified else "sha256 recorded (no expected sum given)"
        print(f"{r.name}: {r.bytes:,} bytes, sha256 {r.sha256} ({state})")
    print(f"manifest: {Path(args.out) / 'manifest.json'}")
    print(f"next: gramc data prepare --sequences {Path(args.out) / names[0]} "
          f"--items {Path(args.out) / names[1]} --out DIR")
    return 0


def _stats(args: argparse.Namespace) -> int:
    from .stats import dataset_stats, format_stats, plot_lengths

    cfg = config_from_args(args)
    ds = SeqDataset.load(args.dir)
    st = dataset_stats(ds, max_his=cfg.data.max_his, top_k=args.top)
    if args.json:
        print(json.dumps(st.to_dict(), indent=2))
    else:
        print(format_stats(st))
    if args.plot:
        plot_lengths(st, args.plot)
        if not args.json:
            print(f"length histogram: {args.plot}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("data", help="prepare, download and describe datasets",
                              description="Build canonical datasets from public formats, fetch the "
                                          "Amazon 2014 dumps, and print dataset statistics.")
    sub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    sub.required = True

    pp = sub.add_parser(
        "prepare", help="read one sequence source + one item source into a canonical dataset folder",
        description="Write DIR/{items.jsonl,sequences.txt,dataset.json,config.yaml,run_info.json} "
                    "atomically. Sequence formats: " + ", ".join(SEQUENCE_FORMATS) +
                    "; item formats: " + ", ".join(ITEM_FORMATS) + " (detected from extension/content). "
                    "See docs/data.md.")
    pp.add_argument("--sequences", help="user_sequence.txt, RecBole .inter, or reviews_<Cat>_5.json.gz")
    pp.add_argument("--items", help="item_plain_text.txt, RecBole .item, or meta_<Cat>.json.gz")
    pp.add_argument("--synthetic", action="store_true", help="write the synthetic dataset (data.synthetic.*)")
    pp.add_argument("--format", default="auto", choices=("auto",) + SEQUENCE_FORMATS,
                    help="force the sequence format")
    pp.add_argument("--item-format", default="auto", choices=("auto",) + ITEM_FORMATS,
                    help="force the item format")
    pp.add_argument("--out", required=True, help="output folder: new, empty or a gramc dataset (replaced atomically)")
    add_config_args(pp)
    pp.set_defaults(func=_prepare)

    pb = sub.add_parser(
        "subset", help="derive a smaller dataset from a prepared one (seeded users, full sequences)",
        description="Draw a seeded sample of the users of a prepared folder (their full sequences), "
                    "re-index items to those they touch, optionally re-filter to a k-core, and write OUT in "
                    "the same layout atomically; dataset.json records the parent's fingerprint, the "
                    "subset's and the sampling parameters. See docs/data.md.")
    pb.add_argument("--data", required=True, help="prepared dataset folder (from `gramc data prepare`)")
    pb.add_argument("--out", required=True, help="output folder (replaced atomically; not the parent)")
    how = pb.add_mutually_exclusive_group(required=True)
    how.add_argument("--fraction", type=float, help="share of the users to keep, in (0, 1]")
    how.add_argument("--users", type=int, help="number of users to keep")
    pb.add_argument("--seed", type=int, default=None, help="sampling seed (default: run.seed of the config)")
    pb.add_argument("--kcore", type=int, default=0, help="re-filter the sample to a k-core (>= 3; 0 = off)")
    add_config_args(pb)
    pb.set_defaults(func=_subset)

    pd = sub.add_parser(
        "download", help="fetch public dataset dumps (resumable, checksum-verified)",
        description="Download reviews_<Category>_5.json.gz and meta_<Category>.json.gz of the Amazon "
                    "2014 release into OUT, resuming partial downloads, and write OUT/manifest.json.")
    pd.add_argument("dataset", choices=["amazon-2014"], help="which release")
    pd.add_argument("--category", required=True, help="e.g. Beauty, Sports_and_Outdoors, Toys_and_Games")
    pd.add_argument("--out", required=True, help="download folder")
    pd.add_argument("--base-url", default="", help="mirror URL (default: the 2014 release's)")
    pd.add_argument("--sha256", action="append", metavar="NAME=HEX", help="expected sum of a file (repeatable)")
    pd.add_argument("--sha256-file", help="sha256sum-style file of expected sums")
    pd.set_defaults(func=_download)

    ps = sub.add_parser("stats", help="users, items, lengths, split sizes and top items of a prepared dataset",
                        description="Statistics of a folder written by `gramc data prepare` "
                                    "(split sample counts use data.max_his).")
    ps.add_argument("dir", help="prepared dataset folder")
    ps.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ps.add_argument("--plot", help="write a PNG histogram of sequence lengths here")
    ps.add_argument("--top", type=int, default=10, help="how many most frequent items to list")
    add_config_args(ps)
    ps.set_defaults(func=_stats)
