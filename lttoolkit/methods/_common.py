"""Helpers the method factories share: resolve and check pieces before any work."""

from __future__ import annotations

from typing import Any, Mapping

from lttoolkit.errors import ConfigError
from lttoolkit.recipe import ComponentSpec
from lttoolkit.registry import LOSSES, SAMPLERS, SCHEDULES, check_options
from lttoolkit.registry._entry import singular

# Options every sampler/loss receives from the engine, not from the user.
_ENGINE_SUPPLIED = {"samplers": {"labels", "seed", "num_replicas", "rank"}, "losses": {"class_counts"}}


def resolve(kind: str, value: str | Mapping[str, Any] | ComponentSpec) -> ComponentSpec:
    """Parse a component and check, now, that its name exists and its options fit.

    Samplers and losses are instantiated later (they need the labels), but a
    typo must fail at build time, before any data is read.
    """
    registry = {"samplers": SAMPLERS, "losses": LOSSES, "schedules": SCHEDULES}[kind]
    spec = ComponentSpec.parse(value, kind=singular(kind))
    factory = registry.get(spec.type)
    supplied = _ENGINE_SUPPLIED.get(kind, set())
    clash = supplied & set(spec.options)
    if clash:
        raise ConfigError(
            f"{singular(kind)} {spec.type!r}: {', '.join(sorted(clash))} is set by the training engine; remove it"
        )
    check_options(factory, spec.options, what=f"{singular(kind)} {spec.type!r}")
    return spec


def build_schedule(spec: ComponentSpec) -> Any:
    return SCHEDULES.build(spec.type, **spec.options)


def plain_options(options: dict[str, Any]) -> dict[str, Any]:
    """A method's options as plain data (specs as dicts), for its :class:`Recipe`.

    Recipes are stored in checkpoints loaded with ``weights_only=True``: plain data only.
    """
    return {
        k: (v.as_dict() if isinstance(v, ComponentSpec) else dict(v) if isinstance(v, Mapping) else v)
        for k, v in options.items()
    }
