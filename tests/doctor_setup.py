"""The small synthetic setup shared by the doctor tests (tiny preset, 60 users, 40 items)."""

from __future__ import annotations

from pathlib import Path

from gramc.config import Config, load_config

OVERRIDES = [
    "data.synthetic.num_users=60", "data.synthetic.num_items=40", "data.synthetic.num_topics=4",
    "data.max_his=6", "ids.vocab_size=300", "ids.clusters=4", "ids.levels=2", "gcn.dim=8", "gcn.epochs=2",
    "gcn.eval_every=0", "gcn.similar_k=5", "model.similar_items=3", "model.passage_len=48",
    "model.user_passage_len=48", "run.device=cpu",
]


def tiny_config(out: Path, *extra: str) -> Config:
    return load_config(None, [f"run.out={out}", *OVERRIDES, *extra])
