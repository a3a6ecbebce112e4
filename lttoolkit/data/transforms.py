"""Standard augmentation pipelines of the long-tail benchmarks.

* ``cifar``: random 32x32 crop of the image padded by 4 pixels, horizontal
  flip (He et al., "Deep Residual Learning for Image Recognition", CVPR
  2016), normalised with the statistics of LDAM-DRW's and BBN's code
  (Cao et al., NeurIPS 2019; Zhou et al., CVPR 2020).
* ``fashion_mnist`` / ``mnist``: the same crop on 28x28 grey images; flips
  only for Fashion-MNIST (a mirrored digit is another glyph, a mirrored shirt
  is still a shirt).
* ``imagenet``: random-resized crop to 224 and flip for training, resize to
  256 and centre crop 224 for testing (Szegedy et al., CVPR 2015; He et al.
  2016), ImageNet statistics, as for ImageNet-LT, Places-LT and iNaturalist.

Every pipeline takes a PIL image and returns a float tensor ``[in_chans, H, W]``.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from PIL import Image
from torchvision import transforms as T

from lttoolkit._constants import (
    CIFAR_MEAN,
    CIFAR_STD,
    FASHION_MNIST_MEAN,
    FASHION_MNIST_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    MNIST_MEAN,
    MNIST_STD,
)
from lttoolkit.errors import ConfigError

__all__ = [
    "TRANSFORM_FAMILIES",
    "CIFAR_MEAN",
    "CIFAR_STD",
    "FASHION_MNIST_MEAN",
    "FASHION_MNIST_STD",
    "MNIST_MEAN",
    "MNIST_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ConvertMode",
    "RepeatChannels",
    "build_transforms",
]


# family -> (native size, native channels, mean, std, flip)
_FAMILIES: dict[str, tuple[int, int, tuple[float, ...], tuple[float, ...], bool]] = {
    "cifar": (32, 3, CIFAR_MEAN, CIFAR_STD, True),
    "fashion_mnist": (28, 1, FASHION_MNIST_MEAN, FASHION_MNIST_STD, True),
    "mnist": (28, 1, MNIST_MEAN, MNIST_STD, False),
    "imagenet": (224, 3, IMAGENET_MEAN, IMAGENET_STD, True),
}
TRANSFORM_FAMILIES: tuple[str, ...] = tuple(_FAMILIES)

# ImageNet evaluation resizes to size / 0.875 (256 for 224) before the centre crop.
_IMAGENET_CROP_FRACTION = 0.875
_PAD = 4


class ConvertMode:
    """Convert a PIL image to ``mode`` (``"L"`` or ``"RGB"``) if it is not already.

    >>> ConvertMode("L")(Image.new("RGB", (2, 2))).mode
    'L'
    """

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def __call__(self, image: Image.Image) -> Image.Image:
        return image if image.mode == self.mode else image.convert(self.mode)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(mode={self.mode!r})"


class RepeatChannels:
    """Repeat a one-channel tensor ``[1, H, W]`` to ``[n, H, W]`` (grey images into RGB backbones).

    >>> RepeatChannels(3)(torch.zeros(1, 4, 4)).shape
    torch.Size([3, 4, 4])
    """

    def __init__(self, channels: int) -> None:
        self.channels = channels

    def __call__(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.repeat(self.channels, 1, 1)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(channels={self.channels})"


def _stats(
    given: Sequence[float] | None, default: tuple[float, ...], in_chans: int, name: str
) -> tuple[float, ...]:
    values = tuple(float(v) for v in (given if given is not None else default))
    if len(values) == in_chans:
        return values
    if len(values) == 1:
        return values * in_chans
    if given is None and in_chans == 1:
        # An RGB family read as grey: one statistic, the channel average.
        return (sum(values) / len(values),)
    raise ConfigError(f"{name} has {len(values)} values but in_chans={in_chans}; give 1 or {in_chans} values")


def build_transforms(
    family: str,
    train: bool,
    *,
    in_chans: int = 3,
    image_size: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> Callable[[Any], torch.Tensor]:
    """The augmentation (``train=True``) or evaluation pipeline of a dataset family.

    Args:
        family: one of ``"cifar"``, ``"fashion_mnist"``, ``"mnist"``, ``"imagenet"``.
        train: random augmentation for training, deterministic for evaluation.
        in_chans: channels of the output tensor, 1 or 3. Grey families give 3
            by repeating the channel; RGB families give 1 by converting to grey.
        image_size: output side; default the family's (32, 28, 28, 224). Small
            families resize to it first, e.g. Fashion-MNIST to 32 for CIFAR ResNets.
        mean: per-channel (or one shared) normalisation mean; default the family's.
        std: per-channel (or one shared) normalisation std; default the family's.

    Returns:
        A callable mapping a PIL image to a float tensor ``[in_chans, image_size, image_size]``.

    Raises:
        ConfigError: an unknown family, ``in_chans`` not 1 or 3, or mean/std of the wrong length.

    >>> from PIL import Image
    >>> build_transforms("cifar", train=True)(Image.new("RGB", (32, 32))).shape
    torch.Size([3, 32, 32])
    >>> build_transforms("fashion_mnist", train=False, in_chans=3, image_size=32)(Image.new("L", (28, 28))).shape
    torch.Size([3, 32, 32])
    """
    if family not in _FAMILIES:
        raise ConfigError(f"unknown transform family {family!r}; choose one of {', '.join(TRANSFORM_FAMILIES)}")
    if in_chans not in (1, 3):
        raise ConfigError(f"in_chans must be 1 or 3, got {in_chans!r}")
    native_size, native_chans, default_mean, default_std, flip = _FAMILIES[family]
    size = int(image_size) if image_size is not None else native_size
    if size < 1:
        raise ConfigError(f"image_size must be a positive integer, got {image_size!r}")
    mean_values = _stats(mean, default_mean, in_chans, "mean")
    std_values = _stats(std, default_std, in_chans, "std")
    if any(s <= 0 for s in std_values):
        raise ConfigError(f"std values must be > 0, got {std_values}")

    # Work in the family's native colour mode, so a grey JPEG in an RGB set or an
    # RGB file in a grey set still gives the expected channel count.
    read_mode = "L" if native_chans == 1 or in_chans == 1 else "RGB"
    steps: list[Callable[[Any], Any]] = [ConvertMode(read_mode)]
    if family == "imagenet":
        if train:
            steps.append(T.RandomResizedCrop(size))
        else:
            steps += [T.Resize(int(round(size / _IMAGENET_CROP_FRACTION))), T.CenterCrop(size)]
    else:
        if size != native_size:
            steps.append(T.Resize((size, size)))
        if train:
            steps.append(T.RandomCrop(size, padding=_PAD))
        else:
            # Evaluation images already have the native size; a crop guards other sizes.
            steps.append(T.CenterCrop(size))
    if train and flip:
        steps.append(T.RandomHorizontalFlip())
    steps.append(T.ToTensor())
    if read_mode == "L" and in_chans == 3:
        steps.append(RepeatChannels(3))
    steps.append(T.Normalize(mean_values, std_values))
    return T.Compose(steps)
