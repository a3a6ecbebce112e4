"""Run logs that work in batch jobs: one plain line per epoch off a terminal, metrics.csv, the logger interface."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lttoolkit.engine import train
from lttoolkit.engine.loggers import CSVLogger, build_loggers, register_logger, LOGGER_FACTORIES
from lttoolkit.errors import ConfigError

TINY = ["train.epochs=3", "train.max_steps_per_epoch=1", "model.backbone=resnet20_cifar", "data.test_batch_size=500",
        "optim.warmup_epochs=0", "train.eval_every=1"]


def test_a_batch_job_log_gets_one_line_per_epoch_and_the_run_folder(tmp_path: Path) -> None:
    # stdout is a pipe here, as under SLURM or nohup: no bars, one plain line per epoch.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    done = subprocess.run([sys.executable, "-m", "lttoolkit", "train", *TINY, f"output_dir={tmp_path}", "name=job"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if re.match(r"epoch \d+/3 loss", line)]
    assert [line.split()[1] for line in lines] == ["1/3", "2/3", "3/3"], done.stdout
    records = [json.loads(line) for line in (tmp_path / "job" / "metrics.jsonl").read_text().splitlines()]
    for line, record in zip(lines, records):
        assert f"loss {record['loss']:.4f}" in line and f"alpha {record['alpha']:.4g}" in line
        assert f"test top-1 {record['test_top1']:.2f}" in line
    assert f"run folder: {tmp_path / 'job'}" in " ".join(done.stdout.split())
    assert "lttk eval" in done.stdout


def test_metrics_csv_holds_the_json_records_also_after_a_resume(tmp_path: Path) -> None:
    # Interrupted after epoch 1's metrics line but before its checkpoint: the resume re-runs
    # epoch 1, and metrics.csv must hold exactly what metrics.jsonl holds (0, 1, 2), once each.
    state = {"interrupted": False}

    class Interrupter:
        def __init__(self, run_dir: Path) -> None:
            pass

        def log_epoch(self, record: dict) -> None:
            if record["epoch"] == 1 and not state["interrupted"]:
                state["interrupted"] = True
                raise KeyboardInterrupt

        def close(self) -> None:
            pass

    register_logger("interrupter-test", Interrupter)
    try:
        with pytest.raises(KeyboardInterrupt):
            train(overrides=[*TINY, f"output_dir={tmp_path}", "name=r", "train.loggers=[interrupter-test]"],
                  progress=False)
        train(overrides=[f"output_dir={tmp_path}"], resume=tmp_path / "r", progress=False)
    finally:
        LOGGER_FACTORIES.pop("interrupter-test")
    run = tmp_path / "r"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    with open(run / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(row["epoch"]) for row in rows] == [r["epoch"] for r in records] == [0, 1, 2]
    for row, record in zip(rows, records):
        assert float(row["loss"]) == pytest.approx(record["loss"])
        assert float(row["test_top1"]) == pytest.approx(record["test_top1"])


def test_unknown_and_missing_loggers_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown logger 'wandb'.*csv"):
        build_loggers(["wandb"], tmp_path)
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match=r'pip install "lttoolkit\[tensorboard\]"'):
            build_loggers(["tensorboard"], tmp_path)
    assert [type(logger) for logger in build_loggers([], tmp_path)] == [CSVLogger]


def test_a_plugin_logger_receives_every_epoch(tmp_path: Path) -> None:
    seen: list[dict] = []

    class Recorder:
        def __init__(self, run_dir: Path) -> None:
            self.run_dir = run_dir

        def log_epoch(self, record: dict) -> None:
            seen.append(dict(record))

        def close(self) -> None:
            seen.append({"closed": True})

    register_logger("recorder-test", Recorder)
    try:
        train(overrides=[*TINY, f"output_dir={tmp_path}", "name=p", "train.loggers=[recorder-test]"], progress=False)
    finally:
        LOGGER_FACTORIES.pop("recorder-test")
    assert [r.get("epoch") for r in seen[:-1]] == [0, 1, 2] and seen[-1] == {"closed": True}
    assert (tmp_path / "p" / "metrics.csv").is_file()  # csv is always on
