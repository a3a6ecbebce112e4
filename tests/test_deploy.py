"""From a trained run to a deployed model: stored preprocessing, the Classifier API, export round trips."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.testing import assert_close

from lttoolkit import Classifier, build, export_checkpoint
from lttoolkit.data.preprocessing import build_eval_transform, eval_preprocessing
from lttoolkit.data.transforms import build_transforms
from lttoolkit.engine import train
from lttoolkit.engine.checkpoint import load_checkpoint, save_checkpoint
from lttoolkit.engine.config import load_config
from lttoolkit.errors import ConfigError, DataError
from lttoolkit.export import load_safetensors
from lttoolkit.inference import expand_image_paths


@pytest.fixture(scope="module")
def bbn_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny BBN run on the embedded Fashion-MNIST-LT (1 epoch of 2 steps)."""
    out = tmp_path_factory.mktemp("runs")
    train(overrides=["train.epochs=1", "train.max_steps_per_epoch=2", "model.backbone=resnet20_cifar",
                     f"output_dir={out}", "name=bbn", "data.test_batch_size=512"], progress=False)
    return out / "bbn" / "best.pt"


@pytest.fixture(scope="module")
def timm_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CE checkpoint of timm's resnet18 on ImageNet-style 64 px inputs (weights untrained)."""
    torch.manual_seed(0)
    model = build("ce", backbone="resnet18", num_classes=4)
    config = load_config(None, ["model.type=ce", "model.backbone=resnet18", "data.dataset=image_folder",
                                "data.transforms=imagenet", "data.image_size=64"])
    state = {"model": model.state_dict(), "recipe": model.recipe.model_dump(mode="json"),
             "config": config.model_dump(mode="json"), "classes": ["cat", "dog", "eel", "fox"],
             "input_size": [3, 64, 64],
             "preprocessing": eval_preprocessing("imagenet", in_chans=3, image_size=64)}
    return save_checkpoint(state, tmp_path_factory.mktemp("timm") / "best.pt")


def test_checkpoint_stores_the_test_split_preprocessing(bbn_run: Path) -> None:
    state = load_checkpoint(bbn_run)
    assert state["preprocessing"] == {"input_size": [1, 28, 28], "mean": [0.286], "std": [0.353],
                                      "interpolation": "bilinear", "crop_pct": 1.0, "crop_mode": "squash",
                                      "color_mode": "L"}


@pytest.mark.parametrize("family, in_chans, size", [("fashion_mnist", 1, None), ("fashion_mnist", 3, 32),
                                                    ("cifar", 3, None), ("imagenet", 3, 64)])
def test_stored_preprocessing_equals_the_evaluation_transform(family: str, in_chans: int, size: int | None) -> None:
    native = {"fashion_mnist": 28, "cifar": 32, "imagenet": 80}[family]
    mode = "L" if family == "fashion_mnist" else "RGB"
    rng = np.random.default_rng(0)
    # the dataset's own image size; ImageNet-style data comes in any size (here not square)
    width = native + 16 if family == "imagenet" else native
    shape = (native, width) if mode == "L" else (native, width, 3)
    image = Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode)
    expected = build_transforms(family, False, in_chans=in_chans, image_size=size)(image)
    got = build_eval_transform(eval_preprocessing(family, in_chans=in_chans, image_size=size))(image)
    assert torch.equal(got, expected)


def test_checkpoints_without_preprocessing_still_predict(bbn_run: Path, tmp_path: Path) -> None:
    state = load_checkpoint(bbn_run)
    stored = state.pop("preprocessing")
    old = save_checkpoint(state, tmp_path / "old.pt")
    assert Classifier.from_checkpoint(old).preprocessing == stored


# ---------------------------------------------------------------------------- the Classifier
def test_every_input_type_gives_the_same_prediction(bbn_run: Path, tmp_path: Path) -> None:
    clf = Classifier.from_checkpoint(bbn_run, topk=3)
    pixels = np.random.default_rng(1).integers(0, 256, (28, 28), dtype=np.uint8)
    path = tmp_path / "shirt.png"
    Image.fromarray(pixels, "L").save(path)
    tensor = clf.prepare(Image.fromarray(pixels, "L"))
    forms = [str(path), path, Image.fromarray(pixels, "L"), pixels, pixels.astype(np.float32) / 255.0,
             np.stack([pixels] * 3, axis=2), tensor]
    predictions = clf(forms)
    assert [p.source for p in predictions[:2]] == [str(path), str(path)]
    # by hand: softmax of the model's logits on the prepared image
    with torch.no_grad():
        probabilities = clf.model(tensor[None]).softmax(1)[0]
    values, indices = probabilities.topk(3)
    for prediction in predictions:
        assert prediction.indices == indices.tolist()
        assert prediction.labels == [clf.classes[i] for i in indices.tolist()]
        assert prediction.probabilities == pytest.approx(values.tolist(), abs=1e-5)
    single = clf(Image.fromarray(pixels, "L"))
    assert single.label == clf.classes[int(indices[0])]
    batch = clf(torch.stack([tensor, tensor]))
    assert [p.indices for p in batch] == [indices.tolist()] * 2
    assert clf.model is clf.model.eval() and not clf.model.training


def test_bad_inputs_are_named(bbn_run: Path, tmp_path: Path) -> None:
    clf = Classifier.from_checkpoint(bbn_run)
    with pytest.raises(DataError, match="prepared image of shape"):
        clf(torch.zeros(3, 32, 32))
    with pytest.raises(DataError, match="cannot predict a dict"):
        clf({"a": 1})
    with pytest.raises(ConfigError, match="topk"):
        clf(np.zeros((28, 28), np.uint8), topk=0)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(DataError, match="broken.png"):
        clf(str(broken))


def test_predict_a_folder_with_one_broken_image(bbn_run: Path, tmp_path: Path) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    for index in range(3):
        Image.fromarray(np.full((28, 28), 40 * index, np.uint8), "L").save(folder / f"img{index}.png")
    (folder / "img1.png").write_bytes(b"\x89PNG broken")
    (folder / "notes.txt").write_text("not an image")
    paths = expand_image_paths([folder])
    assert [Path(p).name for p in paths] == ["img0.png", "img1.png", "img2.png"]
    results = Classifier.from_checkpoint(bbn_run).predict(paths, on_error="report")
    assert [r.error is None for r in results] == [True, False, True]
    assert "img1.png" in results[1].error and results[0].label and results[2].label
    assert expand_image_paths([str(folder / "img*.png")]) == paths
    with pytest.raises(DataError, match="no file matches"):
        expand_image_paths([str(folder / "*.jpg")])
    done = subprocess.run([sys.executable, "-m", "lttoolkit", "predict", str(bbn_run), str(folder), "--json"],
                          capture_output=True, text=True)
    # partial results: every image listed, the broken one named with its error, exit status 2
    assert done.returncode == 2, done.stderr
    listed = json.loads(done.stdout)
    assert [Path(item["image"]).name for item in listed] == ["img0.png", "img1.png", "img2.png"]
    assert "error" in listed[1] and "top" in listed[0] and "top" in listed[2]


# ---------------------------------------------------------------------------- export
@pytest.mark.parametrize("fmt", ["pt2", "safetensors", "onnx"])
def test_bbn_export_round_trip(bbn_run: Path, tmp_path: Path, fmt: str) -> None:
    if fmt == "onnx":
        pytest.importorskip("onnxscript")
        onnxruntime = pytest.importorskip("onnxruntime")
    out = tmp_path / f"bbn.{fmt}"
    result = export_checkpoint(bbn_run, out, format=fmt)
    assert result.checked and result.max_abs_difference <= result.tolerance
    clf = Classifier.from_checkpoint(bbn_run)
    x = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(5))  # another batch size
    with torch.no_grad():
        expected = clf.model(x)
    if fmt == "pt2":
        got = torch.export.load(out).module()(x)
        assert_close(got, expected, rtol=0, atol=1e-4)
    elif fmt == "safetensors":
        model, meta = load_safetensors(out)
        assert meta["preprocessing"] == clf.preprocessing and meta["classes"] == clf.classes
        assert torch.equal(model(x), expected)
        assert Classifier.from_checkpoint(out).classes == clf.classes
    else:
        session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        (logits,) = session.run(None, {"images": x.numpy()})
        assert_close(torch.from_numpy(logits), expected, rtol=0, atol=1e-4)


def test_bbn_export_runs_the_trunk_once(bbn_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "bbn.pt2"
    export_checkpoint(bbn_run, out, format="pt2")
    graph = torch.export.load(out).graph
    convolutions = [n for n in graph.nodes if n.op == "call_function" and "conv" in str(n.target)]
    model = Classifier.from_checkpoint(bbn_run).model
    # trunk convolutions once, each of the two block copies once
    trunk = sum(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    assert len(convolutions) == trunk


@pytest.mark.parametrize("fmt", ["pt2", "safetensors"])
def test_timm_export_round_trip(timm_checkpoint: Path, tmp_path: Path, fmt: str) -> None:
    out = tmp_path / f"resnet18.{fmt}"
    result = export_checkpoint(timm_checkpoint, out, format=fmt)
    assert result.checked
    clf = Classifier.from_checkpoint(out if fmt == "safetensors" else timm_checkpoint)
    x = torch.randn(2, 3, 64, 64)
    reference = Classifier.from_checkpoint(timm_checkpoint).model
    with torch.no_grad():
        expected = reference(x)
        got = torch.export.load(out).module()(x) if fmt == "pt2" else clf.model(x)
    assert_close(got, expected, rtol=0, atol=1e-4)
    assert clf.preprocessing["crop_mode"] == "center" and clf.classes == ["cat", "dog", "eel", "fox"]


def test_export_cli_says_what_it_checked_and_never_overwrites(bbn_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.safetensors"
    done = subprocess.run([sys.executable, "-m", "lttoolkit", "export", str(bbn_run), "--format", "safetensors",
                           "-o", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "checked" in done.stdout and "logits equal" in done.stdout
    again = subprocess.run([sys.executable, "-m", "lttoolkit", "export", str(bbn_run), "--format", "pt2",
                            "-o", str(out)], capture_output=True, text=True)
    assert again.returncode == 2 and "already exists" in " ".join(again.stderr.split())
    assert load_safetensors(out)[1]["format"] == "lttoolkit-export-1"


# ---------------------------------------------------------------------------- plugins_required
def test_a_run_that_needs_a_missing_plugin_fails_at_once(tmp_path: Path) -> None:
    from lttoolkit.errors import PluginLoadError

    with pytest.raises(PluginLoadError, match="pip install lttk-not-installed-xyz"):
        train(overrides=["plugins_required=[lttk-not-installed-xyz]", f"output_dir={tmp_path}"], progress=False)
    assert not any(tmp_path.iterdir()), "nothing may be written before the check"
    done = subprocess.run([sys.executable, "-m", "lttoolkit", "train", "plugins_required=[lttk-not-installed-xyz]",
                           f"output_dir={tmp_path}"], capture_output=True, text=True)
    assert done.returncode == 2 and "pip install lttk-not-installed-xyz" in " ".join(done.stderr.split())


def test_a_checkpoint_that_needs_a_missing_plugin_names_it(bbn_run: Path, tmp_path: Path) -> None:
    from lttoolkit.errors import PluginLoadError

    state = load_checkpoint(bbn_run)
    state["config"]["plugins_required"] = ["lttk-not-installed-xyz"]
    path = save_checkpoint(state, tmp_path / "needs.pt")
    with pytest.raises(PluginLoadError, match="needs.pt .plugins_required. needs the plugin distribution "
                                              "lttk-not-installed-xyz"):
        Classifier.from_checkpoint(path)
    state["config"]["plugins_required"] = ["lttoolkit"]  # installed: loads
    assert Classifier.from_checkpoint(save_checkpoint(state, tmp_path / "ok.pt")).classes


def test_checkpoints_record_what_made_them(bbn_run: Path) -> None:
    import platform
    import timm

    info = load_checkpoint(bbn_run)["provenance"]
    assert info["torch"] == torch.__version__ and info["timm"] == timm.__version__
    assert info["python"] == platform.python_version() and info["world_size"] == 1
    assert info["cuda"] == torch.version.cuda  # the build's CUDA version (None for CPU builds)
    source = Path(__file__).resolve().parents[1]
    if (source / ".git").exists():  # an editable install from a git checkout
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=source, capture_output=True, text=True).stdout.strip()
        assert info["git_commit"].split("+")[0] == head
