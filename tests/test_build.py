"""``build()`` and the recipe it attaches (methods: BBN, Zhou et al., CVPR 2020, and the CE baseline)."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from lttoolkit import build
from lttoolkit.errors import PretrainedWeightsError, UnknownComponentError, UnknownOptionError
from lttoolkit.methods import BilateralWrapper, SingleBranchModel
from lttoolkit.methods.protocol import EpochInfo
from lttoolkit.recipe import ComponentSpec, Recipe
from lttoolkit.registry import METHODS

SMALL = {"backbone": "resnet20_cifar", "num_classes": 10}


def shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}


# ---------------------------------------------------------------------------- every method
@pytest.mark.parametrize("method", METHODS.list())
def test_every_method_builds_a_model_with_a_recipe(method: str) -> None:
    torch.manual_seed(0)
    model = build(method, **SMALL)
    recipe = model.recipe
    assert recipe.method == method
    assert recipe.backbone == ComponentSpec(type="resnet20_cifar")
    assert recipe.num_classes == 10 and recipe.pretrained is False
    assert list(recipe.samplers) == list(model.stream_names)
    assert model.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 10)

    restored = Recipe.model_validate(json.loads(json.dumps(recipe.model_dump(mode="json"))))
    assert restored == recipe
    rebuilt = restored.rebuild()
    assert type(rebuilt) is type(model)
    assert shapes(rebuilt) == shapes(model)


# ---------------------------------------------------------------------------- bbn
def test_bbn_defaults() -> None:
    model = build("bbn", backbone="resnet50")
    assert isinstance(model, BilateralWrapper)
    assert model.classifier.out_features == 1000
    assert model.classifier.in_features == 2 * 2048
    recipe = model.recipe
    assert (recipe.num_classes, recipe.pretrained, recipe.in_chans) == (1000, False, 3)
    assert recipe.options["num_classes"] == 1000 and recipe.options["pretrained"] is False
    # BBN's own pieces (Zhou et al. 2020): instance + reversed sampling, CE, parabolic decay.
    assert recipe.samplers == {
        "conventional": ComponentSpec(type="instance"),
        "rebalancing": ComponentSpec(type="reversed"),
    }
    assert recipe.loss == ComponentSpec(type="cross_entropy")
    assert recipe.schedule == ComponentSpec(type="parabolic")
    assert model.training_kwargs(2, 4) == {"alpha": pytest.approx(1 - (2 / 4) ** 2)}


def test_bbn_recipe_carries_the_pieces() -> None:
    model = build(
        "bbn", backbone="resnet32_cifar", num_classes=10, sampler="reversed", loss="cross_entropy", schedule="cosine"
    )
    recipe = model.recipe
    assert recipe.method == "bbn"
    assert recipe.backbone == ComponentSpec(type="resnet32_cifar")
    assert recipe.num_classes == 10 and model.classifier.out_features == 10
    assert model.classifier.in_features == 2 * 64
    assert recipe.samplers["rebalancing"] == ComponentSpec(type="reversed")
    assert list(recipe.samplers) == ["conventional", "rebalancing"] == list(model.stream_names)
    assert recipe.loss == ComponentSpec(type="cross_entropy")
    assert recipe.schedule == ComponentSpec(type="cosine")
    # The recipe's schedule is the one the model trains with: cos(pi/2 * T/T_max).
    assert model.training_kwargs(1, 2)["alpha"] == pytest.approx(math.cos(math.pi / 4))


def test_dict_specs_carry_their_options() -> None:
    model = build(
        "bbn",
        backbone={"type": "resnet20_cifar", "widths": [8, 16, 32]},
        num_classes=10,
        loss={"type": "focal", "gamma": 1.0},
        schedule={"type": "step", "switch_epoch": 3},
        conventional_sampler={"type": "square_root"},
    )
    recipe = model.recipe
    assert recipe.loss == ComponentSpec(type="focal", options={"gamma": 1.0})
    assert recipe.backbone == ComponentSpec(type="resnet20_cifar", options={"widths": [8, 16, 32]})
    assert recipe.samplers["conventional"] == ComponentSpec(type="square_root")
    assert model.classifier.in_features == 2 * 32  # the backbone got its option
    assert [model.training_kwargs(epoch, 10)["alpha"] for epoch in (2, 3)] == [1.0, 0.0]  # so did the schedule

    restored = Recipe.model_validate(json.loads(json.dumps(recipe.model_dump(mode="json"))))
    assert restored == recipe
    assert shapes(restored.rebuild()) == shapes(model)
    assert restored.rebuild(num_classes=3).classifier.out_features == 3


def test_component_spec_objects_are_stored_as_plain_data() -> None:
    model = build(
        "bbn", backbone=ComponentSpec(type="resnet20_cifar", options={"widths": [8, 16, 32]}), num_classes=10,
        loss=ComponentSpec(type="focal", options={"gamma": 1.0}),
    )
    assert model.recipe.options["backbone"] == {"type": "resnet20_cifar", "widths": [8, 16, 32]}
    restored = Recipe.model_validate(json.loads(json.dumps(model.recipe.model_dump(mode="json"))))
    assert shapes(restored.rebuild()) == shapes(model)


def test_method_given_as_a_dict() -> None:
    model = build({"type": "bbn", **SMALL, "schedule": "linear"})
    assert isinstance(model, BilateralWrapper) and model.recipe.schedule == ComponentSpec(type="linear")


def test_recipe_rebuild_gives_the_same_architecture_with_fresh_weights() -> None:
    torch.manual_seed(0)
    model = build("bbn", **SMALL)
    rebuilt = model.recipe.rebuild()
    assert shapes(rebuilt) == shapes(model)
    assert rebuilt.split_at == model.split_at
    assert not torch.equal(rebuilt.classifier.weight, model.classifier.weight)


def test_plugin_backbone(plugin_backbone: str) -> None:
    model = build("bbn", backbone=plugin_backbone, num_classes=3)
    assert model.recipe.backbone == ComponentSpec(type=plugin_backbone)
    assert model.classifier.in_features == 2 * 16
    assert model.eval()(torch.randn(2, 3, 16, 16)).shape == (2, 3)


# ---------------------------------------------------------------------------- ce
def test_ce_gives_logits() -> None:
    torch.manual_seed(0)
    model = build("ce", **SMALL)
    assert isinstance(model, SingleBranchModel)
    assert model.recipe.samplers == {"main": ComponentSpec(type="instance")}
    assert model.recipe.loss == ComponentSpec(type="cross_entropy") and model.recipe.schedule is None
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    logits = model.eval()(x)
    assert logits.shape == (4, 10)
    assert torch.equal(logits, model.backbone(x))
    out = model.training_step([x], [y], F.cross_entropy, EpochInfo(0, 1), model)  # the method protocol
    assert torch.equal(out.loss, F.cross_entropy(model.backbone(x), y)) and out.batch_size == 4
    groups = model.parameter_groups()
    assert {id(p) for p in groups["classifier"]} == {id(p) for p in model.backbone.fc.parameters()}
    assert len(groups["trunk"]) + len(groups["classifier"]) == len(list(model.parameters()))


# ---------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "options, registry, suggestion",
    [
        ({"sampler": "reversd"}, "samplers", "reversed"),
        ({"conventional_sampler": "instanse"}, "samplers", "instance"),
        ({"loss": "focall"}, "losses", "focal"),
        ({"loss": {"type": "focall", "gamma": 1.0}}, "losses", "focal"),
        ({"schedule": "parabolik"}, "schedules", "parabolic"),
        ({"backbone": "resnet32_cifr"}, "backbones", "resnet32_cifar"),
    ],
)
def test_unknown_piece_names_the_registry_and_suggests(options: dict, registry: str, suggestion: str) -> None:
    with pytest.raises(UnknownComponentError) as info:
        build("bbn", **{**SMALL, **options})
    assert isinstance(info.value, KeyError)
    message = str(info.value)
    assert f"{registry} registry" in message
    assert f"Did you mean {suggestion!r}" in message


@pytest.mark.parametrize("piece, registry", [("sampler", "samplers"), ("loss", "losses"), ("schedule", "schedules")])
def test_pieces_are_checked_before_the_backbone_is_built(piece: str, registry: str) -> None:
    # The backbone is unknown too: the piece's error must come first, before any weights are made.
    with pytest.raises(UnknownComponentError, match=f"in the {registry} registry"):
        build("bbn", backbone="no_such_backbone", **{piece: "no_such_piece"})


@pytest.mark.parametrize("method", ["bbm", {"type": "bbm"}])
def test_unknown_method(method: object) -> None:
    with pytest.raises(UnknownComponentError, match=r"methods registry\. Did you mean 'bbn'") as info:
        build(method, **SMALL)
    assert isinstance(info.value, KeyError)


def test_unknown_method_option_lists_the_valid_ones() -> None:
    with pytest.raises(UnknownOptionError, match="'bogus'") as info:
        build("bbn", **SMALL, bogus=1)
    assert isinstance(info.value, TypeError)
    valid = str(info.value).split("valid options are:")[1]
    for option in ("backbone", "num_classes", "pretrained", "sampler", "loss", "schedule", "split_at"):
        assert option in valid
    with pytest.raises(UnknownOptionError, match="'schedule'"):
        build("ce", **SMALL, schedule="cosine")  # the baseline has no alpha schedule


@pytest.mark.parametrize(
    "options, bad, close",
    [
        ({"loss": {"type": "focal", "gama": 2}}, "gama", "gamma"),
        ({"schedule": {"type": "step", "switch_epoc": 3}}, "switch_epoc", "switch_epoch"),
        ({"backbone": {"type": "resnet20_cifar", "drop_rat": 0.1}}, "drop_rat", "drop_rate"),
    ],
)
def test_unknown_piece_option_lists_the_valid_ones(options: dict, bad: str, close: str) -> None:
    with pytest.raises(UnknownOptionError, match=f"'{bad}' \\(did you mean '{close}'\\?\\)") as info:
        build("bbn", **{**SMALL, **options})
    assert close in str(info.value).split("valid options are:")[1]


def test_engine_supplied_option_is_refused() -> None:
    with pytest.raises(ValueError, match="class_counts.*set by the training engine"):
        build("bbn", **SMALL, loss={"type": "cross_entropy", "class_counts": [5, 1]})


def test_pretrained_without_weights_raises() -> None:
    with pytest.raises(PretrainedWeightsError, match="pretrained=False"):
        build("bbn", **SMALL, pretrained=True)


def test_pretrained_offline_raises_without_network(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    from huggingface_hub import constants

    # An empty cache and offline mode: the weights cannot come from anywhere.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(PretrainedWeightsError, match="'resnet18'.*pretrained=False"):
        build("bbn", backbone="resnet18", num_classes=10, pretrained=True)
