"""Scaffold a new plugin package: ``new_plugin("my-lt-losses", Path("."), kind="loss")``.

The package it writes is ready to install (``pip install ./my-lt-losses``) and
to publish. It holds:

* ``pyproject.toml`` (setuptools) declaring one entry point in the kind's group
  (``lttoolkit.losses``, ...), named after the component;
* ``src/<package>/`` with one working example component of that kind, written
  against the protocol pinned in ``docs/plugins.md`` (docstring, type hints);
* ``tests/test_<package>.py``, which imports the component and checks the
  contract (and, once the package is installed, that lttoolkit lists it with the
  distribution's name as its source);
* ``README.md``.

The component is found through its entry point only; importing the package
registers nothing, so the same code works installed or not.

>>> import tempfile
>>> from pathlib import Path
>>> with tempfile.TemporaryDirectory() as tmp:
...     root = new_plugin("my-lt-losses", Path(tmp), kind="loss")
...     sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
['README.md', 'pyproject.toml', 'src/my_lt_losses/__init__.py', 'src/my_lt_losses/loss.py',
 'src/my_lt_losses/py.typed', 'tests/test_my_lt_losses.py']
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
}
_PLURALS = {"samplers": "sampler", "losses": "loss", "schedules": "schedule", "backbones": "backbone",
            "methods": "method"}

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
        kind: ``"sampler"``, ``"loss"``, ``"schedule"``, ``"backbone"`` or
            ``"method"`` (plural forms are accepted too).
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
    files = {
        "pyproject.toml": _PYPROJECT,
        "README.md": _README,
        f"src/{package}/__init__.py": _INIT,
        f"src/{package}/py.typed": "",
        f"src/{package}/{spec.module}.py": _COMPONENTS[kind],
        f"tests/test_{package}.py": _test_module(kind),
    }
    # Written into a hidden sibling first and renamed at the end: a failure leaves no half-made package.
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=parent))
    try:
        for relative, template in files.items():
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
    for template in (_COMPONENTS[kind], _test_module(kind)):
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


def _test_module(kind: str) -> str:
    imports, tests = _TESTS[kind]
    header = _TEST_HEADER.strip("\n").replace("__KIND_IMPORTS__", imports.strip("\n"))
    return f"{header}\n\n\n{_TEST_ENTRY_POINT.strip(chr(10))}\n\n\n{tests.strip(chr(10))}\n"


def _fill(template: str, tokens: dict[str, str]) -> str:
    # One pass, longest token first: a value that happens to contain a token is not expanded again.
    pattern = re.compile("|".join(re.escape(token) for token in sorted(tokens, key=len, reverse=True)))
    return pattern.sub(lambda match: tokens[match.group(0)], template).lstrip("\n")


# ----------------------------------------------------------------------------- templates
_PYPROJECT = '''
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "__DIST__"
version = "0.1.0"
description = "An lttoolkit plugin: __KIND_SUMMARY__ (__COMPONENT__)."
readme = "README.md"
requires-python = ">=3.10"
dependencies = ["lttoolkit>=__LTTK_VERSION__"]

[project.optional-dependencies]
test = ["pytest>=7.4"]

# The entry point's name is the component's name in lttoolkit; its value is the factory.
[project.entry-points."__GROUP__"]
__COMPONENT__ = "__PACKAGE__.__MODULE__:__ATTR__"

[tool.setuptools.packages.find]
where = ["src"]

[tool.setuptools.package-data]
__PACKAGE__ = ["py.typed"]

[tool.pytest.ini_options]
testpaths = ["tests"]
'''

_README = '''
# __DIST__

An [lttoolkit](https://github.com/lttoolkit/lttoolkit) plugin providing __KIND_SUMMARY__,
`__COMPONENT__` (`__PACKAGE__.__MODULE__:__ATTR__`).

## Install and check

```bash
pip install .                      # or: pip install -e .
lttk list-components __REGISTRY__  # lists __COMPONENT__ with source "__DIST__ 0.1.0"
python -m pytest tests             # the contract tests
```

## How it plugs in

`pyproject.toml` declares the entry point

```toml
[project.entry-points."__GROUP__"]
__COMPONENT__ = "__PACKAGE__.__MODULE__:__ATTR__"
```

lttoolkit reads it when it first looks a __KIND__ up and imports
`__PACKAGE__.__MODULE__` only when `__COMPONENT__` is used. The protocol a
__KIND__ must follow is pinned in lttoolkit's `docs/plugins.md`; the example in
`src/__PACKAGE__/__MODULE__.py` follows it. Replace its body with your own
and keep the tests passing.

To try a component before packaging it, a plain module can register it with
lttoolkit's decorators and be loaded with `lttk --plugin <module>` (see
`docs/plugins.md`); this package needs neither.
'''

_INIT = '''
"""__DIST__: an lttoolkit plugin providing __KIND_SUMMARY__, ``__COMPONENT__``.

lttoolkit finds it through the ``__GROUP__`` entry point in ``pyproject.toml``;
importing this package registers nothing by itself.
"""

from __future__ import annotations

from __PACKAGE__.__MODULE__ import __ATTR__

__all__ = ["__ATTR__"]
__version__ = "0.1.0"
'''

_COMPONENTS: dict[str, str] = {}
_TESTS: dict[str, tuple[str, str]] = {}  # kind -> (imports, tests)

_COMPONENTS["sampler"] = '''
"""``__COMPONENT__``: class-frequency-power sampling, an example lttoolkit sampler.

Class ``i`` is drawn with probability proportional to ``N_i ** power``, then an
image uniformly within it: ``power = 1`` is instance-balanced sampling,
``power = 0`` class-balanced and ``power = 0.5`` square-root sampling (Mahajan
et al., "Exploring the Limits of Weakly Supervised Pretraining", ECCV 2018).

Protocol (lttoolkit ``docs/plugins.md``): ``factory(labels, *, seed=0,
num_replicas=1, rank=0, **options)`` returning a sampler with ``set_epoch``
whose stream depends only on ``(seed, epoch)``. Subclassing
``ClassWeightedSampler`` and implementing ``class_weights`` provides all of it.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from lttoolkit.errors import ConfigError
from lttoolkit.samplers import ClassWeightedSampler

__all__ = ["__ATTR__"]


class __ATTR__(ClassWeightedSampler):
    """Class ``i`` drawn with weight ``N_i ** power``, then an image uniformly within it.

    Args:
        labels: class index of every image, in dataset order.
        power: exponent of the class size (0: class-balanced, 1: instance-balanced).
        seed: base seed; the stream depends only on ``(seed, epoch)``.
        num_replicas: number of distributed processes sharing the stream.
        rank: this process's index in ``[0, num_replicas)``.
        num_samples: draws per epoch (default ``len(labels)``).
        num_classes: number of classes (default ``max(labels) + 1``).

    >>> sampler = __ATTR__([0, 0, 0, 0, 1], power=0.5)
    >>> [round(p, 4) for p in sampler.class_probabilities().tolist()]
    [0.6667, 0.3333]
    """

    def __init__(
        self,
        labels: Sequence[int] | torch.Tensor,
        *,
        power: float = 0.5,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        num_samples: int | None = None,
        num_classes: int | None = None,
    ) -> None:
        super().__init__(labels, seed=seed, num_replicas=num_replicas, rank=rank, num_samples=num_samples,
                         num_classes=num_classes)
        if isinstance(power, bool) or not isinstance(power, (int, float)) or not math.isfinite(power):
            raise ConfigError(f"__COMPONENT__: power must be a finite number, got {power!r}")
        self.power = float(power)

    def class_weights(self) -> torch.Tensor:
        """``N_i ** power`` per class (classes without images get probability 0 from the base class)."""
        return self.class_counts.to(torch.float64).clamp(min=1.0).pow(self.power)
'''

_TESTS["sampler"] = (
    '''
from torch.utils.data import Sampler
from lttoolkit.errors import ConfigError
''',
    '''
LABELS = [0] * 16 + [1] * 4 + [2] * 1  # class sizes 16, 4, 1


def test_class_probabilities_by_hand():
    sampler = __ATTR__(LABELS, power=0.5)  # weights 4, 2, 1
    assert sampler.class_probabilities().tolist() == pytest.approx([4 / 7, 2 / 7, 1 / 7])
    assert __ATTR__(LABELS, power=0.0).class_probabilities().tolist() == pytest.approx([1 / 3] * 3)


def test_stream_depends_only_on_seed_and_epoch():
    first, second = __ATTR__(LABELS, seed=1), __ATTR__(LABELS, seed=1)
    first.set_epoch(3)
    second.set_epoch(3)
    assert list(first) == list(second)
    assert len(list(first)) == len(first) == len(LABELS)
    second.set_epoch(4)
    assert list(first) != list(second)
    assert all(0 <= index < len(LABELS) for index in first)


def test_ranks_get_disjoint_equal_shards():
    full = __ATTR__(LABELS, seed=5, num_samples=20)
    shards = [__ATTR__(LABELS, seed=5, num_samples=20, num_replicas=2, rank=rank) for rank in range(2)]
    positions = [list(range(rank, 20, 2)) for rank in range(2)]
    stream = list(full)
    for shard, taken in zip(shards, positions):
        assert list(shard) == [stream[p] for p in taken]


def test_factory_protocol_options():
    sampler = __ATTR__(labels=LABELS, seed=0, num_replicas=1, rank=0, power=1.0)
    assert isinstance(sampler, Sampler)
    with pytest.raises(ConfigError):
        __ATTR__(LABELS, power=float("nan"))
''',
)

_COMPONENTS["loss"] = '''
"""``__COMPONENT__``: cross-entropy on prior-shifted logits, an example lttoolkit loss.

The loss is cross-entropy on ``z + tau * log(prior)``, the logit-adjusted loss
of Menon et al., "Long-tail Learning via Logit Adjustment", ICLR 2021: during
training frequent classes get a head start, so the model learns to score rare
classes higher. ``tau = 0`` is plain cross-entropy.

Protocol (lttoolkit ``docs/plugins.md``): ``factory(class_counts, **options)``
returning an ``nn.Module`` whose ``forward(logits, targets)`` is a scalar.
Subclassing ``LongTailLoss`` and overriding ``per_sample_loss`` adds shape
checks, the re-weighting options and deferred re-weighting (``set_epoch``).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from lttoolkit.errors import ConfigError
from lttoolkit.losses import LongTailLoss

__all__ = ["__ATTR__"]


class __ATTR__(LongTailLoss):
    """Cross-entropy on ``logits + tau * log(prior)``, with ``prior = N_i / sum N``.

    Args:
        class_counts: training samples per class (empty classes count as one).
        tau: scale of the prior shift, ``>= 0``.
        reweight: per-class weighting of the batch mean (``"none"``, ``"inverse"``, ...).
        beta: effective-number hyper-parameter for ``reweight="effective_number"``.
        drw_epoch: deferred re-weighting start epoch (``None``: from the start).

    >>> loss = __ATTR__([3, 1], tau=1.0)
    >>> round(loss(torch.zeros(1, 2), torch.tensor([1])).item(), 4)  # -log(1/4)
    1.3863
    """

    log_prior: Tensor

    def __init__(
        self,
        class_counts: Sequence[int] | Tensor,
        *,
        tau: float = 1.0,
        reweight: str = "none",
        beta: float = 0.9999,
        drw_epoch: int | None = None,
    ) -> None:
        super().__init__(class_counts, reweight=reweight, beta=beta, drw_epoch=drw_epoch)
        if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not math.isfinite(tau) or tau < 0:
            raise ConfigError(f"__COMPONENT__: tau must be a finite number >= 0, got {tau!r}")
        self.tau = float(tau)
        counts = self.class_counts.to(torch.float32).clamp(min=1.0)
        self.register_buffer("log_prior", (counts / counts.sum()).log())

    def per_sample_loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        return F.cross_entropy(logits + self.tau * self.log_prior.to(logits.dtype), targets, reduction="none")
'''

_TESTS["loss"] = (
    '''
import torch
import torch.nn.functional as F
from lttoolkit.errors import ConfigError
''',
    '''

def test_value_by_hand():
    loss = __ATTR__([3, 1], tau=1.0)  # prior [3/4, 1/4]
    # zero logits: loss = -log(prior[target])
    assert loss(torch.zeros(1, 2), torch.tensor([1])).item() == pytest.approx(1.3862944)  # log 4
    assert loss(torch.zeros(1, 2), torch.tensor([0])).item() == pytest.approx(0.2876821)  # log 4/3


def test_tau_zero_is_cross_entropy():
    logits, targets = torch.randn(8, 4), torch.randint(0, 4, (8,))
    torch.testing.assert_close(__ATTR__([50, 20, 5, 1], tau=0.0)(logits, targets), F.cross_entropy(logits, targets))


def test_protocol_scalar_finite_gradients_and_set_epoch():
    loss = __ATTR__(class_counts=[100, 10, 1])  # factory(class_counts, **options)
    assert isinstance(loss, torch.nn.Module)
    logits = torch.randn(5, 3, requires_grad=True)
    value = loss(logits, torch.tensor([0, 1, 2, 0, 1]))
    assert value.dim() == 0 and torch.isfinite(value)
    value.backward()
    assert torch.isfinite(logits.grad).all()
    loss.set_epoch(0, 10)


def test_invalid_option():
    with pytest.raises(ConfigError):
        __ATTR__([10, 1], tau=-1.0)
''',
)

_COMPONENTS["schedule"] = '''
"""``__COMPONENT__``: a power-law decay of alpha, an example lttoolkit alpha schedule.

BBN's cumulative learning (Zhou et al., CVPR 2020) weights the conventional
branch by ``alpha`` and the re-balancing branch by ``1 - alpha``. This schedule
decays ``alpha = 1 - (T / T_max) ** power``: ``power = 2`` is BBN's parabolic
default, ``power = 1`` the linear decay.

Protocol (lttoolkit ``docs/plugins.md``): ``factory(**options)`` returning an
object with ``__call__(epoch, max_epochs) -> float`` in ``[0, 1]`` (0-based epochs).
"""

from __future__ import annotations

import math

from lttoolkit.errors import ConfigError

__all__ = ["__ATTR__"]


class __ATTR__:
    """alpha = 1 - (epoch / max_epochs) ** power.

    Args:
        power: exponent, ``> 0`` (2: BBN's parabolic decay).

    >>> __ATTR__(power=2.0)(5, 10)
    0.75
    """

    def __init__(self, power: float = 2.0) -> None:
        if isinstance(power, bool) or not isinstance(power, (int, float)) or not math.isfinite(power) or power <= 0:
            raise ConfigError(f"__COMPONENT__: power must be a finite number > 0, got {power!r}")
        self.power = float(power)

    def __call__(self, epoch: int, max_epochs: int) -> float:
        if max_epochs < 1:
            raise ConfigError(f"__COMPONENT__: max_epochs must be >= 1, got {max_epochs}")
        progress = min(max(epoch / max_epochs, 0.0), 1.0)
        return 1.0 - progress**self.power

    def __repr__(self) -> str:
        return f"__ATTR__(power={self.power})"
'''

_TESTS["schedule"] = (
    '''
from lttoolkit.errors import ConfigError
from lttoolkit.schedules import checked_alpha
''',
    '''

def test_values_by_hand():
    schedule = __ATTR__(power=2.0)
    assert [schedule(epoch, 4) for epoch in range(4)] == pytest.approx([1.0, 1 - 1 / 16, 0.75, 1 - 9 / 16])
    assert __ATTR__(power=1.0)(3, 4) == pytest.approx(0.25)


@pytest.mark.parametrize("power", [0.5, 1.0, 2.0, 5.0])
def test_alpha_in_unit_interval_and_non_increasing(power):
    schedule = __ATTR__(power=power)  # factory(**options)
    values = [checked_alpha(schedule, epoch, 20) for epoch in range(20)]
    assert values[0] == 1.0
    assert all(later <= earlier for earlier, later in zip(values, values[1:]))


def test_invalid_option():
    with pytest.raises(ConfigError):
        __ATTR__(power=0.0)
''',
)

_COMPONENTS["backbone"] = '''
"""``__COMPONENT__``: a two-stage plain ConvNet, an example lttoolkit backbone.

Protocol (lttoolkit ``docs/plugins.md``): ``factory(pretrained=False,
num_classes=1000, in_chans=3, **options)`` returning an ``nn.Module`` with
timm's interface: ``forward_features``, ``forward_head(x, pre_logits=...)``,
``num_features``, ``reset_classifier``, ``get_classifier`` and
``feature_info``, whose last entry names the module (an ``nn.Sequential`` of
blocks) where BBN's wrapper duplicates the last block.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from lttoolkit.errors import PretrainedWeightsError

__all__ = ["__ATTR__", "Block"]


class Block(nn.Module):
    """3x3 convolution, batch norm, ReLU."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, 3, stride=stride, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(out_chs)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.bn(self.conv(x)))


class Network(nn.Module):
    """Stem, two stages of two blocks (``width`` and ``2 * width`` channels), average pooling, classifier.

    Args:
        num_classes: classifier outputs (0: none).
        in_chans: input channels.
        width: channels of the first stage.
    """

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, width: int = 16) -> None:
        super().__init__()
        self.stem = Block(in_chans, width)
        self.stages = nn.Sequential(
            nn.Sequential(Block(width, width), Block(width, width)),
            nn.Sequential(Block(width, 2 * width, stride=2), Block(2 * width, 2 * width)),
        )
        self.num_features = 2 * width
        self.feature_info: list[dict[str, Any]] = [
            {"num_chs": width, "reduction": 1, "module": "stages.0"},
            {"num_chs": 2 * width, "reduction": 2, "module": "stages.1"},
        ]
        self.fc: nn.Module = nn.Identity()
        self.reset_classifier(num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.stages(self.stem(x))

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = x.mean(dim=(2, 3))
        return x if pre_logits else self.fc(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()


def __ATTR__(pretrained: bool = False, num_classes: int = 1000, in_chans: int = 3, *, width: int = 16) -> Network:
    """A small two-stage ConvNet (no pretrained weights).

    Args:
        pretrained: must be False: there are no weights to load.
        num_classes: classifier outputs (0: none).
        in_chans: input channels.
        width: channels of the first stage.

    Returns:
        A :class:`Network`.

    >>> import torch
    >>> __ATTR__(num_classes=10)(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 10])
    """
    if pretrained:
        raise PretrainedWeightsError("__COMPONENT__ has no pretrained weights; pass pretrained=False")
    return Network(num_classes=num_classes, in_chans=in_chans, width=width)
'''

_TESTS["backbone"] = (
    '''
import torch
from torch import nn
from lttoolkit import BilateralWrapper
from lttoolkit.backbones import check_backbone_interface
from lttoolkit.errors import PretrainedWeightsError
''',
    '''

def test_timm_interface():
    model = __ATTR__(pretrained=False, num_classes=10, in_chans=3)  # the factory protocol
    check_backbone_interface(model, name="__COMPONENT__")
    x = torch.randn(2, 3, 32, 32)
    assert model.eval()(x).shape == (2, 10)
    assert model.forward_head(model.forward_features(x), pre_logits=True).shape == (2, model.num_features)
    model.reset_classifier(0)
    assert isinstance(model.get_classifier(), nn.Identity)


def test_grey_input():
    assert __ATTR__(num_classes=3, in_chans=1).eval()(torch.randn(2, 1, 28, 28)).shape == (2, 3)


def test_bbn_wrapper_can_split_it():
    wrapper = BilateralWrapper(__ATTR__(num_classes=10), num_classes=10)
    assert wrapper.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    logits = wrapper.train()(torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32), alpha=0.5)
    assert logits.shape == (4, 10)


def test_pretrained_is_refused():
    with pytest.raises(PretrainedWeightsError):
        __ATTR__(pretrained=True)
''',
)

_COMPONENTS["method"] = '''
"""``__COMPONENT__``: a single-branch model with class-balanced sampling, an example lttoolkit method.

Class-balanced sampling (every class equally likely, then an image uniformly
within it) with cross-entropy on a plain backbone: a classic re-sampling
baseline for long-tailed recognition (see Kang et al., "Decoupling
Representation and Classifier for Long-Tailed Recognition", ICLR 2020).

Protocol (lttoolkit ``docs/plugins.md``): ``factory(**options)`` returning an
``nn.Module`` that carries ``.recipe`` and has ``training_kwargs`` and
``combine_loss``; lttoolkit's ``single_branch`` helper builds exactly that.
"""

from __future__ import annotations

from typing import Any, Mapping

from lttoolkit.methods import SingleBranchModel
from lttoolkit.methods.single_branch import single_branch

__all__ = ["__ATTR__"]

Spec = str | Mapping[str, Any]


def __ATTR__(
    backbone: Spec = "resnet32_cifar",
    *,
    num_classes: int = 1000,
    pretrained: bool = False,
    in_chans: int = 3,
    sampler: Spec = "class_balanced",
    loss: Spec = "cross_entropy",
) -> SingleBranchModel:
    """Plain backbone, class-balanced sampling, cross-entropy.

    Args:
        backbone: any backbone name or ``{"type": name, **options}``.
        num_classes: classifier outputs.
        pretrained: load the backbone's pretrained weights.
        in_chans: input channels.
        sampler: the training sampler.
        loss: the loss.

    Returns:
        A ``SingleBranchModel`` carrying ``.recipe``.
    """
    return single_branch("__COMPONENT__", backbone, num_classes=num_classes, pretrained=pretrained,
                         in_chans=in_chans, sampler=sampler, loss=loss)
'''

_TESTS["method"] = (
    '''
import torch
from lttoolkit import Recipe
from lttoolkit.errors import LTToolkitError
''',
    '''

def test_builds_a_model_with_a_recipe():
    model = __ATTR__(backbone="resnet20_cifar", num_classes=5)  # factory(**options)
    assert isinstance(model, torch.nn.Module)
    assert isinstance(model.recipe, Recipe)
    assert model.recipe.method == "__COMPONENT__"
    assert model.recipe.samplers["main"].type == "class_balanced"
    assert model.recipe.loss.type == "cross_entropy"


def test_one_training_step_and_inference():
    model = __ATTR__(backbone="resnet20_cifar", num_classes=3)
    kwargs = model.training_kwargs(0, 10)
    images, targets = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])
    logits = model.train()(images, **kwargs)
    loss = model.combine_loss(torch.nn.CrossEntropyLoss(), logits, [targets], **kwargs)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert model.eval()(images).shape == (4, 3)


def test_unknown_piece_fails_at_build_time():
    with pytest.raises(LTToolkitError):
        __ATTR__(backbone="resnet20_cifar", num_classes=3, sampler="no_such_sampler")
''',
)

_TEST_HEADER = '''
"""Contract tests for ``__COMPONENT__`` (__KIND__ plugin of the ``__DIST__`` distribution)."""

from __future__ import annotations

from importlib import metadata

import pytest
__KIND_IMPORTS__

from __PACKAGE__ import __ATTR__
'''

_TEST_ENTRY_POINT = '''

def test_entry_point_is_installed_and_listed():
    """Once installed, lttoolkit lists the component with this distribution as its source."""
    try:
        dist = metadata.distribution("__DIST__")
    except metadata.PackageNotFoundError:
        pytest.skip("__DIST__ is not installed (pip install -e .)")
    points = [ep for ep in dist.entry_points if ep.group == "__GROUP__" and ep.name == "__COMPONENT__"]
    assert [ep.value for ep in points] == ["__PACKAGE__.__MODULE__:__ATTR__"]
    from lttoolkit import ALL_REGISTRIES

    registry = ALL_REGISTRIES["__REGISTRY__"]
    entry = registry.entry("__COMPONENT__")
    assert entry.source == f"__DIST__ {dist.version}"
    registry.get("__COMPONENT__")  # imports the module; a broken plugin raises PluginLoadError
    assert entry.status == "ok", entry.describe_error()
'''
