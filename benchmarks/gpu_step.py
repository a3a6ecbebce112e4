"""BBN training and inference speed on a CUDA GPU against the plain backbone (ResNet-50, AMP).

The GPU counterpart of ``step_overhead.py``: BBN (Zhou et al., "BBN:
Bilateral-Branch Network with Cumulative Learning for Long-Tailed Visual
Recognition", CVPR 2020) through ``BilateralWrapper`` on ResNet-50 at 224x224,
mixed precision (autocast + GradScaler, as ``lttk train`` uses on CUDA),
optionally channels-last, against a plain ResNet-50 step on the same 2B images.
Variants are interleaved in chunks of steps, each chunk closed by
``torch.cuda.synchronize()``.

Targets as on the CPU: training ratio <= 1.10, inference ratio <= 1.15.

Without a CUDA device it prints ``no CUDA device: skipped``, writes a report
with ``"skipped": true`` and exits 0. ``--device cpu`` runs the same code on the
CPU (without AMP) to check the script itself, not to measure.

Run: ``python benchmarks/gpu_step.py`` (about a minute on one GPU; ``--quick`` for a smoke test).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402

NAME = "gpu_step"
DESCRIPTION = "BBN ResNet-50 steps/s on a CUDA GPU (AMP, channels-last optional) against the plain backbone"
TRAIN_TARGET = 1.10
INFER_TARGET = 1.15

FULL = {"backbone": "resnet50", "image_size": 224, "batch": 64, "num_classes": 1000, "steps_per_chunk": 5,
        "repeats": 8, "warmup": 2}
QUICK = {"backbone": "resnet18", "image_size": 64, "batch": 2, "num_classes": 10, "steps_per_chunk": 1,
         "repeats": 1, "warmup": 1}


def parse_args(argv: list[str] | None = None) -> Any:
    parser = _common.base_parser(NAME, DESCRIPTION)
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu (checks the script, no AMP)")
    parser.add_argument("--backbone", default=None, help="any backbone name (default resnet50; --quick: resnet18)")
    parser.add_argument("--batch", type=int, default=None, help="images per branch B (default 64)")
    parser.add_argument("--repeats", type=int, default=None, help="timed chunks per variant")
    parser.add_argument("--dtype", choices=["float16", "bfloat16"], default="float16", help="autocast dtype")
    parser.add_argument("--no-amp", action="store_true", help="full float32")
    parser.add_argument("--channels-last", dest="channels_last", action="store_true", default=True,
                        help="channels-last memory format (default)")
    parser.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    _common.apply_threads(args)
    import torch
    import torch.nn.functional as F

    report = _common.Report(NAME, DESCRIPTION, args)
    report.data["skipped"] = False
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        message = "no CUDA device: skipped"
        print(message)
        report.data["skipped"] = True
        report.data["skip_reason"] = message
        report.write()
        return 0

    from lttoolkit import build
    from lttoolkit.backbones import create_backbone

    spec = dict(QUICK if args.quick else FULL)
    for key in ("backbone", "batch", "repeats"):
        if getattr(args, key):
            spec[key] = getattr(args, key)
    amp = device.type == "cuda" and not args.no_amp
    dtype = getattr(torch, args.dtype)
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        report.data["machine"]["gpu"] = torch.cuda.get_device_name(device)
    report.settings.update({**spec, "device": str(device), "amp": amp, "amp_dtype": args.dtype if amp else None,
                            "channels_last": args.channels_last,
                            "optimizer": "SGD(lr=0.01, momentum=0.9, weight_decay=5e-4)", "alpha": 0.5})
    _common.print_note(f"device: {report.data['machine']['gpu'] or device}; {spec['backbone']} "
                       f"{spec['image_size']}px, B={spec['batch']} per branch, AMP {amp} ({args.dtype}), "
                       f"channels_last {args.channels_last}")

    torch.manual_seed(0)
    size, batch, classes = spec["image_size"], spec["batch"], spec["num_classes"]

    def images() -> Any:
        return torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=memory_format)

    x_c, x_r = images(), images()
    y_c = torch.randint(0, classes, (batch,), device=device)
    y_r = torch.randint(0, classes, (batch,), device=device)
    y_both = torch.cat([y_c, y_r])
    models = {
        "bbn": build("bbn", backbone=spec["backbone"], num_classes=classes),
        "plain": create_backbone(spec["backbone"], num_classes=classes),
    }
    for key in models:
        models[key] = models[key].to(device=device, memory_format=memory_format)
    optimizers = {key: torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
                  for key, m in models.items()}
    scalers = {key: torch.amp.GradScaler("cuda", enabled=amp) for key in models}

    def train_chunk(key: str) -> Callable[[], None]:
        model, optimizer, scaler = models[key], optimizers[key], scalers[key]

        def one_step() -> None:
            with torch.autocast(device.type, dtype=dtype, enabled=amp):
                if key == "bbn":
                    logits = model(x_c, x_r, alpha=0.5)
                    loss = model.combine_loss(F.cross_entropy, logits, (y_c, y_r), alpha=0.5)
                else:
                    loss = F.cross_entropy(model(torch.cat([x_c, x_r])), y_both)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()

        def chunk() -> None:
            for _ in range(spec["steps_per_chunk"]):
                one_step()

        return chunk

    def infer_chunk(key: str) -> Callable[[], None]:
        model = models[key]

        def chunk() -> None:
            with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=amp):
                for _ in range(spec["steps_per_chunk"]):
                    model(x_c)

        return chunk

    sync = torch.cuda.synchronize if device.type == "cuda" else None
    for model in models.values():
        model.train()
    _common.print_note(f"train: {spec['warmup']} warm-up + {spec['repeats']} timed chunks of "
                       f"{spec['steps_per_chunk']} steps per variant")
    train_times = _common.interleaved({k: train_chunk(k) for k in models}, spec["repeats"], warmup=spec["warmup"],
                                      sync=sync)
    for model in models.values():
        model.eval()
    _common.print_note("inference ...")
    infer_times = _common.interleaved({k: infer_chunk(k) for k in models}, spec["repeats"], warmup=spec["warmup"],
                                      sync=sync)

    for phase, times, images_per_step, goal in (("train", train_times, 2 * batch, TRAIN_TARGET),
                                                ("inference", infer_times, batch, INFER_TARGET)):
        stats = {key: _common.summary([t / spec["steps_per_chunk"] for t in samples])
                 for key, samples in times.items()}
        value = _common.ratio(stats["bbn"]["median"], stats["plain"]["median"])
        verdict = report.add_target(f"{spec['backbone']} {phase} ratio ({device.type})", value, "<=", goal)
        report.results.append({
            "model": spec["backbone"], "phase": phase, "images_per_step": images_per_step,
            "bbn_ms": 1000 * stats["bbn"]["median"], "plain_ms": 1000 * stats["plain"]["median"],
            "bbn_steps_per_s": 1 / stats["bbn"]["median"], "plain_steps_per_s": 1 / stats["plain"]["median"],
            "bbn_images_per_s": images_per_step / stats["bbn"]["median"],
            "plain_images_per_s": images_per_step / stats["plain"]["median"],
            "ratio": value, "target": goal, "status": verdict["status"],
            "estimates": _common.compare(times["bbn"], times["plain"]), "seconds_per_step": stats,
        })
    if device.type == "cuda":
        report.data["max_memory_allocated_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    _common.print_table(f"GPU step: {report.data['machine']['gpu'] or device} (median per step)",
                        ["model", "phase", "images", "BBN ms", "plain ms", "BBN steps/s", "BBN images/s", "ratio",
                         "status"],
                        [(r["model"], r["phase"], r["images_per_step"], r["bbn_ms"], r["plain_ms"],
                          r["bbn_steps_per_s"], r["bbn_images_per_s"], r["ratio"], r["status"])
                         for r in report.results], plain=args.plain)
    report.print_targets(plain=args.plain)
    report.write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
