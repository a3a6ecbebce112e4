"""``__COMPONENT__``: a single-branch model with class-balanced sampling, an example lttoolkit method.

Class-balanced sampling (every class equally likely, then an image uniformly
within it) with cross-entropy on a plain backbone: a classic re-sampling
baseline for long-tailed recognition (see Kang et al., "Decoupling
Representation and Classifier for Long-Tailed Recognition", ICLR 2020).

Protocol (lttoolkit ``docs/plugins.md``): ``factory(**options)`` returning an
``nn.Module`` that carries ``.recipe`` and implements the method protocol
(``lttoolkit.methods.protocol.TrainableMethod``: ``on_train_start``,
``epoch_stats``, ``training_step``); lttoolkit's ``single_branch`` helper builds exactly that.
"""

from __future__ import annotations

from typing import Any, Mapping

from lttoolkit.methods import SingleBranchModel
from lttoolkit.methods.single_branch import single_branch

__all__ = ["__ATTR__"]

Spec = str | Mapping[str, Any]


def __ATTR__(
    backbone: Spec = "resnet32_cifar",
    *,
    num_classes: int = 1000,
    pretrained: bool = False,
    in_chans: int = 3,
    sampler: Spec = "class_balanced",
    loss: Spec = "cross_entropy",
) -> SingleBranchModel:
    """Plain backbone, class-balanced sampling, cross-entropy.

    Args:
        backbone: any backbone name or ``{"type": name, **options}``.
        num_classes: classifier outputs.
        pretrained: load the backbone's pretrained weights.
        in_chans: input channels.
        sampler: the training sampler.
        loss: the loss.

    Returns:
        A ``SingleBranchModel`` carrying ``.recipe``.
    """
    return single_branch("__COMPONENT__", backbone, num_classes=num_classes, pretrained=pretrained,
                         in_chans=in_chans, sampler=sampler, loss=loss)
