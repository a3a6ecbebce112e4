"""Contract tests for ``__COMPONENT__`` (__KIND__ plugin of the ``__DIST__`` distribution)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lttoolkit import BilateralWrapper
from lttoolkit.backbones import check_backbone_interface
from lttoolkit.errors import PretrainedWeightsError

from __PACKAGE__ import __ATTR__


def test_timm_interface():
    model = __ATTR__(pretrained=False, num_classes=10, in_chans=3)  # the factory protocol
    check_backbone_interface(model, name="__COMPONENT__")
    x = torch.randn(2, 3, 32, 32)
    assert model.eval()(x).shape == (2, 10)
    assert model.forward_head(model.forward_features(x), pre_logits=True).shape == (2, model.num_features)
    model.reset_classifier(0)
    assert isinstance(model.get_classifier(), nn.Identity)


def test_grey_input():
    assert __ATTR__(num_classes=3, in_chans=1).eval()(torch.randn(2, 1, 28, 28)).shape == (2, 3)


def test_bbn_wrapper_can_split_it():
    wrapper = BilateralWrapper(__ATTR__(num_classes=10), num_classes=10)
    assert wrapper.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    logits = wrapper.train()(torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32), alpha=0.5)
    assert logits.shape == (4, 10)


def test_pretrained_is_refused():
    with pytest.raises(PretrainedWeightsError):
        __ATTR__(pretrained=True)
