"""What a registry holds: :class:`Entry`, and who is registering right now.

The lowest floor of the registry package: it imports nothing of lttoolkit but
its errors, so discovery (``_plugins``) and the :class:`Registry` both build on it.
"""

from __future__ import annotations

import inspect
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Iterator

__all__ = ["BUILTIN", "Entry", "registration_source", "current_source", "singular", "first_line"]

BUILTIN = "builtin"

# Who is registering right now: "builtin", "<dist> <version>" while an entry point
# loads, or "module <name>" inside load_plugin(). Decorators read it.
_SOURCE: ContextVar[str] = ContextVar("lttoolkit_registration_source", default=BUILTIN)


def current_source() -> str:
    """The source a registration made now is attributed to."""
    return _SOURCE.get()


@contextmanager
def registration_source(source: str) -> Iterator[None]:
    """Attribute registrations made inside the block to ``source``."""
    token = _SOURCE.set(source)
    try:
        yield
    finally:
        _SOURCE.reset(token)


def singular(kind: str) -> str:
    """``"losses"`` -> ``"loss"``, ``"samplers"`` -> ``"sampler"`` (for messages)."""
    if kind.endswith("sses"):
        return kind[:-2]
    return kind[:-1] if kind.endswith("s") else kind


def first_line(obj: Any) -> str:
    doc = inspect.getdoc(obj) or ""
    return doc.strip().splitlines()[0].strip() if doc.strip() else ""


@dataclass
class Entry:
    """One registered component.

    Attributes:
        name: the name users build it by.
        kind: the registry's kind (``"samplers"``, ``"losses"``, ...).
        source: ``"builtin"``, ``"<distribution> <version>"`` for an entry-point
            plugin, or ``"module <name>"`` for :func:`lttoolkit.load_plugin`.
        target: ``"module:attr"`` of a lazy entry, or ``None``.
        summary: one line describing the component.
        obj: the component once loaded.
        error: the exception that stopped a plugin from loading, if any.
        shadowed_by: for a plugin whose name clashes with an existing entry,
            the source of the entry that keeps the name.
    """

    name: str
    kind: str
    source: str = BUILTIN
    target: str | None = None
    summary: str = ""
    obj: Any = None
    error: BaseException | None = None
    shadowed_by: str | None = None
    distribution: str | None = field(default=None, repr=False)

    @property
    def loaded(self) -> bool:
        return self.obj is not None

    @property
    def status(self) -> str:
        if self.error is not None:
            return "broken"
        if self.shadowed_by is not None:
            return "shadowed"
        return "ok"

    @property
    def is_plugin(self) -> bool:
        return self.source != BUILTIN

    def describe_error(self) -> str:
        if self.error is None:
            return ""
        return f"{type(self.error).__name__}: {self.error}"
