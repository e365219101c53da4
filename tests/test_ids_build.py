"""Building hierarchical textual IDs: uniqueness, collision resolution, determinism, sparse TF-IDF."""

import tracemalloc
from dataclasses import replace

import numpy as np
import pytest
import scipy.sparse as sp

from gramc.checks import Report
from gramc.config import Config, IdsConfig, SyntheticConfig
from gramc.data.dataset import SeqDataset
from gramc.data.synthetic import make_synthetic
from gramc.data.text import item_texts
from gramc.ids.build import (add_dedup_level, build_ids, cluster_tree, dedup_tokens, label_mask,
                             tfidf_matrix)
from gramc.ids.itemids import IdsError, check_ids, load_gram_ids
from gramc.ids.tokenizer import train_tokenizer

CFG = IdsConfig(clusters=4, levels=3, svd_dim=16, threads=1, seed=3)


@pytest.fixture(scope="module")
def synthetic():
    cfg = Config()
    cfg.data.synthetic = replace(SyntheticConfig(), num_items=120, num_users=60, num_topics=6)
    ds = make_synthetic(cfg.data.synthetic)
    texts = item_texts(ds, cfg.data)
    tok = train_tokenizer(texts, vocab_size=400)
    return ds, texts, tok


def hand_dataset(texts):
    n = len(texts)
    ids = [f"I{i:03d}" for i in range(n)]
    return SeqDataset(ids, [{"title": t} for t in texts], ["u"], [list(range(n))])


def test_build_round_trip_and_checks(synthetic, tmp_path):
    ds, texts, tok = synthetic
    ids = build_ids(ds, texts, tok, CFG, progress=False)
    assert len(set(ids.tokens)) == ds.num_items
    for i in range(ds.num_items):
        assert ids.item_of(ids.target(i)) == i
        assert ids.item_of(ids.tokens[i]) == i
        assert 1 <= ids.num_levels(i) <= CFG.levels + 1
    report = Report(check_ids(ids, ds, tok))
    assert report.ok, report.table()
    ids.save(tmp_path / "ids.txt")
    again = load_gram_ids(tmp_path / "ids.txt", ds, tok)
    assert again.tokens == ids.tokens and again.pieces == ids.pieces


def test_labels_follow_the_rules(synthetic):
    ds, texts, tok = synthetic
    ids = build_ids(ds, texts, tok, CFG, progress=False)
    keep = label_mask(tok)
    dedup = set(dedup_tokens(tok))
    for i, t in enumerate(ids.tokens):
        tree_levels = t[: CFG.levels] if len(t) <= CFG.levels else t[:-1]
        assert len(set(tree_levels)) == len(tree_levels), "a label repeats within one ID"
        for x in tree_levels:
            piece = tok.id_to_piece(x)
            assert keep[x] and not tok.is_special(x) and len(piece.lstrip("▁")) >= 2, piece
        if len(t) > CFG.levels:
            assert t[-1] in dedup
    # the level-1 label of a cluster is a token its members actually use
    first = {}
    for i, t in enumerate(ids.tokens):
        first.setdefault(t[0], []).append(i)
    for token, members in first.items():
        if len(members) > 1:
            assert any(token in tok.encode(texts[i]) for i in members)


def test_identical_texts_get_a_single_piece_dedup_level():
    texts = [f"title: product {w} with {w}ness and extra {w}ing" for w in
             ["amber", "basil", "cedar", "daisy", "ember", "fig", "ginger", "hazel"]]
    texts += ["title: same exact twin text here"] * 5
    ds = hand_dataset(texts)
    tok = train_tokenizer(texts * 3, vocab_size=150)
    cfg = replace(CFG, clusters=2, levels=2)
    ids = build_ids(ds, texts, tok, cfg, progress=False)
    twins = list(range(8, 13))
    assert len({ids.tokens[i] for i in twins}) == 5
    assert all(ids.num_levels(i) == cfg.levels + 1 for i in twins)
    assert len({ids.tokens[i][:-1] for i in twins}) == 1  # same tree path, told apart by the extra level
    extra = [ids.pieces[i][-1] for i in twins]
    assert all(tok.piece_to_id(p) is not None for p in extra)
    assert extra == [str(k) for k in range(5)]  # numeric pieces first, in order
    assert Report(check_ids(ids, ds, tok)).ok


def test_dedup_level_avoids_decoded_collisions():
    texts = ["alpha beta gamma delta"] * 3
    tok = train_tokenizer(texts * 5 + ["0 1 2 3 4 5 6 7 8 9 10 11"], vocab_size=60)
    a = tok.piece_to_id("▁alpha") or tok.encode("alpha")[0]
    paths = [(a,), (a,), (a,)]
    out = add_dedup_level(paths, tok, dedup_tokens(tok))
    decoded = tok.decode_batch(out)
    assert len(set(decoded)) == 3 and all(len(p) == 2 for p in out)


def test_same_seed_same_bytes(synthetic, tmp_path):
    ds, texts, tok = synthetic
    build_ids(ds, texts, tok, CFG, progress=False).save(tmp_path / "a.txt")
    build_ids(ds, texts, tok, CFG, progress=False).save(tmp_path / "b.txt")
    assert (tmp_path / "a.txt").read_bytes() == (tmp_path / "b.txt").read_bytes()


def test_cluster_tree_shape():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(200, 8)).astype(np.float32)
    nodes = cluster_tree(emb, clusters=5, levels=3, seed=0, progress=False)
    leaves = [n for n in nodes[1:] if not n.children]
    assert sorted(np.concatenate([n.members for n in leaves]).tolist()) == list(range(200))
    assert max(n.depth for n in nodes) <= 3
    for n in nodes:
        assert len(n.children) <= max(5, len(n.members) if len(n.members) <= 5 else 5)
        if n.children and len(n.members) <= 5:
            assert all(len(nodes[c].members) == 1 for c in n.children)  # small groups enumerated


def test_npy_embeddings(synthetic, tmp_path):
    ds, texts, tok = synthetic
    rng = np.random.default_rng(1)
    np.save(tmp_path / "e.npy", rng.normal(size=(ds.num_items, 5)).astype(np.float32))
    ids = build_ids(ds, texts, tok, replace(CFG, embedding="npy", embedding_file=str(tmp_path / "e.npy")),
                    progress=False)
    assert len(set(ids.tokens)) == ds.num_items
    np.save(tmp_path / "bad.npy", np.zeros((ds.num_items - 1, 5)))
    n = ds.num_items
    with pytest.raises(IdsError, match=rf"bad.npy: expected shape \[{n}, d\].*got \[{n - 1}, 5\]"):
        build_ids(ds, texts, tok, replace(CFG, embedding="npy", embedding_file=str(tmp_path / "bad.npy")),
                  progress=False)
    with pytest.raises(IdsError, match="does not exist"):
        build_ids(ds, texts, tok, replace(CFG, embedding="npy", embedding_file=str(tmp_path / "no.npy")),
                  progress=False)


def test_tfidf_matrix_values():
    x = tfidf_matrix([[3, 3, 4], [4, 5], [5, 5, 5, 6]], vocab_size=8,
                     keep=np.array([True] * 6 + [False] * 2), max_tokens=3)
    assert sp.issparse(x) and x.shape == (3, 8)
    idf = lambda df: np.log1p((3 - df + 0.5) / (df + 0.5))  # noqa: E731
    d = x.toarray()
    assert d[0, 3] == pytest.approx(2 * idf(1))  # token 3 twice in item 0, df 1
    assert d[0, 4] == pytest.approx(idf(2))
    assert d[2, 5] == pytest.approx(3 * idf(2))  # first 3 tokens only: 5,5,5
    assert d[2, 6] == 0.0  # beyond max_tokens
    assert d[:, 6:].sum() == 0.0


def test_tfidf_is_sparse_and_small_at_scale():
    n, vocab, per_item = 50_000, 32_000, 20
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, vocab, size=(n, per_item)).tolist()
    keep = np.ones(vocab, dtype=bool)
    tracemalloc.start()
    x = tfidf_matrix(tokens, vocab, keep)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert sp.issparse(x) and x.shape == (n, vocab)
    assert x.nnz <= n * per_item
    # a dense float32 items x vocab array would be 6.4 GB; the sparse build stays far below
    assert peak < 80 * 2**20, f"peak {peak / 2**20:.1f} MiB"


def test_wrong_text_count_is_an_error(synthetic):
    ds, texts, tok = synthetic
    with pytest.raises(IdsError, match=f"{ds.num_items - 1} item texts for {ds.num_items} dataset items"):
        build_ids(ds, texts[:-1], tok, CFG, progress=False)


@pytest.mark.slow
def test_minilm_embeddings():
    from gramc.ids.build import item_embeddings

    texts = ["red lipstick matte", "red lipstick glossy", "shampoo for dry hair", "conditioner for hair"]
    emb = item_embeddings(texts, IdsConfig(embedding="minilm"), progress=False)
    assert emb.shape == (4, 384) and np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    sim = emb @ emb.T
    assert sim[0, 1] > sim[0, 2] and sim[2, 3] > sim[1, 3]


def test_minibatch_clustering_is_deterministic():
    # >= 1000 items: the root split uses MiniBatchKMeans, which must also follow the seed
    rng = np.random.default_rng(5)
    emb = rng.normal(size=(1500, 6)).astype(np.float32)
    a = cluster_tree(emb, clusters=8, levels=2, seed=11, progress=False)
    b = cluster_tree(emb, clusters=8, levels=2, seed=11, progress=False)
    assert len(a) == len(b)
    assert all(np.array_equal(x.members, y.members) for x, y in zip(a, b))
    assert len(a[0].children) == 8


def test_an_ids_section_built_directly_is_checked_by_its_own_rules(synthetic):
    from gramc.config import ConfigError

    ds, texts, tok = synthetic
    with pytest.raises(ConfigError) as e:
        build_ids(ds, texts, tok, replace(CFG, clusters=1, levels=0, vocab_size=10), progress=False)
    assert all(f"'ids.{k}'" in str(e.value) for k in ("clusters", "levels", "vocab_size"))
