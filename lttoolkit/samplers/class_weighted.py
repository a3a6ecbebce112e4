"""Class-weighted samplers: pick a class by its weight, then an image uniformly within it.

With ``N_i`` images in class ``i`` and ``C`` non-empty classes:

* :class:`ClassBalancedSampler`: weight 1 per class (class-balanced sampling,
  Shen et al., "Relay Backpropagation for Effective Learning of Deep
  Convolutional Neural Networks", ECCV 2016; Kang et al., ICLR 2020).
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

import torch

from lttoolkit.registry import SAMPLERS
from lttoolkit.samplers.base import ClassWeightedSampler, _as_int

__all__ = ["ClassBalancedSampler", "SquareRootSampler", "ReversedSampler", "ProgressiveSampler"]


@SAMPLERS.register(name="class_balanced")
class ClassBalancedSampler(ClassWeightedSampler):
    """Every non-empty class equally likely, then an image uniformly within it.

    Example:
        >>> sampler = ClassBalancedSampler([0, 0, 0, 0, 1], seed=0)
        >>> sampler.class_probabilities().tolist()
        [0.5, 0.5]
        >>> len(list(sampler))
        5
    """

    def class_weights(self) -> torch.Tensor:
        """1 for every class (empty classes are zeroed by the base class)."""
        return torch.ones(self.num_classes, dtype=torch.float64)


@SAMPLERS.register(name="square_root")
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


@SAMPLERS.register(name="reversed")
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


@SAMPLERS.register(name="progressive")
class ProgressiveSampler(ClassWeightedSampler):
    """Progressively-balanced sampling: from instance-balanced to class-balanced over the epochs.

    At epoch ``t`` class ``i`` is drawn with probability
    ``p_i(t) = (1 - t/T) * N_i / N + (t/T) / C``, where ``T = max_epochs`` and
    ``C`` is the number of non-empty classes; ``t/T`` is capped at 1, so epochs
    past ``T`` stay class-balanced. :meth:`set_epoch` moves the distribution.

    Args:
        labels: class index of every image, in dataset order.
        seed: base seed; the stream depends only on ``(seed, epoch)``.
        num_replicas: number of distributed processes sharing the stream.
        rank: this process's index in ``[0, num_replicas)``.
        num_samples: draws per epoch in the single-process stream (default ``len(labels)``).
        num_classes: number of classes (default ``max(labels) + 1``).
        max_epochs: ``T``, the epoch at which sampling becomes class-balanced (> 0).

    Example:
        >>> sampler = ProgressiveSampler([0, 0, 0, 0, 1], max_epochs=10)
        >>> [round(p, 4) for p in sampler.class_probabilities().tolist()]
        [0.8, 0.2]
        >>> sampler.set_epoch(5)
        >>> [round(p, 4) for p in sampler.class_probabilities().tolist()]
        [0.65, 0.35]
        >>> sampler.set_epoch(10)
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
    ) -> None:
        super().__init__(
            labels, seed=seed, num_replicas=num_replicas, rank=rank, num_samples=num_samples, num_classes=num_classes
        )
        self.max_epochs = _as_int("max_epochs", max_epochs, minimum=1)

    def class_weights(self) -> torch.Tensor:
        """``p_i(t)`` for the current epoch (already normalised)."""
        counts = self._class_counts.to(torch.float64)
        instance = counts / counts.sum()
        nonempty = (counts > 0).to(torch.float64)
        balanced = nonempty / nonempty.sum()
        progress = min(self.epoch / self.max_epochs, 1.0)
        return (1.0 - progress) * instance + progress * balanced

    def _extra_repr(self) -> str:
        return f"max_epochs={self.max_epochs}"
