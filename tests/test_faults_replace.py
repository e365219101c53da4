"""No command replaces an earlier output's checkpoint, metrics, log or table without keeping it.

A rewrite that changes an existing output (`gramc evaluate` / `gramc baseline` into a folder
holding an earlier evaluation, `data prepare`, `data subset`, `gcn train` and `ids build` over an
earlier output with other content, a pipeline stage rebuilt with other settings) first keeps the
old one beside it as `<name>.replaced-<time>` and says so on stderr; a rewrite with the same
content replaces it silently (nothing is lost).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from gramc.cli import main

from eval_fakes import make_run

SYN = ["data.synthetic.num_users=30", "data.synthetic.num_items=20", "data.synthetic.num_topics=3",
       "ids.vocab_size=300", "ids.clusters=4", "ids.levels=2", "gcn.dim=8", "gcn.epochs=1", "gcn.eval_every=0",
       "gcn.similar_k=5"]


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _asides(path: Path) -> list[Path]:
    return sorted(path.parent.glob(f"{path.name.split('.')[0]}.replaced-*"))


def test_aside_names_never_collide(tmp_path):
    from gramc.io import aside_path, move_aside

    a = tmp_path / "run"
    a.mkdir()
    first = move_aside(a, "run")
    a.mkdir()
    (a / "x").write_text("2")
    second = move_aside(a, "run")  # the same second: numbered, never renamed over the first
    assert first != second and first.is_dir() and (second / "x").read_text() == "2"
    f = tmp_path / "ids.txt"
    f.write_text("x")
    assert aside_path(f).name.startswith("ids.replaced-") and aside_path(f).suffix == ".txt"


def test_keep_copy_leaves_the_folder_and_copies_it_whole(tmp_path):
    from gramc.io import keep_copy

    a = tmp_path / "gcn"
    (a / "sub").mkdir(parents=True)
    (a / "sub" / "t.pt").write_bytes(b"table")
    kept = keep_copy(a, "GCN folder")
    assert _tree(kept) == _tree(a) == {"sub/t.pt": b"table"}


@pytest.fixture(scope="module")
def run_a(tmp_path_factory):
    root = tmp_path_factory.mktemp("replace")
    make_run(root / "A")
    return root / "A"


def test_evaluate_again_into_the_same_folder_keeps_the_earlier_evaluation(run_a, capsys):
    out = run_a / "eval" / "mine"
    args = ["evaluate", "--run", str(run_a), "--split", "valid", "--max-users", "3", "--out", str(out)]
    assert main(args) in (0, 1)
    first = _tree(out)
    assert "metrics.json" in first
    capsys.readouterr()
    assert main([*args, "eval.length_penalty=0.5"]) in (0, 1)
    err = capsys.readouterr().err
    kept = _asides(out)
    assert len(kept) == 1 and _tree(kept[0]) == first
    assert f"kept as {kept[0]}" in err and str(out) in err
    assert json.loads((out / "metrics.json").read_text())["length_penalty"] == 0.5


def test_baseline_again_into_the_same_folder_keeps_the_earlier_metrics(tmp_path, capsys):
    out = tmp_path / "pop"
    assert main(["baseline", "pop", "--out", str(out), *SYN]) == 0
    first = _tree(out)
    capsys.readouterr()
    assert main(["baseline", "pop", "--out", str(out), *SYN, "eval.ks=[1,5,10]"]) == 0
    kept = _asides(out)
    assert len(kept) == 1 and _tree(kept[0]) == first and "kept as" in capsys.readouterr().err


def test_prepare_over_another_dataset_keeps_it_and_over_the_same_one_does_not(tmp_path, capsys):
    out = tmp_path / "ds"
    assert main(["data", "prepare", "--synthetic", "--out", str(out), *SYN]) == 0
    first = _tree(out)
    assert main(["data", "prepare", "--synthetic", "--out", str(out), *SYN]) == 0  # same data: replaced
    assert _asides(out) == [] and "kept as" not in capsys.readouterr().err
    assert main(["data", "prepare", "--synthetic", "--out", str(out), *SYN, "data.synthetic.seed=9"]) == 0
    kept = _asides(out)
    assert len(kept) == 1 and _tree(kept[0]) == first and f"kept as {kept[0]}" in capsys.readouterr().err
    assert _tree(out)["sequences.txt"] != first["sequences.txt"]


def test_subset_over_another_subset_keeps_it(tmp_path, capsys):
    parent, out = tmp_path / "ds", tmp_path / "sub"
    assert main(["data", "prepare", "--synthetic", "--out", str(parent), *SYN]) == 0
    assert main(["data", "subset", "--data", str(parent), "--out", str(out), "--users", "20", "--seed", "1"]) == 0
    first = _tree(out)
    assert main(["data", "subset", "--data", str(parent), "--out", str(out), "--users", "20", "--seed", "2"]) == 0
    kept = _asides(out)
    assert len(kept) == 1 and _tree(kept[0]) == first and "kept as" in capsys.readouterr().err


def test_gcn_train_over_another_table_keeps_it(tmp_path, capsys):
    data, out = tmp_path / "ds", tmp_path / "gcn"
    assert main(["data", "prepare", "--synthetic", "--out", str(data), *SYN]) == 0
    assert main(["gcn", "train", "--data", str(data), "--out", str(out), *SYN]) == 0
    first = _tree(out)
    capsys.readouterr()
    assert main(["gcn", "train", "--data", str(data), "--out", str(out), *SYN, "gcn.seed=5"]) == 0
    kept = _asides(out)
    assert len(kept) == 1 and _tree(kept[0]) == first and "kept as" in capsys.readouterr().err


def test_ids_build_over_other_ids_keeps_the_earlier_table(tmp_path, capsys):
    data, out = tmp_path / "ds", tmp_path / "ids.txt"
    assert main(["data", "prepare", "--synthetic", "--out", str(data), *SYN]) == 0
    assert main(["ids", "build", "--data", str(data), "--out", str(out), "--quiet", *SYN]) in (0, 1)
    first = out.read_bytes()
    capsys.readouterr()
    assert main(["ids", "build", "--data", str(data), "--out", str(out), "--quiet", *SYN, "ids.seed=5",
                 "ids.tokenizer=" + str(tmp_path / "ids.txt.tokenizer")]) in (0, 1)
    kept = sorted(tmp_path.glob("ids.replaced-*.txt"))
    if out.read_bytes() == first:
        pytest.skip("ids.seed=5 built the same IDs on this data")
    assert len(kept) == 1 and kept[0].read_bytes() == first and "kept as" in capsys.readouterr().err


def test_a_rewrite_with_the_same_content_keeps_nothing(tmp_path):
    from gramc.io import keep_file, write_text

    f = tmp_path / "ids.txt"
    f.write_text("a |x|\n")
    with keep_file(f, "--out"):
        write_text(f, "a |x|\n")
    assert sorted(os.listdir(tmp_path)) == ["ids.txt"]


def test_a_pipeline_stage_rebuilt_with_other_settings_keeps_the_earlier_output(tmp_path, capsys):
    from gramc.pipeline.pipeline import Stage, run_stage

    def build(value):
        def b(out: Path) -> dict:
            (out / "metrics.json").write_text(json.dumps({"hit@10": value}))
            return {}
        return b

    folder = tmp_path / "eval"
    assert run_stage(Stage("evaluate", folder, {"k": 1}, {}, build(0.1)), log=lambda s: None).status == "ran"
    first = _tree(folder)
    assert run_stage(Stage("evaluate", folder, {"k": 2}, {}, build(0.2)), log=lambda s: None).status == "ran"
    kept = _asides(folder)
    assert len(kept) == 1 and _tree(kept[0]) == first and "kept as" in capsys.readouterr().err
    assert json.loads((folder / "metrics.json").read_text()) == {"hit@10": 0.2}
