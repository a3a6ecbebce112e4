"""RIDE's loss: Wang, Lian, Miao, Liu and Yu, "Long-tailed Recognition by Routing Diverse
Distribution-Aware Experts", ICLR 2021 (frank-xwang/RIDE-LongTailRecognition, ``model/loss.py``,
``RIDELoss``).

For experts ``k = 1..K`` with logits ``z_k`` (already scaled: RIDE's heads output ``s·cos``) and
their ensemble ``z = mean_k z_k``, the loss is summed over the experts:

    L = sum_k [ base_loss_factor · CE_w(z_k − s·m_y·e_y, y)
                + diversity_factor · T̄² · KL( softmax(z / T) ‖ softmax(z_k / T) ) ]

* ``m_y = max_m · (N_min / N_y)^(1/4)``: LDAM's margins (Cao et al. 2019), lowered from the
  target logit after the scale ``s``, as the authors' ``get_final_output`` (``x − s·m``);
* ``CE_w``: cross-entropy, with the effective-number weights (``beta = 0.9999``, summing to C)
  once deferred re-weighting is on, uniform before;
* the diversity term: ``KL`` with the ensemble's distribution as the (detached) target, mean
  over the batch (``F.kl_div(..., reduction="batchmean")``); ``diversity_factor = −0.2``
  *rewards* experts that disagree with the ensemble. Its temperature is ``T`` before
  re-weighting starts, and from then on one per class, ``T_c = T · w_c`` with
  ``w_c ∝ C·p_c·reweight_factor + 1 − reweight_factor`` (``p_c`` the class frequency, ``w``
  divided by its maximum); ``T̄`` is the mean of ``T_c`` (``T`` before).

As in the authors' code, a ``diversity_factor`` of 0 scores every expert's base loss on the
*ensemble's* logits (``ride_loss_logits = output_logits if additional_diversity_factor == 0``).
Called without ``expert_logits`` the logits are taken as the only expert (the LDAM-DRW loss on
them; the diversity term is then zero).
"""

from __future__ import annotations

import math
import numbers
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from lttoolkit.errors import ConfigError
from lttoolkit.losses._base import LongTailLoss, as_class_counts
from lttoolkit.losses.ldam import ldam_margins

__all__ = ["RIDELoss", "ride_diversity_weights"]


def ride_diversity_weights(class_counts: Sequence[int] | Tensor, reweight_factor: float = 0.05) -> Tensor:
    """RIDE's per-class factors of the diversity temperature: ``C·p_c·f + 1 − f``, divided by their maximum.

    ``p_c`` is class c's share of the training images, ``f`` the ``reweight_factor``; frequent
    classes get the higher temperature.

    >>> ride_diversity_weights([3, 1], reweight_factor=0.5)  # 2·0.75·0.5 + 0.5 = 1.25, 2·0.25·0.5 + 0.5 = 0.75
    tensor([1.0000, 0.6000])
    """
    counts = as_class_counts(class_counts).to(torch.float64)
    factor = float(reweight_factor)
    raw = counts.numel() * (counts / counts.sum()) * factor + 1.0 - factor
    if not bool((raw > 0).all()):
        raise ConfigError(f"reweight_factor={reweight_factor!r} is too large: some diversity temperatures would be "
                          f"<= 0 (the authors' 'reweight factor is too large')")
    return (raw / raw.max()).to(torch.float32)


def _finite(name: str, value: float, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or (
            positive and value <= 0):
        raise ConfigError(f"{name} must be a finite number{' > 0' if positive else ''}, got {value!r}")
    return float(value)


class RIDELoss(LongTailLoss):
    """RIDE's distribution-aware diversity loss (Wang et al., ICLR 2021), summed over the experts.

    Args:
        class_counts: training samples per class.
        max_m: LDAM margin of the rarest class (0.5).
        s: the logit scale the experts' heads apply; the margin is subtracted as ``s·m``.
        base_loss_factor: weight of each expert's LDAM term (1.0).
        diversity_factor: weight of each expert's KL to the ensemble (−0.2: diversity is rewarded).
        diversity_temperature: the temperature ``T`` of the diversity term (1.0).
        reweight_factor: how far the per-class temperatures follow the class frequencies (0.05).
        reweight: as every :class:`LongTailLoss` (``"none"``; deferred re-weighting selects the
            effective number). Re-weighting switches the base weights and the per-class
            temperatures together.
        beta: effective-number hyper-parameter (0.9999).
        drw_epoch: deferred re-weighting from this (0-based) epoch.
        drw_fraction: deferred re-weighting from this fraction of training; the RIDE method uses
            0.8 (the authors' epoch 160 of 200).

    ``forward(logits, targets, expert_logits=None)``: ``logits`` is the ensemble ``[B, C]``,
    ``expert_logits`` the experts' ``[B, K, C]`` (or a sequence of ``[B, C]``).

    >>> import torch
    >>> loss = RIDELoss([1, 1], s=1.0)
    >>> zeros = torch.zeros(1, 2)
    >>> round(loss(zeros, torch.tensor([0]), expert_logits=torch.zeros(1, 2, 2)).item(), 4)  # 2·log(1 + e^0.5)
    1.9482
    """

    accepts_expert_logits = True
    margins: Tensor
    diversity_weights: Tensor

    def __init__(
        self,
        class_counts: Sequence[int] | Tensor,
        *,
        max_m: float = 0.5,
        s: float = 30.0,
        base_loss_factor: float = 1.0,
        diversity_factor: float = -0.2,
        diversity_temperature: float = 1.0,
        reweight_factor: float = 0.05,
        reweight: str = "none",
        beta: float = 0.9999,
        drw_epoch: int | None = None,
        drw_fraction: float | None = None,
    ) -> None:
        super().__init__(class_counts, reweight=reweight, beta=beta, drw_epoch=drw_epoch, drw_fraction=drw_fraction)
        self.s = _finite("s (the logit scale)", s, positive=True)
        self.max_m = _finite("max_m", max_m)
        if self.max_m < 0:
            raise ConfigError(f"max_m must be >= 0, got {max_m!r}")
        self.base_loss_factor = _finite("base_loss_factor", base_loss_factor)
        self.diversity_factor = _finite("diversity_factor", diversity_factor)
        self.diversity_temperature = _finite("diversity_temperature", diversity_temperature, positive=True)
        self.reweight_factor = _finite("reweight_factor", reweight_factor)
        self.register_buffer("margins", ldam_margins(self.class_counts, self.max_m))
        self.register_buffer("diversity_weights", ride_diversity_weights(self.class_counts, self.reweight_factor))

    def per_sample_loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        """One expert's LDAM term, unreduced: cross-entropy of the logits with ``s·m_y`` off the target."""
        index = targets.unsqueeze(1)
        margin = (self.s * self.margins.to(logits.dtype))[targets].unsqueeze(1)
        return F.cross_entropy(logits.scatter(1, index, logits.gather(1, index) - margin), targets, reduction="none")

    def temperature(self) -> tuple[float | Tensor, float | Tensor]:
        """The diversity temperature now and its mean: ``(T, T)`` before re-weighting, then
        ``(T·w [1, C], mean of it)``."""
        if not self.weights_active:
            return self.diversity_temperature, self.diversity_temperature
        per_class = self.diversity_temperature * self.diversity_weights.view(1, -1)
        return per_class, per_class.mean()

    def forward(self, logits: Tensor, targets: Tensor,
                expert_logits: Tensor | Sequence[Tensor] | None = None) -> Tensor:
        self.check_inputs(logits, targets)
        if expert_logits is None:
            experts: Sequence[Tensor] = [logits]
        elif isinstance(expert_logits, Tensor):
            if expert_logits.dim() != 3 or expert_logits.shape[0] != logits.shape[0] or (
                    expert_logits.shape[2] != logits.shape[1]):
                raise ValueError(f"RIDELoss expects expert_logits of shape [{logits.shape[0]}, K, {logits.shape[1]}], "
                                 f"got {tuple(expert_logits.shape)}")
            experts = expert_logits.unbind(1)
        else:
            experts = list(expert_logits)
            for z in experts:
                self.check_inputs(z, targets)
        if logits.dtype in (torch.float16, torch.bfloat16):
            logits = logits.float()
        experts = [z.float() if z.dtype in (torch.float16, torch.bfloat16) else z for z in experts]
        weights = self.current_weights()
        temperature, mean_temperature = self.temperature()
        if isinstance(temperature, Tensor):
            temperature = temperature.to(logits.dtype)
            mean_temperature = mean_temperature.to(logits.dtype)  # type: ignore[union-attr]
        ensemble = F.softmax(logits.detach() / temperature, dim=1)
        total = logits.new_zeros(())
        for z in experts:
            scored = logits if self.diversity_factor == 0 else z
            total = total + self.base_loss_factor * self.reduce(self.per_sample_loss(scored, targets), targets, weights)
            if self.diversity_factor != 0:
                kl = F.kl_div(F.log_softmax(z / temperature, dim=1), ensemble, reduction="batchmean")
                total = total + self.diversity_factor * mean_temperature * mean_temperature * kl
        return total

    def _options_repr(self) -> list[str]:
        return [f"max_m={self.max_m}", f"s={self.s}", f"diversity_factor={self.diversity_factor}",
                f"diversity_temperature={self.diversity_temperature}"]
