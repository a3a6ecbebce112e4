"""Plugin discovery: entry points (installed distributions) and plain modules.

Entry points are read with the standard library's :mod:`importlib.metadata`,
lazily (on a registry's first lookup), once, and in a deterministic order. A
plugin is not imported until its component is needed, and one that fails to
import is recorded as *broken* instead of taking the toolkit down.
"""

from __future__ import annotations

import importlib
import os
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Iterable

from lttoolkit.errors import PluginLoadError
from lttoolkit.registry._entry import Entry, registration_source

if TYPE_CHECKING:
    from lttoolkit.registry._registry import Registry

__all__ = ["plugins_disabled", "discover_into", "import_plugin_module", "iter_entry_points",
           "require_distributions", "DISABLE_ENV"]

DISABLE_ENV = "LTTK_DISABLE_PLUGINS"


def plugins_disabled() -> bool:
    """True when ``LTTK_DISABLE_PLUGINS`` is set to a true value (1, true, yes, on)."""
    return os.environ.get(DISABLE_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def require_distributions(names: Iterable[str], *, what: str = "this run") -> None:
    """Check that the plugin distributions ``names`` are installed, importing nothing.

    For a config's ``plugins_required`` (e.g. ``[lttk-extra-losses]``): a run, or a checkpoint
    of one, that needs a plugin fails at once with the ``pip install`` to run, instead of
    failing later on an unknown component.

    Raises:
        PluginLoadError: a distribution is not installed.

    >>> require_distributions(["lttoolkit"])
    >>> require_distributions(["lttk-not-a-plugin"], what="the config")
    Traceback (most recent call last):
    ...
    lttoolkit.errors.PluginLoadError: the config needs the plugin distribution lttk-not-a-plugin, which is not installed: pip install lttk-not-a-plugin (its components then register by themselves)
    """
    from importlib.metadata import PackageNotFoundError, distribution

    missing = []
    for name in names:
        try:
            distribution(name)
        except PackageNotFoundError:
            missing.append(name)
    if missing:
        plural = "s" if len(missing) > 1 else ""
        raise PluginLoadError(
            f"{what} needs the plugin distribution{plural} {', '.join(missing)}, which {'are' if plural else 'is'} "
            f"not installed: pip install {' '.join(missing)} (its components then register by themselves)"
        )


def iter_entry_points(group: str) -> list[EntryPoint]:
    """Entry points of ``group``, sorted by (name, distribution) and de-duplicated.

    The same distribution can be visible twice on ``sys.path`` (e.g. an editable
    install plus a build folder); it counts once.
    """
    seen: set[tuple[str, str, str]] = set()
    unique: list[EntryPoint] = []
    for ep in entry_points(group=group):
        dist = ep.dist.name if ep.dist is not None else ""
        key = (ep.name, ep.value, dist)
        if key not in seen:
            seen.add(key)
            unique.append(ep)
    return sorted(unique, key=lambda ep: (ep.name, ep.dist.name if ep.dist is not None else "", ep.value))


def _source_of(ep: EntryPoint) -> tuple[str, str]:
    if ep.dist is None:
        return "unknown-distribution", "unknown-distribution"
    name = ep.dist.name
    return name, f"{name} {ep.dist.version}"


def entries_from(eps: Iterable[EntryPoint], kind: str) -> list[Entry]:
    """Turn entry points into lazy registry entries (nothing is imported)."""
    out = []
    for ep in eps:
        dist, source = _source_of(ep)
        out.append(Entry(name=ep.name, kind=kind, source=source, target=ep.value, summary="", distribution=dist))
    return out


def discover_into(registry: Registry) -> None:
    """Add the entry points of ``registry.group`` to ``registry`` as lazy plugin entries."""
    if plugins_disabled():
        return
    try:
        eps = iter_entry_points(registry.group)
    except Exception:  # a corrupt installed METADATA must not break the toolkit
        return
    for entry in entries_from(eps, registry.kind):
        registry.add_plugin_entry(entry)


def import_plugin_module(module: str, registries: Iterable[Registry]) -> list[str]:
    """Import ``module`` with its registrations attributed to it; the ``kind:name`` it added to ``registries``.

    :func:`lttoolkit.load_plugin` is this over every registry.

    Raises:
        PluginLoadError: the module could not be imported; the original error is chained.
    """
    registries = list(registries)
    before = {reg.kind: set(reg._entries) for reg in registries}
    try:
        with registration_source(f"module {module}"):
            importlib.import_module(module)
    except Exception as exc:
        raise PluginLoadError(
            f"could not load plugin module {module!r}: {type(exc).__name__}: {str(exc).rstrip('.')}. "
            f"Check that it is importable (on sys.path / PYTHONPATH) and imports cleanly."
        ) from exc
    added = []
    for reg in registries:
        for name in sorted(set(reg._entries) - before[reg.kind]):
            added.append(f"{reg.kind}:{name}")
    return added
