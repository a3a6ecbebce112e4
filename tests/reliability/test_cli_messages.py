"""What ``lttk`` prints: one-line errors that name the problem and the fix (docs/cli.md), user
text shown as written, and results that are shown even with ``--quiet``.

Each case runs ``lttk ...`` through the CLI's ``main`` in this process (``lttk_main``), where an
exception the CLI does not turn into a message propagates as the user's traceback would.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lttoolkit import build
from lttoolkit.engine.checkpoint import load_checkpoint, save_checkpoint
from lttoolkit.errors import ConfigError
from lttoolkit.registry import DISABLE_ENV

from ._support import random_image


def run_args(tmp_path: Path, image_set, *extra: str) -> list[str]:
    return image_set.overrides(f"output_dir={tmp_path / 'runs'}", "name=run", *extra)


# ----------------------------------------------------------------------------- item 9: user text is not markup
@pytest.mark.parametrize("config", ["cfg/[/x].yaml", "cfg/[bold]x[/bold].yaml"])
def test_a_config_path_with_brackets_is_shown_as_written(tmp_path, lttk_main, config):
    code, out, err = lttk_main("train", tmp_path / config)
    assert code == 2, (out, err)
    assert f"config file '{tmp_path / config}' does not exist" in err


def test_a_checkpoint_path_with_brackets_is_shown_as_written(tmp_path, lttk_main):
    code, out, err = lttk_main("eval", tmp_path / "ck" / "[/a].pt")
    assert code == 2, (out, err)
    assert f"{tmp_path / 'ck' / '[/a].pt'}" in err


def test_the_plot_extra_is_shown_with_its_brackets(run_copy, lttk_main, monkeypatch, tmp_path):
    run_dir, _ = run_copy
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as without lttoolkit[plot]
    code, out, err = lttk_main("analyze", run_dir / "last.pt", "--plot", tmp_path / "norms.png")
    assert code == 2, (out, err)
    assert "pip install 'lttoolkit[plot]'" in err


def test_a_run_folder_with_brackets_is_shown_as_written(tmp_path, image_set, lttk_main):
    code, out, err = lttk_main("train", *image_set.overrides(f"output_dir={tmp_path / 'o[/x]'}", "name=r[i]"),
                               "--quiet")
    assert code == 0, (out, err)
    assert f"run folder: {tmp_path / 'o[/x]' / 'r[i]'}" in out


# ----------------------------------------------------------------------------- item 10: tracebacks that were
def test_eval_of_a_bare_state_dict_names_what_it_is(tmp_path, lttk_main):
    path = tmp_path / "weights.pt"
    save_checkpoint(dict(build("ce", backbone="resnet20_cifar", num_classes=3).state_dict()), path)
    for command in (["eval", path, "--device", "cpu"], ["analyze", path]):
        code, out, err = lttk_main(*command)
        assert code == 2, (out, err)
        assert "is a bare state dict (only weights), not an lttoolkit run checkpoint" in err
        assert "best.pt or last.pt" in err


@pytest.mark.skipif(getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available(),
                    reason="this machine has MPS")
def test_mps_without_mps_is_a_clear_error(tmp_path, image_set, lttk_main):
    code, out, err = lttk_main("train", *run_args(tmp_path, image_set, "train.device=mps"), "--quiet")
    assert code == 2, (out, err)
    assert "train.device='mps' but Apple's MPS is not available here" in err and "train.device=cpu" in err


def test_predict_refuses_a_decompression_bomb_naming_it_and_keeps_the_other_results(run_copy, lttk_main, tmp_path,
                                                                                   monkeypatch):
    run_dir, _ = run_copy
    good, big, bigger = tmp_path / "good.png", tmp_path / "big.png", tmp_path / "bigger.png"
    random_image(np.random.default_rng(0)).save(good)
    Image.new("L", (64, 64)).save(big)
    Image.new("L", (128, 128)).save(bigger)
    # 64x64 is above the (lowered) limit, where PIL only warns; 128x128 is above twice it, where PIL raises.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 64 * 64 - 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a raw warning would fail here
        code, out, err = lttk_main("predict", run_dir / "last.pt", good, big, bigger)
    assert code == 2, (out, err)
    assert str(good) in out and "not read" in out
    assert f"2 of 3 image(s) could not be read: {big}; {bigger}" in err
    assert "MAX_IMAGE_PIXELS" in out and "decompression" in out


def test_a_vit_at_the_wrong_input_size_is_refused_at_build_time_with_the_size_to_use(tmp_path, lttk_main):
    code, out, err = lttk_main("train", "model.type=ce", "model.backbone=vit_tiny_patch16_224",
                               "train.epochs=1", "train.max_steps_per_epoch=1", "train.device=cpu",
                               f"output_dir={tmp_path / 'runs'}", "--quiet")
    assert code == 2, (out, err)
    assert "cannot take the data's 1x28x28 images" in err and "set data.image_size=224" in err
    assert not (tmp_path / "runs").exists()


def test_batch_size_one_with_batch_norm_after_pooling_is_refused_before_training(tmp_path, lttk_main):
    code, out, err = lttk_main("train", "model.type=ce", "model.backbone=mobilenetv3_small_050", "data.batch_size=1",
                               "train.epochs=1", "train.max_steps_per_epoch=1", "train.device=cpu",
                               f"output_dir={tmp_path / 'runs'}", "--quiet")
    assert code == 2, (out, err)
    assert "data.batch_size=1 does not train" in err and "data.batch_size=2 or more" in err
    assert not (tmp_path / "runs").exists()


# ----------------------------------------------------------------------------- item 12: confusing input
@pytest.mark.parametrize(("override", "suggestion"), [
    ("train.epoch=1", "did you mean train.epochs?"),
    ("data.batchsize=8", "did you mean data.batch_size"),
    ("model.backbone=convnext_tinny", "Did you mean 'convnext_tiny'"),
    ("model.backbone=resnet5", "'resnet50'"),
])
def test_typos_get_a_did_you_mean(tmp_path, image_set, lttk_main, override, suggestion):
    code, out, err = lttk_main("train", *run_args(tmp_path, image_set, override), "--quiet")
    assert code == 2, (out, err)
    assert suggestion in err


def test_a_boolean_is_not_a_number_of_epochs(tmp_path, image_set, lttk_main):
    code, out, err = lttk_main("train", *run_args(tmp_path, image_set, "train.epochs=true"), "--quiet")
    assert code == 2, (out, err)
    assert "train.epochs" in err and "expected a number, got true" in err


def test_an_empty_config_file_is_refused(tmp_path, lttk_main):
    config = tmp_path / "empty.yaml"
    config.write_text("# to do\n", encoding="utf-8")
    code, out, err = lttk_main("train", config, f"output_dir={tmp_path / 'runs'}")
    assert code == 2, (out, err)
    assert f"config file '{config}' is empty" in err
    assert not (tmp_path / "runs").exists()


def test_a_folder_given_as_config_is_named_a_folder(run_copy, lttk_main):
    run_dir, _ = run_copy
    code, out, err = lttk_main("train", run_dir)
    assert code == 2, (out, err)
    assert "is a folder, not a YAML file" in err and f"did you mean '{run_dir / 'config.yaml'}'" in err


def test_a_key_given_twice_in_a_config_is_refused(tmp_path, lttk_main):
    config = tmp_path / "twice.yaml"
    config.write_text("train:\n  epochs: 3\n  epochs: 300\n", encoding="utf-8")
    code, out, err = lttk_main("train", config, f"output_dir={tmp_path / 'runs'}")
    assert code == 2, (out, err)
    assert "found the key 'epochs' twice" in err and "line 2" in err


def test_an_option_between_overrides_is_accepted(tmp_path, image_set, lttk_main):
    overrides = run_args(tmp_path, image_set)
    code, out, err = lttk_main("train", *overrides[:3], "--quiet", *overrides[3:])
    assert code == 0, (out, err)
    assert (tmp_path / "runs" / "run" / "results.json").is_file()


# ----------------------------------------------------------------------------- item 14: output and arguments
def test_quiet_still_prints_the_results_and_the_run_folder(tmp_path, image_set, lttk_main):
    code, out, err = lttk_main("train", *run_args(tmp_path, image_set), "--quiet")
    assert code == 0, (out, err)
    assert "test metrics (last epoch)" in out and "top-1" in out
    assert f"run folder: {tmp_path / 'runs' / 'run'}" in out


def test_predict_topk_zero_is_refused(run_copy, lttk_main, tmp_path, capsys):
    run_dir, _ = run_copy
    image = tmp_path / "x.png"
    random_image(np.random.default_rng(0)).save(image)
    with pytest.raises(SystemExit) as caught:
        lttk_main("predict", run_dir / "last.pt", image, "--topk", "0")
    assert caught.value.code == 2
    assert "--topk: 0 must be at least 1" in capsys.readouterr().err
    from lttoolkit.engine import predict

    with pytest.raises(ConfigError, match="at least 1"):
        predict(run_dir / "last.pt", [image], topk=0)


def test_predict_with_one_unreadable_image_gives_the_others(run_copy, lttk_main, tmp_path):
    run_dir, _ = run_copy
    good, broken = tmp_path / "good.png", tmp_path / "broken.png"
    random_image(np.random.default_rng(0)).save(good)
    broken.write_bytes(b"not an image")
    code, out, err = lttk_main("predict", run_dir / "last.pt", broken, good, "--json")
    assert code == 2, (out, err)
    import json

    predictions = json.loads(out)
    assert [item["image"] for item in predictions] == [str(broken), str(good)]
    assert "error" in predictions[0] and "top" not in predictions[0]
    assert predictions[1]["top"][0]["probability"] > 0


@pytest.mark.parametrize(("options", "fragment"), [
    ({"num_classes": "10"}, "num_classes must be a whole number of at least 1, got '10' (str)"),
    ({"num_classes": 0}, "num_classes must be a whole number of at least 1, got 0"),
    ({"in_chans": 0}, "in_chans must be a whole number of at least 1, got 0"),
])
def test_build_checks_num_classes_and_in_chans(options, fragment):
    with pytest.raises(ConfigError) as caught:
        build("ce", backbone="resnet20_cifar", **options)
    assert fragment in str(caught.value)


def test_lttk_plugins_with_discovery_off_does_not_claim_none_are_installed(lttk_main, monkeypatch):
    monkeypatch.setenv(DISABLE_ENV, "1")
    code, out, err = lttk_main("plugins")
    assert code == 0, (out, err)
    assert "plugin discovery is off" in out and "not looked for" in out
    assert "no plugins installed" not in out


def test_checkpoint_fixture_is_a_run(finished_run):
    # The shared run these tests use is an lttoolkit run checkpoint (guards the fixtures above).
    assert load_checkpoint(finished_run[0] / "last.pt")["recipe"]["method"] == "bbn"
