"""Register lttoolkit's own backbones into timm's registry when timm is imported.

``import lttoolkit`` must not import timm (about 4 s with torch), yet
``timm.create_model("resnet32_cifar")`` should work in any program that imported
lttoolkit. A small import hook runs our registration right after timm's module
has executed; if timm is already imported, registration happens at once.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from typing import Any

_DONE = False


def _register() -> None:
    global _DONE
    if _DONE:
        return
    _DONE = True
    try:
        importlib.import_module("lttoolkit.backbones.cifar_resnet")
    except Exception as exc:  # never break `import timm` for the user
        import warnings

        warnings.warn(f"lttoolkit could not register its CIFAR ResNets into timm: {exc}", stacklevel=2)


class _AfterTimmLoader(importlib.abc.Loader):
    def __init__(self, wrapped: importlib.abc.Loader) -> None:
        self._wrapped = wrapped

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> Any:
        return self._wrapped.create_module(spec)

    def exec_module(self, module: Any) -> None:
        self._wrapped.exec_module(module)  # type: ignore[attr-defined]
        _register()


class _TimmFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Any, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if fullname != "timm":
            return None
        sys.meta_path.remove(self)  # one shot; also avoids finding ourselves below
        spec = None
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            spec = find(fullname, path, target) if find is not None else None
            if spec is not None:
                break
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _AfterTimmLoader(spec.loader)
        return spec


def install_timm_hook() -> None:
    """Arrange for lttoolkit's backbones to be registered into timm's registry."""
    if "timm" in sys.modules:
        _register()
    elif not any(isinstance(f, _TimmFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _TimmFinder())
