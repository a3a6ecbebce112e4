"""Data layer: long-tailed splits, dataset sources and standard transforms.

Every dataset here exposes ``labels`` (int64 numpy array), ``classes``,
``num_classes``, ``class_counts`` and returns ``(image, label)`` items. Nothing
is ever downloaded: CIFAR, Fashion-MNIST and the large benchmarks are read
from folders the user provides; a small long-tailed Fashion-MNIST subset
ships with the package.

>>> from lttoolkit.data import load_dataset, build_transforms
>>> train = load_dataset("embedded", transform=build_transforms("fashion_mnist", True, in_chans=1))
>>> image, label = train[0]
>>> tuple(image.shape), train.class_counts == long_tailed_counts(10, 600, 100)
((1, 28, 28), True)
"""

from __future__ import annotations

from lttoolkit.data.annotations import load_json_annotations, load_text_list
from lttoolkit.data.base import ArrayDataset, LabelledDataset, LabelledSubset, check_built_dataset
from lttoolkit.data.cifar import load_cifar10, load_cifar100, read_cifar_pickle
from lttoolkit.data.embedded import EMBEDDED_DATASETS, embedded_metadata, load_embedded
from lttoolkit.data.fashion_mnist import FASHION_MNIST_CLASSES, FASHION_MNIST_DIR, load_fashion_mnist
from lttoolkit.data.files import FileListDataset, load_image
from lttoolkit.data.idx import read_idx, write_idx
from lttoolkit.data.image_folder import load_image_folder
from lttoolkit.data.loading import dataset_channels, dataset_info, dataset_transform_family, load_dataset
from lttoolkit.data.long_tail import LONG_TAIL_PROFILES, class_counts, long_tailed_counts, make_long_tailed
from lttoolkit.data.transforms import TRANSFORM_FAMILIES, build_transforms

__all__ = [
    "LabelledDataset",
    "LabelledSubset",
    "ArrayDataset",
    "check_built_dataset",
    "FileListDataset",
    "class_counts",
    "long_tailed_counts",
    "make_long_tailed",
    "LONG_TAIL_PROFILES",
    "load_dataset",
    "dataset_info",
    "dataset_transform_family",
    "dataset_channels",
    "load_embedded",
    "embedded_metadata",
    "EMBEDDED_DATASETS",
    "load_fashion_mnist",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_DIR",
    "load_cifar10",
    "load_cifar100",
    "read_cifar_pickle",
    "load_image_folder",
    "load_json_annotations",
    "load_text_list",
    "load_image",
    "read_idx",
    "write_idx",
    "build_transforms",
    "TRANSFORM_FAMILIES",
]
