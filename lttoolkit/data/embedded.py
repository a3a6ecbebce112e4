"""Small datasets shipped inside the package, so examples and tests run offline.

``fashion_mnist_lt`` is a long-tailed subset of Fashion-MNIST (Xiao, Rasul
and Vollgraf, arXiv:1708.07747, 2017; MIT licence, Copyright (c) 2017 Zalando
SE, see ``embedded/LICENSE-fashion-mnist.txt``): the training images follow the
exponential profile of Cao et al. (NeurIPS 2019) with imbalance ratio 100 and
600 images in the head class (1,485 in all), and the test images are 100 per
class, balanced. ``tools/make_embedded_data.py`` rebuilds it from Debian's
``dataset-fashion-mnist`` files.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import numpy as np

from lttoolkit.data.base import ArrayDataset, Transform
from lttoolkit.errors import DataError

__all__ = ["EMBEDDED_DATASETS", "load_embedded", "embedded_metadata"]

EMBEDDED_DATASETS: tuple[str, ...] = ("fashion_mnist_lt",)

_ARRAY_KEYS = ("train_images", "train_labels", "test_images", "test_labels", "classes")


def _read(name: str) -> dict[str, np.ndarray]:
    if name not in EMBEDDED_DATASETS:
        raise DataError(f"no embedded dataset named {name!r}; available: {', '.join(EMBEDDED_DATASETS)}")
    resource = resources.files("lttoolkit.data").joinpath("embedded").joinpath(f"{name}.npz")
    try:
        with resource.open("rb") as handle, np.load(handle, allow_pickle=False) as archive:
            content = {key: archive[key] for key in archive.files}
    except FileNotFoundError:
        raise DataError(
            f"the embedded dataset file embedded/{name}.npz is missing from the installed package; "
            f"reinstall lttoolkit or run tools/make_embedded_data.py"
        ) from None
    missing = [key for key in _ARRAY_KEYS if key not in content]
    if missing:
        raise DataError(f"embedded/{name}.npz lacks {', '.join(missing)}; rebuild it with tools/make_embedded_data.py")
    return content


def embedded_metadata(name: str = "fashion_mnist_lt") -> dict[str, Any]:
    """How the embedded set was made: imbalance ratio, n_max, seed, profile, source.

    >>> embedded_metadata()["imbalance_ratio"]
    100.0
    """
    content = _read(name)
    return {key: value.item() for key, value in content.items() if key not in _ARRAY_KEYS}


def load_embedded(
    name: str = "fashion_mnist_lt",
    *,
    train_transform: Transform | None = None,
    test_transform: Transform | None = None,
) -> tuple[ArrayDataset, ArrayDataset]:
    """The ``(train, test)`` datasets of an embedded set.

    Args:
        name: one of :data:`EMBEDDED_DATASETS`.
        train_transform: transform of the training set.
        test_transform: transform of the test set.

    Returns:
        Two :class:`ArrayDataset` of 28x28 grey images; ``metadata`` records how they were made.

    >>> train, test = load_embedded()
    >>> train.num_classes, train.class_counts[0], train.class_counts[-1], test.class_counts[0]
    (10, 600, 6, 100)
    """
    content = _read(name)
    classes = [str(c) for c in content["classes"].tolist()]
    metadata = {key: value.item() for key, value in content.items() if key not in _ARRAY_KEYS}
    train = ArrayDataset(content["train_images"], content["train_labels"], classes, train_transform)
    test = ArrayDataset(content["test_images"], content["test_labels"], classes, test_transform)
    train.metadata = {**metadata, "name": name, "split": "train"}
    test.metadata = {**metadata, "name": name, "split": "test"}
    return train, test
