"""Datasets of image files on disk, opened lazily with PIL.

The large long-tailed benchmarks (ImageNet-LT and Places-LT of Liu et al.,
"Large-Scale Long-Tailed Recognition in an Open World", CVPR 2019; iNaturalist
2017/2018 of Van Horn et al., CVPR 2018, as used by BBN, Zhou et al., CVPR
2020) are lists of image paths with labels. :class:`FileListDataset` holds
such a list; :mod:`lttoolkit.data.annotations` and
:mod:`lttoolkit.data.image_folder` build one from the usual file formats.
"""

from __future__ import annotations

import os
import posixpath
from typing import Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from lttoolkit.data.base import LabelledDataset, Transform
from lttoolkit.errors import DataError

__all__ = ["FileListDataset", "load_image", "image_mode", "check_relative_path"]

_CHANNEL_MODES = {1: "L", 3: "RGB"}


def image_mode(in_chans: int = 3, mode: str | None = None) -> str:
    """The PIL mode images are converted to: ``mode`` if given, else ``"L"`` for 1 channel, ``"RGB"`` for 3.

    >>> image_mode(1), image_mode(3), image_mode(3, mode="RGBA")
    ('L', 'RGB', 'RGBA')
    """
    if mode is not None:
        return mode
    if in_chans not in _CHANNEL_MODES:
        raise DataError(f"in_chans must be 1 (grey, PIL mode 'L') or 3 (RGB), got {in_chans!r}; or pass mode=")
    return _CHANNEL_MODES[in_chans]


def load_image(path: str | os.PathLike[str], mode: str = "RGB") -> Image.Image:
    """Open an image file fully and convert it to ``mode``.

    Raises:
        DataError: the file is missing, unreadable or not an image; the message names it.
    """
    try:
        with Image.open(path) as image:
            image.load()
            return image.convert(mode)
    except FileNotFoundError:
        raise DataError(f"image file {path} does not exist") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        # PIL reports truncated or corrupt files as OSError / SyntaxError / ValueError.
        raise DataError(f"cannot read image file {path}: {type(exc).__name__}: {exc}") from exc


def check_relative_path(path: str, where: str) -> str:
    """Normalise ``path`` and refuse one that leaves the image root.

    Args:
        path: a path from an annotation file.
        where: the file and line it came from, for the error message.

    Returns:
        The normalised relative path (POSIX separators).

    Raises:
        DataError: ``path`` is absolute or climbs out with ``..``.

    >>> check_relative_path("train/cat/./1.jpg", "list.txt:1")
    'train/cat/1.jpg'
    """
    text = path.replace("\\", "/")
    normal = posixpath.normpath(text)
    if text.startswith("/") or os.path.isabs(path) or (len(text) > 1 and text[1] == ":"):
        problem = "is absolute"
    elif normal == ".." or normal.startswith("../"):
        problem = "climbs out of the root with '..'"
    else:
        return normal
    raise DataError(
        f"{where}: image path {path!r} {problem}; paths must lie inside the image root. "
        f"Fix the annotation file, or pass allow_outside_root=True if you trust it"
    )


class _PackedStrings:
    """Strings stored as one UTF-8 buffer plus offsets.

    DataLoader workers forked from the main process share these two arrays'
    pages; a list of Python strings would be copied page by page as reference
    counts change, multiplying memory by the number of workers on lists of
    hundreds of thousands of paths (iNaturalist 2018 has 437,513).
    """

    def __init__(self, strings: Sequence[str]) -> None:
        encoded = [s.encode("utf-8") for s in strings]
        self._buffer = np.frombuffer(b"".join(encoded), dtype=np.uint8)
        self._offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(e) for e in encoded], out=self._offsets[1:])

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __getitem__(self, index: int) -> str:
        return self._buffer[self._offsets[index] : self._offsets[index + 1]].tobytes().decode("utf-8")

    def tolist(self) -> list[str]:
        return [self[i] for i in range(len(self))]


class FileListDataset(LabelledDataset):
    """Images listed by path, loaded with PIL on access.

    Args:
        paths: image paths, relative to ``root`` when it is given.
        labels: one integer label per path.
        root: folder the paths are relative to.
        classes: class names; default ``"0", "1", ...``.
        num_classes: number of classes when ``classes`` is not given.
        transform: applied to each PIL image.
        in_chans: 1 converts images to grey (``"L"``), 3 to ``"RGB"``.
        mode: a PIL mode overriding ``in_chans``.
        allow_outside_root: accept absolute paths and paths with ``..``.
        check_files: check every file exists now rather than on first access.
        source: where the list came from, for error messages.

    >>> ds = FileListDataset(["a/1.png", "b/2.png"], [0, 1], root="/data/images")
    >>> ds.path(1), len(ds), ds.num_classes
    ('/data/images/b/2.png', 2, 2)
    """

    def __init__(
        self,
        paths: Sequence[str],
        labels: Sequence[int] | np.ndarray,
        *,
        root: str | os.PathLike[str] | None = None,
        classes: Sequence[str] | None = None,
        num_classes: int | None = None,
        transform: Transform | None = None,
        in_chans: int = 3,
        mode: str | None = None,
        allow_outside_root: bool = False,
        check_files: bool = False,
        source: str = "file list",
    ) -> None:
        paths = [os.fspath(p) for p in paths]
        self.source = source
        self._init_labels(labels, classes, num_classes, transform, source)
        if len(paths) != len(self.labels):
            raise DataError(f"{source}: {len(paths)} paths but {len(self.labels)} labels")
        self.root = os.fspath(root) if root is not None else None
        if self.root is not None and not allow_outside_root:
            paths = [check_relative_path(p, f"{source}, entry {i}") for i, p in enumerate(paths)]
        self._paths = _PackedStrings(paths)
        self.mode = image_mode(in_chans, mode)
        self.allow_outside_root = allow_outside_root
        if check_files:
            missing = [p for p in map(self.path, range(len(self))) if not os.path.isfile(p)]
            if missing:
                raise DataError(
                    f"{source}: {len(missing)} of {len(self)} image files are missing, e.g. {missing[0]}"
                )

    def path(self, index: int) -> str:
        """The full path of image ``index``."""
        relative = self._paths[index]
        return relative if self.root is None else os.path.join(self.root, relative)

    @property
    def paths(self) -> list[str]:
        """The paths as given (normalised), relative to ``root`` when it is set."""
        return self._paths.tolist()

    def load_image(self, index: int) -> Image.Image:
        try:
            return load_image(self.path(index), self.mode)
        except DataError as exc:  # name where the file is listed, not only the file
            raise DataError(f"{exc} (listed in {self.source} as {self._paths[index]!r})") from exc

    def subset(self, indices: Sequence[int] | np.ndarray) -> FileListDataset:
        """A :class:`FileListDataset` of the files at ``indices``."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise DataError(f"subset indices must lie in [0, {len(self) - 1}] for a dataset of {len(self)} images")
        out = FileListDataset(
            [self._paths[int(i)] for i in idx],
            self.labels[idx],
            root=self.root,
            classes=self.classes,
            transform=self.transform,
            mode=self.mode,
            allow_outside_root=True,  # checked when this list was made
            source=self.source,
        )
        out.allow_outside_root = self.allow_outside_root
        out.metadata = dict(self.metadata)
        return out
