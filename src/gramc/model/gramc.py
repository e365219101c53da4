"""GRAM-C: Fusion-in-Decoder over real passages only, plus the collaborative prefix.

    user passage  --encode--> states + E[0]  ┐
    item passages --encode--> states + E[j]  ├─ per sample, real tokens only -> memory [B, M, d]
    (prefix soft tokens: into the user passage, every passage, or appended to the memory)
    T5 decoder cross-attends to the memory and is trained with token cross-entropy on the target ID,
normalised over the whole vocabulary (`model.softmax=vocab`, GRAM) or over the trie children of
each target prefix (`model.softmax=trie`, see `gramc.model.softmax`; the trie of the ID table).

Every real passage is encoded once and independently (item rows may be shared by several samples
of a batch, see `gramc.model.inputs.Collator`); there is never an all-padding passage. The learned
passage-position embedding `E` (`max_his + 1` rows, N(0, 0.02); 0 = user passage, 1 = first history
position in `model.history_order`, ...) is added to every token state of a passage, as in GRAM.
Memory keeps only real tokens (padding is dropped, not just masked); T5 cross-attention has no
position bias, so this equals GRAM's padded memory. With the prefix disabled this is exactly GRAM.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from ..config import Config, DenseConfig, ModelConfig
from ..ids.tokens import IGNORE_INDEX
from ..ids.trie import Trie, trie_for
from .inputs import Batch
from .dense import DenseHead, DenseTables
from .prefix import CollaborativePrefix, PrefixNormStats
from .softmax import check_softmax, trie_token_losses
from .t5 import T5, T5Dims, shift_right

if TYPE_CHECKING:  # pragma: no cover
    from .assets import Assets


def build_backbone(cfg: ModelConfig, vocab_size: int) -> T5:
    """The T5 of `model.preset`: `tiny`/`small` from random init, or `pretrained` weights."""
    if cfg.preset == "pretrained":
        t5 = T5.from_pretrained(cfg.pretrained)
        if t5.dims.vocab_size < vocab_size:
            raise ValueError(f"model.pretrained={cfg.pretrained!r} has {t5.dims.vocab_size} token embeddings "
                             f"but the tokenizer has {vocab_size} tokens; use the model's own tokenizer")
        t5.set_dropout(cfg.dropout)
        return t5
    return T5(T5Dims.preset(cfg.preset, vocab_size=vocab_size, dropout_rate=cfg.dropout))


def _on_host(t: torch.Tensor) -> bool:
    """Whether reading `t` costs no device sync (input checks run only then; on an accelerator the
    step-0 audit checks the same batch fields)."""
    return t.device.type == "cpu"


class GramC(nn.Module):
    """GRAM (late fusion of user and item passages) + an optional collaborative prefix."""

    def __init__(self, cfg: ModelConfig, max_his: int, vocab_size: int, gcn_table: torch.Tensor | None,
                 trie: Trie | None = None, dense: DenseTables | None = None) -> None:
        super().__init__()
        if max_his < 1:
            raise ValueError(f"GramC: max_his must be >= 1, got {max_his}")
        check_softmax(cfg.softmax)
        if cfg.softmax == "trie" and trie is None:
            raise ValueError("model.softmax is 'trie' but no trie was given: the trie softmax needs the trie of "
                             "the training data's ID table (GramC.from_config builds it from the assets)")
        self.cfg = cfg
        self.trie = trie if cfg.softmax == "trie" else None
        self.max_his = max_his
        self.t5 = build_backbone(cfg, vocab_size)
        d = self.t5.dims.d_model
        self.passage_pos = nn.Embedding(max_his + 1, d)
        nn.init.normal_(self.passage_pos.weight, mean=0.0, std=0.02)
        self.placement = cfg.prefix.placement
        self.prefix: CollaborativePrefix | None = None
        if cfg.prefix.enabled:
            if gcn_table is None:
                raise ValueError("model.prefix.enabled is true but no GCN table was given "
                                 "(train one with `gramc gcn train` or set model.prefix.enabled=false)")
            self.prefix = CollaborativePrefix(cfg.prefix, gcn_table, d)
        self.dense: DenseHead | None = None
        if cfg.dense.enabled:
            if dense is None:
                raise ValueError("model.dense.enabled is true but the item tables of the dense head were not given "
                                 "(GramC.from_config reads them from the assets)")
            self.dense = DenseHead(cfg.dense, d, dense.num_items, dense.gcn_table, dense.gcn_rows, dense.counts)

    @staticmethod
    def prefix_table(cfg: Config, assets: "Assets") -> torch.Tensor | None:
        """The GCN table the prefix reads (None when the prefix is off or the assets hold no GCN)."""
        return assets.gcn.embeddings if (cfg.model.prefix.enabled and assets.gcn is not None) else None

    @classmethod
    def from_config(cls, cfg: Config, assets: "Assets") -> "GramC":
        table = cls.prefix_table(cfg, assets)
        trie = trie_for(assets.item_ids) if cfg.model.softmax == "trie" else None
        dense = DenseTables.from_assets(cfg.model.dense, assets) if cfg.model.dense.enabled else None
        return cls(cfg.model, cfg.data.max_his, assets.tokenizer.vocab_size, table, trie, dense)

    def attach_dense(self, head: DenseHead, cfg: DenseConfig) -> None:
        """Give the model `head` (fitted on its frozen states, `gramc train-head`) with its settings,
        as if it had been built with `model.dense` = `cfg`; the backbone is untouched."""
        if not cfg.enabled:
            raise ValueError("attach_dense: the head's config must have enabled=true")
        self.cfg = replace(self.cfg, dense=cfg)
        self.dense = head

    @property
    def softmax(self) -> str:
        """The output normalisation this model is trained and searched with (`model.softmax`)."""
        return self.cfg.softmax

    def checkpoint_metadata(self) -> dict[str, str]:
        """What a checkpoint records besides the weights (safetensors metadata)."""
        return {"gramc.softmax": self.softmax}

    def check_checkpoint(self, metadata: dict[str, str], where: str) -> None:
        """ValueError unless the checkpoint at `where` was trained with this model's softmax mode.

        Checkpoints written before the option existed carry no mode and were trained with "vocab".
        """
        saved = metadata.get("gramc.softmax", "vocab")
        if saved != self.softmax:
            raise ValueError(f"{where} was trained with model.softmax={saved} but the config asks for "
                             f"model.softmax={self.softmax}; its scores mean something else under the other "
                             f"normalisation: evaluate it with model.softmax={saved}")

    @property
    def d_model(self) -> int:
        return self.t5.dims.d_model

    # ---- encoder side -----------------------------------------------------------------------

    def item_states(self, item_input: torch.Tensor, item_mask: torch.Tensor, prefix: torch.Tensor | None = None,
                    prefix_mask: torch.Tensor | None = None,
                    chunk: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode item passage rows -> (states [P, K+L, d], mask [P, K+L]); `chunk` rows at a time if > 0
        (for the table of all items at evaluation)."""
        if prefix is not None:
            mask = torch.cat([prefix_mask.bool(), item_mask.bool()], 1)
        else:
            mask = item_mask.bool()
        if item_input.shape[0] == 0:
            return item_input.new_zeros((0, mask.shape[1], self.d_model), dtype=self.t5.shared.weight.dtype), mask
        if chunk and prefix is None and item_input.shape[0] > chunk:
            parts = [self.t5.encode(item_input[i: i + chunk], item_mask[i: i + chunk])
                     for i in range(0, item_input.shape[0], chunk)]
            return torch.cat(parts, 0), mask
        return self.t5.encode(item_input, item_mask, prefix, prefix_mask), mask

    def _prefix(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor] | None:
        if self.prefix is None:
            return None
        if not batch.prefix_enabled:
            raise ValueError("GramC has a collaborative prefix but the batch was collated with the prefix "
                             "disabled (no recent_item_ids); build the Collator from the same config")
        return self.prefix(batch.recent_item_ids)

    def memory(self, batch: Batch, items: tuple[torch.Tensor, torch.Tensor] | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Fused encoder memory `[B, M, d]` and its mask `[B, M]` (real tokens only, then padding).

        `items`: precomputed `(states, mask)` of all items (`item_states(*cache.all_items())`) for a
        batch collated with `items="global"` (then `batch.history` holds dataset item indices).
        """
        memory, mask, _ = self.memory_and_rows(batch, items)
        return memory, mask

    def memory_and_rows(self, batch: Batch, items: tuple[torch.Tensor, torch.Tensor] | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """`memory(batch, items)` and the encoded item rows it was gathered from: `(states [P, L, d],
        mask [P, L])`, one per row of `batch.item_input` (empty with precomputed `items`)."""
        pre = self._prefix(batch)
        in_passage = pre is not None and self.placement in ("user_passage", "every_passage")
        user_states = self.t5.encode(batch.user_input, batch.user_mask, *(pre if in_passage else (None, None)))
        user_mask = torch.cat([pre[1], batch.user_mask.bool()], 1) if in_passage else batch.user_mask.bool()

        history = batch.history
        if items is not None or batch.global_items:
            if items is None:
                raise ValueError("batch was collated with items='global': pass items=(states, mask) of all items")
            if pre is not None and self.placement == "every_passage":
                raise ValueError("precomputed item states cannot carry an every_passage prefix")
            all_states, all_mask = items
            valid = history >= 0
            uniq, inv = torch.unique(history[valid], return_inverse=True)
            row_states, row_mask = all_states[uniq], all_mask[uniq].bool()
            history = torch.full_like(history, -1)
            history[valid] = inv
        elif pre is not None and self.placement == "every_passage":
            owner = batch.item_owner
            if batch.item_input.shape[0] and _on_host(owner) and bool((owner < 0).any()):
                raise ValueError("every_passage placement needs per-sample item rows (item_owner >= 0)")
            row_states, row_mask = self.item_states(batch.item_input, batch.item_mask, pre[0][owner], pre[1][owner])
        else:
            row_states, row_mask = self.item_states(batch.item_input, batch.item_mask)

        width = self.memory_width(batch, pre is not None)
        memory, mask = self._fuse(user_states, user_mask, row_states, row_mask, history, width)
        if pre is not None and self.placement == "memory":
            memory = torch.cat([memory, pre[0].to(memory.dtype)], 1)
            mask = torch.cat([mask, pre[1]], 1)
        rows = (row_states, row_mask) if items is None and not batch.global_items else (row_states[:0], row_mask[:0])
        return memory, mask, rows

    def memory_width(self, batch: Batch, with_prefix: bool) -> int:
        """Memory slots before a `memory`-placed prefix, from the batch's host counts: the most real
        tokens of a sample (user passage, history passages, and the prefix slots this model puts in
        them). Exact, or an upper bound when prefix dropout drops a prefix; 0 when unknown."""
        if not batch.host_counts:
            return 0
        per_passage = with_prefix and self.placement in ("user_passage", "every_passage")
        return max(tokens + (slots * (1 + n if self.placement == "every_passage" else 1) if per_passage else 0)
                   for tokens, slots, n in batch.host_counts)

    def _fuse(self, user_states: torch.Tensor, user_mask: torch.Tensor, row_states: torch.Tensor,
              row_mask: torch.Tensor, history: torch.Tensor, width: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Gather per sample [user passage; history rows in order] keeping only real tokens, and add
        the passage-position embedding. One index_select: no padded [B, N, L, d] tensor is built.

        `width`: memory slots counted on the host (`memory_width`, >= every sample's real tokens);
        0 = the most real tokens of a sample, read from the device (a host sync)."""
        dev = user_states.device
        b, lu, d = user_states.shape
        r, li = row_mask.shape
        n = history.shape[1]
        if n + 1 > self.passage_pos.num_embeddings:
            raise ValueError(f"batch has {n} history positions but the model was built for max_his={self.max_his}")
        w = max(lu, li)
        # flat index (into [user tokens; row tokens]) of each row's real tokens first, stable order
        src_u = torch.arange(b, device=dev)[:, None] * lu + torch.argsort((~user_mask).to(torch.int8), dim=1, stable=True)
        src_i = b * lu + torch.arange(r, device=dev)[:, None] * li + torch.argsort((~row_mask).to(torch.int8), dim=1,
                                                                                 stable=True)
        src = torch.zeros(b + r, w, dtype=torch.long, device=dev)
        src[:b, :lu] = src_u
        src[b:, :li] = src_i
        count = torch.cat([user_mask.sum(1), row_mask.sum(1)])  # real tokens per unified row
        seg_row = torch.cat([torch.arange(b, device=dev)[:, None],
                             torch.where(history >= 0, history + b, torch.full_like(history, -1))], 1)  # [B, S]
        seg_cnt = torch.where(seg_row >= 0, count[seg_row.clamp(min=0)], torch.zeros_like(seg_row))
        cum = seg_cnt.cumsum(1)
        total = cum[:, -1]
        m = width or int(total.max())
        pos = torch.arange(m, device=dev).unsqueeze(0).expand(b, m).contiguous()
        seg = torch.searchsorted(cum, pos, right=True).clamp(max=n)  # segment of each memory slot
        offset = pos - (cum - seg_cnt).gather(1, seg)
        valid = pos < total[:, None]
        row = seg_row.gather(1, seg).clamp(min=0)
        flat = src[row, offset.clamp(0, w - 1)]
        flat = torch.where(valid, flat, torch.zeros_like(flat))
        states = torch.cat([user_states.reshape(b * lu, d), row_states.reshape(r * li, d).to(user_states.dtype)])
        memory = states.index_select(0, flat.reshape(-1)).reshape(b, m, d)  # backward: index_add_
        memory = memory + self.passage_pos(seg).to(memory.dtype)
        memory = memory * valid.unsqueeze(-1).to(memory.dtype)
        return memory, valid

    # ---- decoder side -----------------------------------------------------------------------

    def token_losses(self, batch: Batch, items: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """Per-token cross-entropy `[B, T]` (0 where labels == IGNORE_INDEX), under `model.softmax`."""
        memory, mask = self.memory(batch, items)
        return self._token_losses(self._decode(batch.labels, memory, mask), batch.labels)

    def _decode(self, labels: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Teacher-forced decoder states `[B, T, d]` for `labels [B, T]`."""
        hidden, _ = self.t5.decode_states(shift_right(labels)[:, None, :], memory, mask)
        return hidden[:, 0]

    def _token_losses(self, hidden: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.trie is not None:
            return trie_token_losses(self.t5, hidden, labels, self._trie_on(labels.device), IGNORE_INDEX)
        logits = self.t5.logits(hidden).float()
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE_INDEX,
                               reduction="none")
        return loss.view_as(labels)

    def first_states(self, memory: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """`[B, d]` the decoder's state at the first target position over `memory` (or its
        `t5.cross_kv`): the state that predicts the first ID token, which the dense head reads."""
        start = torch.zeros(mask.shape[0], 1, 1, dtype=torch.long, device=mask.device)
        hidden, _ = self.t5.decode_states(start, memory, mask)
        return hidden[:, 0, 0]

    def dense_users(self, memory: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The dense head's unit user vectors `[B, dim]` from `first_states`."""
        return self.dense.users(self.first_states(memory, mask))

    def dense_losses(self, batch: Batch, hidden: torch.Tensor, rows: tuple[torch.Tensor, torch.Tensor]
                     ) -> torch.Tensor:
        """The dense head's per-sample loss `[B]` (0 for item-indexing samples), from the teacher-forced
        states `hidden [B, T, d]` (position 0 is `dense_users`' state) and the batch's encoded rows."""
        real = batch.users >= 0
        if self.cfg.dense.detach:
            hidden, rows = hidden.detach(), (rows[0].detach(), rows[1])
        items = self.dense.items(rows[0], rows[1], batch.item_index)
        if not bool(real.any()):  # zeros that still reach every parameter of the head (DDP expects them all)
            users = self.dense.users(hidden[:, 0])
            return (users.sum() + items.sum()) * torch.zeros(hidden.shape[0], dtype=users.dtype, device=users.device)
        history = torch.where(batch.history >= 0, batch.item_index[batch.history.clamp(min=0)],
                              torch.full_like(batch.history, -1))
        loss = self.dense.loss(self.dense.users(hidden[real, 0]), items, batch.item_index, batch.targets[real],
                               history[real], self.cfg.dense.negatives)
        return torch.zeros(hidden.shape[0], dtype=loss.dtype, device=loss.device).masked_scatter(real, loss)

    def _trie_on(self, device: torch.device) -> Trie:
        """The training trie on `device`, moved once."""
        if self.trie.device != device:
            self.trie = self.trie.to(device)
        return self.trie

    def forward(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(sum of token cross-entropy over labels != IGNORE_INDEX, number of those tokens).

        Not averaged: the trainer divides by the global token count (all ranks, all accumulation
        steps), so every target token weighs the same whatever the batching. With the dense head,
        each sample's dense loss is added once per target token of the sample, times
        `model.dense.weight`.
        """
        memory, mask, rows = self.memory_and_rows(batch)
        hidden = self._decode(batch.labels, memory, mask)
        loss = self._token_losses(hidden, batch.labels)
        tokens = batch.labels != IGNORE_INDEX
        total = loss.sum()
        if self.dense is not None:  # per target token, as the generation loss: weight * mean dense loss
            total = total + self.cfg.dense.weight * (self.dense_losses(batch, hidden, rows) * tokens.sum(1)).sum()
        return total, tokens.sum()

    # ---- audit ------------------------------------------------------------------------------

    def prefix_norm_stats(self, batch: Batch) -> PrefixNormStats | None:
        """Prefix vector norm vs the user passage's token-embedding norm (None without a prefix)."""
        if self.prefix is None:
            return None
        return self.prefix.norm_stats(batch.recent_item_ids, batch.user_input, batch.user_mask, self.t5.shared)
