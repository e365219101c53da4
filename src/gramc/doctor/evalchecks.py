"""`gramc doctor eval`: can the evaluation be trusted before it runs?

* `eval.id_collisions`: no two items share a token sequence, and no two IDs decode to the same
  string after the normalisation a string-matching evaluation applies (GRAM compares decoded
  strings; gramc's evaluator compares item identities through the trie, but `gramc recommend`
  and any string comparison would still confuse such items).
* `eval.beams_vs_ks`: the beam returns at least as many items as the largest cut-off.
* `eval.trie_items`: the trie holds every item, and each item's sequence maps back to it.
* `eval.sharding`: a distributed evaluation counts every user exactly once (the evaluator's own
  sharding and merge, for world sizes 2..4; GRAM's padded sampler counted some twice).
* `eval.metrics_reference`: hit/ndcg/mrr from `gramc.metrics` agree with an independent
  computation (scikit-learn's ndcg_score, explicit loops) on a fixed example.
* `eval.checkpoint_assets.{best,last}`: the run folder's checkpoints were trained with the
  dataset, tokenizer, IDs, GCN and passage cache the config resolves to now (their assets.json).
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from .. import runtime
from ..checkpoint import verify_assets
from ..checks import Check, check, failed, passed, warned
from ..config import Config
from ..errors import AssetMismatchError
from ..eval.evaluate import EvalError, merge_shards
from ..ids.trie import trie_for
from ..metrics import summarize as gramc_summarize

Shard = Callable[[list, int, int], list]


def normalise_id_string(text: str) -> str:
    """What a string-matching evaluation compares: the decoded ID without separators or spacing."""
    return "".join(text.replace("|", " ").split()).lower()


def collision_checks(item_ids: Any, tokenizer: Any) -> list[Check]:
    """Token-sequence duplicates and decoded-string collisions of an `ItemIds` table."""
    by_seq: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for i, t in enumerate(item_ids.tokens):
        by_seq[tuple(t)].append(i)
    dup = [m for m in by_seq.values() if len(m) > 1]
    names = item_ids.item_ids
    out = [check("eval.id_token_collisions", not dup, {"items": len(item_ids.tokens), "shared_sequences": len(dup)},
                 f"{len(dup)} token sequences are shared by several items, e.g. "
                 f"{[names[i] for i in dup[0]] if dup else []}: the beam cannot tell them apart; add a "
                 f"de-duplication level (`gramc ids build` does)")]
    decoded = tokenizer.decode_batch([list(t) for t in item_ids.tokens])
    by_text: dict[str, list[int]] = defaultdict(list)
    for i, text in enumerate(decoded):
        by_text[normalise_id_string(text)].append(i)
    coll = [m for m in by_text.values() if len(m) > 1 and len({tuple(item_ids.tokens[i]) for i in m}) > 1]
    example = ""
    if coll:
        m = coll[0]
        example = "; ".join(f"{names[i]} {item_ids.id_string(i)}" for i in m[:3])
    out.append(check("eval.id_string_collisions", not coll, {"colliding_strings": len(coll),
                                                             "items": sum(len(m) for m in coll)},
                     f"{len(coll)} decoded ID strings are shared by items with different tokens ({example} "
                     f"decode to {normalise_id_string(decoded[coll[0][0]]) if coll else ''!r}): gramc's "
                     f"evaluator compares items, not strings, but a string-matching evaluation (GRAM's) "
                     f"would count these as one another's hits and `gramc recommend` prints them alike; "
                     f"rebuild the IDs so decoded strings are unique"))
    return out


def beams_check(cfg: Config) -> Check:
    max_k = max(cfg.eval.ks)
    return check("eval.beams_vs_ks", cfg.eval.beams >= max_k, {"beams": cfg.eval.beams, "largest_k": max_k},
                 f"eval.beams={cfg.eval.beams} returns fewer items than the largest cut-off {max_k}: hit@{max_k} "
                 f"is capped at what {cfg.eval.beams} beams find; set eval.beams >= {max_k}")


def walk_items(trie: Any, targets: Sequence[Sequence[int]]) -> torch.Tensor:
    """Item reached by each target sequence in `trie` (-1 when it leaves the trie or ends inside),
    all sequences at once: one gather of the child tables per depth."""
    width = max((len(t) for t in targets), default=0)
    seqs = torch.full((len(targets), width), -1, dtype=torch.long)
    for i, t in enumerate(targets):
        seqs[i, : len(t)] = torch.tensor(list(t), dtype=torch.long)
    node = torch.zeros(len(targets), dtype=torch.long)
    alive = torch.ones(len(targets), dtype=torch.bool)
    for d in range(width):
        tok = seqs[:, d]
        step = tok >= 0
        hit = trie.child_tokens[node] == tok.unsqueeze(1)
        found = hit.any(1)
        nxt = trie.child_nodes[node, hit.to(torch.int8).argmax(1)]
        alive &= ~step | found
        node = torch.where(step & alive, nxt, node)
    return torch.where(alive, trie.item_at_leaf[node], torch.full_like(node, -1))


def trie_check(item_ids: Any) -> Check:
    """Every item's target is a leaf of the evaluator's trie that maps back to that item."""
    try:
        trie = trie_for(item_ids)
    except ValueError as e:
        return failed("eval.trie_items", None, f"the trie cannot be built: {e}")
    n = len(item_ids.tokens)
    reached = walk_items(trie.to("cpu"), [tuple(item_ids.target(i)) for i in range(n)])
    wrong = torch.nonzero(reached != torch.arange(n)).squeeze(1).tolist()
    leaves = int((trie.item_at_leaf >= 0).sum())
    return check("eval.trie_items", not wrong and leaves == n,
                 {"items": n, "leaves": leaves, "unreachable": len(wrong)},
                 f"{len(wrong)} items cannot be generated or map to another item (e.g. item index "
                 f"{wrong[:5]}); the beam can never recommend them. Rebuild the IDs")


def sharding_check(num_users: int, worlds: Sequence[int] = (2, 3, 4), shard: Shard | None = None) -> Check:
    """Shard the user list as the evaluator does and check every user is counted exactly once."""
    shard = shard or runtime.shard
    users = list(range(num_users))
    problems = []
    for w in worlds:
        parts = [shard(users, r, w) for r in range(w)]
        flat = [u for p in parts for u in p]
        counts = np.bincount(np.asarray(flat, dtype=np.int64), minlength=num_users) if flat else np.zeros(num_users)
        dup, missing = int((counts > 1).sum()), int((counts == 0).sum())
        if dup or missing or len(flat) != num_users:
            problems.append(f"world {w}: {len(flat)} evaluations for {num_users} users ({dup} counted twice, "
                            f"{missing} missing)")
            continue
        try:  # the evaluator's merge must accept the shards
            merge_shards([{"index": np.asarray(p, dtype=np.int64)} for p in parts], num_users)
        except EvalError as e:
            problems.append(f"world {w}: {e}")
    return check("eval.sharding", not problems, {"users": num_users, "worlds": list(worlds)},
                 "distributed evaluation does not count every user exactly once (" + "; ".join(problems) +
                 "): metrics averaged over padded or missing users are biased; shard users as rank::world "
                 "without padding")


# the fixed example: 0-based ranks (-1 = not found) of six users' targets
_RANKS = np.array([0, 1, 4, 9, 30, -1])
_KS = (1, 5, 10, 20, 50)


def _reference_metrics(ranks: np.ndarray, ks: Sequence[int], n_items: int = 64) -> dict[str, float]:
    """Independent computation: scikit-learn ndcg_score on score lists, hits and MRR by loops."""
    from sklearn.metrics import ndcg_score

    out: dict[str, float] = {}
    rel = np.zeros((len(ranks), n_items))
    scores = np.tile(np.arange(n_items, 0, -1, dtype=float), (len(ranks), 1))  # item j at position j
    for u, r in enumerate(ranks):
        rel[u, r if r >= 0 else n_items - 1] = 1.0 if r >= 0 else 0.0
    for k in ks:
        out[f"hit@{k}"] = sum(1.0 for r in ranks if 0 <= r < k) / len(ranks)
        per = [ndcg_score(rel[u:u + 1], scores[u:u + 1], k=k) if ranks[u] >= 0 else 0.0 for u in range(len(ranks))]
        out[f"ndcg@{k}"] = float(np.mean(per))
    out["mrr"] = sum(1.0 / (r + 1) for r in ranks if r >= 0) / len(ranks)
    return out


def metrics_check(summarize: Callable[[np.ndarray, Sequence[int]], dict[str, float]] | None = None) -> Check:
    """gramc's metrics (or `summarize`) vs the reference computation on the fixed example."""
    summarize = summarize or gramc_summarize
    got = summarize(_RANKS, _KS)
    want = _reference_metrics(_RANKS, _KS)
    worst = max(abs(float(got.get(k, math.nan)) - v) if k in got else math.inf for k, v in want.items())
    bad = [k for k, v in want.items() if not (k in got and abs(float(got[k]) - v) <= 1e-9)]
    return check("eval.metrics_reference", not bad, {"max_abs_diff": worst, "metrics": len(want)},
                 f"the metric implementation disagrees with the reference on {bad} (e.g. {bad[0] if bad else ''}: "
                 f"{got.get(bad[0]) if bad else ''} vs {want.get(bad[0]) if bad else ''}); fix gramc.metrics")


def eval_checks(cfg: Config, item_ids: Any, tokenizer: Any, num_users: int) -> list[Check]:
    """All evaluation checks for a config, its item IDs and a split of `num_users` users."""
    return [*collision_checks(item_ids, tokenizer), beams_check(cfg), trie_check(item_ids),
            sharding_check(num_users), metrics_check()]


def checkpoint_asset_checks(run_dir: str | Path, fingerprints: dict) -> list[Check]:
    """`eval.checkpoint_assets`: each checkpoint of the run folder was trained with these assets
    (its assets.json against `Assets.fingerprints()`)."""
    out: list[Check] = []
    for which in ("best", "last"):
        folder = Path(run_dir) / "checkpoints" / which
        if not (folder / "model.safetensors").is_file():
            continue
        name = f"eval.checkpoint_assets.{which}"
        try:
            warnings = verify_assets(folder, fingerprints)
        except AssetMismatchError as e:
            out.append(failed(name, str(folder), str(e)))
            continue
        out.append(warned(name, str(folder), warnings[0]) if warnings else
                   passed(name, str(folder), "trained with exactly these dataset, tokenizer, IDs, GCN and passages"))
    return out
