"""Sampler speed at iNaturalist-2018 scale: construction and one epoch of indices.

iNaturalist 2018 (Van Horn et al., "The iNaturalist Species Classification and
Detection Dataset", CVPR 2018) has 437,513 training images over 8,142 classes,
from 1,000 images down to 2. This benchmark builds a label list of exactly that
size and shape and times, for every builtin sampler in ``lttoolkit.SAMPLERS``:

* construction from a Python list of ints (as read from an annotation file);
* ``indices()``: one epoch as an int64 tensor;
* one epoch iterated to Python ints (``list(sampler)``: what a DataLoader consumes).

Against it: a per-sample Python implementation of BBN's reversed sampling, the
way BBN's reference code draws (Zhou et al., CVPR 2020): per image, draw a
uniform number, walk the cumulative class weights ``N_max / N_i`` to find the
class, then ``random.choice`` among that class's images. It is timed on a
subset of draws and extrapolated linearly to the epoch (each draw is
independent, so the cost is linear in the draws). A second per-sample version
that finds the class by binary search (``bisect``) shows what is left once the
linear walk is gone.

Targets: one epoch of reversed indices (iterated to Python ints) under 0.5 s,
and at least 100x faster than the per-sample version.

The class-size profile: ``n_i = n_max * (n_min / n_max) ** ((i / (C - 1)) ** gamma)``
for rank i = 0..C-1. ``gamma = 1`` is the usual exponential profile, but from
1,000 to 2 over 8,142 classes it sums to about 1.3 M images; ``gamma`` is
therefore found by bisection so that the real-valued sizes sum to 437,513
(gamma < 1 makes the head fall off faster, as in the real data), then the
sizes are rounded by the largest-remainder method: floors first, then +1 for
the classes with the largest fractional parts until the sum is exact. Rounding
keeps the sizes non-increasing and the end points at exactly 1,000 and 2. Class
ids are a random permutation of the ranks (iNaturalist's ids are not ordered
by size) and images are in random order.

Run: ``python benchmarks/samplers.py`` (``--quick`` for a smoke test).
"""

from __future__ import annotations

import bisect
import math
import random
import sys
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402

NAME = "samplers"
DESCRIPTION = ("construction and one epoch of indices of every builtin sampler at iNaturalist-2018 scale, "
               "against per-sample Python reversed sampling")
EPOCH_TARGET_S = 0.5
SPEEDUP_TARGET = 100.0

FULL = {"num_images": 437_513, "num_classes": 8_142, "n_max": 1_000, "n_min": 2, "reference_draws": 20_000,
        "repeats": 5, "reference_repeats": 3}
QUICK = {"num_images": 10_000, "num_classes": 500, "n_max": 200, "n_min": 2, "reference_draws": 1_000,
         "repeats": 1, "reference_repeats": 1}


# --------------------------------------------------------------------------- the label profile
def _profile(gamma: float, num_classes: int, n_max: int, n_min: int) -> list[float]:
    ratio = n_min / n_max
    last = num_classes - 1
    return [n_max * ratio ** ((i / last) ** gamma) for i in range(num_classes)]


def long_tailed_counts(num_images: int, num_classes: int, n_max: int, n_min: int) -> tuple[list[int], float]:
    """Non-increasing class sizes from ``n_max`` to ``n_min`` that sum exactly to ``num_images``.

    Returns:
        The sizes (rank order, largest first) and the profile exponent ``gamma``.

    >>> counts, gamma = long_tailed_counts(1000, 10, 300, 5)
    >>> sum(counts), counts[0], counts[-1], counts == sorted(counts, reverse=True)
    (1000, 300, 5, True)
    """
    if not n_min * num_classes < num_images < n_max * num_classes:
        raise ValueError(f"{num_images} images cannot spread over {num_classes} classes of {n_min}..{n_max} images")
    low, high = 1e-4, 1e4
    for _ in range(100):  # sum(profile) increases with gamma: bisect in log space
        gamma = math.sqrt(low * high)
        if sum(_profile(gamma, num_classes, n_max, n_min)) < num_images:
            low = gamma
        else:
            high = gamma
    exact = _profile(gamma, num_classes, n_max, n_min)
    exact[0], exact[-1] = float(n_max), float(n_min)
    counts = [math.floor(v) for v in exact]
    missing = num_images - sum(counts)
    # Largest remainder; ties go to the larger class, which keeps the sizes non-increasing.
    order = sorted(range(1, num_classes - 1), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[:missing]:
        counts[i] += 1
    assert sum(counts) == num_images and counts == sorted(counts, reverse=True), "rounding broke the profile"
    return counts, gamma


def make_labels(counts: list[int], seed: int = 0) -> list[int]:
    """A shuffled label list with ``counts[r]`` images of a randomly chosen class id per rank ``r``."""
    rng = random.Random(seed)
    class_ids = list(range(len(counts)))
    rng.shuffle(class_ids)
    labels = [class_ids[rank] for rank, n in enumerate(counts) for _ in range(n)]
    rng.shuffle(labels)
    return labels


# --------------------------------------------------------------------------- the per-sample reference
class PerSampleReversed:
    """BBN-style reversed sampling, one Python draw per image (the baseline, not for use).

    Args:
        labels: class id per image.
        search: ``"linear"`` walks the cumulative weights as BBN's reference code
            does; ``"bisect"`` finds the class by binary search.
    """

    def __init__(self, labels: list[int], search: str = "linear") -> None:
        members: dict[int, list[int]] = {}
        for index, label in enumerate(labels):
            members.setdefault(label, []).append(index)
        self.classes = sorted(members)
        self.members = [members[c] for c in self.classes]
        n_max = max(len(m) for m in self.members)
        self.weights = [n_max / len(m) for m in self.members]
        self.total = sum(self.weights)
        self.cumulative = list(_running_sum(self.weights))
        self.search = search

    def draw(self, rng: random.Random) -> int:
        u = rng.random() * self.total
        if self.search == "bisect":
            position = min(bisect.bisect_left(self.cumulative, u), len(self.members) - 1)
        else:
            running = 0.0
            position = len(self.weights) - 1
            for i, weight in enumerate(self.weights):
                running += weight
                if u <= running:
                    position = i
                    break
        return rng.choice(self.members[position])

    def draws(self, count: int, seed: int = 0) -> list[int]:
        rng = random.Random(seed)
        return [self.draw(rng) for _ in range(count)]


def _running_sum(values: list[float]):
    total = 0.0
    for v in values:
        total += v
        yield total


# --------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> Any:
    parser = _common.base_parser(NAME, DESCRIPTION)
    parser.add_argument("--repeats", type=int, default=None, help="timed repetitions per sampler")
    parser.add_argument("--reference-draws", type=int, default=None,
                        help="draws timed for the per-sample versions (then extrapolated to the epoch)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from lttoolkit.registry import SAMPLERS

    _common.apply_threads(args)
    report = _common.Report(NAME, DESCRIPTION, args)
    spec = dict(QUICK if args.quick else FULL)
    if args.repeats:
        spec["repeats"] = spec["reference_repeats"] = args.repeats
    if args.reference_draws:
        spec["reference_draws"] = args.reference_draws
    counts, gamma = long_tailed_counts(spec["num_images"], spec["num_classes"], spec["n_max"], spec["n_min"])
    labels = make_labels(counts)
    epoch = spec["num_images"]
    shots = {"many (>100)": sum(c > 100 for c in counts), "medium (20-100)": sum(20 <= c <= 100 for c in counts),
             "few (<20)": sum(c < 20 for c in counts)}
    report.settings.update({
        **spec, "profile": "n_i = n_max * (n_min/n_max) ** ((i/(C-1)) ** gamma), gamma by bisection, "
                           "largest-remainder rounding; class ids permuted, images shuffled (seed 0)",
        "gamma": gamma, "sum_counts": sum(counts), "median_class_size": sorted(counts)[len(counts) // 2],
        "classes_by_shot": shots, "torch_threads": torch.get_num_threads(),
        "epoch_definition": "num_samples = number of images (the samplers' default)",
    })
    _common.print_note(f"{epoch:,} images over {len(counts):,} classes ({counts[0]} .. {counts[-1]} per class, "
                       f"gamma {gamma:.4f}, median {report.settings['median_class_size']}); shots {shots}")

    names = [e.name for e in SAMPLERS.entries() if not e.is_plugin]
    state: dict[str, Any] = {}

    def construct(name: str) -> Callable[[], None]:
        def run() -> None:
            sampler = SAMPLERS.build(name, labels=labels, seed=0)
            sampler.set_epoch(1)
            state[name] = sampler
        return run

    def indices(name: str) -> Callable[[], None]:
        return lambda: state[name].indices()

    def iterate(name: str) -> Callable[[], None]:
        def run() -> None:
            out = list(state[name])
            assert len(out) == epoch and type(out[0]) is int
        return run

    variants: dict[str, Callable[[], None]] = {}
    for name in names:
        variants[f"{name}/construct"] = construct(name)
        variants[f"{name}/indices"] = indices(name)
        variants[f"{name}/iterate"] = iterate(name)
    _common.print_note(f"samplers {names}: {spec['repeats']} interleaved rounds of construct, indices(), list()")
    times = _common.interleaved(variants, spec["repeats"], warmup=1)

    _common.print_note("per-sample Python reference: building the class lists ...")
    start = time.perf_counter()
    linear = PerSampleReversed(labels, "linear")
    reference_build_s = time.perf_counter() - start
    by_bisect = PerSampleReversed(labels, "bisect")
    draws = min(spec["reference_draws"], epoch)
    _common.print_note(f"per-sample reference: {spec['reference_repeats']} interleaved rounds of {draws:,} draws "
                       f"(linear walk, bisect) and one reversed epoch, extrapolated x{epoch / draws:.2f}")
    reference = _common.interleaved({
        "reversed/iterate": iterate("reversed"),
        "per_sample_linear": lambda: linear.draws(draws),
        "per_sample_bisect": lambda: by_bisect.draws(draws),
    }, spec["reference_repeats"], warmup=0)

    rows = []
    for name in names:
        parts = {part: _common.summary(times[f"{name}/{part}"]) for part in ("construct", "indices", "iterate")}
        rows.append({"sampler": name, **{f"{part}_s": s["median"] for part, s in parts.items()}, "seconds": parts})
    scale = epoch / draws
    reversed_epoch = _common.summary(reference["reversed/iterate"])["median"]
    baselines = {}
    for key in ("per_sample_linear", "per_sample_bisect"):
        measured = _common.summary(reference[key])
        epoch_s = measured["median"] * scale
        baselines[key] = {"draws_timed": draws, "measured": measured, "epoch_s_extrapolated": epoch_s,
                          "speedup_of_reversed": _common.ratio(epoch_s, reversed_epoch)}
    baselines["reference_build_s"] = reference_build_s
    baselines["reversed_epoch_iterate_s_side_by_side"] = reversed_epoch
    report.results.extend(rows)
    report.data["baselines"] = baselines

    reversed_row = next(r for r in rows if r["sampler"] == "reversed")
    report.add_target("reversed: one epoch iterated to Python ints (s)", reversed_row["iterate_s"], "<", EPOCH_TARGET_S)
    report.add_target("reversed: speed-up over per-sample linear walk (x)",
                      baselines["per_sample_linear"]["speedup_of_reversed"], ">=", SPEEDUP_TARGET,
                      note=f"per-sample time measured on {draws:,} draws, extrapolated linearly to {epoch:,}")

    _common.print_table(f"samplers: median seconds ({epoch:,} images, {len(counts):,} classes)",
                        ["sampler", "construct (list)", "indices()", "epoch to ints"],
                        [(r["sampler"], f"{r['construct_s']:.4f}", f"{r['indices_s']:.4f}", f"{r['iterate_s']:.4f}")
                         for r in rows], plain=args.plain)
    _common.print_table(f"per-sample Python reversed sampling ({draws:,} draws timed, extrapolated x{scale:.2f})",
                        ["version", f"{draws:,} draws s", "epoch s (extrapolated)", "lttoolkit reversed speed-up"],
                        [(key, f"{b['measured']['median']:.3f}", f"{b['epoch_s_extrapolated']:.2f}",
                          f"{b['speedup_of_reversed']:,.1f}x")
                         for key, b in baselines.items() if isinstance(b, dict)], plain=args.plain)
    report.print_targets(plain=args.plain)
    report.write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
