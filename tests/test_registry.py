"""The generic Registry, the five registry instances and the builtin table.

Behaviour is tested on fresh :class:`Registry` objects so that the global
registries are never changed; the global ones are checked read-only
(names, sources, summaries, the builtin table).
"""

from __future__ import annotations

import ast
import functools
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import lttoolkit
from lttoolkit.errors import (
    ComponentSpecError,
    DuplicateComponentError,
    LTToolkitError,
    UnknownComponentError,
    UnknownOptionError,
)
from lttoolkit.registry import (
    ALL_REGISTRIES,
    BACKBONES,
    DATASETS,
    BUILTIN,
    LOSSES,
    METHODS,
    SAMPLERS,
    SCHEDULES,
    Registry,
    registration_source,
)
from lttoolkit.registry._builtins import BUILTINS

KINDS = ["samplers", "losses", "schedules", "backbones", "methods", "datasets"]
BUILTIN_ROWS = [(kind, name, target, summary) for kind, rows in BUILTINS.items() for name, target, summary in rows]


@pytest.fixture
def widgets() -> Registry:
    return Registry("widgets")


def _spinner(speed: int = 1, *, clockwise: bool = True) -> tuple[str, int, bool]:
    """A spinning widget.

    More text that is not part of the summary.
    """
    return ("spinner", speed, clockwise)


class Wheel:
    """A wheel with spokes."""

    def __init__(self, spokes: int = 12, rim: str = "steel") -> None:
        self.spokes = spokes
        self.rim = rim


# ---------------------------------------------------------------- the instances


def test_one_registry_per_kind():
    assert list(ALL_REGISTRIES) == KINDS
    assert [SAMPLERS, LOSSES, SCHEDULES, BACKBONES, METHODS, DATASETS] == list(ALL_REGISTRIES.values())
    for kind, registry in ALL_REGISTRIES.items():
        assert type(registry) is Registry
        assert registry.kind == kind
        assert registry.group == f"lttoolkit.{kind}"


def test_public_api_exports_the_same_objects():
    assert lttoolkit.ALL_REGISTRIES is ALL_REGISTRIES
    assert lttoolkit.SAMPLERS is SAMPLERS and lttoolkit.LOSSES is LOSSES and lttoolkit.SCHEDULES is SCHEDULES
    assert lttoolkit.BACKBONES is BACKBONES and lttoolkit.METHODS is METHODS
    assert lttoolkit.Registry is Registry
    for name in lttoolkit.__all__:
        assert hasattr(lttoolkit, name), name


# ---------------------------------------------------------------- registration


def test_register_as_decorator_keeps_the_object_and_defaults_to_its_name(widgets):
    returned = widgets.register()(_spinner)
    assert returned is _spinner
    assert widgets.list() == ["_spinner"]
    assert widgets.get("_spinner") is _spinner


def test_register_with_name_by_decorator_and_by_call(widgets):
    @widgets.register(name="wheel")
    class Decorated(Wheel):
        pass

    assert widgets.register(_spinner, name="spinner") is _spinner
    assert widgets.get("wheel") is Decorated
    assert widgets.get("spinner") is _spinner
    assert widgets.list() == ["spinner", "wheel"]


def test_duplicate_name_raises_naming_the_name_and_the_fix(widgets):
    widgets.register(_spinner, name="spinner")
    with pytest.raises(DuplicateComponentError, match=r"'spinner'.*force=True"):
        widgets.register(Wheel, name="spinner")
    assert widgets.get("spinner") is _spinner  # the first one is untouched


def test_duplicate_error_is_a_value_error_and_an_lttoolkit_error():
    assert issubclass(DuplicateComponentError, ValueError)
    assert issubclass(DuplicateComponentError, LTToolkitError)


def test_force_replaces(widgets):
    widgets.register(_spinner, name="spinner")
    widgets.register(Wheel, name="spinner", force=True)
    assert widgets.get("spinner") is Wheel
    assert widgets.entry("spinner").summary == "A wheel with spokes."


def test_registering_the_same_object_again_is_a_no_op(widgets):
    widgets.register(_spinner, name="spinner", summary="first summary")
    assert widgets.register(_spinner, name="spinner") is _spinner
    assert len(widgets) == 1
    assert widgets.entry("spinner").summary == "first summary"


def test_object_without_name_needs_one(widgets):
    partial = functools.partial(_spinner, speed=2)
    with pytest.raises(ValueError, match="name="):
        widgets.register(partial)
    widgets.register(partial, name="fast_spinner")
    assert widgets.build("fast_spinner") == ("spinner", 2, True)


def test_object_without_qualname_clashing_with_a_lazy_entry_raises_duplicate(widgets):
    widgets.register_lazy("spinner", "somewhere:spinner", "declared")
    with pytest.raises(DuplicateComponentError):
        widgets.register(functools.partial(_spinner), name="spinner")


def test_register_lazy_imports_nothing_until_get(widgets):
    widgets.register_lazy("sqrt", "math:sqrt", "Square root.")
    entry = widgets.entry("sqrt")
    assert not entry.loaded and entry.source == BUILTIN and entry.summary == "Square root."
    import math

    assert widgets.get("sqrt") is math.sqrt
    assert widgets.entry("sqrt").loaded
    with pytest.raises(DuplicateComponentError):
        widgets.register_lazy("sqrt", "math:floor", "again")


def test_lazy_entry_is_filled_by_its_modules_own_decorator(widgets):
    # What a plugin module declared as an entry point may do: its decorator registers the declared object.
    widgets.register_lazy("wheel", f"{Wheel.__module__}:{Wheel.__qualname__}", "declared summary")
    assert widgets.register(Wheel, name="wheel") is Wheel
    entry = widgets.entry("wheel")
    assert entry.obj is Wheel and entry.source == BUILTIN and entry.summary == "declared summary"
    assert len(widgets) == 1


def test_decorator_with_a_different_object_than_the_lazy_target_raises(widgets):
    widgets.register_lazy("wheel", f"{Wheel.__module__}:{Wheel.__qualname__}", "declared summary")
    with pytest.raises(DuplicateComponentError):
        widgets.register(_spinner, name="wheel")


def test_unregister(widgets):
    widgets.register(_spinner, name="spinner")
    assert widgets.unregister("spinner").obj is _spinner
    assert "spinner" not in widgets
    with pytest.raises(KeyError):
        widgets.unregister("spinner")


def test_registration_source_is_recorded_and_restored(widgets):
    with registration_source("acme-widgets 2.0"):
        widgets.register(_spinner, name="spinner")
    widgets.register(Wheel, name="wheel")
    assert widgets.entry("spinner").source == "acme-widgets 2.0"
    assert widgets.entry("spinner").is_plugin
    assert widgets.entry("wheel").source == BUILTIN
    assert not widgets.entry("wheel").is_plugin


def test_summary_is_the_first_docstring_line_or_the_given_one(widgets):
    widgets.register(_spinner, name="spinner")
    widgets.register(Wheel, name="wheel", summary="Round.")
    widgets.register(lambda: None, name="anonymous")
    assert widgets.entry("spinner").summary == "A spinning widget."
    assert widgets.entry("wheel").summary == "Round."
    assert widgets.entry("anonymous").summary == ""


# ---------------------------------------------------------------- lookup


def test_unknown_name_suggests_the_closest_and_names_the_registry():
    with pytest.raises(UnknownComponentError) as info:
        SAMPLERS.get("revresed")
    message = str(info.value)
    assert "samplers registry" in message
    assert "Did you mean 'reversed'" in message
    assert "lttk list-components samplers" in message
    assert not message.startswith(("'", '"'))  # not KeyError's quoted repr


def test_unknown_component_error_is_a_key_error():
    assert issubclass(UnknownComponentError, KeyError)
    with pytest.raises(KeyError):
        LOSSES.get("focl")
    with pytest.raises(UnknownComponentError, match="'focal'"):
        LOSSES.build("focl")


def test_unknown_name_without_close_match_lists_what_exists(widgets):
    widgets.register(_spinner, name="spinner")
    with pytest.raises(UnknownComponentError) as info:
        widgets.get("zzzzzz")
    assert "Did you mean" not in str(info.value)
    assert "Available: spinner" in str(info.value)
    with pytest.raises(UnknownComponentError):
        widgets.entry("zzzzzz")


def test_fallback_is_consulted_only_for_unknown_names():
    calls = []

    def fallback(name):
        calls.append(name)
        return (lambda: f"made {name}") if name.startswith("auto_") else None

    registry = Registry("widgets", fallback=fallback, fallback_label="any name starting auto_ is accepted too")
    registry.register(_spinner, name="spinner")
    assert registry.get("spinner") is _spinner
    assert calls == []
    assert registry.build("auto_x") == "made auto_x"
    with pytest.raises(UnknownComponentError, match="any name starting auto_ is accepted too"):
        registry.get("nothing")
    assert calls == ["auto_x", "nothing"]


def test_a_fallback_and_a_validator_given_as_targets_are_imported_on_first_use(widgets):
    # What the backbone registry is given: "module:attr" strings, so the registry imports no family.
    registry = Registry("widgets", fallback=f"{__name__}:_auto_fallback",
                        fallback_names=f"{__name__}:_auto_names")
    assert registry.build("auto_y") == "made auto_y"
    with pytest.raises(UnknownComponentError, match="Did you mean 'auto_one'"):
        registry.get("auto_onr")
    with pytest.raises(ModuleNotFoundError):
        Registry("widgets", fallback="no_such_module_xyz:f").get("anything")


def _auto_fallback(name):
    return (lambda: f"made {name}") if name.startswith("auto_y") else None


def _auto_names():
    return ["auto_one", "auto_two"]


def test_a_plugin_component_is_checked_by_the_validator_its_registry_was_given(widgets):
    from lttoolkit.errors import ComponentContractError

    seen = []

    def validate(component, *, who, options):
        seen.append((component, who, options))
        if component == "bad":
            raise ComponentContractError(f"{who} is bad")

    registry = Registry("widgets", validate=validate)
    registry.register(lambda flavour="good": flavour, name="builtin_one")
    with registration_source("my-dist 1.0"):
        registry.register(lambda flavour="good": flavour, name="plugin_one")
    assert registry.build("builtin_one", flavour="bad") == "bad" and seen == []  # builtins: the suite checks them
    assert registry.build("plugin_one") == "good"
    assert seen == [("good", "widget 'plugin_one' from my-dist 1.0", {})]
    with pytest.raises(ComponentContractError, match="widget 'plugin_one' from my-dist 1.0 is bad"):
        registry.build("plugin_one", flavour="bad")


def test_contains_len_iter_repr(widgets):
    widgets.register(_spinner, name="spinner")
    widgets.register(Wheel, name="wheel")
    assert "spinner" in widgets and "nope" not in widgets and 3 not in widgets
    assert len(widgets) == 2
    assert list(widgets) == ["spinner", "wheel"]
    assert repr(widgets) == "Registry('widgets', 2 entries)"


# ---------------------------------------------------------------- listing


def test_list_is_naturally_sorted(widgets):
    for name in ["resnet110_cifar", "resnet20_cifar", "resnet56_cifar", "Resnet32_cifar", "resnet9"]:
        widgets.register(functools.partial(_spinner), name=name)
    assert widgets.list() == ["resnet9", "resnet20_cifar", "Resnet32_cifar", "resnet56_cifar", "resnet110_cifar"]


def test_list_wildcards(widgets):
    for name in ["alpha1", "alpha2", "alpha10", "beta", "gamma_a"]:
        widgets.register(functools.partial(_spinner), name=name)
    assert widgets.list("alpha*") == ["alpha1", "alpha2", "alpha10"]
    assert widgets.list("alpha?") == ["alpha1", "alpha2"]
    assert widgets.list("[bg]*") == ["beta", "gamma_a"]
    assert widgets.list(["beta", "*10"]) == ["alpha10", "beta"]
    assert widgets.list("ALPHA*") == []  # case-sensitive, like registry names
    assert widgets.list("nothing*") == []


def test_builtin_backbones_sort_naturally():
    assert BACKBONES.list("resnet*_cifar") == [f"resnet{d}_cifar" for d in (20, 32, 44, 56, 110)]
    assert SCHEDULES.list("parabolic*") == ["parabolic", "parabolic_increment"]


@pytest.mark.parametrize(("kind", "name"), [(kind, name) for kind, name, _, _ in BUILTIN_ROWS])
def test_every_listed_builtin_has_source_and_one_line_summary(kind, name):
    registry = ALL_REGISTRIES[kind]
    assert name in registry.list()
    entry = registry.entry(name)
    assert entry.kind == kind
    assert entry.source == BUILTIN
    assert entry.status == "ok"
    assert entry.summary.strip() and "\n" not in entry.summary


# ---------------------------------------------------------------- building


def test_build_from_name_and_options(widgets):
    widgets.register(_spinner, name="spinner")
    widgets.register(Wheel, name="wheel")
    assert widgets.build("spinner") == ("spinner", 1, True)
    assert widgets.build("spinner", speed=4, clockwise=False) == ("spinner", 4, False)
    wheel = widgets.build("wheel", spokes=36)
    assert isinstance(wheel, Wheel) and (wheel.spokes, wheel.rim) == (36, "steel")


def test_build_from_type_dict_and_keyword_overrides(widgets):
    widgets.register(Wheel, name="wheel")
    spec = {"type": "wheel", "spokes": 24, "rim": "carbon"}
    wheel = widgets.build(spec)
    assert (wheel.spokes, wheel.rim) == (24, "carbon")
    assert widgets.build(spec, rim="alloy").rim == "alloy"
    assert spec == {"type": "wheel", "spokes": 24, "rim": "carbon"}  # not mutated


def test_unknown_option_lists_the_valid_ones(widgets):
    widgets.register(Wheel, name="wheel")
    with pytest.raises(UnknownOptionError) as info:
        widgets.build("wheel", spoke=3)
    message = str(info.value)
    assert "'spoke' (did you mean 'spokes'?)" in message
    assert "valid options are: spokes, rim" in message
    assert "'wheel'" in message
    with pytest.raises(UnknownOptionError, match="'colour'"):
        widgets.build({"type": "wheel", "colour": "red"})


def test_unknown_option_error_is_a_type_error():
    assert issubclass(UnknownOptionError, TypeError)


def test_var_keyword_factories_accept_anything(widgets):
    widgets.register(lambda **kw: kw, name="anything")
    assert widgets.build("anything", a=1, b=2) == {"a": 1, "b": 2}


def test_bad_specs(widgets):
    widgets.register(Wheel, name="wheel")
    # One parser, one error (a ConfigError and a TypeError), whoever reads the spec.
    with pytest.raises(ComponentSpecError, match="a widget given as a dict needs a 'type' key.*got keys \\['spokes'\\]"):
        widgets.build({"spokes": 3})
    with pytest.raises(ComponentSpecError, match="a widget must be a name or a"):
        widgets.build(42)  # type: ignore[arg-type]
    with pytest.raises(ComponentSpecError, match="a widget name is empty"):
        widgets.build("")
    with pytest.raises(ComponentSpecError, match="a backbone given as a dict needs a 'type' key"):
        lttoolkit.ComponentSpec.parse({"spokes": 3}, kind="backbone")
    with pytest.raises(ComponentSpecError, match="a backbone given as a dict needs a 'type' key"):
        lttoolkit.build("ce", backbone={"num_classes": 3})
    assert issubclass(ComponentSpecError, TypeError) and issubclass(ComponentSpecError, lttoolkit.errors.ConfigError)
    with pytest.raises(UnknownComponentError):
        widgets.build({"type": "wheeel"})


def test_build_a_real_builtin():
    schedule = SCHEDULES.build({"type": "constant", "value": 0.25})
    assert schedule(3, 10) == 0.25
    assert SCHEDULES.build("parabolic")(5, 10) == pytest.approx(0.75)
    with pytest.raises(UnknownOptionError, match="valid options are: value"):
        SCHEDULES.build("constant", valeu=0.3)


# ---------------------------------------------------------------- the builtin table


@pytest.mark.parametrize(("kind", "name", "target", "summary"), BUILTIN_ROWS, ids=[f"{r[0]}:{r[1]}" for r in BUILTIN_ROWS])
def test_every_builtin_table_entry_resolves_to_a_real_object(kind, name, target, summary):
    module_name, _, attr = target.partition(":")
    obj = getattr(importlib.import_module(module_name), attr)
    registry = ALL_REGISTRIES[kind]
    assert callable(obj), f"{target} ({kind}:{name!r}) is not a factory"
    assert registry.get(name) is obj
    assert registry.entry(name).obj is obj
    # It lives where the table says (no re-export under another path).
    assert f"{obj.__module__}:{obj.__qualname__}" == target
    entry = registry.entry(name)
    assert entry.source == BUILTIN and entry.target == target
    assert summary.strip() and "\n" not in summary
    assert entry.summary == summary


def _registering_decorators(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)):
            for deco in node.decorator_list:
                call = deco.func if isinstance(deco, ast.Call) else deco
                if isinstance(call, ast.Attribute) and call.attr == "register":
                    found.append(f"{path.name}:{node.lineno} {node.name}")
    return found


def test_builtins_are_declared_once_in_the_table_not_by_a_decorator():
    # One declaration per builtin: the table in lttoolkit/registry/_builtins.py.
    package = Path(lttoolkit.__file__).parent
    found = [hit for path in sorted(package.rglob("*.py")) for hit in _registering_decorators(path)]
    assert not found, f"declare these in lttoolkit/registry/_builtins.py instead of decorating them: {found}"


def test_the_decorator_finder_finds_one(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("@SAMPLERS.register(name='x')\nclass X: ...\n")
    assert _registering_decorators(module) == ["m.py:2 X"]


def test_builtin_names_are_unique_within_each_kind():
    for kind, rows in BUILTINS.items():
        names = [name for name, _, _ in rows]
        assert len(names) == len(set(names)), kind


def test_bbn_paper_components_are_builtins():
    # Zhou et al. (CVPR 2020): reversed sampler, parabolic alpha, ResNet-32 on CIFAR.
    assert "reversed" in SAMPLERS and "parabolic" in SCHEDULES and "resnet32_cifar" in BACKBONES
    assert "bbn" in METHODS and "cross_entropy" in LOSSES


def test_timm_sees_our_backbones_once_lttoolkit_backbones_is_imported():
    # Fresh process, no import hook: importing lttoolkit.backbones registers them into timm.
    code = (
        "import sys, lttoolkit\n"
        "assert 'timm' not in sys.modules\n"
        "import lttoolkit.backbones, timm\n"
        "print(timm.is_model('resnet32_cifar'), timm.is_model('resnet110_cifar'))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "True"]
