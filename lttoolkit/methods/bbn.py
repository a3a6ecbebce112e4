"""The ``bbn`` method: Bilateral-Branch Network with cumulative learning
(Zhou et al., CVPR 2020), assembled from registered pieces.
"""

from __future__ import annotations

import warnings
from typing import Any, Mapping

from lttoolkit.methods._common import build_schedule, plain_options, resolve
from lttoolkit.methods.bilateral import BRANCHES, BilateralWrapper
from lttoolkit.recipe import ComponentSpec, Recipe

__all__ = ["bbn"]

Spec = str | Mapping[str, Any]


def bbn(
    backbone: Spec = "resnet32_cifar",
    *,
    num_classes: int = 1000,
    pretrained: bool = False,
    in_chans: int = 3,
    sampler: Spec = "reversed",
    conventional_sampler: Spec = "instance",
    loss: Spec = "cross_entropy",
    schedule: Spec = "parabolic",
    split_at: str | None = None,
    branchwise_norm: bool | None = None,
) -> BilateralWrapper:
    """Bilateral-Branch Network with cumulative learning (Zhou et al. 2020).

    Args:
        backbone: any backbone name (every timm model, the CIFAR ResNets, a
            plugin's) or ``{"type": name, **options}``.
        num_classes: classes of the shared classifier.
        pretrained: load the backbone's pretrained weights (fails clearly offline).
        in_chans: input channels (1 for grayscale data).
        sampler: the re-balancing branch's sampler (BBN: ``"reversed"``).
        conventional_sampler: the conventional branch's sampler (BBN: ``"instance"``).
        loss: the loss L in alpha·L(z, y_c) + (1 − alpha)·L(z, y_r).
        schedule: the alpha schedule (BBN: ``"parabolic"``).
        split_at: dotted path of the block to duplicate (found automatically).
        branchwise_norm: no longer an option, accepted so that old configs and
            checkpoints still load: the two branches always run as two passes, so
            each has its own batch statistics by construction. Ignored, with a warning.

    Returns:
        A :class:`BilateralWrapper` with ``.recipe``; ``model(x)`` gives logits.

    >>> from lttoolkit import build
    >>> model = build("bbn", backbone="resnet20_cifar", num_classes=10, schedule="cosine")
    >>> model.recipe.samplers["rebalancing"].type, model.recipe.schedule.type
    ('reversed', 'cosine')
    """
    from lttoolkit.backbones import create_backbone

    if branchwise_norm is not None:
        warnings.warn(
            "bbn: branchwise_norm is no longer an option and is ignored: BBN runs the trunk once per branch, "
            "so each branch has its own batch statistics by construction. Remove it from the config.",
            FutureWarning,
            stacklevel=2,
        )
    options = dict(
        backbone=backbone, num_classes=num_classes, pretrained=pretrained, in_chans=in_chans, sampler=sampler,
        conventional_sampler=conventional_sampler, loss=loss, schedule=schedule, split_at=split_at,
    )
    samplers = {
        BRANCHES[0]: resolve("samplers", conventional_sampler),
        BRANCHES[1]: resolve("samplers", sampler),
    }
    loss_spec = resolve("losses", loss)
    schedule_spec = resolve("schedules", schedule)
    # Before the backbone: a typo in the schedule must not wait for (pretrained) weights.
    alpha_schedule = build_schedule(schedule_spec)
    backbone_spec = ComponentSpec.parse(backbone, kind="backbone")
    net = create_backbone(
        backbone_spec.as_dict(), pretrained=pretrained, num_classes=num_classes, in_chans=in_chans
    )
    model = BilateralWrapper(net, num_classes, split_at=split_at, schedule=alpha_schedule)
    model.recipe = Recipe(
        method="bbn", options=plain_options(options), backbone=backbone_spec, num_classes=num_classes, in_chans=in_chans,
        pretrained=pretrained, samplers=samplers, loss=loss_spec, schedule=schedule_spec,
    )
    return model
