"""SASRec trained with cross-entropy over all items (the strong sequential baseline).

A causal Transformer over the last `baseline.sasrec.max_len` training items of a user predicts, at every
position at once, the next item with a softmax over the whole catalogue (not the sampled
BCE of the original paper, which is much weaker). Item embeddings are tied with the output
layer (or, with `baseline.sasrec.tied_output=False`, a separate output table); positions have learned
embeddings; padding (item 0, on the left) is masked out of attention and of the loss. One learned
offset is added to the logits of items the sequence already holds (`baseline.sasrec.repeat_bias`): tied
embeddings otherwise make the last input item the top prediction, and the data, not the
evaluator, should decide how likely a repeat is. Training sees only s[:-2] of each user; early
stopping on validation ndcg@10 keeps the best weights, which are then evaluated on the test split.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Iterable, Sequence

import torch
from torch import nn
from tqdm import tqdm

from ..config import Config, SasrecConfig
from ..data.dataset import SeqDataset
from ..data.splits import Sample, training_sequences
from ..io import atomic_path, pyplot, torch_save
from ..metrics import summarize
from ..runinfo import write_run_info
from ..runtime import resolve_device
from ..seeding import seed_everything
from .common import evaluate_scorer, split_ranks


class SASRec(nn.Module):
    """Item + position embeddings -> pre-LN causal Transformer -> final LayerNorm.

    Item rows are shifted by one: row 0 is padding, row i+1 is dataset item i.
    """

    def __init__(self, num_items: int, cfg: SasrecConfig):
        super().__init__()
        d = cfg.dim
        self.max_len = cfg.max_len
        self.heads = cfg.heads
        self.temperature = cfg.temperature
        self.item_emb = nn.Embedding(num_items + 1, d, padding_idx=0)
        self.pos_emb = nn.Embedding(cfg.max_len, d)
        self.drop = nn.Dropout(cfg.dropout)
        layer = nn.TransformerEncoderLayer(d, cfg.heads, dim_feedforward=cfg.ffn, dropout=cfg.dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        nn.init.normal_(self.item_emb.weight, std=d ** -0.5)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()
        nn.init.normal_(self.pos_emb.weight, std=0.02)
        # untied: a separate output table, so the residual copy of the last input item's embedding
        # does not score that item highest (with tying and no repeat bias, the top-1 was a history
        # item for 91% of Beauty test users, although no Beauty target repeats an earlier item)
        self.out_emb = None if cfg.tied_output else nn.Parameter(torch.randn(num_items, d) * d ** -0.5)
        # learned offset for the logits of items the sequence already holds: the data decide whether
        # a repeat is likely (no Amazon 5-core target repeats an earlier item; other data differ)
        self.repeat_bias = nn.Parameter(torch.zeros(())) if cfg.repeat_bias else None

    def hidden(self, seq: torch.Tensor) -> torch.Tensor:
        """seq [B, L] of item rows (0 = pad, left-padded, L <= max_len) -> states [B, L, d].

        Positions count back from the right edge (the last column is always position
        max_len - 1), so a batch whose padding columns were trimmed away gives the same states
        as the full-width batch.
        """
        B, L = seq.shape
        if L > self.max_len:
            raise ValueError(f"SASRec: sequence width {L} exceeds baseline.sasrec.max_len {self.max_len}")
        pad = seq == 0
        pos = torch.arange(self.max_len - L, self.max_len, device=seq.device)
        x = self.item_emb(seq) * math.sqrt(self.item_emb.embedding_dim) + self.pos_emb(pos)[None]
        x = self.drop(x) * (~pad).unsqueeze(-1)
        # True = may not attend: future keys, and padding keys (a query may always see itself, so
        # all-padding rows stay finite; they are never read)
        future = torch.ones(L, L, dtype=torch.bool, device=seq.device).triu(1)
        blocked = future[None] | (pad[:, None, :] & ~torch.eye(L, dtype=torch.bool, device=seq.device)[None])
        blocked = blocked.repeat_interleave(self.heads, dim=0)
        h = self.encoder(x, mask=blocked)
        return self.norm(h)

    def item_logits(self, h: torch.Tensor) -> torch.Tensor:
        """states [..., d] -> logits over dataset items [..., num_items] (padding row excluded).

        With `baseline.sasrec.temperature` > 0 both sides are L2-normalised first and the cosine is divided
        by the temperature (bounded logits, as in the HSTU/gSASRec line of SASRec baselines).
        """
        items = self.item_emb.weight[1:] if self.out_emb is None else self.out_emb
        if self.temperature > 0:
            h = nn.functional.normalize(h, dim=-1)
            items = nn.functional.normalize(items, dim=-1)
            return h @ items.T / self.temperature
        return h @ items.T

    def add_repeat_bias(self, logits: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
        """logits [N, num_items] + repeat_bias where an item is among `seen` [N, S] item rows (0 = none)."""
        if self.repeat_bias is None:
            return logits
        mask = torch.zeros(logits.shape[0], logits.shape[1] + 1, dtype=torch.bool, device=logits.device)
        mask.scatter_(1, seen, True)
        return logits + self.repeat_bias * mask[:, 1:]

    def scores(self, seq: torch.Tensor) -> torch.Tensor:
        """Logits of the next item after each full row of `seq` [B, L] (left-padded item rows)."""
        return self.add_repeat_bias(self.item_logits(self.hidden(seq)[:, -1]), seq)

    def position_logits(self, seq: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Logits of the next item at every position where `keep` [B, L] is True, each seeing only
        the items up to that position (the causal view used in training)."""
        logits = self.item_logits(self.hidden(seq)[keep])
        if self.repeat_bias is None:
            return logits
        L = seq.shape[1]
        upto = torch.ones(L, L, dtype=torch.bool, device=seq.device).tril()  # [t, j]: j <= t
        prefix = (seq[:, None, :] * upto[None]).long()  # [B, t, j] rows of seq[:, :t+1], 0 elsewhere
        return self.add_repeat_bias(logits, prefix[keep])


def _left_pad(items: Sequence[int], L: int) -> list[int]:
    rows = [i + 1 for i in items[-L:]]
    return [0] * (L - len(rows)) + rows


def training_tensors(ds: SeqDataset, max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets) [U, max_len] item rows: every training position is a target in one pass."""
    inp, tgt = [], []
    for seq in training_sequences(ds):
        if len(seq) < 2:
            continue
        part = seq[-(max_len + 1):]
        inp.append(_left_pad(part[:-1], max_len))
        tgt.append(_left_pad(part[1:], max_len))
    return torch.tensor(inp, dtype=torch.long), torch.tensor(tgt, dtype=torch.long)


def length_batches(lengths: torch.Tensor, batch_size: int, gen: torch.Generator,
                   pool: int = 50) -> list[torch.Tensor]:
    """Shuffled batches of row indices whose lengths are similar.

    Rows are shuffled, cut into pools of `pool` batches, sorted by length inside each pool and
    batched; the batch order is shuffled again. Each batch then needs only as many columns as
    its longest row, which on Beauty (mean length 9, width 50) cuts the Transformer work several
    times over, while the batches stay random enough for SGD.
    """
    perm = torch.randperm(len(lengths), generator=gen)
    batches = []
    span = batch_size * pool
    for start in range(0, len(perm), span):
        chunk = perm[start:start + span]
        chunk = chunk[torch.argsort(lengths[chunk], stable=True)]
        batches.extend(chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size))
    order = torch.randperm(len(batches), generator=gen)
    return [batches[i] for i in order]


def make_scorer(model: SASRec, device: torch.device, sub_batch: int = 256):
    """Scores of every item after each sample's history (the last state of the sequence).

    Users are sorted by history length and scored in sub-batches trimmed to their longest
    history, as in training (positions count from the right edge, so trimming changes nothing
    but the cost); the scores come back in the chunk's order.
    """

    def score(chunk: Sequence[Sample]) -> torch.Tensor:
        model.eval()
        lengths = torch.tensor([max(1, min(len(s.history), model.max_len)) for s in chunk])
        order = torch.argsort(lengths, stable=True)
        out = torch.empty(len(chunk), model.item_emb.num_embeddings - 1, device=device)
        with torch.no_grad():
            for start in range(0, len(chunk), sub_batch):
                idx = order[start:start + sub_batch]
                width = int(lengths[idx].max())
                seq = torch.tensor([_left_pad(chunk[i].history, width) for i in idx.tolist()],
                                   dtype=torch.long, device=device)
                out[idx.to(device)] = model.scores(seq)
        return out

    return score


def _train_epoch(model: SASRec, opt: torch.optim.Optimizer, inp: torch.Tensor, tgt: torch.Tensor,
                 lengths: torch.Tensor, batches: Iterable[torch.Tensor], device: torch.device,
                 deadline: float | None) -> float:
    """One pass of full-softmax cross-entropy over `batches` (row indices); the mean loss per target.

    Stops early, after a step, once `time.time()` passes `deadline`: that partial epoch is still
    validated by the caller.
    """
    model.train()
    total, count = 0.0, 0
    for idx in batches:
        width = int(lengths[idx].max())  # left padding: the last `width` columns hold every item
        x, y = inp[idx, -width:].to(device), tgt[idx, -width:].to(device)
        keep = y > 0
        loss = nn.functional.cross_entropy(model.position_logits(x, keep), y[keep] - 1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += loss.item() * int(keep.sum())
        count += int(keep.sum())
        if deadline is not None and time.time() >= deadline:
            break
    return total / max(count, 1)


def train_sasrec(ds: SeqDataset, cfg: Config, out: str | Path | None = None,
                 max_minutes: float | None = None) -> tuple[SASRec, list[dict]]:
    """Train with full-softmax cross-entropy and early stopping on validation ndcg@10.

    Returns the model holding the best validation weights and the per-epoch log (also written to
    `out/log.jsonl`). `max_minutes` (or `baseline.sasrec.max_minutes`) bounds the wall time.
    """
    b = cfg.baseline.sasrec
    seed_everything(cfg.run.seed)  # the baseline run's one seeding point
    device = resolve_device(cfg.run.device)
    model = SASRec(ds.num_items, b).to(device)
    inp, tgt = training_tensors(ds, b.max_len)
    if len(inp) == 0:
        raise ValueError("SASRec: no user has two or more training interactions")
    opt = torch.optim.AdamW(model.parameters(), lr=b.lr, weight_decay=b.weight_decay,
                            betas=(0.9, 0.98))
    sched = None
    if b.lr_decay < 1.0:  # lower the lr when validation stalls, before early stopping gives up
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=b.lr_decay,
                                                           patience=b.decay_patience, threshold=0.0)
    gen = torch.Generator().manual_seed(cfg.run.seed)
    budget = max_minutes if max_minutes is not None else b.max_minutes
    t0 = time.time()
    best, best_state, bad, log = -1.0, None, 0, []
    log_path = Path(out) / "log.jsonl" if out is not None else None
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.write_text("")
    val_ks = sorted(set(cfg.eval.ks) | {10})
    lengths = (inp > 0).sum(1)
    deadline = t0 + 60.0 * budget if budget else None
    bar = tqdm(range(1, b.epochs + 1), desc="sasrec", unit="epoch")
    for epoch in bar:
        train_loss = _train_epoch(model, opt, inp, tgt, lengths,
                                  length_batches(lengths, b.batch_size, gen), device, deadline)
        ranks, _ = split_ranks(ds, "valid", b.max_len, make_scorer(model, device), batch_users=2048,
                               exclude_history=cfg.eval.exclude_history, ties=cfg.eval.ties, seed=cfg.run.seed)
        val = summarize(ranks, val_ks)
        row = {"epoch": epoch, "train_loss": train_loss, "valid_hit@10": val["hit@10"],
               "valid_ndcg@10": val["ndcg@10"], "lr": opt.param_groups[0]["lr"],
               **({"repeat_bias": round(float(model.repeat_bias.detach()), 4)} if model.repeat_bias is not None else {}),
               "seconds": round(time.time() - t0, 1)}
        log.append(row)
        if log_path is not None:
            with open(log_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
        bar.set_postfix(loss=f"{row['train_loss']:.3f}", ndcg10=f"{val['ndcg@10']:.4f}", best=f"{max(best, val['ndcg@10']):.4f}")
        if sched is not None:
            sched.step(val["ndcg@10"])
        if val["ndcg@10"] > best:
            best, bad = val["ndcg@10"], 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            bad += 1
            if bad >= b.patience:
                break
        if deadline is not None and time.time() >= deadline:
            break
    assert best_state is not None
    model.load_state_dict(best_state)
    return model, log


def plot_curve(log: list[dict], path: str | Path, title: str = "SASRec-CE") -> None:
    """Training loss and validation ndcg@10 per epoch, as a PNG."""
    plt = pyplot()
    if plt is None:
        return

    ep = [r["epoch"] for r in log]
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.2))
    ax[0].plot(ep, [r["train_loss"] for r in log])
    ax[0].set_xlabel("epoch"), ax[0].set_ylabel("train CE loss")
    ax[1].plot(ep, [r["valid_ndcg@10"] for r in log], label="ndcg@10")
    ax[1].plot(ep, [r["valid_hit@10"] for r in log], label="hit@10")
    ax[1].set_xlabel("epoch"), ax[1].legend(), ax[1].set_title("validation")
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def run_sasrec(ds: SeqDataset, cfg: Config, out: str | Path | None, inputs: dict | None = None,
               max_minutes: float | None = None) -> dict[str, dict]:
    """Train, keep the best validation epoch, evaluate valid + test; write everything into `out`."""
    t0 = time.time()
    if out is not None:
        write_run_info(out, cfg, inputs)
    model, log = train_sasrec(ds, cfg, out, max_minutes)
    device = next(model.parameters()).device
    best = max(log, key=lambda r: r["valid_ndcg@10"])
    extra = {"best_epoch": best["epoch"], "epochs_run": len(log), "train_seconds": round(time.time() - t0, 1)}
    recs = evaluate_scorer(ds, cfg, make_scorer(model, device), "sasrec", out,
                           history_window=cfg.baseline.sasrec.max_len, extra=extra)
    if out is not None:
        torch_save({"state_dict": model.state_dict(), "num_items": ds.num_items}, Path(out) / "sasrec.pt")
        plot_curve(log, Path(out) / "curves.png")
    return recs
