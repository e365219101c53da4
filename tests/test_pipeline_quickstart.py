"""The quickstart pipeline really learns: GRAM-C's validation hit@10 well above popularity's.

A smaller setting than configs/quickstart.yaml (fewer users/items, short passages, no
similar-item passages) so that it runs in CI time; everything else (trained tokenizer, built
IDs, LightGCN, GRAM-C with the collaborative prefix, beam search, baselines, report) is real.
"""

from __future__ import annotations

import pytest
import torch

from gramc.io import read_json
from gramc.pipeline.quickstart import quickstart_config, run_quickstart, summary_table

SMALL = ["data.synthetic.num_users=250", "data.synthetic.num_items=120", "gcn.epochs=10", "data.max_his=5",
         "model.passage_len=24", "model.similar_items=0", "model.user_passage_len=32", "model.target_len=6",
         "train.epochs=6", "train.lr=0.005", "train.eval_every=6", "train.eval_users=0", "eval.beams=20",
         "eval.bootstrap=50", "pipeline.baselines=[pop]"]


@pytest.mark.slow
def test_quickstart_small_learns_well_above_popularity(tmp_path):
    torch.set_num_threads(1)
    cfg = quickstart_config(None, SMALL, str(tmp_path / "qs"))
    figures = run_quickstart(cfg, progress=False)
    valid = read_json(tmp_path / "qs" / "eval" / "metrics_valid.json")["metrics"]
    pop_valid = read_json(tmp_path / "qs" / "baselines" / "pop" / "metrics_valid.json")["metrics"]
    # well above popularity (the full quickstart, with more data and epochs, is measured at >= 2x)
    assert valid["hit@10"] >= 1.5 * pop_valid["hit@10"], (valid, pop_valid)
    assert valid["hit@10"] >= pop_valid["hit@10"] + 0.10, (valid, pop_valid)
    assert figures["gramc"]["hit@10"] > figures["pop"]["hit@10"]
    report = (tmp_path / "qs" / "report.md").read_text()
    assert "GRAM-C" in report and "pop" in report
    assert "x popularity" in summary_table(figures)
