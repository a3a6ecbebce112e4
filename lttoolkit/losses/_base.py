"""Shared machinery of the long-tail losses: class counts, per-class weights, DRW.

Every builtin loss derives from :class:`LongTailLoss`, which

* validates ``class_counts`` and keeps them as an ``int64`` buffer (so
  ``loss.to(device)`` moves them, and ``loss.half()`` leaves them exact);
* checks the shapes of ``logits`` / ``targets`` and computes the loss in at
  least float32 (half-precision logits are up-cast: the exp/log of softmax
  losses lose too much in fp16);
* optionally weights each sample by a weight of its class, with *deferred
  re-weighting* (DRW, Cao et al., "Learning Imbalanced Datasets with
  Label-Distribution-Aware Margin Loss", NeurIPS 2019): uniform weights before
  ``drw_epoch`` and the class weights from it on.

Conventions shared by all losses:

* **Weighted mean.** With per-class weights ``w``, the batch loss is
  ``sum_i w[y_i] * l_i / sum_i w[y_i]``: the normalisation of
  ``torch.nn.functional.cross_entropy(weight=w, reduction="mean")``. Without
  weights it is the plain mean. A global rescaling of ``w`` therefore cancels;
  weights are still normalised to sum to the number of classes ``C`` so their
  values are comparable between schemes and with the papers. (The
  class-balanced loss divides by the batch size instead by default, as its
  authors' code does; a loss chooses its reduction in :meth:`LongTailLoss.reduce`.)
* **Empty classes.** A class with zero training samples is treated as having
  *one* sample in every formula that needs ``N_i > 0`` (``log N_i``,
  ``1 / N_i``, the effective number, LDAM margins): the rarest a class can be
  while keeping every value finite. The ``class_counts`` buffer keeps the true
  counts. All counts zero is an error.
"""

from __future__ import annotations

import math
import numbers
import warnings
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn

from lttoolkit.errors import ComponentContractError, ConfigError

__all__ = [
    "LongTailLoss",
    "check_built_loss",
    "REWEIGHT_SCHEMES",
    "as_class_counts",
    "per_class_weights",
    "weighted_mean",
]

REWEIGHT_SCHEMES: tuple[str, ...] = ("none", "inverse", "sqrt_inverse", "effective_number")


def as_class_counts(class_counts: Sequence[int] | Tensor) -> Tensor:
    """Validate ``class_counts`` and return them as a 1-D ``int64`` tensor.

    Args:
        class_counts: number of training samples of each class (a sequence,
            NumPy array or tensor of whole, non-negative numbers).

    Returns:
        The counts as a CPU ``int64`` tensor of shape ``[C]``.

    Raises:
        ConfigError: empty, not 1-D, negative, non-finite or fractional counts,
            or counts that are all zero.

    >>> as_class_counts([500, 50, 5])
    tensor([500,  50,   5])
    """
    if isinstance(class_counts, (str, bytes)) or isinstance(class_counts, numbers.Number):
        raise ConfigError(
            f"class_counts must be a sequence with one sample count per class, got {class_counts!r}"
        )
    try:
        values = torch.as_tensor(class_counts).detach().cpu()
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ConfigError(f"class_counts must be a sequence of numbers, one per class: {exc}") from None
    if values.dim() != 1:
        raise ConfigError(f"class_counts must be 1-D (one count per class), got shape {tuple(values.shape)}")
    if values.numel() == 0:
        raise ConfigError("class_counts is empty: pass one sample count per class")
    if values.dtype == torch.bool or values.is_complex():
        raise ConfigError(f"class_counts must hold whole numbers, got dtype {values.dtype}")
    as_float = values.to(torch.float64)
    if not torch.isfinite(as_float).all():
        raise ConfigError(f"class_counts must be finite, got {values.tolist()}")
    if (as_float < 0).any():
        bad = torch.nonzero(as_float < 0).flatten().tolist()
        raise ConfigError(f"class_counts must be non-negative; classes {bad} have negative counts")
    if (as_float != torch.round(as_float)).any():
        raise ConfigError(f"class_counts must be whole numbers (sample counts), got {values.tolist()}")
    if as_float.sum() == 0:
        raise ConfigError("class_counts are all zero: the training set has no samples")
    return as_float.to(torch.int64)


def _positive_counts(counts: Tensor) -> Tensor:
    # Empty classes count as one sample so log/inverse/margin formulas stay finite (module docstring).
    return counts.to(torch.float64).clamp(min=1.0)


def check_beta(beta: float) -> float:
    """Validate the effective-number hyper-parameter ``0 <= beta < 1``."""
    if isinstance(beta, bool) or not isinstance(beta, numbers.Real) or not 0.0 <= float(beta) < 1.0:
        raise ConfigError(f"beta must be a number with 0 <= beta < 1 (e.g. 0.9999), got {beta!r}")
    return float(beta)


def check_non_negative(name: str, value: float) -> float:
    """Validate that option ``name`` is a finite number >= 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0:
        raise ConfigError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def check_choice(name: str, value: str, choices: Sequence[str]) -> str:
    """Validate that option ``name`` is one of ``choices``."""
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(repr(c) for c in choices)}; got {value!r}")
    return value


def per_class_weights(class_counts: Sequence[int] | Tensor, reweight: str, beta: float = 0.9999) -> Tensor:
    """Per-class loss weights, normalised to sum to the number of classes.

    Args:
        class_counts: training samples per class, ``N_i``.
        reweight: ``"none"`` (all ones), ``"inverse"`` (``w_i ∝ 1/N_i``),
            ``"sqrt_inverse"`` (``w_i ∝ 1/sqrt(N_i)``) or ``"effective_number"``
            (``w_i ∝ (1 - beta) / (1 - beta^N_i)``, Cui et al., CVPR 2019).
        beta: the effective-number hyper-parameter, ``0 <= beta < 1``.

    Returns:
        A float32 tensor ``[C]`` summing to ``C``.

    >>> per_class_weights([3, 1], "inverse")
    tensor([0.5000, 1.5000])
    """
    counts = _positive_counts(as_class_counts(class_counts))
    check_choice("reweight", reweight, REWEIGHT_SCHEMES)
    beta = check_beta(beta)
    if reweight == "none":
        raw = torch.ones_like(counts)
    elif reweight == "inverse":
        raw = 1.0 / counts
    elif reweight == "sqrt_inverse":
        raw = counts.rsqrt()
    else:
        # 1 - beta^N via expm1 keeps precision for beta close to 1; beta = 0 gives 1 for N >= 1.
        one_minus_beta_pow = -torch.expm1(counts * math.log(beta)) if beta > 0 else torch.ones_like(counts)
        raw = (1.0 - beta) / one_minus_beta_pow
    return (raw * (counts.numel() / raw.sum())).to(torch.float32)


def weighted_mean(per_sample: Tensor, targets: Tensor, class_weights: Tensor | None) -> Tensor:
    """Mean of ``per_sample`` losses, weighted by ``class_weights[targets]`` if given.

    Uses the normalisation of ``F.cross_entropy(weight=...)``:
    ``sum_i w[y_i] l_i / sum_i w[y_i]``.

    >>> weighted_mean(torch.tensor([1.0, 3.0]), torch.tensor([0, 1]), torch.tensor([1.0, 3.0]))
    tensor(2.5000)
    """
    if class_weights is None:
        return per_sample.mean()
    sample_weights = class_weights.to(per_sample.dtype)[targets]
    return (sample_weights * per_sample).sum() / sample_weights.sum()


class LongTailLoss(nn.Module):
    """Base class of the long-tail losses: class counts, shape checks, (deferred) re-weighting.

    Subclasses implement :meth:`per_sample_loss`; :meth:`forward` checks the
    inputs, up-casts them to float32 if needed and reduces with
    :func:`weighted_mean`.

    Args:
        class_counts: training samples per class.
        reweight: per-class weighting, one of :data:`REWEIGHT_SCHEMES`.
        beta: effective-number hyper-parameter (used by ``"effective_number"``).
        drw_epoch: deferred re-weighting: weights are uniform for epochs
            ``< drw_epoch`` and the ``reweight`` weights from epoch
            ``drw_epoch`` on (epochs numbered as the trainer passes them to
            :meth:`set_epoch`; lttoolkit's trainer counts from 0). ``None``
            applies the weights from the start. If ``drw_epoch`` is set while
            ``reweight="none"``, the effective number is used, as in LDAM-DRW
            (Cao et al., 2019).
        drw_fraction: deferred re-weighting from a fraction of training instead of
            a fixed epoch: the switch happens at ``int(drw_fraction * max_epochs)``
            (0.8 gives LDAM-DRW's epoch 160 of 200). Exclusive with ``drw_epoch``.

    Attributes:
        class_counts: ``int64`` buffer ``[C]``.
        class_weights: float buffer ``[C]`` (all ones when ``reweight="none"``).

    >>> class UnitLoss(LongTailLoss):
    ...     def per_sample_loss(self, logits, targets):
    ...         return torch.ones(len(targets))
    >>> UnitLoss([10, 1])(torch.zeros(2, 2), torch.tensor([0, 1]))
    tensor(1.)
    """

    class_counts: Tensor
    class_weights: Tensor

    def __init__(
        self,
        class_counts: Sequence[int] | Tensor,
        *,
        reweight: str = "none",
        beta: float = 0.9999,
        drw_epoch: int | None = None,
        drw_fraction: float | None = None,
    ) -> None:
        super().__init__()
        counts = as_class_counts(class_counts)
        if drw_fraction is not None:
            if drw_epoch is not None:
                raise ConfigError("give drw_epoch or drw_fraction, not both")
            if not 0.0 <= float(drw_fraction) <= 1.0:
                raise ConfigError(f"drw_fraction must be in [0, 1], got {drw_fraction!r}")
        self.drw_fraction = None if drw_fraction is None else float(drw_fraction)
        check_choice("reweight", reweight, REWEIGHT_SCHEMES)
        self.beta = check_beta(beta)
        if drw_epoch is not None and (isinstance(drw_epoch, bool) or not isinstance(drw_epoch, numbers.Integral)
                                      or drw_epoch < 0):
            raise ConfigError(f"drw_epoch must be None or a whole number >= 0, got {drw_epoch!r}")
        if (drw_epoch is not None or drw_fraction is not None) and reweight == "none":
            reweight = "effective_number"
        self.reweight = reweight
        self.drw_epoch = None if drw_epoch is None else int(drw_epoch)
        self.register_buffer("class_counts", counts)
        self.register_buffer("class_weights", per_class_weights(counts, reweight, self.beta))
        self.epoch = 0
        self._warned_drw = False

    @property
    def num_classes(self) -> int:
        """Number of classes ``C``."""
        return int(self.class_counts.numel())

    @property
    def weights_active(self) -> bool:
        """Whether the class weights apply at the current epoch."""
        if self.reweight == "none":
            return False
        if self.drw_fraction is not None and self.drw_epoch is None:
            return False  # not told the number of epochs yet: still before the switch
        return self.drw_epoch is None or self.epoch >= self.drw_epoch

    def current_weights(self) -> Tensor | None:
        """The class weights in force now, or ``None`` for an unweighted mean."""
        return self.class_weights if self.weights_active else None

    def set_epoch(self, epoch: int, max_epochs: int | None = None) -> None:
        """Tell the loss which epoch starts; switches deferred re-weighting on at ``drw_epoch``.

        Args:
            epoch: the epoch about to start.
            max_epochs: total number of epochs; used to warn when ``drw_epoch``
                is never reached.
        """
        if isinstance(epoch, bool) or not isinstance(epoch, numbers.Integral) or epoch < 0:
            raise ConfigError(f"set_epoch: epoch must be a whole number >= 0, got {epoch!r}")
        self.epoch = int(epoch)
        if self.drw_fraction is not None:
            if max_epochs is None:
                raise ConfigError("drw_fraction needs set_epoch(epoch, max_epochs) with the number of epochs")
            self.drw_epoch = int(self.drw_fraction * max_epochs)
        if (self.drw_epoch is not None and max_epochs is not None and self.drw_epoch >= max_epochs
                and not self._warned_drw):
            self._warned_drw = True
            warnings.warn(
                f"{type(self).__name__}: drw_epoch={self.drw_epoch} >= max_epochs={max_epochs}, so deferred "
                f"re-weighting never starts; lower drw_epoch (LDAM-DRW uses 160 of 200 epochs).",
                stacklevel=2,
            )

    def per_sample_loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        """Unreduced loss ``[B]`` for float logits ``[B, C]`` and targets ``[B]``."""
        raise NotImplementedError

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        """Mean loss over the batch (weighted per class when re-weighting is active).

        Args:
            logits: ``[B, C]`` unnormalised scores.
            targets: ``[B]`` class indices (``int64``).

        Returns:
            A scalar tensor.
        """
        self.check_inputs(logits, targets)
        if logits.dtype in (torch.float16, torch.bfloat16):
            logits = logits.float()
        return self.reduce(self.per_sample_loss(logits, targets), targets, self.current_weights())

    def check_inputs(self, logits: Tensor, targets: Tensor) -> None:
        """Raise ``ValueError`` unless ``logits`` is ``[B, C]`` and ``targets`` ``[B]``."""
        if logits.dim() != 2 or logits.shape[1] != self.num_classes:
            raise ValueError(
                f"{type(self).__name__} expects logits of shape [batch, {self.num_classes}] "
                f"(one column per class in class_counts), got {tuple(logits.shape)}"
            )
        if targets.dim() != 1 or targets.shape[0] != logits.shape[0]:
            raise ValueError(
                f"{type(self).__name__} expects targets of shape [{logits.shape[0]}] (one class index per "
                f"row of logits), got {tuple(targets.shape)}"
            )

    def reduce(self, per_sample: Tensor, targets: Tensor, class_weights: Tensor | None) -> Tensor:
        """Batch reduction of the per-sample losses: :func:`weighted_mean` unless a loss overrides it."""
        return weighted_mean(per_sample, targets, class_weights)

    def _options_repr(self) -> list[str]:
        return []

    def extra_repr(self) -> str:
        parts = [f"num_classes={self.num_classes}", *self._options_repr()]
        if self.reweight != "none":
            parts.append(f"reweight={self.reweight!r}")
            if self.reweight == "effective_number":
                parts.append(f"beta={self.beta}")
            if self.drw_epoch is not None:
                parts.append(f"drw_epoch={self.drw_epoch}")
        return ", ".join(parts)


def check_built_loss(loss: Any, *, who: str, options: Mapping[str, Any]) -> None:
    """What :data:`lttoolkit.LOSSES` checks a plugin's loss for: a scalar from ``loss(logits, targets)``.

    Raises:
        ComponentContractError: naming ``who`` (the loss and its distribution) and the fault.
    """
    import copy

    counts = options.get("class_counts")
    num_classes = len(counts) if counts is not None else 2
    logits = torch.zeros(2, num_classes, requires_grad=True)
    targets = torch.zeros(2, dtype=torch.long)
    try:
        # Probe a copy with the RNG state restored afterwards: a loss that counts
        # what it sees or draws random numbers must not be changed by the check.
        with torch.random.fork_rng(devices=[]):
            value = copy.deepcopy(loss)(logits, targets)
    except Exception as exc:
        raise ComponentContractError(f"{who} failed on a (2, {num_classes}) batch of logits: "
                                     f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(value, torch.Tensor) or value.dim() != 0:
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise ComponentContractError(f"{who} returned {shape} from forward(logits, targets); it must return a "
                                     f"scalar tensor (reduce over the batch, e.g. .mean())")
