"""tiny_convnet: timm's backbone interface, shapes, and the split BBN's wrapper needs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lttk_remix import TinyConvNet, tiny_convnet
from lttoolkit import BilateralWrapper, find_last_block
from lttoolkit.backbones import check_backbone_interface
from lttoolkit.errors import ConfigError, PretrainedWeightsError


def test_has_the_timm_backbone_interface():
    check_backbone_interface(tiny_convnet(num_classes=10), name="tiny_convnet")


def test_shapes():
    model = tiny_convnet(num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32)
    features = model.forward_features(x)
    assert features.shape == (2, 64, 8, 8)
    assert model.forward_head(features, pre_logits=True).shape == (2, 64)
    assert model(x).shape == (2, 10)
    assert model.num_features == 64
    assert [info["num_chs"] for info in model.feature_info] == [16, 32, 64]
    assert [info["reduction"] for info in model.feature_info] == [1, 2, 4]


def test_feature_info_names_existing_stages():
    model = tiny_convnet(widths=[8, 16, 24, 32])
    for info in model.feature_info:
        module = model.get_submodule(info["module"])
        assert isinstance(module, nn.Sequential)
        assert module[-1].conv.out_channels == info["num_chs"]


def test_grey_28x28_input():
    model = tiny_convnet(num_classes=10, in_chans=1).eval()
    assert model(torch.randn(3, 1, 28, 28)).shape == (3, 10)


def test_reset_classifier():
    model = tiny_convnet(num_classes=10)
    assert isinstance(model.get_classifier(), nn.Linear)
    model.reset_classifier(0)
    assert isinstance(model.get_classifier(), nn.Identity)
    assert model.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 64)
    model.reset_classifier(5)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 5)
    with pytest.raises(ConfigError):
        model.reset_classifier(3, global_pool="max")


@pytest.mark.parametrize(("blocks_per_stage", "expected"), [(1, "stages.2.0"), (2, "stages.2.1")])
def test_bilateral_wrapper_splits_the_last_block(blocks_per_stage, expected):
    backbone = tiny_convnet(num_classes=10, blocks_per_stage=blocks_per_stage)
    assert find_last_block(backbone) == expected
    wrapper = BilateralWrapper(backbone, num_classes=10)
    assert wrapper.split_at == expected
    assert wrapper.classifier.in_features == 2 * 64
    assert wrapper.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    wrapper.train()
    logits = wrapper(torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32), alpha=0.7)
    assert logits.shape == (4, 10)
    logits.sum().backward()
    block = wrapper.bilateral_block
    assert block.conventional.conv.weight.grad is not None and block.rebalancing.conv.weight.grad is not None


def test_pretrained_is_refused():
    with pytest.raises(PretrainedWeightsError, match="no pretrained weights"):
        tiny_convnet(pretrained=True)


@pytest.mark.parametrize("options", [{"widths": []}, {"widths": "16,32"}, {"widths": [16, 0]},
                                     {"blocks_per_stage": 0}, {"drop_rate": 1.0}])
def test_invalid_options_raise_config_error(options):
    with pytest.raises(ConfigError, match="tiny_convnet"):
        TinyConvNet(**options)
