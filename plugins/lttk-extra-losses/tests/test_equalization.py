"""Equalization loss (sigmoid form: the authors' eql.detectron2; softmax form) against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lttk_extra_losses import EqualizationLoss, tail_classes
from lttoolkit.errors import ConfigError

COUNTS = [60, 30, 10]  # frequencies 0.6, 0.3, 0.1; the default threshold 1/3 makes classes 1 and 2 tail


def SoftmaxEqualization(*args, **kwargs):  # noqa: N802 (reads as the class it builds)
    return EqualizationLoss(*args, form="softmax", **kwargs)


def _bce(z: float, y: float) -> float:
    return max(z, 0.0) - z * y + math.log1p(math.exp(-abs(z)))


def test_sigmoid_form_is_the_default_and_matches_the_authors_formula_by_hand():
    # eql.detectron2 fast_rcnn.py: eql_w = 1 - E * T(f) * (1 - y); loss = sum(BCE * eql_w) / n_i, E = 1.
    loss = EqualizationLoss(COUNTS)
    assert loss.form == "sigmoid"
    logits = [[1.0, -2.0, 0.5], [0.3, 2.0, -1.0], [-0.5, 0.0, 3.0]]
    targets = [0, 1, 2]
    tail = [0.0, 1.0, 1.0]
    total = 0.0
    for row, target in zip(logits, targets):
        for j, z in enumerate(row):
            y = 1.0 if j == target else 0.0
            total += (1 - tail[j] * (1 - y)) * _bce(z, y)
    expected = total / len(targets)
    value = loss(torch.tensor(logits, dtype=torch.float64), torch.tensor(targets))
    assert value.item() == pytest.approx(expected, rel=1e-12)
    # Row by row: target 0 keeps only its own column; targets 1 and 2 keep themselves and the head class 0.
    per_sample = loss.per_sample_loss(torch.tensor(logits, dtype=torch.float64), torch.tensor(targets)).tolist()
    assert per_sample == pytest.approx([_bce(1.0, 1), _bce(0.3, 0) + _bce(2.0, 1), _bce(-0.5, 0) + _bce(3.0, 1)])


def test_sigmoid_form_without_tail_classes_is_plain_binary_cross_entropy():
    logits, targets = torch.randn(8, 3, dtype=torch.float64), torch.randint(0, 3, (8,))
    loss = EqualizationLoss(COUNTS, lambda_=0.0)
    expected = F.binary_cross_entropy_with_logits(logits, F.one_hot(targets, 3).double(), reduction="sum") / 8
    torch.testing.assert_close(loss(logits, targets), expected)


def test_sigmoid_form_gives_no_gradient_to_non_target_tail_classes_and_is_deterministic():
    loss = EqualizationLoss(COUNTS)
    logits = torch.randn(4, 3, requires_grad=True)
    targets = torch.tensor([0, 0, 1, 2])
    loss(logits, targets).backward()
    assert logits.grad[0, 1] == 0 and logits.grad[0, 2] == 0 and logits.grad[2, 2] == 0 and logits.grad[3, 1] == 0
    assert logits.grad[2, 0] != 0  # the head class still gets its negative gradient
    torch.manual_seed(0)
    first = loss(logits, targets)
    torch.manual_seed(1)
    assert torch.equal(loss(logits, targets), first)  # no Bernoulli draw in the sigmoid form


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
    loss = SoftmaxEqualization(COUNTS, gamma=1.0)
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
    loss = SoftmaxEqualization([1000, 300, 50, 7, 1], gamma=0.0)
    torch.testing.assert_close(loss(logits, targets), F.cross_entropy(logits, targets))


def test_no_tail_class_is_cross_entropy():
    logits, targets = torch.randn(8, 3), torch.randint(0, 3, (8,))
    loss = SoftmaxEqualization(COUNTS, lambda_=0.0, gamma=1.0)
    torch.testing.assert_close(loss(logits, targets), F.cross_entropy(logits, targets))


def test_bernoulli_rate_matches_gamma():
    # Two classes, class 1 tail. A head sample with zero logits loses log 2 when class 1 stays
    # (probability 1 - gamma) and 0 when it is dropped: E[loss] = (1 - gamma) log 2.
    gamma, batch = 0.9, 20000
    torch.manual_seed(0)
    loss = SoftmaxEqualization([90, 10], gamma=gamma)
    value = loss(torch.zeros(batch, 2), torch.zeros(batch, dtype=torch.long)).item()
    std_error = math.log(2) * math.sqrt(gamma * (1 - gamma) / batch)
    assert value == pytest.approx((1 - gamma) * math.log(2), abs=5 * std_error)


def test_tail_targets_are_never_dropped():
    # A tail sample's own class stays in its denominator: the loss is always finite and positive here.
    torch.manual_seed(0)
    loss = SoftmaxEqualization(COUNTS, gamma=1.0)
    values = loss.per_sample_loss(torch.zeros(64, 3), torch.full((64,), 2))
    torch.testing.assert_close(values, torch.full((64,), math.log(2)))  # class 1 dropped, class 0 kept


def test_same_seed_same_loss():
    logits, targets = torch.randn(32, 3), torch.randint(0, 3, (32,))
    loss = SoftmaxEqualization(COUNTS, gamma=0.5)
    torch.manual_seed(7)
    first = loss(logits, targets)
    torch.manual_seed(7)
    assert torch.equal(loss(logits, targets), first)


def test_gradients_finite_and_zero_for_dropped_classes():
    loss = SoftmaxEqualization(COUNTS, gamma=1.0)
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


@pytest.mark.parametrize("options", [{"gamma": 1.5}, {"gamma": -0.1}, {"lambda_": 2.0}, {"lambda_": "low"},
                                     {"form": "focal"}])
def test_invalid_options_raise_config_error(options):
    with pytest.raises(ConfigError):
        EqualizationLoss(COUNTS, **options)
