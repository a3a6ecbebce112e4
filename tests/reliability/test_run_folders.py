"""A run folder belongs to one run: never overwritten, never shared, never outside ``output_dir``,
and ``--resume`` continues exactly the run it names or refuses, saying what differs.

Runs are the tiny ones of ``_support.TINY_RUN`` (one or two epochs of two steps). A finished
run is trained once per session (conftest ``finished_run``) and copied for each test that needs one.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from lttoolkit.engine.checkpoint import load_checkpoint
from lttoolkit.engine.config import load_config
from lttoolkit.engine.trainer import Trainer

from ._support import finish, lttk_env


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


# ----------------------------------------------------------------------------- item 1: a name used twice
def test_reusing_a_run_name_is_refused_and_leaves_the_run_as_it_was(run_copy, lttk_main):
    run_dir, overrides = run_copy
    before = folder_bytes(run_dir)
    code, out, err = lttk_main("train", *overrides, "model.type=ce", "train.epochs=1", "--quiet")
    assert code == 2, (out, err)
    assert f"error: RunExistsError: the run folder {run_dir} already holds a run" in err
    assert f"lttk train --resume {run_dir}" in err and "name=NEW" in err and "--overwrite" in err
    assert folder_bytes(run_dir) == before
    assert sorted(p.name for p in run_dir.parent.iterdir()) == ["full"]


def test_training_again_from_a_runs_own_config_yaml_is_refused(run_copy, lttk_main):
    # docs: `lttk train runs/<run>/config.yaml` reproduces a run; its `name:` points at the old folder.
    run_dir, _ = run_copy
    before = folder_bytes(run_dir)
    code, out, err = lttk_main("train", run_dir / "config.yaml", "--quiet")
    assert code == 2, (out, err)
    assert "already holds a run" in err and "name=NEW" in err
    assert folder_bytes(run_dir) == before


def test_overwrite_moves_the_earlier_run_aside_and_deletes_nothing(run_copy, lttk_main):
    run_dir, overrides = run_copy
    before = folder_bytes(run_dir)
    code, out, err = lttk_main("train", *overrides, "model.type=ce", "train.epochs=1", "--overwrite", "--quiet")
    assert code == 0, (out, err)
    moved = [p for p in run_dir.parent.iterdir() if p.name.startswith("full.replaced-")]
    assert len(moved) == 1 and folder_bytes(moved[0]) == before
    assert f"moved to {moved[0]}" in out
    assert load_checkpoint(run_dir / "last.pt")["recipe"]["method"] == "ce"


# ----------------------------------------------------------------------------- item 2: runs started together
def test_two_runs_with_one_name_started_together_never_share_the_folder(tmp_path, image_set):
    from ._support import start_lttk

    args = ["train", *image_set.overrides(f"output_dir={tmp_path / 'runs'}", "name=conc"), "--quiet"]
    env = lttk_env()
    processes = [start_lttk(args, cwd=tmp_path, env=env) for _ in range(2)]
    outcomes = sorted((finish(p) for p in processes), key=lambda outcome: outcome[0])
    (code_a, out_a, err_a), (code_b, out_b, err_b) = outcomes
    assert (code_a, code_b) == (0, 2), outcomes
    assert "RunExistsError" in err_b and "already holds" in " ".join(err_b.split())
    run_dir = tmp_path / "runs" / "conc"
    lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 1  # one run's single epoch, not two interleaved
    assert load_checkpoint(run_dir / "best.pt")["config"] == load_checkpoint(run_dir / "last.pt")["config"]


def test_default_names_chosen_in_the_same_second_are_distinct(tmp_path, image_set, monkeypatch):
    cfg = load_config(None, image_set.overrides(f"output_dir={tmp_path / 'runs'}"))
    # Four runs started in the same second (the clock is held still: a loaded machine may take longer).
    monkeypatch.setattr(time, "strftime", lambda fmt, *args: "20260101-120000")
    folders = {Trainer(cfg, progress=False).run_dir for _ in range(4)}
    assert len(folders) == 4, folders
    for folder in folders:
        assert folder.parent == tmp_path / "runs"
        assert folder.name.startswith("bbn-json-")


def test_a_folder_is_claimed_once(tmp_path):
    from lttoolkit.engine.trainer import claim_run_dir
    from lttoolkit.errors import RunExistsError

    run_dir = tmp_path / "runs" / "x"
    assert claim_run_dir(run_dir) is None
    with pytest.raises(RunExistsError):
        claim_run_dir(run_dir)
    (tmp_path / "empty").mkdir()
    claim_run_dir(tmp_path / "empty")  # an empty folder made beforehand is claimed by its config.yaml
    with pytest.raises(RunExistsError):
        claim_run_dir(tmp_path / "empty")


# ----------------------------------------------------------------------------- item 8: names that leave output_dir
@pytest.mark.parametrize("name", ["../../x", "sub/dir", "..", "ABSOLUTE"])
def test_a_name_that_is_not_one_folder_is_refused_before_anything_is_written(tmp_path, image_set, lttk_main, name):
    if name == "ABSOLUTE":
        name = str(tmp_path / "absolute-name")
    out_dir = tmp_path / "a" / "b" / "runs"
    code, out, err = lttk_main("train", *image_set.overrides(f"output_dir={out_dir}", f"name={name}"), "--quiet")
    assert code == 2, (out, err)
    assert "error: ConfigError: invalid config: name:" in err and "one folder under output_dir" in err
    assert not (tmp_path / "a").exists() and not (tmp_path / "x").exists()
    assert not (tmp_path / "absolute-name").exists()


# ----------------------------------------------------------------------------- item 7: --resume that differs
def resume(lttk_main, run_dir: Path, *extra: str) -> tuple[int, str, str]:
    return lttk_main("train", "--resume", run_dir, *extra, "--quiet")


@pytest.mark.parametrize(("override", "named"), [
    ("model.backbone=resnet32_cifar", "model.backbone: 'resnet20_cifar' -> 'resnet32_cifar'"),
    ("optim.lr=0.0123", "optim.lr: 0.05 -> 0.0123"),  # the quick start's lr is 0.05
    ("seed=3", "seed: 0 -> 3"),
])
def test_resume_with_changed_settings_names_them_and_changes_nothing(run_copy, lttk_main, override, named):
    run_dir, _ = run_copy
    before = folder_bytes(run_dir)
    code, out, err = resume(lttk_main, run_dir, override)
    assert code == 2, (out, err)
    assert "error: ResumeMismatchError: cannot resume" in err and named in err
    assert "--from" in err and "Traceback" not in err
    assert folder_bytes(run_dir) == before


def test_resume_after_editing_config_yaml_is_refused(run_copy, lttk_main):
    run_dir, _ = run_copy
    config = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
    config["model"]["backbone"] = "resnet32_cifar"
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    code, out, err = resume(lttk_main, run_dir)
    assert code == 2, (out, err)
    assert "model.backbone: 'resnet20_cifar' -> 'resnet32_cifar'" in err and "undo the edit" in err


def test_resume_with_fewer_epochs_than_done_is_refused(run_copy, lttk_main):
    run_dir, _ = run_copy
    code, out, err = resume(lttk_main, run_dir, "train.epochs=1")
    assert code == 2, (out, err)
    assert "train.epochs=1" in err and "already trained 2 epochs of 2" in err


def test_resume_with_from_is_refused(run_copy, lttk_main):
    run_dir, _ = run_copy
    code, out, err = lttk_main("train", "--resume", run_dir, "--from", run_dir / "best.pt", "--quiet")
    assert code == 2, (out, err)
    assert "--from" in err and "--resume" in err and "not both" in err
    assert "init_from" not in load_checkpoint(run_dir / "last.pt")["config"] or \
        load_checkpoint(run_dir / "last.pt")["config"]["init_from"] is None


def test_resume_may_change_where_it_runs_and_keeps_its_config_yaml(run_copy, lttk_main):
    run_dir, _ = run_copy
    config_before = (run_dir / "config.yaml").read_bytes()
    code, out, err = resume(lttk_main, run_dir, "data.num_workers=0", "train.device=cpu")
    assert code == 0, (out, err)
    assert (run_dir / "config.yaml").read_bytes() == config_before
