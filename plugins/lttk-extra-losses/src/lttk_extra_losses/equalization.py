"""Softmax equalization loss: Tan, Wang, Li, Li, Ouyang, Yin and Yan, "Equalization Loss
for Long-Tailed Object Recognition", CVPR 2020 (the softmax form, Sec. 3.4).

Every sample of a frequent class is a negative for the rare classes, so the
rare classes' logits are pushed down far more often than up. The softmax
equalization loss removes, at random, the rare classes from the softmax
denominator of the samples that do not belong to them:

    loss = -sum_j y_j log( e^{z_j} / sum_k w_k e^{z_k} ),
    w_k  = 1 - beta * T_lambda(f_k) * (1 - y_k)

with ``f_k = N_k / sum N`` the frequency of class ``k``, ``T_lambda(f) = 1``
if ``f < lambda`` (a *tail* class) and 0 otherwise, and ``beta`` a Bernoulli
variable that is 1 with probability ``gamma`` (0.9 in the paper), drawn
independently for every sample and class so that a fraction ``1 - gamma`` of
the discouraging gradients is kept. The target class always stays in the
denominator (``1 - y_k = 0``), so the loss is finite.

**Threshold.** The paper tunes ``lambda`` on LVIS by the *tail ratio* it gives
(the share of categories below it). A frequency threshold does not carry over
between datasets with 10 and 1000 classes, so the default here is
``lambda = 1 / C``: a class is tail when it has fewer images than the average
class. On the usual exponential long-tailed CIFAR profiles (imbalance ratio
100) that marks about two thirds of the classes. Pass ``lambda_`` to set the
threshold on ``f_k`` explicitly (named with an underscore, ``lambda`` being
a Python keyword).

**Randomness.** ``beta`` is drawn with torch's global generator on the device
of the logits, so ``torch.manual_seed`` (which lttoolkit's trainer calls with
the run's seed) makes a run reproducible. ``gamma = 0`` (or no tail class)
gives cross-entropy.
"""

from __future__ import annotations

import numbers
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from lttk_extra_losses._checks import probability
from lttoolkit.errors import ConfigError
from lttoolkit.losses import LongTailLoss

__all__ = ["EqualizationLoss", "tail_classes"]


def tail_classes(class_counts: Sequence[int] | Tensor, lambda_: float | None = None) -> Tensor:
    """``T_lambda(f_k)``: which classes have a frequency ``N_k / sum N`` below ``lambda_``.

    Args:
        class_counts: training samples per class.
        lambda_: the frequency threshold; ``None`` uses ``1 / C``.

    Returns:
        A ``bool`` tensor ``[C]``.

    >>> tail_classes([60, 30, 10]).tolist()  # frequencies 0.6, 0.3, 0.1 against 1/3
    [False, True, True]
    >>> tail_classes([60, 30, 10], lambda_=0.2).tolist()
    [False, False, True]
    """
    counts = torch.as_tensor(class_counts).to(torch.float64)
    threshold = 1.0 / counts.numel() if lambda_ is None else lambda_
    return counts / counts.sum() < threshold


class EqualizationLoss(LongTailLoss):
    """Softmax equalization loss (Tan et al., CVPR 2020): tail classes left out of other classes' softmax.

    Args:
        class_counts: training samples per class.
        lambda_: frequency threshold below which a class is *tail*
            (``None``: ``1 / C``, see the module docstring).
        gamma: probability that a tail class is left out of a non-target
            sample's denominator, in ``[0, 1]`` (0.9 in the paper).
        reweight: per-class weighting of the batch mean, as for every
            :class:`~lttoolkit.losses.LongTailLoss`.
        beta: effective-number hyper-parameter for ``reweight="effective_number"``.
        drw_epoch: deferred re-weighting start epoch (``None``: from the start).

    Attributes:
        tail_mask: ``bool`` buffer ``[C]``, ``T_lambda(f_k)``.

    >>> loss = EqualizationLoss([60, 30, 10], gamma=1.0)  # classes 1 and 2 are tail
    >>> round(loss(torch.zeros(1, 3), torch.tensor([0])).item(), 4)  # both dropped: -log(1/1)
    0.0
    >>> round(loss(torch.zeros(1, 3), torch.tensor([1])).item(), 4)  # class 2 dropped: log 2
    0.6931
    """

    tail_mask: Tensor

    def __init__(
        self,
        class_counts: Sequence[int] | Tensor,
        *,
        lambda_: float | None = None,
        gamma: float = 0.9,
        reweight: str = "none",
        beta: float = 0.9999,
        drw_epoch: int | None = None,
    ) -> None:
        super().__init__(class_counts, reweight=reweight, beta=beta, drw_epoch=drw_epoch)
        if lambda_ is not None and (isinstance(lambda_, bool) or not isinstance(lambda_, numbers.Real)
                                    or not 0.0 <= float(lambda_) <= 1.0):
            raise ConfigError(
                f"lambda_ is a threshold on class frequencies N_k / sum N and must lie in [0, 1] "
                f"(or be None for 1 / num_classes), got {lambda_!r}"
            )
        self.lambda_ = None if lambda_ is None else float(lambda_)
        self.gamma = probability("gamma", gamma)
        self.register_buffer("tail_mask", tail_classes(self.class_counts, self.lambda_))

    @property
    def threshold(self) -> float:
        """The frequency threshold in force (``lambda_``, or ``1 / C``)."""
        return 1.0 / self.num_classes if self.lambda_ is None else self.lambda_

    def per_sample_loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        if self.gamma > 0 and bool(self.tail_mask.any()):
            beta = torch.rand(logits.shape, device=logits.device) < self.gamma
            excluded = beta & self.tail_mask.unsqueeze(0)
            excluded.scatter_(1, targets.unsqueeze(1), False)  # the (1 - y_k) term
            # w_k = 0 is a logit of -inf: exp(-inf) = 0 leaves the class out, with zero gradient.
            logits = logits.masked_fill(excluded, float("-inf"))
        return F.cross_entropy(logits, targets, reduction="none")

    def _options_repr(self) -> list[str]:
        return [f"lambda_={self.threshold:.4g}", f"gamma={self.gamma}",
                f"tail_classes={int(self.tail_mask.sum())}"]
