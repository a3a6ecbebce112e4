"""Training throughput (images/s) of a plain backbone and of BBN, by memory format, autocast and compile.

One SGD step of ``resnet32_cifar`` at 32x32 (B=128; BBN: B per branch, two trunk
passes) in each variant, all interleaved in one run so that the machine's load hits
them alike:

* ``fp32 nchw``: the reference;
* ``fp32 channels_last``: models and images in ``torch.channels_last``;
* ``bf16 nchw`` / ``bf16 channels_last``: ``torch.autocast(device, dtype=torch.bfloat16)``
  around forward and loss (on CPUs with AVX-512 BF16 / AMX this runs oneDNN's bf16 kernels);
* with ``--compile``: ``torch.compile`` of the model (inductor), channels_last, fp32 and bf16
  (compilation is timed apart and left out of the steps).

The table gives images/s and the speed-up over ``fp32 nchw`` of the same model. Targets are
not asserted; where a GPU is present ``--device cuda`` measures it the same way (float16 is
added there, with a GradScaler).

Run: ``python benchmarks/train_speed.py --threads 1`` (``--quick`` for a smoke test).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402

NAME = "train_speed"
DESCRIPTION = "training images/s of plain and BBN resnet32_cifar: NCHW vs channels_last, fp32 vs bf16, compile"

FULL = {"image_size": 32, "batch": 128, "num_classes": 100, "repeats": 7}
QUICK = {"image_size": 32, "batch": 4, "num_classes": 10, "repeats": 1}


def parse_args(argv: list[str] | None = None) -> Any:
    parser = _common.base_parser(NAME, DESCRIPTION)
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--backbone", default="resnet32_cifar")
    parser.add_argument("--batch", type=int, default=None, help="images per step (BBN: per branch); default 128")
    parser.add_argument("--repeats", type=int, default=None, help="timed steps per variant (default 7)")
    parser.add_argument("--compile", action="store_true", help="also torch.compile variants (slow to build)")
    parser.add_argument("--methods", nargs="+", choices=["plain", "bbn"], default=["plain", "bbn"])
    return parser.parse_args(argv)


def make_steps(args: Any, spec: dict[str, Any]) -> tuple[dict[str, Callable[[], None]], dict[str, int], dict[str, float]]:
    """Step closures by variant name, images per step, and compile seconds."""
    import copy

    import torch
    import torch.nn.functional as F

    from lttoolkit import build
    from lttoolkit.backbones import create_backbone

    device = torch.device(args.device)
    torch.manual_seed(0)
    batch, size, classes = spec["batch"], spec["image_size"], spec["num_classes"]
    x_c = torch.randn(batch, 3, size, size, device=device)
    x_r = torch.randn(batch, 3, size, size, device=device)
    y_c = torch.randint(0, classes, (batch,), device=device)
    y_r = torch.randint(0, classes, (batch,), device=device)
    bases = {"plain": create_backbone(args.backbone, num_classes=classes),
             "bbn": build("bbn", backbone=args.backbone, num_classes=classes)}
    dtypes = {"fp32": None, "bf16": torch.bfloat16}
    if device.type == "cuda":
        dtypes["fp16"] = torch.float16
    variants: list[tuple[str, str, str, bool]] = []  # method, dtype, format, compiled
    for method in args.methods:
        for dtype in dtypes:
            for fmt in ("nchw", "channels_last"):
                variants.append((method, dtype, fmt, False))
        if args.compile:
            variants += [(method, "fp32", "channels_last", True), (method, "bf16", "channels_last", True)]

    steps: dict[str, Callable[[], None]] = {}
    images: dict[str, int] = {}
    compile_seconds: dict[str, float] = {}
    for method, dtype_name, fmt, compiled in variants:
        memory_format = torch.channels_last if fmt == "channels_last" else torch.contiguous_format
        model = copy.deepcopy(bases[method]).to(device=device, memory_format=memory_format).train()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
        a, b = x_c.contiguous(memory_format=memory_format), x_r.contiguous(memory_format=memory_format)
        forward = torch.compile(model) if compiled else model
        dtype = dtypes[dtype_name]
        scaler = torch.amp.GradScaler("cuda", enabled=dtype is torch.float16)
        alpha = torch.tensor(0.5, device=device)

        def step(model: Any = model, forward: Any = forward, optimizer: Any = optimizer, a: Any = a, b: Any = b,
                 dtype: Any = dtype, scaler: Any = scaler, method: str = method) -> None:
            with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                if method == "bbn":
                    loss = model.combine_loss(F.cross_entropy, forward(a, b, alpha=alpha), (y_c, y_r), alpha=alpha)
                else:
                    loss = F.cross_entropy(forward(a), y_c)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()

        name = f"{method} {dtype_name} {fmt}" + (" compiled" if compiled else "")
        if compiled:
            started = time.perf_counter()
            step()
            compile_seconds[name] = time.perf_counter() - started
        steps[name] = step
        images[name] = 2 * batch if method == "bbn" else batch
    return steps, images, compile_seconds


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    _common.apply_threads(args)
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device: skipped")
        return 0
    spec = dict(QUICK if args.quick else FULL)
    if args.batch:
        spec["batch"] = args.batch
    if args.repeats:
        spec["repeats"] = args.repeats
    report = _common.Report(NAME, DESCRIPTION, args)
    report.settings.update({"backbone": args.backbone, **spec, "device": args.device, "compile": args.compile,
                            "methods": args.methods, "optimizer": "SGD(lr=0.01, momentum=0.9, weight_decay=5e-4)",
                            "order": "variants interleaved per repetition"})
    _common.print_note(f"building variants ({args.backbone}, B={spec['batch']}, {args.device}) ...")
    steps, images, compile_seconds = make_steps(args, spec)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else None
    _common.print_note(f"timing {len(steps)} variants x {spec['repeats']} steps, interleaved ...")
    times = _common.interleaved(steps, spec["repeats"], warmup=1, sync=sync)
    rows = []
    for name, samples in times.items():
        method = name.split()[0]
        stats = _common.summary(samples)
        reference = _common.summary(times[f"{method} fp32 nchw"])["median"]
        rows.append({"variant": name, "method": method, "images_per_step": images[name],
                     "step_ms": 1000 * stats["median"], "images_per_second": images[name] / stats["median"],
                     "speedup_over_fp32_nchw": _common.ratio(reference, stats["median"]),
                     "compile_seconds": compile_seconds.get(name), "seconds": stats})
    report.results.extend(rows)
    _common.print_table("training throughput (median of interleaved steps)",
                        ["variant", "images", "step ms", "images/s", "x fp32 nchw", "compile s"],
                        [(r["variant"], r["images_per_step"], r["step_ms"], r["images_per_second"],
                          r["speedup_over_fp32_nchw"], r["compile_seconds"]) for r in rows], plain=args.plain)
    report.print_targets(plain=args.plain)
    report.write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
