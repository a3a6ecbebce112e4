"""RIDE (Wang et al., ICLR 2021): the loss against values computed by hand, the defaults of the
authors' CIFAR-100 config, the method's step, and the expert-assignment router (stage 2).

The expected values are computed here in plain Python from the authors' ``RIDELoss``
(frank-xwang/RIDE-LongTailRecognition, ``model/loss.py``), transcribed formula by formula, never
by calling the implementation under test.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from lttoolkit import build
from lttoolkit.errors import ConfigError
from lttoolkit.losses import RIDELoss, ride_diversity_weights
from lttoolkit.methods.protocol import EpochInfo
from lttoolkit.methods.ride import RoutedExperts
from lttoolkit.registry import LOSSES


# ---------------------------------------------------------------------------- the loss, by hand
def _log_softmax(z: list[float]) -> list[float]:
    top = max(z)
    log_sum = top + math.log(sum(math.exp(v - top) for v in z))
    return [v - log_sum for v in z]


def _ride_by_hand(experts, targets, counts, *, s, max_m, base_factor, diversity_factor, temperature,
                  reweight_factor, drw: bool, beta: float = 0.9999) -> float:
    """The authors' RIDELoss.forward for a list of experts' logits (lists of rows), in plain Python."""
    classes, batch = len(counts), len(targets)
    raw_m = [n ** -0.25 for n in counts]
    margins = [m * max_m / max(raw_m) for m in raw_m]  # m_list = 1/N^(1/4), scaled to max_m
    ensemble = [[sum(e[b][c] for e in experts) / len(experts) for c in range(classes)] for b in range(batch)]
    if drw:
        effective = [(1 - beta) / (1 - beta ** n) for n in counts]
        base_w = [w * classes / sum(effective) for w in effective]
        share = [n / sum(counts) for n in counts]
        div_w = [classes * p * reweight_factor + 1 - reweight_factor for p in share]
        div_w = [w / max(div_w) for w in div_w]
        temps = [temperature * w for w in div_w]
    else:
        base_w, temps = [1.0] * classes, [temperature] * classes
    mean_temp = sum(temps) / classes
    total = 0.0
    for expert in experts:
        scored = ensemble if diversity_factor == 0 else expert
        losses, weights = [], []
        for b, y in enumerate(targets):
            z = [v - (s * margins[y] if c == y else 0.0) for c, v in enumerate(scored[b])]  # x - s * m on the target
            losses.append(-_log_softmax(z)[y])
            weights.append(base_w[y])
        total += base_factor * sum(w * l for w, l in zip(weights, losses)) / sum(weights)
        kl = 0.0
        for b in range(batch):
            log_q = _log_softmax([expert[b][c] / temps[c] for c in range(classes)])
            log_p = _log_softmax([ensemble[b][c] / temps[c] for c in range(classes)])
            kl += sum(math.exp(lp) * (lp - lq) for lp, lq in zip(log_p, log_q))
        total += diversity_factor * mean_temp * mean_temp * kl / batch  # F.kl_div(..., "batchmean")
    return total


EXPERTS = [
    [[1.0, -0.5, 0.2], [0.3, 0.8, -1.0]],
    [[0.0, 0.4, -0.3], [-0.2, 0.1, 0.9]],
]
TARGETS = [0, 2]
COUNTS = [4, 2, 1]
OPTIONS = dict(s=2.0, max_m=0.5, base_factor=0.7, diversity_factor=-0.3, temperature=1.5, reweight_factor=0.2)


def _loss(**overrides: object) -> RIDELoss:
    options = dict(s=2.0, max_m=0.5, base_loss_factor=0.7, diversity_factor=-0.3, diversity_temperature=1.5,
                   reweight_factor=0.2, drw_epoch=2)
    options.update(overrides)
    return RIDELoss(COUNTS, **options)


def _call(loss: RIDELoss, experts=EXPERTS) -> torch.Tensor:
    stacked = torch.tensor(experts).transpose(0, 1)  # [B, K, C]
    return loss(stacked.mean(dim=1), torch.tensor(TARGETS), expert_logits=stacked)


@pytest.mark.parametrize("drw", [False, True])
def test_ride_loss_matches_the_authors_formula_by_hand(drw: bool) -> None:
    loss = _loss()
    loss.set_epoch(2 if drw else 1, 4)
    assert loss.weights_active is drw
    expected = _ride_by_hand(EXPERTS, TARGETS, COUNTS, drw=drw, **OPTIONS)
    assert _call(loss).item() == pytest.approx(expected, rel=1e-5)


def test_ride_loss_literal_two_experts_two_classes() -> None:
    # z_1 = [1, 0], z_2 = [-1, 0], y = 0, equal counts (m = 0.5), s = 1, T = 1: ensemble [0, 0].
    # LDAM: log(1 + e^-0.5) = 0.474077 and log(1 + e^1.5) = 1.701413; each KL(U || softmax(z_k)) =
    # 0.5 ln(0.5 / 0.731059) + 0.5 ln(0.5 / 0.268941) = 0.120115; total = 2.175490 - 0.2 * 2 * 0.120115.
    loss = RIDELoss([1, 1], s=1.0)
    experts = torch.tensor([[[1.0, 0.0], [-1.0, 0.0]]])
    value = loss(experts.mean(dim=1), torch.tensor([0]), expert_logits=experts)
    assert value.item() == pytest.approx(2.127444, abs=1e-6)
    # The experts' logits as a sequence give the same.
    assert loss(experts.mean(dim=1), torch.tensor([0]), expert_logits=list(experts.unbind(1))).item() == pytest.approx(
        2.127444, abs=1e-6)


def test_a_zero_diversity_factor_scores_every_expert_on_the_ensemble_as_the_authors() -> None:
    # model/loss.py: ride_loss_logits = output_logits if self.additional_diversity_factor == 0 else logits_item
    loss = _loss(diversity_factor=0.0)
    loss.set_epoch(0, 4)
    expected = _ride_by_hand(EXPERTS, TARGETS, COUNTS, drw=False, **{**OPTIONS, "diversity_factor": 0.0})
    assert _call(loss).item() == pytest.approx(expected, rel=1e-5)
    ensemble = torch.tensor(EXPERTS).mean(dim=0)
    plain = RIDELoss(COUNTS, s=2.0, base_loss_factor=0.7, diversity_factor=-0.3)(ensemble, torch.tensor(TARGETS))
    assert _call(loss).item() == pytest.approx(2 * plain.item(), rel=1e-5)  # K times the ensemble's LDAM


def test_the_diversity_term_rewards_disagreement() -> None:
    same = [EXPERTS[0], EXPERTS[0]]
    with_diversity, without = _loss(), _loss(diversity_factor=1e-12)
    for loss in (with_diversity, without):
        loss.set_epoch(0, 4)
    # Equal experts: the KL terms vanish. Different experts: a negative factor lowers the loss.
    assert _call(with_diversity, same).item() == pytest.approx(_call(without, same).item(), rel=1e-6)
    assert _call(with_diversity).item() < _call(without).item()


def test_diversity_temperature_weights_by_hand() -> None:
    # C = 3, p = (4, 2, 1) / 7, f = 0.05: 3 p f + 0.95 = (1.035714, 0.992857, 0.971429), / max.
    weights = ride_diversity_weights([4, 2, 1], reweight_factor=0.05)
    expected = [1.0, 0.992857 / 1.035714, 0.971429 / 1.035714]
    assert weights.tolist() == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ConfigError, match="too large"):
        ride_diversity_weights([100, 1, 1], reweight_factor=1.5)


def test_deferred_reweighting_starts_at_the_authors_epoch_160_of_200() -> None:
    # The authors' _hook_before_epoch(epoch) counts epochs from 1 and re-weights when epoch > 160:
    # the last 40 epochs, 0-based 160..199 here.
    loss = LOSSES.build("ride", class_counts=COUNTS, drw_fraction=0.8)
    states = {}
    for epoch in (0, 159, 160, 199):
        loss.set_epoch(epoch, 200)
        states[epoch] = (loss.weights_active, isinstance(loss.temperature()[0], torch.Tensor))
    assert states == {0: (False, False), 159: (False, False), 160: (True, True), 199: (True, True)}


def test_without_expert_logits_the_logits_are_the_only_expert() -> None:
    loss = _loss()
    loss.set_epoch(0, 4)
    ensemble = torch.tensor(EXPERTS[0])
    alone = loss(ensemble, torch.tensor(TARGETS))
    expected = _ride_by_hand([EXPERTS[0]], TARGETS, COUNTS, drw=False, **OPTIONS)  # its KL to itself is 0
    assert alone.item() == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="expert_logits of shape"):
        loss(ensemble, torch.tensor(TARGETS), expert_logits=torch.zeros(2, 3))


# ---------------------------------------------------------------------------- the method
def test_ride_defaults_are_the_authors_cifar100_config() -> None:
    # configs/config_imbalance_cifar100_ride.json: ResNet32Model(reduce_dimension, use_norm, num_experts=3),
    # RIDELoss(additional_diversity_factor=-0.2, reweight=True, reweight_epoch=160) with the class defaults
    # max_m=0.5, s=30, base_loss_factor=1.0, base_diversity_temperature=1.0, reweight_factor=0.05.
    model = build("ride", num_classes=100)
    assert model.num_experts == 3 and model.expert_modules == ("layer2", "layer3")
    for k in range(3):
        assert model.backbone.layer2.experts[k][0].conv1.out_channels == 24
        assert model.backbone.layer3.experts[k][-1].conv2.out_channels == 48
    assert model.head.kind == "cosine" and model.head.scale == 30.0
    assert model.recipe.samplers["main"].type == "instance"
    assert model.recipe.loss.type == "ride"
    assert model.recipe.loss.options == {"max_m": 0.5, "s": 30.0, "base_loss_factor": 1.0, "diversity_factor": -0.2,
                                         "diversity_temperature": 1.0, "reweight_factor": 0.05, "drw_fraction": 0.8}


def test_the_ride_step_gives_the_loss_every_experts_logits() -> None:
    torch.manual_seed(0)
    model = build("ride", backbone="resnet20_cifar", num_classes=3).train()
    twin = copy.deepcopy(model)
    criterion = LOSSES.build("ride", class_counts=COUNTS, **model.recipe.loss.options)
    criterion.set_epoch(0, 10)
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])
    calls = []

    def forward(*args, **kwargs):
        calls.append(kwargs)
        return model(*args, **kwargs)

    out = model.training_step([x], [y], criterion, EpochInfo(0, 10), forward)
    assert calls == [{"return_experts": True}]  # one forward
    reference = twin(x, return_experts=True)
    torch.testing.assert_close(out.logits, reference.logits)
    torch.testing.assert_close(out.loss, criterion(reference.logits, y, expert_logits=reference.experts))
    assert int(out.hits) == int((reference.logits.argmax(1) == y).sum())


# ---------------------------------------------------------------------------- stage 2: the router
def _stage2(num_classes: int = 2) -> tuple[object, RoutedExperts]:
    torch.manual_seed(0)
    stage1 = build("ride", backbone="resnet20_cifar", num_classes=num_classes)
    routed = build("ride_ea", backbone="resnet20_cifar", num_classes=num_classes)
    routed.load_stage1(stage1.state_dict())
    return stage1, routed


def test_router_targets_by_hand() -> None:
    _, model = _stage2()
    e = torch.tensor([
        [[2, 0], [0, 1], [0, 1]],  # expert 0 right: no help wanted
        [[0, 1], [2, 0], [0, 5]],  # 0 wrong, 0+1 right, 0+1+2 wrong: router 0 yes, router 1 no
        [[0, 1], [0, 1], [3, 0]],  # only all three right: both yes
        [[0, 1], [0, 1], [0, 1]],  # never right: nobody helps
    ], dtype=torch.float)
    targets = model.router_targets(e, torch.zeros(4, dtype=torch.long))
    assert targets.tolist() == [[False, False], [True, False], [True, True], [False, False]]


def test_routed_inference_takes_the_mean_of_the_experts_each_image_was_passed_to() -> None:
    _, model = _stage2()
    decisions = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0]])  # router i's logit per image
    model.router.help_logit = lambda i, features, logits: decisions[:, i]  # type: ignore[method-assign]
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        out = model.eval()(x, return_experts=True)
    assert out.experts_used.tolist() == [3, 2, 1]  # router 1 is not asked once router 0 says no
    e = out.experts
    expected = torch.stack([e[0].mean(0), e[1, :2].mean(0), e[2, 0]])
    torch.testing.assert_close(out.logits, expected)
    model.train()
    torch.testing.assert_close(model(x), e.mean(1))  # training scores every expert


def test_ride_ea_streams_are_class_balanced_as_the_authors_balanced_loader() -> None:
    assert build("ride_ea", backbone="resnet20_cifar", num_classes=3).recipe.samplers["main"].type == "class_balanced"


def test_ride_ea_trains_only_the_router_on_the_stage1_network() -> None:
    stage1, model = _stage2()
    for key, value in stage1.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(name.startswith("router.") for name in trainable)
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    model.train()
    out = model.training_step([torch.randn(6, 3, 32, 32)], [torch.tensor([0, 1, 0, 1, 0, 1])], None,
                              EpochInfo(0, 1), model)
    out.loss.backward()
    assert all(torch.equal(v, buffers[k]) for k, v in model.named_buffers())  # frozen batch-norm statistics
    assert all(p.grad is None for name, p in model.named_parameters() if not name.startswith("router."))
    assert 1.0 <= out.stats["experts_used"] <= 3.0
    with pytest.raises(ConfigError, match="does not fit ride_ea"):
        model.load_stage1(build("ce", backbone="resnet20_cifar", num_classes=2).state_dict())


def test_router_loss_is_the_authors_mean_binary_cross_entropy() -> None:
    _, model = _stage2()
    help_logits = torch.tensor([[0.5, -1.0], [2.0, 0.0]])
    experts = torch.tensor([[[0, 1], [2, 0], [0, 5]], [[0, 1], [0, 1], [3, 0]]], dtype=torch.float)
    targets = [[1.0, 0.0], [1.0, 1.0]]  # from test_router_targets_by_hand's second and third rows
    w = 100.0  # pos_weight of config_imbalance_cifar100_ride_ea.json

    def bce(z: float, t: float) -> float:
        return -(w * t * math.log(1 / (1 + math.exp(-z))) + (1 - t) * math.log(1 - 1 / (1 + math.exp(-z))))

    per_router = [sum(bce(help_logits[b, i].item(), targets[b][i]) for b in range(2)) / 2 for i in range(2)]
    loss = model.router_loss(help_logits, experts, torch.zeros(2, dtype=torch.long))
    assert loss.item() == pytest.approx(sum(per_router) / 2, rel=1e-6)


def test_the_shipped_cifar100_recipe_is_the_authors_config() -> None:
    # configs/config_imbalance_cifar100_ride.json: batch 128, SGD lr 0.1 momentum 0.9 wd 5e-4 nesterov,
    # CustomLR(step1=160, step2=180, gamma=0.01, warmup_epoch=5), 200 epochs, imbalance 100.
    from pathlib import Path

    from lttoolkit.engine.config import load_config

    path = Path(__file__).resolve().parents[1] / "examples" / "configs" / "ride_cifar100_lt.yaml"
    cfg = load_config(path, [])
    assert cfg.model == {"type": "ride", "backbone": "resnet32_cifar", "num_experts": 3, "reduce_dimension": True}
    assert (cfg.data.dataset, cfg.data.imbalance_ratio, cfg.data.batch_size, cfg.train.epochs) == ("cifar100", 100,
                                                                                                  128, 200)
    optim = cfg.optim
    assert (optim.lr, optim.momentum, optim.weight_decay, optim.nesterov) == (0.1, 0.9, 5e-4, True)
    assert (optim.warmup_epochs, optim.schedule, optim.milestones, optim.gamma) == (5, "multistep", [160, 180], 0.01)
    stage2 = load_config(path, ["model.type=ride_ea", "name=ride_ea"])  # the router, as the file's comment says
    assert stage2.model == {**cfg.model, "type": "ride_ea"}
