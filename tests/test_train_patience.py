"""train.patience: early stopping on the validation metric, the best checkpoint kept, resumable."""

from __future__ import annotations

import json

from gramc.train.trainer import TrainParts, fit
from train_toy import build_model, collate, toy_config, toy_dataset, toy_samples

# validation ndcg@10 per epoch: best at epoch 1, then two epochs without a better one
CURVE = [0.10, 0.20, 0.15, 0.19, 0.50, 0.60]


def parts_with_curve(seed: int, eval_users: int = 0) -> tuple[TrainParts, list[str]]:
    """`calls` lists the validations during training; other calls (the step-0 final-evaluation
    probe on a few users, the final evaluation) read the curve without advancing it."""
    ds = toy_dataset(12)
    train, valid = toy_samples(ds)
    calls: list[str] = []

    def one(split: str, max_users: int) -> dict:
        if split != "valid" or max_users != eval_users:
            value = CURVE[min(sum(1 for c in calls if c == "valid"), len(CURVE) - 1)]
            return {"split": split, "metrics": {"ndcg@10": value, "hit@10": value}}
        calls.append(split)
        in_training = sum(1 for c in calls[:-1] if c == "valid") if split == "valid" else 0
        value = CURVE[min(in_training, len(CURVE) - 1)]
        return {"split": split, "metrics": {"ndcg@10": value, "hit@10": value}}

    def evaluate(model, splits: tuple[str, ...], max_users: int) -> dict:
        return {split: one(split, max_users) for split in splits}

    return TrainParts(build_model(ds, seed), collate, train, valid, evaluate=evaluate), calls


def valid_records(run):
    return [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines() if '"valid"' in x]


def test_patience_stops_after_epochs_without_improvement(tmp_path):
    cfg = toy_config(epochs=len(CURVE), patience=2)
    parts, _ = parts_with_curve(cfg.run.seed)
    res = fit(parts, cfg, tmp_path / "run")
    recs = valid_records(tmp_path / "run")
    assert [r["epoch"] for r in recs] == [0, 1, 2, 3]  # epochs 2 and 3 did not beat epoch 1
    assert res.state.done and res.state.best_epoch == 1
    best = json.loads((tmp_path / "run" / "checkpoints" / "best" / "state.json").read_text())
    assert best["best_epoch"] == 1 and best["step"] == res.state.best_step
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["checkpoint"] == "best" and m["selection"]["epoch"] == 1 and m["selection"]["value"] == 0.20


def test_patience_zero_runs_every_epoch(tmp_path):
    cfg = toy_config(epochs=len(CURVE), patience=0)
    parts, _ = parts_with_curve(cfg.run.seed)
    res = fit(parts, cfg, tmp_path / "run")
    assert [r["epoch"] for r in valid_records(tmp_path / "run")] == list(range(len(CURVE)))
    assert res.state.best_epoch == len(CURVE) - 1


def test_patience_survives_a_resume(tmp_path):
    cfg = toy_config(epochs=len(CURVE), patience=2)
    parts, _ = parts_with_curve(cfg.run.seed)
    fit(parts, cfg, tmp_path / "full")
    steps = json.loads((tmp_path / "full" / "checkpoints" / "last" / "state.json").read_text())["step"]
    per_epoch = steps // 4
    parts, _ = parts_with_curve(cfg.run.seed)
    res = fit(parts, cfg, tmp_path / "run", stop_after=per_epoch * 3 - 1)  # inside epoch 2
    assert res.interrupted
    parts, calls = parts_with_curve(cfg.run.seed)
    calls.extend(["valid", "valid"])  # the scripted curve continues where the first process stopped
    res = fit(parts, cfg, tmp_path / "run", resume=True)
    assert res.state.done and res.state.step == steps and res.state.best_epoch == 1


def test_select_metric_picks_the_best_checkpoint_and_drives_patience(tmp_path):
    """train.select_metric=hit@5: a curve whose hit@5 peaks at epoch 3 while ndcg@10 peaks at epoch 1."""
    ds = toy_dataset(12)
    train, valid = toy_samples(ds)
    hit5 = [0.1, 0.2, 0.3, 0.9, 0.5, 0.4, 0.3]
    ndcg10 = [0.1, 0.8, 0.2, 0.1, 0.1, 0.1, 0.1]
    seen: list[int] = []

    def one(split: str, max_users: int) -> dict:  # validations (all users) walk the curve
        i = min(len(seen), len(hit5) - 1)
        if split == "valid" and max_users == 0:
            seen.append(i)
        return {"split": split, "metrics": {"hit@5": hit5[i], "ndcg@10": ndcg10[i]}}

    def evaluate(model, splits: tuple[str, ...], max_users: int) -> dict:
        return {split: one(split, max_users) for split in splits}

    cfg = toy_config(epochs=len(hit5), patience=2, select_metric="hit@5")
    res = fit(TrainParts(build_model(ds, cfg.run.seed), collate, train, valid, evaluate=evaluate), cfg,
              tmp_path / "run")
    assert res.state.best_metric == "hit@5" and res.state.best_epoch == 3 and res.state.best_value == 0.9
    assert [r["epoch"] for r in valid_records(tmp_path / "run")] == [0, 1, 2, 3, 4, 5]  # 2 epochs past 3
    best = [r["epoch"] for r in valid_records(tmp_path / "run") if r.get("best")]
    assert best == [0, 1, 2, 3]  # ndcg@10's peak at epoch 1 is not what counts
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["selection"] == {"metric": "hit@5", "value": 0.9, "step": res.state.best_step, "epoch": 3}


def test_select_metric_valid_loss_selects_the_lowest_loss(tmp_path):
    cfg = toy_config(epochs=3, select_metric="valid_loss")
    parts, _ = parts_with_curve(cfg.run.seed)
    res = fit(parts, cfg, tmp_path / "run")
    recs = valid_records(tmp_path / "run")
    assert res.state.best_metric == "valid_loss"
    assert res.state.best_value == min(r["valid_loss"] for r in recs)
