"""The builtin datasets, and one call to load any registered dataset by name, optionally made long-tailed.

Datasets are a registry like the other components (:data:`lttoolkit.registry.DATASETS`,
entry-point group ``lttoolkit.datasets``): the builtins below are declared in
``lttoolkit/registry/_builtins.py``, and a plugin adds one by entry point. A dataset
factory is called as ``factory(root=..., split=..., transform=..., **options)`` and
returns a :class:`LabelledDataset`; it may carry ``transform_family`` (the
:func:`lttoolkit.data.build_transforms` family that suits it; default ``"imagenet"``)
and ``in_chans`` (its images' own channels; default 3), set with :func:`dataset_info`.

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
from lttoolkit.errors import DataError, UnknownComponentError
from lttoolkit.registry import DATASETS

__all__ = [
    "load_dataset", "dataset_info", "dataset_transform_family", "dataset_channels",
    "embedded_dataset", "fashion_mnist_dataset", "cifar10_dataset", "cifar100_dataset", "image_folder_dataset",
    "json_dataset", "text_list_dataset",
]

F = Any  # a dataset factory

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


def dataset_info(*, transform_family: str = "imagenet", in_chans: int = 3) -> Callable[[F], F]:
    """Attach what the engine needs to know of a dataset factory: its transform family and channels.

    >>> @dataset_info(transform_family="cifar")
    ... def my_cifar(root=None, split="train", transform=None): ...
    >>> my_cifar.transform_family, my_cifar.in_chans
    ('cifar', 3)
    """

    def attach(factory: F) -> F:
        factory.transform_family = transform_family
        factory.in_chans = in_chans
        return factory

    return attach


def dataset_transform_family(name: str) -> str:
    """The :func:`lttoolkit.data.build_transforms` family of registered dataset ``name``."""
    return str(getattr(DATASETS.get(name), "transform_family", "imagenet"))


def dataset_channels(name: str) -> int:
    """The channels of the images of registered dataset ``name`` (1 for Fashion-MNIST)."""
    return int(getattr(DATASETS.get(name), "in_chans", 3))


@dataset_info(transform_family="fashion_mnist", in_chans=1)
def embedded_dataset(root: Root = None, split: str = "train", transform: Transform | None = None) -> LabelledDataset:
    """The long-tailed Fashion-MNIST subset that ships with lttoolkit (no root)."""
    if root is not None:
        raise DataError(
            "the embedded Fashion-MNIST-LT ships with lttoolkit; do not pass root= (in a config, remove "
            "data.root or pick another data.dataset)"
        )
    if split not in ("train", "test"):
        raise DataError(f"the embedded dataset has splits 'train' and 'test', got {split!r}")
    train, test = load_embedded("fashion_mnist_lt", train_transform=transform, test_transform=transform)
    return train if split == "train" else test


@dataset_info(transform_family="fashion_mnist", in_chans=1)
def fashion_mnist_dataset(root: Root = None, split: str = "train", transform: Transform | None = None) -> LabelledDataset:
    """Fashion-MNIST from its IDX files (root default ``/usr/share/datasets/fashion-mnist``)."""
    return load_fashion_mnist(root, split, transform)


@dataset_info(transform_family="cifar")
def cifar10_dataset(root: Root = None, split: str = "train", transform: Transform | None = None) -> LabelledDataset:
    """CIFAR-10 from ``root/cifar-10-batches-py``."""
    return load_cifar10(_need_root("cifar10", root), split, transform)


@dataset_info(transform_family="cifar")
def cifar100_dataset(
    root: Root = None, split: str = "train", transform: Transform | None = None, label_type: str = "fine"
) -> LabelledDataset:
    """CIFAR-100 from ``root/cifar-100-python`` (fine or coarse labels)."""
    return load_cifar100(_need_root("cifar100", root), split, transform, label_type=label_type)


@dataset_info(transform_family="imagenet")
def image_folder_dataset(
    root: Root = None, split: str | None = "train", transform: Transform | None = None, in_chans: int = 3,
    mode: str | None = None,
) -> LabelledDataset:
    """``root/split/<class>/<image>`` (``split=None``: ``root/<class>/<image>``)."""
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


@dataset_info(transform_family="imagenet")
def json_dataset(
    root: Root = None,
    split: str = "train",
    transform: Transform | None = None,
    annotations: Any = None,
    classes: Sequence[str] | None = None,
    in_chans: int = 3,
    mode: str | None = None,
    allow_outside_root: bool = False,
    check_files: bool = False,
) -> LabelledDataset:
    """Images under ``root`` listed by a JSON annotation file (iNaturalist 2018, BBN's format)."""
    return load_json_annotations(
        _annotation_file("json", annotations, split),
        root,
        classes=classes,
        transform=transform,
        in_chans=in_chans,
        mode=mode,
        allow_outside_root=allow_outside_root,
        check_files=check_files,
    )


@dataset_info(transform_family="imagenet")
def text_list_dataset(
    root: Root = None,
    split: str = "train",
    transform: Transform | None = None,
    annotations: Any = None,
    num_classes: int | None = None,
    classes: Sequence[str] | None = None,
    in_chans: int = 3,
    mode: str | None = None,
    allow_outside_root: bool = False,
    check_files: bool = False,
) -> LabelledDataset:
    """Images under ``root`` listed as ``path label`` lines (ImageNet-LT's text lists)."""
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


# Names this function took before datasets were a registry (the registry's names are the config's).
_FORMER_NAMES = {"fashion_mnist_lt_embedded": "embedded", "json_annotations": "json"}


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
        name: a registered dataset (``lttk list-components datasets``): ``"embedded"``
            (shipped, no root), ``"fashion_mnist"`` (root default
            ``/usr/share/datasets/fashion-mnist``), ``"cifar10"``, ``"cifar100"``
            (root holds ``cifar-10-batches-py`` / ``cifar-100-python``),
            ``"image_folder"`` (``root/split/<class>/...``; ``split=None`` for
            ``root/<class>/...``), ``"json"``, ``"text_list"``
            (root is the image folder; ``annotations=`` the file, or a mapping
            from split to file), or a plugin's. The former names
            ``"fashion_mnist_lt_embedded"`` and ``"json_annotations"`` still work.
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
            (image_folder, json, text_list); ``annotations``, ``classes``,
            ``allow_outside_root``, ``check_files`` (json, text_list);
            ``num_classes`` (text_list).

    Returns:
        A :class:`LabelledDataset` with ``labels``, ``classes``, ``num_classes`` and ``metadata``.

    Raises:
        DataError: unknown name, missing data, or a split the dataset lacks.
        UnknownOptionError: an option the dataset does not take.

    >>> ds = load_dataset("embedded", split="test")
    >>> len(ds), ds.class_counts[:3]
    (1000, [100, 100, 100])
    >>> ds = load_dataset("embedded", split="test", imbalance_ratio=10, n_max=100)
    >>> ds.class_counts
    [100, 77, 59, 46, 35, 27, 21, 16, 12, 10]
    """
    name = _FORMER_NAMES.get(name, name)
    try:
        DATASETS.get(name)
    except UnknownComponentError as exc:  # a DataError, as every other problem with the data
        raise DataError(str(exc)) from None
    if split is None and name != "image_folder":
        raise DataError(f"dataset {name!r} needs a split ('train' or 'test')")
    dataset = DATASETS.build(name, root=root, split=split, transform=transform, **options)
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
