"""Single-branch methods: a plain backbone trained on one sampler's stream.

``ce`` is the long-tail baseline (instance sampling, cross-entropy); the same
model with another sampler or loss gives re-sampling and re-weighting methods.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lttoolkit.errors import ConfigError
from lttoolkit.methods._common import plain_options, resolve
from lttoolkit.methods.protocol import EpochInfo, StepOutput
from lttoolkit.recipe import ComponentSpec, Recipe

__all__ = ["SingleBranchModel", "CosineClassifier", "single_branch", "init_classifier_bias", "ce"]

Spec = str | Mapping[str, Any]


class CosineClassifier(nn.Module):
    """Linear classifier on L2-normalised features and weights (cosine logits in [-1, 1]).

    LDAM-DRW (Cao et al. 2019) uses it with the loss's scale ``s``.

    >>> head = CosineClassifier(4, 3)
    >>> bool(head(torch.randn(2, 4)).abs().max() <= 1.0)
    True
    """

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, in_features).uniform_(-1, 1).renorm_(2, 0, 1e-5).mul_(1e5))

    def forward(self, features: Tensor) -> Tensor:
        return F.linear(F.normalize(features, dim=1), F.normalize(self.weight, dim=1))


class SingleBranchModel(nn.Module):
    """A backbone with its own classifier, trained on one input stream.

    Args:
        backbone: a timm-style model whose ``forward`` returns logits (or pooled
            features, when ``head`` is given and the backbone has no classifier).
        head: an optional classifier replacing the backbone's own.
        posthoc_tau: post-hoc logit adjustment (Menon et al. 2021): at inference
            the logits become ``z - tau * log(prior)``, the prior being the
            training class frequencies handed over by :meth:`on_train_start`.

    >>> import torch
    >>> from lttoolkit.backbones import create_backbone
    >>> model = SingleBranchModel(create_backbone("resnet20_cifar", num_classes=10))
    >>> model.eval()(torch.randn(2, 3, 32, 32)).shape
    torch.Size([2, 10])
    """

    stream_names: tuple[str, ...] = ("main",)

    def __init__(self, backbone: nn.Module, *, head: nn.Module | None = None, posthoc_tau: float = 0.0) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.posthoc_tau = float(posthoc_tau)
        num_classes = _num_outputs(head if head is not None else backbone)
        # Saved with the weights, so an evaluated checkpoint applies the same adjustment.
        self.register_buffer("log_prior", torch.zeros(num_classes))

    def on_train_start(self, class_counts: Sequence[int]) -> None:
        """Remember the training prior (used by post-hoc logit adjustment)."""
        counts = torch.as_tensor(list(class_counts), dtype=torch.float32).clamp_min(1.0)
        self.log_prior.copy_((counts / counts.sum()).log().to(self.log_prior.device))

    def forward(self, x: Tensor) -> Tensor:
        logits = self.backbone(x) if self.head is None else self.head(self.backbone(x))
        if self.posthoc_tau and not self.training:
            logits = logits - self.posthoc_tau * self.log_prior
        return logits

    def epoch_stats(self, epoch: EpochInfo) -> dict[str, float]:
        """Nothing changes with the epoch for a single-branch model."""
        return {}

    def training_step(
        self,
        images: Sequence[Tensor],
        targets: Sequence[Tensor],
        criterion: Callable[[Tensor, Tensor], Tensor],
        epoch: EpochInfo,
        forward: Callable[..., Tensor],
    ) -> StepOutput:
        """The method protocol's step: ``criterion(forward(x), y)`` on the one stream."""
        logits = forward(images[0])
        labels = targets[0]
        return StepOutput(loss=criterion(logits, labels), logits=logits,
                          hits=(logits.detach().argmax(1) == labels).sum(), batch_size=labels.shape[0])

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters by role: ``trunk`` (everything but the classifier) and ``classifier``."""
        head = self.classifier
        head_ids = {id(p) for p in head.parameters()} if isinstance(head, nn.Module) else set()
        return {
            "trunk": [p for p in self.backbone.parameters() if id(p) not in head_ids],
            "classifier": [p for p in self.parameters() if id(p) in head_ids],
        }

    @property
    def classifier(self) -> nn.Module | None:
        """The final classifier: the separate head, or the backbone's own."""
        if self.head is not None:
            return self.head
        return self.backbone.get_classifier() if hasattr(self.backbone, "get_classifier") else None


def _num_outputs(module: nn.Module) -> int:
    if isinstance(module, CosineClassifier):
        return module.weight.shape[0]
    head = module.get_classifier() if hasattr(module, "get_classifier") else None
    if isinstance(head, nn.Linear):
        return head.out_features
    return int(getattr(module, "num_classes", 0) or 0)


def init_classifier_bias(module: nn.Module, value: float, *, method: str = "model") -> None:
    """Set every bias of ``module``'s linear classifier to ``value``.

    ``module`` is a timm-style backbone (its ``get_classifier()``) or a classifier itself.

    >>> head = nn.Linear(4, 3)
    >>> init_classifier_bias(head, -2.0)
    >>> head.bias.tolist()
    [-2.0, -2.0, -2.0]
    """
    head = module.get_classifier() if hasattr(module, "get_classifier") else module
    bias = getattr(head, "bias", None)
    if not isinstance(bias, Tensor):
        raise ConfigError(
            f"{method}: the classifier bias cannot be initialised: {type(head).__name__} has no bias; use a "
            f"backbone whose classifier is a linear layer with a bias, or turn the bias initialisation off"
        )
    with torch.no_grad():
        bias.fill_(float(value))


def single_branch(
    method: str,
    backbone: Spec,
    *,
    num_classes: int,
    pretrained: bool,
    in_chans: int,
    sampler: Spec,
    loss: Spec,
    classifier: str = "linear",
    posthoc_tau: float = 0.0,
    classifier_bias: float | None = None,
    extra_options: dict[str, Any] | None = None,
) -> SingleBranchModel:
    """Assemble a :class:`SingleBranchModel` and its recipe (shared by single-branch presets).

    Args:
        classifier: ``"linear"`` (the backbone's own) or ``"cosine"`` (:class:`CosineClassifier`).
        posthoc_tau: post-hoc logit adjustment at inference (0 = off).
        classifier_bias: if given, every bias of the linear classifier starts at this value
            (sigmoid losses start from a small prior probability, Lin et al. 2017).
        extra_options: the preset's own options (instead of ``loss``), recorded in the
            recipe so that ``build(method, **recipe.options)`` rebuilds the model.
    """
    from lttoolkit.backbones import create_backbone

    if classifier not in ("linear", "cosine"):
        raise ValueError(f"classifier must be 'linear' or 'cosine', got {classifier!r}")
    # What the method was called with, so `Recipe.rebuild()` calls it the same way.
    options = dict(backbone=backbone, num_classes=num_classes, pretrained=pretrained, in_chans=in_chans,
                   sampler=sampler)
    options.update(extra_options if extra_options is not None else {"loss": loss})
    sampler_spec, loss_spec = resolve("samplers", sampler), resolve("losses", loss)
    backbone_spec = ComponentSpec.parse(backbone, kind="backbone")
    net = create_backbone(backbone_spec.as_dict(), pretrained=pretrained, num_classes=num_classes, in_chans=in_chans)
    head = None
    if classifier == "cosine":
        net.reset_classifier(0)
        head = CosineClassifier(int(getattr(net, "head_hidden_size", None) or net.num_features), num_classes)
    if classifier_bias is not None:
        init_classifier_bias(net if head is None else head, classifier_bias, method=method)
    model = SingleBranchModel(net, head=head, posthoc_tau=posthoc_tau)
    model.recipe = Recipe(
        method=method, options=plain_options(options), backbone=backbone_spec, num_classes=num_classes, in_chans=in_chans,
        pretrained=pretrained, samplers={"main": sampler_spec}, loss=loss_spec,
    )
    return model


def ce(
    backbone: Spec = "resnet32_cifar",
    *,
    num_classes: int = 1000,
    pretrained: bool = False,
    in_chans: int = 3,
    sampler: Spec = "instance",
    loss: Spec = "cross_entropy",
) -> SingleBranchModel:
    """Plain backbone, instance sampling, cross-entropy: the long-tail baseline.

    >>> from lttoolkit import build
    >>> build("ce", backbone="resnet20_cifar", num_classes=10).recipe.samplers["main"].type
    'instance'
    """
    return single_branch("ce", backbone, num_classes=num_classes, pretrained=pretrained, in_chans=in_chans,
                         sampler=sampler, loss=loss)
