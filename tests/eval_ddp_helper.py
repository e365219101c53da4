"""Run by test_eval_evaluate under `torchrun --nproc_per_node=3`: DDP evaluation of a tiny model."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).parent))

from eval_fakes import setup  # noqa: E402

from gramc.eval.evaluate import evaluate_split  # noqa: E402


def main(out: str, num_users: int) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    cfg, assets, model = setup(num_users=num_users)
    res = evaluate_split(model, assets, cfg, "test", progress=False)
    if dist.get_rank() == 0:
        Path(out).write_text(json.dumps({"users": res.users.tolist(), "ranks": res.ranks.tolist(),
                                         "items": res.items.tolist(), "metrics": res.metrics,
                                         "world": res.extra["world"]}))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
