"""Baselines on tiny hand-made datasets where the right answer is known."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from gramc.baselines.common import evaluate_scorer
from gramc.baselines.pop import popularity_counts, run_pop
from gramc.baselines.sasrec import SASRec, length_batches, run_sasrec, training_tensors
from gramc.config import load_config
from gramc.data.dataset import SeqDataset


def _ds(seqs: list[list[int]], n_items: int) -> SeqDataset:
    ids = [f"i{k}" for k in range(n_items)]
    return SeqDataset(ids, [{"title": i} for i in ids], [f"u{u}" for u in range(len(seqs))], seqs)


def test_popularity_counts_only_training_part(tmp_path):
    # training parts s[:-2]: [0,0,1], [0,2], [1]; items 3 and 4 appear only as valid/test targets
    ds = _ds([[0, 0, 1, 3, 4], [0, 2, 4, 3], [1, 3, 4]], 5)
    assert popularity_counts(ds).tolist() == [3.0, 2.0, 1.0, 0.0, 0.0]
    cfg = load_config(None, ["eval.ks=[1,2,3]", "train.select_metric=mrr", "eval.bootstrap=50", "eval.ties=worst"])
    recs = run_pop(ds, cfg, tmp_path)
    # test targets 4, 3, 4 all score 0, below 3 items and tied with the other zero-count item
    assert recs["test"]["metrics"]["hit@3"] == 0.0
    assert recs["test"]["protocol"]["ties"] == "worst place"
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["split"] == "test" and saved["users"] == 3 and "ci" in saved
    assert (tmp_path / "metrics_valid.json").is_file() and (tmp_path / "run_info.json").is_file()
    ranks = json.loads((tmp_path / "ranks_test.json").read_text())
    # every score >= 0 = the targets' 0: all 5 items rank before or tie, so rank 4 for each user
    assert ranks["users"] == ["u0", "u1", "u2"] and ranks["ranks"] == [4, 4, 4]
    # random ties: 3 items strictly above, then place 3 or 4
    cfg.eval.ties = "random"
    assert set(run_pop(ds, cfg, None)["test"]["metrics"]) and \
        set(json.loads(json.dumps(run_pop(ds, cfg, tmp_path / "r")["test"]["protocol"]))["ties"].split()) >= {"random"}
    assert set(json.loads((tmp_path / "r" / "ranks_test.json").read_text())["ranks"]) <= {3, 4}


def test_popularity_ranks_known_table():
    # training parts [2,2,1] + [2,1,0]: item 2 counted 3 times, item 1 twice, item 0 once
    seqs = [[2, 2, 1, 2, 2], [2, 1, 0, 1, 0]]
    ds = _ds(seqs, 3)
    assert popularity_counts(ds).tolist() == [1.0, 2.0, 3.0]
    cfg = load_config(None, ["eval.ks=[1,2]", "train.select_metric=mrr", "eval.bootstrap=0"])
    recs = evaluate_scorer(ds, cfg, lambda ch: popularity_counts(ds).expand(len(ch), -1), "pop", None)
    # test targets: user0 -> 2 (rank 0), user1 -> 0 (rank 2) ; valid: user0 -> 2, user1 -> 1 (rank 1)
    assert recs["test"]["metrics"]["hit@1"] == pytest.approx(0.5)
    assert recs["valid"]["metrics"]["hit@1"] == pytest.approx(0.5)
    assert recs["valid"]["metrics"]["hit@2"] == pytest.approx(1.0)
    assert recs["valid"]["metrics"]["mrr"] == pytest.approx((1.0 + 0.5) / 2)
    # both test histories ([2,2,1,2], [2,1,0,1]) hold the most popular item 2 and the target
    assert recs["test"]["repeats"]["top1_in_history"] == 1.0
    assert recs["test"]["repeats"]["target_in_history"] == 1.0
    # test targets 0 (1 training interaction, rank 2) and 2 (3, rank 0): one group each, rare one first
    groups = recs["test"]["popularity"]["groups"]
    assert [(g["train_count"], g["users"]) for g in groups] == [([1, 1], 1), ([3, 3], 1)]
    assert [g["ndcg@10"] for g in groups] == pytest.approx([0.5, 1.0])


def test_sasrec_training_tensors_shift_and_pad():
    ds = _ds([[0, 1, 2, 3, 4, 5], [3, 4, 0]], 6)
    inp, tgt = training_tensors(ds, 3)
    # user 0 training part [0,1,2,3] -> last 4 items; inputs rows are item+1, left padded
    assert inp.tolist() == [[1, 2, 3]]
    assert tgt.tolist() == [[2, 3, 4]]
    ds2 = _ds([[0, 1, 2, 3], [1, 2, 3, 4, 0]], 5)
    inp2, tgt2 = training_tensors(ds2, 4)
    assert inp2.tolist() == [[0, 0, 0, 1], [0, 0, 2, 3]]
    assert tgt2.tolist() == [[0, 0, 0, 2], [0, 0, 3, 4]]


def test_sasrec_causal_no_future_leak():
    import torch

    cfg = load_config(None, ["baseline.sasrec.dropout=0.0", "baseline.sasrec.max_len=6"])
    model = SASRec(10, cfg.baseline.sasrec).eval()
    a = torch.tensor([[0, 0, 3, 4, 5, 6]])
    b = torch.tensor([[0, 0, 3, 4, 9, 1]])
    ha, hb = model.hidden(a), model.hidden(b)
    assert torch.allclose(ha[:, :4], hb[:, :4], atol=1e-5)  # earlier positions ignore later items
    assert not torch.allclose(ha[:, 5], hb[:, 5])
    assert torch.isfinite(ha).all()


def test_sasrec_trimmed_padding_columns_give_the_same_states():
    import torch

    cfg = load_config(None, ["baseline.sasrec.dropout=0.0", "baseline.sasrec.max_len=8"])
    model = SASRec(10, cfg.baseline.sasrec).eval()
    full = torch.tensor([[0, 0, 0, 0, 0, 3, 4, 5], [0, 0, 0, 0, 7, 1, 2, 9]])
    with torch.no_grad():
        h_full = model.hidden(full)
        h_trim = model.hidden(full[:, -4:])  # the longest row has 4 items
    assert torch.allclose(h_full[:, -4:], h_trim, atol=1e-5)
    with pytest.raises(ValueError, match=r"baseline\.sasrec\.max_len"):
        model.hidden(torch.ones(1, 9, dtype=torch.long))


def test_sasrec_scorer_sorts_and_trims_without_changing_scores():
    from gramc.baselines.sasrec import _left_pad, make_scorer
    from gramc.data.splits import Sample

    torch.manual_seed(0)
    cfg = load_config(None, ["baseline.sasrec.dropout=0.0", "baseline.sasrec.max_len=8"])
    model = SASRec(12, cfg.baseline.sasrec).eval()
    rng = np.random.default_rng(0)
    chunk = [Sample(u, tuple(int(x) for x in rng.integers(0, 12, size=int(rng.integers(1, 12)))), 0)
             for u in range(23)]  # lengths 1..11: some longer than max_len, in mixed order
    scores = make_scorer(model, torch.device("cpu"), sub_batch=5)(chunk)
    with torch.no_grad():
        full = torch.tensor([_left_pad(s.history, 8) for s in chunk])
        expected = model.item_logits(model.hidden(full)[:, -1])
    assert scores.shape == (23, 12)
    torch.testing.assert_close(scores, expected, rtol=1e-5, atol=1e-5)


def test_length_batches_cover_every_row_once_and_group_lengths():
    import torch

    gen = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, 51, (1000,), generator=gen)
    batches = length_batches(lengths, 16, gen, pool=20)
    rows = torch.cat(batches)
    assert sorted(rows.tolist()) == list(range(1000))
    # inside a pool rows are sorted by length: a batch spans far less than the full 1..50 range
    spans = [int(lengths[b].max() - lengths[b].min()) for b in batches]
    assert float(np.mean(spans)) < 10
    # and the batch order is shuffled, not longest-last
    maxes = [int(lengths[b].max()) for b in batches]
    assert maxes != sorted(maxes)


@pytest.mark.parametrize("temperature,tied,repeat", [(0.0, True, False), (0.1, True, False), (0.0, False, False),
                                                     (0.0, True, True)])
def test_sasrec_learns_deterministic_chain(tmp_path, temperature, tied, repeat):
    n = 15
    rng = np.random.default_rng(0)
    seqs = []
    for _ in range(120):
        start, length = int(rng.integers(n)), int(rng.integers(6, 10))
        seqs.append([(start + j) % n for j in range(length)])
    ds = _ds(seqs, n)
    cfg = load_config(None, ["baseline.sasrec.dim=32", "baseline.sasrec.layers=1", "baseline.sasrec.dropout=0.1",
                             "baseline.sasrec.lr=0.01", "baseline.sasrec.epochs=40", "baseline.sasrec.patience=40",
                             "baseline.sasrec.batch_size=32", "baseline.sasrec.max_len=10", "eval.ks=[1,5]",
                             "train.select_metric=hit@5", "eval.bootstrap=0", "run.device=cpu", f"baseline.sasrec.temperature={temperature}",
                             f"baseline.sasrec.tied_output={str(tied).lower()}",
                             f"baseline.sasrec.repeat_bias={str(repeat).lower()}"])
    recs = run_sasrec(ds, cfg, tmp_path)
    assert recs["test"]["metrics"]["hit@1"] >= 0.95
    assert recs["valid"]["metrics"]["hit@1"] >= 0.95
    log = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert log[0]["train_loss"] > log[-1]["train_loss"]
    assert (tmp_path / "curves.png").stat().st_size > 0 and (tmp_path / "sasrec.pt").is_file()


def test_lightgcn_baseline_trains_once_and_reuses(tmp_path):
    from gramc.baselines.lightgcn import run_lightgcn
    from gramc.data.synthetic import make_synthetic

    cfg = load_config(None, ["data.synthetic.num_users=80", "data.synthetic.num_items=40", "gcn.epochs=2",
                             "gcn.dim=8", "gcn.eval_every=0", "gcn.similar_k=3", "eval.bootstrap=10",
                             "eval.ks=[1,10]"])
    ds = make_synthetic(cfg.data.synthetic)
    recs = run_lightgcn(ds, cfg, tmp_path)
    meta = tmp_path / "gcn" / "gcn_meta.json"
    stamp = meta.stat().st_mtime_ns
    assert recs["test"]["users"] == ds.num_users and recs["test"]["model"] == "lightgcn"
    assert 0.0 <= recs["test"]["metrics"]["hit@10"] <= 1.0
    again = run_lightgcn(ds, cfg, tmp_path)
    assert meta.stat().st_mtime_ns == stamp  # the existing GCN folder is reused, not retrained
    assert again["test"]["metrics"] == recs["test"]["metrics"]
    assert json.loads((tmp_path / "metrics.json").read_text())["split"] == "test"
    # the scorer path gives exactly the ranks of gramc.graph's own evaluation of the same model
    from gramc.metrics import summarize
    from gramc.graph.lightgcn import lightgcn_ranks

    want = summarize(lightgcn_ranks(tmp_path / "gcn", ds, "test"), cfg.eval.ks)
    want.pop("users")
    assert recs["test"]["metrics"] == pytest.approx(want)
    assert 0.0 <= recs["test"]["repeats"]["top1_in_history"] <= 1.0


def test_sasrec_lr_decays_when_validation_stalls(tmp_path):
    # every user's sequence is random: validation cannot keep improving, so the lr must drop
    rng = np.random.default_rng(1)
    ds = _ds([list(rng.integers(0, 30, size=8)) for _ in range(60)], 30)
    cfg = load_config(None, ["baseline.sasrec.dim=16", "baseline.sasrec.layers=1", "baseline.sasrec.epochs=12",
                             "baseline.sasrec.patience=12", "baseline.sasrec.decay_patience=1",
                             "baseline.sasrec.lr_decay=0.5", "baseline.sasrec.lr=0.01", "baseline.sasrec.max_len=8",
                             "eval.bootstrap=0", "run.device=cpu"])
    run_sasrec(ds, cfg, tmp_path)
    lrs = [json.loads(x)["lr"] for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert lrs[0] == pytest.approx(0.01)
    assert min(lrs) <= 0.005 + 1e-12  # halved at least once
    assert all(b <= a for a, b in zip(lrs, lrs[1:]))  # never raised


def test_sasrec_temperature_gives_scaled_cosine_logits():
    torch.manual_seed(0)
    cfg = load_config(None, ["baseline.sasrec.temperature=0.05", "baseline.sasrec.dim=16"])
    model = SASRec(20, cfg.baseline.sasrec)
    h = torch.randn(3, 16) * 7.0
    with torch.no_grad():
        logits = model.item_logits(h)
    items = model.item_emb.weight[1:].detach()
    cos = torch.nn.functional.cosine_similarity(h[:, None, :], items[None], dim=-1)
    assert logits.shape == (3, 20)
    torch.testing.assert_close(logits, cos / 0.05, rtol=1e-5, atol=1e-5)
    assert float(logits.abs().max()) <= 1 / 0.05 + 1e-4  # bounded, whatever the state's norm
    plain = SASRec(20, load_config(None, ["baseline.sasrec.dim=16"]).baseline.sasrec)
    plain.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(plain.item_logits(h), h @ items.T)


def test_sasrec_untied_output_scores_with_its_own_table():
    torch.manual_seed(0)
    cfg = load_config(None, ["baseline.sasrec.tied_output=false", "baseline.sasrec.dim=16"])
    model = SASRec(20, cfg.baseline.sasrec)
    assert model.out_emb is not None and model.out_emb.shape == (20, 16)
    h = torch.randn(3, 16)
    with torch.no_grad():
        torch.testing.assert_close(model.item_logits(h), h @ model.out_emb.T)
        model.item_emb.weight.add_(1.0)  # the input table no longer moves the scores
        torch.testing.assert_close(model.item_logits(h), h @ model.out_emb.T)
    tied = SASRec(20, load_config(None, ["baseline.sasrec.dim=16"]).baseline.sasrec)
    assert tied.out_emb is None and "out_emb" not in tied.state_dict()


def test_sasrec_repeat_bias_offsets_exactly_the_items_seen_so_far():
    torch.manual_seed(0)
    cfg = load_config(None, ["baseline.sasrec.repeat_bias=true", "baseline.sasrec.dim=16",
                             "baseline.sasrec.dropout=0.0", "baseline.sasrec.max_len=6"])
    model = SASRec(10, cfg.baseline.sasrec).eval()
    with torch.no_grad():
        model.repeat_bias.fill_(-3.0)
    seq = torch.tensor([[0, 0, 4, 7, 4, 2], [0, 5, 1, 9, 3, 8]])  # item rows (item + 1), 0 = pad
    keep = seq > 0
    with torch.no_grad():
        got = model.position_logits(seq, keep)
        plain = model.item_logits(model.hidden(seq)[keep])
        # every training position sees only its prefix: the offset lands on those items, once each
        want = plain.clone()
        for n, (b, t) in enumerate(keep.nonzero().tolist()):
            for row in set(seq[b, :t + 1].tolist()) - {0}:
                want[n, row - 1] -= 3.0
        torch.testing.assert_close(got, want)
        # scoring after the whole sequence = the last training position's view
        torch.testing.assert_close(model.scores(seq), want[[3, 8]])
    off = load_config(None, ["baseline.sasrec.dim=16", "baseline.sasrec.repeat_bias=false"]).baseline.sasrec
    assert SASRec(10, off).repeat_bias is None and "repeat_bias" not in SASRec(10, off).state_dict()


def test_sasrec_config_rejects_bad_decay():
    from gramc.config import ConfigError

    with pytest.raises(ConfigError, match=r"baseline\.sasrec\.lr_decay"):
        load_config(None, ["baseline.sasrec.lr_decay=0"])
    with pytest.raises(ConfigError, match=r"baseline\.sasrec\.heads"):
        load_config(None, ["baseline.sasrec.heads=3"])
    with pytest.raises(ConfigError, match=r"baseline\.sasrec\.temperature"):
        load_config(None, ["baseline.sasrec.temperature=-0.1"])


def test_each_baselines_recorded_protocol_is_what_its_scorer_read(tmp_path, monkeypatch):
    """SASRec reads baseline.sasrec.max_len items, not data.max_his; pop and LightGCN read none;
    exclusion removes every earlier item, also those older than the window."""
    import gramc.baselines.sasrec as sasrec_mod

    seqs = [[(u + j) % 30 for j in range(14)] for u in range(40)]
    ds = _ds(seqs, 30)
    cfg = load_config(None, ["baseline.sasrec.dim=16", "baseline.sasrec.layers=1", "baseline.sasrec.epochs=1",
                             "baseline.sasrec.max_len=8", "data.max_his=3", "eval.ks=[1,5]", "eval.bootstrap=0",
                             "train.select_metric=hit@5", "run.device=cpu", "eval.exclude_history=true"])
    read: list[int] = []
    make = sasrec_mod.make_scorer

    def spy(model, device, sub_batch=256):
        score = make(model, device, sub_batch)

        def wrapped(chunk):
            read.extend(min(len(s.history), model.max_len) for s in chunk)
            out = score(chunk)
            for r, s in enumerate(chunk):  # every earlier item must come out of the ranking
                out[r, [i for i in s.seen if i != s.target]] = 1e9
            return out
        return wrapped

    monkeypatch.setattr(sasrec_mod, "make_scorer", spy)
    recs = sasrec_mod.run_sasrec(ds, cfg, tmp_path)
    for split in ("valid", "test"):
        proto = recs[split]["protocol"]
        assert proto["history_window"] == max(read) == 8
        assert proto["exclude_history"] == "every earlier item" and proto["ties"].startswith("random")
    # the history items scored 1e9 were removed: the ranks are those of the model's own scores
    assert recs["test"]["metrics"]["hit@5"] > 0
    pop = run_pop(ds, cfg, tmp_path / "pop")
    assert pop["test"]["protocol"]["history_window"] is None
