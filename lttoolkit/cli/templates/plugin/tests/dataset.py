"""Contract tests for ``__COMPONENT__`` (__KIND__ plugin of the ``__DIST__`` distribution)."""

from __future__ import annotations

import numpy as np
import pytest

from lttoolkit.data import LabelledDataset, build_transforms
from lttoolkit.errors import DataError

from __PACKAGE__ import __ATTR__


def test_train_is_long_tailed_and_test_balanced():
    train, test = __ATTR__(split="train"), __ATTR__(split="test")
    assert train.class_counts == [48, 24, 12, 6]  # 48 * 8 ** (-c / 3)
    assert test.class_counts == [16, 16, 16, 16]
    assert isinstance(train, LabelledDataset) and train.labels.dtype == np.int64


def test_items_and_transforms():
    dataset = __ATTR__(split="test", transform=build_transforms("cifar", False))  # factory(root, split, transform)
    image, label = dataset[0]
    assert tuple(image.shape) == (3, 32, 32) and label == 0
    assert len(dataset.subset([0, 1])) == 2


def test_same_seed_same_images():
    assert np.array_equal(__ATTR__(seed=3).images, __ATTR__(seed=3).images)
    assert not np.array_equal(__ATTR__(seed=3).images, __ATTR__(seed=4).images)


def test_invalid_options():
    with pytest.raises(DataError):
        __ATTR__(split="val")
    with pytest.raises(DataError):
        __ATTR__(root="/data")
