"""Seesaw loss against hand-computed values (counts N = [4, 2, 1]) and its identities."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lttk_extra_losses import SeesawLoss, seesaw_log_factors
from lttoolkit.errors import ConfigError

COUNTS = [4, 2, 1]
LOG2 = math.log(2.0)


def per_sample(loss: SeesawLoss, logits: list[list[float]], targets: list[int]) -> list[float]:
    return loss.per_sample_loss(torch.tensor(logits), torch.tensor(targets)).tolist()


def test_mitigation_factor_by_hand():
    # Zero logits: loss_i = log(1 + sum_{j != i} M_ij) with M_ij = N_j / N_i when N_j < N_i (p = 1).
    loss = SeesawLoss(COUNTS, p=1.0, q=0.0)
    got = per_sample(loss, [[0.0, 0.0, 0.0]] * 3, [0, 1, 2])
    expected = [math.log(1 + 0.5 + 0.25), math.log(1 + 1 + 0.5), math.log(3.0)]
    assert got == pytest.approx(expected, rel=1e-6)


def test_mitigation_exponent_by_hand():
    loss = SeesawLoss(COUNTS, p=0.5, q=0.0)
    got = per_sample(loss, [[0.0, 0.0, 0.0]], [0])
    assert got == pytest.approx([math.log(1 + 0.5**0.5 + 0.25**0.5)], rel=1e-6)


def test_compensation_factor_by_hand():
    # sigma = [1/4, 1/2, 1/4]. Target 0: C_01 = (0.5 / 0.25)^2 = 4, C_02 = 1 (equal, not greater),
    # so loss = -log(1 / (1 + 4 * 2 + 1)) = log 10. Target 1 is the most probable class: plain CE.
    loss = SeesawLoss(COUNTS, p=0.0, q=2.0)
    got = per_sample(loss, [[0.0, LOG2, 0.0]] * 2, [0, 1])
    assert got == pytest.approx([math.log(10.0), math.log(2.0)], rel=1e-6)


def test_both_factors_by_hand():
    # Target 0: S_01 = M 0.5 * C 4 = 2, S_02 = M 0.25 * C 1; denominator 1 + 2 * 2 + 0.25.
    loss = SeesawLoss(COUNTS, p=1.0, q=2.0)
    assert per_sample(loss, [[0.0, LOG2, 0.0]], [0]) == pytest.approx([math.log(5.25)], rel=1e-6)


def test_batch_mean_and_default_options():
    loss = SeesawLoss(COUNTS)
    assert (loss.p, loss.q, loss.accumulate, loss.eps) == (0.8, 2.0, False, 0.01)
    logits, targets = torch.randn(6, 3), torch.tensor([0, 1, 2, 2, 1, 0])
    assert loss(logits, targets).item() == pytest.approx(loss.per_sample_loss(logits, targets).mean().item())


def _mmdetection_seesaw(logits: list[float], target: int, counts: list[int], p: float, q: float, eps: float) -> float:
    """mmdetection's seesaw_ce_loss for one sample, with plain math: ratio = sigma_j / max(sigma_i, eps)."""
    top = max(logits)
    exps = [math.exp(z - top) for z in logits]
    sigma = [e / sum(exps) for e in exps]
    adjusted = []
    for j, z in enumerate(logits):
        weight = 1.0
        ratio = counts[j] / counts[target]
        if p > 0 and ratio < 1.0:
            weight *= ratio**p
        score = sigma[j] / max(sigma[target], eps)
        if q > 0 and score > 1.0:
            weight *= score**q
        adjusted.append(z + (math.log(weight) if j != target else 0.0))
    top = max(adjusted)
    return -(adjusted[target] - top - math.log(sum(math.exp(z - top) for z in adjusted)))


def test_compensation_ratio_clamps_the_target_probability_at_eps():
    # A collapsed target: sigma_0 = e^-8 / (e^-8 + 2) ~ 1.7e-4 < eps = 0.01, so C_0j = (sigma_j / 0.01)^2.
    logits, counts = [-8.0, 0.0, 0.0], [1, 1, 1]
    sigma_j = 1 / (math.exp(-8.0) + 2)
    expected = math.log(math.exp(-8.0) + 2 * (sigma_j / 0.01) ** 2) + 8.0  # -log(e^-8 / (e^-8 + 2 C e^0))
    loss = SeesawLoss(counts, p=0.0, q=2.0)
    assert per_sample(loss, [logits], [0]) == pytest.approx([expected], rel=1e-5)
    assert expected == pytest.approx(_mmdetection_seesaw(logits, 0, counts, 0.0, 2.0, 0.01), rel=1e-9)
    # eps = 0: the exact ratio, a much larger factor
    exact = math.log(math.exp(-8.0) + 2 * (sigma_j * (math.exp(-8.0) + 2) / math.exp(-8.0)) ** 2) + 8.0
    assert per_sample(SeesawLoss(counts, p=0.0, q=2.0, eps=0.0), [logits], [0]) == pytest.approx([exact], rel=1e-5)


@pytest.mark.parametrize("seed", range(3))
def test_defaults_equal_mmdetection_on_random_batches(seed):
    generator = torch.Generator().manual_seed(seed)
    logits = (torch.randn(8, 4, generator=generator, dtype=torch.float64) * 4).tolist()
    targets = torch.randint(0, 4, (8,), generator=generator).tolist()
    counts = [50, 20, 5, 1]
    got = SeesawLoss(counts).per_sample_loss(torch.tensor(logits, dtype=torch.float64), torch.tensor(targets)).tolist()
    expected = [_mmdetection_seesaw(row, t, counts, 0.8, 2.0, 0.01) for row, t in zip(logits, targets)]
    assert got == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("seed", range(3))
def test_p0_q0_is_cross_entropy(seed):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(16, 5, generator=generator) * 3
    targets = torch.randint(0, 5, (16,), generator=generator)
    loss = SeesawLoss([1000, 300, 50, 7, 1], p=0.0, q=0.0)
    torch.testing.assert_close(loss(logits, targets), F.cross_entropy(logits, targets))


def test_factors_are_at_most_one_for_rarer_and_at_least_one_for_overscored_classes():
    logits = torch.randn(32, 4)
    targets = torch.randint(0, 4, (32,))
    counts = torch.tensor([100, 30, 10, 1])
    mitigation = seesaw_log_factors(logits, targets, counts, p=0.8, q=0.0)
    compensation = seesaw_log_factors(logits, targets, counts, p=0.0, q=2.0)
    assert (mitigation <= 0).all() and (compensation >= 0).all()
    rows = torch.arange(32)
    assert (mitigation[rows, targets] == 0).all() and (compensation[rows, targets] == 0).all()
    # A rarer class j (N_j < N_i) is mitigated, a more frequent one is not.
    rarer = counts.unsqueeze(0) < counts[targets].unsqueeze(1)
    assert (mitigation[rarer] < 0).all() and (mitigation[~rarer] == 0).all()


def test_gradient_is_cross_entropy_gradient_on_adjusted_logits():
    # The factors are constants: d loss / d z = softmax(z + log S) - onehot(y).
    loss = SeesawLoss(COUNTS, p=1.0, q=0.0)
    logits = torch.zeros(1, 3, requires_grad=True)
    loss(logits, torch.tensor([0])).backward()
    expected = torch.tensor([[1.0, 0.5, 0.25]]) / 1.75 - torch.tensor([[1.0, 0.0, 0.0]])
    torch.testing.assert_close(logits.grad, expected)


def test_gradients_finite_for_extreme_logits():
    loss = SeesawLoss([5000, 50, 0, 1])
    logits = torch.tensor([[300.0, -300.0, 0.0, 80.0], [-1e4, 1e4, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]],
                          requires_grad=True)
    value = loss(logits, torch.tensor([1, 0, 2]))
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(logits.grad).all()


def test_half_precision_logits_are_upcast():
    loss = SeesawLoss(COUNTS)
    value = loss(torch.randn(4, 3).half(), torch.tensor([0, 1, 2, 0]))
    assert value.dtype == torch.float32 and torch.isfinite(value)


def test_accumulate_counts_targets_seen_in_training_mode():
    loss = SeesawLoss(COUNTS, p=1.0, q=0.0, accumulate=True)
    targets = torch.tensor([0, 0, 0, 1])
    got = loss.per_sample_loss(torch.zeros(4, 3), targets).tolist()
    assert loss.seen_counts.tolist() == [3, 1, 0]
    # N = [3, 1, 0 -> 1]: target 0 mitigates both (1/3 each); target 1 none (N_2 = N_1 after clamping).
    assert got == pytest.approx([math.log(1 + 2 / 3)] * 3 + [math.log(3.0)], rel=1e-6)
    loss.eval()
    loss.per_sample_loss(torch.zeros(4, 3), targets)
    assert loss.seen_counts.tolist() == [3, 1, 0]  # evaluation does not count
    assert torch.equal(loss.mitigation_counts(), loss.seen_counts)


def test_static_counts_ignore_batches():
    loss = SeesawLoss(COUNTS)
    loss(torch.randn(4, 3), torch.tensor([0, 0, 1, 2]))
    assert loss.seen_counts.tolist() == [0, 0, 0]
    assert loss.mitigation_counts().tolist() == COUNTS


def test_reweighting_is_inherited():
    loss = SeesawLoss(COUNTS, reweight="inverse")
    logits, targets = torch.randn(5, 3), torch.tensor([0, 1, 2, 2, 0])
    weights = loss.class_weights[targets]
    expected = (weights * loss.per_sample_loss(logits, targets)).sum() / weights.sum()
    torch.testing.assert_close(loss(logits, targets), expected)


@pytest.mark.parametrize("options", [{"p": -1.0}, {"q": float("nan")}, {"accumulate": "yes"}, {"p": True}, {"eps": -0.1},
                                     {"eps": 2.0}])
def test_invalid_options_raise_config_error(options):
    with pytest.raises(ConfigError):
        SeesawLoss(COUNTS, **options)


def test_wrong_logit_shape_names_the_expected_shape():
    with pytest.raises(ValueError, match=r"\[batch, 3\]"):
        SeesawLoss(COUNTS)(torch.zeros(2, 4), torch.tensor([0, 1]))
