"""The generic part of a plugin's protocol check: can its factory be called the way lttoolkit calls it?

What a built component must do is family-specific, so each family's registry is
given its own check (``Registry(..., validate=...)``, e.g.
:func:`lttoolkit.samplers.check_built_sampler`); this module only reads call
signatures, and knows no family.
"""

from __future__ import annotations

import inspect
from typing import Any

from lttoolkit.errors import ComponentContractError
from lttoolkit.registry._entry import singular

__all__ = ["check_factory"]


def check_factory(
    kind: str, name: str, source: str, factory: Any, *, first: str | None = None, keywords: tuple[str, ...] = ()
) -> None:
    """Check that a plugin factory can be called as ``factory(<first>, **keywords, **options)``.

    Args:
        kind, name, source: the registry, the component and where it comes from (for the message).
        factory: the plugin's callable.
        first: the positional argument lttoolkit passes first (``"labels"`` for samplers), if any.
        keywords: the keyword arguments lttoolkit always passes.

    Raises:
        ComponentContractError: ``factory`` is not callable or cannot be called that way.
    """
    who = f"{singular(kind)} {name!r} from {source}"
    if not callable(factory):
        raise ComponentContractError(f"{who} is {type(factory).__name__}, not a callable factory; "
                                     f"the entry point must name a class or function (see docs/plugins.md)")
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        return  # C callables: nothing to inspect
    params = list(sig.parameters.values())
    var_kw = any(p.kind is p.VAR_KEYWORD for p in params)
    var_pos = any(p.kind is p.VAR_POSITIONAL for p in params)
    named = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    missing = [kw for kw in keywords if kw not in named and not var_kw]
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if first and not positional and not var_pos:
        missing.insert(0, f"{first} (positional)")
    required_extra = [
        p.name for p in params
        if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        and p.name not in {first, *keywords}
        and not (first and positional and p is positional[0])
    ]
    if missing or required_extra:
        parts = []
        if missing:
            parts.append(f"does not accept {', '.join(missing)}")
        if required_extra:
            parts.append(f"requires {', '.join(required_extra)} without a default")
        raise ComponentContractError(
            f"{who} has the wrong call signature {name}{sig}: it {' and '.join(parts)}. "
            f"See the {singular(kind)} protocol in docs/plugins.md."
        )
