"""Class-balanced loss: Cui, Jia, Lin, Song and Belongie, "Class-Balanced Loss Based on
Effective Number of Samples", CVPR 2019.

Each sample is weighted by ``w_y ∝ (1 - beta) / (1 - beta^N_y)``, the inverse of
its class's *effective number* of samples, with the weights normalised to sum
to the number of classes ``C``. ``beta = 0`` gives uniform weights (plain
loss); ``beta -> 1`` approaches inverse-frequency weights.

Bases: ``"softmax"`` (cross-entropy), ``"focal"`` (softmax focal loss, as
:class:`~lttoolkit.losses.focal.FocalLoss`), and the sigmoid variants
``"sigmoid"`` / ``"sigmoid_focal"``, where each class is a binary problem and a
sample's loss is the sum over classes. The authors' code
(``richardaecn/class-balanced-loss``, ``src/cifar_main.py``) calls the sigmoid
focal loss ``loss_type="focal"``: the paper's CB focal loss is
``base="sigmoid_focal"`` here (the ``cb_focal`` method's default). Its
classifier bias is initialised to ``-log(C - 1)`` (``src/model_base.py``), a
model choice made by the ``cb_focal`` method, not by this loss.

**Batch reduction.** ``normalize="batch"`` (the default) is the authors' code:
``sum_i w[y_i] l_i / B``, the weights summing to ``C`` (the softmax loss through
``tf.losses.softmax_cross_entropy(weights=...)``, the sigmoid ones divided by
the number of positive labels, one per sample). ``normalize="weights"``
divides by ``sum_i w[y_i]`` instead, the normalisation of
``F.cross_entropy(weight=...)`` that the other lttoolkit losses use; it changes
the loss (and so the effective learning rate) by the factor ``mean_i w[y_i]``
of each batch, which is small for a long-tailed batch dominated by head
classes with small weights.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from lttoolkit.losses._base import LongTailLoss, check_choice, check_non_negative
from lttoolkit.losses.focal import focal_loss

__all__ = ["ClassBalancedLoss", "CLASS_BALANCED_BASES", "CLASS_BALANCED_NORMALIZATIONS"]

CLASS_BALANCED_BASES: tuple[str, ...] = ("softmax", "focal", "sigmoid", "sigmoid_focal")
CLASS_BALANCED_NORMALIZATIONS: tuple[str, ...] = ("batch", "weights")


class ClassBalancedLoss(LongTailLoss):
    """Class-balanced loss by the effective number of samples (Cui et al. 2019), over CE or focal.

    Args:
        class_counts: training samples per class.
        beta: effective-number hyper-parameter, ``0 <= beta < 1`` (0.9999 in the paper
            for CIFAR-LT; 0 is the unweighted loss).
        base: ``"softmax"``, ``"focal"``, ``"sigmoid"`` or ``"sigmoid_focal"``.
        gamma: focusing parameter of the focal bases, ``>= 0``.
        normalize: ``"batch"`` (the authors' code: ``sum_i w[y_i] l_i / B``) or
            ``"weights"`` (``sum_i w[y_i] l_i / sum_i w[y_i]``, as
            ``F.cross_entropy(weight=...)``).

    >>> import torch
    >>> loss = ClassBalancedLoss([100, 10], beta=0.0)  # uniform weights: plain CE
    >>> round(loss(torch.tensor([[0.0, 0.0]]), torch.tensor([1])).item(), 4)
    0.6931
    >>> loss.class_weights
    tensor([1., 1.])
    >>> weighted = ClassBalancedLoss([3, 1], beta=0.5)  # (1 - b) / (1 - b^N) = [4/7, 1], scaled to sum to 2
    >>> [round(w, 4) for w in weighted.class_weights.tolist()]  # [8/11, 14/11]
    [0.7273, 1.2727]
    >>> round(weighted(torch.zeros(2, 2), torch.tensor([0, 0])).item(), 4)  # 8/11 * log 2: divided by B, not by sum w
    0.5041
    """

    def __init__(
        self,
        class_counts: Sequence[int] | Tensor,
        *,
        beta: float = 0.9999,
        base: str = "softmax",
        gamma: float = 2.0,
        normalize: str = "batch",
    ) -> None:
        super().__init__(class_counts, reweight="effective_number", beta=beta)
        self.base = check_choice("base", base, CLASS_BALANCED_BASES)
        self.gamma = check_non_negative("gamma", gamma)
        self.normalize = check_choice("normalize", normalize, CLASS_BALANCED_NORMALIZATIONS)

    def reduce(self, per_sample: Tensor, targets: Tensor, class_weights: Tensor | None) -> Tensor:
        if self.normalize == "weights" or class_weights is None:
            return super().reduce(per_sample, targets, class_weights)
        return (class_weights.to(per_sample.dtype)[targets] * per_sample).sum() / per_sample.numel()

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
        if self.normalize != "batch":
            parts.append(f"normalize={self.normalize!r}")
        return parts

    def extra_repr(self) -> str:
        # The base class would repeat reweight/beta, which are fixed here.
        return ", ".join([f"num_classes={self.num_classes}", *self._options_repr()])
