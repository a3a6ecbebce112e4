"""Helpers of the reliability suite (fixtures live in conftest.py).

* tiny image datasets written with PIL (json or text_list annotations), good and damaged files;
* the smallest training run that still goes through the whole loop (BBN, ResNet-20, 2 steps of
  4 images per epoch);
* an ``lttk`` subprocess runner and a plugin schedule that can stall a run at a chosen epoch,
  so that a kill or a Ctrl-C lands at a known point instead of racing the run's end.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from lttoolkit.engine.checkpoint import load_checkpoint
from lttoolkit.registry import DISABLE_ENV

IMAGE_SIZE = 32

# The tiniest run that still trains, evaluates and checkpoints (BBN on ResNet-20, CPU).
TINY_RUN = [
    "model.backbone=resnet20_cifar",
    "data.transforms=cifar",
    f"data.image_size={IMAGE_SIZE}",
    "data.batch_size=4",
    "data.test_batch_size=64",
    "data.num_workers=0",
    "train.epochs=1",
    "train.max_steps_per_epoch=2",
    "train.eval_every=1",  # every epoch evaluated and best.pt written, whatever the quick start does
    "train.device=cpu",
    "optim.warmup_epochs=0",
]

# A YAML config a user would pass to `lttk train`: the model section replaces the default one,
# so components it does not name (e.g. the sampler) are left to the method's defaults.
USER_CONFIG = """\
seed: 0
model:
  type: bbn
  backbone: resnet20_cifar
data:
  batch_size: 4
  num_workers: 0
train:
  epochs: 1
  max_steps_per_epoch: 2
  device: cpu
optim:
  warmup_epochs: 0
"""

STALL_MODULE = "reliability_stall_plugin"
STALL_SCHEDULE = "stall_parabolic"
STALL_ENV = "LTTK_RELIABILITY_STALL_AT"
# BBN's parabolic schedule that sleeps (or raises KeyboardInterrupt) when asked to by an
# environment variable: "EPOCH/EPOCHS" sleeps at that epoch of a run of EPOCHS epochs,
# "interrupt:EPOCH/EPOCHS" raises KeyboardInterrupt there. Without the variable it is BBN's.
STALL_PLUGIN_CODE = f'''
"""A test plugin: BBN's parabolic alpha schedule that can stall a run at a chosen epoch."""
import os
import time

from lttoolkit.registry import SCHEDULES
from lttoolkit.schedules import ParabolicDecay


@SCHEDULES.register(name="{STALL_SCHEDULE}")
class StallParabolic(ParabolicDecay):
    """Parabolic decay; stalls where {STALL_ENV} says."""

    def __call__(self, epoch, max_epochs):
        # The trainer checks the schedule on every epoch before training starts; the
        # stall must hit when the epoch is actually reached, i.e. on the second call.
        calls = self.__dict__.setdefault("_calls", {{}})
        calls[epoch] = calls.get(epoch, 0) + 1
        where = os.environ.get("{STALL_ENV}", "")
        if calls[epoch] >= 2 and where == f"{{epoch}}/{{max_epochs}}":
            time.sleep(300)
        if calls[epoch] >= 2 and where == f"interrupt:{{epoch}}/{{max_epochs}}":
            raise KeyboardInterrupt
        return super().__call__(epoch, max_epochs)
'''


# ----------------------------------------------------------------------------- image files
def random_image(rng: np.random.Generator, mode: str = "RGB", size: int = IMAGE_SIZE) -> Image.Image:
    """A random RGB image converted to ``mode`` ("L", "RGBA", "P", ...)."""
    image = Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
    return image if mode == "RGB" else image.convert(mode)


def encoded(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def write_bad_image(path: Path, kind: str, seed: int = 0) -> Path:
    """Write a damaged image file of ``kind``: truncated_png, truncated_jpeg, corrupt_png, not_an_image."""
    rng = np.random.default_rng(seed)
    image = random_image(rng)
    if kind == "truncated_png":
        data = encoded(image, "PNG")
        path.write_bytes(data[: len(data) // 2])
    elif kind == "truncated_jpeg":
        data = encoded(image, "JPEG")
        path.write_bytes(data[: len(data) // 2])
    elif kind == "corrupt_png":
        # Header intact, compressed pixel data scrambled: PIL identifies the file, then fails to decode it.
        data = bytearray(encoded(image, "PNG"))
        middle = len(data) // 2
        for position in range(middle, middle + 64):
            data[position] ^= 0xFF
        path.write_bytes(bytes(data))
    elif kind == "not_an_image":
        path.write_bytes(b"<html>this download failed</html>\n")
    else:
        raise ValueError(f"unknown bad image kind {kind!r}")
    return path


BAD_IMAGE_KINDS = {
    "truncated_png": "png",
    "truncated_jpeg": "jpg",
    "corrupt_png": "png",
    "not_an_image": "jpg",
}


@dataclass
class ImageSet:
    """Image files under ``root`` with train/test annotation files (BBN json or a text list)."""

    root: Path
    dataset: str = "json"
    num_classes: int | None = 3
    train: list[tuple[str, int]] = field(default_factory=list)
    test: list[tuple[str, int]] = field(default_factory=list)

    def annotation_file(self, split: str) -> Path:
        return self.root / (f"{split}.json" if self.dataset == "json" else f"{split}.txt")

    def write(self) -> ImageSet:
        for split, entries in (("train", self.train), ("test", self.test)):
            path = self.annotation_file(split)
            if self.dataset == "json":
                content: dict = {"annotations": [{"fpath": p, "category_id": c} for p, c in entries]}
                if self.num_classes is not None:
                    content["num_classes"] = self.num_classes
                path.write_text(json.dumps(content), encoding="utf-8")
            else:
                path.write_text("".join(f"{p} {c}\n" for p, c in entries), encoding="utf-8")
        return self

    def overrides(self, *extra: str) -> list[str]:
        return [
            *TINY_RUN,
            f"data.dataset={self.dataset}",
            f"data.root={self.root}",
            f"data.train_annotations={self.annotation_file('train')}",
            f"data.test_annotations={self.annotation_file('test')}",
            *extra,
        ]


def make_image_set(
    root: Path,
    *,
    dataset: str = "json",
    num_classes: int = 3,
    train_labels: Sequence[int] | None = None,
    test_labels: Sequence[int] | None = None,
    modes: Sequence[str] = ("RGB",),
    fmt: str = "png",
    seed: int = 0,
) -> ImageSet:
    """Write random images (12 train, 6 test by default, labels ``i % num_classes``) and their annotations."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    train_labels = list(train_labels) if train_labels is not None else [i % num_classes for i in range(12)]
    test_labels = list(test_labels) if test_labels is not None else [i % num_classes for i in range(6)]
    image_set = ImageSet(root=root, dataset=dataset, num_classes=num_classes)
    for split, labels, entries in (("train", train_labels, image_set.train), ("test", test_labels, image_set.test)):
        (root / split).mkdir(exist_ok=True)
        for index, label in enumerate(labels):
            name = f"{split}/{index:03d}.{fmt}"
            random_image(rng, modes[index % len(modes)]).save(root / name)
            entries.append((name, label))
    return image_set.write()


# ----------------------------------------------------------------------------- subprocesses
def lttk_env(*pythonpath: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (DISABLE_ENV, STALL_ENV)}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", COLUMNS="200", PYTHONUNBUFFERED="1")
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(str(p) for p in pythonpath)
    env.update(extra)
    return env


def _default_sigint() -> None:
    # A test runner started in the background ignores SIGINT and its children inherit that;
    # Python then never raises KeyboardInterrupt. Give the child the default disposition.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_lttk(args: Sequence[str], *, cwd: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    """Start ``python -m lttoolkit ARGS`` (what the ``lttk`` script runs)."""
    return subprocess.Popen(
        [sys.executable, "-m", "lttoolkit", *args],
        cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint,
    )


def finish(process: subprocess.Popen[str], timeout: float = 240) -> tuple[int, str, str]:
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        raise AssertionError(f"lttk did not finish in {timeout} s\nstdout:\n{out}\nstderr:\n{err}") from None
    return process.returncode, out, err


def wait_for_checkpoint(path: Path, min_epoch: int, process: subprocess.Popen[str], timeout: float = 240) -> int:
    """Poll ``path`` until it holds an epoch >= ``min_epoch``; return that epoch.

    Every read must succeed: checkpoint writes are atomic, so a reader never sees half a file.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            out, err = process.communicate()
            raise AssertionError(
                f"lttk exited ({process.returncode}) before {path} reached epoch {min_epoch}\n{out}\n{err}"
            )
        if path.is_file():
            epoch = int(load_checkpoint(path)["epoch"])
            if epoch >= min_epoch:
                return epoch
        time.sleep(0.05)
    process.kill()
    raise AssertionError(f"{path} did not reach epoch {min_epoch} within {timeout} s")


def state_dicts_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> list[str]:
    """Names of the entries that differ (empty when equal, bit for bit)."""
    if a.keys() != b.keys():
        return sorted(set(a) ^ set(b))
    return [key for key in a if not torch.equal(a[key], b[key])]
