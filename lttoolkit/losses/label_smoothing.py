"""Label smoothing: Szegedy, Vanhoucke, Ioffe, Shlens and Wojna, "Rethinking the Inception
Architecture for Computer Vision", CVPR 2016.

Cross-entropy against the target distribution ``(1 - eps) * one_hot(y) + eps / C``.
Per-class (deferred) re-weighting weights each *sample* by its target class's
weight, with lttoolkit's ``sum w_y l / sum w_y`` mean. This differs from
``F.cross_entropy(weight=w, label_smoothing=eps)``, which also weights the
smoothing term of each class by that class's weight.
"""

from __future__ import annotations

import numbers
from typing import Sequence

import torch.nn.functional as F
from torch import Tensor

from lttoolkit.errors import ConfigError
from lttoolkit.losses._base import LongTailLoss

__all__ = ["LabelSmoothingLoss"]


class LabelSmoothingLoss(LongTailLoss):
    """Cross-entropy against label-smoothed targets (Szegedy et al. 2016).

    Args:
        class_counts: training samples per class.
        smoothing: ``eps``, the mass spread uniformly over all classes, ``0 <= eps < 1``.
        reweight: ``"none"``, ``"inverse"``, ``"sqrt_inverse"`` or ``"effective_number"``.
        beta: effective-number hyper-parameter, ``0 <= beta < 1``.
        drw_epoch: start re-weighting at this epoch (``None``: from the start).

    >>> import torch
    >>> loss = LabelSmoothingLoss([5, 5], smoothing=0.2)
    >>> round(loss(torch.tensor([[0.0, 0.0]]), torch.tensor([0])).item(), 4)  # log 2 whatever eps
    0.6931
    """

    def __init__(
        self,
        class_counts: Sequence[int] | Tensor,
        *,
        smoothing: float = 0.1,
        reweight: str = "none",
        beta: float = 0.9999,
        drw_epoch: int | None = None,
        drw_fraction: float | None = None,
    ) -> None:
        super().__init__(class_counts, reweight=reweight, beta=beta, drw_epoch=drw_epoch, drw_fraction=drw_fraction)
        if isinstance(smoothing, bool) or not isinstance(smoothing, numbers.Real) or not 0.0 <= smoothing < 1.0:
            raise ConfigError(f"smoothing must be a number with 0 <= smoothing < 1 (e.g. 0.1), got {smoothing!r}")
        self.smoothing = float(smoothing)

    def per_sample_loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        log_probs = F.log_softmax(logits, dim=1)
        target_term = -log_probs.gather(1, targets.unsqueeze(1)).squeeze(1)
        uniform_term = -log_probs.mean(dim=1)
        return (1.0 - self.smoothing) * target_term + self.smoothing * uniform_term

    def _options_repr(self) -> list[str]:
        return [f"smoothing={self.smoothing}"]
