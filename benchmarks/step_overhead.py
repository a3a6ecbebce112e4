"""Overhead of BBN's bilateral wrapper over a plain backbone, per training and inference step.

BBN (Zhou et al., "BBN: Bilateral-Branch Network with Cumulative Learning for
Long-Tailed Visual Recognition", CVPR 2020) trains on two batches per step. The
ideal cost of that step is a plain backbone step on the same 2B images: the
wrapper runs the trunk once per branch on B images (the same FLOPs as one pass of
2B), each copy of the duplicated block sees its branch's B images, and the
classifier reads twice the features for half the rows. What is measured here is
what the wrapper adds on top (two calls instead of one, the branch views,
concatenating features, the two-term loss).

* train: ``model(x_c, x_r, alpha=0.5)`` + ``combine_loss`` + backward + SGD step,
  against ``backbone(cat([x_c, x_r]))`` + cross-entropy + backward + SGD step.
  Target: ratio <= 1.05.
* inference: ``model(x)`` in eval mode (the trunk once, both branch blocks)
  against ``backbone(x)`` on the same B images. Target: ratio <= 1.15 (the
  extra branch block is real work: about one block of the network).

Every pair runs twice, in NCHW and in channels_last (models and images converted
with ``memory_format=torch.channels_last``), all variants interleaved in one run;
the table also gives channels_last's speed-up of the plain step.

``--diagnose`` counts FLOPs with ``torch.utils.flop_counter`` and lists the
operators whose self time grows most under ``torch.profiler``.

Run: ``python benchmarks/step_overhead.py`` (``--quick`` for a smoke test).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402

NAME = "step_overhead"
DESCRIPTION = "BBN training/inference step through BilateralWrapper against a plain backbone step on the same images"
TRAIN_TARGET = 1.05
INFER_TARGET = 1.15

# model -> image size, batch per branch (B), classes, timed repetitions (train, inference)
FULL = {
    "resnet32_cifar": {"image_size": 32, "batch": 128, "num_classes": 100, "repeats": (9, 11)},
    "resnet50": {"image_size": 224, "batch": 8, "num_classes": 1000, "repeats": (5, 7)},
}
QUICK = {
    "resnet32_cifar": {"image_size": 32, "batch": 8, "num_classes": 10, "repeats": (2, 2)},
    "resnet50": {"image_size": 64, "batch": 2, "num_classes": 10, "repeats": (2, 2)},
}


def parse_args(argv: list[str] | None = None) -> Any:
    parser = _common.base_parser(NAME, DESCRIPTION)
    parser.add_argument("--models", nargs="+", choices=sorted(FULL), default=list(FULL), help="models to measure")
    parser.add_argument("--repeats", type=int, default=None, help="timed repetitions per variant (default per model)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds before timing")
    parser.add_argument("--batch", type=int, default=None, help="batch per branch B (default per model)")
    parser.add_argument("--formats", nargs="+", choices=["nchw", "channels_last"], default=["nchw", "channels_last"],
                        help="memory formats to measure (default both)")
    parser.add_argument("--diagnose", action="store_true", help="also count FLOPs and profile operators (NCHW)")
    return parser.parse_args(argv)


FORMATS = {"nchw": "contiguous_format", "channels_last": "channels_last"}


def make_case(name: str, spec: dict[str, Any], batch: int, formats: list[str]) -> dict[str, Any]:
    """The models, optimizers, data and step functions of one backbone, per memory format.

    Variant keys are ``bbn`` / ``plain`` (NCHW) and ``bbn_cl`` / ``plain_cl`` (channels_last);
    every pair starts from the same weights.
    """
    import copy

    import torch
    import torch.nn.functional as F

    from lttoolkit import build
    from lttoolkit.backbones import create_backbone

    torch.manual_seed(0)
    size, classes = spec["image_size"], spec["num_classes"]
    x_c = torch.randn(batch, 3, size, size)
    x_r = torch.randn(batch, 3, size, size)
    y_c = torch.randint(0, classes, (batch,))
    y_r = torch.randint(0, classes, (batch,))
    y_both = torch.cat([y_c, y_r])
    base = {"bbn": build("bbn", backbone=name, num_classes=classes), "plain": create_backbone(name, num_classes=classes)}

    models: dict[str, Any] = {}
    inputs: dict[str, tuple[Any, Any]] = {}
    for fmt in formats:
        suffix = "" if fmt == "nchw" else "_cl"
        memory_format = getattr(torch, FORMATS[fmt])
        for kind, model in base.items():
            models[kind + suffix] = copy.deepcopy(model).to(memory_format=memory_format)
        inputs[suffix] = (x_c.contiguous(memory_format=memory_format), x_r.contiguous(memory_format=memory_format))
    optimizers = {key: torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
                  for key, m in models.items()}

    def bbn_step(key: str, suffix: str) -> Callable[[], None]:
        a, b = inputs[suffix]
        return _common.bbn_train_step(models[key], models[key], optimizers[key], (a, b, y_c, y_r))

    def plain_step(key: str, suffix: str) -> Callable[[], None]:
        model, optimizer = models[key], optimizers[key]
        both = torch.cat(inputs[suffix])

        def step() -> None:
            loss = F.cross_entropy(model(both), y_both)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        return step

    def infer(key: str, suffix: str) -> Callable[[], None]:
        model, x = models[key], inputs[suffix][0]

        def run() -> None:
            with torch.inference_mode():
                model(x)

        return run

    train, infer_fns = {}, {}
    for fmt in formats:
        suffix = "" if fmt == "nchw" else "_cl"
        train[f"bbn{suffix}"], train[f"plain{suffix}"] = bbn_step(f"bbn{suffix}", suffix), plain_step(
            f"plain{suffix}", suffix)
        infer_fns[f"bbn{suffix}"], infer_fns[f"plain{suffix}"] = infer(f"bbn{suffix}", suffix), infer(
            f"plain{suffix}", suffix)
    return {"models": models, "train": train, "infer": infer_fns}


def _train_mode(case: dict[str, Any], training: bool) -> None:
    for model in case["models"].values():
        model.train(training)


def count_flops(fn: Callable[[], None]) -> int:
    """FLOPs of one call of ``fn`` (forward and backward when it trains)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return int(counter.get_total_flops())


def profile_ops(fns: dict[str, Callable[[], None]], top: int = 8) -> list[dict[str, Any]]:
    """Operators whose self CPU time grows most from ``plain`` to ``bbn`` (one step each, ms)."""
    from torch.profiler import ProfilerActivity, profile

    per_variant: dict[str, dict[str, tuple[float, int]]] = {}
    for key in ("bbn", "plain"):
        fns[key]()  # warm
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            fns[key]()
        per_variant[key] = {e.key: (e.self_cpu_time_total / 1000.0, e.count) for e in prof.key_averages()}
    names = set(per_variant["bbn"]) | set(per_variant["plain"])
    rows = []
    for op in names:
        bbn_ms, bbn_calls = per_variant["bbn"].get(op, (0.0, 0))
        plain_ms, plain_calls = per_variant["plain"].get(op, (0.0, 0))
        rows.append({"op": op, "bbn_ms": bbn_ms, "plain_ms": plain_ms, "extra_ms": bbn_ms - plain_ms,
                     "bbn_calls": bbn_calls, "plain_calls": plain_calls})
    rows.sort(key=lambda r: r["extra_ms"], reverse=True)
    return rows[:top]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    _common.apply_threads(args)
    report = _common.Report(NAME, DESCRIPTION, args)
    specs = QUICK if args.quick else FULL
    report.settings.update({"models": {m: {k: v for k, v in specs[m].items()} for m in args.models},
                            "warmup": args.warmup, "repeats_override": args.repeats, "batch_override": args.batch,
                            "optimizer": "SGD(lr=0.01, momentum=0.9, weight_decay=5e-4)", "alpha": 0.5,
                            "formats": args.formats, "diagnose": args.diagnose,
                            "order": "variants interleaved per repetition (bbn, plain, bbn_cl, plain_cl, ...)"})
    rows = []
    diagnosis: dict[str, Any] = {}
    for name in args.models:
        spec = specs[name]
        batch = args.batch or spec["batch"]
        train_repeats, infer_repeats = (args.repeats, args.repeats) if args.repeats else spec["repeats"]
        _common.print_note(f"[{name}] {spec['image_size']}px, B={batch} per branch "
                           f"({2 * batch} images per training step): building models ...")
        case = make_case(name, spec, batch, args.formats)

        _train_mode(case, True)
        _common.print_note(f"[{name}] train: {args.warmup} warm-up + {train_repeats} timed rounds of "
                           f"{', '.join(case['train'])}")
        train_times = _common.interleaved(case["train"], train_repeats, warmup=args.warmup)
        _train_mode(case, False)
        _common.print_note(f"[{name}] inference: {args.warmup} warm-up + {infer_repeats} timed rounds")
        infer_times = _common.interleaved(case["infer"], infer_repeats, warmup=args.warmup)

        for phase, times, images, goal in (("train", train_times, 2 * batch, TRAIN_TARGET),
                                           ("inference", infer_times, batch, INFER_TARGET)):
            stats = {key: _common.summary(samples) for key, samples in times.items()}
            for fmt in args.formats:
                suffix = "" if fmt == "nchw" else "_cl"
                bbn, plain = f"bbn{suffix}", f"plain{suffix}"
                value = _common.ratio(stats[bbn]["median"], stats[plain]["median"])
                verdict = report.add_target(f"{name} {phase} {fmt} ratio", value, "<=", goal)
                row = {"model": name, "phase": phase, "format": fmt, "image_size": spec["image_size"],
                       "batch_per_branch": batch, "images_per_step": images,
                       "bbn_ms": 1000 * stats[bbn]["median"], "plain_ms": 1000 * stats[plain]["median"],
                       "ratio": value, "target": goal, "status": verdict["status"],
                       "estimates": _common.compare(times[bbn], times[plain]),
                       "seconds": {"bbn": stats[bbn], "plain": stats[plain]}}
                if fmt == "channels_last" and "plain" in stats:
                    row["plain_speedup_over_nchw"] = _common.ratio(stats["plain"]["median"], stats[plain]["median"])
                    row["bbn_speedup_over_nchw"] = _common.ratio(stats["bbn"]["median"], stats[bbn]["median"])
                rows.append(row)

        if args.diagnose:
            _common.print_note(f"[{name}] diagnose: FLOPs and operator profile")
            first = "" if "nchw" in args.formats else "_cl"
            fns = {"bbn": case["train"][f"bbn{first}"], "plain": case["train"][f"plain{first}"]}
            _train_mode(case, True)
            flops = {key: count_flops(fn) for key, fn in fns.items()}
            ops = profile_ops(fns)
            _train_mode(case, False)
            infer_flops = {key: count_flops(case["infer"][f"{key}{first}"]) for key in ("bbn", "plain")}
            diagnosis[name] = {
                "train_flops": flops, "train_flops_ratio": _common.ratio(flops["bbn"], flops["plain"]),
                "inference_flops": infer_flops,
                "inference_flops_ratio": _common.ratio(infer_flops["bbn"], infer_flops["plain"]),
                "top_extra_ops_train": ops,
            }
        del case

    report.results.extend(rows)
    if diagnosis:
        report.data["diagnosis"] = diagnosis
    columns = ["model", "phase", "format", "images", "BBN ms", "plain ms", "ratio", "paired ratio", "target",
               "status", "plain speed-up (cl/nchw)"]
    table = [(r["model"], r["phase"], r["format"], r["images_per_step"], r["bbn_ms"], r["plain_ms"], r["ratio"],
              r["estimates"]["median_of_paired_ratios"], f"<= {r['target']}", r["status"],
              r.get("plain_speedup_over_nchw")) for r in rows]
    _common.print_table("step overhead: median ms per step (BBN vs plain backbone on the same images)",
                        columns, table, plain=args.plain)
    if args.diagnose:
        extra = [(name, info["train_flops_ratio"], info["inference_flops_ratio"]) for name, info in diagnosis.items()]
        _common.print_table("diagnosis: FLOP ratio BBN / plain", ["model", "train", "inference"], extra,
                            plain=args.plain)
        for name, info in diagnosis.items():
            _common.print_table(f"diagnosis [{name}] train: operators with the most extra self time (one step, ms)",
                                ["op", "BBN ms", "plain ms", "extra ms", "BBN calls", "plain calls"],
                                [(o["op"], o["bbn_ms"], o["plain_ms"], o["extra_ms"], o["bbn_calls"],
                                  o["plain_calls"]) for o in info["top_extra_ops_train"]], plain=args.plain)
    report.print_targets(plain=args.plain)
    report.write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
