"""``tiny_convnet``: a small plain ConvNet with timm's backbone interface.

Three stages of 3x3 convolution, batch norm and ReLU (16, 32 and 64 channels by
default; strides 1, 2, 2 after a stride-1 stem), global average pooling and a
linear classifier, in the VGG style of Simonyan and Zisserman ("Very Deep
Convolutional Networks for Large-Scale Image Recognition", ICLR 2015), cut down
for quick experiments on 28x28 and 32x32 images. It has no pretrained weights.

It exposes what lttoolkit expects of a backbone (timm's model interface):
``forward_features``, ``forward_head(x, pre_logits=...)``, ``num_features``,
``reset_classifier``, ``get_classifier`` and ``feature_info``, whose last
entry names the last stage, an ``nn.Sequential`` of blocks, so that BBN's
:class:`~lttoolkit.BilateralWrapper` duplicates the stage's last block.

>>> import torch
>>> model = tiny_convnet(num_classes=10)
>>> model(torch.zeros(2, 3, 32, 32)).shape
torch.Size([2, 10])
>>> [info["module"] for info in model.feature_info]
['stages.0', 'stages.1', 'stages.2']
"""

from __future__ import annotations

import numbers
from typing import Any, Sequence

from torch import Tensor, nn

from lttoolkit.errors import ConfigError, PretrainedWeightsError

__all__ = ["ConvBlock", "TinyConvNet", "tiny_convnet"]


class ConvBlock(nn.Module):
    """3x3 convolution (no bias), batch norm, ReLU.

    Args:
        in_chs: input channels.
        out_chs: output channels.
        stride: convolution stride.

    >>> import torch
    >>> ConvBlock(3, 8, stride=2)(torch.zeros(1, 3, 8, 8)).shape
    torch.Size([1, 8, 4, 4])
    """

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(out_chs)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.bn(self.conv(x)))


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ConfigError(f"tiny_convnet: {name} must be a whole number >= 1, got {value!r}")
    return int(value)


class TinyConvNet(nn.Module):
    """Stem, ``len(widths)`` stages of :class:`ConvBlock`, average pooling, linear classifier.

    Args:
        num_classes: classifier outputs; 0 leaves no classifier (``forward`` returns pooled features).
        in_chans: input channels.
        widths: channels of each stage; every stage after the first halves the resolution.
        blocks_per_stage: blocks in each stage (the first one changes channels and stride).
        drop_rate: dropout before the classifier.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        widths: Sequence[int] = (16, 32, 64),
        blocks_per_stage: int = 1,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if isinstance(widths, (str, bytes)) or not isinstance(widths, Sequence) or not widths:
            raise ConfigError(f"tiny_convnet: widths must be a non-empty list of channel counts, got {widths!r}")
        widths = [_positive_int("each of widths", w) for w in widths]
        blocks_per_stage = _positive_int("blocks_per_stage", blocks_per_stage)
        in_chans = _positive_int("in_chans", in_chans)
        if not 0.0 <= float(drop_rate) < 1.0:
            raise ConfigError(f"tiny_convnet: drop_rate must lie in [0, 1), got {drop_rate!r}")
        self.stem = ConvBlock(in_chans, widths[0])
        stages: list[nn.Module] = []
        self.feature_info: list[dict[str, Any]] = []
        channels, reduction = widths[0], 1
        for index, width in enumerate(widths):
            stride = 1 if index == 0 else 2
            reduction *= stride
            blocks = [ConvBlock(channels, width, stride)]
            blocks += [ConvBlock(width, width) for _ in range(blocks_per_stage - 1)]
            stages.append(nn.Sequential(*blocks))
            self.feature_info.append({"num_chs": width, "reduction": reduction, "module": f"stages.{index}"})
            channels = width
        self.stages = nn.Sequential(*stages)
        self.num_features = self.head_hidden_size = channels
        self.drop_rate = float(drop_rate)
        self.dropout = nn.Dropout(self.drop_rate)
        self.num_classes = 0
        self.fc: nn.Module = nn.Identity()
        self.reset_classifier(num_classes)
        self.pretrained_cfg = {"architecture": "tiny_convnet", "num_classes": num_classes,
                               "input_size": (in_chans, 32, 32), "first_conv": "stem.conv", "classifier": "fc"}

    def forward_features(self, x: Tensor) -> Tensor:
        """Feature map of the last stage, ``[B, num_features, H / 4, W / 4]`` with three stages."""
        return self.stages(self.stem(x))

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Average-pool a feature map; return the pooled features or the logits."""
        x = self.dropout(x.mean(dim=(2, 3)))
        return x if pre_logits else self.fc(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        """The classifier (``nn.Identity`` when there is none)."""
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the classifier by a fresh one with ``num_classes`` outputs (0: none).

        Args:
            num_classes: new number of outputs.
            global_pool: only ``"avg"`` (or ``None``) is supported.
        """
        if global_pool not in (None, "avg"):
            raise ConfigError(f"tiny_convnet only pools by average; got global_pool={global_pool!r}")
        if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 0:
            raise ConfigError(f"tiny_convnet: num_classes must be a whole number >= 0, got {num_classes!r}")
        self.num_classes = int(num_classes)
        self.fc = nn.Linear(self.num_features, self.num_classes) if self.num_classes > 0 else nn.Identity()


def tiny_convnet(
    pretrained: bool = False,
    num_classes: int = 1000,
    in_chans: int = 3,
    *,
    widths: Sequence[int] = (16, 32, 64),
    blocks_per_stage: int = 1,
    drop_rate: float = 0.0,
) -> TinyConvNet:
    """A small ConvNet for quick long-tail experiments (no pretrained weights).

    Args:
        pretrained: must be False: there are no published weights.
        num_classes: classifier outputs (0: none).
        in_chans: input channels.
        widths: channels of each stage.
        blocks_per_stage: blocks in each stage.
        drop_rate: dropout before the classifier.

    Returns:
        A :class:`TinyConvNet`.

    Raises:
        PretrainedWeightsError: ``pretrained=True``.

    >>> tiny_convnet(num_classes=5, in_chans=1, widths=[8, 16]).num_features
    16
    """
    if pretrained:
        raise PretrainedWeightsError(
            "tiny_convnet has no pretrained weights; pass pretrained=False (it trains from scratch in minutes)"
        )
    return TinyConvNet(num_classes=num_classes, in_chans=in_chans, widths=widths,
                       blocks_per_stage=blocks_per_stage, drop_rate=drop_rate)
