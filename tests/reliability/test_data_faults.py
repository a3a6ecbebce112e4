"""Bad data must be named, or skipped and counted when asked, never crash a run obscurely.

Datasets here are a dozen 32x32 PNGs written with PIL into ``tmp_path`` with BBN-style json
(or ImageNet-LT-style text list) annotations, trained for 2 steps of 4 images on the CPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lttoolkit.engine.config import load_config
from lttoolkit.engine.datasets import build_datasets
from lttoolkit.engine.trainer import Trainer
from lttoolkit.errors import DataError

from ._support import BAD_IMAGE_KINDS, make_image_set, random_image, write_bad_image


def run_config(tmp_path: Path, images, *extra: str):
    return load_config(None, images.overrides(f"output_dir={tmp_path / 'runs'}", "name=run", *extra))


def strict_json(path: Path) -> dict:
    def refuse(constant: str) -> None:
        raise AssertionError(f"{path} holds {constant}, which is not JSON")

    return json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse)


# ----------------------------------------------------------------------------- missing data
@pytest.mark.parametrize(
    ("dataset", "folder", "archive"),
    [
        ("cifar10", "cifar-10-batches-py", "cifar-10-python.tar.gz"),
        ("cifar100", "cifar-100-python", "cifar-100-python.tar.gz"),
    ],
)
def test_missing_cifar_folder_says_where_to_put_it(tmp_path, lttk_main, dataset, folder, archive):
    root = tmp_path / "data"
    root.mkdir()
    code, out, err = lttk_main("train", f"data.dataset={dataset}", f"data.root={root}",
                               f"output_dir={tmp_path / 'runs'}", "train.device=cpu", "--quiet")
    assert code == 2, (out, err)
    assert "error: DataError:" in err
    for fragment in (f"{folder} not found", f"expected {root / folder}/", archive, f"tar -xzf {archive} -C {root}",
                     "never downloads"):
        assert fragment in err, (fragment, err)
    assert not (tmp_path / "runs").exists()


def test_missing_annotation_file_is_named(tmp_path, image_set, lttk_main):
    missing = image_set.root / "no_such_train.json"
    code, out, err = lttk_main(
        "train", *image_set.overrides(f"data.train_annotations={missing}", f"output_dir={tmp_path / 'runs'}"), "--quiet"
    )
    assert code == 2, (out, err)
    assert f"annotation file {missing} does not exist" in err
    assert not (tmp_path / "runs").exists()


def test_missing_image_root_is_named_before_the_run_starts(tmp_path, image_set):
    cfg = run_config(tmp_path, image_set, f"data.root={tmp_path / 'no_such_folder'}")
    with pytest.raises(DataError, match=r"data\.root"):
        Trainer(cfg, progress=False)
    assert not (tmp_path / "runs").exists()


# ----------------------------------------------------------------------------- unreadable images
# kind -> file extension; "missing" is listed in the annotations but absent from the disk.
UNREADABLE = {**BAD_IMAGE_KINDS, "missing": "png"}


def add_bad_images(images, kinds: list[str], *, in_test: int) -> list[Path]:
    """Write one damaged file per kind, list all of them in train and the first ``in_test`` in test."""
    paths = []
    for index, kind in enumerate(kinds):
        name = f"bad_{kind}.{UNREADABLE[kind]}"
        if kind != "missing":
            write_bad_image(images.root / name, kind, seed=index)
        images.train.append((name, index % 3))
        if index < in_test:
            images.test.append((name, index % 3))
        paths.append(images.root / name)
    images.write()
    return paths


@pytest.mark.parametrize("kind", sorted(UNREADABLE))
def test_unreadable_image_stops_the_run_and_names_the_file(tmp_path, image_set, kind):
    # Listed in the test split too, so evaluation reaches it even if the 2 training steps do not.
    (bad,) = add_bad_images(image_set, [kind], in_test=1)
    # Without the up-front check (see test_data_check_names_the_annotation_entry...), the loader names it.
    trainer = Trainer(run_config(tmp_path, image_set, "data.check_files=false"), progress=False)
    with pytest.raises(DataError) as caught:
        trainer.fit()
    message = str(caught.value)
    assert str(bad) in message
    assert ("does not exist" if kind == "missing" else "cannot read image file") in message
    assert f"listed in {image_set.annotation_file('train')}" in message or \
        f"listed in {image_set.annotation_file('test')}" in message
    assert not (trainer.run_dir / "results.json").exists()


@pytest.mark.parametrize("dataset", ["json", "text_list"])
def test_skip_policy_drops_and_counts_unreadable_images(tmp_path, dataset):
    images = make_image_set(tmp_path / "images", dataset=dataset)
    kinds = sorted(UNREADABLE)
    add_bad_images(images, kinds, in_test=2)
    trainer = Trainer(run_config(tmp_path, images, "data.bad_image_policy=skip"), progress=False)
    assert (len(trainer.data.train), len(trainer.data.test)) == (12, 6)  # only the good ones are kept
    results = trainer.fit()

    saved = strict_json(trainer.run_dir / "results.json")
    assert saved["skipped_images"] == results["skipped_images"] == len(kinds) + 2
    assert saved["train_class_counts"] == [4, 4, 4]
    assert sum(saved["test"]["per_class_total"]) == 6
    assert (trainer.run_dir / "last.pt").is_file()


def test_skip_policy_names_the_skipped_files(tmp_path, image_set, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "10000")  # rich must not wrap a path over two lines
    bad = add_bad_images(image_set, ["truncated_png", "corrupt_png"], in_test=0)
    trainer = Trainer(run_config(tmp_path, image_set, "data.bad_image_policy=skip"), progress=True)
    trainer.fit()
    said = capsys.readouterr().out + (trainer.run_dir / "results.json").read_text(encoding="utf-8")
    for path in bad:
        assert str(path) in said


def test_skip_policy_with_every_training_image_unreadable_is_an_empty_dataset_error(tmp_path, image_set, lttk_main):
    for name, _ in image_set.train:
        write_bad_image(image_set.root / name, "truncated_png")
    code, out, err = lttk_main(
        "train", *image_set.overrides("data.bad_image_policy=skip", f"output_dir={tmp_path / 'runs'}"), "--quiet"
    )
    assert code == 2, (out, err)
    assert "error: DataError: the training set of data.dataset=json is empty" in err
    assert not (tmp_path / "runs").exists()


# ----------------------------------------------------------------------------- labels and classes
@pytest.mark.parametrize(
    ("label", "fragments"),
    [
        (3, ["label 3 is out of range for 3 classes", "[0, 2]"]),
        (-1, ["labels must be >= 0, found -1"]),
        ("1", ["non-integer category_id '1'"]),
    ],
)
def test_label_outside_the_classes_is_named_with_its_file(tmp_path, image_set, lttk_main, label, fragments):
    image_set.train[5] = (image_set.train[5][0], label)
    image_set.write()
    code, out, err = lttk_main("train", *image_set.overrides(f"output_dir={tmp_path / 'runs'}"), "--quiet")
    assert code == 2, (out, err)
    assert "error: DataError:" in err and str(image_set.annotation_file("train")) in err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    assert not (tmp_path / "runs").exists()


def test_text_list_line_with_a_bad_label_is_named_by_number(tmp_path, lttk_main):
    images = make_image_set(tmp_path / "images", dataset="text_list")
    images.train[2] = (images.train[2][0], "cat")  # type: ignore[assignment]
    images.write()
    code, out, err = lttk_main("train", *images.overrides(f"output_dir={tmp_path / 'runs'}"), "--quiet")
    assert code == 2, (out, err)
    assert f"{images.annotation_file('train')}:3: the label 'cat' is not an integer" in err
    assert not (tmp_path / "runs").exists()


def test_class_without_training_images_gets_no_draws_and_training_works(tmp_path):
    # Class 1 has test images but no training image.
    images = make_image_set(tmp_path / "images", train_labels=[0, 2] * 6)
    trainer = Trainer(run_config(tmp_path, images), progress=False)
    rebalancing = trainer.samplers[1]
    assert type(rebalancing).__name__ == "ReversedSampler"
    assert rebalancing.class_probabilities().tolist() == [0.5, 0.0, 0.5]
    for epoch in range(3):
        rebalancing.set_epoch(epoch)
        assert 1 not in set(trainer.data.train.labels[rebalancing.indices().numpy()].tolist())

    trainer.fit()
    saved = strict_json(trainer.run_dir / "results.json")
    assert saved["train_class_counts"] == [6, 0, 6]
    assert len(saved["test"]["per_class_accuracy"]) == 3
    assert all(isinstance(value, float) and 0 <= value <= 100 for value in saved["test"]["per_class_accuracy"])


@pytest.mark.parametrize("dataset", ["json", "text_list"])
@pytest.mark.parametrize("split", ["train", "test"])
def test_empty_annotation_file_is_a_clear_error(tmp_path, lttk_main, dataset, split):
    images = make_image_set(tmp_path / "images", dataset=dataset)
    setattr(images, split, [])
    images.write()
    code, out, err = lttk_main("train", *images.overrides(f"output_dir={tmp_path / 'runs'}"), "--quiet")
    assert code == 2, (out, err)
    expected = "lists no annotations" if dataset == "json" else "is empty"
    assert f"{images.annotation_file(split)} {expected}" in err, err
    assert not (tmp_path / "runs").exists()


# ----------------------------------------------------------------------------- image modes
MIXED_MODES = ("L", "RGB", "RGBA", "P", "LA", "1")


@pytest.mark.parametrize("in_chans", [1, 3])
def test_mixed_image_modes_all_load_as_the_configured_mode(tmp_path, in_chans):
    images = make_image_set(tmp_path / "images", modes=MIXED_MODES)
    # A palette image with a transparent colour, as many web PNGs are.
    rng = np.random.default_rng(1)
    palette = random_image(rng, "P")
    palette.info["transparency"] = 0
    palette.save(images.root / "train" / "palette_transparent.png")
    images.train.append(("train/palette_transparent.png", 1))
    images.write()
    on_disk = set()
    for name, _ in images.train:
        with Image.open(images.root / name) as image:
            on_disk.add(image.mode)
    assert on_disk >= set(MIXED_MODES)

    cfg = run_config(tmp_path, images, f"data.in_chans={in_chans}")
    data = build_datasets(cfg.data, seed=0)
    for dataset in (data.train, data.test):
        for index in range(len(dataset)):
            assert dataset.load_image(index).mode == ("L" if in_chans == 1 else "RGB")
            tensor, _ = dataset[index]
            assert tensor.shape == (in_chans, 32, 32) and tensor.dtype == torch.float32
            assert bool(torch.isfinite(tensor).all())

    trainer = Trainer(cfg, progress=False)
    results = trainer.fit()
    assert trainer.model.recipe.in_chans == in_chans
    assert results["skipped_images"] == 0 and (trainer.run_dir / "last.pt").is_file()


# ----------------------------------------------------------------------------- issue 17, item 13: checked up front
@pytest.mark.parametrize("kind", ["missing", "truncated_png"])
def test_data_check_names_the_annotation_entry_before_the_run_starts(tmp_path, image_set, lttk_main, kind):
    (bad,) = add_bad_images(image_set, [kind], in_test=0)
    code, out, err = lttk_main("train", *image_set.overrides(f"output_dir={tmp_path / 'runs'}", "name=run"),
                               "--quiet")
    assert code == 2, (out, err)
    assert str(bad) in err and f"listed in {image_set.annotation_file('train')}" in err
    assert "data.bad_image_policy=skip" in err
    assert not (tmp_path / "runs").exists()  # refused before any run folder or training


def make_image_folder(root: Path, classes_by_split: dict[str, list[str]], per_class: int = 4) -> Path:
    rng = np.random.default_rng(0)
    for split, classes in classes_by_split.items():
        for name in classes:
            (root / split / name).mkdir(parents=True)
            for index in range(per_class):
                random_image(rng).save(root / split / name / f"{index}.png")
    return root


def folder_overrides(tmp_path: Path, root: Path, *extra: str) -> list[str]:
    from ._support import TINY_RUN

    return [*TINY_RUN, "data.dataset=image_folder", f"data.root={root}", f"output_dir={tmp_path / 'runs'}",
            "name=run", *extra]


def test_macos_appledouble_files_and_hidden_folders_are_not_images_or_classes(tmp_path):
    root = make_image_folder(tmp_path / "data", {"train": ["cat", "dog"], "test": ["cat", "dog"]})
    (root / "train" / "cat" / "._0.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble resource fork")
    (root / "train" / ".ipynb_checkpoints").mkdir()
    data = build_datasets(load_config(None, folder_overrides(tmp_path, root)).data)
    assert data.classes == ["cat", "dog"] and len(data.train) == 8


def test_one_class_dataset_is_refused(tmp_path, lttk_main):
    root = make_image_folder(tmp_path / "data", {"train": ["cat"], "test": ["cat"]})
    code, out, err = lttk_main("train", *folder_overrides(tmp_path, root), "--quiet")
    assert code == 2, (out, err)
    assert "has 1 class ('cat')" in err and "at least 2" in err


def test_missing_image_folder_split_names_the_layout_not_a_library_argument(tmp_path, lttk_main):
    root = make_image_folder(tmp_path / "data", {"train": ["cat", "dog"]})  # no test/ folder
    code, out, err = lttk_main("train", *folder_overrides(tmp_path, root), "--quiet")
    assert code == 2, (out, err)
    assert "data.root/train and data.root/test" in err
    assert "pass split=None" not in err


def test_embedded_data_can_be_made_more_long_tailed_as_documented():
    # docs/datasets.md: "It can be made more long-tailed still (data.imbalance_ratio=200)"
    data = build_datasets(load_config(None, ["data.imbalance_ratio=200"]).data)
    assert data.class_counts[0] == 600 and min(data.class_counts) >= 1
    assert data.class_counts[0] / data.class_counts[-1] == pytest.approx(200, rel=0.2)


# ----------------------------------------------------------------------------- issue 17, item 5: classes by name
def test_test_classes_with_other_names_are_refused_not_mislabelled(tmp_path, lttk_main):
    root = make_image_folder(tmp_path / "data", {"train": ["cat", "dog"], "test": ["bird", "dog"]})
    code, out, err = lttk_main("train", *folder_overrides(tmp_path, root), "--quiet")
    assert code == 2, (out, err)
    assert "['bird'] not among the training classes" in err and "matched by name" in err
    assert not (tmp_path / "runs").exists()


def test_eval_on_data_with_other_class_names_is_refused(tmp_path, lttk_main):
    root = make_image_folder(tmp_path / "data", {"train": ["cat", "dog"], "test": ["cat", "dog"]})
    code, out, err = lttk_main("train", *folder_overrides(tmp_path, root), "--quiet")
    assert code == 0, (out, err)
    other = make_image_folder(tmp_path / "other", {"train": ["bird", "dog"], "test": ["bird", "dog"]})
    code, out, err = lttk_main("eval", tmp_path / "runs" / "run" / "last.pt", f"data.root={other}", "--device", "cpu")
    assert code == 2, (out, err)
    assert "['bird'] not among the training classes, and ['cat'] missing" in err
