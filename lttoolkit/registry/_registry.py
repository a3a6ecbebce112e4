"""The generic :class:`Registry`: one instance per kind of component.

Entries are *lazy*: a builtin or an entry-point plugin is known by name, source
and ``module:attr`` target before its module is imported, so listing components
never imports torch. The object is imported on first :meth:`Registry.get`.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import re
import threading
from typing import Any, Callable, Iterable, Iterator, Mapping

from lttoolkit._introspect import check_options
from lttoolkit.errors import DuplicateComponentError, PluginLoadError, UnknownComponentError
from lttoolkit.registry._contracts import check_factory
from lttoolkit.registry._entry import BUILTIN, Entry, current_source, first_line, registration_source, singular
from lttoolkit.registry._plugins import discover_into
from lttoolkit.registry._spec import parse_spec

__all__ = ["Registry", "resolve_target"]

# A built plugin component is checked by the family's validator: validate(component, who=..., options=...).
Validator = Callable[..., None]


def resolve_target(target: str) -> Any:
    """Import ``"module:attr"`` (or ``"module"``) and return the object it names."""
    module_name, _, attr = target.partition(":")
    attr = attr.split("[", 1)[0].strip()  # entry-point values may end in " [extra,...]"
    obj: Any = importlib.import_module(module_name.strip())
    for part in attr.split(".") if attr else ():  # "module" alone names the module
        obj = getattr(obj, part)
    return obj


def _natural_key(text: str) -> list[Any]:
    # "resnet110" sorts after "resnet56", as timm.list_models does.
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text.lower())]


class Registry:
    """A name -> component mapping for one kind of component.

    Args:
        kind: plural noun used in messages and as the entry-point group suffix
            (``lttoolkit.<kind>``).
        group: the entry-point group plugins declare into (default ``lttoolkit.<kind>``).
        fallback: optional ``name -> component | None`` consulted for names not
            registered here, or its ``"module:attr"`` (imported on first use; the
            backbone registry falls back to timm this way).
        fallback_names: the names the fallback accepts (or their ``"module:attr"``),
            for "did you mean" suggestions only.
        fallback_label: how the message for an unknown name describes the fallback.
        validate: checks what a plugin's factory built,
            ``validate(component, who=..., options=...)`` raising
            ``ComponentContractError`` (or its ``"module:attr"``).
        call_signature: ``(first_positional, keywords)`` lttoolkit calls a factory
            of this kind with; a plugin factory that cannot take them is refused
            before it is called (samplers: ``("labels", ("seed", "num_replicas", "rank"))``).

    The registry knows nothing of what it holds: everything specific to a family
    is given here, when the family's registry is made (``lttoolkit/registry/__init__.py``).

    Example:
        >>> from lttoolkit.registry import Registry
        >>> widgets = Registry("widgets")
        >>> @widgets.register()
        ... def spinner(speed: int = 1):
        ...     '''A spinning widget.'''
        ...     return ("spinner", speed)
        >>> widgets.build("spinner", speed=3)
        ('spinner', 3)
        >>> widgets.build({"type": "spinner"})
        ('spinner', 1)
        >>> widgets.list("spin*")
        ['spinner']
    """

    def __init__(
        self,
        kind: str,
        *,
        group: str | None = None,
        fallback: Callable[[str], Any] | str | None = None,
        fallback_names: Callable[[], Iterable[str]] | str | None = None,
        fallback_label: str = "",
        validate: Validator | str | None = None,
        call_signature: tuple[str | None, tuple[str, ...]] = (None, ()),
    ) -> None:
        self.kind = kind
        self.group = group if group is not None else f"lttoolkit.{kind}"
        self._entries: dict[str, Entry] = {}
        self._shadowed: list[Entry] = []
        self._fallback = fallback
        # The names the fallback accepts, for "did you mean" only (read when a name is unknown).
        self._fallback_names = fallback_names
        self._fallback_label = fallback_label
        self._validate = validate
        self.call_signature = call_signature
        self._plugins_discovered = False
        self._lock = threading.RLock()

    @staticmethod
    def _resolved(hook: Any) -> Any:
        return resolve_target(hook) if isinstance(hook, str) else hook

    # ------------------------------------------------------------------ registration
    def register(
        self,
        obj: Any = None,
        *,
        name: str | None = None,
        force: bool = False,
        summary: str | None = None,
    ) -> Any:
        """Register ``obj`` under ``name`` (default: its ``__name__``).

        Use as ``@registry.register()``, ``@registry.register(name="x")`` or
        ``registry.register(obj, name="x")``. A second registration of the same
        name raises :class:`DuplicateComponentError` unless ``force=True``;
        registering the very same object again is a no-op.
        """
        if obj is None:
            return lambda target: self.register(target, name=name, force=force, summary=summary)
        key = name or getattr(obj, "__name__", None)
        if not key:
            raise ValueError(f"cannot register {obj!r} in {self.kind}: pass name=...")
        source = current_source()
        with self._lock:
            existing = self._entries.get(key)
            if existing is not None and not force:
                if existing.obj is obj:
                    return obj
                # partial objects and instances have no __qualname__: they never match a target.
                target = f"{getattr(obj, '__module__', '')}:{getattr(obj, '__qualname__', '')}"
                # The module of a lazy entry (or of a plugin that lost a name clash, loaded
                # as "dist::name") is being imported and registers its own object.
                for lazy in (existing, *self._shadowed):
                    if lazy.name == key and lazy.obj is None and lazy.target == target:
                        lazy.obj = obj
                        lazy.summary = lazy.summary or summary or first_line(obj)
                        return obj
                raise DuplicateComponentError(
                    f"{self.kind} already has a component named {key!r} (from {existing.source}); "
                    f"choose another name or pass force=True to replace it."
                )
            self._entries[key] = Entry(
                name=key,
                kind=self.kind,
                source=source,
                target=None,
                summary=summary or first_line(obj),
                obj=obj,
            )
        return obj

    def register_lazy(self, name: str, target: str, summary: str, *, source: str = BUILTIN) -> None:
        """Declare a component by ``"module:attr"`` without importing it."""
        with self._lock:
            if name in self._entries:
                raise DuplicateComponentError(f"{self.kind} already has a component named {name!r}")
            self._entries[name] = Entry(name=name, kind=self.kind, source=source, target=target, summary=summary)

    def unregister(self, name: str) -> Entry:
        """Remove ``name`` and return its entry (mostly for tests)."""
        with self._lock:
            return self._entries.pop(name)

    def add_plugin_entry(self, entry: Entry) -> None:
        """Add a discovered plugin entry; a clash never replaces an existing name."""
        with self._lock:
            existing = self._entries.get(entry.name)
            if existing is not None:
                entry.shadowed_by = existing.source
                self._shadowed.append(entry)
            else:
                self._entries[entry.name] = entry

    # ------------------------------------------------------------------ lookup
    def _ensure_plugins(self) -> None:
        if self._plugins_discovered:
            return
        with self._lock:
            if self._plugins_discovered:
                return
            try:
                discover_into(self)
            finally:
                # Set only once the entries are in: another thread must not see a half-filled registry.
                self._plugins_discovered = True

    def _load(self, entry: Entry) -> Any:
        if entry.obj is not None:
            return entry.obj
        if entry.error is not None:
            raise _plugin_error(entry)
        assert entry.target is not None
        try:
            with registration_source(entry.source):
                obj = resolve_target(entry.target)
        except Exception as exc:  # a plugin may fail in any way; keep the cause
            if not entry.is_plugin:
                raise
            entry.error = exc
            raise _plugin_error(entry) from exc
        entry.obj = obj
        if not entry.summary:
            entry.summary = first_line(obj)
        return obj

    def get(self, name: str) -> Any:
        """Return the component registered as ``name``, importing it if needed.

        Raises:
            UnknownComponentError: no such name; the message suggests close ones.
            PluginLoadError: the name belongs to a plugin that failed to import.
        """
        self._ensure_plugins()
        entry = self._entries.get(name)
        if entry is None:
            entry = self._find_qualified(name)
        if entry is not None:
            return self._load(entry)
        if self._fallback is not None:
            obj = self._resolved(self._fallback)(name)
            if obj is not None:
                return obj
        raise UnknownComponentError(self._unknown_message(name))

    def _find_qualified(self, name: str) -> Entry | None:
        # "<distribution>::<name>" picks a plugin entry that lost a name clash.
        dist, sep, short = name.partition("::")
        if not sep:
            return None
        for entry in [*self._shadowed, *self._entries.values()]:
            if entry.name == short and entry.distribution == dist:
                return entry
        return None

    def _unknown_message(self, name: str) -> str:
        names = sorted(self._entries)
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
        if self._fallback_names is not None:
            try:
                more = list(self._resolved(self._fallback_names)())
            except Exception:  # suggestions are a courtesy: never fail the error message
                more = []
            scored = difflib.get_close_matches(name, [*close, *more], n=3, cutoff=0.6)
            close = scored or close
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        shown = ", ".join(names[:25]) + (", ..." if len(names) > 25 else "")
        extra = f" ({self._fallback_label})" if self._fallback_label else ""
        return (
            f"unknown {singular(self.kind)} {name!r} "
            f"in the {self.kind} registry.{hint} Available{extra}: {shown}. "
            f"Run `lttk list-components {self.kind}` to see all of them."
        )

    def entry(self, name: str) -> Entry:
        """The :class:`Entry` for ``name`` (not loaded)."""
        self._ensure_plugins()
        entry = self._entries.get(name)
        if entry is None:
            entry = self._find_qualified(name)
        if entry is None:
            raise UnknownComponentError(self._unknown_message(name))
        return entry

    def __contains__(self, name: object) -> bool:
        self._ensure_plugins()
        return name in self._entries or (isinstance(name, str) and self._find_qualified(name) is not None)

    def __iter__(self) -> Iterator[str]:
        return iter(self.list())

    def __len__(self) -> int:
        self._ensure_plugins()
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self._entries)} entries)"

    def list(self, pattern: str | list[str] = "*") -> list[str]:
        """Names matching ``pattern`` (fnmatch wildcards, or a list of them), naturally sorted."""
        return [e.name for e in self.entries(pattern)]

    def entries(
        self, pattern: str | list[str] = "*", *, load: bool | str = False, shadowed: bool = False
    ) -> list[Entry]:
        """Entries matching ``pattern``, naturally sorted.

        Args:
            pattern: fnmatch wildcard(s).
            load: ``True`` imports every entry; ``"plugins"`` imports only plugin
                entries (builtins keep their declared summary, so no torch import).
                A plugin that fails to import is marked broken, not raised.
            shadowed: include plugin entries that lost a name clash.
        """
        self._ensure_plugins()
        patterns = [pattern] if isinstance(pattern, str) else list(pattern)
        pool = list(self._entries.values()) + (self._shadowed if shadowed else [])
        chosen = [e for e in pool if any(fnmatch.fnmatchcase(e.name, p) for p in patterns)]
        if load:
            for entry in chosen:
                if entry.obj is None and entry.error is None and (load is True or entry.is_plugin):
                    try:
                        self._load(entry)
                    except PluginLoadError:
                        pass  # recorded on the entry as broken
        return sorted(chosen, key=lambda e: (_natural_key(e.name), e.source))

    @property
    def shadowed(self) -> list[Entry]:
        """Plugin entries that lost a name clash (they stay reachable as ``dist::name``)."""
        self._ensure_plugins()
        return list(self._shadowed)

    # ------------------------------------------------------------------ building
    def build(self, spec: str | Mapping[str, Any], /, **options: Any) -> Any:
        """Build a component from a name plus options, or from ``{"type": name, **options}``.

        Options a component does not accept raise :class:`UnknownOptionError`
        listing the ones it does. A plugin's component is also checked against its
        protocol (docs/plugins.md); a violation raises ``ComponentContractError``
        naming the plugin.
        """
        name, merged = parse_spec(spec, options, kind=singular(self.kind))
        factory = self.get(name)
        entry = self._entries.get(name) or self._find_qualified(name)
        plugin = entry is not None and entry.is_plugin
        if plugin:
            first, keywords = self.call_signature
            check_factory(self.kind, name, entry.source, factory, first=first, keywords=keywords)
        check_options(factory, merged, what=f"{singular(self.kind)} {name!r}")
        built = factory(**merged)
        if plugin and self._validate is not None:
            who = f"{singular(self.kind)} {name!r} from {entry.source}"
            self._resolved(self._validate)(built, who=who, options=merged)
        return built


def _plugin_error(entry: Entry) -> PluginLoadError:
    return PluginLoadError(
        f"{singular(entry.kind)} {entry.name!r} comes from plugin "
        f"{entry.source} ({entry.target}), which failed to load: {entry.describe_error().rstrip('.')}. "
        f"Fix or uninstall that package, or set LTTK_DISABLE_PLUGINS=1 to skip plugins."
    )
