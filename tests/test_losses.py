"""Tests of the builtin long-tail losses (lttoolkit.losses).

Expected values are computed here with plain ``math`` on tiny examples, not by
calling the code under test; identities tie the losses to cross-entropy.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from lttoolkit.errors import ConfigError, UnknownOptionError
from lttoolkit.losses import (
    BalancedSoftmaxLoss,
    ClassBalancedLoss,
    CrossEntropyLoss,
    FocalLoss,
    LabelSmoothingLoss,
    LDAMLoss,
    LogitAdjustedLoss,
    adjust_logits,
    ldam_margins,
    per_class_weights,
)
from lttoolkit.registry import BUILTIN, LOSSES

# A tiny fixed example: 3 classes, 2 samples.
COUNTS = [100, 10, 1]
LOGITS = [[2.0, 0.5, -1.0], [0.0, 1.0, 0.0]]
TARGETS = [0, 2]

BUILTIN_LOSSES = [e.name for e in LOSSES.entries() if e.source == BUILTIN]
DRW_LOSSES = ["cross_entropy", "focal", "ldam", "label_smoothing"]


def _tensors(logits=LOGITS, targets=TARGETS):
    return torch.tensor(logits, dtype=torch.float64), torch.tensor(targets)


def _log_softmax(row: list[float]) -> list[float]:
    top = max(row)
    log_z = top + math.log(sum(math.exp(v - top) for v in row))
    return [v - log_z for v in row]


def _ce(row: list[float], target: int) -> float:
    return -_log_softmax(row)[target]


def _weighted_mean(losses: list[float], weights: list[float]) -> float:
    return sum(w * l for w, l in zip(weights, losses)) / sum(weights)


def _batch_mean(losses: list[float], weights: list[float]) -> float:
    return sum(w * l for w, l in zip(weights, losses)) / len(losses)


def _normalise(raw: list[float]) -> list[float]:
    return [r * len(raw) / sum(raw) for r in raw]


def _random_batch(num_classes: int = 5, batch: int = 16, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, num_classes, generator=gen, dtype=torch.float64) * 3
    targets = torch.randint(0, num_classes, (batch,), generator=gen)
    return logits, targets


RANDOM_COUNTS = [500, 120, 40, 9, 2]


# ---------------------------------------------------------------- hand-computed values
def test_cross_entropy_matches_hand_value():
    expected = (_ce(LOGITS[0], 0) + _ce(LOGITS[1], 2)) / 2
    assert CrossEntropyLoss(COUNTS)(*_tensors()).item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    ("reweight", "raw"),
    [
        ("inverse", [1 / 100, 1 / 10, 1 / 1]),
        ("sqrt_inverse", [1 / math.sqrt(100), 1 / math.sqrt(10), 1.0]),
        ("effective_number", [(1 - 0.9) / (1 - 0.9**n) for n in COUNTS]),
    ],
)
def test_reweighted_cross_entropy_matches_hand_value(reweight, raw):
    weights = _normalise(raw)
    loss = CrossEntropyLoss(COUNTS, reweight=reweight, beta=0.9)
    assert loss.class_weights.tolist() == pytest.approx(weights, rel=1e-6)
    assert loss.class_weights.sum().item() == pytest.approx(3.0, rel=1e-6)
    expected = _weighted_mean([_ce(LOGITS[0], 0), _ce(LOGITS[1], 2)], [weights[0], weights[2]])
    assert loss(*_tensors()).item() == pytest.approx(expected, rel=1e-6)


def test_no_reweighting_gives_unit_weights():
    assert per_class_weights(COUNTS, "none").tolist() == [1.0, 1.0, 1.0]
    assert CrossEntropyLoss(COUNTS).current_weights() is None


def test_weighted_mean_uses_torch_cross_entropy_normalisation():
    logits, targets = _random_batch()
    loss = CrossEntropyLoss(RANDOM_COUNTS, reweight="inverse")
    reference = F.cross_entropy(logits, targets, weight=loss.class_weights.double())
    torch.testing.assert_close(loss(logits, targets), reference)


def test_focal_matches_hand_value():
    per_sample = []
    for row, target in zip(LOGITS, TARGETS):
        p = math.exp(_log_softmax(row)[target])
        per_sample.append(-((1 - p) ** 2) * math.log(p))
    loss = FocalLoss(COUNTS, gamma=2.0)
    assert loss(*_tensors()).item() == pytest.approx(sum(per_sample) / 2, rel=1e-10)


def test_focal_unweighted_equals_ldam_drw_formula():
    # kaidic/LDAM-DRW losses.py: ce = F.cross_entropy(reduction="none"); p = exp(-ce); mean((1 - p)^gamma * ce)
    gamma = 1.5
    ce = [_ce(row, t) for row, t in zip(LOGITS, TARGETS)]
    expected = sum((1 - math.exp(-c)) ** gamma * c for c in ce) / len(ce)
    assert FocalLoss(COUNTS, gamma=gamma)(*_tensors()).item() == pytest.approx(expected, rel=1e-10)


def test_class_balanced_softmax_and_focal_match_hand_values():
    beta, gamma = 0.99, 1.5
    weights = _normalise([(1 - beta) / (1 - beta**n) for n in COUNTS])
    sample_weights = [weights[t] for t in TARGETS]
    ce = [_ce(row, t) for row, t in zip(LOGITS, TARGETS)]
    focal = []
    for row, t in zip(LOGITS, TARGETS):
        p = math.exp(_log_softmax(row)[t])
        focal.append(-((1 - p) ** gamma) * math.log(p))
    # The authors' reduction: sum_i w[y_i] l_i / B (the default) ...
    softmax_loss = ClassBalancedLoss(COUNTS, beta=beta)
    focal_loss = ClassBalancedLoss(COUNTS, beta=beta, base="focal", gamma=gamma)
    assert softmax_loss(*_tensors()).item() == pytest.approx(_batch_mean(ce, sample_weights), rel=1e-6)
    assert focal_loss(*_tensors()).item() == pytest.approx(_batch_mean(focal, sample_weights), rel=1e-6)
    # ... and F.cross_entropy(weight=...)'s sum_i w[y_i] l_i / sum_i w[y_i] by option.
    softmax_loss = ClassBalancedLoss(COUNTS, beta=beta, normalize="weights")
    focal_loss = ClassBalancedLoss(COUNTS, beta=beta, base="focal", gamma=gamma, normalize="weights")
    assert softmax_loss(*_tensors()).item() == pytest.approx(_weighted_mean(ce, sample_weights), rel=1e-6)
    assert focal_loss(*_tensors()).item() == pytest.approx(_weighted_mean(focal, sample_weights), rel=1e-6)


@pytest.mark.parametrize("base", ["sigmoid", "sigmoid_focal"])
def test_class_balanced_sigmoid_variants_match_hand_values(base):
    beta, gamma = 0.999, 2.0
    weights = _normalise([(1 - beta) / (1 - beta**n) for n in COUNTS])
    per_sample = []
    for row, target in zip(LOGITS, TARGETS):
        total = 0.0
        for c, z in enumerate(row):
            p = 1 / (1 + math.exp(-z))
            p_t = p if c == target else 1 - p
            modulator = (1 - p_t) ** gamma if base == "sigmoid_focal" else 1.0
            total += -modulator * math.log(p_t)
        per_sample.append(total)
    expected = _batch_mean(per_sample, [weights[t] for t in TARGETS])
    loss = ClassBalancedLoss(COUNTS, beta=beta, base=base, gamma=gamma)
    assert loss(*_tensors()).item() == pytest.approx(expected, rel=1e-6)
    by_weights = ClassBalancedLoss(COUNTS, beta=beta, base=base, gamma=gamma, normalize="weights")
    assert by_weights(*_tensors()).item() == pytest.approx(
        _weighted_mean(per_sample, [weights[t] for t in TARGETS]), rel=1e-6)


def test_class_balanced_focal_equals_the_authors_tensorflow_formula():
    # richardaecn/class-balanced-loss, src/cifar_main.py: weights = (1 - beta) / (1 - beta^N), scaled to
    # sum to C; modulator = exp(-gamma * y * z - gamma * log1p(exp(-z))); loss = sum(w * modulator * BCE)
    # / sum(labels) (one positive label per sample: the batch size).
    beta, gamma = 0.9999, 1.0
    raw = [(1 - beta) / (1 - beta**n) for n in COUNTS]
    weights = [r / sum(raw) * len(COUNTS) for r in raw]
    total = 0.0
    for row, target in zip(LOGITS, TARGETS):
        for c, z in enumerate(row):
            y = 1.0 if c == target else 0.0
            bce = max(z, 0) - z * y + math.log1p(math.exp(-abs(z)))  # tf.nn.sigmoid_cross_entropy_with_logits
            modulator = math.exp(-gamma * y * z - gamma * math.log1p(math.exp(-z)))
            total += weights[target] * modulator * bce
    expected = total / len(TARGETS)
    loss = ClassBalancedLoss(COUNTS, beta=beta, base="sigmoid_focal", gamma=gamma)
    assert loss(*_tensors()).item() == pytest.approx(expected, rel=1e-6)  # the class weights are float32


def test_class_balanced_batch_and_weights_normalisations_differ_by_the_mean_weight():
    logits, targets = _random_batch(num_classes=5, batch=16, seed=3)
    batch = ClassBalancedLoss(RANDOM_COUNTS, beta=0.999)(logits, targets)
    by_weights = ClassBalancedLoss(RANDOM_COUNTS, beta=0.999, normalize="weights")(logits, targets)
    mean_weight = ClassBalancedLoss(RANDOM_COUNTS, beta=0.999).class_weights.double()[targets].mean()
    torch.testing.assert_close(batch, by_weights * mean_weight)
    with pytest.raises(ConfigError, match="normalize must be one of 'batch', 'weights'"):
        ClassBalancedLoss(RANDOM_COUNTS, normalize="sum")


def test_ldam_matches_hand_value():
    max_m, s = 0.4, 2.0
    margins = [max_m * (1 / n) ** 0.25 / (1 / 1) ** 0.25 for n in COUNTS]  # rarest class has N = 1
    per_sample = []
    for row, target in zip(LOGITS, TARGETS):
        shifted = [s * (v - margins[target] if c == target else v) for c, v in enumerate(row)]
        per_sample.append(_ce(shifted, target))
    loss = LDAMLoss(COUNTS, max_m=max_m, s=s)
    assert loss(*_tensors()).item() == pytest.approx(sum(per_sample) / 2, rel=1e-6)


def test_balanced_softmax_matches_hand_value():
    per_sample = [_ce([v + math.log(n) for v, n in zip(row, COUNTS)], t) for row, t in zip(LOGITS, TARGETS)]
    loss = BalancedSoftmaxLoss(COUNTS)
    assert loss(*_tensors()).item() == pytest.approx(sum(per_sample) / 2, rel=1e-6)


def test_logit_adjusted_matches_hand_value():
    tau = 0.5
    total = sum(COUNTS)
    per_sample = [
        _ce([v + tau * math.log(n / total) for v, n in zip(row, COUNTS)], t) for row, t in zip(LOGITS, TARGETS)
    ]
    loss = LogitAdjustedLoss(COUNTS, tau=tau)
    assert loss(*_tensors()).item() == pytest.approx(sum(per_sample) / 2, rel=1e-6)


def test_adjust_logits_subtracts_tau_log_prior():
    tau = 0.7
    total = sum(COUNTS)
    expected = [[v - tau * math.log(n / total) for v, n in zip(row, COUNTS)] for row in LOGITS]
    logits, _ = _tensors()
    adjusted = adjust_logits(logits, COUNTS, tau=tau)
    assert adjusted.dtype == logits.dtype
    assert adjusted.tolist() == [pytest.approx(row, rel=1e-6) for row in expected]


def test_label_smoothing_matches_hand_value():
    eps, num_classes = 0.2, 3
    per_sample = []
    for row, target in zip(LOGITS, TARGETS):
        log_p = _log_softmax(row)
        q = [(1 - eps) * (c == target) + eps / num_classes for c in range(num_classes)]
        per_sample.append(-sum(qc * lp for qc, lp in zip(q, log_p)))
    loss = LabelSmoothingLoss(COUNTS, smoothing=eps)
    assert loss(*_tensors()).item() == pytest.approx(sum(per_sample) / 2, rel=1e-10)


def test_label_smoothing_agrees_with_torch_when_unweighted():
    logits, targets = _random_batch()
    loss = LabelSmoothingLoss(RANDOM_COUNTS, smoothing=0.15)
    torch.testing.assert_close(loss(logits, targets), F.cross_entropy(logits, targets, label_smoothing=0.15))


# ---------------------------------------------------------------- identities
@pytest.mark.parametrize(
    "loss",
    [
        FocalLoss(RANDOM_COUNTS, gamma=0.0),
        ClassBalancedLoss(RANDOM_COUNTS, beta=0.0),
        ClassBalancedLoss(RANDOM_COUNTS, beta=0.0, base="focal", gamma=0.0),
        LogitAdjustedLoss(RANDOM_COUNTS, tau=0.0),
        LabelSmoothingLoss(RANDOM_COUNTS, smoothing=0.0),
        LDAMLoss(RANDOM_COUNTS, max_m=0.0, s=1.0),
        BalancedSoftmaxLoss([7] * len(RANDOM_COUNTS)),
        LogitAdjustedLoss([7] * len(RANDOM_COUNTS), tau=2.0),
    ],
    ids=repr,
)
def test_degenerate_settings_equal_cross_entropy(loss):
    logits, targets = _random_batch()
    torch.testing.assert_close(loss(logits, targets), F.cross_entropy(logits, targets), rtol=1e-12, atol=1e-12)


def test_logit_adjusted_with_tau_one_equals_balanced_softmax():
    # log pi and log N differ by a constant per row, which softmax ignores.
    logits, targets = _random_batch()
    torch.testing.assert_close(
        LogitAdjustedLoss(RANDOM_COUNTS, tau=1.0)(logits, targets), BalancedSoftmaxLoss(RANDOM_COUNTS)(logits, targets)
    )


def test_ldam_margins_follow_quarter_power_law():
    counts = torch.tensor([1000.0, 81.0, 16.0, 5.0])
    margins = ldam_margins(counts.long(), max_m=0.3).double()
    assert margins.max().item() == pytest.approx(0.3, rel=1e-6)
    assert margins.argmax().item() == 3  # the rarest class
    products = margins * counts.double().pow(0.25)
    torch.testing.assert_close(products, products[0].expand(4), rtol=1e-6, atol=0)
    assert LDAMLoss(counts.long(), max_m=0.3).margins.tolist() == pytest.approx(margins.tolist())


def test_focal_down_weights_easy_examples():
    logits = torch.tensor([[4.0, 0.0], [0.2, 0.0]])
    targets = torch.tensor([0, 0])
    focal_per_sample = FocalLoss([1, 1]).per_sample_loss(logits, targets)
    ce = F.cross_entropy(logits, targets, reduction="none")
    ratio = focal_per_sample / ce
    assert ratio[0] < ratio[1] < 1  # confident sample is discounted most


# ---------------------------------------------------------------- deferred re-weighting
@pytest.mark.parametrize("name", DRW_LOSSES)
def test_drw_switches_weights_exactly_at_drw_epoch(name):
    logits, targets = _random_batch()
    loss = LOSSES.build(name, class_counts=RANDOM_COUNTS, reweight="inverse", drw_epoch=3)
    immediate = LOSSES.build(name, class_counts=RANDOM_COUNTS, reweight="inverse")
    plain = LOSSES.build(name, class_counts=RANDOM_COUNTS)
    assert loss.current_weights() is None  # before any set_epoch: epoch 0
    for epoch in range(6):
        loss.set_epoch(epoch, 6)
        expected = plain if epoch < 3 else immediate
        torch.testing.assert_close(loss(logits, targets), expected(logits, targets))
    assert not torch.allclose(plain(logits, targets), immediate(logits, targets))


def test_drw_without_reweight_defaults_to_effective_number():
    loss = CrossEntropyLoss(RANDOM_COUNTS, drw_epoch=2)
    assert loss.reweight == "effective_number"
    loss.set_epoch(2, 10)
    beta = 0.9999
    expected = _normalise([(1 - beta) / (1 - beta**n) for n in RANDOM_COUNTS])
    assert loss.current_weights().tolist() == pytest.approx(expected, rel=1e-5)


def test_drw_epoch_zero_weights_from_the_start():
    assert CrossEntropyLoss(COUNTS, reweight="inverse", drw_epoch=0).current_weights() is not None


def test_drw_warns_once_when_never_reached():
    loss = LDAMLoss(COUNTS, drw_epoch=10)
    with pytest.warns(UserWarning, match="drw_epoch=10 >= max_epochs=10"):
        loss.set_epoch(0, 10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss.set_epoch(1, 10)


# ---------------------------------------------------------------- class counts and options
def test_zero_count_classes_are_treated_as_one_sample():
    with_zero = [50, 0, 3]
    with_one = [50, 1, 3]
    logits, targets = _random_batch(num_classes=3)
    for make in (BalancedSoftmaxLoss, LogitAdjustedLoss, LDAMLoss):
        value = make(with_zero)(logits, targets)
        assert torch.isfinite(value)
        torch.testing.assert_close(value, make(with_one)(logits, targets))
    for scheme in ("inverse", "sqrt_inverse", "effective_number"):
        weights = per_class_weights(with_zero, scheme)
        assert torch.isfinite(weights).all()
        torch.testing.assert_close(weights, per_class_weights(with_one, scheme))
    assert BalancedSoftmaxLoss(with_zero).class_counts.tolist() == with_zero  # true counts kept


@pytest.mark.parametrize(
    ("counts", "match"),
    [
        ([], "empty"),
        ([10, -1], "negative"),
        ([[1, 2], [3, 4]], "1-D"),
        ([1.5, 2], "whole numbers"),
        ([0, 0], "all zero"),
        ([float("inf"), 1], "finite"),
        (5, "sequence"),
        ("abc", "sequence"),
    ],
)
def test_bad_class_counts_raise(counts, match):
    with pytest.raises(ConfigError, match=match):
        CrossEntropyLoss(counts)


@pytest.mark.parametrize(
    ("name", "options", "match"),
    [
        ("focal", {"gamma": -1.0}, "gamma"),
        ("class_balanced", {"beta": 1.0}, "beta"),
        ("class_balanced", {"beta": -0.1}, "beta"),
        ("class_balanced", {"base": "hinge"}, "base"),
        ("class_balanced", {"gamma": -2.0}, "gamma"),
        ("ldam", {"max_m": -0.5}, "max_m"),
        ("ldam", {"s": 0.0}, r"\bs\b"),
        ("logit_adjusted", {"tau": -1.0}, "tau"),
        ("label_smoothing", {"smoothing": 1.0}, "smoothing"),
        ("label_smoothing", {"smoothing": -0.1}, "smoothing"),
        ("cross_entropy", {"reweight": "inverse_sqrt"}, "reweight"),
        ("cross_entropy", {"drw_epoch": -1}, "drw_epoch"),
        ("focal", {"beta": 1.5}, "beta"),
    ],
)
def test_bad_options_raise_naming_the_option(name, options, match):
    with pytest.raises(ConfigError, match=match):
        LOSSES.build(name, class_counts=COUNTS, **options)


def test_unknown_option_is_reported_by_the_registry():
    with pytest.raises(UnknownOptionError, match="gamma"):
        LOSSES.build("focal", class_counts=COUNTS, gama=1.0)


def test_shape_mismatch_raises_clear_error():
    loss = CrossEntropyLoss(COUNTS)
    with pytest.raises(ValueError, match=r"\[batch, 3\]"):
        loss(torch.zeros(2, 4), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="targets"):
        loss(torch.zeros(2, 3), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="class_counts"):
        adjust_logits(torch.zeros(2, 4), COUNTS)


# ---------------------------------------------------------------- contract over the registry
@pytest.mark.parametrize("name", BUILTIN_LOSSES)
def test_loss_contract(name):
    loss = LOSSES.build(name, class_counts=RANDOM_COUNTS)
    assert isinstance(loss, torch.nn.Module)
    logits, targets = _random_batch()
    logits = logits.float().requires_grad_(True)
    if hasattr(loss, "set_epoch"):
        loss.set_epoch(0, 10)
        loss.set_epoch(9, 10)
    value = loss(logits, targets)
    assert value.dim() == 0 and torch.isfinite(value)
    value.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    assert logits.grad.abs().sum() > 0
    assert "class_counts" in dict(loss.named_buffers())
    assert loss.class_counts.tolist() == RANDOM_COUNTS
    assert "num_classes=5" in repr(loss)
    # Modules converted to another dtype keep exact counts and still accept float32/half logits.
    loss.double()
    assert loss.class_counts.dtype == torch.int64
    assert torch.isfinite(loss(logits.detach(), targets))
    assert torch.isfinite(loss(logits.detach().half(), targets))


@pytest.mark.parametrize("name", BUILTIN_LOSSES)
@pytest.mark.parametrize("scale", [1e-3, 1e3])
def test_gradients_finite_for_extreme_logits(name, scale):
    options = {"gamma": 0.5} if name == "focal" else {}
    loss = LOSSES.build(name, class_counts=RANDOM_COUNTS, **options)
    logits, targets = _random_batch()
    logits = (logits.float() * scale).requires_grad_(True)
    loss(logits, targets).backward()
    assert torch.isfinite(logits.grad).all()


def test_focal_gradient_finite_when_target_probability_saturates():
    logits = torch.tensor([[60.0, 0.0, 0.0]], requires_grad=True)  # p_t rounds to 1 in float32
    for gamma in (0.0, 0.3, 2.0):
        logits.grad = None
        FocalLoss(COUNTS, gamma=gamma)(logits, torch.tensor([0])).backward()
        assert torch.isfinite(logits.grad).all()
