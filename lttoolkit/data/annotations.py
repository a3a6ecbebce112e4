"""Annotation files of the large long-tailed benchmarks.

* JSON, the form BBN's code reads (Zhou et al., CVPR 2020) for iNaturalist
  2017/2018 and its CIFAR-LT dumps: ``{"annotations": [{"fpath": ...,
  "category_id": ...}, ...], "num_classes": N}``.
* Text lists, the form of ImageNet-LT and Places-LT (Liu et al., CVPR 2019):
  one ``relative/path label`` per line.

Paths are taken relative to an image root and may not leave it (no absolute
paths, no ``..``) unless ``allow_outside_root=True``: an annotation file from
elsewhere then cannot make the loader read arbitrary files.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

from lttoolkit.data.base import Transform
from lttoolkit.data.files import FileListDataset
from lttoolkit.errors import DataError

__all__ = ["load_json_annotations", "load_text_list"]


def _root_for(annotation_file: Path, root: str | os.PathLike[str] | None) -> Path:
    return Path(root).expanduser() if root is not None else annotation_file.parent


def load_json_annotations(
    annotation_file: str | os.PathLike[str],
    root: str | os.PathLike[str] | None = None,
    *,
    classes: Sequence[str] | None = None,
    transform: Transform | None = None,
    in_chans: int = 3,
    mode: str | None = None,
    allow_outside_root: bool = False,
    check_files: bool = False,
) -> FileListDataset:
    """Read a BBN/iNaturalist-style JSON annotation file.

    Args:
        annotation_file: the JSON file.
        root: folder the ``fpath`` entries are relative to; default the JSON file's folder.
        classes: class names; default ``"0", "1", ...``.
        transform: applied to each PIL image.
        in_chans: 1 loads images as grey, 3 as RGB.
        mode: a PIL mode overriding ``in_chans``.
        allow_outside_root: accept absolute ``fpath`` entries and ``..`` (BBN's own
            dumps store absolute paths).
        check_files: verify every image exists now.

    Returns:
        A :class:`FileListDataset`; ``num_classes`` comes from the file's
        ``"num_classes"`` when present.

    Raises:
        DataError: the file is missing or malformed (the message names the entry),
            or a path leaves the root.
    """
    path = Path(annotation_file)
    try:
        content: Any = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"annotation file {path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read annotation file {path}: {exc}") from exc
    if not isinstance(content, dict) or not isinstance(content.get("annotations"), list):
        raise DataError(
            f"{path} should be a JSON object with an 'annotations' list of "
            f"{{'fpath': ..., 'category_id': ...}} entries (BBN's format)"
        )
    paths: list[str] = []
    labels: list[int] = []
    for number, item in enumerate(content["annotations"]):
        if not isinstance(item, dict) or "fpath" not in item or "category_id" not in item:
            raise DataError(f"{path}: annotation {number} lacks 'fpath' or 'category_id': {item!r}")
        label = item["category_id"]
        if isinstance(label, bool) or not isinstance(label, int):
            raise DataError(f"{path}: annotation {number} has a non-integer category_id {label!r}")
        paths.append(str(item["fpath"]))
        labels.append(label)
    if not paths:
        raise DataError(f"{path} lists no annotations")
    num_classes = content.get("num_classes")
    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int)):
        raise DataError(f"{path}: 'num_classes' should be an integer, got {num_classes!r}")
    dataset = FileListDataset(
        paths,
        labels,
        root=_root_for(path, root),
        classes=classes,
        num_classes=None if classes is not None else num_classes,
        transform=transform,
        in_chans=in_chans,
        mode=mode,
        allow_outside_root=allow_outside_root,
        check_files=check_files,
        source=str(path),
    )
    dataset.metadata = {"source": "json_annotations", "annotation_file": str(path)}
    return dataset


def load_text_list(
    list_file: str | os.PathLike[str],
    root: str | os.PathLike[str] | None = None,
    *,
    num_classes: int | None = None,
    classes: Sequence[str] | None = None,
    transform: Transform | None = None,
    in_chans: int = 3,
    mode: str | None = None,
    allow_outside_root: bool = False,
    check_files: bool = False,
) -> FileListDataset:
    """Read an ImageNet-LT / Places-LT style list: ``relative/path label`` per line.

    The label is the last field, so paths may contain spaces. Blank lines are skipped.

    Args:
        list_file: the text file, e.g. ``ImageNet_LT_train.txt``.
        root: folder the paths are relative to; default the list file's folder.
        num_classes: number of classes (1000 for ImageNet-LT, 365 for Places-LT),
            when the list may miss the last ones; default ``max(label) + 1``.
        classes: class names.
        transform: applied to each PIL image.
        in_chans: 1 loads images as grey, 3 as RGB.
        mode: a PIL mode overriding ``in_chans``.
        allow_outside_root: accept absolute paths and ``..``.
        check_files: verify every image exists now.

    Raises:
        DataError: a missing file, a malformed line (named by number) or a path leaving the root.
    """
    path = Path(list_file)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DataError(f"image list {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read image list {path}: {exc}") from exc
    paths: list[str] = []
    labels: list[int] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        fields = line.strip().rsplit(None, 1)
        if len(fields) != 2:
            raise DataError(f"{path}:{number}: expected 'relative/path label', got {line!r}")
        try:
            labels.append(int(fields[1]))
        except ValueError:
            raise DataError(f"{path}:{number}: the label {fields[1]!r} is not an integer") from None
        paths.append(fields[0])
    if not paths:
        raise DataError(f"image list {path} is empty")
    dataset = FileListDataset(
        paths,
        labels,
        root=_root_for(path, root),
        classes=classes,
        num_classes=num_classes,
        transform=transform,
        in_chans=in_chans,
        mode=mode,
        allow_outside_root=allow_outside_root,
        check_files=check_files,
        source=str(path),
    )
    dataset.metadata = {"source": "text_list", "list_file": str(path)}
    return dataset
