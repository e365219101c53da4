"""`gramc train-head` (gramc.recipes.dense_head): a dense head fitted on a run's frozen backbone."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from gramc.cli import main
from gramc.config import DenseConfig
from gramc.model.dense import DenseHead
from gramc.model.runs import load_model_from_run
from gramc.recipes.dense_head import cache_states, tune_ndcg

from eval_fakes import make_run


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    root = tmp_path_factory.mktemp("head")
    make_run(root / "run")
    rc = main(["train-head", "--run", str(root / "run"), "--out", str(root / "out"), "model.dense.item=both",
               "train.head.epochs=4", "train.head.batch_size=16"])
    assert rc == 0
    return root


def test_the_output_is_a_run_with_the_source_weights_and_the_best_epochs_head(fitted):
    src, out = fitted / "run", fitted / "out"
    rec = json.loads((out / "head_fit.json").read_text())
    curve = rec["valid_ndcg@10"]
    assert len(curve) == 4 and rec["best_epoch"] == curve.index(max(curve)) + 1
    model, assets, cfg = load_model_from_run(out, "best", progress=False)
    assert model.dense is not None and cfg.model.dense.item == "both"
    assert cfg.model.dense.enabled and cfg.model.dense.detach and not cfg.model.dense.logq
    # the backbone is the source's, bit for bit; the head is new
    old = load_file(str(src / "checkpoints" / "best" / "model.safetensors"))
    new = load_file(str(out / "checkpoints" / "best" / "model.safetensors"))
    assert set(new) - set(old) == {k for k in new if k.startswith("dense.")} != set()
    assert all(torch.equal(old[k], new[k]) for k in old)
    # the saved head is the kept epoch's: it scores the tuning users as recorded
    assert tune_ndcg(model.dense, cache_states(model, assets, cfg, progress=False), cfg) == pytest.approx(max(curve))
    info = json.loads((out / "run_info.json").read_text())
    assert info["inputs"]["source_weights"]["sha256"] and info["versions"]["cpu"] and info["seed"] == cfg.run.seed
    assert (out / "passage_cache.pt").is_file()


def test_the_fitted_run_is_fused_by_gramc_evaluate(fitted, capsys):
    out = fitted / "out"
    rc = main(["evaluate", "--run", str(out), "--split", "test", "--out", str(fitted / "eval"),
               "eval.fusion.enabled=true", "eval.fusion.scorer=both", "eval.fusion.candidates=4",
               "eval.fusion.tune_users=6"])
    assert rc == 0
    rec = json.loads((fitted / "eval" / "metrics.json").read_text())
    assert sorted(rec["fusion"]["scorers"]) == ["dense", "lightgcn"]
    assert set(rec["fusion"]["alone"]["dense"]["metrics"]) == set(rec["metrics"])


def test_the_loss_over_every_item_is_the_full_softmax_with_the_history_masked():
    torch.manual_seed(0)
    cfg = DenseConfig(enabled=True, item="text", dim=8, logq=False)
    head = DenseHead(cfg, d_model=12, num_items=10)
    states, users = torch.randn(10, 1, 12), torch.randn(3, 12)
    every, targets = torch.arange(10), torch.tensor([2, 5, 7])
    history = torch.tensor([[1, 2, -1], [0, 3, 4], [7, -1, -1]])  # the third user's target is in its history
    got = head.loss(head.users(users), head.items(states, torch.ones(10, 1, dtype=torch.bool), every), every,
                    targets, history, 0)
    u = F.normalize(head.user(users), dim=-1)
    v = F.normalize(head.text(states[:, 0]), dim=-1)
    logits = u @ v.T / cfg.temperature
    for b, hist in enumerate(history.tolist()):
        for i in hist:
            if i >= 0 and i != targets[b]:
                logits[b, i] = -math.inf
    torch.testing.assert_close(got, F.cross_entropy(logits, targets, reduction="none"))


def test_refusals_name_what_is_wrong(fitted, tmp_path, capsys):
    src = fitted / "run"
    assert main(["train-head", "--run", str(src), "--out", str(tmp_path / "a"), "train.lr=0.1"]) == 2
    assert "'train.lr=0.1'" in capsys.readouterr().err
    assert main(["train-head", "--run", str(fitted / "out"), "--out", str(tmp_path / "b")]) == 2
    assert "already has a dense head" in capsys.readouterr().err
    assert main(["train-head", "--run", str(src), "--out", str(src / "inner")]) != 0
    assert "input" in capsys.readouterr().err
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    assert main(["train-head", "--run", str(src), "--out", str(busy)]) != 0
    assert "busy" in capsys.readouterr().err and (busy / "notes.txt").read_text() == "mine"
