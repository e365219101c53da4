"""A tiny GRAM-C setup for the evaluation tests (fake tokenizer and IDs, random weights)."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from gramc.model.dense import DenseTables
from gramc.model.gramc import GramC
from gramc.model.inputs import PassageCache
from test_model_fakes import VOCAB, FakeIds, FakeTokenizer, make_dataset, make_similar, make_texts, tiny_config

N_ITEMS = 40
GCN_DIM = 16


def setup(placement: str = "user_passage", enabled: bool = True, num_users: int = 10, seed: int = 0,
          beams: int = 12, dense: str | None = None):
    """(cfg, assets, model): `assets` has what evaluation reads (ds, item_ids, cache, gcn_rows).
    `dense`: also a dense head whose item vectors read "text", "gcn" or "both"."""
    cfg = tiny_config()
    if dense is not None:
        cfg.model.dense.enabled, cfg.model.dense.item = True, dense
    cfg.model.prefix.enabled = enabled
    cfg.model.prefix.placement = placement
    cfg.model.prefix.dropout = 0.0
    cfg.model.prefix.prefix_dropout = 0.0
    cfg.eval.beams = beams
    cfg.eval.batch_size = 4
    cfg.eval.item_batch_size = 16
    cfg.eval.bootstrap = 50
    ds = make_dataset(num_users=num_users, num_items=N_ITEMS, seed=seed)
    ids = FakeIds(N_ITEMS)
    cache = PassageCache.build(FakeTokenizer(), ids, make_texts(N_ITEMS), make_similar(N_ITEMS), cfg.model,
                               progress=False)
    g = torch.Generator().manual_seed(seed)
    table = torch.randn(N_ITEMS + 1, GCN_DIM, generator=g)
    table[0] = 0
    torch.manual_seed(seed)
    tables = DenseTables(N_ITEMS, torch.arange(N_ITEMS, dtype=torch.float32), table, torch.arange(1, N_ITEMS + 1))
    model = GramC(cfg.model, cfg.data.max_his, VOCAB, table if enabled else None,
                  dense=tables if dense is not None else None).eval()
    assets = SimpleNamespace(ds=ds, item_ids=ids, cache=cache,
                             gcn_rows=torch.arange(1, N_ITEMS + 1) if enabled else None)
    return cfg, assets, model


def make_run(run_dir, *extra: str):
    """A trained-looking run folder: config.yaml + checkpoints/best (random weights) on synthetic data."""
    from pathlib import Path

    from gramc.config import load_config
    from gramc.model.assets import Assets
    from gramc.io import write_json
    from gramc.runinfo import write_run_info
    from gramc.checkpoint import ASSETS_FILE, save_model_file

    run_dir = Path(run_dir)
    cfg = load_config(None, [
        f"run.out={run_dir}", "run.device=cpu", "data.synthetic.num_users=40", "data.synthetic.num_items=30",
        "data.synthetic.num_topics=4", "data.max_his=6", "ids.vocab_size=300", "ids.clusters=4",
        "ids.levels=2", "gcn.dim=8", "gcn.epochs=2", "gcn.eval_every=0", "gcn.similar_k=5",
        "model.similar_items=3", "model.passage_len=48", "model.user_passage_len=48", "model.dropout=0.0",
        "eval.beams=8", "eval.allow_capped=true", "eval.bootstrap=50", "eval.batch_size=8", *extra,
    ])
    assets = Assets.from_config(cfg, progress=False)
    torch.manual_seed(0)
    model = GramC.from_config(cfg, assets)
    write_run_info(run_dir, cfg)
    (run_dir / "checkpoints" / "best").mkdir(parents=True, exist_ok=True)
    save_model_file(run_dir / "checkpoints" / "best" / "model.safetensors", model)  # records model.softmax
    write_json(run_dir / "checkpoints" / "best" / ASSETS_FILE, assets.fingerprints())  # as training does
    return cfg, assets, model
