"""Backbones: lttoolkit's CIFAR ResNets (He et al., CVPR 2016) plus every timm model.

A backbone is built by ``factory(pretrained=False, num_classes=1000, in_chans=3,
**options)`` and has timm's model interface: ``forward_features``,
``forward_head(x, pre_logits=False)``, ``num_features``,
``reset_classifier(num_classes, global_pool=None)``, ``get_classifier()``,
``feature_info`` and ``pretrained_cfg``. Names not registered in
:data:`lttoolkit.BACKBONES` are looked up in timm.

>>> from lttoolkit.backbones import create_backbone
>>> create_backbone("resnet32_cifar", num_classes=10).num_features
64
"""

from __future__ import annotations

from typing import Any, Mapping

from torch import nn

from lttoolkit.backbones.cifar_resnet import (
    CifarResNet,
    resnet20_cifar,
    resnet32_cifar,
    resnet44_cifar,
    resnet56_cifar,
    resnet110_cifar,
)
from lttoolkit.errors import ComponentContractError, ConfigError
from lttoolkit.registry import BACKBONES, parse_spec

__all__ = [
    "create_backbone",
    "check_backbone_interface",
    "check_built_backbone",
    "CifarResNet",
    "resnet20_cifar",
    "resnet32_cifar",
    "resnet44_cifar",
    "resnet56_cifar",
    "resnet110_cifar",
]

_FEATURE_INFO_KEYS = ("num_chs", "reduction", "module")


def create_backbone(
    name_or_spec: str | Mapping[str, Any],
    *,
    pretrained: bool = False,
    num_classes: int = 1000,
    in_chans: int = 3,
    **options: Any,
) -> nn.Module:
    """Build a backbone by name (or ``{"type": name, ...}``) from :data:`lttoolkit.BACKBONES`.

    Keys of a dict spec override the keyword defaults; a keyword set to a value
    other than its default that contradicts the dict raises :class:`ConfigError`.
    Backbones from plugins are checked with :func:`check_backbone_interface` (the
    backbone registry's validator).

    Args:
        name_or_spec: a registered name, any timm model name, or a dict with ``"type"``.
        pretrained: load pretrained weights (raises PretrainedWeightsError when impossible).
        num_classes: classifier outputs; 0 removes the classifier.
        in_chans: input channels.
        **options: further options of the backbone (``drop_rate``, ``global_pool``, ...).

    Returns:
        The backbone module.

    >>> model = create_backbone({"type": "resnet20_cifar", "num_classes": 100}, in_chans=1)
    >>> model.fc.out_features, model.conv1.in_channels
    (100, 1)
    """
    name, spec_options = parse_spec(name_or_spec, kind="backbone")
    merged: dict[str, Any] = {}
    for key, value, default in (
        ("pretrained", pretrained, False),
        ("num_classes", num_classes, 1000),
        ("in_chans", in_chans, 3),
    ):
        if key in spec_options and value != default and spec_options[key] != value:
            raise ConfigError(
                f"backbone {name!r}: {key}={spec_options[key]!r} in the spec contradicts {key}={value!r} "
                f"passed to create_backbone; set it in one place."
            )
        merged[key] = spec_options.pop(key, value)
    merged.update(spec_options)
    merged.update(options)
    return BACKBONES.build(name, **merged)


def check_built_backbone(model: Any, *, who: str, options: Mapping[str, Any]) -> None:
    """What :data:`lttoolkit.BACKBONES` checks a plugin's backbone for: timm's interface."""
    check_backbone_interface(model, label=who)


def check_backbone_interface(model: Any, *, name: str | None = None, label: str | None = None) -> None:
    """Check that ``model`` has timm's backbone interface; raise naming everything missing.

    Args:
        model: the module to check.
        name: the backbone's registered name, for the message.
        label: how the message names it instead (``"backbone 'x' from my-dist 1.0"``).

    Raises:
        ComponentContractError: ``model`` is not an ``nn.Module`` or lacks part of the interface.

    >>> from torch import nn
    >>> check_backbone_interface(nn.Linear(2, 2))
    Traceback (most recent call last):
    ...
    lttoolkit.errors.ComponentContractError: backbone Linear lacks ...: missing or invalid forward_features(), ...
    """
    if label is None:
        label = f"backbone {name!r}" if name else f"backbone {type(model).__name__}"
    if not isinstance(model, nn.Module):
        raise ComponentContractError(f"{label} must be a torch.nn.Module, got {type(model).__name__}")
    problems: list[str] = []
    for method in ("forward_features", "forward_head", "reset_classifier", "get_classifier"):
        if not callable(getattr(model, method, None)):
            problems.append(f"{method}()")
    num_features = getattr(model, "num_features", None)
    if not isinstance(num_features, int) or isinstance(num_features, bool) or num_features <= 0:
        problems.append(f"num_features (a positive int, got {num_features!r})")
    feature_info = getattr(model, "feature_info", None)
    if feature_info is None:
        problems.append("feature_info")
    else:
        # timm models hold a list of dicts; features_only wrappers a FeatureInfo with .info
        entries = getattr(feature_info, "info", feature_info)
        if not isinstance(entries, (list, tuple)) or not all(
            isinstance(e, Mapping) and all(k in e for k in _FEATURE_INFO_KEYS) for e in entries
        ):
            problems.append(f"feature_info (a list of dicts with keys {', '.join(_FEATURE_INFO_KEYS)})")
    if problems:
        raise ComponentContractError(
            f"{label} lacks timm's backbone interface: missing or invalid {', '.join(problems)}. "
            f"Subclass a timm model, or add these members (see timm's ResNet for their meaning)."
        )
