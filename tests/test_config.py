"""Tests of lttoolkit.engine.config: pydantic models, YAML files and dotted overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from lttoolkit.engine.config import RunConfig, apply_overrides, config_to_yaml, load_config
from lttoolkit.engine.trainer import quickstart_config_path
from lttoolkit.errors import ConfigError

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples" / "configs").glob("*.yaml"))


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- defaults and files
def test_defaults_are_valid_bbn_recipe():
    cfg = load_config()
    assert cfg == RunConfig()
    assert cfg.model == {"type": "bbn", "backbone": "resnet32_cifar"}
    assert (cfg.train.epochs, cfg.data.batch_size, cfg.optim.lr, cfg.optim.momentum) == (200, 128, 0.1, 0.9)
    assert (cfg.optim.milestones, cfg.optim.gamma, cfg.optim.warmup_epochs) == ([120, 160], 0.01, 5)


def test_yaml_file_is_loaded_and_unset_fields_keep_defaults(tmp_path):
    path = write(tmp_path / "run.yaml", "seed: 3\nmodel: {type: ce, backbone: resnet20_cifar}\n"
                                        "train:\n  epochs: 7\noptim:\n  schedule: cosine\n")
    cfg = load_config(path)
    assert cfg.seed == 3 and cfg.train.epochs == 7 and cfg.optim.schedule == "cosine"
    assert cfg.model == {"type": "ce", "backbone": "resnet20_cifar"}
    assert cfg.train.eval_every == 1 and cfg.optim.lr == 0.1 and cfg.data.dataset == "embedded"


def test_empty_yaml_file_is_refused(tmp_path):
    # An empty file is a wrong path or an unsaved editor, not a request for a 200-epoch default run.
    with pytest.raises(ConfigError, match="is empty"):
        load_config(write(tmp_path / "empty.yaml", "# nothing\n"))


def test_resolved_yaml_round_trips(tmp_path):
    cfg = load_config(quickstart_config_path(), ["optim.milestones=[3, 4]", "name=x"])
    assert load_config(write(tmp_path / "config.yaml", config_to_yaml(cfg))) == cfg


@pytest.mark.parametrize("path", [*EXAMPLES, quickstart_config_path()], ids=lambda p: Path(p).name)
def test_shipped_configs_validate(path):
    cfg = load_config(path)
    assert cfg.model["type"] in ("bbn", "ride")  # ride_cifar100_lt.yaml: RIDE on BBN's CIFAR-100-LT data
    assert cfg.train.epochs > max(cfg.optim.milestones) or cfg.optim.schedule != "multistep"


def test_examples_are_found():
    assert len(EXAMPLES) >= 5


def test_quickstart_is_the_short_bbn_recipe():
    cfg = load_config(quickstart_config_path())
    assert cfg.data.dataset == "embedded" and cfg.train.epochs == 20 and cfg.data.batch_size == 64
    assert cfg.model["type"] == "bbn" and cfg.optim.milestones[-1] < cfg.train.epochs
    assert cfg.train.eval_every == cfg.train.epochs  # the test split once, at the end


# ----------------------------------------------------------------------------- overrides
def test_overrides_parse_yaml_values():
    cfg = load_config(None, [
        "train.epochs=10", "optim.lr=0.05", "optim.milestones=[3, 5]", "train.amp=false", "name=null",
        "data.imbalance_ratio=50", "plugins=[]", "optim.nesterov=yes", "model.schedule={type: step, switch_epoch: 2}",
    ])
    assert cfg.train.epochs == 10 and isinstance(cfg.train.epochs, int)
    assert cfg.optim.lr == 0.05 and cfg.optim.milestones == [3, 5]
    assert cfg.train.amp is False and cfg.name is None and cfg.optim.nesterov is True
    assert cfg.data.imbalance_ratio == 50.0
    assert cfg.model["schedule"] == {"type": "step", "switch_epoch": 2}


def test_override_changes_one_key_of_the_default_model():
    cfg = load_config(None, ["model.backbone=resnet20_cifar"])
    assert cfg.model == {"type": "bbn", "backbone": "resnet20_cifar"}


def test_overrides_win_over_the_file_and_apply_in_order(tmp_path):
    path = write(tmp_path / "run.yaml", "train:\n  epochs: 7\n")
    assert load_config(path, ["train.epochs=8", "train.epochs=9"]).train.epochs == 9


def test_a_name_becomes_a_spec_when_an_option_is_set():
    cfg = load_config(quickstart_config_path(), ["model.loss=focal", "model.loss.gamma=1"])
    assert cfg.model["loss"] == {"type": "focal", "gamma": 1}
    cfg = load_config(quickstart_config_path(), ["model.loss=focal", "model.loss.gamma=1", "model.loss=ldam"])
    assert cfg.model["loss"] == "ldam"


def test_apply_overrides_builds_nested_sections():
    assert apply_overrides({}, ["a.b.c=1", "a.b.d=[x, 2]"]) == {"a": {"b": {"c": 1, "d": ["x", 2]}}}
    # a leaf may share the name of the section that holds it
    assert apply_overrides({"loss": {"loss": "focal"}}, ["loss.loss.loss=2"]) == {
        "loss": {"loss": {"type": "focal", "loss": 2}}
    }


@pytest.mark.parametrize("item", ["train.epochs", "=3", "train.epochs 3"])
def test_override_without_key_value_form(item):
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, [item])


def test_override_value_that_is_not_yaml():
    with pytest.raises(ConfigError, match=r"optim\.milestones.*cannot parse"):
        load_config(None, ["optim.milestones=[1, 2"])


def test_override_into_a_value_that_is_not_a_section():
    with pytest.raises(ConfigError, match=r"optim\.lr\.x.*not a section"):
        load_config(None, ["optim.lr.x=1"])


# ----------------------------------------------------------------------------- errors name the field
@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        (["train.epochs=-1"], "train.epochs"),
        (["train.epochs=0"], "train.epochs"),
        (["train.epoch=3"], "train.epoch"),
        (["trainer.epochs=3"], "trainer"),
        (["data.dataset=imagenet21k"], "data.dataset"),
        (["data.batch_size=many"], "data.batch_size"),
        (["data.val_fraction=1.0"], "data.val_fraction"),
        (["optim.momentum=1.5"], "optim.momentum"),
        (["optim.schedule=poly"], "optim.schedule"),
        (["optim.milestones=[0, 5]"], "optim.milestones"),
        (["train.max_steps_per_epoch=0"], "train.max_steps_per_epoch"),
    ],
)
def test_invalid_values_name_the_field(overrides, field):
    with pytest.raises(ConfigError, match=r"invalid config") as info:
        load_config(None, overrides)
    assert field in str(info.value)


def test_negative_epochs_gives_reason_and_value():
    with pytest.raises(ConfigError) as info:
        load_config(quickstart_config_path(), ["train.epochs=-1"])
    message = str(info.value)
    assert "train.epochs" in message and "greater than 0" in message and "-1" in message


def test_unknown_field_in_file_is_named(tmp_path):
    path = write(tmp_path / "run.yaml", "optim:\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"optim\.learning_rate: Extra inputs are not permitted"):
        load_config(path)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.yaml.*does not exist"):
        load_config(tmp_path / "nope.yaml")


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_file_must_hold_a_mapping(tmp_path, text):
    with pytest.raises(ConfigError, match="mapping at the top level"):
        load_config(write(tmp_path / "list.yaml", text))


def test_file_that_is_not_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path / "bad.yaml", "train: {epochs: 3\n"))


@pytest.mark.parametrize("model", ["{backbone: resnet20_cifar}", "{type: ''}", "{type: 3}"])
def test_model_needs_a_type(tmp_path, model):
    with pytest.raises(ConfigError, match=r"model: .*needs a 'type'"):
        load_config(write(tmp_path / "run.yaml", f"model: {model}\n"))


def test_invalid_model_override_fails_before_any_work():
    with pytest.raises(ConfigError, match=r"model: .*needs a 'type'"):
        load_config(None, ["model={backbone: resnet20_cifar}"])


def test_assignment_is_validated():
    cfg = RunConfig()
    with pytest.raises(ValueError, match="epochs"):
        cfg.train.epochs = -3


# ----------------------------------------------------------------------------- inheritance: _base_
def test_base_is_found_relative_to_the_file_and_merged_under_it(tmp_path):
    (tmp_path / "recipes").mkdir()
    write(tmp_path / "recipes" / "parent.yaml",
          "model: {type: bbn, backbone: resnet20_cifar, loss: {type: focal, gamma: 2.0}}\n"
          "train: {epochs: 30}\noptim: {lr: 0.05, milestones: [10, 20]}\n")
    child = write(tmp_path / "recipes" / "child.yaml",
                  "_base_: parent.yaml\nmodel: {loss: {gamma: 1.0}}\ntrain: {epochs: 40}\n")
    cfg = load_config(child)
    assert cfg.model == {"type": "bbn", "backbone": "resnet20_cifar", "loss": {"type": "focal", "gamma": 1.0}}
    assert (cfg.train.epochs, cfg.optim.lr, cfg.optim.milestones) == (40, 0.05, [10, 20])
    # An override still wins over both files.
    assert load_config(child, ["train.epochs=3"]).train.epochs == 3


def test_replace_marker_and_another_type_replace_the_inherited_mapping(tmp_path):
    write(tmp_path / "parent.yaml",
          "model: {type: bbn, backbone: resnet20_cifar, schedule: linear, loss: {type: focal, gamma: 2.0}}\n")
    other_method = write(tmp_path / "ce.yaml", "_base_: parent.yaml\nmodel: {type: ce, backbone: resnet20_cifar}\n")
    assert load_config(other_method).model == {"type": "ce", "backbone": "resnet20_cifar"}
    replaced = write(tmp_path / "replaced.yaml",
                     "_base_: parent.yaml\nmodel: {backbone: resnet32_cifar, loss: {_replace_: true, type: focal}}\n")
    assert load_config(replaced).model["loss"] == {"type": "focal"}
    assert load_config(replaced).model["schedule"] == "linear"
    whole = write(tmp_path / "whole.yaml", "_base_: parent.yaml\nmodel: {_replace_: true, type: bbn}\n")
    assert load_config(whole).model == {"type": "bbn"}
    # Without either, the mappings merge.
    merged = write(tmp_path / "merged.yaml", "_base_: parent.yaml\nmodel: {loss: {type: focal}}\n")
    assert load_config(merged).model["loss"] == {"type": "focal", "gamma": 2.0}


def test_several_bases_merge_in_order(tmp_path):
    write(tmp_path / "a.yaml", "train: {epochs: 5}\ndata: {batch_size: 16}\n")
    write(tmp_path / "b.yaml", "train: {epochs: 7}\n")
    cfg = load_config(write(tmp_path / "c.yaml", "_base_: [a.yaml, b.yaml]\nseed: 3\n"))
    assert (cfg.train.epochs, cfg.data.batch_size, cfg.seed) == (7, 16, 3)


@pytest.mark.parametrize(("text", "match"), [
    ("_base_: missing.yaml\n", r"_base_: 'missing.yaml' in .* does not exist \(looked for .*missing.yaml'\); a base is found relative"),
    ("_base_: 3\n", r"_base_ in .* must be a file name or a list of them"),
    ("_base_: self.yaml\n", r"inherits from itself"),
    ("_base_: []\ntrain: {_replace_: maybe}\n", r"train._replace_ must be true or false"),
])
def test_bad_inheritance_is_named(tmp_path, text, match):
    with pytest.raises(ConfigError, match=match):
        load_config(write(tmp_path / "self.yaml", text))


def test_resolved_config_holds_no_markers(tmp_path):
    write(tmp_path / "parent.yaml", "model: {type: ce, backbone: resnet20_cifar}\n")
    cfg = load_config(write(tmp_path / "child.yaml", "_base_: parent.yaml\noptim: {_replace_: true, lr: 0.3}\n"))
    text = config_to_yaml(cfg)
    assert "_base_" not in text and "_replace_" not in text
    assert cfg.optim.lr == 0.3 and cfg.optim.momentum == RunConfig().optim.momentum  # sections keep their defaults
