"""Run by tests/test_faults_kill.py under `torchrun --nproc_per_node=2` (gloo, CPU, float64 toy).

    ddp_kill_helper.py OUT kill     train 6 steps into OUT/cut (a checkpoint after every step);
                                    rank 1 SIGKILLs itself during step 4
    ddp_kill_helper.py OUT resume   continue OUT/cut from its last checkpoint to the end, then train
                                    OUT/full uninterrupted (one launch for both)
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import torch.distributed as dist

from gramc.runtime import init_distributed
from gramc.train.trainer import TrainParts, fit
from train_toy import build_model, collate, toy_config, toy_dataset, toy_samples

STEPS = 6


def main() -> None:
    out, mode = Path(sys.argv[1]), sys.argv[2]
    info = init_distributed("cpu")
    ds = toy_dataset(30)
    train, valid = toy_samples(ds)
    cfg = toy_config(max_steps=STEPS, save_every=1, epochs=3)
    steps = [0]

    def maybe_die(_grads) -> None:
        steps[0] += 1
        if mode == "kill" and info.rank == 1 and steps[0] == 4:
            os.kill(os.getpid(), signal.SIGKILL)  # kill -9 of one rank, mid-step

    def parts(seed: int) -> TrainParts:
        return TrainParts(build_model(ds, seed, dropout=0.3), collate, train, valid)

    if mode == "kill":
        fit(parts(cfg.run.seed), cfg, out / "cut", after_sync=maybe_die, info=info)
    else:  # resume with another init (the checkpoint's weights replace it), then the reference
        fit(parts(cfg.run.seed + 7), cfg, out / "cut", resume=True, info=info)
        fit(parts(cfg.run.seed), cfg, out / "full", info=info)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
