"""CIFAR-10 and CIFAR-100 from their "python version" folders.

Krizhevsky, "Learning Multiple Layers of Features from Tiny Images", technical
report, University of Toronto, 2009. The archives ``cifar-10-python.tar.gz``
and ``cifar-100-python.tar.gz`` from https://www.cs.toronto.edu/~kriz/cifar.html
unpack to ``cifar-10-batches-py/`` and ``cifar-100-python/``; nothing is
downloaded here. Long-tailed versions (CIFAR-10-LT / CIFAR-100-LT of Cao et
al. 2019 and BBN, Zhou et al. 2020) are made with
:func:`lttoolkit.data.make_long_tailed` on the training split.

The batches are Python pickles. They are read with an unpickler that accepts
only what the official files contain (dicts, lists, bytes, ints and numpy
uint8 arrays), so a tampered file cannot run code.
"""

from __future__ import annotations

import codecs
import importlib
import io
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from lttoolkit.data.base import ArrayDataset, Transform
from lttoolkit.errors import DataError

__all__ = ["CIFAR_URL", "load_cifar10", "load_cifar100", "read_cifar_pickle"]

CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"


# The globals a pickled numpy array needs, under the names each numpy / Python
# version writes: numpy < 2 says numpy.core, numpy >= 2 numpy._core, and Python 3
# stores bytes as _codecs.encode(str, "latin1") under protocol 2.
_ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}
    | {(f"numpy.{core}.multiarray", "_reconstruct") for core in ("core", "_core")}
    | {(f"numpy.{core}.numeric", "_frombuffer") for core in ("core", "_core")}
)


def _resolve_allowed(module: str, name: str) -> Any:
    if module == "_codecs":
        return codecs.encode
    if module == "numpy":
        return getattr(np, name)
    # Resolve to the running numpy's object so old files load without numpy.core shims.
    submodule = module.rsplit(".", 1)[1]
    for package in ("numpy._core", "numpy.core"):
        try:
            return getattr(importlib.import_module(f"{package}.{submodule}"), name)
        except (ImportError, AttributeError):
            continue
    raise ImportError(f"this numpy has no {submodule}.{name}")


class _CifarUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BufferedIOBase, path: Path) -> None:
        super().__init__(file, encoding="bytes")
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise DataError(
                f"{self._path} asks to load {module}.{name}, which a CIFAR batch never contains "
                f"(only dicts, lists, bytes and numpy arrays); refusing to unpickle it. "
                f"Replace the file with the original from {CIFAR_URL}"
            )
        return _resolve_allowed(module, name)


def _text(value: Any) -> Any:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def read_cifar_pickle(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read one CIFAR batch or meta file safely.

    Args:
        path: e.g. ``cifar-10-batches-py/data_batch_1``.

    Returns:
        The file's dict with ``str`` keys (the files store ``bytes`` keys).

    Raises:
        DataError: missing, truncated or not a CIFAR pickle, or it names any
            global other than the numpy array constructors.
    """
    path = Path(path)
    try:
        with path.open("rb") as handle:
            content = _CifarUnpickler(handle, path).load()
    except FileNotFoundError:
        raise DataError(f"CIFAR file {path} is missing; re-extract the archive from {CIFAR_URL}") from None
    except DataError:
        raise
    except Exception as exc:  # unpickling reports damage as many exception types
        raise DataError(f"cannot read CIFAR file {path}: {type(exc).__name__}: {exc}; "
                        f"re-extract it from the archive at {CIFAR_URL}") from exc
    if not isinstance(content, dict):
        raise DataError(f"{path} should hold a dict (a CIFAR batch), got {type(content).__name__}")
    return {_text(key): value for key, value in content.items()}


def _find_folder(root: str | os.PathLike[str], folder: str, probe: str, archive: str) -> Path:
    root_path = Path(root).expanduser()
    for candidate in (root_path / folder, root_path):
        if (candidate / probe).is_file():
            return candidate
    raise DataError(
        f"{folder} not found: expected {root_path / folder}/ (containing {probe}, ...). "
        f"Download {archive} from {CIFAR_URL} and extract it into {root_path} "
        f"(tar -xzf {archive} -C {root_path}); lttoolkit never downloads data"
    )


def _images_and_labels(batch: dict[str, Any], path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    if "data" not in batch or label_key not in batch:
        raise DataError(f"{path} lacks the 'data' or {label_key!r} entry of a CIFAR batch; keys: {sorted(batch)}")
    data = np.asarray(batch["data"])
    labels = np.asarray(batch[label_key], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{path}: 'data' should be uint8 [N, 3072], got {data.dtype} {data.shape}")
    if labels.shape != (data.shape[0],):
        raise DataError(f"{path}: {labels.size} labels for {data.shape[0]} images")
    # Stored as N x (1024 red, 1024 green, 1024 blue) rows; we keep channels last for PIL.
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def _assemble(
    parts: list[tuple[np.ndarray, np.ndarray]], classes: list[str] | None, transform: Transform | None
) -> ArrayDataset:
    images = np.ascontiguousarray(np.concatenate([p[0] for p in parts]))
    labels = np.concatenate([p[1] for p in parts])
    return ArrayDataset(images, labels, classes, transform)


def _check_split(split: str) -> None:
    if split not in ("train", "test"):
        raise DataError(f"CIFAR has splits 'train' and 'test', got {split!r}")


def load_cifar10(
    root: str | os.PathLike[str], split: str = "train", transform: Transform | None = None
) -> ArrayDataset:
    """Load CIFAR-10 (50,000 train / 10,000 test images, 10 classes).

    Args:
        root: folder holding ``cifar-10-batches-py/`` (or that folder itself).
        split: ``"train"`` or ``"test"``.
        transform: applied to each 32x32 RGB PIL image.

    Raises:
        DataError: the folder is missing (the message says where to put it) or a file is damaged.
    """
    _check_split(split)
    folder = _find_folder(root, "cifar-10-batches-py", "batches.meta", "cifar-10-python.tar.gz")
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    parts = [_images_and_labels(read_cifar_pickle(folder / n), folder / n, "labels") for n in names]
    meta = read_cifar_pickle(folder / "batches.meta")
    classes = [_text(c) for c in meta.get("label_names", [])] or None
    dataset = _assemble(parts, classes, transform)
    dataset.metadata = {"source": "cifar10", "split": split, "root": str(folder)}
    return dataset


def load_cifar100(
    root: str | os.PathLike[str],
    split: str = "train",
    transform: Transform | None = None,
    *,
    label_type: str = "fine",
) -> ArrayDataset:
    """Load CIFAR-100 (50,000 train / 10,000 test images, 100 fine or 20 coarse classes).

    Args:
        root: folder holding ``cifar-100-python/`` (or that folder itself).
        split: ``"train"`` or ``"test"``.
        transform: applied to each 32x32 RGB PIL image.
        label_type: ``"fine"`` (100 classes, the long-tail benchmarks) or ``"coarse"`` (20 superclasses).

    Raises:
        DataError: the folder is missing (the message says where to put it) or a file is damaged.
    """
    _check_split(split)
    if label_type not in ("fine", "coarse"):
        raise DataError(f"CIFAR-100 label_type must be 'fine' or 'coarse', got {label_type!r}")
    folder = _find_folder(root, "cifar-100-python", "meta", "cifar-100-python.tar.gz")
    parts = [_images_and_labels(read_cifar_pickle(folder / split), folder / split, f"{label_type}_labels")]
    meta = read_cifar_pickle(folder / "meta")
    classes = [_text(c) for c in meta.get(f"{label_type}_label_names", [])] or None
    dataset = _assemble(parts, classes, transform)
    dataset.metadata = {"source": "cifar100", "split": split, "root": str(folder), "label_type": label_type}
    return dataset
