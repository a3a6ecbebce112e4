"""Run by torchrun from tests/test_distributed.py: a tiny BBN run on two gloo processes.

Each rank trains through the real entry point (lttoolkit.engine.train's code path), then
writes what the test compares: its final parameters, its sampler shards for epoch 0 and
the distributed evaluation of the final model.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from lttoolkit.engine import distributed
from lttoolkit.engine.config import load_config
from lttoolkit.engine.trainer import Trainer


def main(out_dir: str, *overrides: str) -> None:
    out = Path(out_dir)
    cfg = load_config(None, list(overrides))
    with distributed.distributed_session("cpu") as info:
        trainer = Trainer(cfg, progress=False)
        streams = []
        for sampler in trainer.samplers:
            sampler.set_epoch(0)
            streams.append([int(i) for i in sampler])
        trainer.fit()
        evaluation = trainer.evaluate("test")
        torch.save(
            {
                "rank": info.rank,
                "world_size": info.world_size,
                "state": {k: v.detach().clone() for k, v in trainer.model.state_dict().items()},
                "streams": streams,
                "evaluation": {k: evaluation[k] for k in ("top1", "top5", "per_class_correct", "per_class_total",
                                                         "num_samples")},
                "run_dir": str(trainer.run_dir),
            },
            out / f"rank{info.rank}.pt",
        )


if __name__ == "__main__":
    main(*sys.argv[1:])
