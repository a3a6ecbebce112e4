"""A RIDE training (and inference) step against the plain backbone on the same images.

RIDE (Wang et al., "Long-tailed Recognition by Routing Diverse Distribution-Aware Experts",
ICLR 2021) on ResNet-32: the first stage is shared, three experts at 3/4 width own the other
two stages and a cosine classifier each, and the loss scores every expert (LDAM) plus a KL
between each expert and the ensemble. One step costs more FLOPs than the plain network's; what
the wrapper itself adds is measured against the same network written out by hand (a trunk
module, three plain expert networks, no containers, no stacking along the batch).

Variants, all on the same B images and one SGD step each, interleaved:

* ``plain``: ``resnet32_cifar`` + cross-entropy, the single-branch baseline (``ce``);
* ``ride``: ``build("ride")`` through its ``training_step`` with the ``ride`` loss;
* ``hand``: the same RIDE network written out by hand, the same loss;
* ``ride_full``: ``build("ride", reduce_dimension=False)``, full-width experts.

Targets: ``ride / hand <= 1.05`` in training and inference (the wrapper's overhead). The
``ride / plain`` ratio is reported beside its FLOP ratio (``torch.utils.flop_counter``): the
method's own cost, not an overhead.

Run: ``python benchmarks/ride_step.py --threads 1`` (``--quick`` for a smoke test).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402

NAME = "ride_step"
DESCRIPTION = "RIDE training/inference step (3 experts, resnet32_cifar) against the plain backbone on the same images"
TARGET = 1.05
FULL = {"model": "resnet32_cifar", "image_size": 32, "batch": 128, "num_classes": 100, "repeats": (7, 9)}
QUICK = {"model": "resnet20_cifar", "image_size": 32, "batch": 8, "num_classes": 10, "repeats": (2, 2)}
VARIANTS = ("plain", "ride", "hand", "ride_full")


def parse_args(argv: list[str] | None = None) -> Any:
    parser = _common.base_parser(NAME, DESCRIPTION)
    parser.add_argument("--repeats", type=int, default=None, help="timed repetitions per variant")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds before timing")
    parser.add_argument("--batch", type=int, default=None, help="images per step B (default 128)")
    return parser.parse_args(argv)


def hand_written_ride(depth: int, num_classes: int, widths: tuple[int, int, int], experts: int = 3) -> Any:
    """RIDE's network without the wrapper: the shared stem and first stage, then each expert's
    plain stages, pooling and cosine classifier; returns ``(ensemble, experts [B, K, C])``."""
    import torch
    from torch import nn

    from lttoolkit.backbones import CifarResNet
    from lttoolkit.methods import CosineClassifier

    class HandWrittenRIDE(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            trunk = CifarResNet(depth=depth, num_classes=0)
            self.stem = nn.Sequential(trunk.conv1, trunk.bn1, trunk.act1, trunk.layer1)
            nets = [CifarResNet(depth=depth, num_classes=0, widths=widths) for _ in range(experts)]
            self.stages = nn.ModuleList(nn.Sequential(n.layer2, n.layer3) for n in nets)
            self.heads = nn.ModuleList(CosineClassifier(widths[-1], num_classes) for _ in range(experts))

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            shared = self.stem(x)
            logits = torch.stack([30.0 * head(stage(shared).mean(dim=(2, 3)))
                                  for stage, head in zip(self.stages, self.heads)], dim=1)
            return logits.mean(dim=1), logits

    return HandWrittenRIDE()


def make_case(spec: dict[str, Any], batch: int) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F

    from lttoolkit import build
    from lttoolkit.backbones import create_backbone
    from lttoolkit.methods.protocol import EpochInfo
    from lttoolkit.registry import LOSSES

    torch.manual_seed(0)
    name, size, classes = spec["model"], spec["image_size"], spec["num_classes"]
    depth = int(name.removeprefix("resnet").removesuffix("_cifar"))
    x = torch.randn(batch, 3, size, size)
    y = torch.randint(0, classes, (batch,))
    counts = [max(1, int(500 * 0.01 ** (i / max(classes - 1, 1)))) for i in range(classes)]  # CIFAR-LT IR 100
    models = {
        "plain": create_backbone(name, num_classes=classes),
        "ride": build("ride", backbone=name, num_classes=classes),
        "hand": hand_written_ride(depth, classes, (16, 24, 48)),
        "ride_full": build("ride", backbone=name, num_classes=classes, reduce_dimension=False),
    }
    criterion = LOSSES.build("ride", class_counts=counts, **models["ride"].recipe.loss.options)
    criterion.set_epoch(0, 200)
    optimizers = {k: torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
                  for k, m in models.items()}
    info = EpochInfo(0, 200)

    def train_step(key: str) -> Callable[[], None]:
        model, optimizer = models[key], optimizers[key]

        def loss() -> torch.Tensor:
            if key == "plain":
                return F.cross_entropy(model(x), y)
            if key == "hand":
                ensemble, experts = model(x)
                return criterion(ensemble, y, expert_logits=experts)
            return model.training_step([x], [y], criterion, info, model).loss

        def step() -> None:
            value = loss()
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            optimizer.step()

        return step

    def infer(key: str) -> Callable[[], None]:
        model = models[key]

        def run() -> None:
            with torch.inference_mode():
                model(x)

        return run

    return {"models": models, "train": {k: train_step(k) for k in VARIANTS},
            "infer": {k: infer(k) for k in VARIANTS}}


def count_flops(fn: Callable[[], None]) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return int(counter.get_total_flops())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    _common.apply_threads(args)
    report = _common.Report(NAME, DESCRIPTION, args)
    spec = dict(QUICK if args.quick else FULL)
    batch = args.batch or spec["batch"]
    train_repeats, infer_repeats = (args.repeats, args.repeats) if args.repeats else spec["repeats"]
    report.settings.update({**{k: v for k, v in spec.items() if k != "repeats"}, "batch": batch,
                            "repeats": [train_repeats, infer_repeats], "warmup": args.warmup,
                            "optimizer": "SGD(lr=0.01, momentum=0.9, weight_decay=5e-4)",
                            "loss": "ride (LDAM + diversity, before re-weighting) for the RIDE variants, CE for plain",
                            "order": "variants interleaved per repetition (plain, ride, hand, ride_full)"})
    _common.print_note(f"[{spec['model']}] {spec['image_size']}px, B={batch}: building models ...")
    case = make_case(spec, batch)
    rows = []
    for phase, fns, repeats in (("train", case["train"], train_repeats), ("inference", case["infer"], infer_repeats)):
        for model in case["models"].values():
            model.train(phase == "train")
        flops = {key: count_flops(fn) for key, fn in fns.items()}
        _common.print_note(f"[{spec['model']}] {phase}: {args.warmup} warm-up + {repeats} timed rounds of "
                           f"{', '.join(fns)}")
        times = _common.interleaved(fns, repeats, warmup=args.warmup)
        stats = {key: _common.summary(samples) for key, samples in times.items()}
        for key in VARIANTS:
            row = {"model": spec["model"], "phase": phase, "variant": key, "images_per_step": batch,
                   "ms": 1000 * stats[key]["median"],
                   "ratio_to_plain": _common.ratio(stats[key]["median"], stats["plain"]["median"]),
                   "ratio_to_hand": _common.ratio(stats[key]["median"], stats["hand"]["median"]),
                   "flops": flops[key], "flops_ratio_to_plain": _common.ratio(flops[key], flops["plain"]),
                   "estimates_vs_plain": _common.compare(times[key], times["plain"]),
                   "estimates_vs_hand": _common.compare(times[key], times["hand"]),
                   "seconds": stats[key]}
            rows.append(row)
        ride = next(r for r in rows if r["phase"] == phase and r["variant"] == "ride")
        verdict = report.add_target(f"{spec['model']} {phase} ride / hand-written ratio", ride["ratio_to_hand"],
                                    "<=", TARGET)
        ride["target"], ride["status"] = TARGET, verdict["status"]
    report.results.extend(rows)
    columns = ["phase", "variant", "images", "ms", "x plain", "FLOPs x plain", "x hand", "paired x hand"]
    table = [(r["phase"], r["variant"], r["images_per_step"], r["ms"], r["ratio_to_plain"],
              r["flops_ratio_to_plain"], r["ratio_to_hand"], r["estimates_vs_hand"]["median_of_paired_ratios"])
             for r in rows]
    _common.print_table(f"RIDE step ({spec['model']}, 3 experts) vs the plain backbone on the same images: median ms",
                        columns, table, plain=args.plain)
    report.print_targets(plain=args.plain)
    report.write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
