"""Remix: the label rule by hand, the mixing, the loss decomposition and the training protocol."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lttk_remix import RemixModel, remix, remix_label_weights, remix_targets
from lttoolkit.errors import ConfigError
from lttoolkit.methods.protocol import EpochInfo


class RecordingBackbone(nn.Module):
    """Returns the first ``num_classes`` pixels as logits and keeps the input it saw."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.scale = nn.Parameter(torch.ones(()))
        self.seen: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen = x
        return self.scale * x.flatten(1)[:, : self.num_classes]


# (n_i, n_j, lam, expected lam_y) with kappa = 3, tau = 0.5
HAND_CASES = [
    (300, 100, 0.3, 0.0),   # n_i / n_j = 3 >= kappa and lam < tau: label goes to y_j
    (900, 100, 0.49, 0.0),
    (300, 100, 0.5, 0.5),   # lam == tau is not < tau: mixup label
    (300, 100, 0.7, 0.7),   # x_i dominates the image: mixup label
    (100, 300, 0.7, 1.0),   # n_i / n_j = 1/3 <= 1/kappa and 1 - lam = 0.3 < tau: label goes to y_i
    (100, 300, 0.3, 0.3),   # 1 - lam = 0.7 >= tau: mixup label
    (200, 100, 0.1, 0.1),   # ratio 2 < kappa: mixup label
    (100, 100, 0.2, 0.2),
    (5, 0, 0.2, 0.0),       # an empty class counts as one sample
]


@pytest.mark.parametrize(("n_i", "n_j", "lam", "expected"), HAND_CASES)
def test_label_rule_by_hand(n_i, n_j, lam, expected):
    got = remix_label_weights(torch.tensor([n_i]), torch.tensor([n_j]), lam, kappa=3.0, tau=0.5)
    assert got.tolist() == pytest.approx([expected])


def test_label_rule_vectorised_matches_hand_cases():
    lams = {case[2] for case in HAND_CASES}
    for lam in lams:
        cases = [c for c in HAND_CASES if c[2] == lam]
        got = remix_label_weights(torch.tensor([c[0] for c in cases]), torch.tensor([c[1] for c in cases]), lam)
        assert got.tolist() == pytest.approx([c[3] for c in cases])


def test_first_rule_wins_when_both_hold():
    # kappa = 1 and tau = 1 make both rules true for equal classes; the y_j rule is listed first.
    assert remix_label_weights(torch.tensor([10]), torch.tensor([10]), 0.4, kappa=1.0, tau=1.0).tolist() == [0.0]


def test_other_thresholds():
    assert remix_label_weights(torch.tensor([300]), torch.tensor([100]), 0.3, kappa=4.0).tolist() == \
        pytest.approx([0.3])
    assert remix_label_weights(torch.tensor([300]), torch.tensor([100]), 0.3, tau=0.2).tolist() == \
        pytest.approx([0.3])


@pytest.mark.parametrize("lam", [0.1, 0.45, 0.8])
def test_two_criterion_calls_equal_the_per_sample_remix_loss(lam):
    generator = torch.Generator().manual_seed(0)
    counts = torch.tensor([1000, 300, 40, 8])
    logits = torch.randn(64, 4, generator=generator)
    targets = torch.randint(0, 4, (64,), generator=generator)
    permutation = torch.randperm(64, generator=generator)
    a, b = remix_targets(targets, permutation, lam, counts)
    combined = lam * F.cross_entropy(logits, a) + (1 - lam) * F.cross_entropy(logits, b)
    weights = remix_label_weights(counts[targets], counts[targets[permutation]], lam)
    per_sample = (weights * F.cross_entropy(logits, targets, reduction="none")
                  + (1 - weights) * F.cross_entropy(logits, targets[permutation], reduction="none"))
    values = {round(w, 5) for w in weights.tolist()}
    assert values <= {0.0, 1.0, round(lam, 5)} and len(values) > 1  # the rule changed some labels
    torch.testing.assert_close(combined, per_sample.mean())


def make_model(counts=(300, 100, 10), **options) -> RemixModel:
    model = RemixModel(RecordingBackbone(len(counts)), **options)
    model.on_train_start(class_counts=list(counts))
    return model


def test_mix_draws_a_permutation_and_lam():
    model = make_model().train()
    x = torch.randn(8, 1, 2, 2)
    torch.manual_seed(3)
    permutation, lam = model.draw_mix(8)
    assert 0.0 <= lam <= 1.0 and sorted(permutation.tolist()) == list(range(8))
    torch.testing.assert_close(RemixModel.mix(x, permutation, lam), lam * x + (1 - lam) * x[permutation])


def test_mix_is_reproducible_with_the_global_seed():
    model = make_model().train()
    torch.manual_seed(11)
    first = model.draw_mix(16)
    torch.manual_seed(11)
    second = model.draw_mix(16)
    assert torch.equal(first[0], second[0]) and first[1] == second[1]


def test_lam_follows_beta_alpha_alpha():
    torch.manual_seed(0)
    uniform_model, peaked_model = make_model(alpha=1.0), make_model(alpha=0.2)
    uniform = torch.tensor([uniform_model.draw_mix(2)[1] for _ in range(1000)])
    assert uniform.mean().item() == pytest.approx(0.5, abs=0.05)  # 5.5 standard errors
    assert uniform.var().item() == pytest.approx(1 / 12, abs=0.015)  # Beta(1, 1) is uniform
    peaked = torch.tensor([peaked_model.draw_mix(2)[1] for _ in range(1000)])
    assert ((peaked < 0.1) | (peaked > 0.9)).float().mean() > 0.5  # Beta(0.2, 0.2) is U-shaped


def step(model, x, y, criterion=None, forward=None):
    return model.training_step([x], [y], criterion or nn.CrossEntropyLoss(), EpochInfo(0, 10), forward or model)


def test_forward_is_the_plain_backbone():
    model = make_model().train()
    x = torch.randn(4, 1, 2, 2)
    model(x)
    assert torch.equal(model.backbone.seen, x)


def test_training_step_mixes_once_and_takes_the_loss_of_that_mix():
    model = make_model().train()
    x, y = torch.randn(6, 1, 2, 2), torch.tensor([0, 1, 2, 0, 0, 1])
    calls = []

    def forward(batch):
        calls.append(batch)
        return model(batch)

    torch.manual_seed(5)
    out = step(model, x, y, forward=forward)
    torch.manual_seed(5)
    permutation, lam = model.draw_mix(6)
    assert len(calls) == 1 and torch.allclose(calls[0], RemixModel.mix(x, permutation, lam))  # one forward, mixed
    a, b = remix_targets(y, permutation, lam, torch.tensor([300, 100, 10]))
    expected = lam * F.cross_entropy(out.logits, a) + (1 - lam) * F.cross_entropy(out.logits, b)
    torch.testing.assert_close(out.loss, expected)
    assert out.batch_size == 6 and out.stats == {"lam": lam}
    assert not hasattr(model, "_pending_mix")  # no state kept between a forward and a loss


def test_training_step_needs_class_counts():
    model = RemixModel(RecordingBackbone()).train()
    with pytest.raises(RuntimeError, match="on_train_start"):
        step(model, torch.randn(4, 1, 2, 2), torch.tensor([0, 1, 2, 0]))


def test_remix_loss_rejects_a_batch_of_another_size():
    model = make_model().train()
    logits = model(torch.randn(4, 1, 2, 2))
    with pytest.raises(RuntimeError, match="mixed over 4 images but got 3 targets"):
        model.remix_loss(nn.CrossEntropyLoss(), logits[:3], torch.tensor([0, 1, 2]), torch.arange(4), 0.5)


def test_class_counts_are_not_saved_in_the_state_dict():
    model = make_model()
    assert "class_counts" not in model.state_dict()
    assert model.class_counts.tolist() == [300, 100, 10]


@pytest.mark.parametrize("options", [{"alpha": 0.0}, {"alpha": -1.0}, {"kappa": 0.5}, {"tau": 1.5},
                                     {"tau": float("nan")}, {"kappa": True}])
def test_invalid_options_raise_config_error(options):
    with pytest.raises(ConfigError, match="remix"):
        RemixModel(RecordingBackbone(), **options)


def test_factory_builds_a_trainable_single_branch_model():
    model = remix(backbone="resnet20_cifar", num_classes=3, alpha=0.5, kappa=2.0)
    assert isinstance(model, RemixModel)
    assert model.recipe.method == "remix"
    assert model.recipe.samplers["main"].type == "instance"
    assert model.recipe.options["alpha"] == 0.5 and model.recipe.options["kappa"] == 2.0
    assert model.epoch_stats(EpochInfo(0, 10)) == {}
    with pytest.raises(ConfigError, match="num_classes|classes"):
        model.on_train_start(class_counts=[10, 5])
    model.on_train_start(class_counts=[30, 10, 1])
    model.train()
    torch.manual_seed(0)
    x, y = torch.randn(8, 3, 32, 32), torch.tensor([0, 0, 0, 0, 1, 1, 2, 0])
    loss = step(model, x, y).loss
    loss.backward()
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_factory_rejects_bad_options_before_building():
    with pytest.raises(ConfigError, match="tau"):
        remix(backbone="resnet20_cifar", num_classes=3, tau=2.0)
