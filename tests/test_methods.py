"""Every method in the registry builds, rebuilds from its recipe and trains on the embedded data."""

from __future__ import annotations

import math

import pytest
import torch

from lttoolkit import METHODS, build
from lttoolkit.engine.config import load_config
from lttoolkit.engine.trainer import Trainer
from lttoolkit.methods import CosineClassifier
from lttoolkit.registry import LOSSES

BUILTIN_METHODS = [e.name for e in METHODS.entries() if not e.is_plugin]


@pytest.mark.parametrize("method", BUILTIN_METHODS)
def test_method_builds_and_rebuilds(method: str) -> None:
    model = build(method, backbone="resnet20_cifar", num_classes=10, in_chans=1)
    logits = model.eval()(torch.randn(3, 1, 28, 28))
    assert logits.shape == (3, 10)
    again = model.recipe.rebuild()
    assert {k: v.shape for k, v in again.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
    assert type(again) is type(model)


@pytest.mark.parametrize("method", BUILTIN_METHODS)
def test_method_trains_one_tiny_epoch(method: str, tmp_path) -> None:
    # tau_norm picks tau on a validation split; the others simply train on 90% of the data then
    cfg = load_config(None, [f"model.type={method}", "model.backbone=resnet20_cifar", "data.batch_size=16",
                             "train.epochs=1", "train.max_steps_per_epoch=2", "optim.warmup_epochs=0",
                             "data.val_fraction=0.1", f"output_dir={tmp_path}", "name=run"])
    results = Trainer(cfg, progress=False).fit()
    assert results["method"] == method
    assert 0.0 <= results["test"]["top1"] <= 100.0


def test_preset_recipes_pick_the_documented_pieces() -> None:
    recipes = {m: build(m, backbone="resnet20_cifar", num_classes=10).recipe for m in BUILTIN_METHODS}
    assert recipes["rs"].samplers["main"].type == "class_balanced"
    assert recipes["rw"].loss.options == {"reweight": "inverse"}
    assert recipes["drw"].loss.options["drw_fraction"] == 0.8
    assert recipes["cb_focal"].loss.type == "class_balanced" and recipes["cb_focal"].loss.options["base"] == "focal"
    assert recipes["ldam_drw"].loss.type == "ldam"
    assert recipes["balanced_softmax"].loss.type == "balanced_softmax"
    assert recipes["logit_adjust"].loss.type == "logit_adjusted"
    assert list(recipes["bbn"].samplers) == ["conventional", "rebalancing"]


def test_ldam_drw_uses_a_cosine_classifier() -> None:
    model = build("ldam_drw", backbone="resnet20_cifar", num_classes=4)
    assert isinstance(model.head, CosineClassifier)
    logits = model.eval()(torch.randn(5, 3, 32, 32))
    assert logits.abs().max() <= 1.0 + 1e-6  # cosines; the loss applies the scale s


def test_drw_switches_weights_at_eighty_percent_of_training() -> None:
    model = build("drw", backbone="resnet20_cifar", num_classes=2)
    loss = LOSSES.build(model.recipe.loss.type, class_counts=[90, 10], **model.recipe.loss.options)
    active = []
    for epoch in range(10):
        loss.set_epoch(epoch, 10)
        active.append(loss.weights_active)
    assert active == [False] * 8 + [True] * 2


def test_posthoc_logit_adjustment_subtracts_tau_log_prior() -> None:
    torch.manual_seed(0)
    model = build("logit_adjust", backbone="resnet20_cifar", num_classes=3, mode="posthoc", tau=2.0).eval()
    x = torch.randn(2, 3, 32, 32)
    plain = model.backbone(x)
    model.on_train_start(class_counts=[6, 3, 1])
    prior = torch.tensor([0.6, 0.3, 0.1])
    expected = plain - 2.0 * prior.log()
    torch.testing.assert_close(model(x), expected)
    # the prior travels with the weights
    assert math.isclose(float(model.state_dict()["log_prior"][2]), math.log(0.1), rel_tol=1e-6)
