"""bench/gpu_beauty.py runs as it will on the GPU machine (gramc from src/, no matplotlib), here on
the synthetic data with tiny settings, and writes the figures it promises."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "data.synthetic.num_users=60", "data.synthetic.num_items=40", "data.synthetic.num_topics=4", "data.max_his=3",
    "ids.vocab_size=300", "ids.clusters=4", "ids.levels=2", "gcn.dim=8", "gcn.epochs=2", "gcn.eval_every=0",
    "gcn.similar_k=5", "model.similar_items=2", "model.passage_len=24", "model.user_passage_len=24",
    "model.preset=tiny", "train.batch_size=8", "train.grad_accum=2", "train.num_workers=2", "train.log_every=1",
    "train.valid_loss_samples=16", "eval.batch_size=8", "eval.ks=[1,5,10]", "eval.bootstrap=20", "run.device=cpu",
]
# what the GPU machine lacks: the script must not import it
RUNNER = ("import runpy, sys; sys.modules['matplotlib'] = None; sys.modules['pytest'] = None; "
          "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')")


def test_gpu_beauty_runs_without_install_or_matplotlib(tmp_path):
    out = tmp_path / "gpu"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-c", RUNNER, str(ROOT / "bench" / "gpu_beauty.py"), "--synthetic", "--out", str(out),
           "--max-steps", "3", "--eval-users", "10", "--beams", "10", *TINY]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((out / "gpu_beauty.json").read_text())
    assert [m["model"] for m in res["models"]] == ["gram", "gramc"]
    assert [m["prefix"] for m in res["models"]] == [False, True]
    for m in res["models"]:
        assert m["steps"] == m["max_steps"] == 3 and m["samples_trained"] == 3 * 16
        assert m["samples_per_s"] > 0 and m["step_s"] > 0 and m["eval_users_per_s"] > 0
        assert m["eval_users"] == 10 and m["beams"] == 10 and m["peak_gpu_gib"] is None  # CPU here
        assert set(m["metrics"]) >= {"hit@10", "ndcg@10"} and set(m["ci"]) >= {"hit@10", "ndcg@10"}
        assert (out / m["model"] / "metrics_test_subset.json").is_file()
        assert not (out / m["model"] / "metrics.json").exists()  # train.final_eval=false: only the subset
    assert res["environment"]["torch"] and res["wall_s"] > 0
    assert "samples/s" in proc.stdout and "gpu_beauty.json" in proc.stdout
