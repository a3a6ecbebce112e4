"""Fashion-MNIST from its IDX files.

Xiao, Rasul and Vollgraf, "Fashion-MNIST: a Novel Image Dataset for
Benchmarking Machine Learning Algorithms", arXiv:1708.07747, 2017: 60,000
training and 10,000 test images of 28x28 grey pixels, 10 balanced classes.
On Debian, ``apt install dataset-fashion-mnist`` puts the files in
``/usr/share/datasets/fashion-mnist``, the default folder here. Nothing is
downloaded.
"""

from __future__ import annotations

import os
from pathlib import Path

from lttoolkit.data.base import ArrayDataset, Transform
from lttoolkit.data.idx import read_idx
from lttoolkit.errors import DataError

__all__ = ["FASHION_MNIST_CLASSES", "FASHION_MNIST_DIR", "fashion_mnist_files", "load_fashion_mnist"]

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"

FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip

_PREFIX = {"train": "train", "test": "t10k"}


def fashion_mnist_files(root: str | os.PathLike[str] | None = None, split: str = "train") -> tuple[Path, Path]:
    """The ``(images, labels)`` IDX files of a split, plain or ``.gz``.

    Args:
        root: folder holding the four files; default ``/usr/share/datasets/fashion-mnist``.
        split: ``"train"`` or ``"test"``.

    Raises:
        DataError: a file is missing; the message says where to get it.
    """
    if split not in _PREFIX:
        raise DataError(f"Fashion-MNIST has splits 'train' and 'test', got {split!r}")
    folder = Path(root) if root is not None else Path(FASHION_MNIST_DIR)
    found = []
    for kind, rank in (("images", 3), ("labels", 1)):
        stem = f"{_PREFIX[split]}-{kind}-idx{rank}-ubyte"
        candidates = [folder / stem, folder / f"{stem}.gz"]
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            raise DataError(
                f"Fashion-MNIST file {stem}[.gz] not found in {folder}. Install it with "
                f"`apt install dataset-fashion-mnist` (files go to {FASHION_MNIST_DIR}) or download the "
                f"IDX files from https://github.com/zalandoresearch/fashion-mnist and pass their folder as root"
            )
        found.append(path)
    return found[0], found[1]


def load_fashion_mnist(
    root: str | os.PathLike[str] | None = None,
    split: str = "train",
    transform: Transform | None = None,
) -> ArrayDataset:
    """Load a Fashion-MNIST split into memory.

    Args:
        root: folder with the IDX files; default ``/usr/share/datasets/fashion-mnist``.
        split: ``"train"`` (60,000 images) or ``"test"`` (10,000).
        transform: applied to each 28x28 grey PIL image.

    Returns:
        An :class:`ArrayDataset` with uint8 images ``[N, 28, 28]`` and the 10 class names.
    """
    image_file, label_file = fashion_mnist_files(root, split)
    images = read_idx(image_file)
    labels = read_idx(label_file)
    if images.ndim != 3 or images.dtype.itemsize != 1:
        raise DataError(f"{image_file} should hold uint8 images [N, 28, 28], got {images.dtype} {images.shape}")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise DataError(
            f"{label_file} holds {labels.shape} labels for the {images.shape[0]} images of {image_file}; "
            f"the two files do not belong together"
        )
    if labels.size and int(labels.max()) >= len(FASHION_MNIST_CLASSES):
        raise DataError(f"{label_file} has label {int(labels.max())}; Fashion-MNIST labels lie in 0..9")
    dataset = ArrayDataset(images.view("u1"), labels, FASHION_MNIST_CLASSES, transform)
    dataset.metadata = {"source": "fashion_mnist", "split": split, "files": [str(image_file), str(label_file)]}
    return dataset
