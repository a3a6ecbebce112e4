"""``__COMPONENT__``: long-tailed synthetic stripes, an example lttoolkit dataset.

Class ``c`` is a pattern of stripes at its own angle, drawn with noise from a
fixed seed, so the dataset needs no files and no download. The training split
is long-tailed (class ``c`` keeps ``head * ratio ** (-c / (C - 1))`` images,
the exponential profile of Cao et al., NeurIPS 2019), the test split balanced.

Protocol (lttoolkit ``docs/plugins.md``): ``factory(root=None, split="train",
transform=None, **options)`` returning a ``lttoolkit.data.LabelledDataset``
(``labels``, ``classes``, ``num_classes``, ``subset``, items ``(image, label)``);
``dataset_info`` tells lttoolkit which transforms suit it and its channels.
"""

from __future__ import annotations

import math

import numpy as np

from lttoolkit.data import ArrayDataset, dataset_info
from lttoolkit.errors import DataError

__all__ = ["__ATTR__"]


@dataset_info(transform_family="cifar", in_chans=3)
def __ATTR__(
    root: str | None = None,
    split: str = "train",
    transform: object = None,
    *,
    num_classes: int = 4,
    head: int = 48,
    ratio: float = 8.0,
    test_per_class: int = 16,
    size: int = 32,
    seed: int = 0,
) -> ArrayDataset:
    """Stripes at one angle per class: long-tailed ``train``, balanced ``test`` (no files needed).

    Args:
        root: unused (the images are drawn, not read); must be None.
        split: ``"train"`` (long-tailed) or ``"test"`` (balanced).
        transform: applied to each PIL image.
        num_classes: classes (angles).
        head: training images of the largest class.
        ratio: imbalance ratio of the training split (largest / smallest class).
        test_per_class: test images per class.
        size: image side in pixels.
        seed: seed of the noise.

    Returns:
        An ``ArrayDataset`` of ``size x size`` RGB images.

    >>> train = __ATTR__(split="train")
    >>> train.class_counts, train.num_classes
    ([48, 24, 12, 6], 4)
    """
    if root is not None:
        raise DataError("__COMPONENT__ draws its images and reads no files: leave root unset (data.root: null)")
    if split not in ("train", "test"):
        raise DataError(f"__COMPONENT__ has splits 'train' and 'test', got {split!r}")
    if num_classes < 2 or head < 1 or ratio < 1:
        raise DataError("__COMPONENT__ needs num_classes >= 2, head >= 1 and ratio >= 1")
    if split == "train":
        counts = [max(1, int(head * ratio ** (-c / (num_classes - 1)) + 1e-9)) for c in range(num_classes)]
    else:
        counts = [test_per_class] * num_classes
    rng = np.random.default_rng([seed, 0 if split == "train" else 1])
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    images, labels = [], []
    for label, count in enumerate(counts):
        angle = math.pi * label / num_classes
        wave = np.sin(2 * math.pi * 4 * (xx * math.cos(angle) + yy * math.sin(angle)))
        for _ in range(count):
            noisy = wave + rng.normal(0.0, 0.5, size=wave.shape)
            grey = np.clip((noisy + 2.0) * 64.0, 0, 255).astype(np.uint8)
            images.append(np.stack([grey] * 3, axis=-1))
            labels.append(label)
    return ArrayDataset(np.stack(images), labels, classes=[f"angle{c}" for c in range(num_classes)],
                        transform=transform)
