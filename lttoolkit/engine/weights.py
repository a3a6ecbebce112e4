"""Start a run from another run's weights (``--from`` / ``init_from``), loading what fits.

Loading is by name and shape, never strict: a tensor of the model is taken from the
checkpoint when the checkpoint has one of the same name and shape, and keeps its
initialisation otherwise. Two cases need more than names:

- **CE -> BBN.** A single-branch checkpoint has one last block where BBN has two copies
  (``<block>.conventional.*`` and ``<block>.rebalancing.*``): both copies take the single
  block's weights.
- **Another number of classes.** The classifier's shape differs, so it is skipped and stays
  freshly initialised (fine-tuning to a new label set).

What was loaded, taken through an alias, skipped for its shape, excluded by a pattern,
left initialised, and what of the checkpoint went unused is returned as an
:class:`InitReport`, which the trainer prints and writes into ``results.json``.

>>> import torch
>>> from lttoolkit import build
>>> ce = build("ce", backbone="resnet20_cifar", num_classes=10)
>>> bbn = build("bbn", backbone="resnet20_cifar", num_classes=5)
>>> report = load_matching_weights(bbn, ce.state_dict())
>>> report.aliased["backbone.layer3.2.rebalancing.conv1.weight"]
'backbone.layer3.2.conv1.weight'
>>> torch.equal(bbn.backbone.layer3[2].rebalancing.conv1.weight, ce.backbone.layer3[2].conv1.weight)
True
>>> report.initialised  # BBN's classifier takes [f_c ; f_r]: nothing of CE's fits it
['classifier.weight', 'classifier.bias']
"""

from __future__ import annotations

import fnmatch
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

import torch
from torch import nn

__all__ = ["InitReport", "load_matching_weights", "weight_aliases"]


@dataclass
class InitReport:
    """What :func:`load_matching_weights` did, tensor by tensor (state-dict keys of the model).

    Attributes:
        loaded: taken from the checkpoint under the same name.
        aliased: taken from another name of the checkpoint (model key -> checkpoint key).
        shape_mismatch: model key -> ``"checkpoint shape -> model shape"``; left initialised.
        excluded: matched an ``exclude`` pattern; left initialised.
        initialised: every model key not loaded (shape mismatches, exclusions and keys the
            checkpoint lacks), in the model's initialisation.
        unused: checkpoint keys that went nowhere.
    """

    loaded: list[str] = field(default_factory=list)
    aliased: dict[str, str] = field(default_factory=dict)
    shape_mismatch: dict[str, str] = field(default_factory=dict)
    excluded: list[str] = field(default_factory=list)
    initialised: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)

    @property
    def num_loaded(self) -> int:
        return len(self.loaded) + len(self.aliased)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self, limit: int = 6) -> str:
        """One paragraph for the log.

        >>> InitReport(loaded=["a", "b"], aliased={"c": "d"}, initialised=["e"], unused=["f"]).summary()
        'loaded 3 tensors (1 from another name: c <- d); initialised: e; unused in the checkpoint: f'
        """
        def names(keys: Sequence[str]) -> str:
            keys = _collapse(list(keys))
            return ", ".join(keys[:limit]) + (f" and {len(keys) - limit} more" if len(keys) > limit else "")

        parts = [f"loaded {self.num_loaded} tensors"]
        if self.aliased:
            shown = [f"{k} <- {v}" for k, v in list(self.aliased.items())[:2]]
            more = ", ..." if len(self.aliased) > 2 else ""
            parts[0] += f" ({len(self.aliased)} from another name: {', '.join(shown)}{more})"
        if self.shape_mismatch:
            shown = [f"{k} ({v})" for k, v in list(self.shape_mismatch.items())[:limit]]
            parts.append("skipped for their shape: " + ", ".join(shown))
        if self.excluded:
            parts.append("excluded: " + names(self.excluded))
        if self.initialised:
            parts.append("initialised: " + names(self.initialised))
        if self.unused:
            parts.append("unused in the checkpoint: " + names(self.unused))
        return "; ".join(parts)


def _collapse(keys: list[str]) -> list[str]:
    """``a.b.weight, a.b.bias`` -> ``a.b.{weight,bias}``-like prefixes: the module names, each once."""
    modules: dict[str, None] = {}
    for key in keys:
        head, _, leaf = key.rpartition(".")
        modules[f"{head}.*" if head else leaf] = None
    collapsed = list(modules)
    return collapsed if len(collapsed) < len(keys) else keys


def weight_aliases(model: nn.Module) -> dict[str, list[str]]:
    """Other checkpoint names a model key may be taken from.

    Each copy of a duplicated block (BBN's ``BilateralBlock``: ``conventional``,
    ``rebalancing``) may take the single block a single-branch checkpoint holds. A method
    with other layouts can add its own by defining ``init_aliases(key) -> list[str]``.
    """
    from lttoolkit.methods.bilateral import BilateralBlock

    aliases: dict[str, list[str]] = {}
    for prefix, module in model.named_modules():
        if isinstance(module, BilateralBlock):
            for copy_name in ("conventional", "rebalancing"):
                for key in getattr(module, copy_name).state_dict():
                    aliases[f"{prefix}.{copy_name}.{key}"] = [f"{prefix}.{key}"]
    custom = getattr(model, "init_aliases", None)
    if callable(custom):
        for key in model.state_dict():
            extra = list(custom(key) or [])
            if extra:
                aliases[key] = extra + aliases.get(key, [])
    return aliases


def load_matching_weights(model: nn.Module, state_dict: Mapping[str, Any], *,
                          exclude: Sequence[str] = ()) -> InitReport:
    """Copy into ``model`` every checkpoint tensor that fits by name (or alias) and shape.

    Args:
        model: the model to initialise (changed in place).
        state_dict: the checkpoint's weights.
        exclude: shell-style patterns of model keys never to load (``classifier.*``).

    Returns:
        What was loaded and what was not (:class:`InitReport`).
    """
    report = InitReport()
    target = model.state_dict()
    aliases = weight_aliases(model)
    used: set[str] = set()
    chosen: dict[str, torch.Tensor] = {}
    for key, current in target.items():
        if any(fnmatch.fnmatchcase(key, pattern) for pattern in exclude):
            report.excluded.append(key)
            report.initialised.append(key)
            continue
        for source in [key, *aliases.get(key, [])]:
            value = state_dict.get(source)
            if not isinstance(value, torch.Tensor):
                continue
            if tuple(value.shape) != tuple(current.shape):
                report.shape_mismatch.setdefault(key, f"{list(value.shape)} -> {list(current.shape)}")
                continue
            chosen[key] = value
            used.add(source)
            if source == key:
                report.loaded.append(key)
            else:
                report.aliased[key] = source
            report.shape_mismatch.pop(key, None)
            break
        else:
            report.initialised.append(key)
    if chosen:
        model.load_state_dict(chosen, strict=False)
    report.unused = [key for key in state_dict if key not in used]
    return report
