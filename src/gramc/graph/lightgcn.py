"""LightGCN (He et al., SIGIR 2020) on training interactions, and the GCN artefacts it writes.

Model: ego embeddings E0 for users and items; layers E_{l+1} = Â E_l with Â = D^-1/2 A D^-1/2 the
symmetric-normalised adjacency of the user-item bipartite graph (binary, duplicates collapsed);
no feature transforms, no nonlinearity; readout = mean of E_0..E_L. Trained with BPR (one
positive per sampled interaction, uniform negatives re-drawn while positive), L2 regularisation
of the batch's ego embeddings, Adam.

Interactions: each user's training part s[:-2] by default (`gcn.interactions=train`). Training on
more (`train+valid`, `all`) must be asked for and is recorded in gcn_meta.json, where the
`check_gcn` leakage checks find it.

Outputs (see `gramc.graph.artifacts` for the folder layout): the L2-normalised item table
(row = dataset item index + 1, row 0 = zeros), the mapping, similar items, the un-normalised
final user/item embeddings (`gcn_model.pt`, for `lightgcn_ranks`), gcn_meta.json, a training
curve plot, and run_info.json.
"""

from __future__ import annotations

import hashlib
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..config import Config, ConfigError, GcnConfig, check_problems, to_dict
from ..data.dataset import DataError, SeqDataset
from ..data.splits import MIN_LEN, Split, samples, training_sequences
from ..io import atomic_dir, atomic_path, claim_output, pyplot, sha256_file, torch_save, write_json
from ..metrics import place_among_ties, ranks_from_scores, summarize
from ..runinfo import write_run_info
from ..runtime import resolve_device
from .artifacts import EMBEDDINGS_FILE, MAPPING_FILE, META_FILE, MODEL_FILE, SIMILAR_FILE
from .similar import top_k_cosine, write_similar_items

PLOT_FILE = "gcn_training.png"
OWN_FILES = {EMBEDDINGS_FILE, MAPPING_FILE, SIMILAR_FILE, META_FILE, MODEL_FILE, PLOT_FILE, "config.yaml",
             "run_info.json"}
_INTERACTION_RULES = {"train": "each user's s[:-2]", "train+valid": "each user's s[:-1]",
                      "all": "each user's whole sequence s"}


# --------------------------------------------------------------------------------------------
# Interactions and the graph
# --------------------------------------------------------------------------------------------


def interaction_sequences(ds: SeqDataset, which: str = "train") -> list[list[int]]:
    """Per-user item indices LightGCN may learn from: train = s[:-2], train+valid = s[:-1], all = s."""
    if which == "train":
        return training_sequences(ds)
    if which == "train+valid":
        return [list(s[:-1]) for s in ds.sequences]
    if which == "all":
        return [list(s) for s in ds.sequences]
    raise ConfigError(f"config key 'gcn.interactions' must be train, train+valid or all, got {which!r}")


def interaction_pairs(seqs: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """(users, items) int64 arrays, one entry per interaction (repeats kept)."""
    lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
    users = np.repeat(np.arange(len(seqs), dtype=np.int64), lengths)
    items = np.fromiter((i for s in seqs for i in s), dtype=np.int64, count=int(lengths.sum()))
    return users, items


def pairs_fingerprint(ds: SeqDataset, seqs: list[list[int]]) -> str:
    """sha256 of the sorted `USER<TAB>ITEM` lines of the interactions (IDs, repeats kept).

    Uses IDs rather than indices, so it does not depend on how a dataset orders its items.
    """
    lines = sorted(f"{ds.users[u]}\t{ds.item_ids[i]}" for u, s in enumerate(seqs) for i in s)
    h = hashlib.sha256()
    for line in lines:
        h.update(line.encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


def normalized_adjacency(users: np.ndarray, items: np.ndarray, num_users: int,
                         num_items: int) -> sp.csr_matrix:
    """Â = D^-1/2 A D^-1/2 of the bipartite graph, nodes = users then items, float32 CSR.

    A is binary (repeated interactions count once); isolated nodes get zero rows.
    """
    r = sp.coo_matrix((np.ones(len(users), dtype=np.float32), (users, items)),
                      shape=(num_users, num_items)).tocsr()
    r.data[:] = 1.0  # duplicates were summed by tocsr(); the graph is binary
    a = sp.bmat([[None, r], [r.T, None]], format="csr", dtype=np.float32)
    deg = np.asarray(a.sum(axis=1)).ravel()
    with np.errstate(divide="ignore"):
        d = np.where(deg > 0, deg ** -0.5, 0.0).astype(np.float32)
    return (sp.diags(d) @ a @ sp.diags(d)).astype(np.float32).tocsr()


class _SymmetricSpMM(torch.autograd.Function):
    """y = Â x for a symmetric sparse Â; the gradient is Â g (Â^T = Â), so no transpose is built."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, adj: "SparseAdjacency") -> torch.Tensor:  # type: ignore[override]
        ctx.adj = adj
        return adj.matmul(x)

    @staticmethod
    def backward(ctx, g: torch.Tensor):  # type: ignore[override]
        return ctx.adj.matmul(g), None


class SparseAdjacency:
    """Â held as scipy CSR for CPU tensors (fastest here) or torch sparse CSR on an accelerator."""

    def __init__(self, adj: sp.csr_matrix, device: torch.device):
        self.device = device
        self.scipy = adj if device.type == "cpu" else None
        self.torch = None
        if device.type != "cpu":
            coo = adj.tocoo()
            idx = torch.tensor(np.vstack([coo.row, coo.col]), dtype=torch.long)
            self.torch = torch.sparse_coo_tensor(idx, torch.from_numpy(coo.data), coo.shape).coalesce() \
                .to_sparse_csr().to(device)

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        if self.scipy is not None:
            return torch.from_numpy(np.asarray(self.scipy @ x.detach().contiguous().numpy()))
        return torch.sparse.mm(self.torch, x)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return _SymmetricSpMM.apply(x, self)


# --------------------------------------------------------------------------------------------
# Model and sampler
# --------------------------------------------------------------------------------------------


class LightGCN(torch.nn.Module):
    """Ego embeddings of users (rows 0..U-1) and items (rows U..U+I-1); `propagate` = layer mean."""

    def __init__(self, num_users: int, num_items: int, dim: int, layers: int, init_std: float = 0.1,
                 generator: torch.Generator | None = None):
        super().__init__()
        self.num_users, self.num_items, self.layers = num_users, num_items, layers
        self.embedding = torch.nn.Embedding(num_users + num_items, dim)
        with torch.no_grad():
            self.embedding.weight.normal_(0.0, init_std, generator=generator)

    def propagate(self, adj) -> torch.Tensor:
        """Mean of E_0..E_L with E_{l+1} = adj(E_l); `adj` is a SparseAdjacency or a dense matrix."""
        x = self.embedding.weight
        acc = x
        for _ in range(self.layers):
            x = adj(x) if callable(adj) else adj @ x
            acc = acc + x
        return acc / (self.layers + 1)

    def split(self, final: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return final[: self.num_users], final[self.num_users:]


class BprSampler:
    """Vectorised BPR triples: a uniform interaction (user, positive), a uniform non-positive item."""

    def __init__(self, users: np.ndarray, items: np.ndarray, num_items: int, rng: np.random.Generator,
                 max_rounds: int = 100):
        if len(users) == 0:
            raise DataError("no interactions to train LightGCN on (every training sequence is empty)")
        self.users, self.items, self.num_items = users, items, num_items
        self.rng, self.max_rounds = rng, max_rounds
        self.keys = np.unique(users * num_items + items)  # sorted positive (user, item) keys

    def is_positive(self, u: np.ndarray, j: np.ndarray) -> np.ndarray:
        k = u * self.num_items + j
        pos = np.minimum(np.searchsorted(self.keys, k), len(self.keys) - 1)
        return self.keys[pos] == k

    def sample(self, batch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        idx = self.rng.integers(0, len(self.users), size=batch)
        u, i = self.users[idx], self.items[idx]
        j = self.rng.integers(0, self.num_items, size=batch)
        bad = self.is_positive(u, j)
        rounds = 0
        while bad.any():
            rounds += 1
            if rounds > self.max_rounds:
                raise DataError(f"user index {int(u[bad][0])} has interacted with (almost) every item; "
                                f"no negative item can be sampled for BPR")
            j[bad] = self.rng.integers(0, self.num_items, size=int(bad.sum()))
            bad[bad] = self.is_positive(u[bad], j[bad])
        return u, i, j


def bpr_loss(final: torch.Tensor, ego: torch.Tensor, u: torch.Tensor, i: torch.Tensor, j: torch.Tensor,
             reg: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(BPR loss, L2 term) for node rows u (users) and i, j (items, already offset by num_users).

    L2 term = reg * (|e0_u|^2 + |e0_i|^2 + |e0_j|^2) / 2 / batch, as in LightGCN's code.
    """
    rows = torch.cat([u, i, j])  # one gather (and one scatter in backward) per table
    eu, ei, ej = final[rows].view(3, len(u), -1)
    diff = (eu * (ei - ej)).sum(1)
    loss = -F.logsigmoid(diff).mean()
    l2 = reg * 0.5 * ego[rows].pow(2).sum() / len(u)
    return loss, l2


# --------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------


def _split_positions(split: Split) -> int:
    if split == "valid":
        return 2
    if split == "test":
        return 1
    raise ValueError(f"LightGCN is evaluated on 'valid' or 'test', got {split!r}")


def score_ranks(user_emb: torch.Tensor, item_emb: torch.Tensor, ds: SeqDataset, split: Split,
                user_rows: np.ndarray | None = None, item_rows: np.ndarray | None = None,
                exclude_history: bool = False, chunk: int = 2048, ties: str = "random", seed: int = 0) -> np.ndarray:
    """0-based full-ranking rank of each evaluated user's target under scores user·item.

    Users are those of `samples(ds, split)` (sequences of >= 3 items), in dataset order.
    `user_rows`/`item_rows` map dataset indices to embedding rows (identity when None).
    With `exclude_history`, items the user had before the target are removed from the ranking.
    Ties: `ranks_from_scores` (`ties`, drawn from `seed` per user index).
    """
    back = _split_positions(split)
    evaluated = [u for u, s in enumerate(ds.sequences) if len(s) >= MIN_LEN]
    items = item_emb if item_rows is None else item_emb[torch.as_tensor(item_rows)]
    out = np.empty(len(evaluated), dtype=np.int64)
    for start in range(0, len(evaluated), chunk):
        us = evaluated[start:start + chunk]
        rows = torch.as_tensor(us if user_rows is None else user_rows[us], dtype=torch.long)
        scores = user_emb[rows].float() @ items.float().T
        targets = torch.tensor([ds.sequences[u][-back] for u in us])
        exclude = None
        if exclude_history:
            exclude = torch.zeros_like(scores, dtype=torch.bool)
            for r, u in enumerate(us):
                exclude[r, ds.sequences[u][:-back]] = True
        out[start:start + len(us)] = ranks_from_scores(scores, targets, exclude, keys=us, seed=seed, ties=ties)
    return out


def popularity_ranks(ds: SeqDataset, split: Split, ties: str = "random", seed: int = 0) -> np.ndarray:
    """Ranks under training-interaction popularity, same tie rule as `ranks_from_scores`.

    One score vector for everyone, so the items above and tied with the target are found by
    binary search instead of materialising a users x items matrix.
    """
    _, items = interaction_pairs(training_sequences(ds))
    counts = np.bincount(items, minlength=ds.num_items)
    back = _split_positions(split)
    users = np.array([u for u, s in enumerate(ds.sequences) if len(s) >= MIN_LEN], dtype=np.int64)
    targets = np.array([ds.sequences[u][-back] for u in users], dtype=np.int64)
    ordered = np.sort(counts)
    above = len(ordered) - np.searchsorted(ordered, counts[targets], side="right")
    tied = np.searchsorted(ordered, counts[targets], side="right") - np.searchsorted(ordered, counts[targets]) - 1
    return place_among_ties(above, tied, users, seed, ties)


def lightgcn_ranks(gcn_dir: str | Path, ds: SeqDataset, split: Split, max_his: int = 20,
                   exclude_history: bool = False, ties: str = "random", seed: int = 0) -> np.ndarray:
    """0-based rank of each user's target (users of `samples(ds, split, max_his)`), full ranking.

    Scores are user·item dot products of the final, un-normalised embeddings saved by
    `train_lightgcn` (model trained on s[:-2], also for the test split: the published protocol).
    """
    users, items = final_embeddings(gcn_dir, ds)
    ranks = score_ranks(users, items, ds, split, exclude_history=exclude_history, ties=ties, seed=seed)
    assert len(ranks) == len(samples(ds, split, max_his))
    return ranks


def final_embeddings(gcn_dir: str | Path, ds: SeqDataset) -> tuple[torch.Tensor, torch.Tensor]:
    """(user, item) final embeddings saved by `train_lightgcn`, rows in `ds`'s user / item order.

    Raises DataError when the model is missing or was trained on another dataset.
    """
    path = Path(gcn_dir) / MODEL_FILE
    if not path.is_file():
        raise DataError(f"{path}: missing; it is written by `gramc gcn train`")
    saved = torch.load(path, map_location="cpu", weights_only=True)
    upos = {u: r for r, u in enumerate(saved["users"])}
    ipos = {a: r for r, a in enumerate(saved["items"])}
    missing_u = [u for u in ds.users if u not in upos]
    missing_i = [a for a in ds.item_ids if a not in ipos]
    if missing_u or missing_i:
        what = f"user '{missing_u[0]}'" if missing_u else f"item '{missing_i[0]}'"
        raise DataError(f"{path}: was trained on another dataset ({what} is unknown to it)")
    users = saved["user"].float()[torch.tensor([upos[u] for u in ds.users], dtype=torch.long)]
    items = saved["item"].float()[torch.tensor([ipos[a] for a in ds.item_ids], dtype=torch.long)]
    return users, items


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


def batch_size_for(cfg: GcnConfig, num_interactions: int) -> int:
    """`gcn.batch_size`, or when it is 0 the smallest power of two >= interactions / 20 within
    [256, 8192]: about 20 optimiser steps per epoch (every step propagates the whole graph, so a
    large batch is nearly free); 8192 on Amazon Beauty."""
    if cfg.batch_size > 0:
        return cfg.batch_size
    want = max(1, math.ceil(num_interactions / 20))
    return int(min(8192, max(256, 1 << (want - 1).bit_length())))


def _validate(cfg: GcnConfig, ds: SeqDataset) -> None:
    """The section's own range checks plus the one that needs the data, reported together."""
    problems = cfg.problems()
    if cfg.similar_k >= ds.num_items:
        problems.append(f"config key 'gcn.similar_k' must be in [0, {ds.num_items - 1}] (the dataset has "
                        f"{ds.num_items} items)")
    check_problems(problems)


def train_lightgcn(ds: SeqDataset, cfg: GcnConfig, out_dir: str | Path, *, run_cfg: Config | None = None,
                   inputs: dict[str, str | Path] | None = None, progress: bool = True) -> dict[str, Any]:
    """Train LightGCN on `cfg.interactions`, write the GCN folder, return gcn_meta.json's content.

    The folder is built beside `out_dir` and swapped in only when complete (an existing GCN folder
    stays intact until then); `out_dir` must be empty, absent or a GCN folder, never a folder with
    other files. `run_cfg` (the whole Config) and `inputs` go into run_info.json; without
    `run_cfg` a Config holding this GcnConfig is recorded.
    """
    _validate(cfg, ds)
    t0 = time.time()
    final_out = Path(out_dir)
    _check_out_dir(final_out, inputs)
    device = resolve_device(cfg.device, key="gcn.device")
    seqs = interaction_sequences(ds, cfg.interactions)
    users, items = interaction_pairs(seqs)
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    sampler = BprSampler(users, items, ds.num_items, rng)
    adj = SparseAdjacency(normalized_adjacency(users, items, ds.num_users, ds.num_items), device)
    model = LightGCN(ds.num_users, ds.num_items, cfg.dim, cfg.layers, cfg.init_std, gen).to(device)
    batch = batch_size_for(cfg, len(users))
    steps = math.ceil(len(users) / batch)

    loss_curve, valid_curve, kept = _fit(model, adj, sampler, ds, cfg, batch, steps, device, progress)
    train_s = time.time() - t0
    with torch.no_grad():
        user_final, item_final = (x.float().cpu() for x in model.split(model.propagate(adj)))
    # an earlier table with other embeddings (runs are bound to it by fingerprint) is kept aside;
    # one that differs only in run info, timings and plot is replaced
    with atomic_dir(final_out, keep="GCN folder", same_if=("run_info.json", "config.yaml", META_FILE, PLOT_FILE)) as out:
        meta = _write_folder(out, ds, cfg, run_cfg, inputs, user_final, item_final, {
            "interactions": {
                "split": cfg.interactions,
                "rule": _INTERACTION_RULES[cfg.interactions],
                "count": int(len(users)),
                "unique_pairs": int(len(sampler.keys)),
                "sha256": pairs_fingerprint(ds, seqs),
                "fingerprint": "sha256 of the sorted 'USER<TAB>ITEM' lines of the interactions, repeats kept",
                "leaks_valid_or_test": cfg.interactions != "train",
            },
            "items_without_interactions": int(ds.num_items - len(np.unique(items))),
            "device": str(device),
            "batch_size": batch,
            "steps_per_epoch": steps,
            "final_loss": loss_curve[-1],
            "loss_curve": loss_curve,
            "valid_curve": valid_curve,
            "kept_epoch": kept["epoch"],
            "kept_because": "best validation ndcg@10 (gcn.keep_best)" if cfg.keep_best else "last epoch",
            "valid": {k: v for k, v in kept.items() if k != "epoch"},
            "time_s": {"train": round(train_s, 2)},
        }, t0)
    return meta


def _fit(model: LightGCN, adj: SparseAdjacency, sampler: BprSampler, ds: SeqDataset,
         cfg: GcnConfig, batch: int, steps: int, device: torch.device,
         progress: bool) -> tuple[list[float], list[dict[str, float]], dict[str, float]]:
    """BPR epochs with validation every `cfg.eval_every`; leaves the model at the kept point.

    Returns the per-epoch mean loss, the validation curve and the kept validation point (the best
    ndcg@10 with `cfg.keep_best`, else the last epoch's).
    """
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, fused=True)  # one kernel per step
    loss_curve: list[float] = []
    valid_curve: list[dict[str, float]] = []
    best: tuple[dict[str, float], torch.Tensor | None] | None = None  # (valid point, ego weights)
    bar = tqdm(total=cfg.epochs * steps, desc="lightgcn", unit="step", disable=not progress)
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        total = 0.0
        for _ in range(steps):
            u, i, j = (torch.from_numpy(a).to(device) for a in sampler.sample(batch))
            final = model.propagate(adj)
            loss, l2 = bpr_loss(final, model.embedding.weight, u, i + ds.num_users, j + ds.num_users, cfg.reg)
            opt.zero_grad(set_to_none=True)
            (loss + l2).backward()
            opt.step()
            value = loss.item()
            total += value
            bar.update(1)
            bar.set_postfix(epoch=epoch, loss=f"{value:.4f}", refresh=False)
        loss_curve.append(total / steps)
        if (cfg.eval_every and epoch % cfg.eval_every == 0) or epoch == cfg.epochs:
            point = {"epoch": epoch, **_valid_point(model, adj, ds, cfg.seed)}
            valid_curve.append(point)
            bar.set_postfix(epoch=epoch, loss=f"{loss_curve[-1]:.4f}", r10=f"{point['recall@10']:.4f}")
            if not cfg.keep_best or best is None or point["ndcg@10"] > best[0]["ndcg@10"]:
                best = (point, model.embedding.weight.detach().clone() if cfg.keep_best else None)
    bar.close()
    assert best is not None  # the last epoch always has a validation point
    kept, weights = best
    if weights is not None and kept["epoch"] != cfg.epochs:
        with torch.no_grad():
            model.embedding.weight.copy_(weights)  # back to the best validation point
    return loss_curve, valid_curve, kept


def _check_out_dir(out: Path, inputs: dict[str, str | Path] | None = None) -> None:
    claim_output(out, "gcn", inputs=(inputs or {}).values(), what="GCN folder", own=OWN_FILES)


def _write_folder(out: Path, ds: SeqDataset, cfg: GcnConfig, run_cfg: Config | None,
                  inputs: dict[str, str | Path] | None, user_final: torch.Tensor, item_final: torch.Tensor,
                  facts: dict[str, Any], t0: float) -> dict[str, Any]:
    """Write every artefact into `out` (a fresh folder); gcn_meta.json last. Returns the meta."""
    table = torch.zeros(ds.num_items + 1, cfg.dim, dtype=torch.float32)
    table[1:] = F.normalize(item_final, dim=1)
    torch_save(table, out / EMBEDDINGS_FILE)
    write_json(out / MAPPING_FILE, {a: i + 1 for i, a in enumerate(ds.item_ids)})
    if cfg.similar_k > 0:
        write_similar_items(out / SIMILAR_FILE, ds, top_k_cosine(item_final, cfg.similar_k))
    torch_save({"user": user_final, "item": item_final, "users": list(ds.users), "items": list(ds.item_ids)},
               out / MODEL_FILE)

    pop = summarize(popularity_ranks(ds, "valid", seed=cfg.seed), ks=(10, 20))
    meta: dict[str, Any] = {
        "format": 1,
        "model": "LightGCN (He et al., SIGIR 2020): normalised bipartite graph, layer-mean readout, BPR",
        "interactions": facts.pop("interactions"),
        "num_users": ds.num_users,
        "num_items": ds.num_items,
        "rows": ds.num_items + 1,
        "mapping_order": "row = dataset item index + 1 (order of first appearance); row 0 = padding",
        "embeddings": "final (layer-mean) item embeddings, L2-normalised; row 0 zeros",
        "hyper_parameters": to_dict(cfg),
        **facts,
        "popularity_valid": {"recall@10": pop["hit@10"], "ndcg@10": pop["ndcg@10"]},
        "similar_items": ({"file": SIMILAR_FILE, "k": cfg.similar_k, "sha256": sha256_file(out / SIMILAR_FILE),
                           "source": "cosine of the final item embeddings, the item itself excluded"}
                          if cfg.similar_k > 0 else None),
    }
    meta["time_s"]["total"] = round(time.time() - t0, 2)
    _plot(out / PLOT_FILE, meta["loss_curve"], meta["valid_curve"], meta["popularity_valid"]["recall@10"])
    write_run_info(out, run_cfg if run_cfg is not None else Config(gcn=cfg), inputs,
                   extra={"gcn_seed": cfg.seed})
    write_json(out / META_FILE, meta)
    return meta


def _valid_point(model: LightGCN, adj, ds: SeqDataset, seed: int) -> dict[str, float]:
    model.eval()
    with torch.no_grad():
        u, i = (x.float().cpu() for x in model.split(model.propagate(adj)))
    m = summarize(score_ranks(u, i, ds, "valid", seed=seed), ks=(10, 20))
    return {"recall@10": m["hit@10"], "ndcg@10": m["ndcg@10"], "recall@20": m["hit@20"], "ndcg@20": m["ndcg@20"],
            "users": m["users"]}


def _plot(path: Path, loss: list[float], valid: list[dict[str, float]], pop_r10: float) -> None:
    plt = pyplot()
    if plt is None:
        return

    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5))
    a.plot(range(1, len(loss) + 1), loss)
    a.set_xlabel("epoch")
    a.set_ylabel("BPR loss")
    a.set_title("LightGCN training loss")
    b.plot([v["epoch"] for v in valid], [v["recall@10"] for v in valid], marker="o", label="LightGCN")
    b.axhline(pop_r10, color="grey", linestyle="--", label="popularity")
    b.set_xlabel("epoch")
    b.set_ylabel("validation recall@10")
    b.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
