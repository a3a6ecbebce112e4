"""Fixtures of the reliability suite (helpers live in _support.py).

Torch runs single-threaded here: on a loaded 2-core machine, intra-op threads spinning against
each other make a 2-second tiny run take half a minute, and one thread keeps runs bit-reproducible.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Iterator, Sequence

import pytest
import torch

from lttoolkit.registry import DISABLE_ENV

from ._support import (
    STALL_MODULE,
    STALL_PLUGIN_CODE,
    STALL_SCHEDULE,
    USER_CONFIG,
    ImageSet,
    make_image_set,
    start_lttk,
)


# ----------------------------------------------------------------------------- torch threads
@pytest.fixture(autouse=True)
def _single_torch_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ----------------------------------------------------------------------------- data and plugins on disk
@pytest.fixture
def image_set(tmp_path: Path) -> ImageSet:
    """12 training and 6 test RGB PNGs of 32x32 in 3 classes, with BBN-style json annotations."""
    return make_image_set(tmp_path / "images")


@pytest.fixture
def stall_plugin_dir(tmp_path: Path) -> Path:
    """A folder (to put on PYTHONPATH) holding the stall schedule plugin module."""
    folder = tmp_path / "plugin_modules"
    folder.mkdir()
    (folder / f"{STALL_MODULE}.py").write_text(textwrap.dedent(STALL_PLUGIN_CODE), encoding="utf-8")
    return folder


# ----------------------------------------------------------------------------- the CLI in this process
@pytest.fixture
def lttk_main(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """Run ``lttk ARGS`` in this process; returns ``(exit code, stdout, stderr)`` with whitespace
    collapsed (rich wraps long messages). An exception the CLI does not turn into a message
    propagates, as it would reach the user as a traceback."""
    from lttoolkit.cli import main

    monkeypatch.setenv("COLUMNS", "10000")
    monkeypatch.delenv(DISABLE_ENV, raising=False)

    def run(*args: str) -> tuple[int, str, str]:
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return code, " ".join(captured.out.split()), " ".join(captured.err.split())

    return run


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """A finished 2-epoch tiny run (``.../runs/full``, json images) and the overrides that made it.
    Shared by the session: copy it (``run_copy``) before changing anything in it."""
    from lttoolkit.engine.trainer import train

    base = tmp_path_factory.mktemp("finished")
    images = make_image_set(base / "images")
    overrides = images.overrides("train.epochs=2", f"output_dir={base / 'runs'}", "name=full")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(None, overrides, progress=False)
    finally:
        torch.set_num_threads(before)
    return base / "runs" / "full", overrides


@pytest.fixture
def run_copy(finished_run: tuple[Path, list[str]], tmp_path: Path) -> tuple[Path, list[str]]:
    """A copy of ``finished_run`` under ``tmp_path/runs/full``, with overrides pointing there."""
    source, overrides = finished_run
    copy = tmp_path / "runs" / "full"
    shutil.copytree(source, copy)
    return copy, [o for o in overrides if not o.startswith("output_dir=")] + [f"output_dir={copy.parent}"]


@pytest.fixture
def user_config(tmp_path: Path) -> Path:
    """A user's YAML config: BBN on ResNet-20 that does not name a sampler, loss or schedule."""
    path = tmp_path / "user.yaml"
    path.write_text(USER_CONFIG, encoding="utf-8")
    return path


@pytest.fixture
def stall_plugin_loaded(stall_plugin_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The stall plugin importable in this process (a config's ``plugins:`` loads it); removed afterwards."""
    from lttoolkit.registry import SCHEDULES

    monkeypatch.syspath_prepend(str(stall_plugin_dir))
    yield STALL_MODULE
    if STALL_SCHEDULE in SCHEDULES:
        SCHEDULES.unregister(STALL_SCHEDULE)
    sys.modules.pop(STALL_MODULE, None)


@pytest.fixture
def spawn() -> Iterator:
    """``start_lttk`` whose processes are killed at teardown if a test fails while they run."""
    started: list[subprocess.Popen[str]] = []

    def start(args: Sequence[str], *, cwd: Path, env: dict[str, str]) -> subprocess.Popen[str]:
        process = start_lttk(args, cwd=cwd, env=env)
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.communicate()
