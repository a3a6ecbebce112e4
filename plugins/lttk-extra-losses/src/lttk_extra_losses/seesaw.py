"""Seesaw loss: Wang, Zhang, Zang, Cao, Pang, Gong, Liu, Loy and Lin, "Seesaw Loss for
Long-Tailed Instance Segmentation", CVPR 2021.

For a sample of class ``i`` the softmax denominator weighs every other class
``j`` by ``S_ij = M_ij * C_ij``:

    loss = -log( e^{z_i} / (e^{z_i} + sum_{j != i} S_ij e^{z_j}) )

* the *mitigation factor* ``M_ij = (N_j / N_i)^p`` if ``N_j < N_i``, else 1,
  shrinks the penalty a frequent class ``i`` puts on a rarer class ``j``;
* the *compensation factor* ``C_ij = (sigma_j / sigma_i)^q`` if
  ``sigma_j > sigma_i``, else 1 (``sigma`` the softmax probabilities), restores
  the penalty when class ``j`` is wrongly scored above the true class.

**Clamped ratio.** The authors' implementation (mmdetection,
``mmdet/models/losses/seesaw_loss.py``, ``seesaw_ce_loss``) divides by the
target probability clamped from below, ``sigma_j / max(sigma_i, eps)`` with
``eps = 0.01``, so a sample whose target probability has collapsed does not
get an unbounded compensation factor. This loss does the same by default;
``eps=0`` gives the exact ratio of the paper's formula.

The paper's defaults are ``p = 0.8`` and ``q = 2``. Both factors are constants
for back-propagation (``sigma`` is taken from detached logits), as in the
paper's gradient analysis and its reference implementation, so the gradient is
that of cross-entropy on the adjusted logits ``z_j + log S_ij``.

**Class counts.** The paper accumulates ``N`` online, from the samples seen so
far, because detection datasets are not known in advance as class counts. In
classification the training counts are known, so this loss uses the static
``class_counts`` it is built with by default; ``accumulate=True`` counts the
targets of every training-mode call instead (starting from zero). Either way a
count of 0 is treated as 1, the convention of :mod:`lttoolkit.losses`.

With ``p = 0`` and ``q = 0`` every ``S_ij`` is 1 and the loss is cross-entropy.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from lttk_extra_losses._checks import flag, non_negative, probability
from lttoolkit.losses import LongTailLoss

__all__ = ["SeesawLoss", "seesaw_log_factors"]


def seesaw_log_factors(logits: Tensor, targets: Tensor, class_counts: Tensor, p: float = 0.8,
                       q: float = 2.0, eps: float = 0.01) -> Tensor:
    """``log S_ij`` for every sample and class (0 in the target column), without gradient.

    Args:
        logits: ``[B, C]`` unnormalised scores.
        targets: ``[B]`` class indices.
        class_counts: ``[C]`` samples per class (0 is treated as 1).
        p: exponent of the mitigation factor, ``>= 0``.
        q: exponent of the compensation factor, ``>= 0``.
        eps: lower bound on the target probability in the compensation factor's
            ratio ``sigma_j / max(sigma_i, eps)`` (mmdetection's 0.01; 0 for the exact ratio).

    Returns:
        A ``[B, C]`` tensor in the dtype of ``logits``.

    >>> import math
    >>> factors = seesaw_log_factors(torch.zeros(1, 3), torch.tensor([0]), torch.tensor([4, 2, 1]), p=1.0, q=0.0)
    >>> [round(math.exp(v), 4) for v in factors[0].tolist()]  # M_0j = N_j / N_0
    [1.0, 0.5, 0.25]
    >>> logits = torch.tensor([[-10.0, 0.0]])  # sigma = [4.54e-5, 0.99995]
    >>> round(math.exp(seesaw_log_factors(logits, torch.tensor([0]), torch.tensor([1, 1]), p=0.0, q=1.0)[0, 1]), 1)
    100.0
    >>> round(math.exp(seesaw_log_factors(logits, torch.tensor([0]), torch.tensor([1, 1]), 0.0, 1.0, eps=0)[0, 1]))
    22026
    """
    with torch.no_grad():
        log_counts = class_counts.to(device=logits.device, dtype=logits.dtype).clamp(min=1.0).log()
        # log(N_j / N_i): only rarer classes (negative values) are mitigated.
        log_count_ratio = log_counts.unsqueeze(0) - log_counts[targets].unsqueeze(1)
        log_factors = p * log_count_ratio.clamp(max=0.0)
        if q > 0:
            # log(sigma_j / sigma_i) from log-probabilities: no division by a vanishing sigma_i.
            log_probs = F.log_softmax(logits.detach(), dim=1)
            log_target = log_probs.gather(1, targets.unsqueeze(1))
            if eps > 0:
                log_target = log_target.clamp(min=math.log(eps))
            log_prob_ratio = log_probs - log_target
            log_factors = log_factors + q * log_prob_ratio.clamp(min=0.0)
    return log_factors


class SeesawLoss(LongTailLoss):
    """Seesaw loss (Wang et al., CVPR 2021): mitigation and compensation factors on the negative classes.

    Args:
        class_counts: training samples per class (the static ``N`` of the
            mitigation factor unless ``accumulate=True``).
        p: mitigation exponent, ``>= 0`` (0.8 in the paper).
        q: compensation exponent, ``>= 0`` (2.0 in the paper).
        accumulate: count ``N`` online from the targets of each call in
            training mode, as the paper does, instead of using ``class_counts``.
        eps: lower bound on the target probability in the compensation ratio
            (0.01, as mmdetection; 0 for the exact ratio).
        reweight: per-class weighting of the batch mean, as for every
            :class:`~lttoolkit.losses.LongTailLoss`.
        beta: effective-number hyper-parameter for ``reweight="effective_number"``.
        drw_epoch: deferred re-weighting start epoch (``None``: from the start).

    Attributes:
        seen_counts: ``int64`` buffer ``[C]`` of the targets counted so far
            (only updated with ``accumulate=True``).

    >>> loss = SeesawLoss([4, 2, 1], p=1.0, q=0.0)
    >>> round(loss(torch.zeros(1, 3), torch.tensor([0])).item(), 4)  # log(1 + 1/2 + 1/4)
    0.5596
    """

    seen_counts: Tensor

    def __init__(
        self,
        class_counts: Sequence[int] | Tensor,
        *,
        p: float = 0.8,
        q: float = 2.0,
        accumulate: bool = False,
        eps: float = 0.01,
        reweight: str = "none",
        beta: float = 0.9999,
        drw_epoch: int | None = None,
    ) -> None:
        super().__init__(class_counts, reweight=reweight, beta=beta, drw_epoch=drw_epoch)
        self.p = non_negative("p", p)
        self.q = non_negative("q", q)
        self.eps = probability("eps", eps)
        self.accumulate = flag("accumulate", accumulate)
        self.register_buffer("seen_counts", torch.zeros(self.num_classes, dtype=torch.int64))

    def mitigation_counts(self) -> Tensor:
        """The ``N`` the mitigation factor uses now: ``seen_counts`` or ``class_counts``."""
        return self.seen_counts if self.accumulate else self.class_counts

    def per_sample_loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        if self.accumulate and self.training:
            # Counted before the factors are computed: the current batch is part of "seen so far".
            self.seen_counts += torch.bincount(targets.detach(), minlength=self.num_classes).to(self.seen_counts)
        log_factors = seesaw_log_factors(logits, targets, self.mitigation_counts(), self.p, self.q, self.eps)
        return F.cross_entropy(logits + log_factors, targets, reduction="none")

    def _options_repr(self) -> list[str]:
        parts = [f"p={self.p}", f"q={self.q}"] + (["accumulate=True"] if self.accumulate else [])
        return parts + ([f"eps={self.eps}"] if self.eps != 0.01 else [])
