"""Contract tests for ``__COMPONENT__`` (__KIND__ plugin of the ``__DIST__`` distribution)."""

from __future__ import annotations

import pytest
from torch.utils.data import Sampler

from lttoolkit.errors import ConfigError

from __PACKAGE__ import __ATTR__


LABELS = [0] * 16 + [1] * 4 + [2] * 1  # class sizes 16, 4, 1


def test_class_probabilities_by_hand():
    sampler = __ATTR__(LABELS, power=0.5)  # weights 4, 2, 1
    assert sampler.class_probabilities().tolist() == pytest.approx([4 / 7, 2 / 7, 1 / 7])
    assert __ATTR__(LABELS, power=0.0).class_probabilities().tolist() == pytest.approx([1 / 3] * 3)


def test_stream_depends_only_on_seed_and_epoch():
    first, second = __ATTR__(LABELS, seed=1), __ATTR__(LABELS, seed=1)
    first.set_epoch(3)
    second.set_epoch(3)
    assert list(first) == list(second)
    assert len(list(first)) == len(first) == len(LABELS)
    second.set_epoch(4)
    assert list(first) != list(second)
    assert all(0 <= index < len(LABELS) for index in first)


def test_ranks_get_disjoint_equal_shards():
    full = __ATTR__(LABELS, seed=5, num_samples=20)
    shards = [__ATTR__(LABELS, seed=5, num_samples=20, num_replicas=2, rank=rank) for rank in range(2)]
    positions = [list(range(rank, 20, 2)) for rank in range(2)]
    stream = list(full)
    for shard, taken in zip(shards, positions):
        assert list(shard) == [stream[p] for p in taken]


def test_factory_protocol_options():
    sampler = __ATTR__(labels=LABELS, seed=0, num_replicas=1, rank=0, power=1.0)
    assert isinstance(sampler, Sampler)
    with pytest.raises(ConfigError):
        __ATTR__(LABELS, power=float("nan"))
