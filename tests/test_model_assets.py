"""Assets: build what the config says is missing into run.out, reuse it next time, refuse stale ones."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from gramc.config import load_config
from gramc.data.dataset import DataError
from gramc.data.splits import samples
from gramc.model.assets import Assets
from gramc.model.gramc import GramC
from gramc.model.inputs import Collator

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared"
BEAUTY = SHARED / "datasets" / "amazon-beauty"


def _cfg(out, *extra):
    return load_config(None, [
        f"run.out={out}", "data.synthetic.num_users=60", "data.synthetic.num_items=40",
        "data.synthetic.num_topics=4", "data.max_his=6", "ids.vocab_size=300", "ids.clusters=4",
        "ids.levels=2", "gcn.dim=8", "gcn.epochs=2", "gcn.eval_every=0", "gcn.similar_k=5",
        "model.similar_items=3", "model.passage_len=48", "model.user_passage_len=48", *extra,
    ])


def test_assets_build_then_reuse(tmp_path):
    cfg = _cfg(tmp_path / "run")
    a = Assets.from_config(cfg, progress=False)
    out = tmp_path / "run"
    for p in ("tokenizer/tokenizer.json", "ids.txt", "gcn/gcn_item_embeddings.pt", "gcn/similar_items.txt",
              "passage_cache.pt"):
        assert (out / p).is_file(), p
    assert a.gcn_rows is not None and a.gcn_rows.shape == (a.ds.num_items,) and (a.gcn_rows > 0).all()
    assert len(a.similar) == a.ds.num_items and all(len(s) == 3 for s in a.similar)
    assert a.cache.num_items == a.ds.num_items
    mtimes = {p: os.stat(out / p).st_mtime_ns for p in ("ids.txt", "gcn/gcn_item_embeddings.pt", "passage_cache.pt")}
    b = Assets.from_config(cfg, progress=False)
    assert {p: os.stat(out / p).st_mtime_ns for p in mtimes} == mtimes  # reused, not rebuilt
    assert torch.equal(a.cache.item_table, b.cache.item_table)
    # the assets feed a model end to end
    model = GramC.from_config(cfg, b)
    batch = Collator(b.cache, cfg, b.gcn_rows)(samples(b.ds, "train", cfg.data.max_his)[:8])
    loss, n = model(batch)
    assert torch.isfinite(loss) and int(n) > 0


def test_stale_artefact_is_refused(tmp_path):
    Assets.from_config(_cfg(tmp_path / "run"), progress=False)
    with pytest.raises(DataError, match="ids.txt"):
        Assets.from_config(_cfg(tmp_path / "run", "ids.clusters=5"), progress=False)


def test_no_gcn_when_prefix_off_and_similar_from_file(tmp_path):
    cfg = _cfg(tmp_path / "run", "model.prefix.enabled=false", "model.similar_items=0")
    a = Assets.from_config(cfg, progress=False)
    assert a.gcn is None and a.gcn_rows is None and a.similar is None
    assert not (tmp_path / "run" / "gcn").exists()


@pytest.mark.shared
def test_beauty_with_grams_ids_and_similar_items(tmp_path):
    if not BEAUTY.is_dir():
        pytest.skip("../shared/datasets/amazon-beauty is not available")
    from gramc.data.prepare import prepare

    data = tmp_path / "beauty"
    base = load_config(None, [])
    prepare(BEAUTY / "user_sequence.txt", BEAUTY / "Amazon_Beauty.item", data, base)
    cfg = load_config(None, [
        f"run.out={tmp_path / 'run'}", f"data.path={data}",
        f"ids.file={BEAUTY / 'item_generative_indexing_hierarchy_v1_c128_l7_len32768_split.txt'}",
        f"ids.tokenizer={SHARED / 'tokenizers' / 't5-base-spm'}",
        f"model.similar_source={BEAUTY / 'similar_item_sasrec.txt'}", "model.prefix.enabled=false",
    ])
    a = Assets.from_config(cfg, progress=False)
    assert a.ds.num_items == 12101 and a.cache.num_items == 12101
    assert int(a.cache.item_len.max()) <= cfg.model.passage_len
    tr = a.cache.truncation()
    assert tr["similar_ids"].cut == 0  # 10 IDs of 7-8 levels fit: only text is cut
    assert tr["item_text"].share_cut > 0.2


@pytest.mark.parametrize("remove, named, command, rebuilt", [
    ("tokenizer", "tokenizer/tokenizer.json", "gramc train", True),
    ("ids.txt", "ids.txt", "gramc ids build", True),
    ("gcn", "gcn/gcn_meta.json", "gramc gcn train", True),
    # a GCN folder is trained whole: one missing file in it is an error for training too
    ("gcn/similar_items.txt", "gcn/similar_items.txt", "gramc gcn train", False),
])
def test_build_false_names_the_missing_asset_and_never_rebuilds_it(tmp_path, remove, named, command, rebuilt):
    import shutil

    from gramc.errors import MissingAssetError

    out = tmp_path / "run"
    cfg = _cfg(out)
    Assets.from_config(cfg, progress=False)
    Assets.from_config(cfg, progress=False, build=False)  # everything there: loads
    target = out / remove
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(MissingAssetError) as e:
        Assets.from_config(cfg, progress=False, build=False)
    assert str(out / named) in str(e.value) and command in str(e.value)
    assert not target.exists()  # not rebuilt
    if rebuilt:
        Assets.from_config(cfg, progress=False)  # training (build=True) builds it again
        assert target.exists()


def test_build_false_writes_nothing_into_an_empty_run(tmp_path):
    from gramc.errors import MissingAssetError

    with pytest.raises(MissingAssetError, match="tokenizer.json"):
        Assets.from_config(_cfg(tmp_path / "run"), progress=False, build=False)
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())
