"""MultiExpertWrapper: BBN as its two-expert case, RIDE's network, and the wrapper's invariants.

* BBN through the generic wrapper (:class:`BilateralExperts`) gives exactly (``torch.equal``) the
  training logits, loss, gradients, running statistics and inference logits of
  :class:`BilateralWrapper` on the same weights;
* K experts share no parameter beyond the trunk; the trunk runs once at inference (and once per
  shared-batch training step);
* each expert computes what a plain network made of the trunk and that expert's modules computes
  (its batch norms see its own B images), and RIDE's network has the authors' parameter count;
* one graph under ``torch.compile``, channels_last kept, pickling, gradient checkpointing.
"""

from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.testing import assert_close

from lttoolkit import build
from lttoolkit.backbones import CifarResNet, create_backbone
from lttoolkit.errors import BackboneSplitError, ConfigError
from lttoolkit.methods.bilateral import BRANCHES, BilateralWrapper
from lttoolkit.methods.multi_expert import (
    BilateralExperts,
    ConcatHead,
    ExpertFork,
    ExpertHeads,
    ExpertSplit,
    MultiExpertWrapper,
    later_modules,
    stage_split,
)
from lttoolkit.methods.protocol import EpochInfo
from lttoolkit.schedules import ParabolicDecay

NUM_CLASSES = 5


def images(size: int, batch: int = 4, seed: int = 1) -> Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def labels(batch: int = 4, seed: int = 2) -> Tensor:
    return torch.randint(0, NUM_CLASSES, (batch,), generator=torch.Generator().manual_seed(seed))


def pooled(net: nn.Module, x: Tensor) -> Tensor:
    return net.forward_head(net.forward_features(x), pre_logits=True).flatten(1)


# ---------------------------------------------------------------------------- BBN through the generic wrapper
def _bbn_pair(name: str) -> tuple[BilateralWrapper, BilateralExperts]:
    torch.manual_seed(0)
    backbone = create_backbone(name, num_classes=NUM_CLASSES)
    reference = BilateralWrapper(copy.deepcopy(backbone), NUM_CLASSES, schedule=ParabolicDecay())
    with torch.no_grad():  # the branches must differ, or a swapped branch would go unnoticed
        for param in reference.bilateral_block.rebalancing.parameters():
            param.add_(0.05 * torch.randn_like(param))
    generic = BilateralExperts(copy.deepcopy(backbone), NUM_CLASSES, schedule=ParabolicDecay())
    generic.load_bilateral_state_dict(reference.state_dict())
    return reference, generic


def _generic_name(key: str, split_at: str) -> str:
    """The generic wrapper's name of a BilateralWrapper parameter or buffer, written out independently."""
    if key.startswith("classifier."):
        return "head." + key
    for k, branch in enumerate(BRANCHES):
        prefix = f"backbone.{split_at}.{branch}."
        if key.startswith(prefix):
            return f"backbone.{split_at}.experts.{k}.{key[len(prefix):]}"
    return key


@pytest.mark.parametrize("name, size", [("resnet20_cifar", 32), ("resnet18", 64), ("plugin", 16)])
def test_bbn_through_the_generic_wrapper_equals_bilateral_wrapper(name: str, size: int,
                                                                  request: pytest.FixtureRequest) -> None:
    if name == "plugin":  # a batch norm after the duplicated block: each pass must keep its own statistics
        name = request.getfixturevalue("plugin_backbone")
    reference, generic = _bbn_pair(name)
    assert generic.split_at == reference.split_at
    x_c, x_r, y_c, y_r = images(size, seed=4), images(size, seed=5), labels(seed=6), labels(seed=7)
    info = EpochInfo(3, 10)  # alpha = 1 - 0.09 = 0.91
    outs = []
    for model in (reference, generic):
        model.train()
        out = model.training_step([x_c, x_r], [y_c, y_r], F.cross_entropy, info, model)
        out.loss.backward()
        outs.append(out)
    ref, gen = outs
    assert torch.equal(ref.logits, gen.logits)
    assert torch.equal(ref.loss, gen.loss)
    assert torch.equal(torch.as_tensor(ref.hits), torch.as_tensor(gen.hits))
    assert ref.stats == gen.stats == {"alpha": pytest.approx(0.91)}
    grads = {name: p.grad for name, p in generic.named_parameters()}
    buffers = dict(generic.named_buffers())
    assert len(grads) == len(dict(reference.named_parameters())) and len(buffers) == len(dict(reference.named_buffers()))
    for key, param in reference.named_parameters():
        assert param.grad is not None, key
        assert torch.equal(param.grad, grads[_generic_name(key, reference.split_at)]), key
    for key, buffer in reference.named_buffers():  # running statistics after the two passes
        assert torch.equal(buffer, buffers[_generic_name(key, reference.split_at)]), key
    reference.eval()
    generic.eval()
    with torch.no_grad():
        assert torch.equal(reference(x_c), generic(x_c))
        f_c, f_r = reference.forward_features(x_c)
        features = generic.forward_features(x_c)
    assert torch.equal(f_c, features[0]) and torch.equal(f_r, features[1])


def test_bbn_generic_state_dict_is_the_bilateral_one_renamed() -> None:
    reference, generic = _bbn_pair("resnet20_cifar")
    renamed = {_generic_name(k, reference.split_at): v for k, v in reference.state_dict().items()}
    state = generic.state_dict()
    assert set(state) == set(renamed)
    assert all(torch.equal(state[k], v) for k, v in renamed.items())


# ---------------------------------------------------------------------------- invariants
def _ride(name: str = "resnet20_cifar", **options: object) -> MultiExpertWrapper:
    torch.manual_seed(0)
    return build("ride", backbone=name, num_classes=NUM_CLASSES, **options)


def _generic(name: str = "resnet20_cifar", **options: object) -> MultiExpertWrapper:
    torch.manual_seed(0)
    return MultiExpertWrapper(create_backbone(name, num_classes=NUM_CLASSES), NUM_CLASSES, **options)


MODELS = {
    "ride": lambda: _ride(),
    "ride-linear-full-width": lambda: _ride(classifier="linear", reduce_dimension=False, num_experts=4),
    "ride-resnet18": lambda: _ride("resnet18"),
    "generic-deepcopy": lambda: _generic(num_experts=3, split_at="layer2", head="cosine"),
    "generic-last-block-concat": lambda: _generic(num_experts=3, head="concat"),
}


@pytest.mark.parametrize("key", MODELS)
def test_experts_share_no_parameter_beyond_the_trunk(key: str) -> None:
    model = MODELS[key]()
    groups = model.parameter_groups()
    experts = [groups[f"expert{k}"] for k in range(model.num_experts)]
    ids = [{id(p) for p in params} for params in experts]
    storage = [{p.data_ptr() for p in params} for params in experts]
    trunk = {id(p) for p in groups["trunk"]}
    for a in range(model.num_experts):
        assert experts[a], f"expert {a} owns no parameter"
        assert not ids[a] & trunk
        for b in range(a + 1, model.num_experts):
            assert not ids[a] & ids[b], f"experts {a} and {b} share a parameter"
            assert not storage[a] & storage[b], f"experts {a} and {b} share storage"
    everything = [id(p) for p in model.parameters()]
    assert sorted(everything) == sorted([*trunk, *set().union(*ids), *(id(p) for p in groups["head"])])
    assert len(everything) == len(set(everything))
    # The trunk is exactly the modules before the split: none lies in an expert container.
    containers = {id(p) for path in model.expert_modules for p in model.expert_container(path).parameters()}
    assert containers == set().union(*ids) - {id(p) for p in model.head.parameters()}


def _first_parametrised_module(model: MultiExpertWrapper) -> nn.Module:
    return next(m for name, m in model.backbone.named_modules()
                if not any(name.startswith(p) for p in model.expert_modules)
                and not list(m.children()) and list(m.parameters(recurse=False)))


@pytest.mark.parametrize("key", ["ride", "ride-resnet18", "generic-last-block-concat"])
@pytest.mark.parametrize("training", [False, True])
def test_the_trunk_runs_once_per_batch(key: str, training: bool) -> None:
    model = MODELS[key]().train(training)
    size = 64 if "resnet18" in key else 32
    calls: list[tuple[str, int]] = []
    hooked = [("stem", _first_parametrised_module(model))]
    for path in model.expert_modules:
        hooked += [(f"{path}/{k}", e) for k, e in enumerate(model.expert_container(path).experts)]
    handles = [m.register_forward_hook(lambda mod, inputs, out, tag=tag: calls.append((tag, inputs[0].shape[0])))
               for tag, m in hooked]
    try:
        with torch.set_grad_enabled(training):
            out = model(images(size, batch=3), return_experts=True)
    finally:
        for handle in handles:
            handle.remove()
    assert calls[0] == ("stem", 3) and [c for c in calls if c[0] == "stem"] == [("stem", 3)]
    expected = [(f"{path}/{k}", 3) for path in model.expert_modules for k in range(model.num_experts)]
    assert calls[1:] == expected
    assert out.logits.shape == (3, NUM_CLASSES)


def _plain_expert(model: MultiExpertWrapper, k: int, reference: nn.Module) -> nn.Module:
    """``reference`` (a plain backbone of the experts' widths) loaded with the trunk and expert k."""
    source = model.backbone.state_dict()
    state = {}
    for key in reference.state_dict():
        owner = next((p for p in model.expert_modules if key.startswith(p + ".")), None)
        state[key] = source[f"{owner}.experts.{k}.{key[len(owner) + 1:]}" if owner else key]
    reference.load_state_dict(state)
    return reference


def test_each_ride_expert_is_a_plain_network_of_the_trunk_and_its_modules() -> None:
    model = _ride().train()
    x = images(32, batch=4)
    out = model(x, return_experts=True)
    assert out.experts.shape == (4, 3, NUM_CLASSES)
    assert_close(out.logits, out.experts.mean(dim=1))
    for k in range(3):
        plain = CifarResNet(depth=20, num_classes=0, widths=(16, 24, 48)).train()
        plain = _plain_expert(model, k, plain)
        features = pooled(plain, x)  # batch statistics over this expert's 4 images, as in RIDE
        cosine = F.linear(F.normalize(features, dim=1), F.normalize(model.head.heads[k].weight, dim=1))
        assert_close(out.experts[:, k], 30.0 * cosine, rtol=1e-4, atol=1e-4)


def test_ride_network_has_the_authors_resnet32_parameter_count() -> None:
    # The authors' ResNet-32 RIDE for CIFAR-100 (model/ldam_drw_resnets/ride_resnet_cifar.py:
    # reduce_dimension, use_norm, 3 experts), counted layer by layer.
    def conv(i, o): return 9 * i * o
    def bn(c): return 2 * c
    def stage(i, o, n): return conv(i, o) + conv(o, o) + 2 * bn(o) + (n - 1) * (2 * conv(o, o) + 2 * bn(o))
    trunk = conv(3, 16) + bn(16) + stage(16, 16, 5)
    expert = stage(16, 24, 5) + stage(24, 48, 5) + 48 * 100
    model = build("ride", backbone="resnet32_cifar", num_classes=100)
    assert sum(p.numel() for p in model.parameters()) == trunk + 3 * expert == 783856
    groups = model.parameter_groups()
    assert sum(p.numel() for p in groups["trunk"]) == trunk
    assert all(sum(p.numel() for p in groups[f"expert{k}"]) == expert for k in range(3))


def test_state_dict_names_each_experts_copy_once() -> None:
    model = _ride()
    keys = list(model.state_dict())
    assert "backbone.layer2.experts.2.0.conv1.weight" in keys and "head.heads.1.weight" in keys
    assert not any(k.startswith("backbone.layer2.0.") for k in keys)
    assert isinstance(model.backbone.layer2, ExpertFork) and isinstance(model.backbone.layer3, ExpertSplit)
    again = model.recipe.rebuild()
    again.load_state_dict(model.state_dict())


def test_independent_experts_start_different_and_deep_copies_start_equal() -> None:
    ride = _ride()
    first, second = (ride.backbone.layer2.experts[k][0].conv1.weight for k in (0, 1))
    assert not torch.equal(first, second)
    copied = _generic(num_experts=2, split_at="layer2")
    first, second = (copied.backbone.layer2.experts[k][0].conv1.weight for k in (0, 1))
    assert torch.equal(first, second) and first is not second


# ---------------------------------------------------------------------------- the split
def test_later_modules_and_the_stage_split(plugin_backbone: str) -> None:
    cifar = create_backbone("resnet32_cifar", num_classes=0)
    assert later_modules(cifar, "layer2") == ["layer2", "layer3"]
    assert stage_split(cifar) == "layer2"
    import timm

    resnet = timm.create_model("resnet18", num_classes=0)
    assert stage_split(resnet) == "layer3" and later_modules(resnet, "layer3") == ["layer3", "layer4"]
    plugin = create_backbone(plugin_backbone, num_classes=0)
    # The plugin net's batch norm after its last stage has state: the experts own it too.
    assert later_modules(plugin, "stages.1") == ["stages.1", "norm"]
    assert later_modules(plugin, "stages.0.1") == ["stages.0.1", "stages.1", "norm"]


def test_a_plugin_backbone_trains_with_experts_owning_its_final_norm(plugin_backbone: str) -> None:
    model = build("ride", backbone=plugin_backbone, num_classes=NUM_CLASSES, reduce_dimension=False).train()
    assert model.expert_modules == ("stages.1", "norm")
    out = model.training_step([images(16)], [labels()], F.cross_entropy, EpochInfo(0, 2), model)
    out.loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_bad_splits_and_options_are_refused() -> None:
    with pytest.raises(BackboneSplitError, match="no module 'layer9'"):
        _generic(split_at="layer9")
    with pytest.raises(BackboneSplitError, match="inside"):
        _generic(expert_modules=["layer3", "layer3.1"])
    with pytest.raises(ValueError, match="first of expert_modules"):
        _generic(split_at="layer2", expert_modules=["layer3"])
    with pytest.raises(ValueError, match="num_experts"):
        _generic(num_experts=0)
    with pytest.raises(ValueError, match="head must be"):
        _generic(head="mlp")
    with pytest.raises(ValueError, match="one stream per expert"):
        _generic(num_experts=3, stream_names=["a", "b"])
    with pytest.raises(ConfigError, match="reduce_dimension"):
        build("ride", backbone="convnext_atto", num_classes=NUM_CLASSES)
    with pytest.raises(ConfigError, match="reduce_dimension"):
        build("ride", backbone="resnet20_cifar", num_classes=NUM_CLASSES, split_at="layer3.1")
    model = _generic(num_experts=2, split_at="layer2")
    with pytest.raises(ValueError, match="one batch for all experts or one per expert"):
        model(images(32), images(32), images(32))
    with pytest.raises(ValueError, match="same size"):
        model(images(32, batch=4), images(32, batch=3))


def test_a_split_the_backbone_runs_twice_is_caught() -> None:
    class Twice(CifarResNet):
        def forward_features(self, x: Tensor) -> Tensor:
            x = self.layer1(self.act1(self.bn1(self.conv1(x))))
            return self.layer3(self.layer2(x))[: x.shape[0]]  # drops the experts' rows

    model = MultiExpertWrapper(Twice(depth=20, num_classes=0), NUM_CLASSES, num_experts=2, split_at="layer2")
    with pytest.raises(BackboneSplitError, match="did not run exactly once"):
        model(images(32))


# ---------------------------------------------------------------------------- heads and the default step
def test_heads_combine_by_hand() -> None:
    heads = ExpertHeads(2, 2, 2, kind="linear", scale=2.0)
    with torch.no_grad():
        heads.heads[0].weight.copy_(torch.eye(2))
        heads.heads[1].weight.copy_(-torch.eye(2))
        for head in heads.heads:
            head.bias.zero_()
    f = [torch.tensor([[1.0, 3.0]]), torch.tensor([[1.0, 1.0]])]
    out = heads(f)
    assert out.experts.tolist() == [[[2.0, 6.0], [-2.0, -2.0]]]
    assert out.logits.tolist() == [[0.0, 2.0]]  # the mean of the experts' logits
    assert heads(f, weights=(0.25, 1.0)).logits.tolist() == [[-1.5, -0.5]]  # sum_k w_k z_k
    concat = ConcatHead(2, 2, 1)
    with torch.no_grad():
        concat.classifier.weight.copy_(torch.tensor([[1.0, 2.0, 3.0, 4.0]]))
        concat.classifier.bias.fill_(0.5)
    assert concat(f).logits.item() == 1 + 6 + 3 + 4 + 0.5
    assert concat(f, weights=(2.0, 0.0)).logits.item() == 2 * (1 + 6) + 0.5


def test_default_step_sums_a_plain_loss_over_the_experts() -> None:
    model = _generic(num_experts=3, split_at="layer2").train()
    x, y = images(32), labels()
    twin = copy.deepcopy(model)
    out = model.training_step([x], [y], F.cross_entropy, EpochInfo(0, 1), model)
    experts = twin(x, return_experts=True).experts
    assert_close(out.loss, sum(F.cross_entropy(experts[:, k], y) for k in range(3)))
    assert out.batch_size == 4 and out.logits.shape == (4, NUM_CLASSES)
    with pytest.raises(ValueError, match="one shared batch"):
        model.training_step([x, x], [y, y], F.cross_entropy, EpochInfo(0, 1), model)


# ---------------------------------------------------------------------------- compile, memory format, pickling
def test_compile_gives_one_graph_for_ride_training_and_inference(plugin_backbone: str) -> None:
    # The small plugin net keeps tracing quick; the CIFAR ResNet traces the same way (benchmarks).
    model = _ride(plugin_backbone, reduce_dimension=False).train()
    x = images(16)
    explanation = torch._dynamo.explain(model)(x, return_experts=True)
    assert (explanation.graph_count, explanation.graph_break_count) == (1, 0), explanation.break_reasons
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(model.eval())(x)
    assert (explanation.graph_count, explanation.graph_break_count) == (1, 0), explanation.break_reasons
    torch._dynamo.reset()


def test_compile_gives_one_graph_for_bbn_through_the_generic_wrapper(plugin_backbone: str) -> None:
    _, model = _bbn_pair(plugin_backbone)
    model.train()
    weights = (torch.tensor(1.4), torch.tensor(0.6))
    explanation = torch._dynamo.explain(model)(images(16, seed=4), images(16, seed=5), weights=weights)
    assert (explanation.graph_count, explanation.graph_break_count) == (1, 0), explanation.break_reasons
    torch._dynamo.reset()


def test_channels_last_is_kept_through_ride() -> None:
    model = _ride().to(memory_format=torch.channels_last).train()
    seen: list[bool] = []
    handles = [m.register_forward_pre_hook(lambda mod, inputs: seen.append(
        inputs[0].is_contiguous(memory_format=torch.channels_last)))
        for m in model.modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d))]
    try:
        out = model.training_step([images(32).to(memory_format=torch.channels_last)], [labels()],
                                  F.cross_entropy, EpochInfo(0, 1), model)
        out.loss.backward()
    finally:
        for handle in handles:
            handle.remove()
    layers = sum(isinstance(m, (nn.Conv2d, nn.BatchNorm2d)) for m in model.modules())
    assert len(seen) == layers  # every layer once: the trunk once, each expert's copy once
    assert all(seen), f"{seen.count(False)} of {len(seen)} layer inputs lost channels_last"


def test_pickle_and_torch_save_keep_a_working_model() -> None:
    _, model = _bbn_pair("resnet20_cifar")
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    x_c, x_r = images(32, seed=4), images(32, seed=5)
    weights = (1.2, 0.8)
    expected = copy.deepcopy(model).train()(x_c, x_r, weights=weights)
    for restored in (pickle.loads(pickle.dumps(model)), torch.load(buffer, weights_only=False)):
        restored.train()
        logits = restored(x_c, x_r, weights=weights)
        assert_close(logits, expected)
        logits.sum().backward()
        # the restored views train the restored weights, not the original's
        assert restored.backbone.layer3[2].experts[1].conv1.weight.grad is not None
        assert model.backbone.layer3[2].experts[1].conv1.weight.grad is None


@pytest.mark.parametrize("name, size", [("resnet20_cifar", 32), ("resnet18", 32)])
def test_gradient_checkpointing_gives_the_same_ride_step(name: str, size: int) -> None:
    # Both checkpoint their stages with timm's checkpoint_seq(..., flatten=True), through the containers.
    model = _ride(name).double().train()
    checkpointed = copy.deepcopy(model)
    checkpointed.set_grad_checkpointing(True)
    x, y = images(size).double(), labels()
    losses = []
    for net in (model, checkpointed):
        out = net.training_step([x], [y], F.cross_entropy, EpochInfo(0, 1), net)
        out.loss.backward()
        losses.append(out.loss)
    assert_close(losses[0], losses[1], rtol=1e-9, atol=1e-10)
    for (key, a), b in zip(model.named_parameters(), checkpointed.parameters()):
        assert_close(a.grad, b.grad, rtol=1e-9, atol=1e-10, msg=key)
