"""The installed entry point of ``__COMPONENT__`` (__KIND__ plugin of the ``__DIST__`` distribution)."""

from __future__ import annotations

from importlib import metadata

import pytest


def test_entry_point_is_installed_and_listed():
    """Once installed, lttoolkit lists the component with this distribution as its source."""
    try:
        dist = metadata.distribution("__DIST__")
    except metadata.PackageNotFoundError:
        pytest.skip("__DIST__ is not installed (pip install -e .)")
    points = [ep for ep in dist.entry_points if ep.group == "__GROUP__" and ep.name == "__COMPONENT__"]
    assert [ep.value for ep in points] == ["__PACKAGE__.__MODULE__:__ATTR__"]
    from lttoolkit import ALL_REGISTRIES

    registry = ALL_REGISTRIES["__REGISTRY__"]
    entry = registry.entry("__COMPONENT__")
    assert entry.source == f"__DIST__ {dist.version}"
    registry.get("__COMPONENT__")  # imports the module; a broken plugin raises PluginLoadError
    assert entry.status == "ok", entry.describe_error()
