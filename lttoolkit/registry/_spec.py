"""The one parser of component specs: ``"name"`` or ``{"type": "name", **options}``.

:meth:`Registry.build`, :meth:`lttoolkit.ComponentSpec.parse` and the method
factories all read specs through :func:`parse_spec`, so a bad spec raises one
error (:class:`~lttoolkit.errors.ComponentSpecError`) with one message wherever it is given.
"""

from __future__ import annotations

from typing import Any, Mapping

from lttoolkit.errors import ComponentSpecError

__all__ = ["parse_spec"]


def parse_spec(
    spec: Any, options: Mapping[str, Any] | None = None, *, kind: str = "component"
) -> tuple[str, dict[str, Any]]:
    """Normalise ``"name"`` / ``{"type": "name", ...}`` plus extra options into ``(name, options)``.

    Args:
        spec: a registered name, or a mapping whose ``"type"`` names the component.
        options: further options; they override those of a mapping.
        kind: what the component is (``"loss"``, ``"backbone"``), for the message.

    Raises:
        ComponentSpecError: an empty name, a mapping without a string ``"type"``, or
            something that is neither a name nor a mapping.

    >>> parse_spec({"type": "focal", "gamma": 2.0}, kind="loss")
    ('focal', {'gamma': 2.0})
    >>> parse_spec({"gamma": 2.0}, kind="loss")
    Traceback (most recent call last):
    ...
    lttoolkit.errors.ComponentSpecError: a loss given as a dict needs a 'type' key naming it, got keys ['gamma']; e.g. {'type': 'NAME', ...}; in a config, set the name before its options (model.loss=focal, then model.loss.gamma=2)
    """
    extra = dict(options or {})
    if isinstance(spec, str):
        if not spec.strip():
            raise ComponentSpecError(
                f"a {kind} name is empty; give a registered name (see `lttk list-components`)"
            )
        return spec, extra
    if isinstance(spec, Mapping):
        name = spec.get("type")
        if not isinstance(name, str) or not name.strip():
            got = f"got keys {sorted(map(str, spec))}" if "type" not in spec else f"got type={name!r}"
            raise ComponentSpecError(
                f"a {kind} given as a dict needs a 'type' key naming it, {got}; e.g. {{'type': 'NAME', ...}}; "
                f"in a config, set the name before its options (model.loss=focal, then model.loss.gamma=2)"
            )
        merged = {k: v for k, v in spec.items() if k != "type"}
        merged.update(extra)
        return name, merged
    raise ComponentSpecError(
        f"a {kind} must be a name or a {{'type': name, ...}} dict, got {type(spec).__name__} {spec!r}"
    )
