"""Image trees laid out one folder per class (``root/<class>/<image>``).

The layout of torchvision's ``ImageFolder``, whose scanner is reused here
(classes sorted by folder name, files with a known image extension; hidden files and
folders such as macOS's ``._x.jpg`` are skipped); the
result is a :class:`~lttoolkit.data.files.FileListDataset`, so its labels are
known without opening an image, as the class-aware samplers of BBN (Zhou et
al., CVPR 2020) need.
"""

from __future__ import annotations

import os
from pathlib import Path

from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

from lttoolkit.data.base import Transform
from lttoolkit.data.files import FileListDataset
from lttoolkit.errors import DataError

__all__ = ["load_image_folder"]


def load_image_folder(
    root: str | os.PathLike[str],
    *,
    transform: Transform | None = None,
    in_chans: int = 3,
    mode: str | None = None,
    extensions: tuple[str, ...] = IMG_EXTENSIONS,
) -> FileListDataset:
    """Scan ``root/<class>/...`` into a dataset.

    Args:
        root: the folder whose sub-folders are the classes.
        transform: applied to each PIL image.
        in_chans: 1 loads images as grey, 3 as RGB.
        mode: a PIL mode overriding ``in_chans``.
        extensions: file suffixes counted as images (lower case).

    Returns:
        A :class:`FileListDataset` with ``classes`` the sorted folder names.

    Raises:
        DataError: ``root`` is missing, has no class folders, or no images.
    """
    folder = Path(root).expanduser()
    if not folder.is_dir():
        raise DataError(f"image folder {folder} does not exist; it should hold one sub-folder per class")
    def is_image(path: str) -> bool:
        # Hidden files are never images: macOS writes "._x.jpg" (AppleDouble) next to every x.jpg on
        # foreign file systems, which has the suffix but not the content.
        return not os.path.basename(path).startswith(".") and path.lower().endswith(tuple(extensions))

    try:
        # Hidden folders (.ipynb_checkpoints, .git) are not classes.
        classes = sorted(entry.name for entry in os.scandir(folder) if entry.is_dir() and not entry.name.startswith("."))
        if not classes:
            raise DataError(f"image folder {folder} has no class sub-folders; it should hold one sub-folder per class")
        class_to_idx = {name: index for index, name in enumerate(classes)}
        samples = make_dataset(str(folder), class_to_idx, is_valid_file=is_image, allow_empty=True)
    except (FileNotFoundError, OSError) as exc:
        raise DataError(f"cannot scan image folder {folder}: {exc}") from exc
    if not samples:
        raise DataError(
            f"image folder {folder} holds no images with suffix {', '.join(extensions)} in its class folders"
        )
    paths = [os.path.relpath(path, folder) for path, _ in samples]
    dataset = FileListDataset(
        paths,
        [label for _, label in samples],
        root=folder,
        classes=classes,
        transform=transform,
        in_chans=in_chans,
        mode=mode,
        source=f"image folder {folder}",
    )
    dataset.metadata = {"source": "image_folder", "root": str(folder)}
    return dataset
