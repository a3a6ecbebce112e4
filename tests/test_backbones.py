"""Backbones: the CIFAR ResNets of He et al. (2016), the timm fallback, and the interface check."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest
import timm
import torch
from torch import nn

import lttoolkit
from lttoolkit.backbones import CifarResNet, check_backbone_interface, create_backbone
from lttoolkit.backbones._timm import _unreachable_reason, timm_backbone_factory
from lttoolkit.backbones.cifar_resnet import CIFAR10_MEAN, CIFAR10_STD, ZeroPadShortcut
from lttoolkit.errors import (
    ComponentContractError,
    ConfigError,
    PretrainedWeightsError,
    UnknownComponentError,
    UnknownOptionError,
)
from lttoolkit.registry import BACKBONES, registration_source

CIFAR_NAMES = BACKBONES.list("resnet*_cifar")
# He et al. 2016, Table 6: parameters of the CIFAR-10 ResNets (10-way classifier).
PAPER_PARAMS_M = {20: 0.27, 32: 0.46, 44: 0.66, 56: 0.85, 110: 1.7}
# A small timm model (0.47M parameters) stands in for "any timm model".
TIMM_NAME = "test_resnet"


def _depth(name: str) -> int:
    return int(re.fullmatch(r"resnet(\d+)_cifar", name).group(1))


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_builtin_names_are_the_five_depths():
    assert CIFAR_NAMES == [f"resnet{d}_cifar" for d in (20, 32, 44, 56, 110)]


def test_resnet32_has_046m_parameters():
    # Hand count: stem 448, stages 23,360 + 88,192 + 351,488, classifier 650.
    model = create_backbone("resnet32_cifar", num_classes=10)
    assert _n_params(model) == 464_154
    assert abs(_n_params(model) / 1e6 - 0.46) <= 0.01


@pytest.mark.parametrize("name", CIFAR_NAMES)
def test_depth_is_6n_plus_2_weighted_layers(name):
    depth = _depth(name)
    model = create_backbone(name, num_classes=10)
    weighted = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(weighted) == depth
    # Option A shortcuts carry no parameters: every conv is 3x3.
    assert all(m.kernel_size == (3, 3) for m in weighted if isinstance(m, nn.Conv2d))
    assert [len(model.get_submodule(f"layer{i}")) for i in (1, 2, 3)] == [(depth - 2) // 6] * 3
    tolerance = 0.05 if depth == 110 else 0.01  # the paper gives 1.7M to one decimal place
    assert abs(_n_params(model) / 1e6 - PAPER_PARAMS_M[depth]) <= tolerance


@pytest.mark.parametrize("name", [*CIFAR_NAMES, TIMM_NAME])
def test_backbone_contract(name):
    model = create_backbone(name, num_classes=7).eval()
    check_backbone_interface(model)
    x = torch.randn(2, 3, 16, 16)  # small: the contract does not depend on the resolution
    with torch.no_grad():
        features = model.forward_features(x)
        pooled = model.forward_head(features, pre_logits=True)
        logits = model.forward_head(features)
        full = model(x)
    assert pooled.shape == (2, model.num_features)
    assert logits.shape == (2, 7)
    torch.testing.assert_close(full, logits)
    assert model.get_classifier() is not None
    model.reset_classifier(3)
    assert model.forward_head(features).shape == (2, 3)
    model.reset_classifier(0)
    assert model.forward_head(features).shape == (2, model.num_features)
    for info in model.feature_info:
        model.get_submodule(info["module"])  # raises if the name is wrong


def test_cifar_shapes_and_pre_logits():
    model = create_backbone("resnet32_cifar", num_classes=10).eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        features = model.forward_features(x)
        pre_logits = model.forward_head(features, pre_logits=True)
    assert features.shape == (4, 64, 8, 8)
    assert model.num_features == 64
    torch.testing.assert_close(pre_logits, features.mean(dim=(2, 3)))
    torch.testing.assert_close(model.fc(pre_logits), model(x))


def test_num_classes_zero_returns_pooled_features():
    model = create_backbone("resnet20_cifar", num_classes=0).eval()
    assert isinstance(model.get_classifier(), nn.Identity)
    assert model(torch.randn(3, 3, 32, 32)).shape == (3, 64)


def test_in_chans_one_for_fashion_mnist():
    model = create_backbone("resnet32_cifar", num_classes=10, in_chans=1).eval()
    assert model.conv1.in_channels == 1
    with torch.no_grad():
        assert model.forward_features(torch.randn(2, 1, 28, 28)).shape == (2, 64, 7, 7)
        assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_global_pool_max():
    model = create_backbone("resnet20_cifar", num_classes=10, global_pool="max").eval()
    with torch.no_grad():
        features = model.forward_features(torch.randn(2, 3, 32, 32))
        torch.testing.assert_close(model.forward_head(features, pre_logits=True), features.amax(dim=(2, 3)))


def test_drop_rate_applies_in_training_only():
    model = create_backbone("resnet20_cifar", num_classes=10, drop_rate=0.5)
    features = torch.rand(64, 64, 8, 8) + 1.0  # pooled values are all >= 1, so zeros come from dropout
    model.train()
    dropped = model.forward_head(features, pre_logits=True)
    assert 0.3 < (dropped == 0).float().mean().item() < 0.7
    model.eval()
    assert (model.forward_head(features, pre_logits=True) > 0).all()


def test_feature_info_matches_timm_features_only():
    model = timm.create_model("resnet32_cifar", features_only=True)
    outputs = model(torch.randn(1, 3, 32, 32))
    info = create_backbone("resnet32_cifar").feature_info
    assert [i["module"] for i in info] == ["layer1", "layer2", "layer3"]
    for out, item in zip(outputs, info):
        assert out.shape[1] == item["num_chs"]
        assert 32 // out.shape[-1] == item["reduction"]


def test_zero_pad_shortcut_is_option_a_padded_on_both_sides():
    # The official BBN / LDAM-DRW shortcut: F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, planes // 4, planes // 4)).
    x = torch.randn(2, 16, 8, 8)
    out = ZeroPadShortcut(16, 32, 2)(x)
    assert out.shape == (2, 32, 4, 4)
    torch.testing.assert_close(out[:, 8:24], x[:, :, ::2, ::2])
    assert (out[:, :8] == 0).all() and (out[:, 24:] == 0).all()
    out = ZeroPadShortcut(32, 64, 2)(torch.randn(1, 32, 8, 8))
    assert (out[:, :16] == 0).all() and (out[:, 48:] == 0).all() and (out[:, 16:48] != 0).all()


def test_kaiming_fan_in_init_of_convs_as_the_official_code():
    model = create_backbone("resnet110_cifar", num_classes=10)
    conv = model.layer2[0].conv1  # 16 -> 32 channels: fan_in = 16 * 9, fan_out = 32 * 9
    expected_std = (2.0 / (16 * 9)) ** 0.5
    assert abs(conv.weight.std().item() - expected_std) / expected_std < 0.05


def test_grad_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    plain = create_backbone("resnet20_cifar", num_classes=3).double()
    checkpointed = create_backbone("resnet20_cifar", num_classes=3).double()
    checkpointed.load_state_dict(plain.state_dict())
    checkpointed.set_grad_checkpointing(True)
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    for model in (plain, checkpointed):
        model(x).square().sum().backward()
    for (name, a), b in zip(plain.named_parameters(), checkpointed.parameters()):
        torch.testing.assert_close(a.grad, b.grad, msg=name)


def test_bad_depth_is_a_config_error():
    with pytest.raises(ConfigError, match="6n\\+2"):
        CifarResNet(depth=33)


def test_pretrained_cfg_has_cifar_statistics():
    cfg = timm.models.get_pretrained_cfg("resnet32_cifar")
    assert cfg.mean == CIFAR10_MEAN == (0.4914, 0.4822, 0.4465)
    assert cfg.std == CIFAR10_STD == (0.2023, 0.1994, 0.2010)
    assert cfg.input_size == (3, 32, 32)
    assert cfg.num_classes == 10
    assert not cfg.has_weights
    model = timm.create_model("resnet32_cifar")
    assert model.default_cfg is model.pretrained_cfg
    assert model.fc.out_features == 10
    data_cfg = timm.data.resolve_data_config({}, model=model)
    assert data_cfg["mean"] == CIFAR10_MEAN and data_cfg["input_size"] == (3, 32, 32)


def test_import_lttoolkit_is_light_and_backbones_register_into_timm():
    code = (
        "import sys, lttoolkit\n"
        "heavy = sorted(m for m in ('torch', 'timm') if m in sys.modules)\n"
        "assert not heavy, f'import lttoolkit imported {heavy}'\n"
        "assert not any(type(f).__module__.startswith('lttoolkit') for f in sys.meta_path), 'an import hook'\n"
        "import lttoolkit.backbones, timm\n"
        "model = timm.create_model('resnet32_cifar', num_classes=100)\n"
        "assert model.fc.out_features == 100\n"
        "assert timm.list_models('resnet*_cifar') == "
        "['resnet20_cifar', 'resnet32_cifar', 'resnet44_cifar', 'resnet56_cifar', 'resnet110_cifar']\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


@pytest.mark.parametrize("build", [create_backbone, timm.create_model], ids=["create_backbone", "timm"])
def test_cifar_pretrained_raises(build):
    with pytest.raises(PretrainedWeightsError, match="no published pretrained weights.*pretrained=False"):
        build("resnet32_cifar", pretrained=True)


def test_cifar_pretrained_from_local_file(tmp_path):
    source = create_backbone("resnet20_cifar", num_classes=10)
    path = tmp_path / "resnet20.pth"
    torch.save(source.state_dict(), path)
    loaded = create_backbone(
        "resnet20_cifar", num_classes=10, pretrained=True, pretrained_cfg_overlay={"file": str(path)}
    )
    torch.testing.assert_close(loaded.layer3[0].conv1.weight, source.layer3[0].conv1.weight)
    with pytest.raises(PretrainedWeightsError, match="resnet32_cifar"):  # ResNet-20 weights do not fit
        create_backbone("resnet32_cifar", num_classes=10, pretrained=True, pretrained_cfg_overlay={"file": str(path)})


def test_timm_pretrained_fails_fast_offline(tmp_path, monkeypatch):
    # Offline mode plus an empty cache: nothing is ever downloaded.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(PretrainedWeightsError) as info:
        create_backbone(TIMM_NAME, pretrained=True, cache_dir=str(tmp_path))
    assert time.perf_counter() - start < 10
    message = str(info.value)
    assert TIMM_NAME in message and "offline" in message
    assert "pretrained=False" in message and "pretrained_cfg_overlay=dict(file=" in message


@pytest.mark.parametrize("where", ["hub", "url"])
def test_timm_pretrained_unreachable_host_fails_fast(where, tmp_path, monkeypatch):
    # Hosts under .invalid never resolve (RFC 2606), so no download can start.
    import huggingface_hub.constants

    for var in ("HF_HUB_OFFLINE", "http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "https://hub.invalid")
    overlay = {} if where == "hub" else {"hf_hub_id": None, "url": "https://weights.invalid/w.pth"}
    start = time.perf_counter()
    with pytest.raises(PretrainedWeightsError, match=r"cannot resolve (hub|weights)\.invalid"):
        create_backbone(TIMM_NAME, pretrained=True, cache_dir=str(tmp_path), pretrained_cfg_overlay=overlay)
    assert time.perf_counter() - start < 10
    assert huggingface_hub.constants.HF_HUB_OFFLINE is False  # our temporary switch was undone


def test_timm_pretrained_from_local_file_and_missing_file(tmp_path):
    source = create_backbone(TIMM_NAME, num_classes=1000)
    path = tmp_path / "weights.pth"
    torch.save(source.state_dict(), path)
    loaded = create_backbone(TIMM_NAME, pretrained=True, pretrained_cfg_overlay={"file": str(path)})
    torch.testing.assert_close(loaded.conv1[0].weight, source.conv1[0].weight)
    with pytest.raises(PretrainedWeightsError, match="missing.pth"):
        create_backbone(TIMM_NAME, pretrained=True, pretrained_cfg_overlay={"file": str(tmp_path / "missing.pth")})


def test_unreachable_reason_names_the_host(monkeypatch):
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    assert "nowhere.invalid" in _unreachable_reason("https://nowhere.invalid/weights.pth")


def test_unknown_timm_name():
    assert timm_backbone_factory("resnet_does_not_exist") is None
    with pytest.raises(UnknownComponentError, match="resnet_does_not_exist.*timm"):
        BACKBONES.get("resnet_does_not_exist")


def test_timm_name_builds_through_registry():
    model = create_backbone({"type": TIMM_NAME, "num_classes": 5})
    assert model.get_classifier().out_features == 5
    assert model.pretrained_cfg["architecture"] == TIMM_NAME


@pytest.mark.parametrize("name", ["resnet32_cifar", TIMM_NAME])
def test_unknown_option_names_the_key(name):
    with pytest.raises(UnknownOptionError, match="'dropp_rate'.*did you mean 'drop_rate'") as info:
        create_backbone(name, dropp_rate=0.1)
    assert isinstance(info.value.__cause__, TypeError)


def test_dict_spec_overrides_defaults_and_conflicts_raise():
    model = create_backbone({"type": "resnet20_cifar", "num_classes": 100, "in_chans": 1})
    assert model.fc.out_features == 100 and model.conv1.in_channels == 1
    with pytest.raises(ConfigError, match="num_classes"):
        create_backbone({"type": "resnet20_cifar", "num_classes": 100}, num_classes=10)


class _NoHead(nn.Module):
    num_features = 8

    def forward_features(self, x):
        return x


def test_check_backbone_interface_names_what_is_missing():
    with pytest.raises(ComponentContractError) as info:
        check_backbone_interface(_NoHead(), name="nohead")
    message = str(info.value)
    for missing in ("forward_head", "reset_classifier", "get_classifier", "feature_info"):
        assert missing in message
    assert "forward_features" not in message and "num_features" not in message
    with pytest.raises(ComponentContractError, match="nn.Module"):
        check_backbone_interface(object())


def test_plugin_backbone_is_checked():
    def broken_backbone(pretrained=False, num_classes=1000, in_chans=3):
        return _NoHead()

    with registration_source("fake-backbones 1.0"):
        BACKBONES.register(broken_backbone)
    try:
        assert BACKBONES.entry("broken_backbone").is_plugin
        with pytest.raises(ComponentContractError, match="broken_backbone.*forward_head"):
            create_backbone("broken_backbone")
    finally:
        BACKBONES.unregister("broken_backbone")


def test_create_backbone_is_exported():
    assert lttoolkit.create_backbone is create_backbone
