"""Which keyword options a callable accepts, and a check of options against it.

The ground floor: the registry checks a component's options with it, and the
data loaders check a dataset loader's. It imports nothing of lttoolkit but its errors.

>>> def wheel(spokes: int = 3, *, rim: str = "steel"): ...
>>> accepted_options(wheel)
(['spokes', 'rim'], False)
>>> check_options(wheel, {"spoke": 4}, what="widget 'wheel'")
Traceback (most recent call last):
...
lttoolkit.errors.UnknownOptionError: widget 'wheel' got unknown option(s) 'spoke' (did you mean 'spokes'?); valid options are: spokes, rim.
"""

from __future__ import annotations

import difflib
import inspect
from typing import Any, Callable, Mapping

from lttoolkit.errors import UnknownOptionError

__all__ = ["accepted_options", "check_options"]


def accepted_options(factory: Callable[..., Any]) -> tuple[list[str], bool]:
    """``(names, takes_var_kwargs)`` of the keyword options ``factory`` accepts."""
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):  # builtins / C callables: cannot check
        return [], True
    names: list[str] = []
    var_kw = False
    for param in sig.parameters.values():
        if param.kind is param.VAR_KEYWORD:
            var_kw = True
        elif param.kind in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY):
            names.append(param.name)
    return names, var_kw


def check_options(factory: Callable[..., Any], options: Mapping[str, Any], *, what: str) -> None:
    """Raise :class:`UnknownOptionError` if ``factory`` does not take every key of ``options``."""
    names, var_kw = accepted_options(factory)
    if var_kw:
        return
    unknown = sorted(set(options) - set(names))
    if unknown:
        hints = []
        for bad in unknown:
            close = difflib.get_close_matches(bad, names, n=1)
            hints.append(f"{bad!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise UnknownOptionError(
            f"{what} got unknown option(s) {', '.join(hints)}; valid options are: {', '.join(names) or '(none)'}."
        )
