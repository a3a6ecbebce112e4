"""Balanced softmax: Ren, Yu, Sheng, Ma, Zhao, Yi and Li, "Balanced Meta-Softmax for
Long-Tailed Visual Recognition", NeurIPS 2020.

Training uses cross-entropy on ``logits + log N_i``, which models the label
shift between the long-tailed training set and a balanced test set; at test
time the raw logits are used. A class with zero samples counts as one
(``log 1 = 0``), keeping the loss finite.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from lttoolkit.losses._base import LongTailLoss, _positive_counts

__all__ = ["BalancedSoftmaxLoss"]


class BalancedSoftmaxLoss(LongTailLoss):
    """Balanced softmax (Ren et al. 2020): logits shifted by log N_i during training.

    Args:
        class_counts: training samples per class (zero counts as one).

    >>> import torch, math
    >>> loss = BalancedSoftmaxLoss([2, 1])
    >>> round(loss(torch.tensor([[0.0, 0.0]]), torch.tensor([1])).item(), 4)  # log 3
    1.0986
    """

    log_counts: Tensor

    def __init__(self, class_counts: Sequence[int] | Tensor) -> None:
        super().__init__(class_counts)
        self.register_buffer("log_counts", _positive_counts(self.class_counts).log().to(torch.float32))

    def per_sample_loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        return F.cross_entropy(logits + self.log_counts.to(logits.dtype), targets, reduction="none")
