"""Two-stage decoupling (Kang et al. 2020): what stage 2 may change, and tau chosen on validation data."""

from __future__ import annotations

import pytest
import torch

from lttoolkit import build
from lttoolkit.engine.checkpoint import load_checkpoint
from lttoolkit.engine.config import load_config
from lttoolkit.engine.evaluate import load_model
from lttoolkit.engine.trainer import Trainer
from lttoolkit.errors import ConfigError
from lttoolkit.methods.decoupling import TAU_GRID, DecoupledModel

TINY = ["model.backbone=resnet20_cifar", "data.batch_size=16", "data.val_fraction=0.1", "optim.warmup_epochs=0",
        "train.max_steps_per_epoch=3"]


@pytest.fixture(scope="module")
def stage1(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("stage1")
    cfg = load_config(None, [*TINY, "model.type=ce", "train.epochs=1", f"output_dir={out}", "name=s1"])
    Trainer(cfg, progress=False).fit()
    return out / "s1" / "last.pt"


def _stage2(method: str, stage1_path, tmp_path, *extra: str):
    cfg = load_config(None, [*TINY, f"model.type={method}", "train.epochs=1", f"output_dir={tmp_path}",
                             f"name={method}", f"init_from={stage1_path}", *extra])
    results = Trainer(cfg, progress=False).fit()
    return results, load_checkpoint(tmp_path / method / "last.pt")["model"]


def test_crt_retrains_only_the_classifier(stage1, tmp_path) -> None:
    before = load_checkpoint(stage1)["model"]
    _, after = _stage2("crt", stage1, tmp_path)
    trunk = [k for k in before if k.startswith("backbone.") and not k.startswith("backbone.fc.")]
    assert trunk and all(torch.equal(before[k], after[k]) for k in trunk)  # BN statistics included
    assert not torch.equal(before["backbone.fc.weight"], after["backbone.fc.weight"])


def test_lws_learns_only_per_class_scales(stage1, tmp_path) -> None:
    before = load_checkpoint(stage1)["model"]
    _, after = _stage2("lws", stage1, tmp_path)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not torch.equal(after["scales"], torch.ones_like(after["scales"]))


def test_tau_norm_is_chosen_on_validation_and_normalises_weights(stage1, tmp_path) -> None:
    results, _ = _stage2("tau_norm", stage1, tmp_path)
    calibration = results["calibration"]
    assert len(calibration["grid"]) == 21
    best = max(calibration["grid"], key=lambda row: (row["val_mean_class_accuracy"], -row["tau"]))
    assert calibration["tau"] == best["tau"]
    model, _ = load_model(tmp_path / "tau_norm" / "last.pt")
    model.tau.fill_(0.5)
    x = torch.randn(2, 1, 28, 28)  # the embedded data: one channel
    features = model.backbone.forward_head(model.backbone.forward_features(x), pre_logits=True)
    weight = model.backbone.fc.weight
    # The authors' tau_norm.py: logits = x . w_i / ||w_i||^tau, the bias loaded but never added.
    expected = features @ (weight / weight.norm(dim=1, keepdim=True) ** 0.5).T
    torch.testing.assert_close(model(x), expected)


def test_tau_norm_refuses_to_pick_tau_without_a_validation_split(stage1, tmp_path) -> None:
    cfg = load_config(None, [*TINY, "data.val_fraction=0", "model.type=tau_norm", "train.epochs=1",
                             f"output_dir={tmp_path}", "name=t", f"init_from={stage1}"])
    with pytest.raises(ConfigError, match="never on the test set"):
        Trainer(cfg, progress=False).fit()


def test_stage2_refuses_a_bilateral_stage1(tmp_path) -> None:
    model = build("crt", backbone="resnet20_cifar", num_classes=10)
    bbn_weights = build("bbn", backbone="resnet20_cifar", num_classes=10).state_dict()
    with pytest.raises(ConfigError, match="stage 1 must be a single-branch model"):
        model.load_stage1(bbn_weights)


class _FeaturesAsInput(torch.nn.Module):
    """A timm-style stand-in whose features are its input: the classifier alone decides the logits."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(2, 2)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[3.0, 4.0], [0.0, 2.0]]))  # norms 5 and 2
            self.fc.bias.copy_(torch.tensor([10.0, -10.0]))

    def forward_features(self, x):
        return x

    def forward_head(self, x, pre_logits: bool = False):
        return x if pre_logits else self.fc(x)

    def get_classifier(self):
        return self.fc

    def forward(self, x):
        return self.fc(x)


@pytest.mark.parametrize(("tau", "expected"), [
    (1.0, [1.4, 1.0]),                          # [3, 4] / 5 . [1, 1] and [0, 2] / 2 . [1, 1]
    (0.5, [7 / 5 ** 0.5, 2 / 2 ** 0.5]),        # divided by sqrt(5) and sqrt(2)
    (0.0, [7.0, 2.0]),                          # tau = 0: the stage-1 weights, still without the bias
])
def test_tau_norm_logits_by_hand_without_bias(tau, expected) -> None:
    model = DecoupledModel(_FeaturesAsInput(), stage="tau_norm").eval()
    model.tau.fill_(tau)
    torch.testing.assert_close(model(torch.ones(1, 2)), torch.tensor([expected]))


def test_tau_norm_keep_bias_adds_the_stage1_bias() -> None:
    model = DecoupledModel(_FeaturesAsInput(), stage="tau_norm", keep_bias=True).eval()
    model.tau.fill_(1.0)
    torch.testing.assert_close(model(torch.ones(1, 2)), torch.tensor([[11.4, -9.0]]))
    with pytest.raises(ConfigError, match="keep_bias must be true or false"):
        DecoupledModel(_FeaturesAsInput(), stage="tau_norm", keep_bias="no")


def test_tau_norm_method_records_keep_bias_and_rebuilds() -> None:
    model = build("tau_norm", backbone="resnet20_cifar", num_classes=10, keep_bias=True)
    assert model.keep_bias is True and model.recipe.options["keep_bias"] is True
    assert build("tau_norm", backbone="resnet20_cifar", num_classes=10).keep_bias is False


def test_tau_grid_is_the_authors_linspace() -> None:
    # tau_norm.py: for p in np.linspace(0, 2, 21)
    assert TAU_GRID == tuple(i / 10 for i in range(21))


@pytest.mark.parametrize("method", ["crt", "lws"])
def test_stage2_samples_four_images_per_class_visit_like_the_authors_configs(method) -> None:
    # classifier-balancing config/*/cls_crt.yaml and cls_lws.yaml: ClassAwareSampler, num_samples_cls: 4
    spec = build(method, backbone="resnet20_cifar", num_classes=10).recipe.samplers["main"]
    assert (spec.type, spec.options) == ("class_balanced", {"samples_per_class": 4})
    plain = build(method, backbone="resnet20_cifar", num_classes=10, sampler="class_balanced")
    assert plain.recipe.samplers["main"].options == {}


def test_lws_logits_are_the_stage1_logits_times_the_class_scales_by_hand() -> None:
    # classifier-balancing models/TauNormClassifier.py: x = self.fc(x); x *= self.scales (bias included).
    model = DecoupledModel(_FeaturesAsInput(), stage="lws").eval()
    with torch.no_grad():
        model.scales.copy_(torch.tensor([2.0, 0.5]))
    # fc([1, 1]) = [3 + 4 + 10, 0 + 2 - 10] = [17, -8]
    torch.testing.assert_close(model(torch.ones(1, 2)), torch.tensor([[34.0, -4.0]]))
