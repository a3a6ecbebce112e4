"""Tests of lttoolkit.engine.checkpoint: atomic saves, safe loads, RNG state round trips."""

from __future__ import annotations

import errno
import importlib
import os
import pickle
import random

import numpy as np
import pytest
import torch

from lttoolkit.engine.checkpoint import (
    CheckpointNotFoundError,
    CheckpointWriteError,
    InvalidCheckpointError,
    UnsafeCheckpointError,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from lttoolkit.errors import LTToolkitError

checkpoint_module = importlib.import_module("lttoolkit.engine.checkpoint")


def training_state() -> dict:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    model(torch.randn(8, 4)).sum().backward()
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[2, 4])
    return {
        "epoch": 7,
        "best_top1": 41.5,
        "method": "bbn",
        "history": [{"epoch": 6, "loss": 1.25, "few_shot": None}],
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": capture_rng_state(),
    }


def assert_same(left, right) -> None:
    assert type(left) is type(right) or (isinstance(left, dict) and isinstance(right, dict))
    if isinstance(left, torch.Tensor):
        assert left.dtype == right.dtype and torch.equal(left, right)
    elif isinstance(left, dict):
        assert list(left) == list(right)
        for key in left:
            assert_same(left[key], right[key])
    elif isinstance(left, (list, tuple)):
        assert len(left) == len(right)
        for a, b in zip(left, right):
            assert_same(a, b)
    else:
        assert left == right


def files_in(folder) -> list[str]:
    return sorted(os.listdir(folder))


def test_round_trip_loads_with_weights_only(tmp_path):
    state = training_state()
    written = save_checkpoint(state, tmp_path / "runs" / "last.pt")  # parents created
    assert written == tmp_path / "runs" / "last.pt"
    assert_same(load_checkpoint(written), state)
    # The file is plain data: torch's own safe loader accepts it too.
    assert_same(torch.load(written, weights_only=True), state)
    assert files_in(tmp_path / "runs") == ["last.pt"]  # no temporary file left


def test_overwrite_replaces_previous_checkpoint(tmp_path):
    target = tmp_path / "last.pt"
    save_checkpoint({"epoch": 1}, target)
    save_checkpoint({"epoch": 2}, target)
    assert load_checkpoint(target) == {"epoch": 2}
    assert files_in(tmp_path) == ["last.pt"]


def test_failure_while_serialising_keeps_previous_checkpoint(tmp_path, monkeypatch):
    target = tmp_path / "last.pt"
    save_checkpoint({"epoch": 1, "weights": torch.ones(3)}, target)
    before = target.read_bytes()

    def fill_disk_midway(obj, stream, *args, **kwargs):
        stream.write(b"PK\x03\x04 half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint_module.torch, "save", fill_disk_midway)
    with pytest.raises(CheckpointWriteError, match="No space left") as caught:
        save_checkpoint({"epoch": 2, "weights": torch.zeros(3)}, target)
    monkeypatch.undo()

    assert isinstance(caught.value, OSError) and isinstance(caught.value, LTToolkitError)
    assert str(target) in str(caught.value) and "unchanged" in str(caught.value)
    assert target.read_bytes() == before
    assert load_checkpoint(target)["epoch"] == 1
    assert files_in(tmp_path) == ["last.pt"]


def test_failure_on_rename_keeps_previous_checkpoint(tmp_path, monkeypatch):
    target = tmp_path / "last.pt"
    save_checkpoint({"epoch": 1}, target)
    before = target.read_bytes()

    def read_only_folder(source, destination):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(checkpoint_module.os, "replace", read_only_folder)
    with pytest.raises(CheckpointWriteError, match="Read-only"):
        save_checkpoint({"epoch": 2}, target)
    monkeypatch.undo()
    assert target.read_bytes() == before
    assert files_in(tmp_path) == ["last.pt"]


def test_interrupt_during_save_cleans_up_and_propagates(tmp_path, monkeypatch):
    def interrupted(obj, stream, *args, **kwargs):
        stream.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint_module.torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"epoch": 2}, tmp_path / "last.pt")
    assert files_in(tmp_path) == []


@pytest.mark.parametrize(
    ("value", "where", "hint"),
    [
        (np.ones(2), "state['extra']['array']", "torch.from_numpy"),
        (np.float64(1.0), "state['extra']['array']", "torch.from_numpy"),
        (torch.nn.Linear(2, 2), "state['extra']['array']", "state_dict"),
        (object(), "state['extra']['array']", "convert"),
        ({1, 2}, "state['extra']['array']", "convert"),
    ],
)
def test_non_plain_data_is_rejected_before_writing(tmp_path, value, where, hint):
    target = tmp_path / "last.pt"
    with pytest.raises(InvalidCheckpointError) as caught:
        save_checkpoint({"epoch": 1, "extra": {"array": value}}, target)
    assert where in str(caught.value) and hint in str(caught.value)
    assert files_in(tmp_path) == []


def test_save_rejects_non_dict_and_directory_target(tmp_path):
    with pytest.raises(InvalidCheckpointError, match="must be a dict"):
        save_checkpoint([1, 2], tmp_path / "last.pt")
    with pytest.raises(CheckpointWriteError, match="is a directory"):
        save_checkpoint({"epoch": 1}, tmp_path)


class CreatesMarkerFile:
    """Unpickling this opens (creates) a file: a stand-in for arbitrary code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dumps"])
def test_malicious_checkpoint_is_refused_and_not_executed(tmp_path, writer):
    marker = tmp_path / "marker"
    payload = {"epoch": 1, "model": CreatesMarkerFile(marker)}
    path = tmp_path / "evil.pt"
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))

    with pytest.raises(UnsafeCheckpointError, match="refused to load .* for safety") as caught:
        load_checkpoint(path)
    assert "open" in str(caught.value)  # names what the file tried to import
    assert "nothing from it was executed" in str(caught.value)
    assert not marker.exists()

    # The payload is live: an unsafe load would have run it.
    if writer == "torch.save":
        torch.load(path, weights_only=False)
    else:
        pickle.loads(path.read_bytes())
    assert marker.exists()


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_malicious_pickle_of_any_protocol_is_not_executed(tmp_path, protocol):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"model": CreatesMarkerFile(marker)}, protocol=protocol))
    with pytest.raises(InvalidCheckpointError, match="nothing from it was executed"):
        load_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    "content",
    [b"", b"definitely not a checkpoint", "truncated"],
    ids=["empty", "garbage", "truncated"],
)
def test_invalid_files_raise_clear_error(tmp_path, content):
    path = tmp_path / "bad.pt"
    if content == "truncated":
        save_checkpoint({"weights": torch.ones(100)}, path)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    else:
        path.write_bytes(content)
    with pytest.raises(InvalidCheckpointError, match="not a valid checkpoint") as caught:
        load_checkpoint(path)
    assert not isinstance(caught.value, UnsafeCheckpointError)
    assert str(path) in str(caught.value)


def test_non_dict_checkpoint_and_missing_file(tmp_path):
    torch.save([torch.ones(1)], tmp_path / "list.pt")
    with pytest.raises(InvalidCheckpointError, match="not a dict"):
        load_checkpoint(tmp_path / "list.pt")
    with pytest.raises(CheckpointNotFoundError, match="no checkpoint at") as caught:
        load_checkpoint(tmp_path / "missing.pt")
    assert isinstance(caught.value, FileNotFoundError)
    with pytest.raises(InvalidCheckpointError, match="not a file"):
        load_checkpoint(tmp_path)


def draw_everything() -> tuple:
    return (
        [random.random() for _ in range(3)] + [random.gauss(0, 1)],
        np.random.rand(3).tolist() + [float(np.random.standard_normal())],
        torch.rand(3).tolist() + torch.randn(2).tolist(),
    )


def test_rng_restore_reproduces_draws(tmp_path):
    random.seed(5)
    np.random.seed(5)
    torch.manual_seed(5)
    # Leave cached Gaussians in both Python's and NumPy's state, so they are covered.
    random.gauss(0, 1)
    np.random.standard_normal()

    state = capture_rng_state()
    first = draw_everything()
    assert draw_everything() != first  # the generators do move on

    restore_rng_state(state)
    assert draw_everything() == first

    # The same through a checkpoint file loaded with weights_only=True.
    save_checkpoint({"rng": state}, tmp_path / "rng.pt")
    draw_everything()
    restore_rng_state(load_checkpoint(tmp_path / "rng.pt")["rng"])
    assert draw_everything() == first


def test_rng_restore_of_part_leaves_others_alone():
    state = capture_rng_state()
    expected_torch = torch.rand(2)
    restore_rng_state({"torch": state["torch"]})
    assert torch.equal(torch.rand(2), expected_torch)


def test_rng_restore_rejects_malformed_state():
    with pytest.raises(InvalidCheckpointError, match="capture_rng_state"):
        restore_rng_state({"python": {"version": 3}})
    with pytest.raises(InvalidCheckpointError, match="capture_rng_state"):
        restore_rng_state([1, 2, 3])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the warning on a machine without GPU")
def test_cuda_state_without_gpu_warns():
    state = capture_rng_state()
    assert "cuda" not in state
    state["cuda"] = [torch.zeros(16, dtype=torch.uint8)]
    with pytest.warns(UserWarning, match="only the first 0"):
        restore_rng_state(state)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_rng_round_trip():
    state = capture_rng_state()
    assert len(state["cuda"]) == torch.cuda.device_count()
    first = torch.rand(4, device="cuda")
    restore_rng_state(state)
    assert torch.equal(torch.rand(4, device="cuda"), first)
