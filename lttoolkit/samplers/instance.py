"""Instance-balanced sampling: every image equally likely, each seen once per epoch.

This is the "uniform sampler" of BBN's conventional learning branch (Zhou et
al., "BBN: Bilateral-Branch Network with Cumulative Learning for Long-Tailed
Visual Recognition", CVPR 2020) and the instance-balanced sampling of Kang et
al. ("Decoupling Representation and Classifier for Long-Tailed Recognition",
ICLR 2020): a fresh random permutation of the dataset every epoch, so class
``i`` is drawn with frequency ``N_i / N``.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from lttoolkit.samplers.base import LongTailSampler

__all__ = ["InstanceSampler"]


class InstanceSampler(LongTailSampler):
    """Uniform over images: a seeded random permutation of the dataset per epoch.

    When ``num_samples`` exceeds the number of images, fresh permutations are
    concatenated (every image appears once per full pass); when it is smaller,
    the permutation is cut short.

    Args:
        labels: class index of every image, in dataset order.
        seed: base seed; the order depends only on ``(seed, epoch)``.
        num_replicas: number of distributed processes sharing the stream.
        rank: this process's index in ``[0, num_replicas)``.
        num_samples: draws per epoch in the single-process stream (default ``len(labels)``).
        num_classes: number of classes (default ``max(labels) + 1``).
        shuffle: ``False`` yields ``0, 1, ..., len(labels) - 1`` (repeated as needed)
            in every epoch, e.g. for evaluation.

    Example:
        >>> sampler = InstanceSampler([0, 0, 0, 1], seed=0)
        >>> sorted(sampler)
        [0, 1, 2, 3]
        >>> list(InstanceSampler([0, 0, 0, 1], shuffle=False))
        [0, 1, 2, 3]
        >>> sampler.class_probabilities().tolist()
        [0.75, 0.25]
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
        shuffle: bool = True,
    ) -> None:
        super().__init__(
            labels, seed=seed, num_replicas=num_replicas, rank=rank, num_samples=num_samples, num_classes=num_classes
        )
        self.shuffle = bool(shuffle)

    def class_probabilities(self) -> torch.Tensor:
        """Fraction of images in each class, ``N_i / N`` (float64, sums to 1)."""
        counts = self._class_counts.to(torch.float64)
        return counts / counts.sum()

    def _draw_stream(self, num: int, generator: torch.Generator) -> torch.Tensor:
        num_images = int(self._labels.numel())
        if not self.shuffle:
            return torch.arange(num, dtype=torch.int64) % num_images
        passes = math.ceil(num / num_images)
        if passes == 1:
            return torch.randperm(num_images, generator=generator)[:num]
        # Many passes over a small dataset: argsort of uniform keys gives independent
        # permutations row by row without a Python loop per pass.
        keys = torch.rand(passes, num_images, generator=generator)
        return keys.argsort(dim=1).flatten()[:num]

    def _extra_repr(self) -> str:
        return f"shuffle={self.shuffle}"
