"""End-to-end BBN training throughput against the model-only step: is data loading in the way?

Trains BBN (Zhou et al., "BBN: Bilateral-Branch Network with Cumulative
Learning for Long-Tailed Visual Recognition", CVPR 2020) with ResNet-32 on the
embedded Fashion-MNIST-LT through lttoolkit's own training loop
(``lttoolkit.engine.Trainer`` built from ``load_config(None, [...])``), once with
``data.num_workers=0`` and once with ``data.num_workers=2``: sampling, PIL
decoding, augmentation, collation and the two-stream step, everything a real
epoch does (worker start-up included, as the trainer starts its workers every
epoch). Against it: the same steps (same model, optimizer, loss and two-stream
forward) fed from batches pre-loaded in memory.

Reported: images/s (both branches' images count), and end-to-end over
model-only. Target: ratio >= 0.9.

The end-to-end epoch is the trainer's own ``Trainer._train_epoch`` (the loop
``Trainer.fit`` runs, without evaluation and checkpoints); the benchmark breaks
loudly if that method is renamed.

Run: ``python benchmarks/data_pipeline.py`` (``--quick`` for a smoke test).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402

NAME = "data_pipeline"
DESCRIPTION = "end-to-end BBN training images/s (Trainer, num_workers 0 and 2) against the model-only step"
RATIO_TARGET = 0.9

FULL = {"batch": 128, "steps": None, "repeats": 3, "workers": [0, 2], "warmup_steps": 2}
QUICK = {"batch": 8, "steps": 1, "repeats": 1, "workers": [0, 2], "warmup_steps": 1}


def parse_args(argv: list[str] | None = None) -> Any:
    parser = _common.base_parser(NAME, DESCRIPTION)
    parser.add_argument("--repeats", type=int, default=None, help="timed epochs per variant")
    parser.add_argument("--steps", type=int, default=None,
                        help="steps per epoch (train.max_steps_per_epoch; default: the whole epoch)")
    parser.add_argument("--workers", type=int, nargs="+", default=None, help="data.num_workers values to compare")
    parser.add_argument("--backbone", default="resnet32_cifar")
    return parser.parse_args(argv)


def build_trainer(workers: int, batch: int, steps: int | None, backbone: str, out_dir: str) -> Any:
    from lttoolkit.engine.config import load_config
    from lttoolkit.engine.trainer import Trainer

    overrides = [f"model.backbone={backbone}", f"data.batch_size={batch}", f"data.num_workers={workers}",
                 "train.device=cpu", "train.epochs=1000", "optim.warmup_epochs=0", f"output_dir={out_dir}",
                 f"name=workers{workers}"]
    if steps:
        overrides.append(f"train.max_steps_per_epoch={steps}")
    return Trainer(load_config(None, overrides), progress=False), overrides


def preload(trainer: Any) -> list[tuple[list[Any], list[Any]]]:
    """One epoch of batches of every stream, drawn once and kept in memory."""
    import itertools

    batches = []
    streams = [iter(loader) for loader in trainer.loaders]
    for step in itertools.islice(zip(*streams), trainer.steps_per_epoch):
        batches.append(([x for x, _ in step], [y for _, y in step]))
    return batches


def model_only_epoch(trainer: Any, batches: list[tuple[list[Any], list[Any]]], epoch: int,
                     steps: int | None = None) -> float:
    """The trainer's step on pre-loaded tensors; returns images processed."""
    import torch

    model, optimizer = trainer.model, trainer.optimizer
    kwargs = model.training_kwargs(epoch, trainer.cfg.train.epochs)
    model.train()
    images_seen = 0
    for images, targets in batches[:steps]:
        logits = trainer.forward_model(*images, **kwargs)
        loss = model.combine_loss(trainer.criterion, logits, targets, **kwargs)
        if not torch.isfinite(loss):
            raise FloatingPointError("the loss became non-finite in the model-only step")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss.item()
        int((logits.argmax(1) == targets[0]).sum())
        images_seen += sum(x.shape[0] for x in images)
    return images_seen


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from lttoolkit.engine.progress import TrainingProgress

    _common.apply_threads(args)
    report = _common.Report(NAME, DESCRIPTION, args)
    spec = dict(QUICK if args.quick else FULL)
    for key in ("repeats", "steps", "workers"):
        if getattr(args, key):
            spec[key] = getattr(args, key)
    with tempfile.TemporaryDirectory(prefix="lttk-bench-") as tmp:
        trainers = {}
        for workers in spec["workers"]:
            trainers[workers], overrides = build_trainer(workers, spec["batch"], spec["steps"], args.backbone, tmp)
        first = trainers[spec["workers"][0]]
        steps = first.steps_per_epoch
        report.settings.update({
            **spec, "backbone": args.backbone, "steps_per_epoch": steps, "train_images": len(first.data.train),
            "streams": len(first.loaders), "images_per_step": spec["batch"] * len(first.loaders),
            "overrides": overrides, "torch_threads": torch.get_num_threads(),
            "model_only": "the same trainer step (forward, combine_loss, backward, SGD) on one epoch of batches "
                          "pre-loaded in memory, using the first trainer's model and optimizer",
        })
        _common.print_note(f"BBN {args.backbone} on the embedded Fashion-MNIST-LT ({len(first.data.train)} images): "
                           f"{steps} steps/epoch of {spec['batch']} x {len(first.loaders)} streams")
        batches = preload(first)
        counter = {"epoch": 0}

        with TrainingProgress(1000, enabled=False) as progress:

            def end_to_end(workers: int, limit: int | None = None) -> Callable[[], None]:
                trainer = trainers[workers]

                def run() -> None:
                    saved = trainer.steps_per_epoch
                    trainer.steps_per_epoch = limit or saved
                    try:
                        counter["epoch"] += 1
                        trainer._train_epoch(counter["epoch"], progress)
                    finally:
                        trainer.steps_per_epoch = saved

                return run

            def model_only(limit: int | None = None) -> Callable[[], None]:
                def run() -> None:
                    counter["epoch"] += 1
                    model_only_epoch(first, batches, counter["epoch"], limit)

                return run

            # Short warm-up (lazy initialisation, allocator), then whole epochs interleaved.
            warm = spec["warmup_steps"]
            _common.interleaved({**{f"w{w}": end_to_end(w, warm) for w in spec["workers"]},
                                 "model_only": model_only(warm)}, 1, warmup=0)
            variants = {f"end_to_end_workers{w}": end_to_end(w) for w in spec["workers"]}
            variants["model_only"] = model_only()
            _common.print_note(f"{spec['repeats']} interleaved rounds of: {', '.join(variants)}")
            start = time.perf_counter()
            times = _common.interleaved(variants, spec["repeats"], warmup=0)
            _common.print_note(f"timed in {time.perf_counter() - start:.1f} s")

    images_per_epoch = steps * spec["batch"] * len(first.loaders)
    stats = {key: _common.summary(samples) for key, samples in times.items()}
    reference = images_per_epoch / stats["model_only"]["median"]
    rows = [{"variant": "model_only", "num_workers": None, "epoch_s": stats["model_only"]["median"],
             "images_per_s": reference, "ratio": 1.0, "seconds": stats["model_only"]}]
    for workers in spec["workers"]:
        key = f"end_to_end_workers{workers}"
        ips = images_per_epoch / stats[key]["median"]
        value = _common.ratio(ips, reference)
        verdict = report.add_target(f"end-to-end / model-only, num_workers={workers}", value, ">=", RATIO_TARGET)
        rows.append({"variant": key, "num_workers": workers, "epoch_s": stats[key]["median"], "images_per_s": ips,
                     "ratio": value, "status": verdict["status"], "seconds": stats[key]})
    report.results.extend(rows)
    _common.print_table(f"data pipeline: median over {spec['repeats']} epochs of {steps} steps "
                        f"({images_per_epoch:,} images per epoch)",
                        ["variant", "epoch s", "images/s", "ratio to model-only", "status"],
                        [(r["variant"], r["epoch_s"], r["images_per_s"], r["ratio"], r.get("status", "-"))
                         for r in rows], plain=args.plain)
    report.print_targets(plain=args.plain)
    report.write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
