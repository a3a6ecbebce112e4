"""Base classes shared by the samplers: seeding, epochs, sharding and class-weighted drawing.

Every sampler turns a list of integer class labels into a stream of dataset
indices. :class:`LongTailSampler` owns what all of them share: label checks,
per-class counts, a stream that depends only on ``(seed, epoch)``, and the
split of that stream across distributed ranks. :class:`ClassWeightedSampler`
adds the two-stage draw used by BBN's re-balancing sampler (Zhou et al.,
"BBN: Bilateral-Branch Network with Cumulative Learning for Long-Tailed
Visual Recognition", CVPR 2020) and its relatives: pick a class from a
distribution over classes, then an image uniformly within that class.

A plugin sampler that only changes the distribution over classes subclasses
:class:`ClassWeightedSampler` and implements :meth:`ClassWeightedSampler.class_weights`.
"""

from __future__ import annotations

import math
import operator
from abc import ABC, abstractmethod
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

from lttoolkit.errors import ComponentContractError, ConfigError, DataError

__all__ = ["LongTailSampler", "ClassWeightedSampler", "check_built_sampler"]

_MASK64 = (1 << 64) - 1


def _splitmix64(value: int) -> int:
    value = (value + 0x9E3779B97F4A7C15) & _MASK64
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK64
    return value ^ (value >> 31)


def _epoch_seed(seed: int, epoch: int) -> int:
    # A plain seed + epoch would make (seed=1, epoch=0) replay (seed=0, epoch=1);
    # the splitmix64 finaliser is a bijection, so epochs of one seed never collide.
    return _splitmix64((_splitmix64(seed & _MASK64) + epoch) & _MASK64)


_MIX1, _MIX2, _GOLDEN = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB), np.uint64(0x9E3779B97F4A7C15)


def _mix64(values: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser on a ``uint64`` array (wrapping arithmetic)."""
    values = values + _GOLDEN
    values = (values ^ (values >> np.uint64(30))) * _MIX1
    values = (values ^ (values >> np.uint64(27))) * _MIX2
    return values ^ (values >> np.uint64(31))


def _counter_keys(seed: int, *fields: np.ndarray) -> np.ndarray:
    """Pseudo-random ``uint64`` keys that depend only on ``seed`` and the integer ``fields`` (broadcast).

    A counter-based generator: the key of one (seed, fields) tuple never depends on
    which other keys are computed, so a sampler can recompute any part of an
    endless stream, e.g. the cycle that an epoch starts in the middle of.
    """
    shape = np.broadcast_shapes(*(np.shape(f) for f in fields))
    keys = np.full(shape, _splitmix64(seed & _MASK64), dtype=np.uint64)
    for field in fields:
        keys = _mix64(keys ^ np.asarray(field).astype(np.uint64))
    return keys


def _permuted_positions(
    segment_lengths: np.ndarray, keys_for: Callable[[np.ndarray, np.ndarray], np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Random permutations of many segments in one sort.

    The flat array ``0 .. sum(segment_lengths) - 1`` is split into consecutive
    segments. ``keys_for(segment, within)`` gives a ``uint64`` key to each element
    (its segment and its index in the segment); within each segment the elements
    are ordered by key.

    Returns:
        ``(starts, permuted)``: the flat start of every segment, and for every flat
        position the within-segment index of the element placed there, so that
        ``permuted[starts[s] : starts[s] + segment_lengths[s]]`` is a permutation of
        ``0 .. segment_lengths[s] - 1``.
    """
    lengths = segment_lengths.astype(np.int64)
    starts = np.cumsum(lengths) - lengths
    segment = np.repeat(np.arange(lengths.size, dtype=np.int64), lengths)
    within = np.arange(segment.size, dtype=np.int64) - starts[segment]
    keys = keys_for(segment, within)
    # One sort: segment id in the high 32 bits, the key's top 32 bits below it (ties keep index order).
    order = np.argsort((segment.astype(np.uint64) << np.uint64(32)) | (keys >> np.uint64(32)), kind="stable")
    return starts, within[order]


def _cycled_within_class(
    sizes: np.ndarray,
    which: np.ndarray,
    position: np.ndarray,
    first_pass: np.ndarray,
    num_passes: np.ndarray,
    keys_for: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray],
) -> np.ndarray:
    """Within-class image indices of draws that cycle through each class without replacement.

    Class ``c`` (of ``sizes[c]`` images) is read as an endless stream of passes,
    each pass a fresh random permutation of its images (``RandomCycleIter`` of
    classifier-balancing). A draw of class ``which[i]`` at stream position
    ``position[i]`` gets the image at ``position % size`` of pass
    ``position // size``. Only the passes ``first_pass[c] ..
    first_pass[c] + num_passes[c] - 1`` are built; ``keys_for(class, pass, index)``
    orders the images of one pass.
    """
    num_passes = num_passes.astype(np.int64)
    segment_class = np.repeat(np.arange(sizes.size, dtype=np.int64), num_passes)
    segment_first = np.cumsum(num_passes) - num_passes
    rank_in_class = np.arange(segment_class.size, dtype=np.int64) - segment_first[segment_class]
    segment_pass = first_pass[segment_class] + rank_in_class
    starts, permuted = _permuted_positions(
        sizes[segment_class],
        lambda segment, within: keys_for(segment_class[segment], segment_pass[segment], within),
    )
    size = sizes[which]
    segment = segment_first[which] + position // size - first_pass[which]
    return permuted[starts[segment] + position % size]


def _as_int(name: str, value: Any, *, minimum: int | None = None) -> int:
    """``value`` as an ``int`` (rejecting bools and floats), optionally ``>= minimum``."""
    if isinstance(value, bool):
        raise ConfigError(f"{name} must be an integer, got the bool {value!r}")
    try:
        number = operator.index(value)
    except TypeError:
        raise ConfigError(f"{name} must be an integer, got {value!r} ({type(value).__name__})") from None
    if minimum is not None and number < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {number}")
    return number


def _labels_to_tensor(labels: Sequence[int] | torch.Tensor, num_classes: int | None) -> tuple[torch.Tensor, int]:
    """Check ``labels`` and return them as a 1-D int64 CPU tensor plus the number of classes."""
    if isinstance(labels, torch.Tensor):
        tensor = labels.detach()
    else:
        # numpy converts a Python list of ints several times faster than torch.as_tensor.
        try:
            array = np.asarray(labels)
        except (TypeError, ValueError) as exc:
            raise DataError(
                f"labels must be a sequence of integer class indices (list, numpy array or tensor); "
                f"could not convert {type(labels).__name__}: {exc}"
            ) from exc
        if array.size and array.dtype.kind not in "iu":
            raise DataError(
                f"labels must be integer class indices, got numpy dtype {array.dtype} "
                f"(e.g. {array.flat[0]!r}); convert them with int() or labels.astype(int) first"
            )
        tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.int64))
    if tensor.ndim != 1:
        raise DataError(f"labels must be one-dimensional (one class index per image), got shape {tuple(tensor.shape)}")
    if tensor.numel() == 0:
        raise DataError("labels is empty: a sampler needs at least one labelled image; check the dataset's split")
    if tensor.dtype == torch.bool or tensor.is_floating_point() or tensor.is_complex():
        raise DataError(
            f"labels must be integer class indices, got dtype {tensor.dtype}; convert them with int() "
            f"or labels.astype(int) first"
        )
    # A private copy: later edits to the caller's array must not desynchronise the class counts.
    tensor = tensor.to(device="cpu", dtype=torch.int64, copy=True)
    if num_classes is None:
        bad = tensor < 0
        num_classes = int(tensor.max()) + 1
        bound = "class labels must be integers >= 0"
    else:
        num_classes = _as_int("num_classes", num_classes, minimum=1)
        bad = (tensor < 0) | (tensor >= num_classes)
        bound = f"class labels must lie in [0, {num_classes}) for num_classes={num_classes}"
    if bool(bad.any()):
        index = int(bad.nonzero()[0, 0])
        value = int(tensor[index])
        raise DataError(
            f"labels[{index}] = {value} is out of range: {bound}. Fix the label, or pass a larger num_classes."
        )
    return tensor, num_classes


class LongTailSampler(Sampler[int], ABC):
    """A seeded, shardable sampler of dataset indices driven by class labels.

    The stream of an epoch depends only on ``(seed, epoch)``: it is drawn from a
    local :class:`torch.Generator` and never touches torch's global RNG state.
    Every rank computes the same full stream of ``total_size`` indices (the
    ``num_samples`` single-process draws, padded by wrapping around to the start
    when ``num_samples`` is not a multiple of ``num_replicas``) and keeps
    positions ``rank, rank + num_replicas, ...``. Without padding, the ranks'
    shards together are exactly the single-process stream.

    Subclasses implement :meth:`_draw_stream` and :meth:`class_probabilities`.

    Args:
        labels: class index of every image in the dataset, in dataset order.
        seed: base seed; the same ``(seed, epoch)`` always gives the same stream.
        num_replicas: number of distributed processes sharing the stream.
        rank: this process's index in ``[0, num_replicas)``.
        num_samples: draws per epoch in the single-process stream
            (default ``len(labels)``).
        num_classes: number of classes (default ``max(labels) + 1``); every label
            must lie in ``[0, num_classes)``.

    Raises:
        DataError: labels are empty, not integers, or out of range.
        ConfigError: an option is not a valid integer or is out of range.
    """

    def __init__(
        self,
        labels: Sequence[int] | torch.Tensor,
        *,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        num_samples: int | None = None,
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        self._labels, self._num_classes = _labels_to_tensor(labels, num_classes)
        self._class_counts = torch.bincount(self._labels, minlength=self._num_classes)
        self._seed = _as_int("seed", seed)
        self._num_replicas = _as_int("num_replicas", num_replicas, minimum=1)
        self._rank = _as_int("rank", rank, minimum=0)
        if self._rank >= self._num_replicas:
            raise ConfigError(
                f"rank must lie in [0, num_replicas) = [0, {self._num_replicas}), got rank={self._rank}"
            )
        if num_samples is None:
            self._num_samples = int(self._labels.numel())
        else:
            self._num_samples = _as_int("num_samples", num_samples, minimum=1)
        self._epoch = 0

    # ------------------------------------------------------------------ properties
    @property
    def class_counts(self) -> torch.Tensor:
        """Images per class, an int64 tensor of length ``num_classes`` (a copy)."""
        return self._class_counts.clone()

    @property
    def num_classes(self) -> int:
        """Number of classes, including classes without images."""
        return self._num_classes

    @property
    def num_samples(self) -> int:
        """Draws per epoch in the single-process stream (before padding)."""
        return self._num_samples

    @property
    def num_replicas(self) -> int:
        """Number of distributed processes sharing the stream."""
        return self._num_replicas

    @property
    def rank(self) -> int:
        """This process's index among the replicas."""
        return self._rank

    @property
    def seed(self) -> int:
        """The base seed."""
        return self._seed

    @property
    def epoch(self) -> int:
        """The epoch set by :meth:`set_epoch` (0 until then)."""
        return self._epoch

    @property
    def total_size(self) -> int:
        """Length of the padded stream shared by all ranks: ``len(self) * num_replicas``."""
        return len(self) * self._num_replicas

    # ------------------------------------------------------------------ protocol
    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose stream the next iteration yields.

        Args:
            epoch: the epoch number, ``>= 0``.
        """
        self._epoch = _as_int("epoch", epoch, minimum=0)

    def __len__(self) -> int:
        return math.ceil(self._num_samples / self._num_replicas)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices().tolist())

    def global_indices(self) -> torch.Tensor:
        """The padded stream of this epoch shared by all ranks (length :attr:`total_size`).

        Returns:
            An int64 tensor of dataset indices.
        """
        generator = torch.Generator()
        generator.manual_seed(_epoch_seed(self._seed, self._epoch))
        stream = self._draw_stream(self._num_samples, generator)
        total = self.total_size
        if total > self._num_samples:
            stream = stream[torch.arange(total) % self._num_samples]
        return stream

    def indices(self) -> torch.Tensor:
        """This rank's indices for the current epoch, the ones iteration yields.

        Returns:
            An int64 tensor of length ``len(self)``.
        """
        return self.global_indices()[self._rank :: self._num_replicas].clone()

    # ------------------------------------------------------------------ hooks
    @abstractmethod
    def _draw_stream(self, num: int, generator: torch.Generator) -> torch.Tensor:
        """Draw ``num`` dataset indices (int64) using only ``generator`` for randomness."""

    @abstractmethod
    def class_probabilities(self) -> torch.Tensor:
        """Probability that one draw of the current epoch comes from each class (float64, sums to 1)."""

    def _extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        extra = self._extra_repr()
        return (
            f"{type(self).__name__}(num_classes={self._num_classes}, num_images={self._labels.numel()}, "
            f"num_samples={self._num_samples}, seed={self._seed}, epoch={self._epoch}, "
            f"rank={self._rank}/{self._num_replicas}{', ' + extra if extra else ''})"
        )


class ClassWeightedSampler(LongTailSampler):
    """Draw a class from weights over classes, then an image uniformly within it (with replacement).

    Subclasses define :meth:`class_weights`. Classes without images always get
    probability 0, whatever their weight (a weight such as ``N_max / N_i`` is
    undefined for them). The draw is vectorised: images are laid out sorted by
    class (a CSR layout with one offset per class), classes are drawn with
    :func:`torch.multinomial`, and the position within the class is
    ``floor(u * N_i)`` for a uniform ``u``.

    Args:
        labels: class index of every image, in dataset order.
        seed: base seed; the stream depends only on ``(seed, epoch)``.
        num_replicas: number of distributed processes sharing the stream.
        rank: this process's index in ``[0, num_replicas)``.
        num_samples: draws per epoch in the single-process stream (default ``len(labels)``).
        num_classes: number of classes (default ``max(labels) + 1``).
    """

    def __init__(
        self,
        labels: Sequence[int] | torch.Tensor,
        *,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        num_samples: int | None = None,
        num_classes: int | None = None,
    ) -> None:
        super().__init__(
            labels, seed=seed, num_replicas=num_replicas, rank=rank, num_samples=num_samples, num_classes=num_classes
        )
        # Stable sort keeps dataset order within a class, so the layout is reproducible.
        self._images_by_class = torch.argsort(self._labels, stable=True)
        self._class_starts = torch.cumsum(self._class_counts, 0) - self._class_counts
        self._nonempty_classes = self._class_counts.nonzero().flatten()

    @abstractmethod
    def class_weights(self) -> torch.Tensor:
        """Unnormalised weight of each class for the current epoch (length ``num_classes``, >= 0)."""

    def class_probabilities(self) -> torch.Tensor:
        """The distribution over classes used for the current epoch.

        Returns:
            A float64 tensor of length ``num_classes`` that sums to 1, with 0 for
            classes without images.

        Raises:
            ComponentContractError: :meth:`class_weights` returned a wrong shape,
                negative or non-finite weights, or zero weight on every non-empty class.
        """
        weights = torch.as_tensor(self.class_weights(), dtype=torch.float64)
        if weights.shape != (self._num_classes,):
            raise ComponentContractError(
                f"{type(self).__name__}.class_weights() must return one weight per class "
                f"(shape ({self._num_classes},)), got shape {tuple(weights.shape)}"
            )
        if not bool(torch.isfinite(weights).all()) or bool((weights < 0).any()):
            raise ComponentContractError(
                f"{type(self).__name__}.class_weights() must return finite weights >= 0, got {weights.tolist()[:10]}..."
            )
        weights = torch.where(self._class_counts > 0, weights, torch.zeros_like(weights))
        total = weights.sum()
        if not bool(total > 0):
            raise ComponentContractError(
                f"{type(self).__name__}.class_weights() gave zero weight to every class that has images; "
                f"at least one non-empty class needs a positive weight"
            )
        return weights / total

    def _draw_stream(self, num: int, generator: torch.Generator) -> torch.Tensor:
        # Draw among non-empty classes only: multinomial's binary search can land on
        # a zero-width bucket at the ends of the cumulative sum with rounding error.
        probabilities = self.class_probabilities()[self._nonempty_classes]
        picks = torch.multinomial(probabilities, num, replacement=True, generator=generator)
        classes = self._nonempty_classes[picks]
        counts = self._class_counts[classes]
        # float64 keeps floor(u * N_i) exact for any realistic class size.
        uniform = torch.rand(num, dtype=torch.float64, generator=generator)
        position = torch.minimum((uniform * counts).long(), counts - 1)
        return self._images_by_class[self._class_starts[classes] + position]


def check_built_sampler(sampler: Any, *, who: str, options: Mapping[str, Any]) -> None:
    """What :data:`lttoolkit.SAMPLERS` checks a plugin's sampler for: ``set_epoch`` and indices in range.

    Raises:
        ComponentContractError: naming ``who`` (the sampler and its distribution) and the fault.
    """
    if not callable(getattr(sampler, "set_epoch", None)):
        raise ComponentContractError(f"{who} returned a sampler without set_epoch(epoch)")
    labels = options.get("labels")
    n = len(labels) if labels is not None else None
    indices = list(iter(sampler))
    if len(indices) != len(sampler):
        raise ComponentContractError(f"{who}: len(sampler) is {len(sampler)} but it yielded {len(indices)} indices")
    if n is not None:
        bad = [i for i in indices if not isinstance(i, int) or not 0 <= i < n]
        if bad:
            raise ComponentContractError(
                f"{who} yielded index {bad[0]!r}, outside [0, {n}) for a dataset of {n} images"
            )
