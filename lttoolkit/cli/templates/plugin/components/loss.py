"""``__COMPONENT__``: cross-entropy on prior-shifted logits, an example lttoolkit loss.

The loss is cross-entropy on ``z + tau * log(prior)``, the logit-adjusted loss
of Menon et al., "Long-tail Learning via Logit Adjustment", ICLR 2021: during
training frequent classes get a head start, so the model learns to score rare
classes higher. ``tau = 0`` is plain cross-entropy.

Protocol (lttoolkit ``docs/plugins.md``): ``factory(class_counts, **options)``
returning an ``nn.Module`` whose ``forward(logits, targets)`` is a scalar.
Subclassing ``LongTailLoss`` and overriding ``per_sample_loss`` adds shape
checks, the re-weighting options and deferred re-weighting (``set_epoch``).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from lttoolkit.errors import ConfigError
from lttoolkit.losses import LongTailLoss

__all__ = ["__ATTR__"]


class __ATTR__(LongTailLoss):
    """Cross-entropy on ``logits + tau * log(prior)``, with ``prior = N_i / sum N``.

    Args:
        class_counts: training samples per class (empty classes count as one).
        tau: scale of the prior shift, ``>= 0``.
        reweight: per-class weighting of the batch mean (``"none"``, ``"inverse"``, ...).
        beta: effective-number hyper-parameter for ``reweight="effective_number"``.
        drw_epoch: deferred re-weighting start epoch (``None``: from the start).

    >>> loss = __ATTR__([3, 1], tau=1.0)
    >>> round(loss(torch.zeros(1, 2), torch.tensor([1])).item(), 4)  # -log(1/4)
    1.3863
    """

    log_prior: Tensor

    def __init__(
        self,
        class_counts: Sequence[int] | Tensor,
        *,
        tau: float = 1.0,
        reweight: str = "none",
        beta: float = 0.9999,
        drw_epoch: int | None = None,
    ) -> None:
        super().__init__(class_counts, reweight=reweight, beta=beta, drw_epoch=drw_epoch)
        if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not math.isfinite(tau) or tau < 0:
            raise ConfigError(f"__COMPONENT__: tau must be a finite number >= 0, got {tau!r}")
        self.tau = float(tau)
        counts = self.class_counts.to(torch.float32).clamp(min=1.0)
        self.register_buffer("log_prior", (counts / counts.sum()).log())

    def per_sample_loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        return F.cross_entropy(logits + self.tau * self.log_prior.to(logits.dtype), targets, reduction="none")
