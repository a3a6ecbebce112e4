"""Shared fixtures: a small backbone with timm's interface, registered as a plugin would be.

The suite runs torch on one thread (and tells subprocesses to): on a shared 2-core machine
two spinning OpenMP threads per process made tiny training steps 5-20x slower.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

from typing import Any, Iterator  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402

torch.set_num_threads(1)

from lttoolkit.errors import PretrainedWeightsError  # noqa: E402
from lttoolkit.registry import BACKBONES, registration_source  # noqa: E402

PLUGIN_BACKBONE = "tiny_plugin_net"


class _TinyBlock(nn.Module):
    def __init__(self, in_chs: int, out_chs: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_chs, out_chs, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_chs)
        self.conv2 = nn.Conv2d(out_chs, out_chs, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chs)
        reshape = stride != 1 or in_chs != out_chs
        self.shortcut = nn.Conv2d(in_chs, out_chs, 1, stride=stride, bias=False) if reshape else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return torch.relu(out + self.shortcut(x))


class TinyPluginNet(nn.Module):
    """Two stages of two residual blocks with timm's backbone interface, written from scratch.

    A batch norm follows the last block, so in training it must see each
    branch's images apart for BBN's two passes to be reproduced.
    """

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, width: int = 8) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
        )
        self.stages = nn.Sequential(
            nn.Sequential(_TinyBlock(width, width), _TinyBlock(width, width)),
            nn.Sequential(_TinyBlock(width, 2 * width, stride=2), _TinyBlock(2 * width, 2 * width)),
        )
        self.norm = nn.BatchNorm2d(2 * width)
        self.num_features = 2 * width
        self.feature_info = [
            {"num_chs": width, "reduction": 1, "module": "stages.0"},
            {"num_chs": 2 * width, "reduction": 2, "module": "stages.1"},
        ]
        self.reset_classifier(num_classes)

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()

    def forward_features(self, x: Tensor) -> Tensor:
        return self.norm(self.stages(self.stem(x)))

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = x.mean(dim=(2, 3))
        return x if pre_logits else self.head(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


def tiny_plugin_net(
    pretrained: bool = False, num_classes: int = 1000, in_chans: int = 3, **options: Any
) -> TinyPluginNet:
    """A tiny residual CNN from a (fake) plugin."""
    if pretrained:
        raise PretrainedWeightsError(f"{PLUGIN_BACKBONE} has no pretrained weights; pass pretrained=False")
    return TinyPluginNet(num_classes=num_classes, in_chans=in_chans, **options)


@pytest.fixture(scope="module")
def plugin_backbone() -> Iterator[str]:
    """Register :class:`TinyPluginNet` in BACKBONES as a plugin module would; removed afterwards."""
    with registration_source("module tests_fake_plugin"):
        BACKBONES.register(tiny_plugin_net, name=PLUGIN_BACKBONE)
    try:
        assert BACKBONES.entry(PLUGIN_BACKBONE).is_plugin
        yield PLUGIN_BACKBONE
    finally:
        BACKBONES.unregister(PLUGIN_BACKBONE)
