"""The generic Registry, the five registry instances and the builtin table.

Behaviour is tested on fresh :class:`Registry` objects so that the global
registries are never changed; the global ones are checked read-only
(names, sources, summaries, the builtin table).
"""

from __future__ import annotations

import functools
import importlib
import subprocess
import sys

import pytest

import lttoolkit
from lttoolkit.errors import DuplicateComponentError, LTToolkitError, UnknownComponentError, UnknownOptionError
from lttoolkit.registry import (
    ALL_REGISTRIES,
    BACKBONES,
    BUILTIN,
    LOSSES,
    METHODS,
    SAMPLERS,
    SCHEDULES,
    Registry,
    registration_source,
)
from lttoolkit.registry._builtins import BUILTINS

KINDS = ["samplers", "losses", "schedules", "backbones", "methods"]
COMPONENT_MODULES = [f"lttoolkit.{kind}" for kind in KINDS]
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
    assert [SAMPLERS, LOSSES, SCHEDULES, BACKBONES, METHODS] == list(ALL_REGISTRIES.values())
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
    # What every builtin module does: the decorator registers the declared object.
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

    registry = Registry("widgets", fallback=fallback)
    registry.register(_spinner, name="spinner")
    assert registry.get("spinner") is _spinner
    assert calls == []
    assert registry.build("auto_x") == "made auto_x"
    with pytest.raises(UnknownComponentError, match="timm model name is accepted"):
        registry.get("nothing")
    assert calls == ["auto_x", "nothing"]


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
    with pytest.raises(UnknownOptionError, match="'type' key"):
        widgets.build({"spokes": 3})
    with pytest.raises(TypeError, match="name or a"):
        widgets.build(42)  # type: ignore[arg-type]
    with pytest.raises(UnknownComponentError):
        widgets.build({"type": "wheeel"})


def test_build_a_real_builtin():
    schedule = SCHEDULES.build({"type": "constant", "value": 0.25})
    assert schedule(3, 10) == 0.25
    assert SCHEDULES.build("parabolic")(5, 10) == pytest.approx(0.75)
    with pytest.raises(UnknownOptionError, match="valid options are: value"):
        SCHEDULES.build("constant", valeu=0.3)


# ---------------------------------------------------------------- the builtin table


@pytest.fixture(scope="module")
def imported_component_modules() -> list[str]:
    # Import failures are a finding in their own right: let them raise here.
    for module in COMPONENT_MODULES:
        importlib.import_module(module)
    return COMPONENT_MODULES


@pytest.mark.parametrize(("kind", "name", "target", "summary"), BUILTIN_ROWS, ids=[f"{r[0]}:{r[1]}" for r in BUILTIN_ROWS])
def test_builtin_table_matches_the_modules(kind, name, target, summary, imported_component_modules):
    module_name, _, attr = target.partition(":")
    obj = getattr(importlib.import_module(module_name), attr)
    registry = ALL_REGISTRIES[kind]
    entry = registry.entry(name)
    # The module's decorator registered this very object under this name...
    assert entry.obj is obj, f"{target} is not what {kind}:{name!r} holds; check the decorator's name"
    assert registry.get(name) is obj
    # ...and it lives where the table says (no re-export under another path).
    assert f"{obj.__module__}:{obj.__qualname__}" == target
    assert entry.source == BUILTIN and entry.target == target
    assert summary.strip() and "\n" not in summary
    assert entry.summary == summary


@pytest.mark.parametrize("kind", KINDS)
def test_no_builtin_registration_is_missing_from_the_table(kind, imported_component_modules):
    declared = {name for name, _, _ in BUILTINS[kind]}
    registered_by_lttoolkit = {
        entry.name
        for entry in ALL_REGISTRIES[kind].entries()
        if entry.source == BUILTIN
        and entry.loaded
        and str(getattr(entry.obj, "__module__", "")).startswith("lttoolkit.")
    }
    missing = sorted(registered_by_lttoolkit - declared)
    assert not missing, f"add {missing} to lttoolkit/registry/_builtins.py so they are listed without importing"
    assert {e.name for e in ALL_REGISTRIES[kind].entries() if e.target is not None and e.source == BUILTIN} == declared


def test_builtin_names_are_unique_within_each_kind():
    for kind, rows in BUILTINS.items():
        names = [name for name, _, _ in rows]
        assert len(names) == len(set(names)), kind


def test_bbn_paper_components_are_builtins():
    # Zhou et al. (CVPR 2020): reversed sampler, parabolic alpha, ResNet-32 on CIFAR.
    assert "reversed" in SAMPLERS and "parabolic" in SCHEDULES and "resnet32_cifar" in BACKBONES
    assert "bbn" in METHODS and "cross_entropy" in LOSSES


def test_timm_sees_our_backbones_once_lttoolkit_is_imported():
    # Fresh process: the import hook must fire when timm is imported after lttoolkit.
    code = (
        "import sys, lttoolkit\n"
        "assert 'timm' not in sys.modules\n"
        "import timm\n"
        "print(timm.is_model('resnet32_cifar'), timm.is_model('resnet110_cifar'))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "True"]
