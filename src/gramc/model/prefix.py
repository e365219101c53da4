"""The collaborative prefix: frozen LightGCN rows of a user's recent items -> adapter -> soft tokens.

    table[recent_item_ids]            frozen buffer [n+1, d_gcn] (row 0 = padding)
      -> LayerNorm -> Linear -> GELU -> Linear -> LayerNorm -> dropout
      -> * scale                      learnable scalar, initialised at `init_scale`
      -> * keep[b]                    whole-prefix dropout per sample (multiplicative mask)

`shuffle_table` (an ablation control) permutes the table's item rows once, deterministically.

The multiplicative whole-prefix dropout keeps every adapter parameter (and the scale) in the
autograd graph on every step, so DDP never meets an unused parameter. Padding slots
(`recent_item_ids == 0`) and dropped prefixes are masked out (`mask` False) wherever the prefix
is placed, so their content never reaches an output.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..config import PrefixConfig


@dataclass
class PrefixNormStats:
    """Step-0 audit figure: how loud the prefix is next to ordinary token embeddings."""

    prefix_norm: float  # mean L2 norm of the real prefix vectors
    token_norm: float  # mean L2 norm of the token embeddings of the user passages
    ratio: float  # prefix_norm / token_norm
    slots: int  # real prefix slots measured


def shuffled_rows(table: torch.Tensor, seed: int) -> torch.Tensor:
    """`table` with rows 1..n permuted by a seeded generator (row 0, the padding row, kept)."""
    perm = torch.randperm(table.shape[0] - 1, generator=torch.Generator().manual_seed(seed)) + 1
    return torch.cat([table[:1], table[perm]])


class CollaborativePrefix(nn.Module):
    """Maps `recent_item_ids [B, K]` (GCN rows, 0 = pad) to `(prefix [B, K, d], mask [B, K])`."""

    def __init__(self, cfg: PrefixConfig, gcn_table: torch.Tensor, d_model: int) -> None:
        super().__init__()
        if gcn_table.dim() != 2 or gcn_table.shape[0] < 2:
            raise ValueError(f"GCN table must be [num_items+1, dim] with row 0 = padding, got {tuple(gcn_table.shape)}")
        self.cfg = cfg
        # frozen: a buffer, saved with the model so a checkpoint is self-contained
        table = gcn_table.detach().float().clone()
        if cfg.shuffle_table:
            table = shuffled_rows(table, cfg.shuffle_seed)
        self.register_buffer("table", table, persistent=True)
        g = gcn_table.shape[1]
        h = cfg.hidden or d_model
        self.adapter = nn.Sequential(
            nn.LayerNorm(g), nn.Linear(g, h), nn.GELU(), nn.Linear(h, d_model), nn.LayerNorm(d_model)
        )
        self.dropout = nn.Dropout(cfg.dropout)
        scale = torch.tensor(float(cfg.init_scale))
        if cfg.learn_scale:
            self.scale = nn.Parameter(scale)
        else:
            self.register_buffer("scale", scale)
        self.prefix_dropout = cfg.prefix_dropout

    def forward(self, recent_item_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ids = recent_item_ids.long()
        # checked where it costs no device sync (on CPU); on an accelerator an out-of-range row fails
        # in the gather and the step-0 audit checks the collator's GCN rows
        if ids.numel() and ids.device.type == "cpu" and int(ids.max()) >= self.table.shape[0]:
            raise IndexError(f"recent_item_ids holds GCN row {int(ids.max())} but the table has "
                             f"{self.table.shape[0]} rows")
        x = self.adapter(self.table[ids])
        x = self.dropout(x) * self.scale
        mask = ids != 0
        if self.training and self.prefix_dropout > 0:
            keep = (torch.rand(ids.shape[0], device=ids.device) >= self.prefix_dropout)
            x = x * keep.to(x.dtype)[:, None, None]
            mask = mask & keep[:, None]
        return x, mask

    @torch.no_grad()
    def norm_stats(self, recent_item_ids: torch.Tensor, user_input: torch.Tensor, user_mask: torch.Tensor,
                   embedding: nn.Embedding) -> PrefixNormStats:
        """Prefix vector norms vs the token embeddings they sit beside (no dropout)."""
        was = self.training
        self.eval()
        try:
            x, mask = self(recent_item_ids)
        finally:
            self.train(was)
        p = x[mask].float().norm(dim=-1)
        t = embedding(user_input[user_mask]).float().norm(dim=-1)
        pn = float(p.mean()) if p.numel() else 0.0
        tn = float(t.mean()) if t.numel() else 0.0
        return PrefixNormStats(prefix_norm=pn, token_norm=tn, ratio=pn / tn if tn else float("inf"),
                               slots=int(p.numel()))
