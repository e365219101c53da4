"""LightGCN: propagation vs a dense reference, the BPR sampler, training outputs, it learns."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from gramc.config import ConfigError, GcnConfig, SyntheticConfig
from gramc.data.dataset import DataError, SeqDataset
from gramc.data.splits import samples
from gramc.data.synthetic import make_synthetic
from gramc.metrics import summarize
from gramc.graph.artifacts import GcnArtifacts
from gramc.graph.lightgcn import (BprSampler, LightGCN, SparseAdjacency, interaction_pairs,
                                  interaction_sequences, lightgcn_ranks, normalized_adjacency,
                                  pairs_fingerprint, train_lightgcn)
from gramc.graph.similar import read_similar_items


def dense_reference(users, items, nu, ni):
    """D^-1/2 A D^-1/2 built entry by entry from the definition (binary bipartite A)."""
    n = nu + ni
    a = np.zeros((n, n))
    for u, i in zip(users, items):
        a[u, nu + i] = a[nu + i, u] = 1.0
    deg = a.sum(1)
    out = np.zeros_like(a)
    for r in range(n):
        for c in range(n):
            if a[r, c]:
                out[r, c] = 1.0 / np.sqrt(deg[r] * deg[c])
    return out


def test_adjacency_matches_definition_and_collapses_repeats():
    users = np.array([0, 0, 1, 1, 2, 0])
    items = np.array([0, 1, 1, 2, 3, 0])  # (0, 0) twice; item 4 isolated
    adj = normalized_adjacency(users, items, 3, 5).toarray()
    ref = dense_reference(users, items, 3, 5)
    np.testing.assert_allclose(adj, ref, rtol=1e-6)
    assert np.allclose(adj, adj.T)
    assert not adj[3 + 4].any()  # isolated item: zero row, no NaN


def test_propagation_and_gradient_match_dense_computation():
    users = np.array([0, 0, 1, 1, 2, 2, 2])
    items = np.array([0, 1, 1, 2, 3, 0, 2])
    ref = torch.tensor(dense_reference(users, items, 3, 4), dtype=torch.float32)
    sparse = SparseAdjacency(normalized_adjacency(users, items, 3, 4), torch.device("cpu"))
    torch.manual_seed(0)
    m = LightGCN(3, 4, dim=5, layers=3)
    e0 = m.embedding.weight.detach().clone()
    expected = (e0 + ref @ e0 + ref @ ref @ e0 + ref @ ref @ ref @ e0) / 4  # layer mean, L = 3
    got = m.propagate(sparse)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    # gradients through the custom sparse op equal those of dense autograd
    w = torch.randn_like(got)
    (got * w).sum().backward()
    g_sparse = m.embedding.weight.grad.clone()
    m.embedding.weight.grad = None
    (m.propagate(ref) * w).sum().backward()
    torch.testing.assert_close(g_sparse, m.embedding.weight.grad, rtol=1e-5, atol=1e-6)


def test_bpr_sampler_never_returns_a_positive():
    # user 0 has 9 of 10 items: almost every draw must be rejected and re-drawn
    seqs = [list(range(9)), [0, 5], [3, 4, 9]]
    users, items = interaction_pairs(seqs)
    s = BprSampler(users, items, 10, np.random.default_rng(0))
    positives = {(u, i) for u, seq in enumerate(seqs) for i in seq}
    u, i, j = s.sample(20000)
    assert all((a, b) in positives for a, b in zip(u.tolist(), i.tolist()))
    assert not any((a, b) in positives for a, b in zip(u.tolist(), j.tolist()))
    assert set(j[u == 0].tolist()) == {9}
    # positives are drawn per interaction: user 0 holds 9 of 14 interactions
    assert abs((u == 0).mean() - 9 / 14) < 0.02


def test_bpr_sampler_reports_a_user_without_negatives():
    users, items = interaction_pairs([[0, 1, 2]])
    with pytest.raises(DataError, match="user index 0"):
        BprSampler(users, items, 3, np.random.default_rng(0)).sample(4)


def test_interactions_are_training_only_unless_asked():
    ds = SeqDataset(["a", "b", "c", "d", "e"], [{}] * 5, ["u", "v"], [[0, 1, 2, 3, 4], [4, 3, 2]])
    assert interaction_sequences(ds, "train") == [[0, 1, 2], [4]]
    assert interaction_sequences(ds, "train+valid") == [[0, 1, 2, 3], [4, 3]]
    assert interaction_sequences(ds, "all") == [[0, 1, 2, 3, 4], [4, 3, 2]]
    fp = pairs_fingerprint(ds, interaction_sequences(ds, "train"))
    assert fp != pairs_fingerprint(ds, interaction_sequences(ds, "all"))
    # the fingerprint depends on the pairs, not on the order of users or positions
    ds2 = SeqDataset(["e", "a", "b", "c", "d"], [{}] * 5, ["v", "u"], [[0, 4, 3], [1, 2, 3, 4, 0]])
    assert pairs_fingerprint(ds2, interaction_sequences(ds2, "train")) == fp


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.set_num_threads(1)
    ds = make_synthetic(SyntheticConfig())
    out = tmp_path_factory.mktemp("gcn")
    cfg = GcnConfig(epochs=12, lr=1e-2, batch_size=512, eval_every=4, similar_k=5)
    meta = train_lightgcn(ds, cfg, out, progress=False)
    return ds, out, meta


def test_outputs_follow_the_contract(trained):
    ds, out, meta = trained
    art = GcnArtifacts.load(out)
    assert art.embeddings.dtype == torch.float32
    assert tuple(art.embeddings.shape) == (ds.num_items + 1, 64)
    assert not art.embeddings[0].any()
    torch.testing.assert_close(art.embeddings[1:].norm(dim=1), torch.ones(ds.num_items))
    assert art.mapping == {a: i + 1 for i, a in enumerate(ds.item_ids)}
    assert art.rows_for(ds).tolist() == list(range(1, ds.num_items + 1))
    nb = read_similar_items(out / "similar_items.txt", ds, 5)
    assert all(i not in row and len(set(row)) == 5 for i, row in enumerate(nb))
    # the first neighbour is the most cosine-similar other item
    e = art.embeddings[1:]
    sims = e @ e.T
    sims.fill_diagonal_(-2)
    assert [r[0] for r in nb[:20]] == sims.argmax(1)[:20].tolist()
    inter = meta["interactions"]
    assert inter["split"] == "train" and inter["count"] == sum(len(s) - 2 for s in ds.sequences)
    assert inter["sha256"] == pairs_fingerprint(ds, [s[:-2] for s in ds.sequences])
    assert json.loads((out / "gcn_meta.json").read_text())["final_loss"] == meta["final_loss"]
    assert (out / "run_info.json").is_file() and (out / "config.yaml").is_file()
    assert (out / "gcn_training.png").stat().st_size > 1000
    assert len(meta["loss_curve"]) == 12 and [v["epoch"] for v in meta["valid_curve"]] == [4, 8, 12]
    best = max(meta["valid_curve"], key=lambda v: v["ndcg@10"])  # gcn.keep_best (default)
    assert meta["kept_epoch"] == best["epoch"]
    assert meta["valid"] == {k: v for k, v in best.items() if k != "epoch"}
    assert meta["loss_curve"][-1] < meta["loss_curve"][0]


def test_learns_well_above_popularity(trained):
    from gramc.graph.lightgcn import popularity_ranks

    ds, _, meta = trained
    assert meta["valid"]["recall@10"] > 1.8 * meta["popularity_valid"]["recall@10"]
    # the margin as first calibrated: popularity with its ties counted against it
    worst = summarize(popularity_ranks(ds, "valid", ties="worst"), ks=(10,))
    assert meta["valid"]["ndcg@10"] > 1.8 * worst["ndcg@10"]
    # and on the fairer footing gcn_meta.json reports (ties at random places: popularity scores more)
    assert meta["popularity_valid"]["ndcg@10"] >= worst["ndcg@10"]
    assert meta["valid"]["ndcg@10"] > 1.7 * meta["popularity_valid"]["ndcg@10"]


def test_lightgcn_ranks_reproduce_meta_and_cover_split_users(trained):
    ds, out, meta = trained
    ranks = lightgcn_ranks(out, ds, "valid", max_his=20)
    assert len(ranks) == len(samples(ds, "valid", 20))
    m = summarize(ranks, ks=(10,))
    assert m["hit@10"] == pytest.approx(meta["valid"]["recall@10"])
    test = lightgcn_ranks(out, ds, "test", max_his=20)
    assert len(test) == len(ranks) and (test >= 0).all() and (test < ds.num_items).all()
    excl = lightgcn_ranks(out, ds, "valid", exclude_history=True)
    assert (excl <= ranks).all()


def test_lightgcn_ranks_refuses_another_dataset(trained):
    ds, out, _ = trained
    other = SeqDataset(ds.item_ids, ds.item_fields, ["stranger"] + ds.users[1:], ds.sequences)
    with pytest.raises(DataError, match="stranger"):
        lightgcn_ranks(out, other, "valid")


def test_bad_settings_name_the_key(tmp_path):
    ds = SeqDataset(["a", "b", "c"], [{}] * 3, ["u"], [[0, 1, 2]])
    with pytest.raises(ConfigError, match="gcn.similar_k"):
        train_lightgcn(ds, GcnConfig(similar_k=3), tmp_path, progress=False)
    with pytest.raises(ConfigError, match="gcn.lr"):
        train_lightgcn(ds, GcnConfig(lr=0.0, similar_k=1), tmp_path, progress=False)


def test_popularity_ranks_equal_the_shared_metric_code():
    from gramc.metrics import ranks_from_scores
    from gramc.graph.lightgcn import popularity_ranks

    ds = make_synthetic(SyntheticConfig(num_users=150, num_items=60))
    _, items = interaction_pairs([s[:-2] for s in ds.sequences])
    counts = torch.tensor(np.bincount(items, minlength=ds.num_items), dtype=torch.float32)
    for split, back in (("valid", 2), ("test", 1)):
        users = [u for u, s in enumerate(ds.sequences) if len(s) >= 3]
        targets = torch.tensor([ds.sequences[u][-back] for u in users])
        for ties in ("random", "worst"):
            expected = ranks_from_scores(counts.expand(len(users), -1), targets, keys=users, seed=7, ties=ties)
            np.testing.assert_array_equal(popularity_ranks(ds, split, ties=ties, seed=7), expected)


def test_automatic_batch_size():
    from gramc.graph.lightgcn import batch_size_for

    auto = GcnConfig(batch_size=0)
    assert batch_size_for(auto, 153776) == 8192  # Amazon Beauty's training interactions
    assert batch_size_for(auto, 40000) == 2048
    assert batch_size_for(auto, 3442) == 256
    assert batch_size_for(auto, 10**8) == 8192
    assert batch_size_for(GcnConfig(batch_size=100), 153776) == 100


def test_keep_best_off_keeps_the_last_epoch(tmp_path):
    ds = make_synthetic(SyntheticConfig(num_users=150, num_items=60))
    meta = train_lightgcn(ds, GcnConfig(epochs=3, eval_every=1, keep_best=False, similar_k=0, batch_size=256),
                          tmp_path, progress=False)
    assert meta["kept_epoch"] == 3 and meta["valid"]["recall@10"] == meta["valid_curve"][-1]["recall@10"]
    m = summarize(lightgcn_ranks(tmp_path, ds, "valid"), ks=(10,))
    assert m["hit@10"] == pytest.approx(meta["valid"]["recall@10"])


def test_output_folder_is_replaced_whole_and_never_shared(tmp_path):
    from gramc.graph.checks import check_gcn

    ds = make_synthetic(SyntheticConfig(num_users=150, num_items=60))
    out = tmp_path / "gcn"
    train_lightgcn(ds, GcnConfig(epochs=1, eval_every=0, similar_k=3, batch_size=256), out, progress=False)
    assert (out / "similar_items.txt").is_file()
    # a retrain without similar items leaves no stale similar_items.txt behind
    train_lightgcn(ds, GcnConfig(epochs=1, eval_every=0, similar_k=0, batch_size=256), out, progress=False)
    assert not (out / "similar_items.txt").exists()
    assert all(c.level == "pass" for c in check_gcn(ds, out))
    # a folder holding other files is refused, and left as it was
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "model.pt").write_text("keep me")
    with pytest.raises(DataError, match="model.pt"):
        train_lightgcn(ds, GcnConfig(epochs=1, eval_every=0, similar_k=0, batch_size=256), tmp_path / "run",
                       progress=False)
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["model.pt"]
