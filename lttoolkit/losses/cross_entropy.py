"""Softmax cross-entropy with optional per-class re-weighting and deferred re-weighting.

Plain cross-entropy is the long-tail baseline. The re-weighting schemes
(inverse frequency, its square root, and the effective number of samples of
Cui et al., "Class-Balanced Loss Based on Effective Number of Samples",
CVPR 2019) and their deferred form (DRW: Cao et al., "Learning Imbalanced
Datasets with Label-Distribution-Aware Margin Loss", NeurIPS 2019) come from
:class:`~lttoolkit.losses._base.LongTailLoss`.
"""

from __future__ import annotations

from typing import Sequence

import torch.nn.functional as F
from torch import Tensor

from lttoolkit.losses._base import LongTailLoss

__all__ = ["CrossEntropyLoss"]


class CrossEntropyLoss(LongTailLoss):
    """Softmax cross-entropy, optionally re-weighted per class (with deferred re-weighting).

    Args:
        class_counts: training samples per class.
        reweight: ``"none"``, ``"inverse"``, ``"sqrt_inverse"`` or ``"effective_number"``.
        beta: effective-number hyper-parameter, ``0 <= beta < 1``.
        drw_epoch: start re-weighting at this epoch (``None``: from the start);
            with ``reweight="none"`` it selects the effective number (CE-DRW).

    Weighted batches use ``F.cross_entropy(weight=...)``'s normalisation,
    ``sum w_y l / sum w_y``.

    >>> import torch
    >>> loss = CrossEntropyLoss([100, 10])
    >>> round(loss(torch.tensor([[0.0, 0.0]]), torch.tensor([1])).item(), 4)  # log 2
    0.6931
    """

    def __init__(
        self,
        class_counts: Sequence[int] | Tensor,
        *,
        reweight: str = "none",
        beta: float = 0.9999,
        drw_epoch: int | None = None,
        drw_fraction: float | None = None,
    ) -> None:
        super().__init__(class_counts, reweight=reweight, beta=beta, drw_epoch=drw_epoch, drw_fraction=drw_fraction)

    def per_sample_loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        return F.cross_entropy(logits, targets, reduction="none")
