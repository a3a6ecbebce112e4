"""The dataset contract every lttoolkit data source follows, and in-memory arrays.

A dataset knows its ``labels`` up front (an int64 numpy array), so samplers
such as BBN's reversed sampler (Zhou et al., CVPR 2020) can compute class
counts without touching a single image. ``dataset[i]`` returns
``(image, label)``: a PIL image passed through the optional transform.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from lttoolkit.data.long_tail import class_counts
from lttoolkit.errors import ComponentContractError, DataError

__all__ = ["LabelledDataset", "LabelledSubset", "ArrayDataset"]

Transform = Callable[[Any], Any]


def _as_labels(labels: Sequence[int] | np.ndarray, what: str) -> np.ndarray:
    array = np.asarray(labels)
    if array.ndim != 1:
        raise DataError(f"{what}: labels must be one-dimensional, got shape {array.shape}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        if not np.all(np.mod(array, 1) == 0):
            raise DataError(f"{what}: labels must be integers, got dtype {array.dtype}")
    return array.astype(np.int64, copy=False)


class LabelledDataset(Dataset):
    """Base class: a map-style dataset with labels known in advance.

    Subclasses set ``labels``, ``classes`` and ``transform`` (via
    :meth:`_init_labels`) and implement :meth:`load_image`.

    Attributes:
        labels: int64 array, the class of every image.
        classes: class names, ``classes[c]`` the name of class ``c``.
        transform: applied to the PIL image in ``__getitem__`` when not ``None``.
        metadata: free-form facts about how the set was made (e.g. its imbalance ratio).
    """

    labels: np.ndarray
    classes: list[str]
    transform: Transform | None
    metadata: dict[str, Any]

    def _init_labels(
        self,
        labels: Sequence[int] | np.ndarray,
        classes: Sequence[str] | None,
        num_classes: int | None,
        transform: Transform | None,
        what: str,
    ) -> None:
        self.labels = _as_labels(labels, what)
        if self.labels.size and self.labels.min() < 0:
            raise DataError(f"{what}: labels must be >= 0, found {int(self.labels.min())}")
        if classes is not None:
            classes = [str(name) for name in classes]
            if num_classes is not None and num_classes != len(classes):
                raise DataError(f"{what}: num_classes={num_classes} but {len(classes)} class names were given")
            num_classes = len(classes)
        if num_classes is None:
            num_classes = int(self.labels.max()) + 1 if self.labels.size else 0
        if self.labels.size and self.labels.max() >= num_classes:
            raise DataError(
                f"{what}: label {int(self.labels.max())} is out of range for {num_classes} classes "
                f"(labels must lie in [0, {num_classes - 1}])"
            )
        self.classes = classes if classes is not None else [str(c) for c in range(num_classes)]
        self.transform = transform
        self.metadata = {}

    @property
    def num_classes(self) -> int:
        """Number of classes (including any without images in this set)."""
        return len(self.classes)

    @cached_property
    def class_counts(self) -> list[int]:
        """Images per class, computed once."""
        return class_counts(self.labels, self.num_classes)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def load_image(self, index: int) -> Image.Image:
        """The untransformed image at ``index``."""
        raise NotImplementedError

    def __getitem__(self, index: int) -> tuple[Any, int]:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} is out of range for a dataset of {len(self)} images")
        image = self.load_image(index)
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[index])

    def subset(self, indices: Sequence[int] | np.ndarray) -> LabelledDataset:
        """A dataset of the images at ``indices``, with the same classes and transform.

        >>> import numpy as np
        >>> ds = ArrayDataset(np.zeros((4, 2, 2), np.uint8), [0, 1, 1, 2])
        >>> ds.subset([1, 3]).labels.tolist(), ds.subset([1, 3]).num_classes
        ([1, 2], 3)
        """
        return LabelledSubset(self, indices)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} images, {self.num_classes} classes)"


class LabelledSubset(LabelledDataset):
    """The images of ``base`` at ``indices`` (e.g. a long-tailed selection).

    Args:
        base: the full dataset.
        indices: positions in ``base``.
        transform: replaces ``base.transform`` when given.
    """

    def __init__(
        self,
        base: LabelledDataset,
        indices: Sequence[int] | np.ndarray,
        transform: Transform | None = None,
    ) -> None:
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < -len(base) or idx.max() >= len(base)):
            raise DataError(f"subset indices must lie in [0, {len(base) - 1}] for a dataset of {len(base)} images")
        self.base = base
        self.indices = idx % max(len(base), 1)
        self._init_labels(base.labels[self.indices], base.classes, None, transform if transform is not None else base.transform, "subset")
        self.metadata = dict(base.metadata)

    def load_image(self, index: int) -> Image.Image:
        return self.base.load_image(int(self.indices[index]))


class ArrayDataset(LabelledDataset):
    """Images held in one uint8 array (CIFAR, Fashion-MNIST, the embedded subset).

    Args:
        images: uint8 array ``[N, H, W]`` (grey) or ``[N, H, W, C]`` with C in 1, 3, 4.
        labels: ``N`` integer labels.
        classes: class names; default ``"0", "1", ...``.
        transform: applied to the PIL image of each item.
        num_classes: number of classes when ``classes`` is not given and the
            highest class may have no images; default ``max(labels) + 1``.

    >>> import numpy as np
    >>> ds = ArrayDataset(np.zeros((3, 28, 28), np.uint8), [0, 1, 1], classes=["a", "b"])
    >>> image, label = ds[2]
    >>> image.size, image.mode, label, ds.class_counts
    ((28, 28), 'L', 1, [1, 2])
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: Sequence[int] | np.ndarray,
        classes: Sequence[str] | None = None,
        transform: Transform | None = None,
        *,
        num_classes: int | None = None,
    ) -> None:
        images = np.asarray(images)
        if images.dtype != np.uint8:
            raise DataError(
                f"ArrayDataset needs uint8 images, got dtype {images.dtype}; convert with .astype(np.uint8)"
            )
        if images.ndim == 4 and images.shape[-1] == 1:
            images = images[..., 0]
        if not (images.ndim == 3 or (images.ndim == 4 and images.shape[-1] in (3, 4))):
            raise DataError(
                f"ArrayDataset needs images shaped [N, H, W] or [N, H, W, C] with C in 1, 3, 4 "
                f"(channels last), got shape {images.shape}"
            )
        self._init_labels(labels, classes, num_classes, transform, "ArrayDataset")
        if images.shape[0] != self.labels.shape[0]:
            raise DataError(f"ArrayDataset got {images.shape[0]} images but {self.labels.shape[0]} labels")
        self.images = images

    def load_image(self, index: int) -> Image.Image:
        return Image.fromarray(self.images[index])

    def subset(self, indices: Sequence[int] | np.ndarray) -> ArrayDataset:
        """A new :class:`ArrayDataset` holding copies of the images at ``indices``."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise DataError(f"subset indices must lie in [0, {len(self) - 1}] for a dataset of {len(self)} images")
        out = ArrayDataset(self.images[idx], self.labels[idx], self.classes, self.transform)
        out.metadata = dict(self.metadata)
        return out


def check_built_dataset(dataset: Any, *, who: str, options: Mapping[str, Any]) -> None:
    """What :data:`lttoolkit.registry.DATASETS` checks a plugin's dataset for (docs/plugins.md).

    Raises:
        ComponentContractError: naming ``who`` (the dataset and its distribution) and what is missing.
    """
    missing = [name for name in ("labels", "classes", "num_classes", "subset", "__getitem__", "__len__")
               if not hasattr(dataset, name)]
    if missing:
        raise ComponentContractError(
            f"{who} returned {type(dataset).__name__}, which lacks {', '.join(missing)}; return a "
            f"lttoolkit.data.LabelledDataset (e.g. lttoolkit.data.ArrayDataset(images, labels, classes=...))"
        )
    labels = np.asarray(dataset.labels)
    if labels.ndim != 1 or len(labels) != len(dataset) or not np.issubdtype(labels.dtype, np.integer):
        raise ComponentContractError(
            f"{who}: labels must be a 1-D integer array with one label per image ({len(dataset)}), got "
            f"shape {labels.shape} of {labels.dtype}"
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= int(dataset.num_classes)):
        raise ComponentContractError(f"{who}: labels must lie in [0, num_classes={int(dataset.num_classes)})")
