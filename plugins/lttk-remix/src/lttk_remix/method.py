"""Remix: Chou, Chang, Pan, Wei and Juan, "Remix: Rebalanced Mixup", ECCV 2020 Workshops.

Mixup (Zhang et al., ICLR 2018) trains on ``x = lam * x_i + (1 - lam) * x_j``
with the label mixed by the same ``lam``. Remix mixes the images the same way
(``lam ~ Beta(alpha, alpha)``, one per batch, and ``j`` a random permutation of
the batch) but gives the label to the minority class when the two classes are
far apart in size:

* ``y = y_j`` if ``n_i / n_j >= kappa`` and ``lam < tau`` (``x_i``'s class is
  the frequent one and contributes less than ``tau`` of the image);
* ``y = y_i`` if ``n_i / n_j <= 1 / kappa`` and ``1 - lam < tau``;
* otherwise the mixup label ``lam * y_i + (1 - lam) * y_j``.

The paper uses ``kappa = 3``, ``tau = 0.5`` and ``alpha = 1``. The class
counts ``n`` are the training set's, given by lttoolkit's trainer through
:meth:`RemixModel.on_train_start`.

**Loss.** With ``lam_y`` the weight of ``y_i`` in the label (0, 1 or
``lam``), the loss of a sample is ``lam_y L(z, y_i) + (1 - lam_y) L(z, y_j)``.
Because ``lam_y`` only ever takes those three values, it is computed with two
calls of the criterion on the whole batch and the batch's single ``lam``:
``lam * L(z, a) + (1 - lam) * L(z, b)``, where ``a = b = y_j`` for samples
whose label went to ``y_j``, ``a = b = y_i`` for those whose label went to
``y_i``, and ``(a, b) = (y_i, y_j)`` otherwise. For a plain batch mean this is
exactly the mean of the per-sample Remix losses; a re-weighted criterion
weights each of the two terms by its own targets, as mixup with a weighted loss
does. Any loss of the ``losses`` registry therefore works unchanged.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from lttoolkit.errors import ConfigError
from lttoolkit.losses import as_class_counts
from lttoolkit.methods import SingleBranchModel
from lttoolkit.methods.protocol import EpochInfo, StepOutput
from lttoolkit.methods.single_branch import single_branch

__all__ = ["RemixModel", "remix", "remix_label_weights", "remix_targets"]

Spec = str | Mapping[str, Any]


def _label_cases(counts_i: Tensor, counts_j: Tensor, lam: float, kappa: float, tau: float) -> tuple[Tensor, Tensor]:
    # Counts of 0 are treated as 1, the convention of lttoolkit.losses: the ratio stays finite.
    ratio = counts_i.to(torch.float64).clamp(min=1.0) / counts_j.to(torch.float64).clamp(min=1.0)
    to_j = (ratio >= kappa) & (lam < tau)
    to_i = (ratio <= 1.0 / kappa) & (1.0 - lam < tau) & ~to_j  # the first rule wins if both hold
    return to_j, to_i


def remix_label_weights(counts_i: Tensor, counts_j: Tensor, lam: float, *, kappa: float = 3.0,
                        tau: float = 0.5) -> Tensor:
    """``lam_y``, the weight of ``y_i`` in each mixed sample's label (0, 1 or ``lam``).

    Args:
        counts_i: ``[B]`` training-set size of each sample's class ``y_i``.
        counts_j: ``[B]`` training-set size of its mixing partner's class ``y_j``.
        lam: the image mixing weight of ``x_i``.
        kappa: class-size ratio from which the label goes to the minority class.
        tau: share of the image below which the majority class loses the label.

    Returns:
        A float32 ``[B]`` tensor.

    >>> remix_label_weights(torch.tensor([300, 100, 100, 10]), torch.tensor([100, 300, 100, 10]), 0.3)
    tensor([0.0000, 0.3000, 0.3000, 0.3000])
    >>> remix_label_weights(torch.tensor([100]), torch.tensor([300]), 0.7)  # minority x_i dominates
    tensor([1.])
    """
    to_j, to_i = _label_cases(counts_i, counts_j, lam, kappa, tau)
    weights = torch.full(to_j.shape, float(lam), dtype=torch.float32, device=to_j.device)
    return weights.masked_fill(to_j, 0.0).masked_fill(to_i, 1.0)


def remix_targets(targets: Tensor, permutation: Tensor, lam: float, class_counts: Tensor, *,
                  kappa: float = 3.0, tau: float = 0.5) -> tuple[Tensor, Tensor]:
    """The two target vectors ``(a, b)`` with ``lam L(z, a) + (1 - lam) L(z, b)`` = Remix's loss.

    Args:
        targets: ``[B]`` labels ``y_i`` of the batch.
        permutation: ``[B]`` index of each sample's mixing partner (``y_j = targets[permutation]``).
        lam: the batch's image mixing weight.
        class_counts: ``[C]`` training samples per class.
        kappa: Remix's class-size ratio threshold.
        tau: Remix's mixing-share threshold.

    Returns:
        ``(a, b)``, each ``[B]``: ``(y_j, y_j)`` where the label goes to ``y_j``,
        ``(y_i, y_i)`` where it goes to ``y_i``, ``(y_i, y_j)`` for the mixup label.

    >>> a, b = remix_targets(torch.tensor([0, 1]), torch.tensor([1, 0]), 0.3, torch.tensor([900, 100]))
    >>> a.tolist(), b.tolist()  # sample 0 (class 0, 9x larger, 30% of the image) takes class 1's label
    ([1, 1], [1, 0])
    """
    partner = targets[permutation]
    counts = class_counts.to(targets.device)
    to_j, to_i = _label_cases(counts[targets], counts[partner], lam, kappa, tau)
    return torch.where(to_j, partner, targets), torch.where(to_i, targets, partner)


def _check_option(name: str, value: Any, low: float, high: float | None, *, low_open: bool) -> float:
    ok = not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value)
    if ok:
        ok = (value > low if low_open else value >= low) and (high is None or value <= high)
    if not ok:
        bound = f"{'>' if low_open else '>='} {low}" + (f" and <= {high}" if high is not None else "")
        raise ConfigError(f"remix: {name} must be a number {bound}, got {value!r}")
    return float(value)


def _remix_options(alpha: float, kappa: float, tau: float) -> tuple[float, float, float]:
    return (_check_option("alpha", alpha, 0.0, None, low_open=True),
            _check_option("kappa", kappa, 1.0, None, low_open=False),
            _check_option("tau", tau, 0.0, 1.0, low_open=False))


class RemixModel(SingleBranchModel):
    """A single-branch model trained on Remix-mixed batches.

    lttoolkit's trainer calls :meth:`training_step` (the method protocol): it draws a
    mix (``lam ~ Beta(alpha, alpha)`` and a random permutation, both from torch's
    global generator, so ``torch.manual_seed`` makes runs reproducible), runs one
    forward of the mixed batch and computes Remix's loss from that same mix, so no
    state is kept between a forward and a loss. ``model(x)`` is the plain backbone.

    Args:
        backbone: a timm-style model whose ``forward`` returns logits.
        alpha: Beta distribution parameter of ``lam``, ``> 0``.
        kappa: class-size ratio threshold, ``>= 1``.
        tau: mixing-share threshold, in ``[0, 1]``.

    >>> from lttoolkit.backbones import create_backbone
    >>> model = RemixModel(create_backbone("resnet20_cifar", num_classes=3))
    >>> model.on_train_start(class_counts=[300, 100, 10])
    >>> from lttoolkit.methods.protocol import EpochInfo
    >>> out = model.train().training_step([torch.randn(4, 3, 32, 32)], [torch.tensor([0, 1, 2, 0])],
    ...                                   torch.nn.CrossEntropyLoss(), EpochInfo(0, 10), model)
    >>> out.loss.dim(), out.stats["lam"] <= 1.0
    (0, True)
    """

    class_counts: Tensor | None

    def __init__(self, backbone: nn.Module, *, alpha: float = 1.0, kappa: float = 3.0, tau: float = 0.5) -> None:
        super().__init__(backbone)
        self.alpha, self.kappa, self.tau = _remix_options(alpha, kappa, tau)
        # Not persistent: the counts come from the data at every training start, not from checkpoints.
        self.register_buffer("class_counts", None, persistent=False)
        concentration = torch.tensor(self.alpha)
        self._lam_distribution = torch.distributions.Beta(concentration, concentration, validate_args=False)

    def on_train_start(self, class_counts: Sequence[int] | Tensor) -> None:
        """Receive the training set's samples per class (called once by lttoolkit's trainer)."""
        counts = as_class_counts(class_counts)
        expected = getattr(getattr(self, "recipe", None), "num_classes", None)
        if expected is not None and counts.numel() != expected:
            raise ConfigError(f"remix: got class counts for {counts.numel()} classes, but the model has {expected}")
        device = next(self.parameters(), torch.empty(0)).device
        self.class_counts = counts.to(device)

    def draw_mix(self, batch_size: int, device: torch.device | str = "cpu") -> tuple[Tensor, float]:
        """A random ``(permutation, lam)`` for a batch of ``batch_size``."""
        lam = float(self._lam_distribution.sample())
        return torch.randperm(batch_size, device=device), lam

    @staticmethod
    def mix(x: Tensor, permutation: Tensor, lam: float) -> Tensor:
        """``lam * x + (1 - lam) * x[permutation]``.

        >>> RemixModel.mix(torch.tensor([[0.0], [10.0]]), torch.tensor([1, 0]), 0.25).flatten().tolist()
        [7.5, 2.5]
        """
        return lam * x + (1.0 - lam) * x[permutation]

    def training_step(
        self,
        images: Sequence[Tensor],
        targets: Sequence[Tensor],
        criterion: Callable[[Tensor, Tensor], Tensor],
        epoch: EpochInfo,
        forward: Callable[..., Tensor],
    ) -> StepOutput:
        """lttoolkit's method protocol: mix the batch, one forward, Remix's loss of that mix."""
        x, labels = images[0], targets[0]
        permutation, lam = self.draw_mix(x.shape[0], x.device)
        logits = forward(self.mix(x, permutation, lam))
        loss = self.remix_loss(criterion, logits, labels, permutation, lam)
        hits = (logits.detach().argmax(1) == labels).sum()
        return StepOutput(loss=loss, logits=logits, hits=hits, batch_size=labels.shape[0], stats={"lam": lam})

    def remix_loss(self, criterion: Callable[[Tensor, Tensor], Tensor], logits: Tensor, labels: Tensor,
                   permutation: Tensor, lam: float) -> Tensor:
        """Remix's loss of a batch mixed by ``(permutation, lam)``: ``lam L(z, a) + (1 - lam) L(z, b)``."""
        if permutation.numel() != labels.numel():
            raise RuntimeError(
                f"remix: the batch was mixed over {permutation.numel()} images but got {labels.numel()} targets"
            )
        if self.class_counts is None:
            raise RuntimeError(
                "remix needs the training class counts: call model.on_train_start(class_counts=...) before "
                "training (lttoolkit's trainer does)"
            )
        first, second = remix_targets(labels, permutation, lam, self.class_counts, kappa=self.kappa, tau=self.tau)
        return lam * criterion(logits, first) + (1.0 - lam) * criterion(logits, second)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, kappa={self.kappa}, tau={self.tau}"


def remix(
    backbone: Spec = "resnet32_cifar",
    *,
    num_classes: int = 1000,
    pretrained: bool = False,
    in_chans: int = 3,
    sampler: Spec = "instance",
    loss: Spec = "cross_entropy",
    alpha: float = 1.0,
    kappa: float = 3.0,
    tau: float = 0.5,
) -> RemixModel:
    """Remix: rebalanced mixup (Chou et al., ECCV 2020 Workshops) on a single-branch model.

    Args:
        backbone: any backbone name or ``{"type": name, **options}``.
        num_classes: classifier outputs.
        pretrained: load the backbone's pretrained weights.
        in_chans: input channels.
        sampler: the training sampler (Remix: instance sampling).
        loss: the criterion ``L`` (any loss of the registry).
        alpha: ``lam ~ Beta(alpha, alpha)``.
        kappa: class-size ratio from which the label goes to the minority class.
        tau: share of the image below which the majority class loses the label.

    Returns:
        A :class:`RemixModel` carrying ``.recipe``.
    """
    # Checked before the backbone is built: a bad option fails at once.
    _remix_options(alpha, kappa, tau)
    base = single_branch("remix", backbone, num_classes=num_classes, pretrained=pretrained, in_chans=in_chans,
                         sampler=sampler, loss=loss)
    model = RemixModel(base.backbone, alpha=alpha, kappa=kappa, tau=tau)
    options = {**base.recipe.options, "alpha": model.alpha, "kappa": model.kappa, "tau": model.tau}
    model.recipe = base.recipe.model_copy(update={"options": options})
    return model
