"""The dense retrieval head (`model.dense.*`): a user vector and an item vector in one space.

    item vector  W_t · mean of the item passage's encoder states over its real tokens   (item: text, both)
               + W_g · LayerNorm(the item's LightGCN row)                               (item: gcn, both)
    user vector  W_u · the decoder's state at the first target position
    score        cosine(user, item) / temperature

The user vector reads the fused memory exactly as the prediction of the first ID token does, so
the head sees the same inputs as generation. Every item has a vector, whether or not its ID was
ever a training target: the head can rank the whole catalogue, rare items included.

Training (`loss`): each sample's target against the batch's distinct items, which are its history
rows, its targets and `negatives` catalogue items drawn uniformly by the collator. A sample's own
history items are removed from its candidates (evaluation never recommends them) unless one of
them is its target. The batch's own items arrive about in proportion to their popularity; with
`logq` each candidate's logit is lowered by the log of its expected count in a batch,
`rows * p(item) + negatives / num_items`, so that popular items are not over-penalised as
negatives (the sampled-softmax correction).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from ..config import DenseConfig
from ..data.splits import item_training_counts

if TYPE_CHECKING:  # pragma: no cover
    from .assets import Assets


def wide(x: torch.Tensor) -> torch.Tensor:
    """`x` in fp32 when it is in a 16-bit type (autocast); fp32 and fp64 stay as they are."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def pooled(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `states [P, L, d]` over the real tokens of `mask [P, L]` -> `[P, d]` (at least fp32)."""
    x = wide(states)
    m = mask.to(x.dtype).unsqueeze(-1)
    return (x * m).sum(1) / m.sum(1).clamp(min=1.0)


@dataclass
class DenseTables:
    """What the head needs from the data: the catalogue size, each item's training count (log-q),
    and for `item: gcn|both` the LightGCN table with each dataset item's row in it (0 = none)."""

    num_items: int
    counts: torch.Tensor | None = None
    gcn_table: torch.Tensor | None = None
    gcn_rows: torch.Tensor | None = None

    @classmethod
    def from_assets(cls, cfg: DenseConfig, assets: "Assets") -> "DenseTables":
        counts = torch.tensor(item_training_counts(assets.ds), dtype=torch.float32)
        if cfg.item == "text":
            return cls(assets.cache.num_items, counts)
        if assets.gcn is None:
            raise ValueError(f"model.dense.item={cfg.item!r} reads LightGCN rows, but the run has no GCN table "
                             "(train one with `gramc gcn train` or set model.dense.item=text)")
        return cls(assets.cache.num_items, counts, assets.gcn.embeddings, assets.gcn.rows_for(assets.ds).long())


class DenseHead(nn.Module):
    """User and item projections, and the sampled-softmax loss that trains them."""

    def __init__(self, cfg: DenseConfig, d_model: int, num_items: int, gcn_table: torch.Tensor | None = None,
                 gcn_rows: torch.Tensor | None = None, counts: torch.Tensor | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.num_items = num_items
        self.user = nn.Linear(d_model, cfg.dim, bias=False)
        self.text = nn.Linear(d_model, cfg.dim, bias=False) if cfg.item in ("text", "both") else None
        self.graph: nn.Module | None = None
        if cfg.item in ("gcn", "both"):
            if gcn_table is None or gcn_rows is None:
                raise ValueError(f"model.dense.item={cfg.item!r} reads LightGCN rows, but no GCN table was given "
                                 "(train one with `gramc gcn train` or set model.dense.item=text)")
            if len(gcn_rows) != num_items:
                raise ValueError(f"gcn_rows has {len(gcn_rows)} entries for {num_items} items")
            # frozen and saved with the model, as the prefix's table is: a checkpoint is self-contained
            self.register_buffer("graph_table", gcn_table.detach().float().clone(), persistent=True)
            self.register_buffer("graph_rows", gcn_rows.detach().long().clone(), persistent=True)
            self.graph = nn.Sequential(nn.LayerNorm(gcn_table.shape[1]),
                                       nn.Linear(gcn_table.shape[1], cfg.dim, bias=False))
        c = torch.ones(num_items) if counts is None else counts.detach().float() + 1.0  # add-one smoothing
        self.register_buffer("log_pop", torch.log(c / c.sum()), persistent=False)

    def users(self, hidden: torch.Tensor) -> torch.Tensor:
        """Unit user vectors `[B, dim]` from the decoder's first-position states `[B, d]`."""
        return F.normalize(wide(self.user(hidden)), dim=-1)

    def items(self, states: torch.Tensor, mask: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Unit item vectors `[P, dim]` of passage rows: their encoder states `[P, L, d]`, mask `[P, L]`,
        and dataset item index `[P]`."""
        parts = []
        if self.text is not None:
            parts.append(wide(self.text(pooled(states, mask).to(self.text.weight.dtype))))
        if self.graph is not None:
            parts.append(wide(self.graph(self.graph_table[self.graph_rows[index]])))
        return F.normalize(sum(parts[1:], parts[0]), dim=-1)

    def scores(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """`[B, I]` cosine / temperature of unit user and item vectors."""
        return users @ items.T / self.cfg.temperature

    def loss(self, users: torch.Tensor, items: torch.Tensor, item_index: torch.Tensor, targets: torch.Tensor,
             history_items: torch.Tensor, negatives: int) -> torch.Tensor:
        """Per-sample cross-entropy `[B]` of the target among the batch's distinct items.

        `items [P, dim]` / `item_index [P]`: the batch's item rows (repeats allowed; the first row of an
        item stands for it); `targets [B]`, `history_items [B, N]` dataset items (-1 pad); `negatives`:
        how many of the rows are uniform draws (for the log-q correction). Every target must be a row.
        """
        uniq, inv = torch.unique(item_index, return_inverse=True)
        first = torch.full((len(uniq),), len(item_index), device=inv.device, dtype=torch.long)
        first = first.scatter_reduce(0, inv, torch.arange(len(item_index), device=inv.device), "amin")
        logits = self.scores(users, items[first])  # [B, C]
        if self.cfg.logq:
            own = max(len(uniq) - negatives, 1)
            expected = own * self.log_pop[uniq].exp() + negatives / self.num_items
            logits = logits - expected.log()
        col = torch.searchsorted(uniq, targets).clamp(max=len(uniq) - 1)
        # checked where it costs no device sync (on the CPU); the collator adds every target as a row
        if col.device.type == "cpu" and bool((uniq[col] != targets).any()):
            raise ValueError("dense loss: a target is not among the batch's item rows (the collator adds them "
                             "when model.dense.enabled)")
        seen = torch.zeros_like(logits, dtype=torch.bool)
        rows, pos = (history_items >= 0).nonzero(as_tuple=True)
        hcol = torch.searchsorted(uniq, history_items[rows, pos]).clamp(max=len(uniq) - 1)
        found = uniq[hcol] == history_items[rows, pos]
        seen[rows[found], hcol[found]] = True
        seen[torch.arange(len(targets), device=seen.device), col] = False
        logits = logits.masked_fill(seen, -math.inf)
        return F.cross_entropy(logits, col, reduction="none")
