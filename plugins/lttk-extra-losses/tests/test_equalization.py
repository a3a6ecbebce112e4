"""Softmax equalization loss against hand-computed values and its identities."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lttk_extra_losses import EqualizationLoss, tail_classes
from lttoolkit.errors import ConfigError

COUNTS = [60, 30, 10]  # frequencies 0.6, 0.3, 0.1; the default threshold 1/3 makes classes 1 and 2 tail


def test_default_threshold_is_one_over_num_classes():
    loss = EqualizationLoss(COUNTS)
    assert loss.threshold == pytest.approx(1 / 3)
    assert loss.tail_mask.tolist() == [False, True, True]
    assert loss.gamma == 0.9


def test_explicit_threshold():
    assert tail_classes(COUNTS, lambda_=0.2).tolist() == [False, False, True]
    assert tail_classes(COUNTS, lambda_=0.0).tolist() == [False, False, False]
    assert EqualizationLoss(COUNTS, lambda_=0.7).tail_mask.tolist() == [True, True, True]


def test_gamma_one_drops_every_non_target_tail_class_by_hand():
    loss = EqualizationLoss(COUNTS, gamma=1.0)
    z = [1.0, 2.0, 3.0]
    got = loss.per_sample_loss(torch.tensor([z] * 3), torch.tensor([0, 1, 2])).tolist()
    expected = [
        0.0,  # target 0 (head): both tail classes leave the denominator, p = e^1 / e^1
        -math.log(math.exp(2) / (math.exp(1) + math.exp(2))),  # target 1: class 2 dropped, head kept
        -math.log(math.exp(3) / (math.exp(1) + math.exp(3))),  # target 2: class 1 dropped
    ]
    assert got == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("seed", range(3))
def test_gamma_zero_is_cross_entropy(seed):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(16, 5, generator=generator) * 3
    targets = torch.randint(0, 5, (16,), generator=generator)
    loss = EqualizationLoss([1000, 300, 50, 7, 1], gamma=0.0)
    torch.testing.assert_close(loss(logits, targets), F.cross_entropy(logits, targets))


def test_no_tail_class_is_cross_entropy():
    logits, targets = torch.randn(8, 3), torch.randint(0, 3, (8,))
    loss = EqualizationLoss(COUNTS, lambda_=0.0, gamma=1.0)
    torch.testing.assert_close(loss(logits, targets), F.cross_entropy(logits, targets))


def test_bernoulli_rate_matches_gamma():
    # Two classes, class 1 tail. A head sample with zero logits loses log 2 when class 1 stays
    # (probability 1 - gamma) and 0 when it is dropped: E[loss] = (1 - gamma) log 2.
    gamma, batch = 0.9, 20000
    torch.manual_seed(0)
    loss = EqualizationLoss([90, 10], gamma=gamma)
    value = loss(torch.zeros(batch, 2), torch.zeros(batch, dtype=torch.long)).item()
    std_error = math.log(2) * math.sqrt(gamma * (1 - gamma) / batch)
    assert value == pytest.approx((1 - gamma) * math.log(2), abs=5 * std_error)


def test_tail_targets_are_never_dropped():
    # A tail sample's own class stays in its denominator: the loss is always finite and positive here.
    torch.manual_seed(0)
    loss = EqualizationLoss(COUNTS, gamma=1.0)
    values = loss.per_sample_loss(torch.zeros(64, 3), torch.full((64,), 2))
    torch.testing.assert_close(values, torch.full((64,), math.log(2)))  # class 1 dropped, class 0 kept


def test_same_seed_same_loss():
    logits, targets = torch.randn(32, 3), torch.randint(0, 3, (32,))
    loss = EqualizationLoss(COUNTS, gamma=0.5)
    torch.manual_seed(7)
    first = loss(logits, targets)
    torch.manual_seed(7)
    assert torch.equal(loss(logits, targets), first)


def test_gradients_finite_and_zero_for_dropped_classes():
    loss = EqualizationLoss(COUNTS, gamma=1.0)
    logits = torch.tensor([[0.5, 40.0, -40.0], [1e4, -1e4, 0.0]], requires_grad=True)
    value = loss(logits, torch.tensor([0, 2]))
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(logits.grad).all()
    # Row 0 (head target): both tail classes dropped, p_0 = 1, so every gradient is 0.
    assert logits.grad[0].tolist() == [0.0, 0.0, 0.0]
    # Row 1 (target 2): class 1 dropped -> zero gradient; the rest is CE over classes {0, 2} / batch of 2.
    assert logits.grad[1, 1].item() == 0.0
    assert logits.grad[1, 0].item() == pytest.approx(0.5, abs=1e-6)
    assert logits.grad[1, 2].item() == pytest.approx(-0.5, abs=1e-6)


@pytest.mark.parametrize("options", [{"gamma": 1.5}, {"gamma": -0.1}, {"lambda_": 2.0}, {"lambda_": "low"}])
def test_invalid_options_raise_config_error(options):
    with pytest.raises(ConfigError):
        EqualizationLoss(COUNTS, **options)
