"""Logit adjustment: Menon, Jayasumana, Rawat, Jain, Veit and Kumar, "Long-Tail Learning
via Logit Adjustment", ICLR 2021.

:class:`LogitAdjustedLoss` trains with cross-entropy on ``logits + tau * log pi``
(``pi_i = N_i / sum N``, the training label prior). :func:`adjust_logits` is the
paper's *post-hoc* alternative: train normally, then predict with
``logits - tau * log pi``. A class with zero samples counts as one, keeping
``log pi`` finite.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from lttoolkit.losses._base import LongTailLoss, _positive_counts, as_class_counts, check_non_negative

__all__ = ["LogitAdjustedLoss", "adjust_logits", "log_prior"]


def log_prior(class_counts: Sequence[int] | Tensor) -> Tensor:
    """``log pi_i = log(N_i / sum N)`` as float32 (empty classes count as one sample).

    >>> log_prior([1, 1])
    tensor([-0.6931, -0.6931])
    """
    counts = _positive_counts(as_class_counts(class_counts))
    return (counts / counts.sum()).log().to(torch.float32)


def adjust_logits(logits: Tensor, class_counts: Sequence[int] | Tensor, tau: float = 1.0) -> Tensor:
    """Post-hoc logit adjustment for prediction: ``logits - tau * log pi``.

    Args:
        logits: ``[..., C]`` scores of a model trained on the long-tailed prior.
        class_counts: training samples per class (gives ``pi``).
        tau: adjustment strength, ``>= 0`` (1.0 is the Bayes-optimal choice for
            the balanced error under the paper's assumptions).

    Returns:
        Adjusted logits, same shape, dtype and device as ``logits``.

    >>> import torch
    >>> adjust_logits(torch.zeros(1, 2), [3, 1]).argmax(dim=1)  # favours the rare class
    tensor([1])
    """
    tau = check_non_negative("tau", tau)
    prior = log_prior(class_counts)
    if logits.shape[-1] != prior.numel():
        raise ValueError(
            f"adjust_logits: logits have {logits.shape[-1]} classes in the last dimension but class_counts "
            f"has {prior.numel()}"
        )
    return logits - tau * prior.to(device=logits.device, dtype=logits.dtype)


class LogitAdjustedLoss(LongTailLoss):
    """Logit-adjusted loss (Menon et al. 2021): logits + tau * log prior.

    Args:
        class_counts: training samples per class (zero counts as one).
        tau: adjustment strength, ``>= 0``; 0 is plain cross-entropy.

    >>> import torch
    >>> loss = LogitAdjustedLoss([2, 1], tau=1.0)  # same as balanced softmax here
    >>> round(loss(torch.tensor([[0.0, 0.0]]), torch.tensor([1])).item(), 4)  # log 3
    1.0986
    """

    log_prior: Tensor

    def __init__(self, class_counts: Sequence[int] | Tensor, *, tau: float = 1.0) -> None:
        super().__init__(class_counts)
        self.tau = check_non_negative("tau", tau)
        self.register_buffer("log_prior", log_prior(self.class_counts))

    def per_sample_loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        return F.cross_entropy(logits + self.tau * self.log_prior.to(logits.dtype), targets, reduction="none")

    def _options_repr(self) -> list[str]:
        return [f"tau={self.tau}"]
