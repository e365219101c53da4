"""GRAM-C inputs: passages tokenised once (`PassageCache`), batches built by gathering (`Collator`).

Per sample GRAM reads one *user passage* and one *item passage* per history item:

    user:  What would user purchase after ID_1 ; ID_2 ; ... ?</s>
    item:  item: ID; similar items: ID_a, ID_b, ...; <item text></s>

IDs enter as their token ids (`ItemIds.tokens[i]`: one token per level, no `|` separators),
never as re-tokenised text. The tokens equal those of GRAM's rendered string after its `|` tokens
are dropped: `;` and `,` written against an ID are glued to its last level (`Tokenizer.glue`), the
user passage's ` ; ` and ` ?` stand alone, `|` tokens leave the item text too (checked on Beauty in
tests/test_model_gram_passages.py). Every item passage and every ID is tokenised exactly once, when
the cache is built; the collator only slices and pads tensors (no tokenizer call per step).

Token budgets are explicit per field: the item's own ID is never cut; similar items are dropped
whole (least similar first) only when the IDs alone overflow; the item text is truncated first.
The user passage keeps the most recent IDs (whole oldest IDs are dropped). Every passage ends
with eos (1). How many tokens of each field were cut is recorded (`PassageCache.truncation`).
"""

from __future__ import annotations

import hashlib
import json
import zlib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Literal, Protocol, Sequence

import torch
from tqdm import tqdm

from ..config import Config, ModelConfig
from ..data.splits import Sample
from ..ids.tokens import EOS_ID, IGNORE_INDEX
from ..io import torch_save

CACHE_VERSION = 3  # the file's layout (3: `own_len`)
TOKENS_VERSION = 2  # what the passage tokens are (2: separators glued to the preceding ID as in GRAM's string)

USER_HEAD = "What would user purchase after"
USER_SEP = ";"
USER_TAIL = "?"
ITEM_HEAD = "item:"
SIMILAR_HEAD = "similar items:"
FIELD_SEP = ";"
SIMILAR_SEP = ","


class TextTokenizer(Protocol):
    """What the cache needs from `gramc.ids.tokenizer.Tokenizer`."""

    fingerprint: str

    def encode(self, text: str) -> list[int]: ...

    def glue(self, token: int, mark: str) -> list[int]: ...

    def separator_ids(self) -> set[int]: ...


class IdTokens(Protocol):
    """What the cache needs from `gramc.ids.itemids.ItemIds`."""

    tokens: Sequence[Sequence[int]]

    def target(self, i: int) -> Sequence[int]: ...


@dataclass
class FieldTruncation:
    """Tokens of one passage field that were kept and cut."""

    kept: int = 0
    cut: int = 0

    @property
    def share_cut(self) -> float:
        total = self.kept + self.cut
        return self.cut / total if total else 0.0


# --------------------------------------------------------------------------------------------
# Pre-tokenised passages
# --------------------------------------------------------------------------------------------


@dataclass
class PassageCache:
    """Every item passage, ID and target tokenised once, stored as padded tensors.

    `item_table[i, :item_len[i]]` is item i's passage (ends with eos), `target_table[i]` its
    target (ID tokens + eos, IGNORE_INDEX padded); `item_table[i, own_len[i]:item_len[i]]` is the
    passage without the item's own ID (`bare_passage`, what the item-indexing task reads). The user passage is assembled per sample from the
    cached ID tokens (`user_passage`), which is list concatenation, not tokenisation.
    """

    item_table: torch.Tensor  # int32 [num_items, Lmax], 0 padded
    item_len: torch.Tensor  # int64 [num_items]
    target_table: torch.Tensor  # int64 [num_items, Tmax], IGNORE_INDEX padded
    target_len: torch.Tensor  # int64 [num_items]
    id_tokens: list[tuple[int, ...]]  # dataset index -> ID tokens (no eos)
    user_head: tuple[int, ...]
    user_sep: tuple[int, ...]
    user_tail: tuple[int, ...]
    user_passage_len: int
    passage_len: int
    # per item: tokens kept / cut of the text and of the similar-item IDs
    text_kept: torch.Tensor
    text_cut: torch.Tensor
    similar_kept: torch.Tensor
    similar_cut: torch.Tensor
    own_len: torch.Tensor  # int64 [num_items]: tokens of the passage's leading "item: <own ID>;" (0 without id_linking)
    fingerprint: str = ""

    @property
    def num_items(self) -> int:
        return int(self.item_table.shape[0])

    # ---- building ---------------------------------------------------------------------------

    @staticmethod
    def compute_fingerprint(tokenizer: TextTokenizer, item_ids: IdTokens, texts: Sequence[str],
                            similar: Sequence[Sequence[int]] | None, cfg: ModelConfig) -> str:
        """sha256 of everything the cached tensors depend on (tokenizer, IDs, texts, config)."""
        h = hashlib.sha256()
        h.update(f"v{TOKENS_VERSION}|{getattr(tokenizer, 'fingerprint', '')}".encode())
        settings = {"passage_len": cfg.passage_len, "user_passage_len": cfg.user_passage_len,
                    "similar_items": cfg.similar_items, "id_linking": cfg.id_linking,
                    "target_len": cfg.target_len}
        h.update(json.dumps(settings, sort_keys=True).encode())
        for i in range(len(item_ids.tokens)):
            h.update(("|" + ",".join(map(str, item_ids.tokens[i]))).encode())
            h.update(("#" + ",".join(map(str, item_ids.target(i)))).encode())
        for t in texts:
            h.update(b"\x00" + t.encode("utf-8"))
        if similar is not None and cfg.similar_items > 0:
            for s in similar:
                h.update(("\x01" + ",".join(map(str, s[: cfg.similar_items]))).encode())
        return h.hexdigest()

    @classmethod
    def build(cls, tokenizer: TextTokenizer, item_ids: IdTokens, texts: Sequence[str],
              similar: Sequence[Sequence[int]] | None, cfg: ModelConfig,
              progress: bool = True) -> "PassageCache":
        """Tokenise every item passage once (the only place the tokenizer is called)."""
        n = len(item_ids.tokens)
        _check_passage_inputs(n, texts, similar, cfg.similar_items)
        k = cfg.similar_items
        enc = tokenizer.encode
        item_head = tuple(enc(ITEM_HEAD)) if cfg.id_linking else ()
        sim_head = tuple(enc(SIMILAR_HEAD))
        ids = [tuple(int(t) for t in item_ids.tokens[i]) for i in range(n)]
        glued = _Glued(tokenizer, ids)
        drop = tokenizer.separator_ids()  # GRAM removes every `|` / `▁|` token, in the text too
        budget = cfg.passage_len - 1  # eos is always the last token

        batch_encode = getattr(tokenizer, "encode_batch", None)  # Rust batch encoding when available
        text_tokens = batch_encode(list(texts)) if batch_encode is not None else None
        passages: list[list[int]] = []
        text_kept = torch.zeros(n, dtype=torch.long)
        text_cut = torch.zeros(n, dtype=torch.long)
        sim_kept = torch.zeros(n, dtype=torch.long)
        sim_cut = torch.zeros(n, dtype=torch.long)
        own_len = torch.zeros(n, dtype=torch.long)
        for i in tqdm(range(n), desc="tokenise item passages", unit="item", disable=not progress,
                      mininterval=1.0):
            text = [t for t in (text_tokens[i] if text_tokens is not None else enc(texts[i])) if t not in drop
                    ] if texts[i] else []
            neigh = list(similar[i][:k]) if k > 0 else []
            own = glued(i, FIELD_SEP if (neigh or text) else "") if cfg.id_linking else ()
            out = list(item_head + own)
            own_len[i] = len(out)
            if len(out) > budget:
                raise ValueError(f"model.passage_len={cfg.passage_len} cannot hold item {i}'s own ID "
                                 f"({len(out)} tokens + eos); raise model.passage_len")
            if neigh:
                kept, cut = _fit_similar(neigh, glued, budget - len(out) - len(sim_head))
                part = [t for n_, j in enumerate(kept)
                        for t in glued(j, SIMILAR_SEP if n_ + 1 < len(kept) else FIELD_SEP)]
                if part:
                    out += sim_head + tuple(part)
                sim_kept[i] = len(part)
                sim_cut[i] = cut
            room = budget - len(out)
            if text and room > 0:
                out += text[:room]
                text_kept[i] = min(room, len(text))
                text_cut[i] = max(0, len(text) - room)
            else:
                text_cut[i] = len(text)
            out.append(EOS_ID)
            passages.append(out)

        item_table, item_len = _padded(passages, 0, torch.int32)
        target_table, target_len = _padded(_targets(item_ids, n, cfg.target_len), IGNORE_INDEX, torch.long)
        return cls(item_table=item_table, item_len=item_len, target_table=target_table,
                   target_len=target_len, id_tokens=ids, user_head=tuple(enc(USER_HEAD)),
                   user_sep=tuple(enc(USER_SEP)), user_tail=tuple(enc(USER_TAIL)),
                   user_passage_len=cfg.user_passage_len, passage_len=cfg.passage_len,
                   text_kept=text_kept, text_cut=text_cut, similar_kept=sim_kept, similar_cut=sim_cut,
                   own_len=own_len, fingerprint=cls.compute_fingerprint(tokenizer, item_ids, texts, similar, cfg))

    # ---- persistence ------------------------------------------------------------------------

    def save(self, path: str | Path) -> None:
        """Write the cache atomically (torch.save of its fields)."""
        torch_save({"version": CACHE_VERSION, **{f.name: getattr(self, f.name) for f in fields(self)}}, path)

    @classmethod
    def load(cls, path: str | Path) -> "PassageCache":
        obj = torch.load(path, map_location="cpu", weights_only=False)
        if not isinstance(obj, dict) or obj.get("version") != CACHE_VERSION:
            raise ValueError(f"{path}: not a gramc passage cache of version {CACHE_VERSION}; delete it to rebuild")
        obj.pop("version")
        return cls(**obj)

    @classmethod
    def load_or_build(cls, path: str | Path | None, tokenizer: TextTokenizer, item_ids: IdTokens,
                      texts: Sequence[str], similar: Sequence[Sequence[int]] | None, cfg: ModelConfig,
                      progress: bool = True) -> "PassageCache":
        """Reuse the cache at `path` when its fingerprint matches, else build (and save) it."""
        if path is not None and Path(path).is_file():
            fp = cls.compute_fingerprint(tokenizer, item_ids, texts, similar, cfg)
            try:
                cached = cls.load(path)
            except Exception:  # unreadable or old version: rebuild below
                cached = None
            if cached is not None and cached.fingerprint == fp:
                return cached
        cache = cls.build(tokenizer, item_ids, texts, similar, cfg, progress=progress)
        if path is not None:
            cache.save(path)
        return cache

    # ---- per-sample pieces ------------------------------------------------------------------

    def user_passage(self, history: Sequence[int],
                     order: Literal["recent_first", "oldest_first"] = "recent_first") -> tuple[list[int], int, int]:
        """The user passage of a history (oldest first) -> (tokens, ID tokens kept, ID tokens cut).

        Keeps the most recent IDs that fit in `user_passage_len` (whole IDs; the oldest go first).
        """
        budget = self.user_passage_len - len(self.user_head) - len(self.user_tail) - 1
        kept: list[int] = []  # item indices, most recent first
        used = 0
        cut = 0
        for item in reversed(history):
            cost = len(self.id_tokens[item]) + (len(self.user_sep) if kept else 0)
            if not cut and used + cost <= budget:
                kept.append(item)
                used += cost
            else:
                cut += len(self.id_tokens[item])
        if order == "oldest_first":
            kept.reverse()
        out = list(self.user_head)
        for n, item in enumerate(kept):
            if n:
                out += self.user_sep
            out += self.id_tokens[item]
        out += self.user_tail
        out.append(EOS_ID)
        return out, sum(len(self.id_tokens[i]) for i in kept), cut

    def bare_passage(self, item: int) -> list[int]:
        """Item `item`'s passage without its own ID (similar items, text, eos)."""
        return self.item_table[item, int(self.own_len[item]): int(self.item_len[item])].tolist()

    def item_rows(self, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded passages of the given items, trimmed to their longest: (input [P, L], mask [P, L])."""
        lens = self.item_len[items]
        width = int(lens.max()) if len(items) else 1
        ids = self.item_table[items, :width].long()
        mask = torch.arange(width).unsqueeze(0) < lens.unsqueeze(1)
        return ids, mask

    def all_items(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Passages of every item (for `items="global"` evaluation): (input [I, L], mask [I, L])."""
        return self.item_rows(torch.arange(self.num_items))

    def truncation(self, samples: Sequence[Sample] | None = None, max_his: int = 20,
                   order: Literal["recent_first", "oldest_first"] = "recent_first") -> dict[str, FieldTruncation]:
        """Share of tokens truncated per field: item text, similar-item IDs (over all items, or
        over the history items of `samples`), and user-passage IDs (over `samples`)."""
        if samples is None:
            counts = torch.ones(self.num_items, dtype=torch.long)
        else:
            counts = torch.zeros(self.num_items, dtype=torch.long)
            for s in samples:
                for i in s.history[-max_his:]:
                    counts[i] += 1
        out = {
            "item_text": FieldTruncation(int((self.text_kept * counts).sum()), int((self.text_cut * counts).sum())),
            "similar_ids": FieldTruncation(int((self.similar_kept * counts).sum()),
                                           int((self.similar_cut * counts).sum())),
        }
        if samples is not None:
            user = FieldTruncation()
            for s in samples:
                _, kept, cut = self.user_passage(s.history[-max_his:], order)
                user.kept += kept
                user.cut += cut
            out["user_ids"] = user
        return out


def _check_passage_inputs(n: int, texts: Sequence[str], similar: Sequence[Sequence[int]] | None, k: int) -> None:
    """One text per item, and one similar-item list per item when `k` (model.similar_items) > 0."""
    if len(texts) != n:
        raise ValueError(f"PassageCache: {len(texts)} item texts for {n} item IDs; expected one text per item")
    if k > 0 and similar is None:
        raise ValueError("PassageCache: model.similar_items > 0 but no similar-item lists were given "
                         "(set model.similar_items=0 or provide model.similar_source)")
    if k > 0 and len(similar) != n:
        raise ValueError(f"PassageCache: {len(similar)} similar-item lists for {n} items")


def _targets(item_ids: IdTokens, n: int, target_len: int) -> list[tuple[int, ...]]:
    """Every item's target tokens, checked: each ends with eos and fits `target_len` (IDs are never cut)."""
    targets = [tuple(int(t) for t in item_ids.target(i)) for i in range(n)]
    for i, t in enumerate(targets):
        if not t or t[-1] != EOS_ID:
            raise ValueError(f"ItemIds.target({i}) must end with eos ({EOS_ID}), got {t}")
        if len(t) > target_len:
            raise ValueError(f"item {i}'s target has {len(t)} tokens > model.target_len={target_len}; "
                             "IDs are never cut: raise model.target_len")
    return targets


def _padded(rows: Sequence[Sequence[int]], fill: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of different lengths as one (n, longest) table padded with `fill`, and their lengths."""
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
    table = torch.full((len(rows), int(lengths.max()) if len(rows) else 1), fill, dtype=dtype)
    for i, r in enumerate(rows):
        table[i, : len(r)] = torch.tensor(r, dtype=dtype)
    return table, lengths


class _Glued:
    """An ID's tokens followed by a mark written against it (`ID;`, `ID,`), memoised per (item, mark).

    In GRAM's string the mark touches the ID's last level, so it joins that level's word instead of
    starting a new one (`▁profound;` -> `▁profound`, `;`; a separate `;` would be `▁`, `;`).
    """

    def __init__(self, tokenizer: TextTokenizer, ids: Sequence[tuple[int, ...]]) -> None:
        self.tokenizer = tokenizer
        self.ids = ids
        self.memo: dict[tuple[int, str], tuple[int, ...]] = {}

    def __call__(self, item: int, mark: str) -> tuple[int, ...]:
        if not mark:
            return self.ids[item]
        key = (item, mark)
        if key not in self.memo:
            t = self.ids[item]
            self.memo[key] = t[:-1] + tuple(self.tokenizer.glue(t[-1], mark))
        return self.memo[key]


def _fit_similar(neigh: Sequence[int], glued: _Glued, room: int) -> tuple[list[int], int]:
    """The most similar neighbours whose IDs fit in `room` tokens (`ID, ID, ..., ID;`), and the number
    of ID tokens of those dropped (whole IDs, least similar first)."""
    kept: list[int] = []
    used = 0
    cut = 0
    for j in neigh:
        if not cut and used + len(glued(j, FIELD_SEP)) <= room:
            kept.append(j)
            used += len(glued(j, SIMILAR_SEP))
        else:
            cut += len(glued.ids[j])
    return kept, cut


# --------------------------------------------------------------------------------------------
# Batches
# --------------------------------------------------------------------------------------------


@dataclass
class Batch:
    """One collated batch; see docs/architecture.md for the field contract."""

    user_input: torch.Tensor  # [B, Lu]
    user_mask: torch.Tensor  # [B, Lu] bool
    item_input: torch.Tensor  # [P, L] item passage rows (P = 0 with items="global")
    item_mask: torch.Tensor  # [P, L] bool
    history: torch.Tensor  # [B, N] row of the item table per history position (model.history_order), -1 pad
    item_owner: torch.Tensor  # [P] sample owning each row, -1 when rows are shared
    labels: torch.Tensor  # [B, T] target tokens + eos, IGNORE_INDEX pad
    recent_item_ids: torch.Tensor  # [B, K] GCN rows of the K most recent history items (recent first), 0 pad
    users: torch.Tensor  # [B] user indices
    targets: torch.Tensor  # [B] target item indices
    prefix_enabled: bool = False
    item_index: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))  # [P] dataset item of each row
    global_items: bool = False  # history indexes a table of all items (dataset indices)
    # per sample, counted on the host by the Collator: (real tokens of the user and history
    # passages, real prefix slots, history passages), so the model sizes its memory without a
    # device read (`GramC.memory_width`); () = unknown (counted on the device)
    host_counts: tuple[tuple[int, int, int], ...] = ()

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "Batch":
        moved = {}
        for f in fields(self):
            v = getattr(self, f.name)
            moved[f.name] = v.to(device, non_blocking=non_blocking) if isinstance(v, torch.Tensor) else v
        return Batch(**moved)


class Collator:
    """`list[Sample] -> Batch` by gathering cached tensors (no tokenisation).

    * `dedupe=True` ("sequence-level", default when `train.batching == "sequence"`): each distinct
      history item of the batch is one passage row, shared by every sample that has it.
    * `dedupe=False` (per-sample, exactly GRAM's passages): one row per (sample, history item).
    * placement `every_passage` always gives per-sample rows (the prefix depends on the sample).
    * `items="global"`: no item rows; `history` holds dataset item indices into a precomputed
      table of all items (evaluation encodes every item passage once per checkpoint).
    """

    def __init__(self, cache: PassageCache, cfg: Config, gcn_rows: torch.Tensor | None = None,
                 dedupe: bool | None = None, items: Literal["batch", "global"] = "batch") -> None:
        self.cache = cache
        self.max_his = cfg.data.max_his
        self.order = cfg.model.history_order
        self.k = cfg.model.prefix.num_items
        self.prefix_enabled = cfg.model.prefix.enabled
        self.placement = cfg.model.prefix.placement
        if items not in ("batch", "global"):
            raise ValueError(f"Collator items must be 'batch' or 'global', got {items!r}")
        if items == "global" and self.prefix_enabled and self.placement == "every_passage":
            raise ValueError("items='global' cannot be used with model.prefix.placement=every_passage: "
                             "item passages then depend on the sample's prefix")
        self.items = items
        self.dedupe = (cfg.train.batching == "sequence") if dedupe is None else dedupe
        if self.prefix_enabled and self.placement == "every_passage":
            self.dedupe = False
        if self.prefix_enabled:
            if gcn_rows is None:
                raise ValueError("model.prefix.enabled is true but no GCN rows were given to the Collator")
            if len(gcn_rows) != cache.num_items:
                raise ValueError(f"gcn_rows has {len(gcn_rows)} entries for {cache.num_items} items")
        self.gcn_rows = gcn_rows.long() if gcn_rows is not None else None
        # the dense head's training candidates: every sample's target is an item row, plus uniform draws
        self.dense = cfg.model.dense.enabled and items == "batch"
        self.negatives = cfg.model.dense.negatives if self.dense else 0
        self.seed = cfg.run.seed

    def _ordered(self, history: Sequence[int]) -> list[int]:
        h = list(history[-self.max_his:])
        return h[::-1] if self.order == "recent_first" else h

    def _extra_items(self, samples: Sequence[Sample]) -> list[int]:
        """Items the dense head needs as rows besides the histories: the targets of the samples it
        trains on, then `model.dense.negatives` uniform draws (seeded by the batch's content, so a
        batch gets the same draws on every rank, in every run and on resume)."""
        if not self.dense:
            return []
        extra = [s.target for s in samples if not s.indexing]
        if self.negatives:
            key = zlib.crc32(repr([(s.user, s.target) for s in samples]).encode())
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + key)
            extra += torch.randint(self.cache.num_items, (self.negatives,), generator=g).tolist()
        return extra

    def _user_passage(self, s: Sample) -> list[int]:
        """The user passage of a sample; an item-indexing sample reads its item's passage without its ID."""
        if s.indexing:
            return self.cache.bare_passage(s.target)
        return self.cache.user_passage(s.history[-self.max_his:], self.order)[0]

    def _item_rows(self, samples: Sequence[Sample], hists: list[list[int]]) -> tuple[torch.Tensor, ...]:
        """(history, row_items, owner, item_input, item_mask) of the batch's item passages.

        `history[r, j]` is the row of sample r's j-th history item (-1 = padding); with global
        items it is the item itself and no passage rows are built. Deduplicated rows are shared by
        the batch (owner -1); otherwise each sample owns its rows, and extra items come last.
        """
        history = torch.full((len(samples), max(1, max(len(h) for h in hists))), -1, dtype=torch.long)
        if self.items == "global":
            for r, h in enumerate(hists):
                history[r, : len(h)] = torch.tensor(h, dtype=torch.long)
            empty = torch.zeros(0, dtype=torch.long)
            return history, empty, empty.clone(), torch.zeros(0, 1, dtype=torch.long), torch.zeros(0, 1, dtype=torch.bool)
        if self.dedupe:
            distinct: dict[int, int] = {}
            for r, h in enumerate(hists):
                history[r, : len(h)] = torch.tensor([distinct.setdefault(i, len(distinct)) for i in h],
                                                    dtype=torch.long)
            for i in self._extra_items(samples):
                distinct.setdefault(i, len(distinct))
            row_items = torch.tensor(list(distinct), dtype=torch.long)
            owner = torch.full((len(distinct),), -1, dtype=torch.long)
        else:
            items_flat: list[int] = []
            owners: list[int] = []
            for r, h in enumerate(hists):
                history[r, : len(h)] = torch.arange(len(items_flat), len(items_flat) + len(h))
                items_flat += h
                owners += [r] * len(h)
            extra = self._extra_items(samples)
            items_flat += extra
            owners += [-1] * len(extra)
            row_items = torch.tensor(items_flat, dtype=torch.long)
            owner = torch.tensor(owners, dtype=torch.long)
        item_input, item_mask = self.cache.item_rows(row_items)
        return history, row_items, owner, item_input, item_mask

    def _recent_rows(self, samples: Sequence[Sample]) -> torch.Tensor:
        """(batch, k) LightGCN rows of each sample's k most recent items, most recent first; 0 = none."""
        recent = torch.zeros(len(samples), self.k, dtype=torch.long)
        if self.gcn_rows is not None:
            for r, s in enumerate(samples):
                last = list(s.history[-self.max_his:][-self.k:])[::-1]
                if last:
                    recent[r, : len(last)] = self.gcn_rows[torch.tensor(last, dtype=torch.long)]
        return recent

    def __call__(self, samples: Sequence[Sample]) -> Batch:
        if not samples:
            raise ValueError("Collator got an empty list of samples")
        cache = self.cache
        hists = [self._ordered(s.history) for s in samples]

        user_input, lens = _padded([self._user_passage(s) for s in samples], 0, torch.long)
        user_mask = torch.arange(user_input.shape[1]).unsqueeze(0) < lens.unsqueeze(1)
        history, row_items, owner, item_input, item_mask = self._item_rows(samples, hists)
        targets = torch.tensor([s.target for s in samples], dtype=torch.long)
        labels = cache.target_table[targets]
        labels = labels[:, : int(cache.target_len[targets].max())].clone()

        recent = self._recent_rows(samples)
        item_len = cache.item_len
        passage_tokens = [int(lens[r]) + (int(item_len[torch.tensor(h, dtype=torch.long)].sum()) if h else 0)
                          for r, h in enumerate(hists)]
        counts = tuple(zip(passage_tokens, (recent != 0).sum(1).tolist(), [len(h) for h in hists]))

        return Batch(user_input=user_input, user_mask=user_mask, item_input=item_input, item_mask=item_mask,
                     history=history, item_owner=owner, labels=labels, recent_item_ids=recent,
                     users=torch.tensor([s.user for s in samples], dtype=torch.long), targets=targets,
                     prefix_enabled=self.prefix_enabled, item_index=row_items,
                     global_items=self.items == "global", host_counts=counts)

