"""Registries: one :class:`Registry` per kind of component, plus plugin loading.

>>> from lttoolkit.registry import SCHEDULES
>>> SCHEDULES.list("parabolic*")
['parabolic', 'parabolic_increment']
"""

from __future__ import annotations

from typing import Any

from lttoolkit.registry._builtins import BUILTINS
from lttoolkit.registry._plugins import (
    DISABLE_ENV,
    iter_entry_points,
    load_plugin,
    plugins_disabled,
    require_distributions,
)
from lttoolkit.registry._registry import (
    BUILTIN,
    Entry,
    Registry,
    accepted_options,
    check_options,
    registration_source,
    split_spec,
)

__all__ = [
    "Registry",
    "Entry",
    "BUILTIN",
    "SAMPLERS",
    "LOSSES",
    "SCHEDULES",
    "BACKBONES",
    "METHODS",
    "ALL_REGISTRIES",
    "load_plugin",
    "plugins_disabled",
    "iter_entry_points",
    "require_distributions",
    "registration_source",
    "split_spec",
    "check_options",
    "accepted_options",
    "DISABLE_ENV",
]


def _timm_fallback(name: str) -> Any:
    # Imported only when a name is not one of ours: keeps timm out of listing.
    from lttoolkit.backbones._timm import timm_backbone_factory

    return timm_backbone_factory(name)


def _timm_names() -> list[str]:
    import timm

    return timm.list_models()


SAMPLERS = Registry("samplers")
LOSSES = Registry("losses")
SCHEDULES = Registry("schedules")
BACKBONES = Registry("backbones", fallback=_timm_fallback, fallback_names=_timm_names)
METHODS = Registry("methods")

ALL_REGISTRIES: dict[str, Registry] = {
    "samplers": SAMPLERS,
    "losses": LOSSES,
    "schedules": SCHEDULES,
    "backbones": BACKBONES,
    "methods": METHODS,
}

for _kind, _items in BUILTINS.items():
    for _name, _target, _summary in _items:
        ALL_REGISTRIES[_kind].register_lazy(_name, _target, _summary)
