"""Overhead of BBN's bilateral wrapper over a plain backbone, per training and inference step.

BBN (Zhou et al., "BBN: Bilateral-Branch Network with Cumulative Learning for
Long-Tailed Visual Recognition", CVPR 2020) trains on two batches per step. The
ideal cost of that step is a plain backbone step on the same 2B images: the
wrapper's duplicated block sees half the batch in each copy and its classifier
reads twice the features for half the rows, so the arithmetic is the same. What
is measured here is what the wrapper adds on top (branch-wise batch norm,
splitting and concatenating, the two-term loss).

* train: ``model(x_c, x_r, alpha=0.5)`` + ``combine_loss`` + backward + SGD step,
  against ``backbone(cat([x_c, x_r]))`` + cross-entropy + backward + SGD step.
  Target: ratio <= 1.10.
* inference: ``model(x)`` in eval mode (the trunk once, both branch blocks)
  against ``backbone(x)`` on the same B images. Target: ratio <= 1.15 (the
  extra branch block is real work: about one block of the network).

``--diagnose`` adds a third training variant, BBN with ``branchwise_norm=False``
(one batch-norm call over both halves), so the cost of the per-branch batch norm
is measured directly, counts FLOPs with ``torch.utils.flop_counter``, and lists
the operators whose self time grows most under ``torch.profiler``.

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
TRAIN_TARGET = 1.10
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
    parser.add_argument("--diagnose", action="store_true",
                        help="also time BBN without branch-wise batch norm, count FLOPs and profile operators")
    return parser.parse_args(argv)


def _bbn_model(name: str, num_classes: int, *, branchwise_norm: bool = True) -> Any:
    from lttoolkit import build

    return build("bbn", backbone=name, num_classes=num_classes, branchwise_norm=branchwise_norm)


def make_case(name: str, spec: dict[str, Any], batch: int, diagnose: bool) -> dict[str, Any]:
    """The models, optimizers, data and step functions of one backbone."""
    import torch
    import torch.nn.functional as F

    from lttoolkit.backbones import create_backbone

    torch.manual_seed(0)
    size, classes = spec["image_size"], spec["num_classes"]
    x_c = torch.randn(batch, 3, size, size)
    x_r = torch.randn(batch, 3, size, size)
    y_c = torch.randint(0, classes, (batch,))
    y_r = torch.randint(0, classes, (batch,))
    y_both = torch.cat([y_c, y_r])

    models = {"bbn": _bbn_model(name, classes), "plain": create_backbone(name, num_classes=classes)}
    if diagnose:
        models["bbn_shared_bn"] = _bbn_model(name, classes, branchwise_norm=False)
    optimizers = {key: torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
                  for key, m in models.items()}

    def bbn_step(key: str) -> Callable[[], None]:
        return _common.bbn_train_step(models[key], models[key], optimizers[key], (x_c, x_r, y_c, y_r))

    def plain_step() -> None:
        model, optimizer = models["plain"], optimizers["plain"]
        loss = F.cross_entropy(model(torch.cat([x_c, x_r])), y_both)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    train = {"bbn": bbn_step("bbn"), "plain": plain_step}
    if diagnose:
        train["bbn_shared_bn"] = bbn_step("bbn_shared_bn")

    def infer(key: str) -> Callable[[], None]:
        model = models[key]

        def run() -> None:
            with torch.inference_mode():
                model(x_c)

        return run

    infer_fns = {"bbn": infer("bbn"), "plain": infer("plain")}
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
                            "diagnose": args.diagnose,
                            "order": "variants interleaved per repetition (bbn, plain, bbn, plain, ...)"})
    rows = []
    diagnosis: dict[str, Any] = {}
    for name in args.models:
        spec = specs[name]
        batch = args.batch or spec["batch"]
        train_repeats, infer_repeats = (args.repeats, args.repeats) if args.repeats else spec["repeats"]
        _common.print_note(f"[{name}] {spec['image_size']}px, B={batch} per branch "
                           f"({2 * batch} images per training step): building models ...")
        case = make_case(name, spec, batch, args.diagnose)

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
            value = _common.ratio(stats["bbn"]["median"], stats["plain"]["median"])
            verdict = report.add_target(f"{name} {phase} ratio", value, "<=", goal)
            row = {"model": name, "phase": phase, "image_size": spec["image_size"], "batch_per_branch": batch,
                   "images_per_step": images, "bbn_ms": 1000 * stats["bbn"]["median"],
                   "plain_ms": 1000 * stats["plain"]["median"], "ratio": value, "target": goal,
                   "status": verdict["status"], "estimates": _common.compare(times["bbn"], times["plain"]),
                   "seconds": stats}
            if "bbn_shared_bn" in stats:
                row["bbn_shared_bn_ms"] = 1000 * stats["bbn_shared_bn"]["median"]
                row["ratio_shared_bn"] = _common.ratio(stats["bbn_shared_bn"]["median"], stats["plain"]["median"])
            rows.append(row)

        if args.diagnose:
            _common.print_note(f"[{name}] diagnose: FLOPs and operator profile")
            _train_mode(case, True)
            flops = {key: count_flops(case["train"][key]) for key in ("bbn", "plain")}
            ops = profile_ops(case["train"])
            _train_mode(case, False)
            infer_flops = {key: count_flops(case["infer"][key]) for key in ("bbn", "plain")}
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
    columns = ["model", "phase", "images", "BBN ms", "plain ms", "ratio", "target", "status"]
    table = [(r["model"], r["phase"], r["images_per_step"], r["bbn_ms"], r["plain_ms"], r["ratio"],
              f"<= {r['target']}", r["status"]) for r in rows]
    _common.print_table("step overhead: median ms per step (BBN vs plain backbone on the same images)",
                        columns, table, plain=args.plain)
    if args.diagnose:
        extra = [(r["model"], r["phase"], r.get("bbn_shared_bn_ms"), r.get("ratio_shared_bn"),
                  diagnosis[r["model"]][f"{'train' if r['phase'] == 'train' else 'inference'}_flops_ratio"])
                 for r in rows]
        _common.print_table("diagnosis: BBN with one shared batch-norm call (branchwise_norm=False); FLOP ratio",
                            ["model", "phase", "shared-BN ms", "shared-BN ratio", "FLOPs ratio"], extra,
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
