"""Class-weighted samplers: pick a class by its weight, then an image uniformly within it.

With ``N_i`` images in class ``i`` and ``C`` non-empty classes:

* :class:`ClassBalancedSampler`: every class equally often (class-balanced
  sampling, Shen et al., "Relay Backpropagation for Effective Learning of Deep
  Convolutional Neural Networks", ECCV 2016; Kang et al., ICLR 2020). By
  default it cycles through the classes and, within a class, through its
  images, as classifier-balancing's ``ClassAwareSampler`` does;
  ``cycle=False`` draws i.i.d. instead.
* :class:`SquareRootSampler`: weight ``sqrt(N_i)`` (Mahajan et al., "Exploring
  the Limits of Weakly Supervised Pretraining", ECCV 2018).
* :class:`ReversedSampler`: weight ``N_max / N_i``, the re-balancing ("reversed")
  sampler of BBN's re-balancing branch (Zhou et al., "BBN: Bilateral-Branch
  Network with Cumulative Learning for Long-Tailed Visual Recognition", CVPR 2020).
* :class:`ProgressiveSampler`: moves linearly from instance-balanced to
  class-balanced over ``max_epochs`` (progressively-balanced sampling, Kang et
  al., "Decoupling Representation and Classifier for Long-Tailed Recognition",
  ICLR 2020).

Classes without images get probability 0 in every sampler.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from lttoolkit.errors import ConfigError
from lttoolkit.samplers.base import ClassWeightedSampler, _as_int, _counter_keys, _cycled_within_class

__all__ = ["ClassBalancedSampler", "SquareRootSampler", "ReversedSampler", "ProgressiveSampler"]


# Distinct first fields of the counter-based keys: class orders and image orders never share a key.
_CLASS_ORDER, _IMAGE_ORDER = 1, 2


class ClassBalancedSampler(ClassWeightedSampler):
    """Every non-empty class equally often, then an image of it.

    **Cycling (default, the authors' form).** classifier-balancing's
    ``ClassAwareSampler`` (``data/ClassAwareSampler.py``) keeps a random cycle
    over the classes and one over each class's images (``RandomCycleIter``:
    a fresh shuffle at the start of every pass): each draw takes the next class
    of the class cycle, then the next ``samples_per_class`` images of that
    class's cycle (``num_samples_cls``; 4 in the authors' cRT configs). Within
    any ``C * samples_per_class`` consecutive draws of a cycle every class appears
    ``samples_per_class`` times, and no image of a class repeats before all its
    images have been seen. The cycles run on across epochs, as the authors'
    iterators keep their state between epochs: epoch ``e`` is positions
    ``e * num_samples ..`` of one endless stream that depends only on the seed,
    so any epoch (and any rank's shard) is computed directly, vectorised, without
    replaying the ones before it.

    **Epoch length.** ``num_samples`` defaults to ``len(labels)``. The authors'
    sampler reports ``len = N_max * C``, but their trainer
    (``run_networks.py``, ``epoch_steps = int(len(dataset) / batch_size)``) stops
    every epoch after ``len(dataset) / batch_size`` steps "based on actual number of
    training data instead of oversampled data number", so an epoch of training sees
    ``len(labels)`` draws, as here. Pass ``num_samples`` for longer epochs.

    **i.i.d. (``cycle=False``).** Each draw picks a class uniformly at random and an
    image uniformly within it, independently (with replacement): the same
    class frequencies in expectation, with sampling noise.

    Args:
        labels: class index of every image, in dataset order.
        seed: base seed; the stream depends only on ``(seed, epoch)``.
        num_replicas: number of distributed processes sharing the stream.
        rank: this process's index in ``[0, num_replicas)``.
        num_samples: draws per epoch in the single-process stream (default ``len(labels)``).
        num_classes: number of classes (default ``max(labels) + 1``).
        cycle: cycle through classes and images (``True``) or draw i.i.d. (``False``).
        samples_per_class: consecutive images taken from a class at each visit of the
            class cycle (``num_samples_cls``); needs ``cycle=True``.

    Example:
        >>> sampler = ClassBalancedSampler([0, 0, 0, 0, 1], seed=0)
        >>> sampler.class_probabilities().tolist()
        [0.5, 0.5]
        >>> classes = [[0, 0, 0, 0, 1][i] for i in ClassBalancedSampler([0, 0, 0, 0, 1], num_samples=8)]
        >>> [sorted(classes[i:i + 2]) for i in range(0, 8, 2)]  # every cycle visits both classes
        [[0, 1], [0, 1], [0, 1], [0, 1]]
        >>> sorted(i for i in ClassBalancedSampler([0, 0, 0, 0, 1], num_samples=8) if i < 4)  # class 0: one pass
        [0, 1, 2, 3]
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
        cycle: bool = True,
        samples_per_class: int = 1,
    ) -> None:
        super().__init__(
            labels, seed=seed, num_replicas=num_replicas, rank=rank, num_samples=num_samples, num_classes=num_classes
        )
        if not isinstance(cycle, bool):
            raise ConfigError(f"cycle must be true or false, got {cycle!r} ({type(cycle).__name__})")
        self.cycle = cycle
        self.samples_per_class = _as_int("samples_per_class", samples_per_class, minimum=1)
        if not cycle and self.samples_per_class != 1:
            raise ConfigError(
                f"samples_per_class={self.samples_per_class} needs cycle=true (i.i.d. draws take one image per "
                f"class draw); set cycle=true or samples_per_class=1"
            )

    def class_weights(self) -> torch.Tensor:
        """1 for every class (empty classes are zeroed by the base class)."""
        return torch.ones(self.num_classes, dtype=torch.float64)

    def _draw_stream(self, num: int, generator: torch.Generator) -> torch.Tensor:
        if not self.cycle:
            return super()._draw_stream(num, generator)
        return self._cycle_stream(num)

    def _cycle_stream(self, num: int) -> torch.Tensor:
        per_visit = self.samples_per_class
        classes = self._nonempty_classes.numpy()
        num_classes = classes.size
        sizes = self._class_counts.numpy()[classes]
        # Positions of this epoch in the endless stream; a visit of the class cycle covers `per_visit` of them.
        position = self._epoch * num + np.arange(num, dtype=np.int64)
        visit, offset = position // per_visit, position % per_visit
        cycle, slot = visit // num_classes, visit % num_classes
        first_cycle, last_cycle = int(cycle[0]), int(cycle[-1])
        cycles = np.arange(first_cycle, last_cycle + 1, dtype=np.int64)
        class_keys = _counter_keys(self.seed, _CLASS_ORDER, cycles[:, None], np.arange(num_classes)[None, :])
        order = np.argsort(class_keys, axis=1, kind="stable")  # the class at every slot of every cycle
        which = order[cycle - first_cycle, slot]
        # Every cycle visits every class once, so its cycle number counts the class's earlier visits.
        in_class = cycle * per_visit + offset
        first_pass = (first_cycle * per_visit) // sizes
        num_passes = (last_cycle * per_visit + per_visit - 1) // sizes - first_pass + 1
        seed = self.seed

        def image_keys(cls: np.ndarray, passes: np.ndarray, index: np.ndarray) -> np.ndarray:
            return _counter_keys(seed, _IMAGE_ORDER, classes[cls], passes, index)

        local = _cycled_within_class(sizes, which, in_class, first_pass, num_passes, image_keys)
        starts = self._class_starts.numpy()[classes]
        return self._images_by_class[torch.from_numpy(starts[which] + local)]

    def _extra_repr(self) -> str:
        return f"cycle={self.cycle}, samples_per_class={self.samples_per_class}"


class SquareRootSampler(ClassWeightedSampler):
    """Class ``i`` drawn with weight ``sqrt(N_i)``, then an image uniformly within it.

    Example:
        >>> sampler = SquareRootSampler([0, 0, 0, 0, 1])
        >>> [round(p, 4) for p in sampler.class_probabilities().tolist()]
        [0.6667, 0.3333]
    """

    def class_weights(self) -> torch.Tensor:
        """``sqrt(N_i)`` per class."""
        return self._class_counts.to(torch.float64).sqrt()


class ReversedSampler(ClassWeightedSampler):
    """BBN's re-balancing sampler: class ``i`` drawn with weight ``N_max / N_i``.

    The class drawn is then sampled uniformly within itself, so rare classes are
    over-represented in inverse proportion to their size. Classes without images
    have probability 0 (``N_max / 0`` is undefined).

    Example:
        >>> sampler = ReversedSampler([0, 0, 0, 0, 1], seed=0)
        >>> sampler.class_probabilities().tolist()
        [0.2, 0.8]
        >>> sampler.set_epoch(3)
        >>> all(0 <= i < 5 for i in sampler)
        True
    """

    def class_weights(self) -> torch.Tensor:
        """``N_max / N_i`` per non-empty class, 0 for empty ones."""
        counts = self._class_counts.to(torch.float64)
        return torch.where(counts > 0, counts.max() / counts.clamp(min=1), torch.zeros_like(counts))


_BALANCED_AT = ("last_epoch", "max_epochs")


class ProgressiveSampler(ClassWeightedSampler):
    """Progressively-balanced sampling: from instance-balanced to class-balanced over the epochs.

    At epoch ``t`` (counted from 0) class ``i`` is drawn with probability
    ``p_i(t) = (1 - lam_t) * N_i / N + lam_t / C``, ``C`` the number of non-empty
    classes. With ``T = max_epochs``:

    * ``balanced_at="last_epoch"`` (default, the authors' code): ``lam_t = t / (T - 1)``,
      i.e. ``numpy.linspace(0, 1, T)[t]`` as in classifier-balancing's
      ``ClassPrioritySampler`` / ``MixedPrioritizedSampler``, so the last epoch of a
      ``T``-epoch run is fully class-balanced (``T = 1``: ``lam = 0``, as ``linspace(0, 1, 1)``);
    * ``balanced_at="max_epochs"``: ``lam_t = t / T``, the paper's formula read with
      ``t`` counted from 0; class-balanced only from epoch ``T`` on, after a ``T``-epoch run.

    ``lam_t`` is capped at 1, so epochs past the end stay class-balanced.

    Within a class, images are drawn by cycling through the class without
    replacement (a fresh random order per pass), as the authors' sampler does
    with its per-class ``RandomCycleIter``; the class itself is drawn i.i.d. from
    ``p(t)``, as the authors' priority tree does. The per-class cycles restart
    with every epoch here (the authors' iterators carry their position over
    from one epoch to the next, which depends on every earlier random draw).
    ``cycle_images=False`` draws images i.i.d. within the class instead.

    Args:
        labels: class index of every image, in dataset order.
        seed: base seed; the stream depends only on ``(seed, epoch)``.
        num_replicas: number of distributed processes sharing the stream.
        rank: this process's index in ``[0, num_replicas)``.
        num_samples: draws per epoch in the single-process stream (default ``len(labels)``).
        num_classes: number of classes (default ``max(labels) + 1``).
        max_epochs: ``T``, the length of the run the schedule spans (> 0; the
            trainer does not set it: give the run's ``train.epochs``).
        balanced_at: ``"last_epoch"`` or ``"max_epochs"`` (see above).
        cycle_images: cycle through each class's images (``True``) or draw them i.i.d.

    Example:
        >>> sampler = ProgressiveSampler([0, 0, 0, 0, 1], max_epochs=11)
        >>> [round(p, 4) for p in sampler.class_probabilities().tolist()]
        [0.8, 0.2]
        >>> sampler.set_epoch(5)  # lam = 5 / 10
        >>> [round(p, 4) for p in sampler.class_probabilities().tolist()]
        [0.65, 0.35]
        >>> sampler.set_epoch(10)  # the last of 11 epochs
        >>> [round(p, 4) for p in sampler.class_probabilities().tolist()]
        [0.5, 0.5]
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
        max_epochs: int = 90,
        balanced_at: str = "last_epoch",
        cycle_images: bool = True,
    ) -> None:
        super().__init__(
            labels, seed=seed, num_replicas=num_replicas, rank=rank, num_samples=num_samples, num_classes=num_classes
        )
        self.max_epochs = _as_int("max_epochs", max_epochs, minimum=1)
        if balanced_at not in _BALANCED_AT:
            raise ConfigError(
                f"balanced_at must be 'last_epoch' (class-balanced at epoch max_epochs - 1, the authors' code) or "
                f"'max_epochs' (class-balanced from epoch max_epochs on), got {balanced_at!r}"
            )
        self.balanced_at = balanced_at
        if not isinstance(cycle_images, bool):
            raise ConfigError(f"cycle_images must be true or false, got {cycle_images!r}")
        self.cycle_images = cycle_images

    @property
    def progress(self) -> float:
        """``lam_t``: the weight of class-balanced sampling at the current epoch, in ``[0, 1]``."""
        if self.balanced_at == "max_epochs":
            return min(self.epoch / self.max_epochs, 1.0)
        if self.max_epochs == 1:
            return 0.0
        return min(self.epoch / (self.max_epochs - 1), 1.0)

    def class_weights(self) -> torch.Tensor:
        """``p_i(t)`` for the current epoch (already normalised)."""
        counts = self._class_counts.to(torch.float64)
        instance = counts / counts.sum()
        nonempty = (counts > 0).to(torch.float64)
        balanced = nonempty / nonempty.sum()
        progress = self.progress
        return (1.0 - progress) * instance + progress * balanced

    def _draw_stream(self, num: int, generator: torch.Generator) -> torch.Tensor:
        if not self.cycle_images:
            return super()._draw_stream(num, generator)
        probabilities = self.class_probabilities()[self._nonempty_classes]
        which = torch.multinomial(probabilities, num, replacement=True, generator=generator).numpy()
        classes = self._nonempty_classes.numpy()
        sizes = self._class_counts.numpy()[classes]
        # How many earlier draws of this epoch hit the same class: the position in its cycle.
        order = np.argsort(which, kind="stable")
        draws = np.bincount(which, minlength=classes.size)
        first = np.cumsum(draws) - draws
        in_class = np.empty(num, dtype=np.int64)
        in_class[order] = np.arange(num, dtype=np.int64) - first[which[order]]
        num_passes = -(-draws // sizes)  # ceil: passes this epoch needs

        def image_keys(cls: np.ndarray, passes: np.ndarray, index: np.ndarray) -> np.ndarray:
            drawn = torch.randint(-(2**63), 2**63 - 1, (index.size,), generator=generator, dtype=torch.int64)
            return drawn.numpy().view(np.uint64)

        local = _cycled_within_class(sizes, which, in_class, np.zeros_like(sizes), num_passes, image_keys)
        starts = self._class_starts.numpy()[classes]
        return self._images_by_class[torch.from_numpy(starts[which] + local)]

    def _extra_repr(self) -> str:
        return f"max_epochs={self.max_epochs}, balanced_at={self.balanced_at!r}, cycle_images={self.cycle_images}"
