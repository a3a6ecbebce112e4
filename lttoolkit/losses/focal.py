"""Focal loss: Lin, Goyal, Girshick, He and Dollár, "Focal Loss for Dense Object Detection", ICCV 2017.

The softmax form ``-(1 - p_t)^gamma * log p_t`` with ``p_t`` the predicted
probability of the target class. It is computed from ``log_softmax``, and
``1 - p_t`` as ``-expm1(log p_t)``, so confident predictions neither lose
precision nor produce ``inf * 0`` gradients for ``0 < gamma < 1``.
``gamma = 0`` is cross-entropy.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from lttoolkit.losses._base import LongTailLoss, check_non_negative

__all__ = ["FocalLoss", "focal_loss"]


def focal_loss(logits: Tensor, targets: Tensor, gamma: float = 2.0) -> Tensor:
    """Unreduced softmax focal loss ``-(1 - p_t)^gamma log p_t``.

    Args:
        logits: ``[B, C]`` unnormalised scores.
        targets: ``[B]`` class indices.
        gamma: focusing parameter, ``>= 0``.

    Returns:
        ``[B]`` per-sample losses.

    >>> import torch
    >>> focal_loss(torch.tensor([[0.0, 0.0]]), torch.tensor([0]), gamma=1.0)  # 0.5 * log 2
    tensor([0.3466])
    """
    log_p_target = F.log_softmax(logits, dim=1).gather(1, targets.unsqueeze(1)).squeeze(1)
    # Clamped away from 0 so (1 - p_t)^gamma has a finite derivative when p_t rounds to 1.
    one_minus_p = (-torch.expm1(log_p_target)).clamp(min=torch.finfo(log_p_target.dtype).tiny)
    return -one_minus_p.pow(gamma) * log_p_target


class FocalLoss(LongTailLoss):
    """Focal loss (Lin et al. 2017); gamma=0 is cross-entropy.

    Args:
        class_counts: training samples per class.
        gamma: focusing parameter, ``>= 0`` (2.0 in the paper).
        reweight: ``"none"``, ``"inverse"``, ``"sqrt_inverse"`` or ``"effective_number"``.
        beta: effective-number hyper-parameter, ``0 <= beta < 1``.
        drw_epoch: start re-weighting at this epoch (``None``: from the start).

    >>> import torch
    >>> loss = FocalLoss([100, 10], gamma=2.0)
    >>> round(loss(torch.tensor([[0.0, 0.0]]), torch.tensor([1])).item(), 4)  # 0.25 * log 2
    0.1733
    """

    def __init__(
        self,
        class_counts: Sequence[int] | Tensor,
        *,
        gamma: float = 2.0,
        reweight: str = "none",
        beta: float = 0.9999,
        drw_epoch: int | None = None,
        drw_fraction: float | None = None,
    ) -> None:
        super().__init__(class_counts, reweight=reweight, beta=beta, drw_epoch=drw_epoch, drw_fraction=drw_fraction)
        self.gamma = check_non_negative("gamma", gamma)

    def per_sample_loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        return focal_loss(logits, targets, self.gamma)

    def _options_repr(self) -> list[str]:
        return [f"gamma={self.gamma}"]
