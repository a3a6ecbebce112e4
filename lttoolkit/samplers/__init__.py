"""Samplers: which dataset indices a training epoch visits, and how often.

Protocol (what :data:`lttoolkit.SAMPLERS` entries, builtin or plugin, provide)::

    factory(labels: Sequence[int], *, seed: int = 0, num_replicas: int = 1,
            rank: int = 0, **options) -> torch.utils.data.Sampler[int]

and the returned sampler has ``set_epoch(epoch: int)``. The builtins share
:class:`LongTailSampler` (seeding, epochs, sharding) and, for class-weighted
ones, :class:`ClassWeightedSampler`; they also accept ``num_samples`` and
``num_classes`` and expose ``class_counts`` and ``class_probabilities()``.

>>> from lttoolkit.registry import SAMPLERS
>>> sampler = SAMPLERS.build("reversed", labels=[0, 0, 0, 1], seed=0)
>>> sampler.class_probabilities().tolist()
[0.25, 0.75]
"""

from __future__ import annotations

from lttoolkit.samplers.base import ClassWeightedSampler, LongTailSampler
from lttoolkit.samplers.class_weighted import (
    ClassBalancedSampler,
    ProgressiveSampler,
    ReversedSampler,
    SquareRootSampler,
)
from lttoolkit.samplers.instance import InstanceSampler

__all__ = [
    "LongTailSampler",
    "ClassWeightedSampler",
    "InstanceSampler",
    "ClassBalancedSampler",
    "SquareRootSampler",
    "ReversedSampler",
    "ProgressiveSampler",
]
