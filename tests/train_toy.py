"""A toy model + collator with GRAM-C's training contract (forward(batch) -> (loss_sum, n_tokens)).

Used by the training tests (and the torchrun helper) to check DDP, accumulation and resume
exactly, in float64, in milliseconds. Target sequences have 1 to 3 tokens, so ranks and
micro-batches hold different numbers of target tokens, as with real item IDs.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from gramc.config import Config
from gramc.data.dataset import SeqDataset
from gramc.data.splits import Sample, samples
from gramc.ids.tokens import IGNORE_INDEX

VOCAB = 17
MAX_T = 3
HIS = 4


@dataclass
class ToyBatch:
    history: torch.Tensor  # [B, HIS] item index + 1, 0 = pad
    labels: torch.Tensor  # [B, MAX_T], IGNORE_INDEX = pad

    def to(self, device, non_blocking: bool = False):
        return ToyBatch(self.history.to(device, non_blocking=non_blocking), self.labels.to(device, non_blocking=non_blocking))


def target_tokens(item: int) -> list[int]:
    return [(item * 7 + 3 * j + 1) % VOCAB for j in range(1 + item % MAX_T)]


def collate(batch: list[Sample]) -> ToyBatch:
    hist = torch.zeros(len(batch), HIS, dtype=torch.long)
    labels = torch.full((len(batch), MAX_T), IGNORE_INDEX, dtype=torch.long)
    for b, s in enumerate(batch):
        h = list(s.history)[-HIS:]
        hist[b, :len(h)] = torch.tensor(h) + 1
        t = target_tokens(s.target)
        labels[b, :len(t)] = torch.tensor(t)
    return ToyBatch(hist, labels)


class ToyModel(nn.Module):
    def __init__(self, num_items: int, d: int = 8, dropout: float = 0.0) -> None:
        super().__init__()
        self.emb = nn.Embedding(num_items + 1, d, padding_idx=0)
        self.layer_norm = nn.LayerNorm(d)
        self.pos_emb = nn.Parameter(torch.randn(MAX_T, d) * 0.5)
        self.hidden = nn.Linear(d, d)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(d, VOCAB)
        self.prefix_scale = nn.Parameter(torch.tensor(0.7))

    def forward(self, batch: ToyBatch) -> tuple[torch.Tensor, torch.Tensor]:
        e = self.emb(batch.history)  # [B, H, d]
        n = (batch.history > 0).sum(1, keepdim=True).clamp(min=1)
        h = self.layer_norm(e.sum(1) / n) * self.prefix_scale
        z = torch.tanh(self.hidden(self.drop(h[:, None, :] + self.pos_emb[None])))
        logits = self.out(z)
        labels = batch.labels
        loss = F.cross_entropy(logits.reshape(-1, VOCAB), labels.reshape(-1), ignore_index=IGNORE_INDEX,
                               reduction="sum")
        return loss, (labels != IGNORE_INDEX).sum()


def toy_dataset(num_users: int = 24, num_items: int = 30, seed: int = 0) -> SeqDataset:
    rng = random.Random(seed)
    seqs = [[rng.randrange(num_items) for _ in range(rng.randint(5, 9))] for _ in range(num_users)]
    # items indexed by first appearance, as SeqDataset expects
    order: dict[int, int] = {}
    for s in seqs:
        for i in s:
            order.setdefault(i, len(order))
    seqs = [[order[i] for i in s] for s in seqs]
    n = len(order)
    return SeqDataset([f"i{k}" for k in range(n)], [{"title": f"item {k}"} for k in range(n)],
                      [f"u{u}" for u in range(num_users)], seqs)


def toy_samples(ds: SeqDataset) -> tuple[list[Sample], list[Sample]]:
    return samples(ds, "train", HIS), samples(ds, "valid", HIS)


def toy_config(**train) -> Config:
    cfg = Config()
    cfg.run.seed = 11
    cfg.run.device = "cpu"
    t = cfg.train
    t.epochs, t.batch_size, t.grad_accum, t.lr, t.warmup, t.clip = 2, 3, 2, 0.05, 0.2, 100.0
    t.log_every, t.save_every, t.eval_every, t.max_steps = 1, 0, 1, 0
    for k, v in train.items():
        setattr(t, k, v)
    return cfg


def build_model(ds: SeqDataset, seed: int, dropout: float = 0.0) -> ToyModel:
    torch.manual_seed(seed)
    return ToyModel(ds.num_items, dropout=dropout).double()
