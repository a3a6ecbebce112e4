"""Plugin discovery (entry points), broken plugins, name clashes and ``load_plugin``.

Entry points are faked with real :class:`importlib.metadata.EntryPoint` objects
bound to a small stand-in distribution, and fed to fresh :class:`Registry`
instances, so the global registries stay untouched. The end-to-end tests put a
real ``*.dist-info`` folder on ``PYTHONPATH`` of a fresh interpreter: that is
what ``pip install`` leaves behind, minus the copying.
"""

from __future__ import annotations

import importlib
import json
import os
import random
import subprocess
import sys
import textwrap
import tomllib
import types
from dataclasses import dataclass
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Callable, Iterator

import pytest

import lttoolkit
from lttoolkit.errors import PluginLoadError, UnknownComponentError
from lttoolkit.registry import ALL_REGISTRIES, BUILTIN, DISABLE_ENV, SAMPLERS, SCHEDULES, Registry, _plugins
from lttoolkit.registry import iter_entry_points, load_plugin, plugins_disabled
from lttoolkit.registry._builtins import BUILTINS

GROUP = "lttoolkit.widgets"
HOLDER = "lttk_test_holder"  # a module through which plugin code reaches the test's registry


@dataclass(frozen=True)
class FakeDistribution:
    """What an entry point needs of its distribution: a name and a version."""

    name: str
    version: str


def entry_point(name: str, value: str, dist: str = "acme", version: str = "1.0", group: str = GROUP) -> EntryPoint:
    return EntryPoint(name, value, group)._for(FakeDistribution(dist, version))


@dataclass
class Installed:
    eps: list[EntryPoint]
    lookups: list[str]


@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch) -> Installed:
    """Pretend ``eps`` are the installed entry points; records every lookup."""
    state = Installed(eps=[], lookups=[])

    def fake_entry_points(*, group: str) -> list[EntryPoint]:
        state.lookups.append(group)
        return [ep for ep in state.eps if ep.group == group]

    monkeypatch.setattr(_plugins, "entry_points", fake_entry_points)
    monkeypatch.delenv(DISABLE_ENV, raising=False)
    return state


@pytest.fixture
def write_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str, str], str]]:
    """Write an importable module into a tmp dir on sys.path; forget it afterwards."""
    folder = tmp_path / "modules"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    written: list[str] = []

    def write(name: str, source: str) -> str:
        (folder / f"{name}.py").write_text(textwrap.dedent(source))
        importlib.invalidate_caches()
        written.append(name)
        return name

    yield write
    for name in written:
        sys.modules.pop(name, None)


@pytest.fixture
def holder(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """A module plugin code imports to reach the test's fresh registry (``REG``) and counters."""
    module = types.ModuleType(HOLDER)
    module.REG = Registry("widgets")
    module.IMPORTS = []
    monkeypatch.setitem(sys.modules, HOLDER, module)
    return module


@pytest.fixture
def restore_global_registries() -> Iterator[None]:
    """Remove whatever a test's load_plugin() added to the global registries."""
    before = {kind: set(registry.list()) for kind, registry in ALL_REGISTRIES.items()}
    yield
    for kind, registry in ALL_REGISTRIES.items():
        for name in set(registry.list()) - before[kind]:
            registry.unregister(name)


GOOD_MODULE = '''
def half(epoch=0, max_epochs=1):
    """Always one half."""
    return 0.5


class Doubler:
    """Doubles what it is given."""

    def __init__(self, factor=2):
        self.factor = factor
'''


# ---------------------------------------------------------------- discovery


TRIGGERS = {
    "list": lambda reg: reg.list(),
    "get": lambda reg: reg.get("local"),
    "contains": lambda reg: "local" in reg,
    "entry": lambda reg: reg.entry("local"),
    "len": lambda reg: len(reg),
    "entries": lambda reg: reg.entries(),
}


@pytest.mark.parametrize("trigger", list(TRIGGERS))
def test_discovery_is_lazy_and_runs_once(trigger, installed, write_module):
    module = write_module("lttk_fake_good", GOOD_MODULE)
    installed.eps.append(entry_point("half", f"{module}:half"))
    registry = Registry("widgets")
    registry.register(len, name="local")
    assert installed.lookups == []  # creating and registering does not look

    TRIGGERS[trigger](registry)
    assert installed.lookups == [GROUP]
    assert module not in sys.modules  # a plugin is known by name, imported on use

    assert registry.list() == ["half", "local"]
    assert registry.get("half")() == 0.5
    assert "half" in registry and len(registry) == 2
    assert installed.lookups == [GROUP]  # once


def test_plugin_entry_is_lazy_until_loaded(installed, write_module):
    module = write_module("lttk_fake_good", GOOD_MODULE)
    installed.eps.append(entry_point("doubler", f"{module}:Doubler", dist="acme-widgets", version="2.3.1"))
    registry = Registry("widgets")
    entry = registry.entry("doubler")
    assert (entry.source, entry.distribution, entry.target) == ("acme-widgets 2.3.1", "acme-widgets", f"{module}:Doubler")
    assert entry.is_plugin and not entry.loaded and entry.summary == "" and entry.status == "ok"

    (loaded,) = registry.entries(load="plugins")
    assert loaded.loaded and loaded.summary == "Doubles what it is given."
    assert registry.build({"type": "doubler", "factor": 3}).factor == 3


def test_iter_entry_points_sorts_by_name_then_distribution_and_deduplicates(installed):
    eps = [
        entry_point("b", "m:b", dist="zeta"),
        entry_point("a", "m:a2", dist="zeta"),
        entry_point("a", "m:a1", dist="alpha"),
        entry_point("c", "m:c", dist="alpha"),
    ]
    expected = [("a", "alpha"), ("a", "zeta"), ("b", "zeta"), ("c", "alpha")]
    rng = random.Random(0)
    for _ in range(4):
        shuffled = eps + [eps[0]]  # the same distribution seen twice on sys.path
        rng.shuffle(shuffled)
        installed.eps[:] = shuffled
        assert [(ep.name, ep.dist.name) for ep in iter_entry_points(GROUP)] == expected


def test_two_plugins_with_one_name_resolve_deterministically(installed, write_module):
    write_module("lttk_fake_zeta", "def make():\n    return 'zeta'\n")
    write_module("lttk_fake_alpha", "def make():\n    return 'alpha'\n")
    installed.eps[:] = [
        entry_point("maker", "lttk_fake_zeta:make", dist="zeta", version="9"),
        entry_point("maker", "lttk_fake_alpha:make", dist="alpha", version="1"),
    ]
    for order in (installed.eps[:], installed.eps[::-1]):
        installed.eps[:] = order
        registry = Registry("widgets")
        assert registry.build("maker") == "alpha"  # "alpha" sorts first: it keeps the name
        (loser,) = registry.shadowed
        assert (loser.source, loser.shadowed_by, loser.status) == ("zeta 9", "alpha 1", "shadowed")
        assert registry.build("zeta::maker") == "zeta"
        assert registry.build("alpha::maker") == "alpha"


@pytest.mark.parametrize(("value", "disabled"), [
    ("1", True), ("true", True), ("YES", True), (" on ", True),
    ("0", False), ("", False), ("no", False), ("false", False),
])
def test_plugins_disabled_values(value, disabled, monkeypatch):
    monkeypatch.setenv(DISABLE_ENV, value)
    assert plugins_disabled() is disabled


def test_disable_env_turns_discovery_off(installed, write_module, monkeypatch):
    module = write_module("lttk_fake_good", GOOD_MODULE)
    installed.eps.append(entry_point("half", f"{module}:half"))
    monkeypatch.setenv(DISABLE_ENV, "1")
    registry = Registry("widgets")
    registry.register(len, name="local")
    assert registry.list() == ["local"]
    assert installed.lookups == []
    with pytest.raises(UnknownComponentError):
        registry.get("half")


def test_a_failing_metadata_scan_does_not_break_the_registry(monkeypatch):
    def corrupt(*, group):
        raise ValueError("corrupt METADATA")

    monkeypatch.setattr(_plugins, "entry_points", corrupt)
    monkeypatch.delenv(DISABLE_ENV, raising=False)
    registry = Registry("widgets")
    registry.register(len, name="local")
    assert registry.list() == ["local"]
    assert registry.get("local") is len


def test_entry_point_value_with_extras_loads(installed, write_module):
    module = write_module("lttk_fake_good", GOOD_MODULE)
    installed.eps.append(entry_point("half", f"{module}:half [fast]"))
    assert Registry("widgets").get("half")() == 0.5


# ---------------------------------------------------------------- broken plugins


@pytest.fixture
def broken_setup(installed, write_module, holder) -> Registry:
    good = write_module("lttk_fake_good", GOOD_MODULE)
    bad = write_module("lttk_fake_bad", f"""
        import {HOLDER}
        {HOLDER}.IMPORTS.append(__name__)
        raise ImportError("needs libfoo >= 2")
    """)
    installed.eps[:] = [
        entry_point("half", f"{good}:half"),
        entry_point("bad", f"{bad}:Thing", dist="brokenco", version="0.3"),
        entry_point("ghost", "lttk_no_such_module_anywhere:Thing", dist="ghostco", version="1.0"),
        entry_point("no_attr", f"{good}:missing_attribute", dist="typoco", version="0.1"),
    ]
    registry = Registry("widgets")
    registry.register(len, name="local")
    return registry


def test_broken_plugins_are_listed_with_their_cause(broken_setup):
    entries = {e.name: e for e in broken_setup.entries(load="plugins")}
    assert list(entries) == ["bad", "ghost", "half", "local", "no_attr"]
    assert {name: e.status for name, e in entries.items()} == {
        "bad": "broken", "ghost": "broken", "half": "ok", "local": "ok", "no_attr": "broken",
    }
    assert entries["bad"].describe_error() == "ImportError: needs libfoo >= 2"
    assert entries["bad"].source == "brokenco 0.3"
    assert entries["ghost"].describe_error().startswith("ModuleNotFoundError:")
    assert "lttk_no_such_module_anywhere" in entries["ghost"].describe_error()
    assert entries["no_attr"].describe_error().startswith("AttributeError:")
    assert "missing_attribute" in entries["no_attr"].describe_error()
    assert entries["half"].summary == "Always one half."


def test_building_a_broken_plugin_names_the_distribution_and_the_cause(broken_setup, holder):
    with pytest.raises(PluginLoadError) as info:
        broken_setup.build("bad")
    message = str(info.value)
    assert "brokenco 0.3" in message and "lttk_fake_bad:Thing" in message
    assert "ImportError: needs libfoo >= 2" in message
    assert DISABLE_ENV in message  # how to get going anyway
    assert isinstance(info.value.__cause__, ImportError)
    assert str(info.value.__cause__) == "needs libfoo >= 2"
    assert isinstance(info.value, ImportError)  # callers may catch the builtin kind

    # Remembered: asking again fails the same way without importing again.
    with pytest.raises(PluginLoadError, match="needs libfoo"):
        broken_setup.get("bad")
    assert holder.IMPORTS == ["lttk_fake_bad"]
    assert broken_setup.entry("bad").status == "broken"


def test_other_components_keep_working_next_to_a_broken_plugin(broken_setup):
    with pytest.raises(PluginLoadError):
        broken_setup.get("ghost")
    assert broken_setup.build("half") == 0.5
    assert broken_setup.get("local") is len
    assert [e.name for e in broken_setup.entries(load="plugins") if e.status == "ok"] == ["half", "local"]


# ---------------------------------------------------------------- clashes


@pytest.fixture
def schedules_like() -> Registry:
    """A fresh registry declaring the real builtin schedules, lazily, as lttoolkit does."""
    registry = Registry("schedules")
    for name, target, summary in BUILTINS["schedules"]:
        registry.register_lazy(name, target, summary)
    return registry


def test_a_plugin_never_replaces_a_builtin(installed, write_module, schedules_like):
    module = write_module("lttk_fake_good", GOOD_MODULE)
    installed.eps.append(entry_point("parabolic", f"{module}:half", group="lttoolkit.schedules", dist="acme"))
    from lttoolkit.schedules.alpha import ParabolicDecay

    assert schedules_like.get("parabolic") is ParabolicDecay
    assert schedules_like.list("parabolic") == ["parabolic"]
    pair = schedules_like.entries("parabolic", shadowed=True, load="plugins")
    assert [(e.source, e.status, e.shadowed_by) for e in pair] == [
        ("acme 1.0", "shadowed", BUILTIN),
        (BUILTIN, "ok", None),
    ]
    assert [e.source for e in schedules_like.shadowed] == ["acme 1.0"]

    # Reachable by its qualified name.
    assert schedules_like.get("acme::parabolic")() == 0.5
    assert "acme::parabolic" in schedules_like
    assert schedules_like.entry("acme::parabolic").source == "acme 1.0"
    with pytest.raises(UnknownComponentError):
        schedules_like.get("nobody::parabolic")


def test_a_clashing_plugin_that_registers_by_decorator_still_loads(installed, write_module, holder):
    # A plugin that both declares entry points and uses the decorator, one of its
    # names clashing with a builtin: the clash must not break its other components.
    holder.REG.register(len, name="spin")
    module = write_module("lttk_fake_decorated", f'''
        from {HOLDER} import REG

        @REG.register(name="spin")
        def fancy_spin():
            """The plugin's spin."""
            return "plugin spin"

        @REG.register(name="wobble")
        def wobble():
            """Wobbles."""
            return "wobble"

        @REG.register(name="undeclared")
        def undeclared():
            return "undeclared"
    ''')
    installed.eps[:] = [
        entry_point("spin", f"{module}:fancy_spin", dist="fancyco", version="1.2"),
        entry_point("wobble", f"{module}:wobble", dist="fancyco", version="1.2"),
    ]
    registry = holder.REG
    assert registry.build("wobble") == "wobble"
    assert registry.get("spin") is len
    assert registry.build("fancyco::spin") == "plugin spin"
    assert all(e.status != "broken" for e in registry.entries(load="plugins", shadowed=True))
    # Names the module registers without an entry point are credited to its distribution.
    assert registry.entry("undeclared").source == "fancyco 1.2"


# ---------------------------------------------------------------- load_plugin


def test_load_plugin_registers_through_decorators(write_module, restore_global_registries):
    module = write_module("lttk_fake_local_plugin", '''
        from lttoolkit.registry import LOSSES, SCHEDULES

        @SCHEDULES.register(name="lttk_test_half")
        class Half:
            """alpha fixed at one half, from a local module."""

            def __call__(self, epoch, max_epochs):
                return 0.5

        import torch

        @LOSSES.register(name="lttk_test_loss")
        class LttkTestLoss(torch.nn.Module):
            """A loss that is only a test."""

            def __init__(self, class_counts):
                super().__init__()
                self.counts = tuple(class_counts)

            def forward(self, logits, targets):
                return logits.sum() * 0 + len(self.counts)
    ''')
    assert lttoolkit.load_plugin is load_plugin
    assert load_plugin(module) == ["losses:lttk_test_loss", "schedules:lttk_test_half"]
    entry = SCHEDULES.entry("lttk_test_half")
    assert entry.source == f"module {module}" and entry.is_plugin
    assert entry.summary == "alpha fixed at one half, from a local module."
    assert SCHEDULES.build("lttk_test_half")(3, 10) == 0.5
    assert ALL_REGISTRIES["losses"].build("lttk_test_loss", class_counts=[3, 1]).counts == (3, 1)
    assert load_plugin(module) == []  # already imported: nothing new


def test_load_plugin_failure_names_the_module_and_the_cause(write_module, restore_global_registries):
    module = write_module("lttk_fake_failing_plugin", "raise ValueError('bad plugin config')\n")
    with pytest.raises(PluginLoadError) as info:
        load_plugin(module)
    assert repr(module) in str(info.value)
    assert "ValueError: bad plugin config" in str(info.value)
    assert isinstance(info.value.__cause__, ValueError)

    with pytest.raises(PluginLoadError, match="lttk_no_such_plugin_module") as info:
        load_plugin("lttk_no_such_plugin_module")
    assert isinstance(info.value.__cause__, ModuleNotFoundError)


def test_load_plugin_cannot_replace_a_builtin(write_module, restore_global_registries):
    builtin_target = SAMPLERS.entry("reversed").target
    module = write_module("lttk_fake_clashing_plugin", '''
        from lttoolkit.registry import SAMPLERS

        @SAMPLERS.register(name="reversed")
        def reversed_again(labels):
            return None
    ''')
    with pytest.raises(PluginLoadError, match="DuplicateComponentError.*'reversed'"):
        load_plugin(module)
    entry = SAMPLERS.entry("reversed")
    assert (entry.source, entry.target) == (BUILTIN, builtin_target)


# ---------------------------------------------------------------- a real distribution


def _install_fake_distribution(site: Path, project: Path) -> None:
    """Do what pip does for a pure-Python project, minus building: copy the module and
    write ``<name>-<version>.dist-info`` with METADATA and entry_points.txt from pyproject."""
    meta = tomllib.loads((project / "pyproject.toml").read_text())["project"]
    name, version = meta["name"], meta["version"]
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = []
    for group, eps in meta.get("entry-points", {}).items():
        lines.append(f"[{group}]")
        lines.extend(f"{ep_name} = {value}" for ep_name, value in eps.items())
        lines.append("")
    (info / "entry_points.txt").write_text("\n".join(lines))
    for source in project.glob("*.py"):
        (site / source.name).write_text(source.read_text())


def _write_project(root: Path, name: str, version: str, schedules: dict[str, str], module: str, code: str) -> Path:
    project = root / name
    project.mkdir(parents=True)
    eps = "\n".join(f'{ep} = "{value}"' for ep, value in schedules.items())
    (project / "pyproject.toml").write_text(
        f'[project]\nname = "{name}"\nversion = "{version}"\n\n'
        f'[project.entry-points."lttoolkit.schedules"]\n{eps}\n'
    )
    (project / f"{module}.py").write_text(textwrap.dedent(code))
    return project


@pytest.fixture
def plugin_site(tmp_path: Path) -> Path:
    """A folder holding two 'installed' plugin distributions: a good one and a broken one."""
    site = tmp_path / "site-packages"
    site.mkdir()
    good = _write_project(
        tmp_path / "src", "lttk-half", "0.1",
        {"half": "lttk_half:Half", "parabolic": "lttk_half:Parabolic"},
        "lttk_half",
        '''
        """A plugin distribution adding alpha schedules."""
        from lttoolkit.registry import SCHEDULES


        @SCHEDULES.register(name="half")
        class Half:
            """Always one half."""

            def __call__(self, epoch, max_epochs):
                return 0.5


        @SCHEDULES.register(name="parabolic")  # clashes with the builtin on purpose
        class Parabolic:
            """A plugin's own parabola."""

            def __call__(self, epoch, max_epochs):
                return 0.25
        ''',
    )
    broken = _write_project(
        tmp_path / "src", "lttk-boom", "0.2", {"boom": "lttk_boom:Boom"}, "lttk_boom",
        'raise RuntimeError("boom at import")\n',
    )
    _install_fake_distribution(site, good)
    _install_fake_distribution(site, broken)
    return site


def _run(args: list[str], site: Path, **env_extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != DISABLE_ENV}
    env.update(PYTHONPATH=str(site), COLUMNS="200", **env_extra)
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=120)


def _schedule_rows(stdout: str) -> dict[tuple[str, str], dict]:
    rows = json.loads(stdout)["registries"]["schedules"]
    return {(row["name"], row["source"]): row for row in rows}


def test_installed_distribution_is_listed_with_its_version(plugin_site):
    done = _run(["-m", "lttoolkit", "list-components", "schedules", "--json"], plugin_site)
    assert done.returncode == 0, done.stderr
    rows = _schedule_rows(done.stdout)

    half = rows[("half", "lttk-half 0.1")]
    assert (half["status"], half["summary"]) == ("ok", "Always one half.")
    boom = rows[("boom", "lttk-boom 0.2")]
    assert boom["status"] == "broken" and boom["error"] == "RuntimeError: boom at import"
    clash = rows[("parabolic", "lttk-half 0.1")]
    assert (clash["status"], clash["shadowed_by"]) == ("shadowed", BUILTIN)
    for name, _, summary in BUILTINS["schedules"]:
        row = rows[(name, BUILTIN)]
        assert (row["status"], row["summary"]) == ("ok", summary)
    assert len(rows) == len(BUILTINS["schedules"]) + 3


def test_installed_distribution_is_hidden_when_plugins_are_disabled(plugin_site):
    done = _run(["-m", "lttoolkit", "list-components", "schedules", "--json"], plugin_site, **{DISABLE_ENV: "1"})
    assert done.returncode == 0, done.stderr
    assert set(_schedule_rows(done.stdout)) == {(name, BUILTIN) for name, _, _ in BUILTINS["schedules"]}


def test_installed_distribution_table_marks_the_broken_one(plugin_site):
    done = _run(["-m", "lttoolkit", "list-components", "schedules"], plugin_site)
    assert done.returncode == 0, done.stderr
    assert "lttk-half 0.1" in done.stdout and "Always one half." in done.stdout
    assert "BROKEN" in done.stdout and "boom at import" in done.stdout
    assert "lttk-half::parabolic" in done.stdout  # how to reach the shadowed one
    assert "1 plugin component(s) failed to load" in done.stdout


def test_installed_distribution_builds_and_fails_cleanly(plugin_site):
    code = textwrap.dedent('''
        import json
        from lttoolkit import SCHEDULES
        from lttoolkit.errors import PluginLoadError
        out = {
            "half": SCHEDULES.build("half")(3, 10),
            "builtin_parabolic": SCHEDULES.build("parabolic")(5, 10),
            "plugin_parabolic": SCHEDULES.build("lttk-half::parabolic")(5, 10),
            "source": SCHEDULES.entry("half").source,
        }
        try:
            SCHEDULES.build("boom")
        except PluginLoadError as exc:
            out["boom"] = str(exc)
            out["cause"] = repr(exc.__cause__)
        out["still_fine"] = SCHEDULES.build("linear")(5, 10)
        print(json.dumps(out))
    ''')
    done = _run(["-c", code], plugin_site)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["half"] == 0.5 and out["plugin_parabolic"] == 0.25
    assert out["builtin_parabolic"] == pytest.approx(0.75)  # 1 - (5/10)^2: the builtin kept its name
    assert out["source"] == "lttk-half 0.1"
    assert "lttk-boom 0.2" in out["boom"] and "RuntimeError: boom at import" in out["boom"]
    assert out["cause"] == "RuntimeError('boom at import')"
    assert out["still_fine"] == pytest.approx(0.5)
