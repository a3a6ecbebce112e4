"""Every method in the registry builds, rebuilds from its recipe and trains on the embedded data."""

from __future__ import annotations

import math

import pytest
import torch

from lttoolkit import METHODS, build
from lttoolkit.engine.config import load_config
from lttoolkit.engine.trainer import Trainer
from lttoolkit.methods import CosineClassifier
from lttoolkit.methods.protocol import SecondStageMethod
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


TINY_RUN = ["model.backbone=resnet20_cifar", "data.batch_size=16", "train.epochs=1", "train.max_steps_per_epoch=2",
            "optim.warmup_epochs=0", "data.val_fraction=0.1"]


@pytest.fixture(scope="module")
def stage1_checkpoint(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("stage1")
    Trainer(load_config(None, ["model.type=ce", *TINY_RUN, f"output_dir={out}", "name=s1"]), progress=False).fit()
    return out / "s1" / "last.pt"


@pytest.fixture(scope="module")
def ride_checkpoint(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("ride")
    Trainer(load_config(None, ["model.type=ride", *TINY_RUN, f"output_dir={out}", "name=s1"]), progress=False).fit()
    return out / "s1" / "last.pt"


@pytest.mark.parametrize("method", BUILTIN_METHODS)
def test_method_trains_one_tiny_epoch(method: str, tmp_path, request: pytest.FixtureRequest) -> None:
    # tau_norm picks tau on a validation split; the others simply train on 90% of the data then.
    # Stage-2 methods start from a stage-1 checkpoint: decoupling from ce, RIDE's router from ride.
    stage2 = isinstance(build(method, backbone="resnet20_cifar", num_classes=10), SecondStageMethod)
    stage1 = "ride_checkpoint" if method == "ride_ea" else "stage1_checkpoint"
    start = [f"init_from={request.getfixturevalue(stage1)}"] if stage2 else []
    cfg = load_config(None, [f"model.type={method}", *TINY_RUN, f"output_dir={tmp_path}", "name=run", *start])
    results = Trainer(cfg, progress=False).fit()
    assert results["method"] == method
    assert 0.0 <= results["test"]["top1"] <= 100.0


def test_preset_recipes_pick_the_documented_pieces() -> None:
    recipes = {m: build(m, backbone="resnet20_cifar", num_classes=10).recipe for m in BUILTIN_METHODS}
    assert recipes["rs"].samplers["main"].type == "class_balanced"
    assert recipes["rw"].loss.options == {"reweight": "inverse"}
    assert recipes["drw"].loss.options["drw_fraction"] == 0.8
    assert recipes["cb_focal"].loss.type == "class_balanced"
    assert recipes["cb_focal"].loss.options["base"] == "sigmoid_focal"
    assert recipes["cb_focal"].loss.options["normalize"] == "batch"
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


@pytest.mark.parametrize(("num_classes", "options", "expected_bias"), [
    (10, {}, -math.log(9)),                                    # the authors' -log(C - 1): pi = 1/C
    (100, {}, -math.log(99)),
    (100, {"bias_prior": 0.1}, -math.log(0.9 / 0.1)),          # the paper's text: pi = 0.1
])
def test_cb_focal_initialises_the_classifier_bias_from_a_prior(num_classes, options, expected_bias) -> None:
    model = build("cb_focal", backbone="resnet20_cifar", num_classes=num_classes, **options)
    bias = model.classifier.bias
    torch.testing.assert_close(bias, torch.full_like(bias, expected_bias))
    # sigmoid(bias) is the prior probability every class starts from
    assert float(torch.sigmoid(bias[0])) == pytest.approx(options.get("bias_prior", 1 / num_classes), rel=1e-5)
    rebuilt = model.recipe.rebuild()
    torch.testing.assert_close(rebuilt.classifier.bias, bias)


def test_cb_focal_old_form_by_options() -> None:
    # lttoolkit < 0.2: softmax focal, weighted-mean normalisation, the backbone's own bias.
    model = build("cb_focal", backbone="resnet20_cifar", num_classes=10, base="focal", normalize="weights",
                  bias_prior=None)
    assert model.recipe.loss.options == {"base": "focal", "beta": 0.9999, "gamma": 1.0, "normalize": "weights"}
    assert not torch.allclose(model.classifier.bias, torch.full_like(model.classifier.bias, -math.log(9)))


def test_cb_focal_rejects_a_bad_prior() -> None:
    from lttoolkit.errors import ConfigError

    for bad in (0.0, 1.0, "uniform", True):
        with pytest.raises(ConfigError, match="bias_prior must be 'num_classes'"):
            build("cb_focal", backbone="resnet20_cifar", num_classes=10, bias_prior=bad)


@pytest.mark.parametrize("method", ["rs", "ce"])
def test_class_balanced_epochs_have_as_many_steps_as_the_dataset(method: str, tmp_path) -> None:
    # The cycling class-balanced sampler keeps len(labels) draws per epoch (the authors' trainer stops
    # after int(len(dataset) / batch_size) steps), so rs takes as many steps per epoch as ce.
    cfg = load_config(None, [f"model.type={method}", "model.backbone=resnet20_cifar", "data.batch_size=16",
                             f"output_dir={tmp_path}", "name=run"])
    trainer = Trainer(cfg, progress=False)
    assert trainer.steps_per_epoch == len(trainer.data.train) // 16


# ---------------------------------------------------------------- the method protocol
@pytest.mark.parametrize("name", sorted(n for n in __import__("lttoolkit").METHODS.list()))
def test_every_builtin_method_implements_the_protocol(name):
    from lttoolkit import build
    from lttoolkit.methods.protocol import TrainableMethod, missing_members

    model = build(name, backbone="resnet20_cifar", num_classes=3)
    assert missing_members(model) == [] and isinstance(model, TrainableMethod)


def test_bbn_step_is_one_forward_then_bbn_loss_with_alpha_weighted_hits():
    import torch.nn.functional as F

    from lttoolkit import bbn_loss, build
    from lttoolkit.methods.protocol import EpochInfo

    model = build("bbn", backbone="resnet20_cifar", num_classes=3).train()
    x_c, x_r = torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)
    y_c, y_r = torch.tensor([0, 1, 2, 0]), torch.tensor([2, 2, 1, 0])
    calls = []

    def forward(*args, **kwargs):
        calls.append(kwargs)
        return model(*args, **kwargs)

    out = model.training_step([x_c, x_r], [y_c, y_r], F.cross_entropy, EpochInfo(5, 10), forward)
    alpha = 1 - (5 / 10) ** 2
    assert calls == [{"alpha": pytest.approx(alpha)}] and out.stats == {"alpha": pytest.approx(alpha)}
    torch.testing.assert_close(out.loss, bbn_loss(F.cross_entropy, out.logits, y_c, y_r, alpha))
    predicted = out.logits.argmax(1)
    expected = alpha * (predicted == y_c).sum().item() + (1 - alpha) * (predicted == y_r).sum().item()
    assert float(out.hits) == pytest.approx(expected) and out.batch_size == 4


def test_a_method_without_the_protocol_is_refused_naming_what_is_missing(tmp_path):
    from torch import nn

    from lttoolkit.engine.config import load_config
    from lttoolkit.engine.trainer import Trainer
    from lttoolkit.errors import ConfigError
    from lttoolkit.registry import METHODS

    class OnlyForward(nn.Linear):
        recipe = None

    METHODS.register(lambda **options: OnlyForward(2, 2), name="only_forward_test")
    try:
        cfg = load_config(None, ["model={type: only_forward_test}", f"output_dir={tmp_path}"])
        with pytest.raises(ConfigError, match="lacks on_train_start, epoch_stats, training_step of the method protocol"):
            Trainer(cfg, progress=False)
    finally:
        METHODS.unregister("only_forward_test")


def test_the_second_stage_is_a_written_protocol_not_probes() -> None:
    # Decoupling stage 2 (crt, lws, tau_norm) is recognised by its typed protocol; the trainer
    # probes no method attribute by name (issue 14).
    import inspect

    from lttoolkit import build
    from lttoolkit.engine import trainer
    from lttoolkit.methods.protocol import SecondStageMethod

    for name in ("crt", "lws", "tau_norm", "ce", "bbn", "rs"):
        model = build(name, backbone="resnet20_cifar", num_classes=3)
        assert isinstance(model, SecondStageMethod) == (name in ("crt", "lws", "tau_norm")), name
    assert build("tau_norm", backbone="resnet20_cifar", num_classes=3).requires_training is False
    source = inspect.getsource(trainer)
    assert "hasattr(self.model" not in source and "getattr(self.model" not in source
