"""Single-branch methods: a plain backbone trained on one sampler's stream.

``ce`` is the long-tail baseline (instance sampling, cross-entropy); the same
model with another sampler or loss gives re-sampling and re-weighting methods.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

from torch import Tensor, nn

from lttoolkit.methods._common import resolve
from lttoolkit.methods.bbn import _plain
from lttoolkit.recipe import ComponentSpec, Recipe
from lttoolkit.registry import METHODS

__all__ = ["SingleBranchModel", "ce"]

Spec = str | Mapping[str, Any]


class SingleBranchModel(nn.Module):
    """A backbone with its own classifier, trained on one input stream.

    Args:
        backbone: a timm-style model whose ``forward`` returns logits.

    >>> import torch
    >>> from lttoolkit.backbones import create_backbone
    >>> model = SingleBranchModel(create_backbone("resnet20_cifar", num_classes=10))
    >>> model.eval()(torch.randn(2, 3, 32, 32)).shape
    torch.Size([2, 10])
    """

    stream_names: tuple[str, ...] = ("main",)

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, x: Tensor) -> Tensor:
        return self.backbone(x)

    def training_kwargs(self, epoch: int, max_epochs: int) -> dict[str, float]:
        return {}

    @staticmethod
    def combine_loss(criterion: Callable[[Tensor, Tensor], Tensor], logits: Tensor, targets: Sequence[Tensor]) -> Tensor:
        return criterion(logits, targets[0])

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters by role: ``trunk`` (everything but the classifier) and ``classifier``."""
        head = self.backbone.get_classifier() if hasattr(self.backbone, "get_classifier") else None
        head_ids = {id(p) for p in head.parameters()} if isinstance(head, nn.Module) else set()
        return {
            "trunk": [p for p in self.backbone.parameters() if id(p) not in head_ids],
            "classifier": [p for p in self.backbone.parameters() if id(p) in head_ids],
        }


def single_branch(
    method: str,
    backbone: Spec,
    *,
    num_classes: int,
    pretrained: bool,
    in_chans: int,
    sampler: Spec,
    loss: Spec,
) -> SingleBranchModel:
    """Assemble a :class:`SingleBranchModel` and its recipe (shared by single-branch presets)."""
    from lttoolkit.backbones import create_backbone

    options = dict(backbone=backbone, num_classes=num_classes, pretrained=pretrained, in_chans=in_chans,
                   sampler=sampler, loss=loss)
    sampler_spec, loss_spec = resolve("samplers", sampler), resolve("losses", loss)
    backbone_spec = ComponentSpec.parse(backbone)
    net = create_backbone(backbone_spec.as_dict(), pretrained=pretrained, num_classes=num_classes, in_chans=in_chans)
    model = SingleBranchModel(net)
    model.recipe = Recipe(
        method=method, options=_plain(options), backbone=backbone_spec, num_classes=num_classes, in_chans=in_chans,
        pretrained=pretrained, samplers={"main": sampler_spec}, loss=loss_spec,
    )
    return model


@METHODS.register(name="ce")
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
