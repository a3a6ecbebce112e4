"""``__COMPONENT__``: class-frequency-power sampling, an example lttoolkit sampler.

Class ``i`` is drawn with probability proportional to ``N_i ** power``, then an
image uniformly within it: ``power = 1`` is instance-balanced sampling,
``power = 0`` class-balanced and ``power = 0.5`` square-root sampling (Mahajan
et al., "Exploring the Limits of Weakly Supervised Pretraining", ECCV 2018).

Protocol (lttoolkit ``docs/plugins.md``): ``factory(labels, *, seed=0,
num_replicas=1, rank=0, **options)`` returning a sampler with ``set_epoch``
whose stream depends only on ``(seed, epoch)``. Subclassing
``ClassWeightedSampler`` and implementing ``class_weights`` provides all of it.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from lttoolkit.errors import ConfigError
from lttoolkit.samplers import ClassWeightedSampler

__all__ = ["__ATTR__"]


class __ATTR__(ClassWeightedSampler):
    """Class ``i`` drawn with weight ``N_i ** power``, then an image uniformly within it.

    Args:
        labels: class index of every image, in dataset order.
        power: exponent of the class size (0: class-balanced, 1: instance-balanced).
        seed: base seed; the stream depends only on ``(seed, epoch)``.
        num_replicas: number of distributed processes sharing the stream.
        rank: this process's index in ``[0, num_replicas)``.
        num_samples: draws per epoch (default ``len(labels)``).
        num_classes: number of classes (default ``max(labels) + 1``).

    >>> sampler = __ATTR__([0, 0, 0, 0, 1], power=0.5)
    >>> [round(p, 4) for p in sampler.class_probabilities().tolist()]
    [0.6667, 0.3333]
    """

    def __init__(
        self,
        labels: Sequence[int] | torch.Tensor,
        *,
        power: float = 0.5,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        num_samples: int | None = None,
        num_classes: int | None = None,
    ) -> None:
        super().__init__(labels, seed=seed, num_replicas=num_replicas, rank=rank, num_samples=num_samples,
                         num_classes=num_classes)
        if isinstance(power, bool) or not isinstance(power, (int, float)) or not math.isfinite(power):
            raise ConfigError(f"__COMPONENT__: power must be a finite number, got {power!r}")
        self.power = float(power)

    def class_weights(self) -> torch.Tensor:
        """``N_i ** power`` per class (classes without images get probability 0 from the base class)."""
        return self.class_counts.to(torch.float64).clamp(min=1.0).pow(self.power)
