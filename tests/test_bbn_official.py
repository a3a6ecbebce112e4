"""lttoolkit's BBN against the official network (megvii-research/BBN), on the same weights.

``OfficialBBN`` below is written in this test from the official code's structure
(``lib/backbone/resnet_cifar.py``: ``BBN_ResNet_Cifar``; ``lib/backbone/resnet.py``:
``BBN_ResNet``; ``lib/net/network.py``: GAP + one ``nn.Linear``; ``lib/core/combiner.py``:
``bbn_mix``), with the official parameter names, so its state dict is what the official
training script saves. Nothing here uses lttoolkit's model code.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.testing import assert_close

from lttoolkit import build, convert_official_bbn, load_official_bbn
from lttoolkit.engine.analysis import analyze_checkpoint
from lttoolkit.engine.checkpoint import load_checkpoint, save_checkpoint
from lttoolkit.engine.config import load_config
from lttoolkit.engine.datasets import build_datasets
from lttoolkit.engine.evaluate import evaluate_checkpoint, load_model
from lttoolkit.errors import ConfigError
from lttoolkit.methods.bbn_official import official_to_lttoolkit


# ---------------------------------------------------------------------------- the official network
class _CifarBlock(nn.Module):
    """Official CIFAR BasicBlock, option A: zeros padded planes // 4 on both sides of the channels."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.pad = planes // 4 if (stride != 1 or in_planes != planes) else None

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        shortcut = x if self.pad is None else F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))
        return F.relu(out + shortcut)


class _Bottleneck(nn.Module):
    """Official ResNet BottleNeck (expansion 4, stride on the 3x3, 1x1 conv + BN downsample)."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, 4 * planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(4 * planes)
        self.downsample = None
        if stride != 1 or inplanes != 4 * planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, 4 * planes, 1, stride, bias=False),
                                            nn.BatchNorm2d(4 * planes))

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class _OfficialTrunk(nn.Module):
    def __init__(self, arch: str) -> None:
        super().__init__()
        self.arch = arch
        if arch == "resnet32_cifar":
            self.conv1, self.bn1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16)
            planes, blocks, strides, block, width = (16, 32, 64), (5, 5, 4), (1, 2, 2), _CifarBlock, 16
        else:
            self.conv1, self.bn1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64)
            planes, blocks, strides, block, width = (64, 128, 256, 512), (3, 4, 6, 2), (1, 2, 2, 2), _Bottleneck, 64
        for index, (p, n, s) in enumerate(zip(planes, blocks, strides), start=1):
            layers = []
            for stride in [s] + [1] * (n - 1):
                layers.append(block(width, p, stride))
                width = p * (4 if block is _Bottleneck else 1)
            setattr(self, f"layer{index}", nn.Sequential(*layers))
        last = planes[-1]
        self.cb_block = block(width, last, 1)
        self.rb_block = block(width, last, 1)
        self.width = width
        self.stages = len(planes)

    def forward(self, x: Tensor, branch: str | None = None) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        if self.arch != "resnet32_cifar":
            out = F.max_pool2d(out, 3, 2, 1)
        for index in range(1, self.stages + 1):
            out = getattr(self, f"layer{index}")(out)
        if branch == "cb":
            return self.cb_block(out)
        if branch == "rb":
            return self.rb_block(out)
        return torch.cat([self.cb_block(out), self.rb_block(out)], dim=1)


class OfficialBBN(nn.Module):
    def __init__(self, arch: str, num_classes: int) -> None:
        super().__init__()
        self.backbone = _OfficialTrunk(arch)
        self.classifier = nn.Linear(2 * self.backbone.width, num_classes)

    def features(self, x: Tensor, branch: str | None = None) -> Tensor:
        return F.adaptive_avg_pool2d(self.backbone(x, branch), 1).flatten(1)

    def forward(self, x: Tensor) -> Tensor:  # valid/test: both blocks on the trunk's output
        return self.classifier(self.features(x))

    def bbn_mix(self, x_a: Tensor, y_a: Tensor, x_b: Tensor, y_b: Tensor, l: float) -> tuple[Tensor, Tensor]:
        f_a, f_b = self.features(x_a, "cb"), self.features(x_b, "rb")
        output = self.classifier(2 * torch.cat([l * f_a, (1 - l) * f_b], dim=1))
        return output, l * F.cross_entropy(output, y_a) + (1 - l) * F.cross_entropy(output, y_b)


def official(arch: str, num_classes: int, seed: int = 0) -> OfficialBBN:
    """The official network with random weights and non-trivial batch-norm statistics."""
    torch.manual_seed(seed)
    net = OfficialBBN(arch, num_classes)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
                module.num_batches_tracked.fill_(7)
    return net


def saved(net: OfficialBBN) -> dict:
    """What the official training script saves (under DataParallel)."""
    return {"state_dict": {f"module.{k}": v.clone() for k, v in net.state_dict().items()}, "epoch": 200,
            "best_result": 0.8}


SIZE = {"resnet32_cifar": 32, "resnet50": 64}
ARCHS = ["resnet32_cifar", pytest.param("resnet50", marks=pytest.mark.slow)]


# ---------------------------------------------------------------------------- parity
@pytest.mark.parametrize("arch", ["resnet32_cifar", "resnet50"])
def test_converted_official_checkpoint_gives_the_official_logits(arch: str) -> None:
    reference = official(arch, num_classes=10).eval()
    model = load_official_bbn(saved(reference), arch=arch)
    x = torch.randn(3, 3, SIZE[arch], SIZE[arch], generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = reference(x)
        logits = model(x)
    assert model.recipe.num_classes == 10 and not model.training
    assert_close(logits, expected, rtol=0, atol=1e-5)
    # and by hand from the same weights: W·[f_c ; f_r] + b on the official features
    with torch.no_grad():
        f = reference.features(x)
    assert_close(logits, f @ reference.classifier.weight.T + reference.classifier.bias, rtol=0, atol=1e-5)


def test_inference_logits_are_identical_to_the_official_network() -> None:
    reference = official("resnet32_cifar", num_classes=10).eval()
    model = load_official_bbn(saved(reference), arch="resnet32_cifar")
    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        difference = (model(x) - reference(x)).abs().max().item()
    assert difference < 1e-6, difference


def test_training_step_equals_the_official_bbn_mix() -> None:
    # float64: logits, loss, every gradient and every running statistic of one training step.
    reference = official("resnet32_cifar", num_classes=10).double().train()
    model = load_official_bbn(saved(reference), arch="resnet32_cifar").double().train()
    generator = torch.Generator().manual_seed(3)
    x_a, x_b = (torch.randn(6, 3, 32, 32, generator=generator, dtype=torch.float64) for _ in range(2))
    y_a, y_b = torch.randint(0, 10, (6,), generator=generator), torch.randint(0, 10, (6,), generator=generator)
    alpha = 1 - (37 / 200) ** 2
    expected_logits, expected_loss = reference.bbn_mix(x_a, y_a, x_b, y_b, alpha)
    logits = model(x_a, x_b, alpha=alpha)
    loss = model.combine_loss(F.cross_entropy, logits, (y_a, y_b), alpha=alpha)
    assert_close(logits, expected_logits, rtol=1e-12, atol=1e-12)
    assert_close(loss, expected_loss, rtol=1e-12, atol=1e-12)
    expected_loss.backward()
    loss.backward()
    ours = dict(model.named_parameters())
    theirs = {k: p for k, p in official_to_lttoolkit(dict(reference.named_parameters()), "resnet32_cifar").items()}
    assert ours.keys() == theirs.keys()
    for key, param in theirs.items():
        assert param.grad is not None
        assert_close(ours[key].grad, param.grad, rtol=1e-10, atol=1e-12, msg=key)
    buffers = official_to_lttoolkit(dict(reference.named_buffers()), "resnet32_cifar")
    for key, value in dict(model.named_buffers()).items():
        assert_close(value, buffers[key], rtol=1e-12, atol=1e-14, msg=key)
    assert buffers["backbone.bn1.num_batches_tracked"].item() == 9  # 7 + one batch per branch


# ---------------------------------------------------------------------------- the converter's checks
def test_official_names_are_mapped_and_the_prefix_stripped() -> None:
    net = official("resnet32_cifar", num_classes=4)
    renamed = official_to_lttoolkit(saved(net)["state_dict"], "resnet32_cifar")
    assert "backbone.layer3.4.conventional.bn2.running_var" in renamed
    assert "backbone.layer3.4.rebalancing.conv1.weight" in renamed
    assert "backbone.layer3.3.conv2.weight" in renamed and "classifier.bias" in renamed
    assert not any(key.startswith("module.") or "cb_block" in key or "rb_block" in key for key in renamed)
    assert set(renamed) == set(build("bbn", backbone="resnet32_cifar", num_classes=4).state_dict())


def test_a_classifier_without_bias_loads_with_zero_bias() -> None:
    reference = official("resnet32_cifar", num_classes=3).eval()
    state = saved(reference)["state_dict"]
    bias = state.pop("module.classifier.bias")
    model = load_official_bbn(state, arch="resnet32_cifar")  # a bare state dict works too
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert_close(model(x), reference(x) - bias, rtol=0, atol=1e-5)


def test_wrong_arch_and_foreign_files_are_refused() -> None:
    state = saved(official("resnet32_cifar", num_classes=10))
    with pytest.raises(ConfigError, match="resnet32_cifar for bbn_res32_cifar|features"):
        load_official_bbn(state, arch="resnet50")
    with pytest.raises(ConfigError, match="not supported"):
        load_official_bbn(state, arch="resnet18")
    with pytest.raises(ConfigError, match="not a weight of the official BBN"):
        load_official_bbn({"fc.weight": torch.zeros(2, 2)}, arch="resnet32_cifar")
    with pytest.raises(ConfigError, match="no state dict"):
        load_official_bbn({"epoch": 3}, arch="resnet32_cifar")


def _write_cifar10(root: Path, per_class: int = 2) -> Path:
    """CIFAR-10's python archives in miniature, with the real class names."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)

    def dump(name: str, labels: list[int]) -> None:
        images = rng.integers(0, 256, (len(labels), 3 * 32 * 32), dtype=np.uint8)
        (folder / name).write_bytes(pickle.dumps({b"labels": labels, b"data": images}, protocol=2))

    for number in range(1, 6):
        dump(f"data_batch_{number}", [c for c in range(10) for _ in range(per_class * 10)])
    dump("test_batch", [c for c in range(10) for _ in range(per_class)])
    names = [name.encode() for name in CIFAR10_NAMES]
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": names}, protocol=2))
    return root


CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def test_converted_checkpoint_is_used_by_eval_and_analyze(tmp_path) -> None:
    reference = official("resnet32_cifar", num_classes=10).eval()
    source = tmp_path / "official.pth"
    torch.save(saved(reference), source)
    target = tmp_path / "bbn.pt"
    done = subprocess.run([sys.executable, "-m", "lttoolkit", "convert-bbn", str(source), "--arch", "resnet32_cifar",
                           "-o", str(target), "data.imbalance_ratio=10"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "lttk eval" in done.stdout
    state = load_checkpoint(target)
    assert state["config"]["data"]["dataset"] == "cifar10" and state["config"]["data"]["imbalance_ratio"] == 10
    assert state["classes"] == CIFAR10_NAMES and state["epoch"] == 200

    # lttk eval's library call, on CIFAR-10-format files: the official network's predictions.
    root = _write_cifar10(tmp_path / "data")
    results = evaluate_checkpoint(target, [f"data.root={root}", "data.num_workers=0"], device="cpu")
    data = build_datasets(load_config(None, [f"data.root={root}", "data.dataset=cifar10",
                                             "data.imbalance_ratio=10"]).data, seed=0)
    images = torch.stack([data.test[i][0] for i in range(len(data.test))])
    labels = torch.tensor([data.test[i][1] for i in range(len(data.test))])
    with torch.no_grad():
        expected = 100.0 * (reference(images).argmax(1) == labels).float().mean().item()
    assert results["top1"] == pytest.approx(expected)
    norms = analyze_checkpoint(target)["weight_norms"]  # lttk analyze: the official classifier's norms
    weight = reference.classifier.weight.detach()
    assert norms["both"] == pytest.approx(weight.norm(dim=1).tolist())
    assert norms["rebalancing"] == pytest.approx(weight[:, 64:].norm(dim=1).tolist())
    # Never over an existing file.
    again = subprocess.run([sys.executable, "-m", "lttoolkit", "convert-bbn", str(source), "--arch",
                            "resnet32_cifar", "-o", str(target)], capture_output=True, text=True)
    assert again.returncode == 2 and "already exists" in " ".join(again.stderr.split())
    assert load_checkpoint(target)["config"]["data"]["imbalance_ratio"] == 10


def test_convert_returns_a_plain_data_checkpoint(tmp_path) -> None:
    state = convert_official_bbn(saved(official("resnet32_cifar", num_classes=100)), arch="resnet32_cifar")
    assert state["config"]["data"]["dataset"] == "cifar100" and "classes" not in state
    assert state["recipe"]["method"] == "bbn" and state["recipe"]["num_classes"] == 100
    written = save_checkpoint(state, tmp_path / "c.pt")  # refuses anything but plain data
    assert load_checkpoint(written)["converted_from"]["format"] == "megvii-research/BBN"


# ---------------------------------------------------------------------------- offline evaluation
def test_a_run_from_pretrained_weights_loads_offline(monkeypatch) -> None:
    # A run trained from pretrained weights records pretrained=True; its checkpoint holds every
    # weight, so loading it for eval / predict / analyze must not fetch anything.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.manual_seed(0)
    model = build("bbn", backbone="resnet18", num_classes=3)
    recipe = model.recipe.model_copy(update={"pretrained": True, "options": {**model.recipe.options,
                                                                             "pretrained": True}})
    config = load_config(None, ["model.backbone=resnet18", "model.pretrained=true"]).model_dump(mode="json")
    state = {"model": model.state_dict(), "recipe": recipe.model_dump(mode="json"), "config": config}
    with pytest.raises(Exception):  # what loading used to do: build with pretrained=True, offline
        recipe.rebuild()
    loaded, _ = load_model(state)
    assert loaded.recipe.pretrained is True
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert_close(loaded(x), model.eval()(x))
