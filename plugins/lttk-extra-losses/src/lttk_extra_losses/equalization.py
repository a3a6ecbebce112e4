"""Equalization loss: Tan, Wang, Li, Li, Ouyang, Yin and Yan, "Equalization Loss for
Long-Tailed Object Recognition", CVPR 2020.

Every sample of a frequent class is a negative for the rare classes, so the
rare classes' logits are pushed down far more often than up. The equalization
loss ignores those discouraging gradients for the *tail* classes.

**Sigmoid form (default, the authors' code).** The official implementation
(``tztztztztz/eql.detectron2``, ``projects/EQL/eql/fast_rcnn.py``,
``EQLFastRCNNOutputs.eql_loss``) is a per-class binary cross-entropy with a
weight per (sample, class):

    loss = sum_j w_j BCE(z_j, y_j) / B,   w_j = 1 - E(r) T_lambda(f_j) (1 - y_j)

so the tail classes other than the target get no loss at all. ``E(r)`` is 0
for detection background proposals and 1 for every foreground one; a
classification sample is always foreground, so ``E = 1``. Predictions are the
arg-max of the logits (the authors score with ``sigmoid(z)``, the same order).

**Softmax form** (``form="softmax"``, the paper's Sec. 3.4): the tail classes
are removed, at random, from the softmax denominator of the samples that do
not belong to them:

    loss = -sum_j y_j log( e^{z_j} / sum_k w_k e^{z_k} ),
    w_k  = 1 - beta * T_lambda(f_k) * (1 - y_k)

with ``beta`` a Bernoulli variable that is 1 with probability ``gamma`` (0.9 in
the paper), drawn independently for every sample and class so that a fraction
``1 - gamma`` of the discouraging gradients is kept. The target class always
stays in the denominator (``1 - y_k = 0``), so the loss is finite.

In both forms ``f_k = N_k / sum N`` is the frequency of class ``k`` and
``T_lambda(f) = 1`` if ``f < lambda`` (a *tail* class), 0 otherwise.

**Threshold.** The paper tunes ``lambda`` on LVIS by the *tail ratio* it gives
(the share of categories below it). A frequency threshold does not carry over
between datasets with 10 and 1000 classes, so the default here is
``lambda = 1 / C``: a class is tail when it has fewer images than the average
class. On the usual exponential long-tailed CIFAR profiles (imbalance ratio
100) that marks about two thirds of the classes. Pass ``lambda_`` to set the
threshold on ``f_k`` explicitly (named with an underscore, ``lambda`` being
a Python keyword).

**Randomness** (softmax form only). ``beta`` is drawn with torch's global
generator on the device of the logits, so ``torch.manual_seed`` (which
lttoolkit's trainer calls with the run's seed) makes a run reproducible.
``gamma = 0`` (or no tail class) gives cross-entropy.

**Bias.** The authors also start the classifier bias at ``-log((1 - 0.001) / 0.001)``
(a prior of about ``1 / C`` for LVIS); a loss cannot set the model's bias, so
with the sigmoid form start the classifier from a small prior yourself (e.g.
:func:`lttoolkit.methods.single_branch.init_classifier_bias`).
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

__all__ = ["EqualizationLoss", "tail_classes", "EQUALIZATION_FORMS"]

EQUALIZATION_FORMS: tuple[str, ...] = ("sigmoid", "softmax")


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
    """Equalization loss (Tan et al., CVPR 2020): no discouraging gradients for the other tail classes.

    Args:
        class_counts: training samples per class.
        form: ``"sigmoid"`` (the authors' code: per-class binary cross-entropy,
            the non-target tail classes weighted 0) or ``"softmax"`` (the paper's
            softmax variant: non-target tail classes dropped from the
            denominator with probability ``gamma``).
        lambda_: frequency threshold below which a class is *tail*
            (``None``: ``1 / C``, see the module docstring).
        gamma: softmax form only: probability that a tail class is left out of a
            non-target sample's denominator, in ``[0, 1]`` (0.9 in the paper).
        reweight: per-class weighting of the batch mean, as for every
            :class:`~lttoolkit.losses.LongTailLoss`.
        beta: effective-number hyper-parameter for ``reweight="effective_number"``.
        drw_epoch: deferred re-weighting start epoch (``None``: from the start).

    Attributes:
        tail_mask: ``bool`` buffer ``[C]``, ``T_lambda(f_k)``.

    >>> loss = EqualizationLoss([60, 30, 10])  # classes 1 and 2 are tail; zero logits: BCE = log 2 each
    >>> round(loss(torch.zeros(1, 3), torch.tensor([0])).item(), 4)  # only the target column counts
    0.6931
    >>> round(loss(torch.zeros(1, 3), torch.tensor([1])).item(), 4)  # target 1 and head class 0: 2 log 2
    1.3863
    >>> softmax = EqualizationLoss([60, 30, 10], form="softmax", gamma=1.0)
    >>> round(softmax(torch.zeros(1, 3), torch.tensor([0])).item(), 4)  # both tail classes dropped: -log(1/1)
    0.0
    >>> round(softmax(torch.zeros(1, 3), torch.tensor([1])).item(), 4)  # class 2 dropped: log 2
    0.6931
    """

    tail_mask: Tensor

    def __init__(
        self,
        class_counts: Sequence[int] | Tensor,
        *,
        form: str = "sigmoid",
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
        if form not in EQUALIZATION_FORMS:
            raise ConfigError(
                f"form must be 'sigmoid' (the authors' code) or 'softmax' (the paper's softmax variant), got {form!r}"
            )
        self.form = form
        self.lambda_ = None if lambda_ is None else float(lambda_)
        self.gamma = probability("gamma", gamma)
        self.register_buffer("tail_mask", tail_classes(self.class_counts, self.lambda_))

    @property
    def threshold(self) -> float:
        """The frequency threshold in force (``lambda_``, or ``1 / C``)."""
        return 1.0 / self.num_classes if self.lambda_ is None else self.lambda_

    def per_sample_loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        if self.form == "sigmoid":
            one_hot = F.one_hot(targets, self.num_classes).to(logits.dtype)
            binary = F.binary_cross_entropy_with_logits(logits, one_hot, reduction="none")
            # w_j = 1 - T(f_j) (1 - y_j): the non-target tail classes contribute nothing.
            keep = (~self.tail_mask).unsqueeze(0) | (one_hot > 0)
            return (binary * keep.to(binary.dtype)).sum(dim=1)
        if self.gamma > 0 and bool(self.tail_mask.any()):
            beta = torch.rand(logits.shape, device=logits.device) < self.gamma
            excluded = beta & self.tail_mask.unsqueeze(0)
            excluded.scatter_(1, targets.unsqueeze(1), False)  # the (1 - y_k) term
            # w_k = 0 is a logit of -inf: exp(-inf) = 0 leaves the class out, with zero gradient.
            logits = logits.masked_fill(excluded, float("-inf"))
        return F.cross_entropy(logits, targets, reduction="none")

    def _options_repr(self) -> list[str]:
        gamma = [f"gamma={self.gamma}"] if self.form == "softmax" else []
        return [f"form={self.form!r}", f"lambda_={self.threshold:.4g}", *gamma,
                f"tail_classes={int(self.tail_mask.sum())}"]
