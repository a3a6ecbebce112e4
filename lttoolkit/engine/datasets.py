"""Turn a :class:`~lttoolkit.engine.config.DataConfig` into the datasets of a run.

Class counts are computed here once and handed to the samplers and the loss.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lttoolkit._introspect import accepted_options
from lttoolkit.data import build_transforms, dataset_channels, dataset_transform_family, load_dataset
from lttoolkit.engine.config import DataConfig
from lttoolkit.errors import ConfigError, DataError
from lttoolkit.registry import DATASETS

__all__ = ["DataBundle", "build_datasets", "transform_family", "stratified_split", "match_classes"]

_DEFAULT_SIZE = {"cifar": 32, "mnist": 28, "fashion_mnist": 28, "imagenet": 224}


@dataclass
class DataBundle:
    """The datasets of one run and the facts the rest of the run needs."""

    train: Any
    test: Any
    val: Any | None
    num_classes: int
    classes: list[str]
    class_counts: list[int]
    in_chans: int
    input_size: tuple[int, int, int]
    family: str
    skipped: int = 0
    metadata: dict[str, Any] = field(default_factory=dict)


def transform_family(cfg: DataConfig) -> str:
    """The transform family of a data config (``auto`` follows the dataset)."""
    if cfg.transforms != "auto":
        return cfg.transforms
    return dataset_transform_family(cfg.dataset)


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Hold out ``fraction`` of every class (rounded, at least one image stays in training).

    >>> labels = np.array([0] * 10 + [1] * 3)
    >>> train, val = stratified_split(labels, 0.2, seed=0)
    >>> len(train), len(val), np.bincount(labels[val]).tolist()
    (10, 3, [2, 1])
    """
    rng = np.random.default_rng([seed, 0x5EED])
    train_idx, val_idx = [], []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        rng.shuffle(members)
        take = min(int(round(fraction * len(members))), len(members) - 1)
        take = max(take, 1) if len(members) > 1 else 0
        val_idx.append(members[:take])
        train_idx.append(members[take:])
    return np.sort(np.concatenate(train_idx)), np.sort(np.concatenate(val_idx))


def match_classes(dataset: Any, expected: list[str], *, what: str, fix: str) -> None:
    """Make ``dataset``'s labels index ``expected`` by class *name*: the same names in another order
    are re-numbered; other names are refused, never scored as whichever class has the same index.

    >>> from lttoolkit.data import ArrayDataset
    >>> ds = ArrayDataset(np.zeros((2, 4, 4), np.uint8), [0, 1], classes=["cat", "bird"])
    >>> match_classes(ds, ["bird", "cat"], what="the test split", fix="")
    >>> ds.labels.tolist(), ds.classes
    ([1, 0], ['bird', 'cat'])
    """
    names = [str(name) for name in dataset.classes]
    expected = [str(name) for name in expected]
    if names == expected:
        return
    if sorted(names) == sorted(expected) and len(set(names)) == len(names):
        index = {name: i for i, name in enumerate(expected)}
        mapping = np.array([index[name] for name in names], dtype=np.int64)
        dataset.labels = mapping[np.asarray(dataset.labels, dtype=np.int64)]
        dataset.classes = list(expected)
        return
    unknown = [name for name in names if name not in expected]
    absent = [name for name in expected if name not in names]
    raise DataError(
        f"{what} has other classes than the model was trained on: {_names(unknown)} not among the training "
        f"classes" + (f", and {_names(absent)} missing" if absent else "") + f" (training classes: {_names(expected)}); "
        f"classes are matched by name, never by position; {fix}"
    )


def _names(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return f"[{shown}{', ...' if len(names) > limit else ''}]"


#: ``data.check_files: auto`` decodes every image up front for sets up to this size (seconds on a CPU).
AUTO_DECODE_LIMIT = 5000


def check_files(dataset: Any, *, decode: bool, limit: int = 5) -> None:
    """Fail before training if a listed image file is missing (or, with ``decode``, unreadable),
    naming where it is listed and the entry; in-memory datasets have nothing to check."""
    if not hasattr(dataset, "path"):
        return
    bad: list[str] = []
    for index in range(len(dataset)):
        if decode:
            try:
                dataset.load_image(index)
            except DataError as exc:
                bad.append(str(exc))
        elif not os.path.isfile(dataset.path(index)):
            bad.append(f"image file {dataset.path(index)} does not exist (listed in "
                       f"{getattr(dataset, 'source', 'the file list')} as entry {index}, {dataset.paths[index]!r})")
        if len(bad) >= limit:
            break
    if bad:
        raise DataError(
            f"{len(bad)}{'+' if len(bad) >= limit else ''} of {len(dataset)} listed images cannot be used: "
            + "; ".join(bad) + ". Fix or remove those entries, or set data.bad_image_policy=skip to drop unreadable "
            "images (data.check_files=false skips this check)"
        )


def drop_unreadable(dataset: Any) -> tuple[Any, list[str]]:
    """Drop the images of a file-based dataset that cannot be decoded.

    Every image is opened and decoded once (the ``bad_image_policy: skip`` cost);
    in-memory datasets have nothing to check.

    Returns:
        ``(dataset without the bad images, "path: reason" for each dropped one)``.
    """
    if not hasattr(dataset, "path"):
        return dataset, []
    good, bad = [], []
    for index in range(len(dataset)):
        try:
            dataset.load_image(index)
        except DataError as exc:
            bad.append(str(exc))
        else:
            good.append(index)
    return (dataset.subset(good) if bad else dataset), bad


def build_datasets(cfg: DataConfig, *, seed: int = 0) -> DataBundle:
    """Load, make long-tailed, split and attach transforms as ``cfg`` says.

    Args:
        cfg: the data section of a run config.
        seed: seed of the long-tailed selection and the validation split.

    ``cfg.bad_image_policy``: ``"error"`` stops at the first unreadable image (naming
    it) when it is loaded; ``"skip"`` decodes every image up front, drops unreadable
    ones and counts them in ``DataBundle.skipped`` (and in ``results.json``).

    Raises:
        DataError: missing or malformed data, with the path and the fix.
        ConfigError: options that do not fit the chosen dataset.
    """
    family = transform_family(cfg)
    in_chans = cfg.in_chans or dataset_channels(cfg.dataset)
    size = cfg.image_size or _DEFAULT_SIZE.get(family, 224)
    # What the dataset's factory takes, it is given (docs/plugins.md, the dataset protocol).
    takes, _ = accepted_options(DATASETS.get(cfg.dataset))
    options: dict[str, Any] = {}
    if "annotations" in takes:
        if not cfg.train_annotations or not cfg.test_annotations:
            raise ConfigError(
                f"data.dataset={cfg.dataset} needs data.train_annotations and data.test_annotations "
                f"(annotation files) and data.root (the image folder)"
            )
    if "allow_outside_root" in takes:
        options["allow_outside_root"] = cfg.allow_outside_root
    if "in_chans" in takes:
        options["in_chans"] = in_chans
    if cfg.root is not None and not Path(cfg.root).is_dir():
        raise DataError(f"data.root={cfg.root!r} is not a folder; point it at the folder that holds the dataset")

    def load(split: str, **extra: Any) -> Any:
        opts = dict(options)
        if "annotations" in takes:
            opts["annotations"] = cfg.train_annotations if split == "train" else cfg.test_annotations
        return load_dataset(cfg.dataset, root=cfg.root, split=split, **opts, **extra)

    lt: dict[str, Any] = {}
    if cfg.imbalance_ratio is not None:
        lt = dict(imbalance_ratio=cfg.imbalance_ratio, profile=cfg.profile, n_max=cfg.n_max, seed=seed)
    elif cfg.n_max is not None or cfg.permute_classes:
        raise ConfigError("data.n_max and data.permute_classes only apply with data.imbalance_ratio; set it too")
    train = load("train")
    test = load("test")
    if cfg.check_files is not False and cfg.bad_image_policy == "error":
        # Up front, on the lists as written: a missing or broken file would otherwise surface only when the
        # sampler reaches it, possibly hours in.
        for listed in (train, test):
            decode = cfg.check_files is True or len(listed) <= AUTO_DECODE_LIMIT
            check_files(listed, decode=decode)
    if lt:
        if cfg.permute_classes:
            lt["class_order"] = [int(c) for c in np.random.default_rng([seed, 0xC1A55]).permutation(train.num_classes)]
        from lttoolkit.data import make_long_tailed

        indices = make_long_tailed(train.labels, num_classes=train.num_classes, **lt)
        metadata = {**train.metadata, **{k: v for k, v in lt.items() if k != "seed"}}
        train = train.subset(indices)
        train.metadata = metadata
    if test.num_classes != train.num_classes:
        raise DataError(
            f"the training split has {train.num_classes} classes but the test split {test.num_classes}; "
            f"both must use the same class list"
        )
    match_classes(test, list(train.classes), what="the test split",
                  fix="give the test split the training split's class names (folder names for image_folder)")
    val = None
    if cfg.val_fraction > 0:
        train_idx, val_idx = stratified_split(train.labels, cfg.val_fraction, seed)
        val = train.subset(val_idx)
        train = train.subset(train_idx)
    skipped: list[str] = []
    if cfg.bad_image_policy == "skip":
        train, bad_train = drop_unreadable(train)
        test, bad_test = drop_unreadable(test)
        skipped = bad_train + bad_test
    if len(train) == 0:
        raise DataError(f"the training set of data.dataset={cfg.dataset} is empty; check data.root and the annotations")
    if train.num_classes < 2:
        raise DataError(
            f"the training data of data.dataset={cfg.dataset} has {train.num_classes} class "
            f"({', '.join(map(repr, train.classes))}): a classifier needs at least 2; check data.root (image_folder "
            f"wants one sub-folder per class) or the annotations' labels"
        )
    train.transform = build_transforms(family, True, in_chans=in_chans, image_size=cfg.image_size)
    test.transform = build_transforms(family, False, in_chans=in_chans, image_size=cfg.image_size)
    if val is not None:
        val.transform = test.transform
    counts = np.bincount(train.labels, minlength=train.num_classes).tolist()
    return DataBundle(
        train=train, test=test, val=val, num_classes=train.num_classes, classes=list(train.classes),
        class_counts=[int(c) for c in counts], in_chans=in_chans, input_size=(in_chans, size, size), family=family,
        skipped=len(skipped), metadata={**train.metadata, "skipped_images": skipped[:100]},
    )
