"""One seeding point per run: nothing in gramc reseeds a global RNG except `gramc.seeding`, a
training's numbers do not depend on the global RNG state before it starts, and model
initialisation draws from a stream of its own."""

from __future__ import annotations

import ast
from pathlib import Path

import torch

from gramc.seeding import seed_everything, seeded
from gramc.train.trainer import TrainParts, fit
from train_toy import build_model, collate, toy_config, toy_dataset, toy_samples

SRC = Path(__file__).resolve().parents[1] / "src" / "gramc"
GLOBAL_SEEDERS = {"manual_seed", "seed", "seed_everything", "manual_seed_all", "set_rng_state"}


def global_reseeds(path: Path) -> list[str]:
    """Calls like torch.manual_seed(...), random.seed(...), np.random.seed(...), seed_everything(...)
    in `path`; `torch.Generator().manual_seed(...)` (a local generator) is not one."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
        local = isinstance(f, ast.Attribute) and isinstance(f.value, ast.Call)  # Generator().manual_seed
        if name in GLOBAL_SEEDERS and not local:
            out.append(f"{path.relative_to(SRC)}:{node.lineno} {name}")
    return out


def test_only_the_run_entries_seed_the_global_rngs():
    found = [c for p in sorted(SRC.rglob("*.py")) if p.name != "seeding.py" for c in global_reseeds(p)]
    # the two run entries (every training goes through fit; the SASRec baseline run) and restoring a
    # checkpoint's RNG states on resume
    assert sorted({c.split(":")[0] + " " + c.split()[-1] for c in found}) == [
        "baselines/sasrec.py seed_everything", "checkpoint.py set_rng_state",
        "train/trainer.py seed_everything"], found


def test_seeded_block_has_its_own_stream_and_leaves_the_global_one():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    with seeded(5):
        inside = torch.rand(4)
    assert torch.equal(torch.rand(3), expected)  # the global stream continues as if nothing ran
    with seeded(5):
        assert torch.equal(torch.rand(4), inside)
    seed_everything(3, rank=2)
    a = torch.rand(2)
    seed_everything(5)
    assert torch.equal(torch.rand(2), a)  # seed + rank


def _fit_weights(tmp_path: Path, name: str, before: int) -> dict[str, torch.Tensor]:
    ds = toy_dataset(12)
    train, valid = toy_samples(ds)
    cfg = toy_config(epochs=2)
    model = build_model(ds, 4, dropout=0.4)
    torch.manual_seed(before)  # whatever ran before the run left the global RNG somewhere else
    torch.rand(before)
    fit(TrainParts(model, collate, train, valid), cfg, tmp_path / name)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_a_training_does_not_depend_on_the_rng_state_before_it(tmp_path):
    """Dropout 0.4 draws from the global stream: without `fit` seeding it, the two runs differ."""
    a, b = _fit_weights(tmp_path, "a", 1), _fit_weights(tmp_path, "b", 99)
    assert all(torch.equal(a[k], b[k]) for k in a)
