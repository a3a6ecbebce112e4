"""A typo in a config must fail at once, with the name and the fix, before any training.

Each case runs ``lttk train CONFIG OVERRIDES`` (in this process, through the CLI's ``main``)
on a tiny image dataset and checks three things: the exit code is 2 (a clean error, not a
traceback), the message names what was wrong and how to fix it, and no run folder (so no
``last.pt``) was created.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lttoolkit.engine.config import load_config
from lttoolkit.engine.trainer import Trainer
from lttoolkit.errors import ComponentContractError, ConfigError
from lttoolkit.registry import SCHEDULES, registration_source

from ._support import make_image_set


def run_args(tmp_path: Path, image_set, *extra: str) -> list[str]:
    return image_set.overrides(f"output_dir={tmp_path / 'runs'}", "name=run", *extra)


def assert_nothing_written(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    assert not runs.exists(), f"a run folder was created before the error: {sorted(runs.rglob('*'))}"


# ----------------------------------------------------------------------------- unknown names and options
UNKNOWN = [
    pytest.param(["model.loss=nope"], "UnknownComponentError",
                 ["unknown loss 'nope'", "cross_entropy", "lttk list-components losses"], id="loss"),
    pytest.param(["model.sampler=reversd"], "UnknownComponentError",
                 ["unknown sampler 'reversd'", "Did you mean 'reversed'"], id="sampler"),
    pytest.param(["model.schedule=parabolik"], "UnknownComponentError",
                 ["unknown schedule 'parabolik'", "'parabolic'"], id="schedule"),
    pytest.param(["model.backbone=resnet21_cifar"], "UnknownComponentError",
                 ["unknown backbone 'resnet21_cifar'", "'resnet20_cifar'"], id="backbone"),
    pytest.param(["model.type=bnb"], "UnknownComponentError", ["unknown method 'bnb'", "'bbn'"], id="method"),
    pytest.param(["model.sampler=reversed", "model.sampler.gamma=1"], "UnknownOptionError",
                 ["sampler 'reversed'", "'gamma'", "valid options are"], id="sampler-option"),
    pytest.param(["model.loss=focal", "model.loss.gama=2"], "UnknownOptionError",
                 ["loss 'focal'", "'gama'", "did you mean 'gamma'"], id="loss-option-typo"),
    pytest.param(["model.backbone.widht=8"], "UnknownOptionError",
                 ["resnet20_cifar", "'widht'", "did you mean 'widths'"], id="backbone-option"),
    pytest.param(["model.nope=1"], "UnknownOptionError", ["method 'bbn'", "'nope'", "valid options are"],
                 id="method-option"),
    pytest.param(["train.epoch=3"], "ConfigError", ["train.epoch", "Extra inputs are not permitted"],
                 id="config-field"),
    pytest.param(["model.schedule=constant", "model.schedule.value=1.5"], "ConfigError",
                 ["value must be in [0, 1]", "1.5"], id="schedule-option-value"),
]


@pytest.mark.parametrize(("overrides", "error", "fragments"), UNKNOWN)
def test_unknown_name_or_option_is_named_before_training(tmp_path, image_set, user_config, lttk_main,
                                                         overrides, error, fragments):
    code, out, err = lttk_main("train", user_config, *run_args(tmp_path, image_set, *overrides), "--quiet")
    assert code == 2, (out, err)
    assert f"error: {error}:" in err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    assert_nothing_written(tmp_path)


MALFORMED = [
    # model.sampler is not in the user's config, so the override makes {"gamma": 1}: no type.
    pytest.param(["model.sampler.gamma=1"], ["sampler", "type"], id="option-without-a-type"),
    pytest.param(["model.loss.gamma=2"], ["loss", "type"], id="loss-option-without-a-type"),
    pytest.param(["model.sampler=reversed", "model.sampler.seed=1"], ["sampler 'reversed'", "seed"],
                 id="engine-supplied-option"),
    pytest.param(["model.loss=5"], ["loss"], id="component-is-a-number"),
    pytest.param(["model.backbone="], ["backbone"], id="component-left-empty"),
    pytest.param(["model.backbone.depth=3"], ["depth"], id="backbone-option-given-twice"),
    pytest.param(["model.backbone.drop_rate=abc"], ["drop_rate", "abc"], id="backbone-option-wrong-type"),
]


@pytest.mark.parametrize(("overrides", "fragments"), MALFORMED)
def test_malformed_component_spec_is_a_clean_error(tmp_path, image_set, user_config, lttk_main, overrides, fragments):
    code, out, err = lttk_main("train", user_config, *run_args(tmp_path, image_set, *overrides), "--quiet")
    assert code == 2, (out, err)
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    assert_nothing_written(tmp_path)


# ----------------------------------------------------------------------------- wrong types and values
@pytest.mark.parametrize(
    ("override", "fragments"),
    [
        ("train.epochs=abc", ["train.epochs", "valid integer", "'abc'"]),
        ("train.epochs=1.5", ["train.epochs", "fractional part", "1.5"]),
        ("train.epochs=0", ["train.epochs", "greater than 0"]),
        ("optim.lr=abc", ["optim.lr", "valid number", "'abc'"]),
        ("data.batch_size=[4]", ["data.batch_size", "valid integer"]),
        ("data.dataset=jsn", ["data.dataset", "'json'"]),
        ("train.device=cuda:7", ["train.device", "CUDA is not available", "train.device=cpu"]),
    ],
)
def test_wrong_type_or_value_names_the_field(tmp_path, image_set, user_config, lttk_main, override, fragments):
    if override.startswith("train.device") and torch.cuda.is_available():
        pytest.skip("a machine with CUDA accepts cuda devices")
    code, out, err = lttk_main("train", user_config, *run_args(tmp_path, image_set, override), "--quiet")
    assert code == 2, (out, err)
    assert "error: ConfigError:" in err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    assert_nothing_written(tmp_path)


@pytest.mark.parametrize(
    ("ratio", "fragments"),
    [
        ("0", ["data.imbalance_ratio", "(got 0)"]),
        ("-5", ["data.imbalance_ratio", "(got -5)"]),
        # Below 1 is an imbalance *factor*: the message offers the inverse.
        ("0.01", ["imbalance_ratio must be >= 1", "0.01", "pass its inverse 100"]),
        (".inf", ["imbalance_ratio", "finite"]),
    ],
)
def test_imbalance_ratio_out_of_range_is_refused_before_training(tmp_path, image_set, user_config, lttk_main,
                                                                  ratio, fragments):
    code, out, err = lttk_main("train", user_config,
                               *run_args(tmp_path, image_set, f"data.imbalance_ratio={ratio}"), "--quiet")
    assert code == 2, (out, err)
    assert "error: ConfigError:" in err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    assert_nothing_written(tmp_path)


@pytest.mark.parametrize("ratio", ["0.5", "0.01"])
def test_imbalance_ratio_below_one_is_refused_by_the_config(ratio):
    with pytest.raises(ConfigError, match=r"data\.imbalance_ratio"):
        load_config(None, [f"data.imbalance_ratio={ratio}"])


@pytest.mark.parametrize("override", ["optim.lr=.inf", "optim.lr=1e400", "optim.weight_decay=.inf"])
def test_non_finite_numbers_are_refused_by_the_config(override):
    with pytest.raises(ConfigError, match=override.split("=")[0].replace(".", r"\.")):
        load_config(None, [override])


def test_seed_out_of_range_is_refused_by_the_config():
    with pytest.raises(ConfigError, match="seed"):
        load_config(None, [f"seed={2**64}"])


# ----------------------------------------------------------------------------- the data disagrees with the config
def test_num_classes_that_disagrees_with_the_data_is_named(tmp_path, image_set, user_config, lttk_main):
    code, out, err = lttk_main("train", user_config, *run_args(tmp_path, image_set, "model.num_classes=5"), "--quiet")
    assert code == 2, (out, err)
    assert "model.num_classes=5 but the training data has 3 classes" in err
    assert "remove model.num_classes" in err
    assert_nothing_written(tmp_path)


def test_in_chans_that_disagrees_with_the_data_is_named(tmp_path, image_set, user_config, lttk_main):
    code, out, err = lttk_main("train", user_config, *run_args(tmp_path, image_set, "model.in_chans=1"), "--quiet")
    assert code == 2, (out, err)
    assert "model.in_chans=1 but the data gives 3-channel images" in err
    assert "data.in_chans=1" in err
    assert_nothing_written(tmp_path)


def test_train_and_test_annotations_with_different_class_counts_are_named(tmp_path, user_config, lttk_main):
    images = make_image_set(tmp_path / "images")
    images.num_classes = 3
    images.write()
    # The test file declares a fourth class.
    test_file = images.annotation_file("test")
    test_file.write_text(test_file.read_text().replace('"num_classes": 3', '"num_classes": 4'))
    code, out, err = lttk_main("train", user_config, *run_args(tmp_path, images), "--quiet")
    assert code == 2, (out, err)
    assert "error: DataError:" in err and "3 classes but the test split 4" in err
    assert_nothing_written(tmp_path)


# ----------------------------------------------------------------------------- plugin alpha schedules
class AlphaTooHigh:
    """Returns 1.5 at every epoch: outside [0, 1] everywhere."""

    def __call__(self, epoch: int, max_epochs: int) -> float:
        return 1.5


class AssumesTwentyEpochs:
    """Decays over a hard-coded 20 epochs: in [0, 1] for short runs, negative from epoch 21 on."""

    def __call__(self, epoch: int, max_epochs: int) -> float:
        return 1.0 - epoch / 20


PLUGIN_SOURCE = "module reliability_bad_schedules"


@pytest.fixture
def plugin_schedule():
    """Register a schedule as a plugin module would (it is then contract-checked when built)."""
    names: list[str] = []

    def register(factory, name: str) -> str:
        with registration_source(PLUGIN_SOURCE):
            SCHEDULES.register(factory, name=name)
        names.append(name)
        return name

    yield register
    for name in names:
        SCHEDULES.unregister(name)


def test_plugin_schedule_outside_unit_interval_fails_when_the_trainer_is_built(tmp_path, image_set, user_config,
                                                                               plugin_schedule):
    name = plugin_schedule(AlphaTooHigh, "reliability_too_high")
    cfg = load_config(user_config, run_args(tmp_path, image_set, f"model.schedule={name}"))
    with pytest.raises(ComponentContractError) as caught:
        Trainer(cfg, progress=False)
    message = str(caught.value)
    for fragment in (f"'{name}'", PLUGIN_SOURCE, "returned 1.5", "outside [0, 1]", "fix the schedule"):
        assert fragment in message, (fragment, message)
    assert_nothing_written(tmp_path)


def test_plugin_schedule_leaving_unit_interval_late_in_the_run_fails_before_training(tmp_path, image_set,
                                                                                    user_config, plugin_schedule):
    name = plugin_schedule(AssumesTwentyEpochs, "reliability_twenty_epochs")
    cfg = load_config(user_config, run_args(tmp_path, image_set, f"model.schedule={name}", "train.epochs=25"))
    with pytest.raises(ComponentContractError, match=r"epoch 21/25"):
        Trainer(cfg, progress=False)
