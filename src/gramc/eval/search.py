"""One batch of users through a GRAM-C model: collate -> fused memory -> constrained beam search.

`search_batch` is the one path that `gramc evaluate` (`gramc.eval.evaluate`) and `gramc recommend`
(`gramc.serve.recommend`) share, so a history gets the same ranked items from both. The encoder
side runs under bf16 autocast on CUDA when `eval.bf16`; the search always scores in fp32.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from ..config import Config
from ..data.splits import Sample
from ..ids.trie import Trie
from ..train.precision import autocast
from .beam import BeamResult, beam_search


def history_exclusions(chunk: Sequence[Sample], spare_target: bool = True) -> torch.Tensor:
    """`[B, H]` items (-1 pad) each user may not be recommended (`eval.exclude_history`): every item
    before the target (`Sample.seen`), also those older than the history window the model reads.

    `spare_target`: a sample's own target is never excluded (evaluation: a repeated purchase stays
    findable); a recommendation request has no target and excludes its whole history."""
    width = max(1, max(len(c.seen) for c in chunk))
    exclude = torch.full((len(chunk), width), -1, dtype=torch.long)
    for r, c in enumerate(chunk):
        h = [i for i in c.seen if not (spare_target and i == c.target)]
        exclude[r, : len(h)] = torch.tensor(h, dtype=torch.long)
    return exclude


@torch.no_grad()
def search_batch(model, collate: Callable[[Sequence[Sample]], Any], chunk: Sequence[Sample], trie: Trie,
                 cfg: Config, beams: int, items: tuple[torch.Tensor, torch.Tensor] | None = None,
                 spare_target: bool = True) -> BeamResult:
    """Ranked items (best first, `BeamResult.items [B, beams]`, -1 pad) for the samples of `chunk`.

    `model`: a GramC in eval mode (its `memory` and `t5`); `collate`: a `gramc.model.inputs.Collator`
    (items="global" needs `items`, the states of every item passage from `encode_all_items`);
    `trie` on the model's device. Settings: `eval.length_penalty`, `eval.early_stopping`,
    `eval.exclude_history`, `eval.bf16`, `model.softmax`."""
    device = next(model.parameters()).device
    batch = collate(chunk).to(device)
    exclude = history_exclusions(chunk, spare_target) if cfg.eval.exclude_history else None
    with autocast(device, cfg.eval.bf16 and device.type == "cuda"):  # encoder side only
        memory, mask = model.memory(batch, items=items)
    return beam_search(model.t5, memory.float(), mask, trie, beams=beams, length_penalty=cfg.eval.length_penalty,
                       early_stopping=cfg.eval.early_stopping, exclude=exclude, softmax=cfg.model.softmax)
