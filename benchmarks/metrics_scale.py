"""Evaluation metrics at iNaturalist scale: O(C) per-class counts against the old C x C confusion matrix.

The evaluation of a run used to keep a ``C x C`` int64 confusion matrix on the device,
add a ``C^2``-long ``bincount`` into it every batch and write it into ``results.json``.
:class:`lttoolkit.engine.metrics.MetricAccumulator` now keeps per-class hits and totals
and top-k counts (O(C)); the matrix is opt-in, on the CPU, and goes to a file of its own.

For each C (1,000: ImageNet-LT; 8,142: iNaturalist 2018) one evaluation of ``3 x C``
images in batches of 256 (the size of iNaturalist 2018's validation set) is timed with
each accumulator, interleaved; the table gives the state kept, the temporary memory of
one batch's update, the seconds of the evaluation's updates and the size of the JSON
the results would take. The old accumulator is written out here as it was (state on the
device, ``bincount`` of ``target * C + prediction``).

Run: ``python benchmarks/metrics_scale.py --threads 1`` (``--quick`` for a smoke test).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402

NAME = "metrics_scale"
DESCRIPTION = "evaluation metrics at C = 1,000 and 8,142: O(C) counts vs the old C x C confusion matrix"

FULL = {"classes": [1000, 8142], "images_per_class": 3, "batch": 256, "repeats": 3}
QUICK = {"classes": [50], "images_per_class": 3, "batch": 32, "repeats": 1}


class OldConfusionAccumulator:
    """The previous accumulator: a C x C int64 matrix on the device, a C^2 bincount per batch."""

    def __init__(self, num_classes: int) -> None:
        import torch

        self.num_classes = num_classes
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)
        self.topk_correct = torch.zeros(2, dtype=torch.int64)
        self.temporary_bytes = 0

    def update(self, logits: Any, targets: Any) -> None:
        import torch

        c = self.num_classes
        predicted = logits.argmax(1)
        counts = torch.bincount(targets * c + predicted, minlength=c * c)
        self.temporary_bytes = max(self.temporary_bytes, counts.numel() * counts.element_size())
        self.confusion += counts.view(c, c)
        top = logits.topk(min(5, c), dim=1).indices
        hits = top == targets[:, None]
        self.topk_correct += torch.stack([hits[:, 0].sum(), hits.any(1).sum()])

    def state_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.confusion, self.topk_correct))

    def json_bytes(self) -> int:
        """Bytes of the matrix as ``results.json`` held it (a list of rows), row by row."""
        rows = self.confusion.tolist()
        return sum(len(json.dumps(row)) + 2 for row in rows) + 2


def parse_args(argv: list[str] | None = None) -> Any:
    parser = _common.base_parser(NAME, DESCRIPTION)
    parser.add_argument("--classes", type=int, nargs="+", default=None, help="the C to measure (default 1000 8142)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    _common.apply_threads(args)
    import torch

    from lttoolkit.engine.metrics import MetricAccumulator

    spec = dict(QUICK if args.quick else FULL)
    if args.classes:
        spec["classes"] = args.classes
    report = _common.Report(NAME, DESCRIPTION, args)
    report.settings.update(spec)
    rows = []
    for c in spec["classes"]:
        images = spec["images_per_class"] * c
        batches = math.ceil(images / spec["batch"])
        generator = torch.Generator().manual_seed(c)
        logits = torch.randn(spec["batch"], c, generator=generator)
        targets = [torch.randint(0, c, (spec["batch"],), generator=generator) for _ in range(batches)]
        holders: dict[str, Any] = {}

        def evaluate_new() -> None:
            meter = MetricAccumulator(c)
            for y in targets:
                meter.update(logits, y, check_targets=False)
            holders["new"] = meter

        def evaluate_old() -> None:
            meter = OldConfusionAccumulator(c)
            for y in targets:
                meter.update(logits, y)
            holders["old"] = meter

        times = _common.interleaved({"O(C) counts": evaluate_new, "C x C matrix (old)": evaluate_old},
                                    spec["repeats"], warmup=0 if args.quick else 1)
        counts = [100] * c  # training images per class: only the shot groups depend on them
        new = holders["new"]
        new_state = sum(t.numel() * t.element_size() for t in new.state_tensors().values())
        new_json = len(json.dumps(new.compute(counts)))
        old = holders["old"]
        old_json = len(json.dumps(new.compute(counts))) + old.json_bytes()
        for name, state, temporary, seconds, size in (
            ("O(C) counts", new_state, 0, times["O(C) counts"], new_json),
            ("C x C matrix (old)", old.state_bytes(), old.temporary_bytes, times["C x C matrix (old)"], old_json),
        ):
            stats = _common.summary(seconds)
            rows.append({"classes": c, "accumulator": name, "images": batches * spec["batch"], "batches": batches,
                         "state_bytes": state, "temporary_bytes_per_batch": temporary,
                         "seconds": stats["median"], "seconds_min": stats["min"], "results_json_bytes": size})
        pair = [r for r in rows if r["classes"] == c]
        pair[0]["speedup"] = _common.ratio(pair[1]["seconds"], pair[0]["seconds"])
        pair[1]["speedup"] = 1.0

    def mib(n: int) -> str:
        return f"{n / 2**20:.3f}" if n < 2**20 else f"{n / 2**20:.1f}"

    _common.print_table(
        f"{NAME}: one evaluation of 3 images per class, batches of {spec['batch']} (median of {spec['repeats']})",
        ["C", "accumulator", "state MiB", "temp MiB/batch", "update s", "speed-up", "results.json MB"],
        [(r["classes"], r["accumulator"], mib(r["state_bytes"]), mib(r["temporary_bytes_per_batch"]),
          _common.fmt(r["seconds"], 3), _common.fmt(r["speedup"]), f"{r['results_json_bytes'] / 1e6:.2f}")
         for r in rows],
        plain=args.plain,
    )
    report.results.extend(rows)
    report.write()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
