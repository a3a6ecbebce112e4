"""``__COMPONENT__``: a two-stage plain ConvNet, an example lttoolkit backbone.

Protocol (lttoolkit ``docs/plugins.md``): ``factory(pretrained=False,
num_classes=1000, in_chans=3, **options)`` returning an ``nn.Module`` with
timm's interface: ``forward_features``, ``forward_head(x, pre_logits=...)``,
``num_features``, ``reset_classifier``, ``get_classifier`` and
``feature_info``, whose last entry names the module (an ``nn.Sequential`` of
blocks) where BBN's wrapper duplicates the last block.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from lttoolkit.errors import PretrainedWeightsError

__all__ = ["__ATTR__", "Block"]


class Block(nn.Module):
    """3x3 convolution, batch norm, ReLU."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, 3, stride=stride, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(out_chs)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.bn(self.conv(x)))


class Network(nn.Module):
    """Stem, two stages of two blocks (``width`` and ``2 * width`` channels), average pooling, classifier.

    Args:
        num_classes: classifier outputs (0: none).
        in_chans: input channels.
        width: channels of the first stage.
    """

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, width: int = 16) -> None:
        super().__init__()
        self.stem = Block(in_chans, width)
        self.stages = nn.Sequential(
            nn.Sequential(Block(width, width), Block(width, width)),
            nn.Sequential(Block(width, 2 * width, stride=2), Block(2 * width, 2 * width)),
        )
        self.num_features = 2 * width
        self.feature_info: list[dict[str, Any]] = [
            {"num_chs": width, "reduction": 1, "module": "stages.0"},
            {"num_chs": 2 * width, "reduction": 2, "module": "stages.1"},
        ]
        self.fc: nn.Module = nn.Identity()
        self.reset_classifier(num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.stages(self.stem(x))

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = x.mean(dim=(2, 3))
        return x if pre_logits else self.fc(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()


def __ATTR__(pretrained: bool = False, num_classes: int = 1000, in_chans: int = 3, *, width: int = 16) -> Network:
    """A small two-stage ConvNet (no pretrained weights).

    Args:
        pretrained: must be False: there are no weights to load.
        num_classes: classifier outputs (0: none).
        in_chans: input channels.
        width: channels of the first stage.

    Returns:
        A :class:`Network`.

    >>> import torch
    >>> __ATTR__(num_classes=10)(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 10])
    """
    if pretrained:
        raise PretrainedWeightsError("__COMPONENT__ has no pretrained weights; pass pretrained=False")
    return Network(num_classes=num_classes, in_chans=in_chans, width=width)
