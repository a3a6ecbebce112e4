"""Contract tests for ``__COMPONENT__`` (__KIND__ plugin of the ``__DIST__`` distribution)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lttoolkit.errors import ConfigError

from __PACKAGE__ import __ATTR__


def test_value_by_hand():
    loss = __ATTR__([3, 1], tau=1.0)  # prior [3/4, 1/4]
    # zero logits: loss = -log(prior[target])
    assert loss(torch.zeros(1, 2), torch.tensor([1])).item() == pytest.approx(1.3862944)  # log 4
    assert loss(torch.zeros(1, 2), torch.tensor([0])).item() == pytest.approx(0.2876821)  # log 4/3


def test_tau_zero_is_cross_entropy():
    logits, targets = torch.randn(8, 4), torch.randint(0, 4, (8,))
    torch.testing.assert_close(__ATTR__([50, 20, 5, 1], tau=0.0)(logits, targets), F.cross_entropy(logits, targets))


def test_protocol_scalar_finite_gradients_and_set_epoch():
    loss = __ATTR__(class_counts=[100, 10, 1])  # factory(class_counts, **options)
    assert isinstance(loss, torch.nn.Module)
    logits = torch.randn(5, 3, requires_grad=True)
    value = loss(logits, torch.tensor([0, 1, 2, 0, 1]))
    assert value.dim() == 0 and torch.isfinite(value)
    value.backward()
    assert torch.isfinite(logits.grad).all()
    loss.set_epoch(0, 10)


def test_invalid_option():
    with pytest.raises(ConfigError):
        __ATTR__([10, 1], tau=-1.0)
