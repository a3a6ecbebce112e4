"""One call to load any supported dataset by name, optionally made long-tailed.

The long-tailed training sets follow Cao et al. (LDAM-DRW, NeurIPS 2019) and
BBN (Zhou et al., CVPR 2020): a balanced training split is cut down with
:func:`lttoolkit.data.make_long_tailed`, the test split stays balanced.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable, Sequence

from lttoolkit.data.annotations import load_json_annotations, load_text_list
from lttoolkit.data.base import LabelledDataset, Transform
from lttoolkit.data.cifar import load_cifar10, load_cifar100
from lttoolkit.data.embedded import load_embedded
from lttoolkit.data.fashion_mnist import load_fashion_mnist
from lttoolkit.data.image_folder import load_image_folder
from lttoolkit.data.long_tail import make_long_tailed
from lttoolkit.errors import DataError
from lttoolkit._introspect import check_options

__all__ = ["DATASET_NAMES", "DEFAULT_TRANSFORM_FAMILY", "load_dataset"]

Root = str | os.PathLike[str] | None


def _need_root(name: str, root: Root) -> Path:
    if root is None:
        raise DataError(f"dataset {name!r} needs root=, the folder that holds it")
    return Path(root)


def _annotation_file(name: str, annotations: Any, split: str) -> Any:
    if annotations is None:
        raise DataError(
            f"dataset {name!r} needs annotations=: the annotation file of the split, or a "
            f"{{'train': file, 'test': file}} mapping"
        )
    if isinstance(annotations, Mapping):
        if split not in annotations:
            raise DataError(f"annotations= has no file for split {split!r}; it has {sorted(annotations)}")
        return annotations[split]
    return annotations


def _embedded(root: Root, split: str, transform: Transform | None) -> LabelledDataset:
    if root is not None:
        raise DataError("the embedded Fashion-MNIST-LT ships with lttoolkit; do not pass root=")
    if split not in ("train", "test"):
        raise DataError(f"fashion_mnist_lt_embedded has splits 'train' and 'test', got {split!r}")
    train, test = load_embedded("fashion_mnist_lt", train_transform=transform, test_transform=transform)
    return train if split == "train" else test


def _fashion_mnist(root: Root, split: str, transform: Transform | None) -> LabelledDataset:
    return load_fashion_mnist(root, split, transform)


def _cifar10(root: Root, split: str, transform: Transform | None) -> LabelledDataset:
    return load_cifar10(_need_root("cifar10", root), split, transform)


def _cifar100(root: Root, split: str, transform: Transform | None, label_type: str = "fine") -> LabelledDataset:
    return load_cifar100(_need_root("cifar100", root), split, transform, label_type=label_type)


def _image_folder(
    root: Root, split: str | None, transform: Transform | None, in_chans: int = 3, mode: str | None = None
) -> LabelledDataset:
    folder = _need_root("image_folder", root)
    if split is not None:
        folder = folder / split
        if not folder.is_dir():
            raise DataError(
                f"image folder {folder} does not exist: data.dataset=image_folder reads data.root/train and "
                f"data.root/test, each holding one sub-folder per class; put the images there (in Python, "
                f"load_dataset('image_folder', root=..., split=None) reads {root} itself)"
            )
    return load_image_folder(folder, transform=transform, in_chans=in_chans, mode=mode)


def _json_annotations(
    root: Root,
    split: str,
    transform: Transform | None,
    annotations: Any = None,
    classes: Sequence[str] | None = None,
    in_chans: int = 3,
    mode: str | None = None,
    allow_outside_root: bool = False,
    check_files: bool = False,
) -> LabelledDataset:
    return load_json_annotations(
        _annotation_file("json_annotations", annotations, split),
        root,
        classes=classes,
        transform=transform,
        in_chans=in_chans,
        mode=mode,
        allow_outside_root=allow_outside_root,
        check_files=check_files,
    )


def _text_list(
    root: Root,
    split: str,
    transform: Transform | None,
    annotations: Any = None,
    num_classes: int | None = None,
    classes: Sequence[str] | None = None,
    in_chans: int = 3,
    mode: str | None = None,
    allow_outside_root: bool = False,
    check_files: bool = False,
) -> LabelledDataset:
    return load_text_list(
        _annotation_file("text_list", annotations, split),
        root,
        num_classes=num_classes,
        classes=classes,
        transform=transform,
        in_chans=in_chans,
        mode=mode,
        allow_outside_root=allow_outside_root,
        check_files=check_files,
    )


_LOADERS: dict[str, Callable[..., LabelledDataset]] = {
    "fashion_mnist_lt_embedded": _embedded,
    "fashion_mnist": _fashion_mnist,
    "cifar10": _cifar10,
    "cifar100": _cifar100,
    "image_folder": _image_folder,
    "json_annotations": _json_annotations,
    "text_list": _text_list,
}
DATASET_NAMES: tuple[str, ...] = tuple(_LOADERS)

# Dataset name -> the family of lttoolkit.data.build_transforms that suits it.
DEFAULT_TRANSFORM_FAMILY: dict[str, str] = {
    "fashion_mnist_lt_embedded": "fashion_mnist",
    "fashion_mnist": "fashion_mnist",
    "cifar10": "cifar",
    "cifar100": "cifar",
    "image_folder": "imagenet",
    "json_annotations": "imagenet",
    "text_list": "imagenet",
}


def load_dataset(
    name: str,
    *,
    root: str | os.PathLike[str] | None = None,
    split: str | None = "train",
    transform: Transform | None = None,
    imbalance_ratio: float | None = None,
    profile: str = "exp",
    n_max: int | None = None,
    seed: int = 0,
    class_order: Sequence[int] | None = None,
    **options: Any,
) -> LabelledDataset:
    """Load a dataset split by name, optionally as a long-tailed subset.

    Args:
        name: one of :data:`DATASET_NAMES`: ``"fashion_mnist_lt_embedded"``
            (shipped, no root), ``"fashion_mnist"`` (root default
            ``/usr/share/datasets/fashion-mnist``), ``"cifar10"``, ``"cifar100"``
            (root holds ``cifar-10-batches-py`` / ``cifar-100-python``),
            ``"image_folder"`` (``root/split/<class>/...``; ``split=None`` for
            ``root/<class>/...``), ``"json_annotations"``, ``"text_list"``
            (root is the image folder; ``annotations=`` the file, or a mapping
            from split to file).
        root: where the data lies.
        split: ``"train"`` or ``"test"`` (any sub-folder name for ``image_folder``).
        transform: applied to each PIL image.
        imbalance_ratio: when given, keep a long-tailed subset with this
            ``n_max / n_min`` (meant for the training split).
        profile: ``"exp"`` or ``"step"``, with ``imbalance_ratio``.
        n_max: head-class size, with ``imbalance_ratio``; default the smallest class size.
        seed: seed of the long-tailed selection.
        class_order: head-first permutation of the classes, with ``imbalance_ratio``.
        **options: per dataset: ``label_type`` (cifar100); ``in_chans``, ``mode``
            (image_folder, json_annotations, text_list); ``annotations``, ``classes``,
            ``allow_outside_root``, ``check_files`` (json_annotations, text_list);
            ``num_classes`` (text_list).

    Returns:
        A :class:`LabelledDataset` with ``labels``, ``classes``, ``num_classes`` and ``metadata``.

    Raises:
        DataError: unknown name, missing data, or a split the dataset lacks.
        UnknownOptionError: an option the dataset does not take.

    >>> ds = load_dataset("fashion_mnist_lt_embedded", split="test")
    >>> len(ds), ds.class_counts[:3]
    (1000, [100, 100, 100])
    >>> ds = load_dataset("fashion_mnist_lt_embedded", split="test", imbalance_ratio=10, n_max=100)
    >>> ds.class_counts
    [100, 77, 59, 46, 35, 27, 21, 16, 12, 10]
    """
    loader = _LOADERS.get(name)
    if loader is None:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASET_NAMES)}")
    check_options(loader, {"root": root, "split": split, "transform": transform, **options}, what=f"dataset {name!r}")
    if split is None and name != "image_folder":
        raise DataError(f"dataset {name!r} needs a split ('train' or 'test')")
    dataset = loader(root, split, transform, **options)
    if imbalance_ratio is None:
        for option, value in (("n_max", n_max), ("class_order", class_order)):
            if value is not None:
                raise DataError(f"{option}= only applies with imbalance_ratio=; pass imbalance_ratio too")
        return dataset
    indices = make_long_tailed(
        dataset.labels,
        imbalance_ratio,
        profile=profile,
        n_max=n_max,
        seed=seed,
        class_order=class_order,
        num_classes=dataset.num_classes,
    )
    subset = dataset.subset(indices)
    subset.metadata = {
        **dataset.metadata,
        "imbalance_ratio": float(imbalance_ratio),
        "profile": profile,
        "n_max": max(subset.class_counts),
        "seed": seed,
        "class_order": None if class_order is None else [int(c) for c in class_order],
    }
    return subset
