"""The CIFAR-LT paper recipes in ``examples/configs/`` run as shipped, on files in CIFAR's format.

Nobody can download CIFAR here, so the files are written in the layout of the official
"python version" archives (pickled dicts with bytes keys, images as rows of 1024 red, 1024
green, 1024 blue bytes) with a few random images per class. Only the run length, the batch
size and the paths are overridden: dataset, long-tail profile, transforms, backbone, samplers,
loss, schedule and optimiser are the shipped file's, and their values are checked against the
BBN paper (Zhou et al., CVPR 2020, Sec. 4.1).
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import yaml

from lttoolkit.engine import train
from lttoolkit.engine.config import read_config_tree

CONFIGS = Path(__file__).resolve().parents[1] / "examples" / "configs"
PER_CLASS_TRAIN = 100  # the fewest that leave the IR-100 tail one image


def _rows(n: int, seed: int) -> np.ndarray:
    images = np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    return images.transpose(0, 3, 1, 2).reshape(n, -1)  # channel planes, as the archives store them


def _dump(path: Path, obj: dict) -> None:
    path.write_bytes(pickle.dumps(obj, protocol=2))


def _labels(num_classes: int, per_class: int, seed: int) -> list[int]:
    labels = np.repeat(np.arange(num_classes), per_class)
    return np.random.default_rng(seed).permutation(labels).tolist()


def write_cifar10(root: Path) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    labels = _labels(10, PER_CLASS_TRAIN, 0)
    for number, chunk in enumerate(np.array_split(np.arange(len(labels)), 5), start=1):
        _dump(folder / f"data_batch_{number}",
              {b"labels": [labels[i] for i in chunk], b"data": _rows(len(chunk), number)})
    test = _labels(10, 3, 1)
    _dump(folder / "test_batch", {b"labels": test, b"data": _rows(len(test), 99)})
    _dump(folder / "batches.meta", {b"label_names": [f"class{i}".encode() for i in range(10)]})
    return root


def write_cifar100(root: Path) -> Path:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for split, per_class, seed in (("train", PER_CLASS_TRAIN, 2), ("test", 1, 3)):
        fine = _labels(100, per_class, seed)
        _dump(folder / split, {b"fine_labels": fine, b"coarse_labels": [f // 5 for f in fine],
                               b"data": _rows(len(fine), seed)})
    _dump(folder / "meta", {b"fine_label_names": [f"fine{i}".encode() for i in range(100)],
                            b"coarse_label_names": [f"coarse{i}".encode() for i in range(20)]})
    return root


def test_cifar100_recipe_is_cifar10s_on_cifar100():
    assert yaml.safe_load((CONFIGS / "bbn_cifar100_lt.yaml").read_text(encoding="utf-8"))["_base_"] == "bbn_cifar10_lt.yaml"
    ten, hundred = read_config_tree(CONFIGS / "bbn_cifar10_lt.yaml"), read_config_tree(CONFIGS / "bbn_cifar100_lt.yaml")
    assert hundred["data"].pop("dataset") == "cifar100" and ten["data"].pop("dataset") == "cifar10"
    assert hundred == ten


@pytest.mark.parametrize(("name", "dataset", "num_classes", "writer"), [
    ("bbn_cifar10_lt.yaml", "cifar10", 10, write_cifar10),
    ("bbn_cifar100_lt.yaml", "cifar100", 100, write_cifar100),
])
def test_cifar_paper_recipe_runs_as_shipped(tmp_path, name, dataset, num_classes, writer):
    shipped = read_config_tree(CONFIGS / name)  # with its _base_ (CIFAR-100-LT inherits CIFAR-10-LT's)
    # The recipe of the paper, Sec. 4.1: ResNet-32, batch 128, 200 epochs, SGD lr 0.1 momentum 0.9,
    # wd 2e-4, 5 warm-up epochs, lr x0.01 at 120 and 160; BBN's reversed sampler and parabolic alpha.
    assert shipped["model"] == {"type": "bbn", "backbone": "resnet32_cifar", "sampler": "reversed",
                                "conventional_sampler": "instance", "loss": "cross_entropy",
                                "schedule": "parabolic"}
    assert shipped["data"]["dataset"] == dataset and shipped["data"]["imbalance_ratio"] == 100
    assert (shipped["data"]["profile"], shipped["data"]["batch_size"], shipped["train"]["epochs"]) == ("exp", 128, 200)
    optim = shipped["optim"]
    assert (optim["lr"], optim["momentum"], optim["weight_decay"], optim["warmup_epochs"]) == (0.1, 0.9, 2e-4, 5)
    assert (optim["schedule"], optim["milestones"], optim["gamma"]) == ("multistep", [120, 160], 0.01)

    root = writer(tmp_path / "data")
    results = train(CONFIGS / name, [
        f"data.root={root}", f"output_dir={tmp_path / 'runs'}", "name=recipe", "train.device=cpu",
        "train.epochs=1", "train.max_steps_per_epoch=2", "data.batch_size=8", "data.num_workers=0",
    ], progress=False)

    run_dir = tmp_path / "runs" / "recipe"
    saved = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
    assert saved["model"] == shipped["model"] and saved["optim"]["milestones"] == [120, 160]
    counts = results["train_class_counts"]
    # exp profile from the files' 100 images per class: n_i = int(100 * 0.01 ** (i / (C - 1))), tail 1
    assert len(counts) == num_classes and counts[0] == PER_CLASS_TRAIN
    assert counts == sorted(counts, reverse=True) and counts[-1] == 1
    if num_classes == 10:  # 100 * 0.01 ** (i / 9), truncated, by hand
        assert counts == [100, 59, 35, 21, 12, 7, 4, 2, 1, 1]
    assert 0.0 <= results["test"]["top1"] <= 100.0
    logged = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    assert logged[0]["alpha"] == 1.0  # 1 - (0 / T_max)^2
    # warm-up: the first epoch's rate is a fraction of 0.1, below it (per-step linear warm-up over 5 epochs)
    assert 0.0 < logged[0]["lr"] < 0.1
