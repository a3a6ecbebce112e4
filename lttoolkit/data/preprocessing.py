"""The evaluation preprocessing of a model, as plain data that travels with its weights.

A checkpoint stores how its model expects images, in the terms of timm's
``pretrained_cfg`` (``input_size``, ``mean``, ``std``, ``interpolation``,
``crop_pct``, ``crop_mode``) plus ``color_mode`` (the mode a PIL image is
converted to first: ``"L"`` for grey datasets, ``"RGB"`` otherwise). Inference
(:class:`lttoolkit.Classifier`, ``lttk predict``) and export read it, so an image
is prepared exactly as the test split was, without the training config.

The evaluation pipelines of :func:`lttoolkit.data.build_transforms` map to it:

* ``imagenet``: resize the short side to ``size / crop_pct`` (256 for 224), centre
  crop ``size`` (``crop_mode="center"``, ``crop_pct=0.875``);
* ``cifar`` / ``fashion_mnist`` / ``mnist``: resize to ``size x size``
  (``crop_mode="squash"``, ``crop_pct=1.0``); the test images of these datasets
  already have that size.

>>> config = eval_preprocessing("fashion_mnist", in_chans=3, image_size=32)
>>> config["input_size"], config["color_mode"], config["crop_mode"]
([3, 32, 32], 'L', 'squash')
>>> from PIL import Image
>>> build_eval_transform(config)(Image.new("RGB", (50, 40))).shape
torch.Size([3, 32, 32])
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import torch

from lttoolkit.errors import ConfigError

__all__ = ["eval_preprocessing", "build_eval_transform", "PREPROCESSING_KEYS"]

#: The keys of a preprocessing config.
PREPROCESSING_KEYS = ("input_size", "mean", "std", "interpolation", "crop_pct", "crop_mode", "color_mode")


def eval_preprocessing(
    family: str,
    *,
    in_chans: int = 3,
    image_size: int | None = None,
    mean: Any = None,
    std: Any = None,
) -> dict[str, Any]:
    """The evaluation preprocessing of ``build_transforms(family, train=False, ...)`` as plain data.

    Raises:
        ConfigError: an unknown family or channel count (as :func:`~lttoolkit.data.build_transforms`).
    """
    from lttoolkit.data import transforms as tf

    if family not in tf._FAMILIES:
        raise ConfigError(f"unknown transform family {family!r}; choose one of {', '.join(tf.TRANSFORM_FAMILIES)}")
    if in_chans not in (1, 3):
        raise ConfigError(f"in_chans must be 1 or 3, got {in_chans!r}")
    native_size, native_chans, default_mean, default_std, _ = tf._FAMILIES[family]
    size = int(image_size) if image_size is not None else native_size
    imagenet = family == "imagenet"
    return {
        "input_size": [int(in_chans), size, size],
        "mean": list(tf._stats(mean, default_mean, in_chans, "mean")),
        "std": list(tf._stats(std, default_std, in_chans, "std")),
        "interpolation": "bilinear",
        "crop_pct": tf._IMAGENET_CROP_FRACTION if imagenet else 1.0,
        "crop_mode": "center" if imagenet else "squash",
        "color_mode": "L" if native_chans == 1 or in_chans == 1 else "RGB",
    }


def _check(config: Mapping[str, Any]) -> None:
    missing = [key for key in PREPROCESSING_KEYS if key not in config]
    if missing:
        raise ConfigError(f"the preprocessing config lacks {', '.join(missing)}; it needs {', '.join(PREPROCESSING_KEYS)}")
    channels = config["input_size"][0]
    if channels not in (1, 3) or len(config["mean"]) != channels or len(config["std"]) != channels:
        raise ConfigError(f"the preprocessing config is inconsistent: input_size {config['input_size']}, "
                          f"mean {config['mean']}, std {config['std']}")
    if config["crop_mode"] not in ("center", "squash"):
        raise ConfigError(f"crop_mode {config['crop_mode']!r} is not supported; use 'center' or 'squash'")


def build_eval_transform(config: Mapping[str, Any]) -> Callable[[Any], torch.Tensor]:
    """A PIL image -> float tensor ``input_size`` pipeline from a preprocessing config.

    For the configs of :func:`eval_preprocessing` it computes what
    ``build_transforms(family, train=False, ...)`` computes on images of the
    dataset's own size, and resizes images of any other size first.
    """
    from torchvision import transforms as T

    from lttoolkit.data.transforms import ConvertMode, RepeatChannels

    _check(config)
    channels, height, width = (int(v) for v in config["input_size"])
    interpolation = T.InterpolationMode(config["interpolation"])
    steps: list[Callable[[Any], Any]] = [ConvertMode(config["color_mode"])]
    if config["crop_mode"] == "center":
        steps += [T.Resize(int(round(min(height, width) / float(config["crop_pct"]))), interpolation=interpolation),
                  T.CenterCrop((height, width))]
    else:
        steps.append(_SquashResize((height, width), interpolation))
    steps.append(T.ToTensor())
    if config["color_mode"] == "L" and channels == 3:
        steps.append(RepeatChannels(3))
    steps.append(T.Normalize(list(config["mean"]), list(config["std"])))
    return T.Compose(steps)


class _SquashResize:
    """Resize to exactly ``(height, width)``, and leave an image of that size untouched (bit for bit)."""

    def __init__(self, size: tuple[int, int], interpolation: Any) -> None:
        from torchvision import transforms as T

        self.size = size
        self.resize = T.Resize(size, interpolation=interpolation)

    def __call__(self, image: Any) -> Any:
        width, height = image.size
        return image if (height, width) == self.size else self.resize(image)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size})"
