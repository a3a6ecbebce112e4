"""Tests of lttoolkit.data: long-tailed splits, sources, transforms, embedded data.

Expected values are the published CIFAR-LT sizes (Cao et al. 2019; Zhou et al.
2020), hand-built files in the documented formats (IDX, CIFAR pickles written
the way Python 2 wrote them, BBN JSON, ImageNet-LT lists), and invariants.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lttoolkit.data import (
    dataset_transform_family,
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_DIR,
    TRANSFORM_FAMILIES,
    ArrayDataset,
    FileListDataset,
    LabelledSubset,
    build_transforms,
    class_counts,
    embedded_metadata,
    load_cifar10,
    load_cifar100,
    load_dataset,
    load_embedded,
    load_fashion_mnist,
    load_image_folder,
    load_json_annotations,
    load_text_list,
    long_tailed_counts,
    make_long_tailed,
    read_cifar_pickle,
    read_idx,
)
from lttoolkit.errors import ConfigError, DataError, UnknownOptionError
from lttoolkit.registry import BUILTIN, DATASETS

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- long-tail protocol
@pytest.mark.parametrize(
    ("num_classes", "n_max", "ratio", "total"),
    [
        (10, 5000, 100, 12406),
        (10, 5000, 50, 13996),
        (10, 5000, 10, 20431),
        (100, 500, 100, 10847),
        (100, 500, 50, 12608),
        (100, 500, 10, 19573),
    ],
)
def test_published_cifar_lt_totals(num_classes, n_max, ratio, total):
    counts = long_tailed_counts(num_classes, n_max, ratio)
    assert sum(counts) == total
    assert counts[0] == n_max and counts[-1] == n_max // ratio
    assert counts == sorted(counts, reverse=True)


def test_step_profile_and_edge_cases():
    assert long_tailed_counts(10, 5000, 100, "step") == [5000] * 5 + [50] * 5
    assert long_tailed_counts(5, 100, 10, "step") == [100, 100, 10, 10, 10]
    assert long_tailed_counts(4, 7, 1) == [7, 7, 7, 7]
    assert long_tailed_counts(1, 9, 100) == [9]
    with pytest.raises(ConfigError, match="unknown long-tail profile 'linear'"):
        long_tailed_counts(10, 100, 10, "linear")



@pytest.mark.parametrize(("n_max", "ratio", "profile", "empty"), [(20, 100, "exp", 4), (99, 100, "exp", 1),
                                                                   (5, 10, "step", 5)])
def test_a_ratio_that_empties_tail_classes_is_refused(n_max, ratio, profile, empty):
    # int(20 * 0.01 ** (i / 9)) is 0 for i >= 6; int(99 * 0.01) = 0; int(5 / 10) = 0 for the step tail
    with pytest.raises(ConfigError, match=rf"n_max {n_max} with imbalance_ratio {ratio} leaves {empty} of 10 "
                                          rf"classes without an image.*at least {ratio}.*at most {n_max}"):
        long_tailed_counts(10, n_max, ratio, profile)
    assert min(long_tailed_counts(10, ratio, ratio, profile)) == 1  # n_max = IR: the tail keeps one image

@pytest.mark.parametrize("bad", [0, -5, float("nan"), float("inf")])
def test_imbalance_ratio_must_be_positive(bad):
    with pytest.raises(ConfigError, match=rf"imbalance_ratio.*got {bad}"):
        long_tailed_counts(10, 100, bad)


def test_imbalance_factor_below_one_is_explained():
    with pytest.raises(ConfigError, match=r"got 0\.01.*inverse 100"):
        long_tailed_counts(10, 100, 0.01)
    with pytest.raises(ConfigError, match="got 0.5"):
        make_long_tailed([0, 1] * 10, 0.5)


def _balanced_labels(num_classes=10, per_class=50, seed=3):
    labels = np.repeat(np.arange(num_classes), per_class)
    return np.random.default_rng(seed).permutation(labels)


def test_make_long_tailed_counts_and_indices():
    labels = _balanced_labels()
    idx = make_long_tailed(labels, 10)
    assert class_counts(labels[idx], 10) == long_tailed_counts(10, 50, 10)
    assert idx.dtype == np.int64 and np.all(np.diff(idx) > 0)  # sorted, unique


def test_make_long_tailed_is_seeded_not_global():
    labels = _balanced_labels()
    np.random.seed(1)
    first = make_long_tailed(labels, 10, seed=7)
    state = np.random.get_state()[1].copy()
    np.random.seed(2)
    second = make_long_tailed(labels, 10, seed=7)
    assert np.array_equal(first, second)
    np.random.seed(2)
    make_long_tailed(labels, 10, seed=7)
    assert np.array_equal(np.random.get_state()[1], np.random.RandomState(2).get_state()[1])
    assert not np.array_equal(state, np.random.get_state()[1])  # sanity: seeds differ
    assert not np.array_equal(first, make_long_tailed(labels, 10, seed=8))


def test_smaller_quota_is_a_subset():
    labels = _balanced_labels()
    strong = set(make_long_tailed(labels, 50, seed=4).tolist())
    weak = set(make_long_tailed(labels, 10, seed=4).tolist())
    assert strong < weak


def test_class_order_moves_the_head():
    labels = _balanced_labels()
    order = [3, 9, 0, 1, 2, 4, 5, 6, 7, 8]
    idx = make_long_tailed(labels, 10, class_order=order)
    counts = class_counts(labels[idx], 10)
    quotas = long_tailed_counts(10, 50, 10)
    assert counts[3] == 50 and counts[9] == quotas[1] and counts[8] == quotas[-1]
    assert [counts[c] for c in order] == quotas
    with pytest.raises(ConfigError, match="permutation"):
        make_long_tailed(labels, 10, class_order=[0, 0, 1, 2, 3, 4, 5, 6, 7, 8])


def test_too_small_class_is_a_data_error():
    labels = np.array([0] * 10 + [1] * 2 + [2] * 10)
    with pytest.raises(DataError, match="class 1 has 2 images but .* asks for 7"):
        make_long_tailed(labels, 2, n_max=10, class_order=[2, 1, 0])
    # n_max defaults to the largest head whose quotas fit: here class 1 (2 images) caps it at 4
    assert class_counts(labels[make_long_tailed(labels, 2)], 3) == [4, 2, 2]


def test_an_already_long_tailed_source_keeps_its_head_by_default():
    from lttoolkit.data.long_tail import largest_n_max

    # docs/datasets.md: the embedded Fashion-MNIST-LT (IR 100) can be made more long-tailed (IR 200)
    embedded = [600, 359, 215, 129, 77, 46, 27, 16, 10, 6]
    labels = np.repeat(np.arange(10), embedded)
    counts = class_counts(labels[make_long_tailed(labels, 200)], 10)
    assert counts[0] == 600 and counts == long_tailed_counts(10, 600, 200)
    assert largest_n_max([500] * 10, 100) == 500  # a balanced source: its class size, as before


def test_class_counts():
    assert class_counts(np.array([2, 2, 0]), 4) == [1, 0, 2, 0]
    with pytest.raises(DataError, match="out of range"):
        class_counts([0, 5], 3)


# --------------------------------------------------------------------------- IDX / Fashion-MNIST
def _idx_bytes(array: np.ndarray, code: int = 0x08) -> bytes:
    # Written from the format description, independently of lttoolkit.data.write_idx.
    header = struct.pack(">BBBB", 0, 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def test_read_idx_plain_gz_and_big_endian(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a").write_bytes(_idx_bytes(images))
    (tmp_path / "b.gz").write_bytes(gzip.compress(_idx_bytes(images)))
    assert np.array_equal(read_idx(tmp_path / "a"), images)
    assert np.array_equal(read_idx(tmp_path / "b.gz"), images)
    ints = np.array([1, -2, 70000], dtype=np.int32)
    (tmp_path / "c").write_bytes(_idx_bytes(ints, 0x0C))
    assert read_idx(tmp_path / "c").tolist() == [1, -2, 70000]


def test_read_idx_rejects_damage(tmp_path):
    good = _idx_bytes(np.zeros((5, 28, 28), np.uint8))
    (tmp_path / "short").write_bytes(good[:-10])
    with pytest.raises(DataError, match=r"short is truncated.*\(5, 28, 28\)"):
        read_idx(tmp_path / "short")
    (tmp_path / "short.gz").write_bytes(gzip.compress(good)[:-20])
    with pytest.raises(DataError, match="short.gz is a damaged or truncated gzip"):
        read_idx(tmp_path / "short.gz")
    (tmp_path / "long").write_bytes(good + b"\0")
    with pytest.raises(DataError, match="longer than its header"):
        read_idx(tmp_path / "long")
    (tmp_path / "magic").write_bytes(b"\x00\x01\x08\x01" + good[4:])
    with pytest.raises(DataError, match="magic"):
        read_idx(tmp_path / "magic")
    (tmp_path / "header").write_bytes(good[:9])
    with pytest.raises(DataError, match="header"):
        read_idx(tmp_path / "header")
    with pytest.raises(DataError, match="does not exist"):
        read_idx(tmp_path / "nothing")


def _write_fake_fashion(folder: Path, per_class: int = 2) -> None:
    rng = np.random.default_rng(0)
    for split, prefix, gz in (("train", "train", False), ("test", "t10k", True)):
        n = 10 * per_class if split == "train" else 10
        labels = np.arange(n, dtype=np.uint8) % 10
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        for kind, rank, array in (("images", 3, images), ("labels", 1, labels)):
            name = f"{prefix}-{kind}-idx{rank}-ubyte"
            data = _idx_bytes(array)
            (folder / (name + ".gz" if gz else name)).write_bytes(gzip.compress(data) if gz else data)


def test_fashion_mnist_from_small_idx_files(tmp_path):
    _write_fake_fashion(tmp_path)
    train = load_fashion_mnist(tmp_path, "train")
    test = load_fashion_mnist(tmp_path, "test")
    assert len(train) == 20 and len(test) == 10
    assert train.classes == list(FASHION_MNIST_CLASSES) and train.class_counts == [2] * 10
    image, label = train[3]
    assert image.mode == "L" and image.size == (28, 28) and label == 3
    assert np.array_equal(np.asarray(image), read_idx(tmp_path / "train-images-idx3-ubyte")[3])


def test_fashion_mnist_missing_and_mismatched_files(tmp_path):
    with pytest.raises(DataError, match="apt install dataset-fashion-mnist"):
        load_fashion_mnist(tmp_path, "train")
    _write_fake_fashion(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(_idx_bytes(np.zeros(7, np.uint8)))
    with pytest.raises(DataError, match="do not belong together"):
        load_fashion_mnist(tmp_path, "train")
    with pytest.raises(DataError, match="splits 'train' and 'test'"):
        load_fashion_mnist(tmp_path, "val")


_REAL_FASHION = any(Path(FASHION_MNIST_DIR, f"train-images-idx3-ubyte{gz}").exists() for gz in ("", ".gz"))


@pytest.mark.realdata
@pytest.mark.skipif(not _REAL_FASHION, reason=f"Fashion-MNIST not installed in {FASHION_MNIST_DIR}")
def test_real_fashion_mnist():
    train = load_fashion_mnist()
    test = load_fashion_mnist(split="test")
    assert train.images.shape == (60000, 28, 28) and train.images.dtype == np.uint8
    assert test.images.shape == (10000, 28, 28)
    assert train.num_classes == 10
    assert train.class_counts == [6000] * 10 and test.class_counts == [1000] * 10


@pytest.mark.realdata
@pytest.mark.skipif(not _REAL_FASHION, reason=f"Fashion-MNIST not installed in {FASHION_MNIST_DIR}")
def test_embedded_data_is_reproducible_from_the_real_files():
    spec = importlib.util.spec_from_file_location("make_embedded_data", REPO / "tools" / "make_embedded_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    meta = embedded_metadata()
    rebuilt = module.build(FASHION_MNIST_DIR, meta["imbalance_ratio"], meta["n_max"], meta["test_per_class"],
                           meta["seed"], meta["profile"])
    train, test = load_embedded()
    assert np.array_equal(rebuilt["train_images"], train.images)
    assert np.array_equal(rebuilt["train_labels"], train.labels)
    assert np.array_equal(rebuilt["test_images"], test.images)


# --------------------------------------------------------------------------- CIFAR
def _py2_pickle(obj) -> bytes:
    """Serialise like Python 2's ``cPickle.dump(obj, f, 2)``, the way the CIFAR files were made.

    Supports dicts, lists, ``bytes`` (Python 2 ``str``), ints and uint8 numpy arrays.
    """
    out = bytearray(b"\x80\x02")

    def string(data: bytes) -> None:
        out.extend(b"U" + bytes([len(data)]) + data if len(data) < 256 else b"T" + struct.pack("<i", len(data)) + data)

    def emit(item) -> None:
        if isinstance(item, dict):
            out.extend(b"}(")
            for key, value in item.items():
                emit(key)
                emit(value)
            out.extend(b"u")
        elif isinstance(item, list):
            out.extend(b"](")
            for value in item:
                emit(value)
            out.extend(b"e")
        elif isinstance(item, bytes):
            string(item)
        elif isinstance(item, int):
            out.extend(b"J" + struct.pack("<i", item))
        else:  # uint8 ndarray: _reconstruct(ndarray, (0,), 'b') then __setstate__
            out.extend(b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85")
            string(b"b")
            out.extend(b"\x87R(")
            emit(1)
            for dim in item.shape:
                emit(dim)
            out.extend({1: b"\x85", 2: b"\x86"}[item.ndim])
            out.extend(b"cnumpy\ndtype\n")
            string(b"u1")
            emit(0)
            emit(1)
            out.extend(b"\x87R(")
            emit(3)
            string(b"|")
            out.extend(b"NNN")
            emit(-1)
            emit(-1)
            emit(0)
            out.extend(b"tb\x89")
            string(item.tobytes())
            out.extend(b"tb")

    emit(obj)
    out.extend(b".")
    return bytes(out)


def _cifar_images(n: int, offset: int) -> np.ndarray:
    rng = np.random.default_rng(offset)
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


def _cifar_rows(images: np.ndarray) -> np.ndarray:
    # The files store each image as 1024 red, 1024 green, then 1024 blue bytes.
    return images.transpose(0, 3, 1, 2).reshape(len(images), -1)


@pytest.fixture
def cifar10_root(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for number in range(1, 6):
        images = _cifar_images(4, number)
        batch = {b"batch_label": b"training batch", b"labels": [number % 10, 1, 2, 3],
                 b"data": _cifar_rows(images), b"filenames": [b"a.png"] * 4}
        (folder / f"data_batch_{number}").write_bytes(_py2_pickle(batch))
    test = {b"labels": [0, 9], b"data": _cifar_rows(_cifar_images(2, 99))}
    # The test batch in a modern pickle, as a user who re-saved the files would have.
    (folder / "test_batch").write_bytes(pickle.dumps(test, protocol=5))
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    (folder / "batches.meta").write_bytes(_py2_pickle({b"label_names": names, b"num_vis": 3072}))
    return tmp_path


def test_cifar10_from_python2_batches(cifar10_root):
    train = load_cifar10(cifar10_root, "train")
    assert len(train) == 20 and train.images.shape == (20, 32, 32, 3)
    assert train.classes[0] == "airplane" and train.num_classes == 10
    assert train.labels[:4].tolist() == [1, 1, 2, 3]
    image, _ = train[5]
    assert image.mode == "RGB" and np.array_equal(np.asarray(image), _cifar_images(4, 2)[1])
    test = load_cifar10(cifar10_root / "cifar-10-batches-py", "test")  # the folder itself works too
    assert test.labels.tolist() == [0, 9]
    assert np.array_equal(test.images, _cifar_images(2, 99))


def test_cifar100_fine_and_coarse(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    for split, n in (("train", 6), ("test", 3)):
        batch = {b"fine_labels": list(range(n)), b"coarse_labels": [i % 2 for i in range(n)],
                 b"data": _cifar_rows(_cifar_images(n, n))}
        (folder / split).write_bytes(_py2_pickle(batch))
    meta = {b"fine_label_names": [f"fine{i}".encode() for i in range(100)],
            b"coarse_label_names": [f"coarse{i}".encode() for i in range(20)]}
    (folder / "meta").write_bytes(_py2_pickle(meta))
    fine = load_cifar100(tmp_path, "train")
    assert fine.num_classes == 100 and fine.labels.tolist() == list(range(6)) and fine.classes[5] == "fine5"
    coarse = load_cifar100(tmp_path, "test", label_type="coarse")
    assert coarse.num_classes == 20 and coarse.labels.tolist() == [0, 1, 0]


def test_cifar_missing_folder_says_where(tmp_path):
    with pytest.raises(DataError, match=rf"{tmp_path / 'cifar-10-batches-py'}.*cs\.toronto\.edu.*never downloads"):
        load_cifar10(tmp_path)
    with pytest.raises(DataError, match="cifar-100-python.tar.gz"):
        load_cifar100(tmp_path)


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_cifar_pickle_refuses_code(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "data_batch_1"
    evil.write_bytes(pickle.dumps({b"data": _Exploit(marker)}, protocol=2))
    with pytest.raises(DataError, match=r"asks to load (posix|os|nt)\.system.*refusing"):
        read_cifar_pickle(evil)
    assert not marker.exists()
    (tmp_path / "truncated").write_bytes(_py2_pickle({b"labels": [1, 2, 3]})[:-5])
    with pytest.raises(DataError, match="truncated"):
        read_cifar_pickle(tmp_path / "truncated")


# --------------------------------------------------------------------------- image files
def _png(path: Path, value: int, mode: str = "RGB", size=(8, 6)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value if mode == "L" else (value, value // 2, 0)).save(path)


@pytest.fixture
def image_root(tmp_path):
    root = tmp_path / "images"
    _png(root / "train" / "cat" / "a.png", 10)
    _png(root / "train" / "cat" / "b.png", 20)
    _png(root / "train" / "dog" / "c d.png", 30)
    _png(root / "test" / "cat" / "e.png", 40)
    _png(root / "test" / "dog" / "f.png", 50)
    (root / "train" / "dog" / "notes.txt").write_text("not an image")
    return root


def _bbn_json(path: Path, entries, num_classes=None) -> Path:
    content = {"annotations": [{"fpath": p, "image_id": i, "category_id": c, "im_height": 6, "im_width": 8}
                               for i, (p, c) in enumerate(entries)]}
    if num_classes is not None:
        content["num_classes"] = num_classes
    path.write_text(json.dumps(content))
    return path


def test_json_annotations(image_root, tmp_path):
    ann = _bbn_json(tmp_path / "train.json", [("train/cat/a.png", 0), ("train/dog/c d.png", 2)], num_classes=4)
    ds = load_json_annotations(ann, image_root)
    assert ds.labels.tolist() == [0, 2] and ds.num_classes == 4 and ds.class_counts == [1, 0, 1, 0]
    image, label = ds[1]
    assert image.mode == "RGB" and image.getpixel((0, 0)) == (30, 15, 0) and label == 2
    grey = load_json_annotations(ann, image_root, in_chans=1)
    assert grey[0][0].mode == "L"


@pytest.mark.parametrize("bad_path", ["../secret.png", "train/../../secret.png", "/etc/passwd"])
def test_paths_leaving_the_root_are_rejected(image_root, tmp_path, bad_path):
    ann = _bbn_json(tmp_path / "bad.json", [("train/cat/a.png", 0), (bad_path, 1)])
    with pytest.raises(DataError, match=r"entry 1.*allow_outside_root=True"):
        load_json_annotations(ann, image_root)
    listing = tmp_path / "bad.txt"
    listing.write_text(f"train/cat/a.png 0\n{bad_path} 1\n")
    with pytest.raises(DataError, match="inside the image root"):
        load_text_list(listing, image_root)


def test_allow_outside_root_accepts_absolute_paths(image_root, tmp_path):
    absolute = str(image_root / "test" / "dog" / "f.png")
    ann = _bbn_json(tmp_path / "abs.json", [(absolute, 1)])
    ds = load_json_annotations(ann, tmp_path / "elsewhere", allow_outside_root=True)
    assert ds[0][0].getpixel((0, 0)) == (50, 25, 0)


def test_text_list(image_root, tmp_path):
    listing = tmp_path / "ImageNet_LT_train.txt"
    listing.write_text("train/cat/a.png 0\n\ntrain/dog/c d.png 1\ntrain/cat/b.png 0\n")
    ds = load_text_list(listing, image_root, num_classes=3)
    assert len(ds) == 3 and ds.labels.tolist() == [0, 1, 0] and ds.class_counts == [2, 1, 0]
    assert ds.paths[1] == "train/dog/c d.png"
    assert ds[2][0].getpixel((0, 0)) == (20, 10, 0)
    listing.write_text("train/cat/a.png 0\ntrain/cat/b.png\n")
    with pytest.raises(DataError, match=r"ImageNet_LT_train.txt:2: expected 'relative/path label'"):
        load_text_list(listing, image_root)
    listing.write_text("train/cat/a.png zero\n")
    with pytest.raises(DataError, match=r":1: the label 'zero' is not an integer"):
        load_text_list(listing, image_root)


def test_missing_or_corrupt_image_names_the_file(image_root, tmp_path):
    (image_root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    listing = tmp_path / "list.txt"
    listing.write_text("gone.png 0\nbroken.png 1\n")
    ds = load_text_list(listing, image_root)
    with pytest.raises(DataError, match=r"gone\.png does not exist"):
        ds[0]
    with pytest.raises(DataError, match=r"cannot read image file .*broken\.png"):
        ds[1]
    with pytest.raises(DataError, match="1 of 2 image files are missing"):
        load_text_list(listing, image_root, check_files=True)


def test_image_folder(image_root):
    ds = load_image_folder(image_root / "train")
    assert ds.classes == ["cat", "dog"] and ds.labels.tolist() == [0, 0, 1]
    assert ds[2][0].getpixel((0, 0)) == (30, 15, 0)
    with pytest.raises(DataError, match="does not exist"):
        load_image_folder(image_root / "val")


def test_subsets_keep_classes_and_transform(image_root):
    ds = load_image_folder(image_root / "train", transform=build_transforms("imagenet", False, image_size=16))
    sub = ds.subset([2])
    assert isinstance(sub, FileListDataset) and sub.classes == ["cat", "dog"] and sub.labels.tolist() == [1]
    assert sub[0][0].shape == (3, 16, 16)
    array = ArrayDataset(np.zeros((3, 4, 4, 3), np.uint8), [0, 2, 1], num_classes=5)
    assert array.subset([1]).num_classes == 5 and array.subset([1]).class_counts == [0, 0, 1, 0, 0]
    generic = LabelledSubset(ds, [1, -1], transform=np.asarray)  # the fallback for any LabelledDataset
    assert generic.labels.tolist() == [0, 1] and generic[1][0].shape == (6, 8, 3) and generic[1][1] == 1
    with pytest.raises(DataError, match=r"indices must lie in \[0, 2\]"):
        LabelledSubset(ds, [3])


def test_array_dataset_validates():
    with pytest.raises(DataError, match="uint8"):
        ArrayDataset(np.zeros((2, 4, 4), np.float32), [0, 1])
    with pytest.raises(DataError, match="2 images but 3 labels"):
        ArrayDataset(np.zeros((2, 4, 4), np.uint8), [0, 1, 1])
    with pytest.raises(DataError, match="out of range for 2 classes"):
        ArrayDataset(np.zeros((2, 4, 4), np.uint8), [0, 2], classes=["a", "b"])
    ds = ArrayDataset(np.zeros((2, 4, 4, 1), np.uint8), [0, 1])
    assert ds[-1][0].mode == "L" and ds[-1][1] == 1
    with pytest.raises(IndexError):
        ds[2]


# --------------------------------------------------------------------------- load_dataset
@pytest.fixture
def dataset_kwargs(tmp_path, cifar10_root, image_root):
    fashion = tmp_path / "fashion"
    fashion.mkdir()
    _write_fake_fashion(fashion, per_class=6)
    cifar100 = tmp_path / "c100" / "cifar-100-python"
    cifar100.mkdir(parents=True)
    data = {b"fine_labels": [i % 100 for i in range(200)], b"coarse_labels": [0] * 200,
            b"data": _cifar_rows(_cifar_images(200, 0))}
    (cifar100 / "train").write_bytes(_py2_pickle(data))
    (cifar100 / "meta").write_bytes(_py2_pickle({b"fine_label_names": [b"x"] * 100}))
    ann = _bbn_json(tmp_path / "t.json", [("train/cat/a.png", 0), ("train/dog/c d.png", 1)])
    listing = tmp_path / "t.txt"
    listing.write_text("train/cat/a.png 0\ntrain/dog/c d.png 1\n")
    return {
        "embedded": {},
        "fashion_mnist": {"root": fashion},
        "cifar10": {"root": cifar10_root},
        "cifar100": {"root": tmp_path / "c100"},
        "image_folder": {"root": image_root},
        "json": {"root": image_root, "annotations": {"train": ann}},
        "text_list": {"root": image_root, "annotations": listing},
    }


@pytest.mark.parametrize("name", [e.name for e in DATASETS.entries() if e.source == BUILTIN])
def test_load_dataset_every_name(name, dataset_kwargs):
    family = dataset_transform_family(name)
    ds = load_dataset(name, split="train", transform=build_transforms(family, False, image_size=32),
                      **dataset_kwargs[name])
    assert len(ds) == len(ds.labels) > 0 and ds.labels.dtype == np.int64
    assert sum(ds.class_counts) == len(ds) and len(ds.classes) == ds.num_classes
    image, label = ds[len(ds) - 1]
    assert image.shape == (3, 32, 32) and label == ds.labels[-1]


def test_load_dataset_long_tailed(dataset_kwargs):
    ds = load_dataset("fashion_mnist", imbalance_ratio=6, seed=1, class_order=[9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
                      **dataset_kwargs["fashion_mnist"])
    assert ds.class_counts == long_tailed_counts(10, 6, 6)[::-1]
    assert ds.metadata["imbalance_ratio"] == 6 and ds.metadata["n_max"] == 6


def test_load_dataset_errors(dataset_kwargs):
    with pytest.raises(DataError, match="unknown dataset 'cifar1000'.*cifar100"):
        load_dataset("cifar1000")
    with pytest.raises(UnknownOptionError, match="'label_typ' \\(did you mean 'label_type'"):
        load_dataset("cifar100", label_typ="coarse", **dataset_kwargs["cifar100"])
    with pytest.raises(DataError, match="needs root="):
        load_dataset("cifar10")
    with pytest.raises(DataError, match="needs annotations="):
        load_dataset("text_list", root=".")
    with pytest.raises(DataError, match="only applies with imbalance_ratio"):
        load_dataset("fashion_mnist_lt_embedded", n_max=10)


# --------------------------------------------------------------------------- embedded data
def test_embedded_fashion_mnist_lt():
    npz = REPO / "lttoolkit" / "data" / "embedded" / "fashion_mnist_lt.npz"
    assert npz.stat().st_size < 3 * 1024 * 1024
    assert "Zalando SE" in (npz.parent / "LICENSE-fashion-mnist.txt").read_text()
    train, test = load_embedded()
    meta = train.metadata
    assert (meta["imbalance_ratio"], meta["n_max"], meta["profile"]) == (100.0, 600, "exp")
    assert train.class_counts == long_tailed_counts(10, 600, 100)
    assert test.class_counts == [100] * 10
    assert train.images.shape == (len(train), 28, 28) and train.images.dtype == np.uint8
    assert train.classes == list(FASHION_MNIST_CLASSES)
    assert train.images.std() > 50  # real pictures, not blanks
    with pytest.raises(DataError, match="no embedded dataset named 'cifar'"):
        load_embedded("cifar")


def test_embedded_in_a_dataloader():
    train, _ = load_embedded(train_transform=build_transforms("fashion_mnist", True, in_chans=3, image_size=32))
    images, labels = next(iter(torch.utils.data.DataLoader(train, batch_size=16, shuffle=True)))
    assert images.shape == (16, 3, 32, 32) and images.dtype == torch.float32 and labels.dtype == torch.int64


# --------------------------------------------------------------------------- transforms
_NATIVE = {"cifar": ("RGB", 32), "fashion_mnist": ("L", 28), "mnist": ("L", 28), "imagenet": ("RGB", 300)}
_DEFAULT_SIZE = {"cifar": 32, "fashion_mnist": 28, "mnist": 28, "imagenet": 224}


@pytest.mark.parametrize("family", TRANSFORM_FAMILIES)
@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("in_chans", [1, 3])
def test_transform_shapes(family, train, in_chans):
    mode, side = _NATIVE[family]
    image = Image.new(mode, (side, side * 3 // 4 if family == "imagenet" else side), 128 if mode == "L" else (128,) * 3)
    size = _DEFAULT_SIZE[family]
    out = build_transforms(family, train, in_chans=in_chans)(image)
    assert out.shape == (in_chans, size, size) and out.dtype == torch.float32
    resized = build_transforms(family, train, in_chans=in_chans, image_size=40)(image)
    assert resized.shape == (in_chans, 40, 40)
    pickle.dumps(build_transforms(family, train, in_chans=in_chans))  # DataLoader workers need this


def test_test_transforms_normalise_exactly():
    pixel = (200, 100, 50)
    out = build_transforms("cifar", False)(Image.new("RGB", (32, 32), pixel))
    expected = [(p / 255 - m) / s for p, m, s in zip(pixel, (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))]
    assert torch.allclose(out[:, 7, 9], torch.tensor(expected), atol=1e-5)
    grey = build_transforms("fashion_mnist", False, in_chans=3)(Image.new("L", (28, 28), 255))
    assert torch.allclose(grey, torch.full((3, 28, 28), (1 - 0.2860) / 0.3530), atol=1e-5)
    custom = build_transforms("imagenet", False, image_size=8, mean=[0.5], std=[0.5])(Image.new("RGB", (8, 8)))
    assert torch.allclose(custom, torch.full((3, 8, 8), -1.0))


def test_transform_validation():
    with pytest.raises(ConfigError, match="unknown transform family 'cifar10'.*cifar, fashion_mnist"):
        build_transforms("cifar10", True)
    with pytest.raises(ConfigError, match="in_chans must be 1 or 3"):
        build_transforms("cifar", True, in_chans=2)
    with pytest.raises(ConfigError, match="mean has 2 values but in_chans=3"):
        build_transforms("cifar", True, mean=[0.5, 0.5])


def test_former_dataset_names_still_load():
    assert len(load_dataset("fashion_mnist_lt_embedded", split="test")) == len(load_dataset("embedded", split="test"))


def test_datasets_are_one_registry_with_the_configs_names():
    # One vocabulary: the config's data.dataset, load_dataset and `lttk list-components datasets`.
    from lttoolkit.engine.config import DataConfig

    builtin = [e.name for e in DATASETS.entries() if e.source == BUILTIN]
    assert builtin == ["cifar10", "cifar100", "embedded", "fashion_mnist", "image_folder", "json", "text_list"]
    assert all(DataConfig(dataset=name).dataset == name for name in builtin)
    assert [dataset_transform_family(n) for n in ("embedded", "cifar10", "json")] == ["fashion_mnist", "cifar", "imagenet"]
