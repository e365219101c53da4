"""Next-item recommendations from a trained run: item IDs (ASINs) in, ranked items out.

    rec = Recommender.from_run("runs/beauty")
    rec.recommend(["B000052YQ0", "B0009RF9E2"], k=10)  # history oldest first
    -> [Recommendation(item_id="B00...", score=-1.23, title="..."), ...]

Each call encodes only the passages it needs (the user passage and the history's item passages;
histories of one `recommend_many` call share their item rows) and runs the same trie-constrained
beam search as `gramc evaluate` (`gramc.eval.search.search_batch`) (`eval.beams`, at least k; `eval.length_penalty`;
`eval.exclude_history`). Unknown item IDs in a history are an error naming them, or are skipped
with a warning when `eval.unknown_history=skip`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..errors import GramcError
from ..config import Config
from ..data.splits import Sample
from ..eval.evaluate import encode_all_items, fusion_weight, search_collator
from ..eval.fusion import Fusion, candidates_batch, fused_order
from ..eval.search import search_batch
from ..ids.trie import trie_for
from ..model.inputs import Collator
from ..model.runs import load_model_from_run


class UnknownItemsError(GramcError, ValueError):
    """A history names item IDs the run's dataset does not know."""


@dataclass
class Recommendation:
    item_id: str
    score: float  # beam score (sum of log-probabilities / length**eval.length_penalty)
    title: str


class HistoryTypeError(GramcError, TypeError):
    """A history is not a list of item-ID strings."""


def check_history(history: Sequence[str], example: str) -> None:
    """HistoryTypeError unless `history` is a sequence of item-ID strings (oldest first)."""
    if isinstance(history, (str, bytes)):
        raise HistoryTypeError(f"a history is a list of item IDs, not one string (a str would be read "
                               f"character by character): pass [{history!r}] or {str(history).split(',')!r}")
    if not isinstance(history, (list, tuple)) and not (hasattr(history, "__iter__") and hasattr(history, "__len__")):
        raise HistoryTypeError(f"a history is a list of item IDs (oldest first, such as [{example!r}]), got "
                               f"{type(history).__name__} {history!r}")
    for x in history:
        if not isinstance(x, str):
            hint = (f"; to use dataset indices, map them with rec.assets.ds.item_ids[i] (e.g. {example!r})"
                    if isinstance(x, int) or type(x).__name__.startswith("int") else "")
            raise HistoryTypeError(f"a history holds item IDs as strings (such as {example!r}), got "
                                   f"{type(x).__name__} {x!r}{hint}")


class Recommender:
    """A trained GRAM-C model with its assets, ready to recommend."""

    def __init__(self, model, assets, cfg: Config) -> None:
        self.model = model.eval()
        self.assets = assets
        self.cfg = cfg
        self.device = next(model.parameters()).device
        self.trie = trie_for(assets.item_ids).to(self.device)
        # eval.fusion: the scorers (with every item encoded once when the dense head scores), the weight
        self.scorers, self.items, self.fusion = None, None, None
        if cfg.eval.fusion.enabled:
            fusion = Fusion.for_run(cfg, assets)
            weight, record = fusion_weight(model, assets, cfg, fusion, cfg.eval.beams, progress=False, trie=self.trie)
            self.fusion = {**record, "weight": weight}
            if fusion.needs_item_table:
                self.items = encode_all_items(model, assets.cache, cfg, self.device, progress=False)
            self.scorers = fusion.bind(model, self.items)

    @classmethod
    def from_run(cls, run_dir: str | Path, checkpoint: str = "best", overrides: Sequence[str] = (),
                 progress: bool = False) -> "Recommender":
        model, assets, cfg = load_model_from_run(run_dir, checkpoint, overrides, progress=progress)
        return cls(model, assets, cfg)

    def item_indices(self, history: Sequence[str]) -> list[int]:
        """Dataset indices of a history's item IDs (unknown IDs: error, or skipped per eval.unknown_history)."""
        check_history(history, self.assets.ds.item_ids[0] if self.assets.ds.item_ids else "B000052YQ0")
        ds = self.assets.ds
        unknown = [a for a in history if not ds.has_item(a)]
        if unknown:
            shown = ", ".join(unknown[:10]) + (f" (+{len(unknown) - 10} more)" if len(unknown) > 10 else "")
            if self.cfg.eval.unknown_history == "error":
                raise UnknownItemsError(f"{len(unknown)} item(s) of the history are not in the run's dataset: {shown} "
                                        "(set eval.unknown_history=skip to ignore them)")
            warnings.warn(f"skipping {len(unknown)} unknown item(s) of the history: {shown}", stacklevel=4)
        known = [ds.index_of(a) for a in history if ds.has_item(a)]
        if not known:
            raise UnknownItemsError("the history has no known items; nothing to recommend from")
        return known

    def recommend_many(self, histories: Sequence[Sequence[str]], k: int = 10) -> list[list[Recommendation]]:
        """Top-k items for each history (item IDs, oldest first)."""
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be an integer >= 1, got {k!r}")
        if isinstance(histories, str):
            raise TypeError("recommend_many takes a list of histories (each a list of item IDs), got one str")
        cfg = self.cfg
        smp = []
        for h in histories:
            idx = self.item_indices(h)  # the model reads the last data.max_his; exclusion removes every one
            smp.append(Sample(user=0, history=tuple(idx[-cfg.data.max_his:]), target=idx[-1],  # target: unused
                              earlier=tuple(idx) if len(idx) > cfg.data.max_his else None))
        collate = (Collator(self.assets.cache, cfg, gcn_rows=self.assets.gcn_rows, dedupe=True) if self.items is None
                   else search_collator(self.assets, cfg))
        beams = max(k, cfg.eval.beams)
        ds = self.assets.ds
        out: list[list[Recommendation]] = []
        bs = max(1, cfg.eval.batch_size)
        for s in range(0, len(smp), bs):
            # the search of `gramc evaluate`; no target to spare: the whole history may be excluded
            chunk = smp[s: s + bs]
            if self.scorers is None:
                res = search_batch(self.model, collate, chunk, self.trie, cfg, beams, spare_target=False)
                ranked = zip(res.items.tolist(), res.scores.tolist())
            else:  # the fused ranking of `gramc evaluate` with eval.fusion on
                c = candidates_batch(self.model, collate, chunk, self.trie, cfg, beams, self.scorers,
                                     self.assets.cache.target_table, items=self.items, spare_target=False)
                items, scores = fused_order(c.items.cpu().numpy(), c.gen.cpu().numpy(), c.cf.cpu().numpy(),
                                            self.fusion["weight"])
                ranked = zip(items.tolist(), scores.tolist())
            for items, scores in ranked:
                recs = [Recommendation(ds.item_ids[i], float(sc), str(ds.item_fields[i].get("title", "")))
                        for i, sc in zip(items, scores) if i >= 0]
                out.append(recs[:k])
        return out

    def recommend(self, history: Sequence[str], k: int = 10) -> list[Recommendation]:
        """Top-k next items for one history (item IDs, oldest first)."""
        return self.recommend_many([history], k)[0]
