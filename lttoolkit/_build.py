"""``build()``: the one call that turns a method name and options into a model."""

from __future__ import annotations

from typing import Any, Mapping

from torch import nn

from lttoolkit.errors import ConfigError
from lttoolkit.registry import METHODS

__all__ = ["build"]


def build(method: str | Mapping[str, Any] = "bbn", /, **options: Any) -> nn.Module:
    """Build a model from the methods registry.

    Args:
        method: a method name (``"bbn"``, ``"ce"``, a plugin's) or a
            ``{"type": name, **options}`` dict.
        **options: the method's options, e.g. ``backbone``, ``num_classes``
            (default 1000), ``pretrained`` (default False) and every piece of
            the recipe (``sampler``, ``loss``, ``schedule``), each a name or a
            ``{"type": name, **options}`` dict.

    Returns:
        An ``nn.Module`` whose ``model(x)`` gives logits, carrying ``.recipe``.

    Raises:
        UnknownComponentError: an unknown method or piece (with suggestions).
        UnknownOptionError: an option the method or a piece does not take.
        ConfigError: ``num_classes`` or ``in_chans`` is not a whole number >= 1.

    >>> from lttoolkit import build
    >>> model = build("bbn", backbone="resnet32_cifar", num_classes=10, loss={"type": "focal", "gamma": 1.0})
    >>> type(model).__name__, model.recipe.loss.options
    ('BilateralWrapper', {'gamma': 1.0})
    """
    for key in ("num_classes", "in_chans"):  # checked here: deep inside a backbone they are a cryptic TypeError
        value = options.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ConfigError(f"build(): {key} must be a whole number of at least 1, got {value!r} "
                              f"({type(value).__name__})")
    model = METHODS.build(method, **options)
    if not isinstance(model, nn.Module):
        name = method if isinstance(method, str) else method.get("type")
        raise TypeError(f"method {name!r} returned {type(model).__name__}, not an nn.Module")
    return model
