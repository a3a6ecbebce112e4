"""Checkpoints of the official BBN code (megvii-research/BBN) as lttoolkit models.

The official networks (``lib/backbone/resnet_cifar.py``, ``lib/backbone/resnet.py``,
``lib/net/network.py``) name their weights::

    backbone.conv1.* / backbone.bn1.* / backbone.layer1.* ...   the shared trunk
    backbone.cb_block.*                                          conventional copy of the last block
    backbone.rb_block.*                                          re-balancing copy of the last block
    classifier.weight / classifier.bias                          one linear layer reading [f_c ; f_r]

Their trunk holds one block fewer in the last stage (ResNet-32 for CIFAR: ``layer3``
has 4 blocks, then the two copies; ResNet-50: ``layer4`` has 2), so the copies are
lttoolkit's ``backbone.layer3.4.conventional`` / ``.rebalancing`` (``layer4.2`` for
ResNet-50). Inside a block the names agree with lttoolkit's CIFAR ResNet and with
timm's ``resnet50``. The training script saves ``{"state_dict": ..., "epoch": ...}``,
with a ``module.`` prefix under ``DataParallel``; a bare state dict works too.

>>> import torch
>>> model = build_bbn_for("resnet32_cifar", num_classes=10)
>>> official = {"module.backbone.cb_block.conv1.weight": torch.zeros(64, 64, 3, 3)}
>>> list(official_to_lttoolkit(official, "resnet32_cifar"))
['backbone.layer3.4.conventional.conv1.weight']
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor

from lttoolkit.errors import ConfigError

__all__ = [
    "OFFICIAL_ARCHS",
    "official_to_lttoolkit",
    "build_bbn_for",
    "load_official_bbn",
    "convert_official_bbn",
]

#: architecture -> (lttoolkit's path of the duplicated block, input size of the official recipe)
OFFICIAL_ARCHS: dict[str, tuple[str, int]] = {
    "resnet32_cifar": ("layer3.4", 32),  # official bbn_res32_cifar
    "resnet50": ("layer4.2", 224),  # official bbn_res50
}

_COPIES = {"cb_block": "conventional", "rb_block": "rebalancing"}

# Known class names by number of classes, for the run config a conversion records.
_CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _check_arch(arch: str) -> tuple[str, int]:
    if arch not in OFFICIAL_ARCHS:
        raise ConfigError(
            f"official BBN architecture {arch!r} is not supported; use one of {', '.join(OFFICIAL_ARCHS)} "
            f"(the official repository's bbn_res32_cifar and bbn_res50)"
        )
    return OFFICIAL_ARCHS[arch]


def _state_dict_of(checkpoint: Mapping[str, Any]) -> Mapping[str, Any]:
    state = checkpoint.get("state_dict", checkpoint)
    if not isinstance(state, Mapping) or not any(isinstance(v, Tensor) for v in state.values()):
        raise ConfigError(
            "this file holds no state dict: an official BBN checkpoint is {'state_dict': model.state_dict(), ...} "
            "or a bare state dict of tensors"
        )
    return state


def official_to_lttoolkit(state_dict: Mapping[str, Any], arch: str) -> dict[str, Tensor]:
    """Rename an official BBN state dict to lttoolkit's :class:`~lttoolkit.BilateralWrapper` names.

    Strips a ``module.`` prefix, maps ``backbone.cb_block`` / ``backbone.rb_block`` to
    the two copies of the duplicated block and keeps every other name.

    Raises:
        ConfigError: ``arch`` is not one of :data:`OFFICIAL_ARCHS`, or a key is not a BBN weight.
    """
    split, _ = _check_arch(arch)
    renamed: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        if not isinstance(value, Tensor):
            continue
        name = key[len("module."):] if key.startswith("module.") else key
        head, _, rest = name.partition(".")
        if head == "backbone":
            block, _, inner = rest.partition(".")
            if block in _COPIES:
                name = f"backbone.{split}.{_COPIES[block]}.{inner}"
        elif head != "classifier":
            raise ConfigError(
                f"{key!r} is not a weight of the official BBN network (backbone.* or classifier.*); "
                f"is this a checkpoint of megvii-research/BBN's {arch} BBN model?"
            )
        renamed[name] = value
    return renamed


def build_bbn_for(arch: str, *, num_classes: int) -> torch.nn.Module:
    """lttoolkit's BBN with the official network's layout (``bbn`` with the given backbone)."""
    from lttoolkit._build import build

    split, _ = _check_arch(arch)
    return build("bbn", backbone=arch, num_classes=num_classes, split_at=split)


def _read(source: str | os.PathLike[str] | Mapping[str, Any]) -> Mapping[str, Any]:
    if isinstance(source, Mapping):
        return source
    from lttoolkit.engine.checkpoint import load_checkpoint

    return load_checkpoint(source)


def load_official_bbn(source: str | os.PathLike[str] | Mapping[str, Any], *, arch: str) -> torch.nn.Module:
    """An official BBN checkpoint as an lttoolkit BBN model (in eval mode).

    Args:
        source: the official ``.pth`` file (read with ``weights_only=True``), or its dict.
        arch: ``"resnet32_cifar"`` (official ``bbn_res32_cifar``) or ``"resnet50"`` (``bbn_res50``).

    The number of classes is read from the classifier. A classifier saved without a
    bias (``CLASSIFIER.BIAS: False``) gets a zero bias, which computes the same logits.

    Raises:
        ConfigError: the weights are not those of the official BBN network for ``arch``.
    """
    state = official_to_lttoolkit(_state_dict_of(_read(source)), arch)
    weight = state.get("classifier.weight")
    if weight is None or weight.dim() != 2:
        raise ConfigError(
            "the checkpoint has no classifier.weight of shape [classes, features]; an official BBN model with "
            "CLASSIFIER.TYPE 'FCNorm' is not supported (only 'FC')"
        )
    model = build_bbn_for(arch, num_classes=int(weight.shape[0]))
    if weight.shape[1] != model.classifier.in_features:
        raise ConfigError(
            f"the classifier reads {weight.shape[1]} features but BBN-{arch} has {model.classifier.in_features} "
            f"(2 x {model.feature_dim}); is --arch right?"
        )
    state.setdefault("classifier.bias", torch.zeros(weight.shape[0], dtype=weight.dtype))
    expected = model.state_dict()
    for key, value in expected.items():
        if key.endswith("num_batches_tracked"):  # absent from checkpoints of old PyTorch versions
            state.setdefault(key, torch.zeros_like(value))
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        def some(keys: Sequence[str]) -> str:
            return ", ".join(keys[:4]) + (f" and {len(keys) - 4} more" if len(keys) > 4 else "")

        problems = [f"missing {some(missing)}" if missing else "", f"not in BBN-{arch}: {some(unexpected)}"
                    if unexpected else "", f"other shapes: {some(wrong)}" if wrong else ""]
        raise ConfigError(
            f"the weights do not fit lttoolkit's BBN with backbone {arch}: {'; '.join(p for p in problems if p)}. "
            f"Check --arch (resnet32_cifar for bbn_res32_cifar, resnet50 for bbn_res50)."
        )
    model.load_state_dict(state)
    return model.eval()


def convert_official_bbn(
    source: str | os.PathLike[str] | Mapping[str, Any],
    *,
    arch: str,
    overrides: Sequence[str] = (),
) -> dict[str, Any]:
    """An lttoolkit checkpoint (plain data, for :func:`~lttoolkit.engine.checkpoint.save_checkpoint`)
    holding an official BBN model, for ``lttk eval`` / ``predict`` / ``analyze``.

    The run config it records is BBN with ``arch``, on CIFAR-10 / CIFAR-100 for 10 / 100
    classes (``data.imbalance_ratio=100``), on ImageNet-style data otherwise; ``overrides``
    (``data.root=...``) change it, as for ``lttk train``.
    """
    from lttoolkit._version import __version__
    from lttoolkit.engine.config import load_config

    raw = _read(source)
    model = load_official_bbn(raw, arch=arch)
    num_classes = model.recipe.num_classes
    _, size = _check_arch(arch)
    data: list[str] = []
    if arch == "resnet32_cifar" and num_classes in (10, 100):
        data = [f"data.dataset=cifar{num_classes}", "data.imbalance_ratio=100"]
    elif arch == "resnet32_cifar":
        data = ["data.dataset=image_folder", "data.image_size=32"]
    else:
        data = ["data.dataset=image_folder", "data.transforms=imagenet", f"data.image_size={size}"]
    cfg = load_config(None, [f"model.backbone={arch}", f"model.split_at={OFFICIAL_ARCHS[arch][0]}", *data,
                             *overrides])
    epoch = raw.get("epoch") if isinstance(raw.get("epoch"), int) else None
    state: dict[str, Any] = {
        "format": "lttoolkit-checkpoint-1",
        "lttoolkit_version": __version__,
        "epoch": epoch,
        "model": model.state_dict(),
        "recipe": model.recipe.model_dump(mode="json"),
        "config": cfg.model_dump(mode="json"),
        "input_size": [3, size, size],
        "best": {},
        "converted_from": {
            "format": "megvii-research/BBN",
            "arch": arch,
            "source": str(source) if not isinstance(source, Mapping) else None,
        },
    }
    if num_classes == 10 and arch == "resnet32_cifar":
        state["classes"] = list(_CIFAR10_CLASSES)
    return state


def convert_official_bbn_file(
    source: str | os.PathLike[str], output: str | os.PathLike[str], *, arch: str, overrides: Sequence[str] = ()
) -> Path:
    """Read an official BBN ``.pth`` and write an lttoolkit checkpoint to ``output`` (never over a file)."""
    from lttoolkit.engine.checkpoint import save_checkpoint

    target = Path(output)
    if target.exists():
        raise ConfigError(f"{target} already exists; choose another output path (nothing was written)")
    return save_checkpoint(convert_official_bbn(source, arch=arch, overrides=overrides), target)
