"""BilateralWrapper (BBN, Zhou et al., CVPR 2020) on every backbone family.

The reference for each check is the plain backbone with one branch's copy of
the duplicated block swapped in: that is what BBN's two separate passes compute.
(tests/test_bbn_official.py checks the wrapper against the official network itself.)
"""

from __future__ import annotations

import copy
import io
import math
import pickle
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.testing import assert_close

from lttoolkit import build
from lttoolkit.backbones import create_backbone
from lttoolkit.errors import BackboneSplitError
from lttoolkit.methods.bilateral import (
    BRANCHES,
    BilateralBlock,
    BilateralWrapper,
    bbn_logits,
    bbn_loss,
    convert_sync_batchnorm,
    find_last_block,
)

NUM_CLASSES = 5
PLUGIN = "plugin"
TOL = {"rtol": 1e-4, "atol": 1e-5}
TOL64 = {"rtol": 1e-9, "atol": 1e-10}

# name -> (input size, last block of the last stage, its class name)
FAMILIES = {
    "resnet20_cifar": (32, "layer3.2", "CifarBasicBlock"),
    "resnet32_cifar": (32, "layer3.4", "CifarBasicBlock"),
    "resnet18": (64, "layer4.1", "BasicBlock"),
    "resnet50": (64, "layer4.2", "Bottleneck"),
    "resnext50_32x4d": (64, "layer4.2", "Bottleneck"),
    "convnext_atto": (64, "stages.3.blocks.1", "ConvNeXtBlock"),
    "efficientnet_b0": (64, "blocks.6.0", "InvertedResidual"),
    "mobilenetv3_small_100": (64, "blocks.5.0", "ConvBnAct"),
    "regnetx_002": (64, "s4.b7", "Bottleneck"),
    "vit_tiny_patch16_224": (224, "blocks.11", "Block"),
    "deit_tiny_patch16_224": (224, "blocks.11", "Block"),
    "swin_tiny_patch4_window7_224": (224, "layers.3.blocks.1", "SwinTransformerBlock"),
    PLUGIN: (16, "stages.1.1", "_TinyBlock"),  # tests/conftest.py registers it as a plugin
}
SLOW = {"resnet50", "resnext50_32x4d", "deit_tiny_patch16_224", "swin_tiny_patch4_window7_224"}
FAMILY_PARAMS = [pytest.param(name, marks=pytest.mark.slow if name in SLOW else ()) for name in FAMILIES]


# ---------------------------------------------------------------------------- helpers
def wrap(name: str, *, split_at: str | None = None, **options: object) -> tuple[BilateralWrapper, nn.Module]:
    """``(wrapper, plain)``: the wrapped backbone and an untouched copy (classifier removed).

    The re-balancing block is perturbed so the two branches compute different
    features and a swapped branch cannot go unnoticed.
    """
    torch.manual_seed(0)
    backbone = create_backbone(name, num_classes=NUM_CLASSES, **options)
    plain = copy.deepcopy(backbone)
    plain.reset_classifier(0)
    model = BilateralWrapper(backbone, NUM_CLASSES, split_at=split_at)
    with torch.no_grad():
        for param in model.bilateral_block.rebalancing.parameters():
            param.add_(0.05 * torch.randn_like(param))
    return model, plain


def load_branch(model: BilateralWrapper, plain: nn.Module, branch: str) -> nn.Module:
    """Load ``model``'s weights into ``plain``, taking the duplicated block from ``branch``."""
    source = model.backbone.state_dict()
    prefix = model.split_at + "."
    renamed = {key: f"{prefix}{branch}.{key[len(prefix):]}" if key.startswith(prefix) else key for key in plain.state_dict()}
    plain.load_state_dict({key: source[name] for key, name in renamed.items()})
    return plain


def pooled(net: nn.Module, x: Tensor) -> Tensor:
    return net.forward_head(net.forward_features(x), pre_logits=True).flatten(1)


def snapshot(module: nn.Module) -> dict[str, Tensor]:
    """Parameter gradients (``"<name> grad"``) and buffers (running statistics, batch counts) by name."""
    state = {f"{key} grad": param.grad for key, param in module.named_parameters()}
    return state | dict(module.named_buffers())


def set_submodule(root: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, child = path.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, child, module)


def images(size: int, batch: int = 2, seed: int = 1) -> Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


@dataclass
class Family:
    name: str
    size: int
    model: BilateralWrapper
    plain: nn.Module
    pooled_size: int


@pytest.fixture(scope="module", params=FAMILY_PARAMS)
def family(request: pytest.FixtureRequest) -> Family:
    key = request.param
    name = request.getfixturevalue("plugin_backbone") if key == PLUGIN else key
    size = FAMILIES[key][0]
    model, plain = wrap(name)
    with torch.no_grad():
        pooled_size = pooled(plain.eval(), images(size, batch=1)).shape[1]
    return Family(key, size, model, plain, pooled_size)


# ---------------------------------------------------------------------------- contract, every family
def test_classifier_reads_both_pooled_features(family: Family) -> None:
    assert family.model.feature_dim == family.pooled_size
    assert family.model.classifier.in_features == 2 * family.pooled_size
    assert family.model.classifier.out_features == NUM_CLASSES


def test_branches_share_no_parameter(family: Family) -> None:
    model = family.model
    block = model.bilateral_block
    assert isinstance(block, BilateralBlock)
    conventional, rebalancing = list(block.conventional.parameters()), list(block.rebalancing.parameters())
    assert conventional and len(conventional) == len(rebalancing)
    assert not {id(p) for p in conventional} & {id(p) for p in rebalancing}
    assert not {p.data_ptr() for p in conventional} & {p.data_ptr() for p in rebalancing}

    groups = model.parameter_groups()
    assert list(groups) == ["trunk", "conventional", "rebalancing", "classifier"]
    assert all(groups.values())
    grouped = [id(p) for group in groups.values() for p in group]
    assert len(grouped) == len(set(grouped)), "a parameter is in two groups"
    assert set(grouped) == {id(p) for p in model.parameters()}, "a parameter is in no group"
    # The block is registered once, so the state dict holds each parameter once.
    assert len(list(model.named_parameters(remove_duplicate=False))) == len(grouped)


@pytest.mark.parametrize(
    "alpha, frozen, trained", [(1.0, "rebalancing", "conventional"), (0.0, "conventional", "rebalancing")]
)
def test_alpha_extremes_train_one_branch_only(family: Family, alpha: float, frozen: str, trained: str) -> None:
    model = family.model.train()
    model.zero_grad(set_to_none=True)
    targets = (torch.tensor([0, 1]), torch.tensor([2, 3]))
    logits = model(images(family.size, seed=2), images(family.size, seed=3), alpha=alpha)
    model.combine_loss(F.cross_entropy, logits, targets, alpha=alpha).backward()
    groups = model.parameter_groups()
    for param in groups[frozen]:
        assert param.grad is None or not param.grad.any(), f"the {frozen} block got a gradient at alpha={alpha}"
    for role in (trained, "trunk", "classifier"):
        assert any(p.grad is not None and p.grad.any() for p in groups[role]), f"no gradient reached the {role}"
    model.zero_grad(set_to_none=True)


def test_inference_runs_trunk_once(family: Family) -> None:
    model = family.model.eval()
    block = model.bilateral_block
    stem = next(
        m for name, m in model.backbone.named_modules()
        if not name.startswith(model.split_at) and not list(m.children()) and list(m.parameters(recurse=False))
    )
    calls: list[tuple[str, int]] = []
    handles = [
        module.register_forward_hook(lambda mod, inputs, out, tag=tag: calls.append((tag, inputs[0].shape[0])))
        for tag, module in (("stem", stem), *((b, getattr(block, b)) for b in BRANCHES))
    ]
    try:
        with torch.no_grad():
            model(images(family.size))
    finally:
        for handle in handles:
            handle.remove()
    assert calls == [("stem", 2), ("conventional", 2), ("rebalancing", 2)]


def test_eval_logits_concatenate_both_branches(family: Family) -> None:
    model = family.model.eval()
    x = images(family.size)
    with torch.no_grad():
        logits = model(x)
        f_c, f_r = model.forward_features(x)
        expected = {branch: pooled(load_branch(model, family.plain, branch).eval(), x) for branch in BRANCHES}
    assert not torch.allclose(expected["conventional"], expected["rebalancing"]), "branches should differ"
    assert_close(f_c, expected["conventional"], **TOL)
    assert_close(f_r, expected["rebalancing"], **TOL)
    weight, bias = model.classifier.weight, model.classifier.bias
    assert_close(logits, torch.cat([f_c, f_r], dim=1) @ weight.T + bias, **TOL)
    w_c, w_r = model.classifier_halves()
    assert_close(logits, f_c @ w_c.T + f_r @ w_r.T + bias, **TOL)


def test_find_last_block(family: Family) -> None:
    _, path, class_name = FAMILIES[family.name]
    assert find_last_block(family.plain) == path
    assert type(family.plain.get_submodule(path)).__name__ == class_name
    assert family.model.split_at == path


# ---------------------------------------------------------------------------- training = two separate passes
@pytest.mark.parametrize(
    "name, split_at, options",
    [
        ("resnet32_cifar", None, {}),
        ("resnet20_cifar", "layer3.1", {}),  # layer3.2 then runs on both branches' images
        ("resnet18", None, {}),  # timm ResNet
        ("convnext_atto", None, {}),  # timm ConvNeXt: LayerNorm, no batch norm
        # timm's BatchNormAct2d follows the block; float64 convolutions are slow on CPU.
        pytest.param("efficientnet_b0", None, {"drop_rate": 0.0}, id="efficientnet_b0", marks=pytest.mark.slow),
        (PLUGIN, None, {}),  # a batch norm follows the block
    ],
)
def test_training_forward_equals_two_separate_passes(
    request: pytest.FixtureRequest, name: str, split_at: str | None, options: dict
) -> None:
    size = min(FAMILIES[name][0], 32)
    if name == PLUGIN:
        name = request.getfixturevalue("plugin_backbone")
    model, plain = wrap(name, split_at=split_at, **options)
    # In float64 the two computations agree to rounding; float32 gradients through a
    # few dozen batch norms over 4 images differ by ~1e-5 of their scale.
    model.double().train()
    plain.double()
    # One trunk run twice, with each branch's block swapped in: BBN's official two passes.
    trunk = load_branch(model, plain, "conventional").train()
    blocks = {"conventional": trunk.get_submodule(model.split_at)}
    blocks["rebalancing"] = copy.deepcopy(blocks["conventional"])
    blocks["rebalancing"].load_state_dict(model.bilateral_block.rebalancing.state_dict())
    classifier = copy.deepcopy(model.classifier)

    alpha, batch = 0.3, 4
    x_c, x_r = images(size, batch, seed=4).double(), images(size, batch, seed=5).double()
    logits = model(x_c, x_r, alpha=alpha)
    features = {}
    for branch, x in (("conventional", x_c), ("rebalancing", x_r)):
        set_submodule(trunk, model.split_at, blocks[branch])
        features[branch] = pooled(trunk, x)
    mixed = torch.cat([2 * alpha * features["conventional"], 2 * (1 - alpha) * features["rebalancing"]], dim=1)
    expected = classifier(mixed)
    assert_close(logits, expected, **TOL64)

    cotangent = torch.randn(logits.shape, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    (logits * cotangent).sum().backward()
    (expected * cotangent).sum().backward()
    # Gradients and running statistics, named as in the wrapped backbone.
    set_submodule(trunk, model.split_at, blocks["conventional"])
    prefix = model.split_at + "."
    reference = {
        f"{prefix}conventional.{key[len(prefix):]}" if key.startswith(prefix) else key: value
        for key, value in snapshot(trunk).items()
    }
    reference |= {f"{prefix}rebalancing.{key}": value for key, value in snapshot(blocks["rebalancing"]).items()}
    reference |= {f"classifier.{key}": value for key, value in snapshot(classifier).items()}
    actual = snapshot(model.backbone)
    actual |= {f"classifier.{key}": value for key, value in snapshot(model.classifier).items()}
    assert actual.keys() == reference.keys()
    assert all(value is not None for value in reference.values()), "every parameter takes part"
    for key, value in reference.items():
        assert_close(actual[key], value, **TOL64, msg=lambda message, key=key: f"{key}: {message}")
    # The running statistics really moved (not both left at their initial values); ConvNeXt has none.
    if name != "convnext_atto":
        assert any(key.endswith("running_mean") and value.abs().sum() > 0 for key, value in actual.items())


def test_one_shared_trunk_pass_would_differ() -> None:
    # The two-pass equality above is not automatic: one trunk pass over both batches
    # (batch statistics shared by the branches) gives other logits, so the test can fail.
    model, _ = wrap("resnet20_cifar")
    model.train()
    x_c, x_r = images(32, 4, seed=4), images(32, 4, seed=5) * 3 + 1
    with torch.no_grad():
        shared = model.backbone.forward_features(torch.cat([x_c, x_r]))  # both blocks on all 8 images
        f = model.backbone.forward_head(shared, pre_logits=True)
        one_pass = bbn_logits(model.classifier, f[:4], f[12:], 0.5)
        two_passes = model(x_c, x_r, alpha=0.5)
    assert not torch.allclose(one_pass, two_passes, atol=1e-3)


def test_bbn_equations_by_hand() -> None:
    classifier = nn.Linear(4, 2)
    with torch.no_grad():
        classifier.weight.copy_(torch.tensor([[1.0, 0.0, 2.0, 0.0], [0.0, 1.0, 0.0, -1.0]]))
        classifier.bias.copy_(torch.tensor([0.5, -0.5]))
    f_c, f_r = torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0, 4.0]])
    # alpha = 0.25: [0.5 f_c ; 1.5 f_r] = [0.5, 1, 4.5, 6] -> [0.5 + 9 + 0.5, 1 - 6 - 0.5]
    assert_close(bbn_logits(classifier, f_c, f_r, 0.25), torch.tensor([[10.0, -5.5]]))
    # alpha = 0.5 is the inference rule W·[f_c ; f_r] + b
    assert_close(bbn_logits(classifier, f_c, f_r, 0.5), classifier(torch.cat([f_c, f_r], 1)))
    assert_close(bbn_logits(classifier, f_c, f_r, torch.tensor(0.25)), torch.tensor([[10.0, -5.5]]))
    logits = torch.tensor([[1.0, 0.0]])
    ce0, ce1 = math.log(1 + math.exp(-1)), math.log(1 + math.exp(1))
    loss = bbn_loss(F.cross_entropy, logits, torch.tensor([0]), torch.tensor([1]), 0.8)
    assert loss.item() == pytest.approx(0.8 * ce0 + 0.2 * ce1)


def test_branchwise_norm_option_is_accepted_and_ignored() -> None:
    # Old configs and checkpoints carry branchwise_norm; they still build, with a note.
    torch.manual_seed(0)
    plain = build("bbn", backbone="resnet20_cifar", num_classes=3)
    torch.manual_seed(0)
    with pytest.warns(FutureWarning, match="branchwise_norm is no longer an option"):
        old = build("bbn", backbone="resnet20_cifar", num_classes=3, branchwise_norm=True)
    assert "branchwise_norm" not in old.recipe.options
    assert old.state_dict().keys() == plain.state_dict().keys()
    x = images(32)
    with torch.no_grad():
        assert_close(old.eval()(x), plain.eval()(x))


# ---------------------------------------------------------------------------- what GPU users need
def _step(model: BilateralWrapper, x_c: Tensor, x_r: Tensor, alpha: float = 0.3) -> Tensor:
    targets = (torch.tensor([0, 1, 2, 3]), torch.tensor([4, 0, 1, 2]))
    logits = model(x_c, x_r, alpha=alpha)
    model.combine_loss(F.cross_entropy, logits, targets, alpha=alpha).backward()
    return logits


def _grads(model: nn.Module) -> dict[str, Tensor]:
    return {name: param.grad for name, param in model.named_parameters()}


def test_compile_gives_one_graph_for_the_training_forward() -> None:
    model, _ = wrap("resnet32_cifar")
    model.train()
    x_c, x_r = images(32, 4, seed=4), images(32, 4, seed=5)
    alpha = torch.tensor(0.3)
    explanation = torch._dynamo.explain(model)(x_c, x_r, alpha=alpha)
    assert (explanation.graph_count, explanation.graph_break_count) == (1, 0), explanation.break_reasons
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    eager_twin = copy.deepcopy(model)
    assert_close(compiled(x_c, x_r, alpha=alpha), eager_twin(x_c, x_r, alpha=alpha))
    torch._dynamo.reset()


def test_channels_last_is_kept_through_the_whole_model() -> None:
    model, _ = wrap("resnet20_cifar")
    model = model.to(memory_format=torch.channels_last).train()
    seen: list[bool] = []

    def check(module: nn.Module, inputs: tuple[Tensor, ...]) -> None:
        seen.append(inputs[0].is_contiguous(memory_format=torch.channels_last))

    handles = [m.register_forward_pre_hook(check) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d))]
    try:
        x_c = images(32, 4, seed=4).to(memory_format=torch.channels_last)
        x_r = images(32, 4, seed=5).to(memory_format=torch.channels_last)
        _step(model, x_c, x_r)
        with torch.no_grad():
            model.eval()(x_c)
    finally:
        for handle in handles:
            handle.remove()
    def count(root: nn.Module) -> int:
        return sum(isinstance(m, (nn.Conv2d, nn.BatchNorm2d)) for m in root.modules())

    block, trunk = count(model.bilateral_block), count(model) - count(model.bilateral_block)
    # training: the trunk twice, each copy of the block once; inference: the trunk once, both copies
    assert len(seen) == 3 * trunk + 2 * block
    assert all(seen), f"{seen.count(False)} of {len(seen)} layer inputs lost channels_last"


def test_pickle_and_torch_save_keep_a_working_model() -> None:
    model, _ = wrap("resnet20_cifar")
    restored = pickle.loads(pickle.dumps(model))
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    x_c, x_r = images(32, 4, seed=4), images(32, 4, seed=5)
    for copy_ in (restored, loaded, copy.deepcopy(model)):
        copy_.train()
        assert_close(_step(copy_, x_c, x_r), _step(copy.deepcopy(model).train(), x_c, x_r))
        # the restored branches train the restored weights (not the original's)
        assert copy_.bilateral_block.rebalancing.conv1.weight.grad is not None
        assert model.bilateral_block.rebalancing.conv1.weight.grad is None


@pytest.mark.parametrize("name", ["resnet20_cifar", "resnet18"])
def test_gradient_checkpointing_gives_the_same_step(name: str) -> None:
    model, _ = wrap(name)
    model.double().train()
    checkpointed = copy.deepcopy(model)
    checkpointed.set_grad_checkpointing(True)
    x_c, x_r = images(32, 4, seed=4).double(), images(32, 4, seed=5).double()
    assert_close(_step(checkpointed, x_c, x_r), _step(model, x_c, x_r), **TOL64)
    reference = _grads(model)
    assert all(grad is not None for grad in reference.values())
    for key, grad in _grads(checkpointed).items():
        assert_close(grad, reference[key], **TOL64, msg=key)
    # (Running statistics are not compared: PyTorch's recomputation runs batch norm's forward a
    # second time and updates them again, with or without BBN.)


def test_branch_views_follow_module_replacement() -> None:
    # Sync batch norm (and any surgery) replaces modules: the next pass must use the new ones.
    model, _ = wrap("resnet20_cifar")
    converted = convert_sync_batchnorm(model)
    conventional, rebalancing = converted._views()
    assert isinstance(conventional.bn1, nn.SyncBatchNorm) and conventional.bn1 is converted.backbone.bn1
    assert rebalancing.layer3[2] is converted.bilateral_block.rebalancing
    assert isinstance(rebalancing.layer3[2].bn1, nn.SyncBatchNorm)


# ---------------------------------------------------------------------------- loss and arguments
def test_combine_loss_is_bbn_mixture() -> None:
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]])
    y_c, y_r = torch.tensor([0, 2]), torch.tensor([1, 1])
    log_p = logits.log_softmax(dim=1)
    ce_c = -(log_p[0, 0] + log_p[1, 2]) / 2
    ce_r = -(log_p[0, 1] + log_p[1, 1]) / 2
    loss = BilateralWrapper.combine_loss(F.cross_entropy, logits, (y_c, y_r), alpha=0.3)
    assert_close(loss, 0.3 * ce_c + 0.7 * ce_r)


def test_training_forward_checks_its_arguments() -> None:
    model, _ = wrap("resnet20_cifar")
    with pytest.raises(ValueError, match="alpha"):
        model(images(32), images(32))
    with pytest.raises(ValueError, match="same size"):
        model(images(32, 2), images(32, 3), alpha=0.5)


# ---------------------------------------------------------------------------- split point
def test_explicit_split_at() -> None:
    model, plain = wrap("resnet18", split_at="layer4.0")
    assert model.split_at == "layer4.0"
    assert isinstance(model.backbone.layer4[0], BilateralBlock)
    assert not isinstance(model.backbone.layer4[1], BilateralBlock)
    trunk_ids = {id(p) for p in model.parameter_groups()["trunk"]}
    assert all(id(p) in trunk_ids for p in model.backbone.layer4[1].parameters())
    x = images(64)
    with torch.no_grad():
        f_c, f_r = model.eval().forward_features(x)
        assert_close(f_c, pooled(load_branch(model, plain, "conventional").eval(), x), **TOL)
        assert_close(f_r, pooled(load_branch(model, plain, "rebalancing").eval(), x), **TOL)


def test_backbone_without_feature_info_needs_split_at(plugin_backbone: str) -> None:
    def without_feature_info() -> nn.Module:
        backbone = create_backbone(plugin_backbone, num_classes=3)
        del backbone.feature_info
        return backbone

    with pytest.raises(BackboneSplitError, match="split_at") as info:
        find_last_block(without_feature_info())
    assert "stages" in str(info.value)  # lists where to look
    with pytest.raises(BackboneSplitError, match="split_at"):
        BilateralWrapper(without_feature_info(), 3)
    model = BilateralWrapper(without_feature_info(), 3, split_at="stages.1.1")
    assert model.eval()(torch.randn(2, 3, 16, 16)).shape == (2, 3)


def test_missing_split_at_raises() -> None:
    backbone = create_backbone("resnet20_cifar", num_classes=NUM_CLASSES)
    with pytest.raises(BackboneSplitError, match="'layer9.0'.*split_at"):
        BilateralWrapper(backbone, NUM_CLASSES, split_at="layer9.0")


def test_split_at_outside_the_features_raises() -> None:
    # fc does not run in forward_head(pre_logits=True), so it never sees the images.
    model = BilateralWrapper(create_backbone("resnet20_cifar", num_classes=NUM_CLASSES), NUM_CLASSES, split_at="fc")
    with pytest.raises(BackboneSplitError, match="split_at"):
        model.eval()(images(32))
