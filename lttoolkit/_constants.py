"""Per-channel normalisation statistics, defined once (the data transforms and the CIFAR ResNets' timm cfg read them).

The CIFAR values are those of LDAM-DRW's and BBN's code: its "std" is not the
per-pixel std of CIFAR-10, kept so results compare with the published ones.
"""

from __future__ import annotations

__all__ = [
    "CIFAR_MEAN", "CIFAR_STD", "FASHION_MNIST_MEAN", "FASHION_MNIST_STD", "MNIST_MEAN", "MNIST_STD",
    "IMAGENET_MEAN", "IMAGENET_STD",
]

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)
FASHION_MNIST_MEAN = (0.2860,)
FASHION_MNIST_STD = (0.3530,)
MNIST_MEAN = (0.1307,)
MNIST_STD = (0.3081,)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
