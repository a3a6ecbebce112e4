"""Long-tailed subsets of balanced datasets: the CIFAR-LT protocol.

The per-class sizes follow Cao et al., "Learning Imbalanced Datasets with
Label-Distribution-Aware Margin Loss" (LDAM-DRW, NeurIPS 2019), which BBN
(Zhou et al., "BBN: Bilateral-Branch Network with Cumulative Learning for
Long-Tailed Visual Recognition", CVPR 2020) reuses: with ``C`` classes, the
largest class size ``n_max`` and the imbalance ratio ``IR = n_max / n_min``,

* ``exp``:  ``n_i = int(n_max * (1 / IR) ** (i / (C - 1)))``, class 0 the head;
* ``step``: the first ``C // 2`` classes keep ``n_max``, the rest ``int(n_max / IR)``.

With these formulas CIFAR-10-LT (``n_max=5000``) has 12,406 / 13,996 / 20,431
training images and CIFAR-100-LT (``n_max=500``) 10,847 / 12,608 / 19,573 at
IR 100 / 50 / 10, the totals reported in both papers.
"""

from __future__ import annotations

from math import ceil
from typing import Sequence

import numpy as np

from lttoolkit.errors import ConfigError, DataError

__all__ = [
    "LONG_TAIL_PROFILES", "largest_n_max", "long_tailed_counts", "make_long_tailed", "class_counts", "check_imbalance_ratio"]

LONG_TAIL_PROFILES: tuple[str, ...] = ("exp", "step")


def class_counts(labels: Sequence[int] | np.ndarray, num_classes: int | None = None) -> list[int]:
    """Number of images of each class.

    Args:
        labels: integer class labels, one per image.
        num_classes: length of the result; classes without images count 0.
            Default: ``max(labels) + 1``.

    Returns:
        ``counts[c]`` is the number of labels equal to ``c``.

    >>> class_counts([0, 2, 2, 1, 2], num_classes=4)
    [1, 1, 3, 0]
    """
    array = np.asarray(labels, dtype=np.int64).reshape(-1)
    if array.size and array.min() < 0:
        raise DataError(f"labels must be >= 0, found {int(array.min())}")
    if num_classes is not None and array.size and array.max() >= num_classes:
        raise DataError(
            f"label {int(array.max())} is out of range for num_classes={num_classes}; "
            f"labels must lie in [0, {num_classes - 1}]"
        )
    return np.bincount(array, minlength=num_classes or 0).tolist()


def check_imbalance_ratio(imbalance_ratio: float) -> float:
    """``imbalance_ratio`` as a float, or a :class:`ConfigError` saying why it is not a ratio >= 1."""
    ratio = float(imbalance_ratio)
    if not np.isfinite(ratio) or ratio <= 0:
        raise ConfigError(
            f"imbalance_ratio must be a finite number >= 1 (n_max / n_min), got {imbalance_ratio!r}"
        )
    if ratio < 1:
        raise ConfigError(
            f"imbalance_ratio must be >= 1 (n_max / n_min), got {imbalance_ratio!r}; "
            f"if that is an imbalance *factor* n_min / n_max, pass its inverse {1 / ratio:g}"
        )
    return ratio


def long_tailed_counts(num_classes: int, n_max: int, imbalance_ratio: float, profile: str = "exp") -> list[int]:
    """Per-class image counts of a long-tailed split, class 0 the head.

    Args:
        num_classes: number of classes ``C``.
        n_max: images in the head class.
        imbalance_ratio: ``n_max / n_min`` (100 for CIFAR-10-LT "IR 100"); 1 keeps the set balanced.
        profile: ``"exp"`` (exponential decay) or ``"step"`` (half the classes reduced).

    Returns:
        ``C`` integers, non-increasing, each at least 1.

    Raises:
        ConfigError: an unknown profile, a ratio below 1, or ``n_max < imbalance_ratio``
            (the tail would get no image).

    >>> long_tailed_counts(10, 5000, 100)
    [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    >>> long_tailed_counts(4, 100, 10, profile="step")
    [100, 100, 10, 10]
    """
    if int(num_classes) != num_classes or num_classes < 1:
        raise ConfigError(f"num_classes must be a positive integer, got {num_classes!r}")
    if int(n_max) != n_max or n_max < 1:
        raise ConfigError(f"n_max must be a positive integer, got {n_max!r}")
    ratio = check_imbalance_ratio(imbalance_ratio)
    num_classes, n_max = int(num_classes), int(n_max)
    if profile == "exp":
        if num_classes == 1:
            return [n_max]
        # Written as in LDAM-DRW's reference code (n_max * factor ** (i / (C - 1)) with
        # factor = 1 / IR): the int() truncation then reproduces the published totals.
        factor = 1.0 / ratio
        counts = [int(n_max * factor ** (i / (num_classes - 1.0))) for i in range(num_classes)]
    elif profile == "step":
        head = num_classes // 2
        counts = [n_max] * head + [int(n_max / ratio)] * (num_classes - head)
    else:
        raise ConfigError(f"unknown long-tail profile {profile!r}; choose one of {', '.join(LONG_TAIL_PROFILES)}")
    empty = counts.count(0)
    if empty:
        # A class without a single image is no longer a tail class: samplers, losses and the
        # many/medium/few split would all have to guess what it means.
        raise ConfigError(
            f"n_max {n_max} with imbalance_ratio {ratio:g} leaves {empty} of {num_classes} classes without an "
            f"image (n_max / imbalance_ratio = {n_max / ratio:.3g} < 1); raise n_max to at least {ceil(ratio)} "
            f"or lower imbalance_ratio to at most {n_max}"
        )
    return counts


def largest_n_max(available: Sequence[int], imbalance_ratio: float, profile: str = "exp") -> int:
    """The largest ``n_max`` whose long-tailed quotas fit in ``available`` (images per class, head first).

    >>> largest_n_max([500] * 10, 100)  # a balanced set: its class size
    500
    >>> largest_n_max([600, 359, 215, 129, 77, 46, 27, 16, 10, 6], 200)  # long-tailed already: its head
    600
    """
    ratio = check_imbalance_ratio(imbalance_ratio)
    n = int(min(available))
    if n <= 0:
        return n
    top = int(max(available))
    # Quotas grow with n_max: find the largest n_max in [min, max] whose quotas all fit.
    def fits(candidate: int) -> bool:
        with np.errstate(all="ignore"):
            try:
                quotas = long_tailed_counts(len(available), candidate, ratio, profile)
            except ConfigError:  # a tail class left empty: n_max too small, not too large
                return True
        return all(q <= a for q, a in zip(quotas, available))

    if fits(top):
        return top
    low, high = n, top  # fits(low) (every quota <= n_max <= min); not fits(high)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    return low


def make_long_tailed(
    labels: Sequence[int] | np.ndarray,
    imbalance_ratio: float,
    *,
    profile: str = "exp",
    n_max: int | None = None,
    seed: int = 0,
    class_order: Sequence[int] | None = None,
    num_classes: int | None = None,
) -> np.ndarray:
    """Choose the images of a long-tailed subset.

    Class ``class_order[k]`` receives ``long_tailed_counts(...)[k]`` images, drawn
    without replacement by a generator seeded with ``(seed, class)``. Each class
    therefore has its own random stream: its images depend only on the seed, the
    class and its quota, and a smaller quota picks a prefix of a larger one (the
    IR-100 subset of a class lies inside its IR-50 subset).

    Args:
        labels: class label of every image of the source set.
        imbalance_ratio: ``n_max / n_min``, >= 1.
        profile: ``"exp"`` or ``"step"``, see :func:`long_tailed_counts`.
        n_max: images of the head class. Default: the largest head the source can
            supply, every class's quota within its images (:func:`largest_n_max`): the
            per-class size of a balanced set such as CIFAR, the head's size for a set
            that is long-tailed already (the embedded Fashion-MNIST-LT).
        seed: seed of the selection (the global numpy seed is never used).
        class_order: a permutation of the classes, head first. Default:
            ``0, 1, ..., C-1`` (class 0 the head), the usual protocol.
        num_classes: number of classes. Default: ``max(labels) + 1``.

    Returns:
        Sorted int64 indices into ``labels``.

    Raises:
        DataError: a class has fewer images than its quota.
        ConfigError: a bad ratio, profile or class order.

    >>> labels = [0] * 10 + [1] * 10 + [2] * 10
    >>> idx = make_long_tailed(labels, 10, n_max=10)
    >>> class_counts([labels[i] for i in idx], 3)
    [10, 3, 1]
    >>> idx = make_long_tailed(labels, 10, n_max=10, class_order=[2, 0, 1])
    >>> class_counts([labels[i] for i in idx], 3)
    [3, 1, 10]
    """
    array = np.asarray(labels, dtype=np.int64).reshape(-1)
    if array.size == 0:
        raise DataError("cannot make a long-tailed subset of an empty dataset (no labels)")
    counts = np.asarray(class_counts(array, num_classes))
    num_classes = len(counts)
    if class_order is None:
        order = np.arange(num_classes)
    else:
        order = np.asarray(class_order, dtype=np.int64).reshape(-1)
        if order.size != num_classes or not np.array_equal(np.sort(order), np.arange(num_classes)):
            raise ConfigError(
                f"class_order must be a permutation of 0..{num_classes - 1} (one entry per class, "
                f"head class first), got {list(map(int, order))}"
            )
    if n_max is None:
        if int(counts.min()) == 0:
            empty = int(np.flatnonzero(counts == 0)[0])
            raise DataError(f"class {empty} has no images; pass n_max= and num_classes= explicitly or fix the labels")
        n_max = largest_n_max([int(counts[c]) for c in order], imbalance_ratio, profile)
    quotas = long_tailed_counts(num_classes, n_max, imbalance_ratio, profile)

    # Group indices by class once (stable sort keeps dataset order within a class).
    by_class = np.argsort(array, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)])
    chosen: list[np.ndarray] = []
    for rank, cls in enumerate(order.tolist()):
        quota = quotas[rank]
        if counts[cls] < quota:
            raise DataError(
                f"class {cls} has {counts[cls]} images but the long-tailed split asks for {quota} "
                f"(rank {rank} of {num_classes}, n_max={n_max}, imbalance_ratio={imbalance_ratio}, "
                f"profile={profile!r}); lower n_max or use a larger source set"
            )
        members = by_class[starts[cls] : starts[cls + 1]]
        rng = np.random.default_rng([int(seed), int(cls)])
        chosen.append(members[rng.permutation(members.size)[:quota]])
    return np.sort(np.concatenate(chosen)).astype(np.int64)
