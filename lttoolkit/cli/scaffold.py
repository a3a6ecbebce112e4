"""Scaffold a new plugin package: ``new_plugin("my-lt-losses", Path("."), kind="loss")``.

The package it writes is ready to install (``pip install ./my-lt-losses``) and
to publish. It holds:

* ``pyproject.toml`` (setuptools) declaring one entry point in the kind's group
  (``lttoolkit.losses``, ...), named after the component;
* ``src/<package>/`` with one working example component of that kind, written
  against the protocol pinned in ``docs/plugins.md`` (docstring, type hints);
* ``tests/test_<package>.py``, which imports the component and checks the
  contract, and ``tests/test_<package>_entry_point.py``, which checks that, once
  the package is installed, lttoolkit lists it with the distribution's name as
  its source;
* ``README.md``.

The templates are files shipped with lttoolkit, under ``lttoolkit/cli/templates/plugin/``:
real Python modules (linted and tested as code) whose ``__PLACEHOLDER__`` names are
filled in; ``components/<kind>.py`` and ``tests/<kind>.py`` for each kind.

The component is found through its entry point only; importing the package
registers nothing, so the same code works installed or not.

>>> import tempfile
>>> from pathlib import Path
>>> with tempfile.TemporaryDirectory() as tmp:
...     root = new_plugin("my-lt-losses", Path(tmp), kind="loss")
...     sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
['README.md', 'pyproject.toml', 'src/my_lt_losses/__init__.py', 'src/my_lt_losses/loss.py',
 'src/my_lt_losses/py.typed', 'tests/test_my_lt_losses.py',
 'tests/test_my_lt_losses_entry_point.py']
"""

from __future__ import annotations

import ast
import builtins
import keyword
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from lttoolkit._version import __version__
from lttoolkit.errors import ConfigError, LTToolkitError

__all__ = ["new_plugin", "package_name", "PLUGIN_KINDS", "PluginKind", "PluginExistsError"]


class PluginExistsError(LTToolkitError, FileExistsError):
    """The directory a new plugin would be written to already exists."""


@dataclass(frozen=True)
class PluginKind:
    """What :func:`new_plugin` writes for one kind of component.

    Attributes:
        group: the entry-point group lttoolkit reads (``lttoolkit.losses``, ...).
        module: the module of the package holding the example component.
        suffix: appended to the CamelCase component name to name its class
            (empty for kinds whose factory is a function named like the component).
        summary: a few words for the generated docs.
    """

    group: str
    module: str
    suffix: str
    summary: str


# kind (singular, as in the docs) -> entry-point group and file layout
PLUGIN_KINDS: dict[str, PluginKind] = {
    "sampler": PluginKind("lttoolkit.samplers", "sampler", "Sampler", "a class-weighted sampler"),
    "loss": PluginKind("lttoolkit.losses", "loss", "Loss", "a long-tail loss"),
    "schedule": PluginKind("lttoolkit.schedules", "schedule", "Schedule", "an alpha schedule for cumulative learning"),
    "backbone": PluginKind("lttoolkit.backbones", "backbone", "", "a backbone with timm's interface"),
    "method": PluginKind("lttoolkit.methods", "method", "", "a method (a recipe building a trainable model)"),
    "dataset": PluginKind("lttoolkit.datasets", "dataset", "", "a dataset"),
}
_PLURALS = {"samplers": "sampler", "losses": "loss", "schedules": "schedule", "backbones": "backbone",
            "methods": "method", "datasets": "dataset"}
# The template files, shipped as package data beside this module.
TEMPLATES = files("lttoolkit.cli") / "templates" / "plugin"


def _template(relative: str) -> str:
    return (TEMPLATES / relative).read_text(encoding="utf-8")

# PEP 508 / packaging's rule for a distribution name.
_DIST_NAME = re.compile(r"[A-Z0-9]|[A-Z0-9][A-Z0-9._-]*[A-Z0-9]", re.IGNORECASE | re.ASCII)
_COMPONENT_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)
# Importing a plugin under one of these names would hide the real module.
_RESERVED = {"lttoolkit", "torch", "torchvision", "timm", "numpy", "pydantic", "yaml", "rich", "test", "tests",
             "setuptools", "pip"}


def package_name(name: str) -> str:
    """The Python package name for distribution ``name``: lower case, runs of ``-_.`` as ``_``.

    Raises:
        ConfigError: ``name`` is not a valid distribution name, or gives a
            package name that is not an identifier or would hide another module.

    >>> package_name("My-LT.losses")
    'my_lt_losses'
    """
    if not isinstance(name, str) or not name:
        raise ConfigError(f"a plugin needs a name such as 'my-lt-losses', got {name!r}")
    if not _DIST_NAME.fullmatch(name):
        raise ConfigError(
            f"{name!r} is not a valid distribution name: use letters, digits, '-', '_' and '.', "
            f"starting and ending with a letter or digit (e.g. 'my-lt-losses')"
        )
    package = re.sub(r"[-_.]+", "_", name).lower()
    if not package.isidentifier() or keyword.iskeyword(package):
        raise ConfigError(
            f"plugin name {name!r} gives the Python package name {package!r}, which is not a valid identifier; "
            f"start the name with a letter and avoid Python keywords (e.g. 'lt-{name}')"
        )
    if package in _RESERVED or package in sys.stdlib_module_names:
        raise ConfigError(
            f"plugin name {name!r} gives the package name {package!r}, which would hide the module of the same "
            f"name; choose a distinct name, e.g. 'lttk-{name}'"
        )
    return package


def _camel(identifier: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in identifier.split("_") if part)


def _check_component(component: str, kind: str) -> str:
    if not isinstance(component, str) or not _COMPONENT_NAME.fullmatch(component):
        raise ConfigError(
            f"component name {component!r} must be a Python-style name (letters, digits, '_'), e.g. 'my_loss'"
        )
    from lttoolkit.registry._builtins import BUILTINS  # the builtin table imports nothing heavy

    plural = next(p for p, s in _PLURALS.items() if s == kind)
    if any(component == builtin for builtin, _, _ in BUILTINS[plural]):
        raise ConfigError(
            f"component name {component!r} is already a builtin {kind}: a plugin of that name would be shadowed "
            f"(reachable only as '<distribution>::{component}'); pass another component name"
        )
    return component


def new_plugin(name: str, directory: str | Path = ".", kind: str = "loss", *, component: str | None = None) -> Path:
    """Write a ready-to-install plugin package for one component of ``kind``.

    Args:
        name: the distribution name (what ``pip install`` and ``lttk
            list-components`` show), e.g. ``"my-lt-losses"``. The Python package
            is its snake_case form (``my_lt_losses``).
        directory: the folder to create the package in; the package is written
            to ``directory / name``, which must not exist yet.
        kind: ``"sampler"``, ``"loss"``, ``"schedule"``, ``"backbone"``,
            ``"method"`` or ``"dataset"`` (plural forms are accepted too).
        component: the component's name in lttoolkit's registry (the entry
            point's name); default: the package name.

    Returns:
        The package's root folder, ``directory / name``.

    Raises:
        ConfigError: invalid name, kind or component name.
        PluginExistsError: ``directory / name`` already exists (nothing is overwritten).
    """
    if not isinstance(kind, str) or _PLURALS.get(kind, kind) not in PLUGIN_KINDS:
        raise ConfigError(f"unknown plugin kind {kind!r}; choose one of: {', '.join(PLUGIN_KINDS)}")
    kind = _PLURALS.get(kind, kind)
    package = package_name(name)
    component = _check_component(package if component is None else component, kind)
    parent = Path(directory)
    root = parent / name
    if root.exists() or root.is_symlink():
        raise PluginExistsError(
            f"{str(root)!r} already exists; new_plugin never overwrites files. Choose another name or "
            f"directory, or remove it first."
        )
    parent.mkdir(parents=True, exist_ok=True)
    spec = PLUGIN_KINDS[kind]
    attr = _attribute_name(kind, component)
    tokens = {
        "__DIST__": name,
        "__PACKAGE__": package,
        "__COMPONENT__": component,
        "__ATTR__": attr,
        "__MODULE__": spec.module,
        "__GROUP__": spec.group,
        "__KIND__": kind,
        "__REGISTRY__": next(plural for plural, singular in _PLURALS.items() if singular == kind),
        "__KIND_SUMMARY__": spec.summary,
        "__LTTK_VERSION__": __version__,
    }
    written = {
        "pyproject.toml": _template("pyproject.toml"),
        "README.md": _template("README.md"),
        f"src/{package}/__init__.py": _template("package_init.py"),
        f"src/{package}/py.typed": "",
        f"src/{package}/{spec.module}.py": _template(f"components/{kind}.py"),
        f"tests/test_{package}.py": _template(f"tests/{kind}.py"),
        f"tests/test_{package}_entry_point.py": _template("tests/entry_point.py"),
    }
    # Written into a hidden sibling first and renamed at the end: a failure leaves no half-made package.
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=parent))
    try:
        for relative, template in written.items():
            path = staging / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(_fill(template, tokens), encoding="utf-8")
        if root.exists():
            raise PluginExistsError(f"{str(root)!r} appeared while the plugin was being written; nothing was changed")
        os.rename(staging, root)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return root


def _attribute_name(kind: str, component: str) -> str:
    suffix = PLUGIN_KINDS[kind].suffix
    if not suffix:  # the factory is a function named like the component
        attr = component
    else:
        camel = _camel(component)
        attr = camel if camel.endswith(suffix) else camel + suffix
    taken = _template_names(kind)
    if keyword.iskeyword(attr) or attr in taken or attr in dir(builtins):
        raise ConfigError(
            f"component name {component!r} would define {attr!r} in the generated {kind} module, which clashes "
            f"with a Python keyword, a builtin or a name the module imports; pass another component name"
        )
    return attr


def _template_names(kind: str) -> set[str]:
    """Module-level names of the generated component and test modules, the component's own excepted."""
    names: set[str] = set()
    for template in (_template(f"components/{kind}.py"), _template(f"tests/{kind}.py")):
        tree = ast.parse(re.sub(r"__[A-Z][A-Z_]*__", "placeholder", template))
        for node in tree.body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
            elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names.update(target.id for target in targets if isinstance(target, ast.Name))
    return names - {"placeholder"}


def _fill(template: str, tokens: dict[str, str]) -> str:
    # One pass, longest token first: a value that happens to contain a token is not expanded again.
    pattern = re.compile("|".join(re.escape(token) for token in sorted(tokens, key=len, reverse=True)))
    return pattern.sub(lambda match: tokens[match.group(0)], template).lstrip("\n")
