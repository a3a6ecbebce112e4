"""Tests of ``lttk train``, ``lttk eval`` and ``lttk predict``, run as real subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lttoolkit.cli import main

FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
TINY = [
    "model.backbone=resnet20_cifar",
    "data.batch_size=32",
    "data.test_batch_size=500",
    "train.max_steps_per_epoch=2",
    "train.epochs=2",
    "train.eval_every=2",
    "train.device=cpu",
    "optim.warmup_epochs=0",
]
# One torch thread: on a busy 2-core machine two threads wait on each other (see test_trainer.py).
# A wide console so that the results table is not wrapped.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200", "NO_COLOR": "1"}


def lttk(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lttoolkit", *args], capture_output=True, text=True, env=ENV,
                          timeout=timeout)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("cli")
    done = lttk("train", *TINY, f"output_dir={output}", "name=run")
    assert done.returncode == 0, done.stderr
    run = output / "run"
    results = json.loads((run / "results.json").read_text())
    # the run's own summary: the quick start's BBN, and the results table on stdout
    assert results["method"] == "bbn" and results["dataset"] == "embedded"
    for column in ("top-1", "top-5", "many", "medium", "few", "mean class acc"):
        assert column in done.stdout
    assert f"{results['test']['top1']:.2f}" in done.stdout
    return run


def test_train_writes_the_run_folder(run_dir):
    assert {p.name for p in run_dir.iterdir()} >= {"config.yaml", "metrics.jsonl", "results.json", "best.pt", "last.pt"}
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 2


def test_eval_reproduces_the_final_test_metrics(run_dir):
    done = lttk("eval", str(run_dir / "last.pt"), "--json", "--device", "cpu")
    assert done.returncode == 0, done.stderr
    evaluated = json.loads(done.stdout)
    expected = json.loads((run_dir / "results.json").read_text())["test"]
    for key in ("top1", "top5", "many_shot", "medium_shot", "few_shot", "mean_class_accuracy",
                "per_class_accuracy", "per_class_correct", "per_class_total", "num_samples"):
        assert evaluated[key] == expected[key], key
    assert evaluated["epoch"] == 1


def test_eval_writes_the_confusion_matrix_to_its_own_file_only(run_dir, tmp_path, capsys):
    target = tmp_path / "confusion.npy"
    assert main(["eval", str(run_dir / "last.pt"), "--json", "--device", "cpu", "--confusion-matrix", str(target)]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert "confusion_matrix" not in evaluated and evaluated["confusion_matrix_file"] == str(target)
    matrix = np.load(target)
    assert matrix.dtype == np.int64 and matrix.shape == (10, 10)
    assert matrix.sum(1).tolist() == evaluated["per_class_total"]  # rows: the true class
    assert np.diag(matrix).tolist() == evaluated["per_class_correct"]
    # Asked again, the file is not overwritten.
    before = target.read_bytes()
    assert main(["eval", str(run_dir / "last.pt"), "--device", "cpu", "--confusion-matrix", str(target)]) == 2
    assert "not overwritten" in capsys.readouterr().err and target.read_bytes() == before


def test_eval_with_a_bad_override_exits_2_naming_the_field(run_dir, capsys):
    assert main(["eval", str(run_dir / "best.pt"), "data.test_batch_size=-1"]) == 2
    assert "data.test_batch_size" in capsys.readouterr().err


def test_predict_gives_top_k_fashion_mnist_classes(run_dir, tmp_path):
    pixels = (np.add.outer(np.arange(28), np.arange(28)) * 4).astype(np.uint8)
    Image.fromarray(pixels, mode="L").save(tmp_path / "grey.png")
    Image.fromarray(255 - pixels, mode="L").save(tmp_path / "inverse.png")
    done = lttk("predict", str(run_dir / "last.pt"), str(tmp_path / "grey.png"), str(tmp_path / "inverse.png"),
                "--topk", "3", "--json")
    assert done.returncode == 0, done.stderr
    predictions = json.loads(done.stdout)
    assert [Path(p["image"]).name for p in predictions] == ["grey.png", "inverse.png"]
    for prediction in predictions:
        top = prediction["top"]
        assert len(top) == 3
        probabilities = [entry["probability"] for entry in top]
        assert all(0.0 <= p <= 1.0 for p in probabilities) and sum(probabilities) <= 1.0 + 1e-6
        assert probabilities == sorted(probabilities, reverse=True)
        for entry in top:
            assert entry["class"] == FASHION_MNIST_CLASSES[entry["index"]]
        assert len({entry["index"] for entry in top}) == 3


def test_predict_with_k_above_the_class_count_ranks_every_class(run_dir, tmp_path):
    from lttoolkit.engine import predict

    Image.fromarray(np.full((28, 28), 128, np.uint8), mode="L").save(tmp_path / "flat.png")
    (prediction,) = predict(run_dir / "last.pt", [tmp_path / "flat.png"], topk=50)
    assert sorted(entry["class"] for entry in prediction["top"]) == sorted(FASHION_MNIST_CLASSES)
    assert sum(entry["probability"] for entry in prediction["top"]) == pytest.approx(1.0, abs=1e-5)


def test_resume_of_a_finished_run_keeps_its_results(run_dir):
    before = json.loads((run_dir / "results.json").read_text())
    done = lttk("train", "--resume", str(run_dir), "--quiet")
    assert done.returncode == 0, done.stderr
    after = json.loads((run_dir / "results.json").read_text())
    assert after["test"] == before["test"]
    assert [json.loads(line)["epoch"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()] == [0, 1]


def test_resume_with_a_config_is_refused(run_dir, capsys):
    assert main(["train", "some.yaml", "--resume", str(run_dir)]) == 2
    assert "--resume" in capsys.readouterr().err


def test_missing_config_file_exits_2(tmp_path):
    done = lttk("train", str(tmp_path / "bogus.yaml"))
    assert done.returncode == 2
    assert "bogus.yaml" in done.stderr and "does not exist" in done.stderr
    assert "Traceback" not in done.stderr


def test_invalid_value_exits_2_naming_the_field(tmp_path):
    done = lttk("train", "train.epochs=-1", f"output_dir={tmp_path}")
    assert done.returncode == 2
    assert "train.epochs" in done.stderr and "greater than 0" in done.stderr
    assert "Traceback" not in done.stderr
    assert not any(tmp_path.iterdir())  # failed before any work
