"""`check_gcn`: every check of the GCN mapping and item table, on all items, with its figure.

Groups (check names start with them):
  gcn.files        the folder loads (embeddings tensor, mapping JSON object, meta JSON)
  gcn.mapping.*    entries, key format, index range, contiguity, duplicates, lookup success
  gcn.embeddings.* shape, dtype, row 0, norms, value statistics, NaN/Inf rows, zero rows,
                   rows vs the mapping's largest index
  gcn.consistency  the most frequent items of the dataset: count, row and norm
  gcn.leakage.*    which interactions the table (and similar items) saw, per gcn_meta.json and
                   by recomputing the fingerprint of the training pairs from the dataset

Each failed check says what is wrong and what to do. Checks measure one thing each, so a fault
fails only the checks it concerns (e.g. a NaN row fails `nan_inf_rows`, not `norms`).
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from ..checks import Check, check, failed, passed, warned
from ..data.dataset import DataError, SeqDataset
from ..data.splits import training_sequences
from ..io import sha256_file
from .artifacts import META_FILE, SIMILAR_FILE, GcnArtifacts
from .lightgcn import pairs_fingerprint

NORM_TOL = 1e-5
TOP_ITEMS = 3
_ASIN = re.compile(r"^[A-Z0-9]{10}$")


def check_gcn(ds: SeqDataset, gcn_dir: str | Path) -> list[Check]:
    """All GCN checks for dataset `ds` and the GCN folder `gcn_dir` (see module docstring)."""
    try:
        art = GcnArtifacts.load(gcn_dir)
    except DataError as e:
        return [failed("gcn.files", str(gcn_dir), f"{e}. Re-run `gramc gcn train` to rebuild the folder.")]
    out = [passed("gcn.files", str(gcn_dir), "")]
    out += mapping_checks(ds, art)
    out += embedding_checks(ds, art)
    out.append(consistency_check(ds, art))
    out += leakage_checks(ds, art)
    return out


# --------------------------------------------------------------------------------------------
# mapping
# --------------------------------------------------------------------------------------------


def _id_format(ids: list[str]) -> str:
    if ids and all(_ASIN.match(a) for a in ids):
        return "ASIN/ISBN (10 upper-case letters or digits)"
    return "the dataset's own item IDs"


def _describe_key(key: str) -> str:
    if re.fullmatch(r"\d+", key):
        return "a numeric string (an index, not an item ID?)"
    if " " in key.strip() or len(key) > 40:
        return "looks like item text (title?), not an item ID"
    if _ASIN.match(key.upper()) and key != key.upper():
        return "an ASIN in the wrong case"
    return "not an item ID of the dataset"


def mapping_checks(ds: SeqDataset, art: GcnArtifacts) -> list[Check]:
    m = art.mapping
    n = ds.num_items
    out: list[Check] = []
    out.append(check("gcn.mapping.entries", len(m) == n, {"entries": len(m), "dataset_items": n},
                     f"the mapping has {len(m)} entries but the dataset has {n} items; rebuild the GCN "
                     f"folder from this dataset (`gramc gcn train --data ...`)"))

    bad_keys = [k for k in m if not ds.has_item(k)]
    fmt = _id_format(ds.item_ids)
    value: dict[str, Any] = {"keys_that_are_item_ids": len(m) - len(bad_keys), "keys": len(m), "format": fmt}
    if bad_keys:
        value["example_bad_key"] = bad_keys[0][:60]
    out.append(check("gcn.mapping.key_format", not bad_keys and len(m) > 0, value,
                     (f"{len(bad_keys)} of {len(m)} keys are not item IDs of the dataset, e.g. "
                      f"{bad_keys[0][:60]!r} ({_describe_key(bad_keys[0])}); keys must be item IDs "
                      f"in the format {fmt}, e.g. {ds.item_ids[0]!r}. Rewrite the mapping keyed by item ID."
                      if bad_keys else "the mapping is empty; rebuild it with `gramc gcn train`")))

    vals = list(m.values())
    ints = [v for v in vals if isinstance(v, int) and not isinstance(v, bool)]
    non_int = len(vals) - len(ints)
    lo, hi = (min(ints), max(ints)) if ints else (None, None)
    in_range = sum(1 <= v <= n for v in ints)
    out.append(check("gcn.mapping.index_range", non_int == 0 and in_range == len(vals) and len(vals) > 0,
                     {"min": lo, "max": hi, "expected": [1, n], "non_integer": non_int},
                     f"indices must be integers 1..{n} (0 is padding); found min {lo}, max {hi}"
                     f"{f', {non_int} non-integer values' if non_int else ''}"
                     + (". A 0-based mapping (off by one) reads every item's neighbour row: add 1 to "
                        "every index" if lo == 0 and hi == n - 1 else ". Rebuild the mapping.")))

    uniq = sorted(set(ints))
    gaps = (uniq[-1] - uniq[0] + 1 - len(uniq)) if uniq else 0
    out.append(check("gcn.mapping.contiguous", gaps == 0 and bool(uniq),
                     {"distinct_indices": len(uniq), "span": [uniq[0], uniq[-1]] if uniq else None, "gaps": gaps},
                     f"the indices leave {gaps} gaps between {uniq[0] if uniq else None} and "
                     f"{uniq[-1] if uniq else None}: rows in the gaps are never read, other items are "
                     f"probably missing; rebuild the mapping"))

    counts = Counter(ints)
    shared = {v: c for v, c in counts.items() if c > 1}
    example = ""
    if shared:
        v = next(iter(shared))
        example = f", e.g. row {v} is used by {[k for k, x in m.items() if x == v][:3]}"
    out.append(check("gcn.mapping.duplicates", not shared and not art.duplicate_keys,
                     {"shared_indices": len(shared), "repeated_keys": len(art.duplicate_keys)},
                     f"{len(shared)} rows are shared by several items{example}"
                     f"{f'; {len(art.duplicate_keys)} keys appear twice in the JSON file' if art.duplicate_keys else ''}"
                     f". Each item needs its own row: rebuild the mapping"))

    used = sorted({i for s in ds.sequences for i in s})
    found = sum(ds.item_ids[i] in m for i in used)
    rate = found / len(used) if used else 1.0
    missing = [ds.item_ids[i] for i in used if ds.item_ids[i] not in m]
    out.append(check("gcn.mapping.lookup", found == len(used),
                     {"found": found, "items_in_sequences": len(used), "rate": round(rate, 6)},
                     f"{len(missing)} items of the dataset's sequences have no entry "
                     f"(e.g. {missing[0]!r}); their prefix rows would be padding (all zeros). "
                     f"Rebuild the GCN folder from this dataset" if missing else ""))
    return out


# --------------------------------------------------------------------------------------------
# embeddings
# --------------------------------------------------------------------------------------------


def embedding_checks(ds: SeqDataset, art: GcnArtifacts) -> list[Check]:
    e = art.embeddings
    n = ds.num_items
    dim = art.meta.get("hyper_parameters", {}).get("dim")
    out: list[Check] = []
    shape_ok = e.dim() == 2 and e.shape[0] == n + 1 and (dim is None or e.shape[1] == dim)
    out.append(check("gcn.embeddings.shape", shape_ok,
                     {"shape": list(e.shape), "expected": [n + 1, dim if dim is not None else "dim"]},
                     f"expected [{n + 1}, {dim or 'dim'}] (num_items + 1 rows, row 0 = padding), got "
                     f"{list(e.shape)}; rebuild the table from this dataset"))
    out.append(check("gcn.embeddings.dtype", e.dtype == torch.float32, str(e.dtype).replace("torch.", ""),
                     f"expected float32, got {e.dtype}; convert with `.float()` before saving"))
    if e.dim() != 2 or e.shape[0] < 1 or not (e.is_floating_point()):
        out.append(failed("gcn.embeddings.values", list(e.shape),
                          "the table is not a 2-D floating-point tensor; no further checks possible"))
        return out

    x = e.detach().to(torch.float64)
    row0 = float(x[0].abs().max()) if x.shape[1] else 0.0
    out.append(check("gcn.embeddings.row0_zero", row0 == 0.0, {"max_abs_row0": row0},
                     "row 0 is padding and must be all zeros (the prefix reads it for missing items); "
                     "zero it and shift real items to rows 1..n"))

    rest = x[1:]
    finite = torch.isfinite(rest).all(dim=1)
    norms = rest.norm(dim=1)
    nonzero = norms > 0
    ok_rows = finite & nonzero
    nrm = norms[ok_rows]
    if len(nrm):
        dev = (nrm - 1.0).abs()
        worst = int(torch.nonzero(ok_rows).squeeze(1)[int(dev.argmax())]) + 1
        fig = {"min": float(nrm.min()), "mean": float(nrm.mean()), "max": float(nrm.max()),
               "rows_off": int((dev > NORM_TOL).sum())}
        out.append(check("gcn.embeddings.norms", bool((dev <= NORM_TOL).all()), fig,
                         f"{fig['rows_off']} rows are not L2-normalised (|norm - 1| > {NORM_TOL}), worst row "
                         f"{worst} with norm {float(norms[worst - 1]):.6g}; normalise every row but row 0"))
        vals = rest[ok_rows]
        mean, std = float(vals.mean()), float(vals.std())
        expect = 1.0 / x.shape[1] ** 0.5  # std of unit vectors with centred coordinates
        level_ok = abs(mean) < 0.5 * expect and std > 0.2 * expect
        stats = {"mean": round(mean, 6), "std": round(std, 6), "unit_vector_std": round(expect, 6)}
        out.append(passed("gcn.embeddings.stats", stats) if level_ok else
                   warned("gcn.embeddings.stats", stats,
                          "values are far from centred unit vectors (large mean or tiny std): the embeddings "
                          "may have collapsed; check the LightGCN training curve (gcn_training.png)"))
    else:
        out.append(failed("gcn.embeddings.norms", None, "no finite non-zero rows to measure"))
        out.append(failed("gcn.embeddings.stats", None, "no finite non-zero rows to measure"))

    bad = (~finite).nonzero().squeeze(1) + 1
    out.append(check("gcn.embeddings.nan_inf_rows", len(bad) == 0, {"rows": int(len(bad)),
                     "first": bad[:5].tolist()},
                     f"{len(bad)} rows hold NaN/Inf (first: {bad[:5].tolist()}); the prefix would turn NaN; "
                     f"retrain (lower gcn.lr) or repair those rows"))
    zero = ((~nonzero) & finite).nonzero().squeeze(1) + 1
    out.append(check("gcn.embeddings.zero_rows", len(zero) == 0, {"rows": int(len(zero)),
                     "first": zero[:5].tolist()},
                     f"{len(zero)} item rows are all zeros (first: {zero[:5].tolist()}); those items get an "
                     f"empty prefix; retrain or fill them"))

    ints = [v for v in art.mapping.values() if isinstance(v, int) and not isinstance(v, bool)]
    hi = max(ints) if ints else None
    out.append(check("gcn.embeddings.rows_vs_max_index", hi is not None and hi < x.shape[0],
                     {"rows": int(x.shape[0]), "max_index": hi},
                     f"the mapping points to row {hi} but the table has only {x.shape[0]} rows "
                     f"(0..{x.shape[0] - 1}); the lookup would fail or wrap; rebuild table and mapping together"))
    return out


# --------------------------------------------------------------------------------------------
# consistency and leakage
# --------------------------------------------------------------------------------------------


def consistency_check(ds: SeqDataset, art: GcnArtifacts) -> Check:
    """The most frequent items (whole sequences): count, mapped row, norm of that row."""
    counts = Counter(i for s in ds.sequences for i in s)
    top = sorted(counts.items(), key=lambda t: (-t[1], t[0]))[:TOP_ITEMS]
    rows, problems = [], []
    e = art.embeddings
    for i, c in top:
        a = ds.item_ids[i]
        r = art.row_of(a)
        norm = None
        if r and e.dim() == 2:
            norm = float(e[r].double().norm())
        rows.append({"item": a, "count": c, "index": art.mapping.get(a), "norm": norm})
        if r == 0:
            problems.append(f"{a} has no usable row")
        elif norm is None or not abs(norm - 1.0) <= NORM_TOL:
            problems.append(f"{a} (row {r}) has norm {norm}")
    return check("gcn.consistency.top_items", not problems, rows,
                 "the most frequent items, whose prefix matters most, are not usable: " + "; ".join(problems))


def leakage_checks(ds: SeqDataset, art: GcnArtifacts) -> list[Check]:
    meta = art.meta
    inter = meta.get("interactions") if isinstance(meta.get("interactions"), dict) else None
    out: list[Check] = []
    if inter is None:
        out.append(warned("gcn.leakage.interactions", None,
                          f"no {META_FILE} with the interactions used: cannot tell whether the table saw "
                          f"validation/test interactions; prefer a table built by `gramc gcn train`"))
        out.append(warned("gcn.leakage.fingerprint", None, f"no fingerprint in {META_FILE} to compare"))
    else:
        split = inter.get("split")
        out.append(check("gcn.leakage.interactions", split == "train", {"split": split, "count": inter.get("count")},
                         f"the table was trained on '{split}' interactions, which include validation/test "
                         f"targets: validation and test numbers of any model reading it are inflated. "
                         f"Retrain with gcn.interactions=train"))
        expected = pairs_fingerprint(ds, training_sequences(ds))
        got = inter.get("sha256")
        out.append(check("gcn.leakage.fingerprint", got == expected,
                         {"meta": (got or "")[:16], "training_pairs": expected[:16]},
                         "the interactions recorded in the metadata are not this dataset's training pairs "
                         "(each user's s[:-2]): the table was trained on other data or on more than the "
                         "training part; retrain it from this dataset with gcn.interactions=train"))
    sim_path = art.folder / SIMILAR_FILE
    sim_meta = meta.get("similar_items") if isinstance(meta.get("similar_items"), dict) else None
    if not sim_path.is_file():
        out.append(passed("gcn.leakage.similar_items", "absent", "no similar_items.txt in the folder"))
    elif sim_meta is None or sim_meta.get("sha256") != sha256_file(sim_path):
        out.append(warned("gcn.leakage.similar_items", "unknown provenance",
                          f"{SIMILAR_FILE} was not written by the training run recorded in {META_FILE}; "
                          f"it may have seen validation/test interactions; rebuild it with `gramc gcn train`"))
    else:
        split = inter.get("split") if inter else None
        out.append(check("gcn.leakage.similar_items", split == "train", {"from_split": split},
                         f"similar items were computed from embeddings trained on '{split}' interactions, "
                         f"which include validation/test targets; retrain with gcn.interactions=train"))
    return out
