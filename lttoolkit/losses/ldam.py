"""LDAM loss: Cao, Wei, Gaidon, Arechiga and Ma, "Learning Imbalanced Datasets with
Label-Distribution-Aware Margin Loss", NeurIPS 2019.

The target logit is lowered by a class margin ``m_y ∝ N_y^(-1/4)`` (scaled so
the largest margin, that of the rarest class, is ``max_m``), the logits are
multiplied by ``s`` and cross-entropy is applied. With ``drw_epoch`` set this
is LDAM-DRW: uniform weights first, effective-number weights (beta = 0.9999)
from ``drw_epoch`` on (the paper uses 160 of 200 epochs).

Note on ``s``: the official implementation feeds LDAM from a *normalised*
classifier (cosine similarities in [-1, 1]) and ``s = 30`` restores a useful
logit range. Here ``s`` multiplies whatever logits come in: with an ordinary
linear classifier use a normalised head, or a small ``s`` (e.g. 1), or the
loss will be dominated by the scaling.
"""

from __future__ import annotations

import math
import numbers
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from lttoolkit.errors import ConfigError
from lttoolkit.losses._base import LongTailLoss, _positive_counts, as_class_counts, check_non_negative

__all__ = ["LDAMLoss", "ldam_margins"]


def ldam_margins(class_counts: Sequence[int] | Tensor, max_m: float = 0.5) -> Tensor:
    """LDAM's per-class margins ``m_i = max_m * (N_min / N_i)^(1/4)``.

    Empty classes count as one sample.

    Args:
        class_counts: training samples per class.
        max_m: the margin of the rarest class, ``>= 0``.

    Returns:
        Float32 tensor ``[C]`` with maximum ``max_m``.

    >>> ldam_margins([16, 1], max_m=0.5)
    tensor([0.2500, 0.5000])
    """
    max_m = check_non_negative("max_m", max_m)
    counts = _positive_counts(as_class_counts(class_counts))
    raw = counts.pow(-0.25)
    return (raw * (max_m / raw.max())).to(torch.float32)


class LDAMLoss(LongTailLoss):
    """Label-distribution-aware margin loss (Cao et al. 2019), margins ~ N_i^(-1/4).

    Args:
        class_counts: training samples per class.
        max_m: margin of the rarest class, ``>= 0`` (0.5 in the paper).
        s: logit scale, ``> 0`` (30 in the paper, for cosine logits; see the module notes).
        reweight: ``"none"``, ``"inverse"``, ``"sqrt_inverse"`` or ``"effective_number"``.
        beta: effective-number hyper-parameter, ``0 <= beta < 1``.
        drw_epoch: start re-weighting at this epoch (LDAM-DRW); with
            ``reweight="none"`` it selects the effective number.

    >>> import torch
    >>> loss = LDAMLoss([16, 1], max_m=0.5, s=1.0)
    >>> loss.margins
    tensor([0.2500, 0.5000])
    >>> round(loss(torch.tensor([[0.0, 0.0]]), torch.tensor([1])).item(), 4)  # log(1 + e^0.5)
    0.9741
    """

    margins: Tensor

    def __init__(
        self,
        class_counts: Sequence[int] | Tensor,
        *,
        max_m: float = 0.5,
        s: float = 30.0,
        reweight: str = "none",
        beta: float = 0.9999,
        drw_epoch: int | None = None,
        drw_fraction: float | None = None,
    ) -> None:
        super().__init__(class_counts, reweight=reweight, beta=beta, drw_epoch=drw_epoch, drw_fraction=drw_fraction)
        if isinstance(s, bool) or not isinstance(s, numbers.Real) or not math.isfinite(s) or s <= 0:
            raise ConfigError(f"s (the LDAM logit scale) must be a finite number > 0, got {s!r}")
        self.s = float(s)
        self.max_m = check_non_negative("max_m", max_m)
        self.register_buffer("margins", ldam_margins(self.class_counts, self.max_m))

    def per_sample_loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        index = targets.unsqueeze(1)
        target_margin = self.margins.to(logits.dtype)[targets].unsqueeze(1)
        shifted = logits.scatter(1, index, logits.gather(1, index) - target_margin)
        return F.cross_entropy(self.s * shifted, targets, reduction="none")

    def _options_repr(self) -> list[str]:
        return [f"max_m={self.max_m}", f"s={self.s}"]
