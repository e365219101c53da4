"""Prefix tree of every item's target sequence (ID tokens + eos), stored as tensors.

Nodes are numbered breadth-first from the root (0 = the state after the decoder start token).
Each node's children are kept in two `[num_nodes, max_children]` tables, sorted by token:
`child_tokens` (the token on the edge, -1 = no child) and `child_nodes` (the node it leads to,
-1 = no child). The allowed next tokens of a whole batch of beams are therefore one gather
(`child_tokens[nodes]`), on CPU or GPU, with no Python callback and no dense `[nodes, vocab]`
mask. An edge labelled eos (1) leads to a leaf; `item_at_leaf[leaf]` is the item's dataset
index (-1 for inner nodes). IDs may have different lengths, share prefixes, and one ID may be a
prefix of another (the shorter one then ends with an eos edge beside the longer one's token).

`trie_for(item_ids)` builds the trie once per ID table and keeps it in memory, keyed by a
fingerprint of the token sequences.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import ClassVar, Sequence

import numpy as np
import torch

from .tokens import EOS_ID, IGNORE_INDEX


@dataclass
class Trie:
    child_tokens: torch.Tensor  # long [N, C] edge token of each child (sorted), -1 = none
    child_nodes: torch.Tensor  # long [N, C] node each edge leads to, -1 = none
    num_children: torch.Tensor  # long [N]
    item_at_leaf: torch.Tensor  # long [N] item index of a leaf (reached by eos), -1 elsewhere
    depth: torch.Tensor  # long [N] tokens from the root
    max_len: int  # longest target (ID tokens + eos)
    num_items: int
    eos_id: int = EOS_ID
    fingerprint: str = ""

    ROOT: ClassVar[int] = 0  # the node after the decoder start token

    # ---- building ---------------------------------------------------------------------------

    @classmethod
    def build(cls, targets: Sequence[Sequence[int]], eos_id: int = EOS_ID,
              fingerprint: str = "") -> "Trie":
        """Trie of `targets[i]` (item i's tokens, ending with exactly one eos).

        Raises ValueError naming the item when a target is empty, does not end with eos, has an
        eos before its end, holds a negative token, or equals another item's target.
        """
        children: list[dict[int, int]] = [{}]
        depth = [0]
        leaf_item: dict[int, int] = {}
        for i, seq in enumerate(targets):
            seq = [int(t) for t in seq]
            if not seq or seq[-1] != eos_id:
                raise ValueError(f"item {i}: target {seq} must end with eos ({eos_id})")
            if eos_id in seq[:-1]:
                raise ValueError(f"item {i}: target {seq} has eos ({eos_id}) before its end")
            if min(seq) < 0:
                raise ValueError(f"item {i}: target {seq} has a negative token")
            node = 0
            for t in seq:
                nxt = children[node].get(t)
                if nxt is None:
                    nxt = len(children)
                    children[node][t] = nxt
                    children.append({})
                    depth.append(depth[node] + 1)
                node = nxt
            if node in leaf_item:
                raise ValueError(f"items {leaf_item[node]} and {i} have the same ID tokens {seq[:-1]}; "
                                 "item IDs must be unique (run `gramc ids check`)")
            leaf_item[node] = i

        # renumber breadth-first so that nodes of one depth are contiguous
        order = [0]
        for node in order:
            order.extend(children[node][t] for t in sorted(children[node]))
        new_id = {old: new for new, old in enumerate(order)}
        n = len(order)
        width = max(1, max(len(c) for c in children))
        # one entry per edge (row = parent, col = rank among its children), scattered at once
        rows: list[int] = []
        cols: list[int] = []
        toks: list[int] = []
        kids: list[int] = []
        for new, old in enumerate(order):
            for col, t in enumerate(sorted(children[old])):
                rows.append(new)
                cols.append(col)
                toks.append(t)
                kids.append(new_id[children[old][t]])
        r, c = np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)
        tok_arr = np.full((n, width), -1, dtype=np.int64)
        node_arr = np.full((n, width), -1, dtype=np.int64)
        tok_arr[r, c] = toks
        node_arr[r, c] = kids
        child_tokens = torch.from_numpy(tok_arr)
        child_nodes = torch.from_numpy(node_arr)
        num_children = (child_tokens >= 0).sum(1)
        depth_t = torch.tensor([depth[old] for old in order], dtype=torch.long)
        item_at_leaf = torch.full((n,), -1, dtype=torch.long)
        if leaf_item:
            item_at_leaf[torch.tensor([new_id[o] for o in leaf_item])] = torch.tensor(list(leaf_item.values()))
        max_len = max((len(s) for s in targets), default=0)
        return cls(child_tokens, child_nodes, num_children, item_at_leaf, depth_t, max_len,
                   len(targets), eos_id, fingerprint)

    # ---- queries ----------------------------------------------------------------------------

    @property
    def num_nodes(self) -> int:
        return int(self.child_tokens.shape[0])

    @property
    def max_children(self) -> int:
        return int(self.child_tokens.shape[1])

    @property
    def device(self) -> torch.device:
        return self.child_tokens.device

    def to(self, device: torch.device | str) -> "Trie":
        if torch.device(device) == self.device:
            return self
        return Trie(self.child_tokens.to(device), self.child_nodes.to(device), self.num_children.to(device),
                    self.item_at_leaf.to(device), self.depth.to(device), self.max_len, self.num_items,
                    self.eos_id, self.fingerprint)

    def allowed(self, nodes: torch.Tensor, trim: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(tokens, next nodes) of the children of `nodes` (any shape), each `[*nodes.shape, C]`, -1 = none.

        Nodes < 0 (dead beams) have no children. `C` is `max_children`, or with `trim` the most
        children any of `nodes` has (children are packed left, so the cut loses none).
        """
        safe = nodes.clamp(min=0)
        toks = self.child_tokens[safe]
        nxt = self.child_nodes[safe]
        if trim:
            width = max(1, int(self.num_children[safe].max())) if nodes.numel() else 1
            toks, nxt = toks[..., :width], nxt[..., :width]
        dead = (nodes < 0).unsqueeze(-1)
        return toks.masked_fill(dead, -1), nxt.masked_fill(dead, -1)

    def prefix_nodes(self, labels: torch.Tensor, ignore: int = IGNORE_INDEX) -> torch.Tensor:
        """Node before each token of `labels [B, T]` (targets from the root; `ignore` = padding): `[B, T]`.

        -1 at padding. Raises ValueError naming the row when a target leaves the trie (an ID that is
        not in the table the trie was built from).
        """
        B, T = labels.shape
        out = torch.full((B, T), -1, dtype=torch.long, device=labels.device)
        node = torch.zeros(B, dtype=torch.long, device=labels.device)
        for t in range(T):
            tok = labels[:, t]
            real = tok != ignore
            out[:, t] = torch.where(real, node, torch.full_like(node, -1))
            hit = (self.child_tokens[node.clamp(min=0)] == tok.unsqueeze(1)) & real.unsqueeze(1) & (node >= 0).unsqueeze(1)
            bad = real & ~hit.any(1)
            if bool(bad.any()):
                row = int(bad.nonzero()[0])
                raise ValueError(f"target row {row} ({labels[row][labels[row] != ignore].tolist()}) is not an item of "
                                 f"the trie (token {int(tok[row])} at position {t} is no child of its prefix); "
                                 "the trie must be built from the same ID table as the targets")
            col = hit.long().argmax(1)
            node = torch.where(real, self.child_nodes[node.clamp(min=0), col], torch.full_like(node, -1))
        return out

    def mask(self, nodes: torch.Tensor, vocab_size: int) -> torch.Tensor:
        """Additive mask `[*nodes.shape, vocab_size]`: 0 for allowed tokens, -inf elsewhere (scatter)."""
        toks, _ = self.allowed(nodes)
        out = torch.full((*nodes.shape, vocab_size + 1), float("-inf"), device=nodes.device)
        # invalid slots (-1) scatter into the extra last column, dropped below
        idx = torch.where(toks >= 0, toks, torch.full_like(toks, vocab_size))
        out.scatter_(-1, idx, 0.0)
        return out[..., :vocab_size]

    def walk(self, seq: Sequence[int]) -> int:
        """Node reached by the token sequence `seq` from the root, or -1 if it leaves the trie."""
        node = 0
        for t in seq:
            row = self.child_tokens[node]
            hit = (row == int(t)).nonzero()
            if len(hit) == 0:
                return -1
            node = int(self.child_nodes[node, int(hit[0])])
        return node

    def allowed_tokens(self, seq: Sequence[int]) -> list[int]:
        """Allowed next tokens after the prefix `seq` (no start token), [] if `seq` left the trie."""
        node = self.walk(seq)
        if node < 0:
            return []
        k = int(self.num_children[node])
        return [int(t) for t in self.child_tokens[node, :k]]

    def item_of(self, seq: Sequence[int]) -> int | None:
        """Item whose target is `seq` (with or without the final eos), else None."""
        seq = list(seq)
        if not seq or seq[-1] != self.eos_id:
            seq.append(self.eos_id)
        node = self.walk(seq)
        if node < 0:
            return None
        item = int(self.item_at_leaf[node])
        return item if item >= 0 else None

    def hf_prefix_allowed_tokens_fn(self, start_id: int = 0, dead_token: int = 0):
        """`prefix_allowed_tokens_fn(batch_id, sent)` for Hugging Face `generate` (sent starts with start_id).

        transformers 5 refuses an empty list, so a prefix outside the trie (a placeholder beam or
        one already past its eos) may only continue with `dead_token` (pad); such beams carry
        scores of about -1e9 or -inf and never outrank a real hypothesis.
        """
        def fn(batch_id: int, sent: torch.Tensor) -> list[int]:
            toks = sent.tolist()
            allowed = self.allowed_tokens(toks[1:]) if toks and toks[0] == start_id else []
            return allowed or [dead_token]
        return fn


def targets_fingerprint(targets: Sequence[Sequence[int]], eos_id: int = EOS_ID) -> str:
    """sha256 of the token sequences (the trie's cache key)."""
    h = hashlib.sha256(f"eos={eos_id}".encode())
    for seq in targets:
        h.update(("|" + ",".join(str(int(t)) for t in seq)).encode())
    return h.hexdigest()


_CACHE: "OrderedDict[str, Trie]" = OrderedDict()
_CACHE_SIZE = 4


def trie_for(item_ids, eos_id: int | None = None) -> Trie:
    """The trie of an `ItemIds` (anything with `target(i)` and `tokens`), built once and cached.

    The key is the ID table's own `fingerprint` when it has one (`ItemIds` hashes its targets once),
    else a sha256 of the targets; `eos_id` defaults to the table's `eos_id` (1 for T5 vocabularies).
    """
    own_eos = int(getattr(item_ids, "eos_id", EOS_ID))
    eos_id = own_eos if eos_id is None else eos_id
    targets = None
    key = getattr(item_ids, "fingerprint", "") if eos_id == own_eos else ""
    if not key:
        targets = _targets(item_ids)
        key = targets_fingerprint(targets, eos_id)
    key = f"{key}|eos={eos_id}"
    hit = _CACHE.get(key)
    if hit is not None:
        _CACHE.move_to_end(key)
        return hit
    trie = Trie.build(_targets(item_ids) if targets is None else targets, eos_id=eos_id, fingerprint=key)
    _CACHE[key] = trie
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return trie


def _targets(item_ids) -> list[tuple[int, ...]]:
    return [tuple(item_ids.target(i)) for i in range(len(item_ids.tokens))]
