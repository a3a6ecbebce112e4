"""Class-balanced loss: Cui, Jia, Lin, Song and Belongie, "Class-Balanced Loss Based on
Effective Number of Samples", CVPR 2019.

Each sample is weighted by ``w_y ∝ (1 - beta) / (1 - beta^N_y)``, the inverse of
its class's *effective number* of samples, with the weights normalised to sum
to the number of classes ``C``. ``beta = 0`` gives uniform weights (plain
loss); ``beta -> 1`` approaches inverse-frequency weights.

Bases: ``"softmax"`` (cross-entropy), ``"focal"`` (softmax focal loss, as
:class:`~lttoolkit.losses.focal.FocalLoss`), and the paper's sigmoid variants
``"sigmoid"`` / ``"sigmoid_focal"``, where each class is a binary problem and a
sample's loss is the sum over classes. The paper also initialises the
classifier bias to ``-log((1 - pi) / pi)`` for the sigmoid variants; that is a
model choice this loss does not make.

The batch reduction is lttoolkit's ``sum_i w[y_i] l_i / sum_i w[y_i]`` (as
``F.cross_entropy(weight=...)``); the official implementation divides by the
batch size instead, which only rescales the loss (and so the learning rate)
by ``mean_i w[y_i]``.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from lttoolkit.losses._base import LongTailLoss, check_choice, check_non_negative
from lttoolkit.losses.focal import focal_loss
from lttoolkit.registry import LOSSES

__all__ = ["ClassBalancedLoss", "CLASS_BALANCED_BASES"]

CLASS_BALANCED_BASES: tuple[str, ...] = ("softmax", "focal", "sigmoid", "sigmoid_focal")


@LOSSES.register(name="class_balanced")
class ClassBalancedLoss(LongTailLoss):
    """Class-balanced loss by the effective number of samples (Cui et al. 2019), over CE or focal.

    Args:
        class_counts: training samples per class.
        beta: effective-number hyper-parameter, ``0 <= beta < 1`` (0.9999 in the paper
            for CIFAR-LT; 0 is the unweighted loss).
        base: ``"softmax"``, ``"focal"``, ``"sigmoid"`` or ``"sigmoid_focal"``.
        gamma: focusing parameter of the focal bases, ``>= 0``.

    >>> import torch
    >>> loss = ClassBalancedLoss([100, 10], beta=0.0)  # uniform weights: plain CE
    >>> round(loss(torch.tensor([[0.0, 0.0]]), torch.tensor([1])).item(), 4)
    0.6931
    >>> loss.class_weights
    tensor([1., 1.])
    """

    def __init__(
        self,
        class_counts: Sequence[int] | Tensor,
        *,
        beta: float = 0.9999,
        base: str = "softmax",
        gamma: float = 2.0,
    ) -> None:
        super().__init__(class_counts, reweight="effective_number", beta=beta)
        self.base = check_choice("base", base, CLASS_BALANCED_BASES)
        self.gamma = check_non_negative("gamma", gamma)

    def per_sample_loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        if self.base == "softmax":
            return F.cross_entropy(logits, targets, reduction="none")
        if self.base == "focal":
            return focal_loss(logits, targets, self.gamma)
        one_hot = F.one_hot(targets, self.num_classes).to(logits.dtype)
        binary = F.binary_cross_entropy_with_logits(logits, one_hot, reduction="none")
        if self.base == "sigmoid_focal":
            # 1 - p_t of each binary problem is sigmoid(-z) for positives and sigmoid(z) for negatives.
            log_one_minus_p = F.logsigmoid(torch.where(one_hot > 0, -logits, logits))
            binary = torch.exp(self.gamma * log_one_minus_p) * binary
        return binary.sum(dim=1)

    def _options_repr(self) -> list[str]:
        parts = [f"beta={self.beta}", f"base={self.base!r}"]
        if "focal" in self.base:
            parts.append(f"gamma={self.gamma}")
        return parts

    def extra_repr(self) -> str:
        # The base class would repeat reweight/beta, which are fixed here.
        return ", ".join([f"num_classes={self.num_classes}", *self._options_repr()])
