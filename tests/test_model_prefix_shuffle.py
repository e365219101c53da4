"""model.prefix.shuffle_table: the ablation control permutes the GCN rows once, deterministically."""

from __future__ import annotations

import torch

from gramc.config import PrefixConfig
from gramc.model.prefix import CollaborativePrefix


def _table(n: int = 40, d: int = 6) -> torch.Tensor:
    t = torch.randn(n + 1, d, generator=torch.Generator().manual_seed(3))
    t[0] = 0.0
    return t


def _prefix(table: torch.Tensor, **kw) -> CollaborativePrefix:
    torch.manual_seed(0)
    return CollaborativePrefix(PrefixConfig(**kw), table, d_model=8)


def test_shuffled_table_is_a_row_permutation_keeping_padding():
    table = _table()
    shuffled = _prefix(table, shuffle_table=True, shuffle_seed=5).table
    assert torch.equal(shuffled[0], table[0])
    assert not torch.equal(shuffled, table)
    # every item row is still there exactly once, most of them at another index
    match = (shuffled[1:, None, :] == table[None, 1:, :]).all(-1)
    assert torch.equal(match.sum(0), torch.ones(len(table) - 1, dtype=torch.long))
    moved = (match.float().argmax(1) != torch.arange(len(table) - 1)).float().mean()
    assert moved > 0.8


def test_shuffle_is_deterministic_per_seed_and_off_by_default():
    table = _table()
    a = _prefix(table, shuffle_table=True, shuffle_seed=5).table
    b = _prefix(table, shuffle_table=True, shuffle_seed=5).table
    c = _prefix(table, shuffle_table=True, shuffle_seed=6).table
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(_prefix(table).table, table)


def test_shuffled_prefix_has_the_same_parameters_but_other_outputs():
    table = _table()
    plain, shuffled = _prefix(table), _prefix(table, shuffle_table=True, shuffle_seed=5)
    assert [p.shape for p in plain.parameters()] == [p.shape for p in shuffled.parameters()]
    plain.eval(), shuffled.eval()
    ids = torch.tensor([[1, 2, 3, 0]])
    x, mask = plain(ids)
    y, mask2 = shuffled(ids)
    assert torch.equal(mask, mask2) and not torch.allclose(x[mask], y[mask])
