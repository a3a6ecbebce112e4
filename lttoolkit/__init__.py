"""lttoolkit: a pluggable toolkit for long-tailed visual recognition.

BBN (Zhou et al., CVPR 2020) and the methods it is compared to are assembled
from registered pieces (samplers, losses, alpha schedules, timm backbones).
Third-party packages add pieces through entry points.

The public API is what ``__all__`` lists. Names are imported lazily (PEP 562)
so that ``import lttoolkit`` and the CLI's listing commands stay fast: torch
and timm are imported the first time something needs them. lttoolkit's CIFAR
ResNets join timm's registry when :mod:`lttoolkit.backbones` is imported (any
build does it): ``import lttoolkit.backbones`` before
``timm.create_model("resnet32_cifar")``.

>>> import lttoolkit
>>> "bbn" in lttoolkit.METHODS
True
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from lttoolkit._version import __version__
from lttoolkit.registry import (
    ALL_REGISTRIES,
    BACKBONES,
    LOSSES,
    METHODS,
    SAMPLERS,
    SCHEDULES,
    Registry,
    load_plugin,
)

# name -> module that defines it; resolved on first attribute access.
_LAZY: dict[str, str] = {
    "build": "lttoolkit._build",
    "Recipe": "lttoolkit.recipe",
    "ComponentSpec": "lttoolkit.recipe",
    "BilateralWrapper": "lttoolkit.methods.bilateral",
    "SingleBranchModel": "lttoolkit.methods.single_branch",
    "MultiExpertWrapper": "lttoolkit.methods.multi_expert",
    "BilateralExperts": "lttoolkit.methods.multi_expert",
    "create_backbone": "lttoolkit.backbones",
    "find_last_block": "lttoolkit.methods.bilateral",
    "Classifier": "lttoolkit.inference",
    "export_checkpoint": "lttoolkit.export",
    "bbn_logits": "lttoolkit.methods.bilateral",
    "bbn_loss": "lttoolkit.methods.bilateral",
    "load_official_bbn": "lttoolkit.methods.bbn_official",
    "convert_official_bbn": "lttoolkit.methods.bbn_official",
    "errors": "lttoolkit.errors",
}

__all__ = [
    "__version__",
    "build",
    "load_plugin",
    "Registry",
    "Recipe",
    "ComponentSpec",
    "BilateralWrapper",
    "SingleBranchModel",
    "MultiExpertWrapper",
    "BilateralExperts",
    "create_backbone",
    "find_last_block",
    "Classifier",
    "export_checkpoint",
    "bbn_logits",
    "bbn_loss",
    "load_official_bbn",
    "convert_official_bbn",
    "SAMPLERS",
    "LOSSES",
    "SCHEDULES",
    "BACKBONES",
    "METHODS",
    "ALL_REGISTRIES",
    "errors",
]

if TYPE_CHECKING:  # for type checkers and IDEs; at run time these load lazily
    from lttoolkit import errors
    from lttoolkit.backbones import create_backbone
    from lttoolkit._build import build
    from lttoolkit.export import export_checkpoint
    from lttoolkit.inference import Classifier
    from lttoolkit.methods.bbn_official import convert_official_bbn, load_official_bbn
    from lttoolkit.methods.bilateral import BilateralWrapper, bbn_logits, bbn_loss, find_last_block
    from lttoolkit.methods.multi_expert import BilateralExperts, MultiExpertWrapper
    from lttoolkit.methods.single_branch import SingleBranchModel
    from lttoolkit.recipe import ComponentSpec, Recipe


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'lttoolkit' has no attribute {name!r}")
    mod = importlib.import_module(module)
    value = mod if name == "errors" else getattr(mod, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
