"""Run by ``torchrun`` from ``benchmarks/scaling.py``: a fixed number of BBN steps on synthetic data.

Every process trains its own shard of synthetic images (weak scaling: the batch
per process is fixed) through DistributedDataParallel over gloo, started by
lttoolkit's own ``distributed_session``, as ``lttk train`` under torchrun does.
With one process the model is used directly, as the Trainer does. Rank 0
writes the timing as JSON to the path given by ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # torchrun runs this file as a script
import _common  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--backbone", default="resnet32_cifar")
    parser.add_argument("--batch", type=int, default=64, help="images per branch per process")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--num-classes", type=int, default=100)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--warmup-steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from lttoolkit import build
    from lttoolkit.engine import distributed

    with distributed.distributed_session("cpu") as info:
        torch.manual_seed(0)  # the same initial model on every rank
        model = build("bbn", backbone=args.backbone, num_classes=args.num_classes)
        forward_model = model
        if info.enabled:
            from torch.nn.parallel import DistributedDataParallel

            forward_model = DistributedDataParallel(model)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
        generator = torch.Generator().manual_seed(1 + info.rank)  # each rank its own shard
        shape = (args.batch, 3, args.image_size, args.image_size)
        x_c, x_r = torch.randn(shape, generator=generator), torch.randn(shape, generator=generator)
        y_c = torch.randint(0, args.num_classes, (args.batch,), generator=generator)
        y_r = torch.randint(0, args.num_classes, (args.batch,), generator=generator)

        step = _common.bbn_train_step(forward_model, model, optimizer, (x_c, x_r, y_c, y_r))

        for _ in range(args.warmup_steps):
            step()
        distributed.barrier()
        start = time.perf_counter()
        for _ in range(args.steps):
            step()
        distributed.barrier()
        seconds = time.perf_counter() - start
        if info.is_main:
            images = args.steps * 2 * args.batch * info.world_size
            args.out.write_text(json.dumps({
                "world_size": info.world_size, "threads_per_process": torch.get_num_threads(),
                "steps": args.steps, "seconds": seconds, "steps_per_s": args.steps / seconds,
                "images_per_s": images / seconds, "images_per_step": 2 * args.batch * info.world_size,
                "backend": "gloo" if info.enabled else "none (single process)",
            }))


if __name__ == "__main__":
    main()
