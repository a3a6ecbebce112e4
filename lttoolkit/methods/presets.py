"""Single-branch presets: the methods BBN is compared with, each a recipe of registered pieces.

| method | sampler | loss | paper |
|---|---|---|---|
| ``rs`` | class_balanced | cross_entropy | class-balanced re-sampling |
| ``rw`` | instance | cross_entropy, inverse-frequency weights | re-weighting |
| ``drw`` | instance | cross_entropy, effective-number weights from 80% of training | Cao et al., NeurIPS 2019 |
| ``cb_focal`` | instance | class_balanced over sigmoid focal, bias from prior 1/C | Cui et al., CVPR 2019 |
| ``ldam_drw`` | instance | ldam + DRW, cosine classifier | Cao et al., NeurIPS 2019 |
| ``balanced_softmax`` | instance | balanced_softmax | Ren et al., NeurIPS 2020 |
| ``logit_adjust`` | instance | logit_adjusted (loss) or CE + post-hoc adjustment | Menon et al., ICLR 2021 |

Every preset takes the same options as ``ce`` (``backbone``, ``num_classes``,
``pretrained``, ``in_chans``) plus its own; its pieces can still be swapped.
"""

from __future__ import annotations

import math
from typing import Any, Literal, Mapping

from lttoolkit.errors import ConfigError
from lttoolkit.methods.single_branch import SingleBranchModel, single_branch

__all__ = ["rs", "rw", "drw", "cb_focal", "ldam_drw", "balanced_softmax", "logit_adjust"]

Spec = str | Mapping[str, Any]


def _common(method: str, backbone: Spec, num_classes: int, pretrained: bool, in_chans: int, **kw: Any) -> SingleBranchModel:
    return single_branch(method, backbone, num_classes=num_classes, pretrained=pretrained, in_chans=in_chans, **kw)


def rs(backbone: Spec = "resnet32_cifar", *, num_classes: int = 1000, pretrained: bool = False, in_chans: int = 3,
       sampler: Spec = "class_balanced", loss: Spec = "cross_entropy") -> SingleBranchModel:
    """Re-sampling: class-balanced sampling with cross-entropy.

    >>> from lttoolkit import build
    >>> build("rs", backbone="resnet20_cifar", num_classes=10).recipe.samplers["main"].type
    'class_balanced'
    """
    return _common("rs", backbone, num_classes, pretrained, in_chans, sampler=sampler, loss=loss)


def rw(backbone: Spec = "resnet32_cifar", *, num_classes: int = 1000, pretrained: bool = False, in_chans: int = 3,
       sampler: Spec = "instance",
       loss: Spec = {"type": "cross_entropy", "reweight": "inverse"}) -> SingleBranchModel:  # noqa: B006 (read-only)
    """Re-weighting: cross-entropy with inverse-frequency class weights."""
    return _common("rw", backbone, num_classes, pretrained, in_chans, sampler=sampler, loss=loss)


def drw(backbone: Spec = "resnet32_cifar", *, num_classes: int = 1000, pretrained: bool = False, in_chans: int = 3,
        sampler: Spec = "instance", drw_fraction: float = 0.8, beta: float = 0.9999) -> SingleBranchModel:
    """Deferred re-weighting (Cao et al. 2019): plain CE, then effective-number weights from 80% of training."""
    loss = {"type": "cross_entropy", "reweight": "effective_number", "beta": beta, "drw_fraction": drw_fraction}
    return _common("drw", backbone, num_classes, pretrained, in_chans, sampler=sampler, loss=loss,
                   extra_options={"drw_fraction": drw_fraction, "beta": beta})


def cb_focal(backbone: Spec = "resnet32_cifar", *, num_classes: int = 1000, pretrained: bool = False,
             in_chans: int = 3, sampler: Spec = "instance", beta: float = 0.9999, gamma: float = 1.0,
             base: str = "sigmoid_focal", normalize: str = "batch",
             bias_prior: float | str | None = "num_classes") -> SingleBranchModel:
    """Class-balanced focal loss (Cui et al. 2019), as in the authors' code.

    ``richardaecn/class-balanced-loss`` trains CB focal as a *sigmoid* focal loss
    (``src/cifar_main.py``, ``loss_type="focal"``) weighted by the effective number,
    divided by the batch size, with the classifier bias initialised to
    ``-log(C - 1)`` (``src/model_base.py``), i.e. ``-log((1 - pi) / pi)`` with
    ``pi = 1 / C``.

    Args:
        beta: effective-number hyper-parameter (0.9999 in the authors' CIFAR-LT script).
        gamma: focusing parameter (1.0 in the authors' CIFAR-LT script).
        base: the loss the weights multiply (``"sigmoid_focal"``; ``"focal"`` is the
            softmax focal loss, lttoolkit's former default).
        normalize: ``"batch"`` (the authors') or ``"weights"``; see
            :class:`~lttoolkit.losses.ClassBalancedLoss`.
        bias_prior: the prior probability ``pi`` the classifier bias starts from,
            ``-log((1 - pi) / pi)``: ``"num_classes"`` (``pi = 1 / C``, the authors'
            code), a number in ``(0, 1)`` (the paper's text says 0.1, which equals
            the code for 10 classes), or ``None`` to keep the backbone's own bias
            initialisation.

    >>> from lttoolkit import build
    >>> model = build("cb_focal", backbone="resnet20_cifar", num_classes=10)
    >>> round(float(model.classifier.bias[0]), 4)  # -log(9)
    -2.1972
    >>> model.recipe.loss.options["base"], model.recipe.loss.options["normalize"]
    ('sigmoid_focal', 'batch')
    """
    loss = {"type": "class_balanced", "base": base, "beta": beta, "gamma": gamma, "normalize": normalize}
    return _common("cb_focal", backbone, num_classes, pretrained, in_chans, sampler=sampler, loss=loss,
                   classifier_bias=prior_bias(bias_prior, num_classes),
                   extra_options={"beta": beta, "gamma": gamma, "base": base, "normalize": normalize,
                                  "bias_prior": bias_prior})


def prior_bias(prior: float | str | None, num_classes: int) -> float | None:
    """The bias ``-log((1 - pi) / pi)`` that makes a sigmoid output start at probability ``pi``.

    Args:
        prior: ``pi`` in ``(0, 1)``, ``"num_classes"`` for ``pi = 1 / num_classes``
            (bias ``-log(num_classes - 1)``), or ``None`` (no initialisation: returns ``None``).
        num_classes: ``C``.

    >>> round(prior_bias(0.1, 100), 4), round(prior_bias("num_classes", 100), 4)
    (-2.1972, -4.5951)
    """
    if prior is None:
        return None
    if prior == "num_classes":
        if num_classes < 2:
            raise ConfigError("bias_prior='num_classes' needs at least 2 classes (the bias is -log(C - 1))")
        return -math.log(num_classes - 1)
    if isinstance(prior, bool) or not isinstance(prior, (int, float)) or not 0.0 < float(prior) < 1.0:
        raise ConfigError(
            f"bias_prior must be 'num_classes' (pi = 1 / C, the authors' code), a probability in (0, 1) "
            f"(e.g. 0.1, the paper's text) or null (keep the backbone's bias), got {prior!r}"
        )
    return -math.log((1.0 - float(prior)) / float(prior))


def ldam_drw(backbone: Spec = "resnet32_cifar", *, num_classes: int = 1000, pretrained: bool = False,
             in_chans: int = 3, sampler: Spec = "instance", max_m: float = 0.5, s: float = 30.0,
             drw_fraction: float = 0.8) -> SingleBranchModel:
    """LDAM-DRW (Cao et al. 2019): margin loss on a cosine classifier, DRW from 80% of training."""
    loss = {"type": "ldam", "max_m": max_m, "s": s, "reweight": "effective_number", "drw_fraction": drw_fraction}
    return _common("ldam_drw", backbone, num_classes, pretrained, in_chans, sampler=sampler, loss=loss,
                   classifier="cosine", extra_options={"max_m": max_m, "s": s, "drw_fraction": drw_fraction})


def balanced_softmax(backbone: Spec = "resnet32_cifar", *, num_classes: int = 1000, pretrained: bool = False,
                     in_chans: int = 3, sampler: Spec = "instance") -> SingleBranchModel:
    """Balanced softmax (Ren et al. 2020): training logits shifted by log N_i."""
    return _common("balanced_softmax", backbone, num_classes, pretrained, in_chans, sampler=sampler,
                   loss="balanced_softmax", extra_options={})


def logit_adjust(backbone: Spec = "resnet32_cifar", *, num_classes: int = 1000, pretrained: bool = False,
                 in_chans: int = 3, sampler: Spec = "instance", tau: float = 1.0,
                 mode: Literal["loss", "posthoc"] = "loss") -> SingleBranchModel:
    """Logit adjustment (Menon et al. 2021), as a loss or post hoc at inference.

    ``mode="loss"`` trains with logits + tau·log(prior); ``mode="posthoc"`` trains
    with plain CE and returns logits − tau·log(prior) at inference.

    >>> from lttoolkit import build
    >>> build("logit_adjust", backbone="resnet20_cifar", num_classes=10, mode="posthoc").posthoc_tau
    1.0
    """
    if mode not in ("loss", "posthoc"):
        raise ValueError(f"logit_adjust: mode must be 'loss' or 'posthoc', got {mode!r}")
    extra = {"tau": tau, "mode": mode}
    if mode == "loss":
        return _common("logit_adjust", backbone, num_classes, pretrained, in_chans, sampler=sampler,
                       loss={"type": "logit_adjusted", "tau": tau}, extra_options=extra)
    return _common("logit_adjust", backbone, num_classes, pretrained, in_chans, sampler=sampler,
                   loss="cross_entropy", posthoc_tau=tau, extra_options=extra)
