"""Helpers the method factories share: resolve and check pieces before any work."""

from __future__ import annotations

from typing import Any, Mapping

from lttoolkit.errors import ConfigError
from lttoolkit.recipe import ComponentSpec
from lttoolkit.registry import LOSSES, SAMPLERS, SCHEDULES, check_options
from lttoolkit.registry._registry import singular

# Options every sampler/loss receives from the engine, not from the user.
_ENGINE_SUPPLIED = {"samplers": {"labels", "seed", "num_replicas", "rank"}, "losses": {"class_counts"}}


def resolve(kind: str, value: str | Mapping[str, Any] | ComponentSpec) -> ComponentSpec:
    """Parse a component and check, now, that its name exists and its options fit.

    Samplers and losses are instantiated later (they need the labels), but a
    typo must fail at build time, before any data is read.
    """
    registry = {"samplers": SAMPLERS, "losses": LOSSES, "schedules": SCHEDULES}[kind]
    spec = parse_spec(kind, value)
    factory = registry.get(spec.type)
    supplied = _ENGINE_SUPPLIED.get(kind, set())
    clash = supplied & set(spec.options)
    if clash:
        raise ConfigError(
            f"{singular(kind)} {spec.type!r}: {', '.join(sorted(clash))} is set by the training engine; remove it"
        )
    check_options(factory, spec.options, what=f"{singular(kind)} {spec.type!r}")
    return spec


def parse_spec(kind: str, value: Any) -> ComponentSpec:
    """:meth:`ComponentSpec.parse`, with the kind of component named in its error."""
    try:
        return ComponentSpec.parse(value)
    except ConfigError as exc:
        raise ConfigError(f"{singular(kind)}: {exc}") from None


def build_schedule(spec: ComponentSpec) -> Any:
    return SCHEDULES.build(spec.type, **spec.options)
