"""A killed, interrupted or failing run keeps its last good epoch and can be continued.

The process tests run ``python -m lttoolkit train`` (what ``lttk train`` runs) in a subprocess.
A plugin alpha schedule (BBN's parabolic one) stalls the run at a chosen epoch when an
environment variable asks it to, so that SIGKILL or SIGINT lands at a known point, after a
checkpoint, instead of racing the end of a 2-second run. Both the interrupted and the reference
runs use that same schedule, so their configs are identical.
"""

from __future__ import annotations

import errno
import json
import os
import signal
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lttoolkit.engine.checkpoint import CheckpointWriteError, load_checkpoint
from lttoolkit.engine.config import load_config
from lttoolkit.engine.evaluate import load_model
from lttoolkit.engine.trainer import NonFiniteLossError, Trainer, train
from lttoolkit.errors import LTToolkitError
from lttoolkit.registry import LOSSES, load_plugin, registration_source

from ._support import (
    STALL_ENV,
    STALL_MODULE,
    STALL_SCHEDULE,
    finish,
    lttk_env,
    state_dicts_equal,
    wait_for_checkpoint,
)

TIMING_KEYS = {"images_per_second", "epoch_seconds"}


def metrics(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING_KEYS} for line in lines]


def results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text(encoding="utf-8"))


def stalling_run(image_set, *extra: str) -> list[str]:
    return image_set.overrides(f"plugins=[{STALL_MODULE}]", f"model.schedule={STALL_SCHEDULE}", *extra)


# ----------------------------------------------------------------------------- SIGKILL, then --resume
def test_killed_run_resumes_to_exactly_the_uninterrupted_result(tmp_path, image_set, stall_plugin_dir, spawn):
    config = stalling_run(image_set, "train.epochs=4")
    env = lttk_env(stall_plugin_dir)
    killed_dir, reference_dir = tmp_path / "killed" / "run", tmp_path / "reference" / "run"
    # Both start at once (2 cores); the reference runs the same config to the end.
    killed = spawn(["train", *config, f"output_dir={killed_dir.parent}", "name=run", "--quiet"],
                   cwd=tmp_path, env={**env, STALL_ENV: "2/4"})
    reference = spawn(["train", *config, f"output_dir={reference_dir.parent}", "name=run", "--quiet"],
                      cwd=tmp_path, env=env)
    assert wait_for_checkpoint(killed_dir / "last.pt", 1, killed) == 1
    killed.send_signal(signal.SIGKILL)
    assert killed.wait(timeout=60) == -signal.SIGKILL

    # What the kill left: epochs 0 and 1, no results.
    assert load_checkpoint(killed_dir / "last.pt")["epoch"] == 1
    assert [record["epoch"] for record in metrics(killed_dir)] == [0, 1]
    assert not (killed_dir / "results.json").exists()

    code, out, err = finish(spawn(["train", "--resume", str(killed_dir), "--quiet"], cwd=tmp_path, env=env))
    assert code == 0, (out, err)
    code, out, err = finish(reference)
    assert code == 0, (out, err)

    resumed, uninterrupted = results(killed_dir), results(reference_dir)
    assert resumed["test"] == uninterrupted["test"]
    assert resumed["best_checkpoint"] == uninterrupted["best_checkpoint"]
    assert resumed["train_class_counts"] == uninterrupted["train_class_counts"]
    assert metrics(killed_dir) == metrics(reference_dir)
    assert [record["epoch"] for record in metrics(killed_dir)] == [0, 1, 2, 3]

    final, expected = load_checkpoint(killed_dir / "last.pt"), load_checkpoint(reference_dir / "last.pt")
    assert final["epoch"] == expected["epoch"] == 3
    assert state_dicts_equal(final["model"], expected["model"]) == []
    assert final["optimizer"]["state"].keys() == expected["optimizer"]["state"].keys()
    for key, state in final["optimizer"]["state"].items():
        assert torch.equal(state["momentum_buffer"], expected["optimizer"]["state"][key]["momentum_buffer"]), key
    assert final["lr_scheduler"] == expected["lr_scheduler"]


# ----------------------------------------------------------------------------- Ctrl-C
def test_ctrl_c_exits_130_with_a_resume_hint_and_a_loadable_checkpoint(tmp_path, image_set, stall_plugin_dir,
                                                                       stall_plugin_loaded, spawn):
    run_dir = tmp_path / "runs" / "run"
    process = spawn(
        ["train", *stalling_run(image_set, "train.epochs=3", f"output_dir={run_dir.parent}", "name=run")],
        cwd=tmp_path, env=lttk_env(stall_plugin_dir, COLUMNS="10000", **{STALL_ENV: "1/3"}),
    )
    wait_for_checkpoint(run_dir / "last.pt", 0, process)
    process.send_signal(signal.SIGINT)
    code, out, err = finish(process, timeout=60)
    said = " ".join((out + err).split())
    assert code == 130, said
    assert "interrupted" in err
    assert f"{run_dir / 'last.pt'} holds epoch 0 (0-based)" in said
    assert f"lttk train --resume {run_dir}" in said
    assert "Traceback" not in said
    load_plugin(STALL_MODULE)  # a checkpoint never imports the plugins it names: the user loads them
    model, state = load_model(run_dir / "last.pt")
    assert state["epoch"] == 0 and isinstance(model, nn.Module)

    # The hint works: the run continues from epoch 1 to the end.
    resumed = train(resume=run_dir, progress=False)
    assert resumed["epochs"] == 3
    assert [record["epoch"] for record in metrics(run_dir)] == [0, 1, 2]


def test_ctrl_c_with_quiet_still_says_how_to_resume(tmp_path, image_set, stall_plugin_loaded, lttk_main, monkeypatch):
    monkeypatch.setenv(STALL_ENV, "interrupt:1/3")
    run_dir = tmp_path / "runs" / "run"
    code, out, err = lttk_main(
        "train", *stalling_run(image_set, "train.epochs=3", f"output_dir={run_dir.parent}", "name=run"), "--quiet"
    )
    assert code == 130
    assert load_checkpoint(run_dir / "last.pt")["epoch"] == 0
    assert f"lttk train --resume {run_dir}" in out + " " + err


# ----------------------------------------------------------------------------- a checkpoint write that fails
@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="finds the file being written through /proc")
def test_failed_checkpoint_write_keeps_the_previous_checkpoint(tmp_path, image_set, monkeypatch):
    cfg = load_config(None, image_set.overrides("train.epochs=2", f"output_dir={tmp_path / 'runs'}", "name=run"))
    trainer = Trainer(cfg, progress=False)
    last = trainer.run_dir / "last.pt"
    real_save = torch.save
    attempts: list[str] = []

    def save_until_the_disk_is_full(obj, stream, *args, **kwargs):
        # save_checkpoint writes into a temporary file next to the target, then renames it.
        being_written = Path(os.readlink(f"/proc/self/fd/{stream.fileno()}")).name
        if being_written.startswith(".last.pt.") and obj.get("epoch") == 1:
            attempts.append(being_written)
            stream.write(b"PK\x03\x04" + bytes(4096))  # part of a zip archive, then the disk is full
            stream.flush()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, stream, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save_until_the_disk_is_full)
    with pytest.raises(CheckpointWriteError) as caught:
        trainer.fit()
    assert len(attempts) == 1
    message = str(caught.value)
    assert f"could not write {last}" in message
    assert os.strerror(errno.ENOSPC) in message
    assert "previous checkpoint" in message and "unchanged" in message
    assert isinstance(caught.value.__cause__, OSError) and caught.value.__cause__.errno == errno.ENOSPC

    # What was kept: epoch 0, whole; no temporary file left behind.
    assert load_checkpoint(last)["epoch"] == 0
    load_model(last)
    assert sorted(p.name for p in trainer.run_dir.iterdir() if p.name.endswith(".tmp")) == []
    assert not (trainer.run_dir / "results.json").exists()

    # With space again, the run continues from that checkpoint to the end.
    monkeypatch.setattr(torch, "save", real_save)
    finished = train(resume=trainer.run_dir, progress=False)
    assert finished["epochs"] == 2
    assert load_checkpoint(last)["epoch"] == 1
    assert [record["epoch"] for record in metrics(trainer.run_dir)] == [0, 1]


def test_output_folder_that_cannot_be_created_is_a_clear_error(tmp_path, image_set, lttk_main):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a regular file where a folder should be\n")
    code, out, err = lttk_main(
        "train", *image_set.overrides(f"output_dir={blocker / 'runs'}", "name=run"), "--quiet"
    )
    assert code == 2, (out, err)
    assert str(blocker) in err and "output_dir" in err


# ----------------------------------------------------------------------------- a loss that turns NaN
class NanFromEpoch(nn.Module):
    """Cross-entropy that returns NaN from a given epoch on (as an unstable plugin loss might)."""

    def __init__(self, class_counts, nan_from_epoch: int = 1) -> None:
        super().__init__()
        self.nan_from_epoch = nan_from_epoch
        self.epoch = 0

    def set_epoch(self, epoch: int, max_epochs: int) -> None:
        self.epoch = epoch

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        loss = F.cross_entropy(logits, targets)
        return loss * float("nan") if self.epoch >= self.nan_from_epoch else loss


@pytest.fixture
def nan_loss():
    with registration_source("module reliability_nan_loss"):
        LOSSES.register(NanFromEpoch, name="reliability_nan")
    yield "reliability_nan"
    LOSSES.unregister("reliability_nan")


def test_nan_loss_stops_naming_epoch_and_step_and_keeps_the_last_good_checkpoint(tmp_path, image_set, nan_loss,
                                                                                   lttk_main):
    run_dir = tmp_path / "runs" / "run"
    code, out, err = lttk_main(
        "train", *image_set.overrides("train.epochs=3", f"model.loss={nan_loss}", f"output_dir={run_dir.parent}",
                                      "name=run"), "--quiet"
    )
    assert code == 2, (out, err)
    # The loss is read every train.log_every steps (no host sync per step): the error names the interval.
    assert "error: NonFiniteLossError: the loss became nan at epoch 1, within steps 0-" in err
    assert f"{run_dir / 'last.pt'} holds epoch 0 (0-based), the last good one" in err
    assert "optim.lr" in err
    assert issubclass(NonFiniteLossError, (LTToolkitError, FloatingPointError))
    # What was kept: epoch 0 in last.pt and best.pt, its metrics line, no results.
    assert load_checkpoint(run_dir / "last.pt")["epoch"] == 0
    assert load_checkpoint(run_dir / "best.pt")["epoch"] == 0
    assert [record["epoch"] for record in metrics(run_dir)] == [0]
    assert not (run_dir / "results.json").exists()
    weights = load_checkpoint(run_dir / "last.pt")["model"]
    assert all(bool(torch.isfinite(t).all()) for t in weights.values() if t.is_floating_point())


def test_nan_loss_in_the_first_epoch_does_not_promise_a_checkpoint(tmp_path, image_set):
    with registration_source("module reliability_nan_loss"):
        LOSSES.register(NanFromEpoch, name="reliability_nan_at_once")
    try:
        cfg = load_config(None, image_set.overrides("model.loss.type=reliability_nan_at_once",
                                                    "model.loss.nan_from_epoch=0",
                                                    f"output_dir={tmp_path / 'runs'}", "name=run"))
        trainer = Trainer(cfg, progress=False)
        with pytest.raises(NonFiniteLossError) as caught:
            trainer.fit()
    finally:
        LOSSES.unregister("reliability_nan_at_once")
    assert not (trainer.run_dir / "last.pt").exists()
    assert "still holds" not in str(caught.value)
    assert "no checkpoint" in str(caught.value)


# ----------------------------------------------------------------------------- issue 17, item 4: absurd epochs
@pytest.mark.parametrize("epochs", ["1000000000", "100000000000000000000", "1e20", "1.0e+20"])
def test_absurd_epochs_are_refused_at_once(tmp_path, image_set, lttk_main, epochs):
    import time

    started = time.monotonic()
    code, out, err = lttk_main("train", *image_set.overrides(f"train.epochs={epochs}", f"output_dir={tmp_path / 'r'}"),
                               "--quiet")
    assert code == 2, (out, err)
    assert "train.epochs" in err
    assert time.monotonic() - started < 30


def test_the_schedule_check_before_training_takes_constant_time(tmp_path, image_set, monkeypatch):
    import lttoolkit.engine.trainer as trainer_module
    from lttoolkit.engine.config import MAX_EPOCHS

    cfg = load_config(None, image_set.overrides(f"train.epochs={MAX_EPOCHS}", f"output_dir={tmp_path / 'r'}"))
    checked: list[int] = []
    real_build = trainer_module._build_model

    def build_and_count(cfg, data):
        model = real_build(cfg, data)
        schedule = model.training_kwargs
        model.training_kwargs = lambda epoch, epochs: (checked.append(epoch), schedule(epoch, epochs))[1]
        return model

    monkeypatch.setattr(trainer_module, "_build_model", build_and_count)
    Trainer(cfg, progress=False)
    assert 0 < len(checked) <= 1000 and checked[0] == 0 and checked[-1] == MAX_EPOCHS - 1


# ----------------------------------------------------------------------------- issue 17, item 6: a full disk
def full_disk_at(monkeypatch, name: str) -> None:
    """os.write raises ENOSPC for the file ``name`` (found through /proc/self/fd), as on a full disk."""
    real_write = os.write

    def write(descriptor, data):
        try:
            target = os.readlink(f"/proc/self/fd/{descriptor}")
        except OSError:
            target = ""
        if Path(target).name == name:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(descriptor, data)

    monkeypatch.setattr(os, "write", write)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="finds the file being written through /proc")
@pytest.mark.parametrize("name", ["config.yaml", "metrics.jsonl"])
def test_a_full_disk_at_a_run_file_is_a_one_line_error_saying_so(tmp_path, image_set, lttk_main, monkeypatch, name):
    full_disk_at(monkeypatch, name)
    run_dir = tmp_path / "runs" / "run"
    code, out, err = lttk_main("train", *image_set.overrides(f"output_dir={run_dir.parent}", "name=run"), "--quiet")
    assert code == 2, (out, err)
    assert f"error: RunWriteError: could not write" in err and f"{run_dir / name}: no space left on device" in err
    if name == "config.yaml":  # nothing was trained: the folder is released, the same command works again
        assert "nothing was trained" in err and not run_dir.exists()
    else:  # the first epoch's metrics: no checkpoint yet, so start again
        assert "no epoch finished yet" in err and "--overwrite" in err


def test_a_full_disk_during_a_checkpoint_says_no_space_left(tmp_path, monkeypatch):
    from lttoolkit.engine.checkpoint import save_checkpoint

    target = tmp_path / "last.pt"
    save_checkpoint({"epoch": 0, "weights": torch.zeros(4)}, target)
    real_fdopen = os.fdopen

    class FullDisk:
        """A file object that takes a few bytes, then fails as a full disk does."""

        def __init__(self, stream):
            self.stream, self.written = stream, 0

        def write(self, data):
            self.written += len(data)
            if self.written > 1024:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return self.stream.write(data)

        def __getattr__(self, name):
            return getattr(self.stream, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.stream.close()

    monkeypatch.setattr(os, "fdopen", lambda *a, **k: FullDisk(real_fdopen(*a, **k)))
    with pytest.raises(CheckpointWriteError) as caught:
        save_checkpoint({"epoch": 1, "weights": torch.zeros(100_000)}, target)
    message = str(caught.value)
    assert "no space left on device" in message and "unexpected pos" not in message
    assert caught.value.errno == errno.ENOSPC
    assert load_checkpoint(target)["epoch"] == 0


# ----------------------------------------------------------------------------- issue 17, item 11: stage 2 without stage 1
@pytest.mark.parametrize("method", ["crt", "lws", "tau_norm"])
def test_a_decoupling_stage_two_without_from_is_refused(tmp_path, image_set, lttk_main, method):
    code, out, err = lttk_main("train", *image_set.overrides(f"model.type={method}", "data.val_fraction=0.2",
                                                             f"output_dir={tmp_path / 'runs'}"), "--quiet")
    assert code == 2, (out, err)
    assert f"model.type={method} is a decoupling stage 2" in err and "--from" in err
    assert not (tmp_path / "runs").exists()
