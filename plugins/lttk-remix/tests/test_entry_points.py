"""The entry points this distribution declares resolve to factories with the pinned protocols."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import torch
from torch import nn

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def declared(group: str) -> dict[str, str]:
    return tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]["entry-points"][group]


def resolve(value: str):
    module, _, attr = value.partition(":")
    return getattr(importlib.import_module(module), attr)


def test_declared_groups():
    assert declared("lttoolkit.methods") == {"remix": "lttk_remix.method:remix"}
    assert declared("lttoolkit.backbones") == {"tiny_convnet": "lttk_remix.backbone:tiny_convnet"}


def test_backbone_entry_point_follows_the_protocol():
    factory = resolve(declared("lttoolkit.backbones")["tiny_convnet"])
    model = factory(pretrained=False, num_classes=7, in_chans=1)
    assert isinstance(model, nn.Module)
    assert model.eval()(torch.zeros(1, 1, 28, 28)).shape == (1, 7)


def test_method_entry_point_follows_the_protocol():
    factory = resolve(declared("lttoolkit.methods")["remix"])
    model = factory(backbone="resnet20_cifar", num_classes=4)
    from lttoolkit.methods.protocol import missing_members

    assert missing_members(model) == []
