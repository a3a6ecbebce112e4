"""Tests for the builtin samplers: the sampler protocol, sharding, and drawn frequencies.

Contract tests are parametrized over ``SAMPLERS.list()`` so that a newly
registered builtin is covered by being registered. Frequency tests compare
empirical class frequencies over 100,000 draws against distributions computed
by hand for the class counts [500, 100, 20, 5], with a chi-square test.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lttoolkit.errors import ConfigError, DataError
from lttoolkit.registry import BUILTIN, SAMPLERS
from lttoolkit.samplers import (
    ClassBalancedSampler,
    ClassWeightedSampler,
    InstanceSampler,
    ProgressiveSampler,
    ReversedSampler,
)

COUNTS = [500, 100, 20, 5]
NUM_IMAGES = sum(COUNTS)  # 625
NUM_DRAWS = 100_000
# Significance level of the chi-square tests. The draws are seeded, so a test
# either always passes or always fails; 1e-4 leaves a correct sampler a wide
# margin while any wrong distribution over 100k draws lands far below it.
ALPHA = 1e-4

_ROOT5 = math.sqrt(5.0)
# Hand-computed class distributions for COUNTS (N = 625, N_max = 500):
EXPECTED = {
    # N_i / N
    "instance": [500 / 625, 100 / 625, 20 / 625, 5 / 625],
    "class_balanced": [0.25, 0.25, 0.25, 0.25],
    # sqrt(N_i) = [10 sqrt5, 10, 2 sqrt5, sqrt5], summing to 13 sqrt5 + 10
    "square_root": [w / (13 * _ROOT5 + 10) for w in (10 * _ROOT5, 10.0, 2 * _ROOT5, _ROOT5)],
    # N_max / N_i = [1, 5, 25, 100], summing to 131
    "reversed": [1 / 131, 5 / 131, 25 / 131, 100 / 131],
    # epoch 0 of progressive sampling is instance-balanced
    "progressive": [500 / 625, 100 / 625, 20 / 625, 5 / 625],
}


def long_tail_labels() -> torch.Tensor:
    """Labels with COUNTS images per class, shuffled so classes are not contiguous."""
    labels = torch.repeat_interleave(torch.arange(len(COUNTS)), torch.tensor(COUNTS))
    return labels[torch.randperm(NUM_IMAGES, generator=torch.Generator().manual_seed(1234))]


def chi_square_sf(statistic: float, df: int) -> float:
    """P(X >= statistic) for X ~ chi-square(df), by the Wilson-Hilferty approximation.

    (X / df)^(1/3) is close to normal with mean 1 - 2/(9 df) and variance 2/(9 df);
    good to a few percent of the p-value at the tails used here (df >= 3).
    """
    scale = 2.0 / (9.0 * df)
    z = ((statistic / df) ** (1.0 / 3.0) - (1.0 - scale)) / math.sqrt(scale)
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def chi_square_p_value(observed: torch.Tensor, probabilities: list[float] | torch.Tensor) -> float:
    """Goodness-of-fit p-value of ``observed`` counts against ``probabilities``."""
    observed = observed.to(torch.float64)
    expected = torch.as_tensor(probabilities, dtype=torch.float64) * observed.sum()
    support = expected > 0
    if observed[~support].sum() > 0:
        return 0.0  # a draw from a zero-probability cell
    statistic = float(((observed[support] - expected[support]) ** 2 / expected[support]).sum())
    return chi_square_sf(statistic, int(support.sum()) - 1)


def builtin_names() -> list[str]:
    return SAMPLERS.list()


@pytest.fixture(params=builtin_names())
def name(request: pytest.FixtureRequest) -> str:
    entry = SAMPLERS.entry(request.param)
    if entry.source != BUILTIN:
        pytest.skip(f"sampler {request.param!r} comes from {entry.source}, not a builtin")
    return request.param


def test_chi_square_helper_matches_published_critical_values() -> None:
    # Tabulated upper critical values: chi2(df=3) 16.266 at 0.001; chi2(df=19) 43.820 at 0.001.
    assert chi_square_sf(16.266, 3) == pytest.approx(1e-3, rel=0.2)
    assert chi_square_sf(43.820, 19) == pytest.approx(1e-3, rel=0.1)
    assert chi_square_sf(3.0, 3) == pytest.approx(0.3916, abs=0.01)


def test_every_builtin_sampler_has_expected_frequencies() -> None:
    builtins = {n for n in SAMPLERS.list() if SAMPLERS.entry(n).source == BUILTIN}
    assert builtins == set(EXPECTED), "add the hand-computed class distribution of a new builtin to EXPECTED"


# ---------------------------------------------------------------------- protocol


def test_indices_in_range_and_len(name: str) -> None:
    labels = long_tail_labels()
    sampler = SAMPLERS.build(name, labels=labels, seed=0)
    indices = list(sampler)
    assert len(sampler) == len(indices) == NUM_IMAGES
    assert all(isinstance(i, int) for i in indices[:10])
    assert min(indices) >= 0 and max(indices) < NUM_IMAGES

    longer = SAMPLERS.build(name, labels=labels, seed=0, num_samples=1_501)
    assert len(longer) == len(list(longer)) == 1_501
    assert max(longer) < NUM_IMAGES


def test_same_seed_and_epoch_give_the_same_stream(name: str) -> None:
    labels = long_tail_labels()
    first = SAMPLERS.build(name, labels=labels, seed=3)
    second = SAMPLERS.build(name, labels=labels.tolist(), seed=3)
    first.set_epoch(5)
    second.set_epoch(5)
    stream = list(first)
    assert stream == list(second)
    assert stream == list(first)  # iterating again replays the epoch


def test_stream_changes_with_epoch_and_seed(name: str) -> None:
    labels = long_tail_labels()
    sampler = SAMPLERS.build(name, labels=labels, seed=3)
    assert list(sampler) == list(SAMPLERS.build(name, labels=labels, seed=3)), "default epoch must be 0"
    epoch0 = list(sampler)
    sampler.set_epoch(1)
    assert list(sampler) != epoch0
    # seed + epoch must not collide: (seed=4, epoch=0) differs from (seed=3, epoch=1)
    assert list(SAMPLERS.build(name, labels=labels, seed=4)) not in (epoch0, list(sampler))


def test_global_rng_neither_used_nor_advanced(name: str) -> None:
    labels = long_tail_labels()
    sampler = SAMPLERS.build(name, labels=labels, seed=0)
    torch.manual_seed(1)
    state = torch.get_rng_state()
    stream = list(sampler)
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(2)
    assert list(sampler) == stream


@pytest.mark.parametrize("num_samples", [12, 10, 1])
@pytest.mark.parametrize("num_replicas", [2, 3, 4])
def test_distributed_shards_interleave_to_single_process_stream(name: str, num_samples: int, num_replicas: int) -> None:
    labels = long_tail_labels()
    single = list(SAMPLERS.build(name, labels=labels, seed=9, num_samples=num_samples))
    shards = [
        list(SAMPLERS.build(name, labels=labels, seed=9, num_samples=num_samples, num_replicas=num_replicas, rank=r))
        for r in range(num_replicas)
    ]
    per_rank = math.ceil(num_samples / num_replicas)
    assert [len(s) for s in shards] == [per_rank] * num_replicas
    # Rank r owns positions r, r + R, ...: disjoint positions covering the padded stream.
    total = per_rank * num_replicas
    stream: list[int | None] = [None] * total
    for rank, shard in enumerate(shards):
        for k, index in enumerate(shard):
            position = rank + k * num_replicas
            assert stream[position] is None
            stream[position] = index
    assert stream[:num_samples] == single
    # Padding wraps around to the start of the stream.
    assert stream[num_samples:] == [single[i % num_samples] for i in range(total - num_samples)]
    if num_samples % num_replicas == 0:
        assert sorted(i for s in shards for i in s) == sorted(single)


def test_distributed_shards_follow_set_epoch(name: str) -> None:
    labels = long_tail_labels()
    single = SAMPLERS.build(name, labels=labels, seed=2)
    shards = [SAMPLERS.build(name, labels=labels, seed=2, num_replicas=5, rank=r) for r in range(5)]
    for sampler in [single, *shards]:
        sampler.set_epoch(7)
    streams = [list(s) for s in shards]
    assert [stream[k] for k in range(len(shards[0])) for stream in streams] == list(single)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"num_replicas": 0}, "num_replicas must be >= 1"),
        ({"num_replicas": 2, "rank": 2}, r"rank must lie in \[0, num_replicas\)"),
        ({"rank": -1}, "rank must be >= 0"),
        ({"num_samples": 0}, "num_samples must be >= 1"),
        ({"seed": 1.5}, "seed must be an integer"),
    ],
)
def test_invalid_options_raise_config_error(name: str, options: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        SAMPLERS.build(name, labels=[0, 1, 1], **options)


def test_negative_epoch_raises(name: str) -> None:
    sampler = SAMPLERS.build(name, labels=[0, 1, 1])
    with pytest.raises(ConfigError, match="epoch must be >= 0"):
        sampler.set_epoch(-1)


# ---------------------------------------------------------------------- label errors


def test_empty_labels_raise_data_error(name: str) -> None:
    for empty in ([], torch.empty(0, dtype=torch.int64), np.zeros(0, dtype=np.int64)):
        with pytest.raises(DataError, match="labels is empty"):
            SAMPLERS.build(name, labels=empty)
    with pytest.raises(DataError, match="labels is empty"):
        SAMPLERS.build(name, labels=[], num_classes=3)


def test_out_of_range_label_names_index_and_value(name: str) -> None:
    with pytest.raises(DataError, match=r"labels\[3\] = 7 is out of range.*\[0, 4\)"):
        SAMPLERS.build(name, labels=[0, 1, 3, 7, 2, 9], num_classes=4)
    with pytest.raises(DataError, match=r"labels\[2\] = -1 is out of range"):
        SAMPLERS.build(name, labels=[0, 1, -1, 2])
    with pytest.raises(DataError, match=r"labels\[1\] = -4"):
        SAMPLERS.build(name, labels=torch.tensor([0, -4, 1]), num_classes=2)


def test_non_integer_labels_raise_data_error(name: str) -> None:
    with pytest.raises(DataError, match="integer class indices"):
        SAMPLERS.build(name, labels=[0.0, 1.5])
    with pytest.raises(DataError, match="integer class indices"):
        SAMPLERS.build(name, labels=torch.tensor([0.0, 1.0]))
    with pytest.raises(DataError, match="one-dimensional"):
        SAMPLERS.build(name, labels=[[0, 1], [1, 0]])


def test_labels_as_list_numpy_and_tensor_agree(name: str) -> None:
    labels = long_tail_labels()
    streams = [
        list(SAMPLERS.build(name, labels=form, seed=5))
        for form in (labels, labels.tolist(), labels.numpy().astype(np.int32))
    ]
    assert streams[0] == streams[1] == streams[2]


def test_empty_classes_are_never_drawn(name: str) -> None:
    # Classes 1 and 4 have no images; N_max / N_i is undefined for them.
    labels = torch.tensor([0] * 30 + [2] * 6 + [3] * 2)
    sampler = SAMPLERS.build(name, labels=labels, seed=0, num_classes=5, num_samples=5_000)
    assert sampler.class_counts.tolist() == [30, 0, 6, 2, 0]
    probabilities = sampler.class_probabilities()
    assert probabilities[1] == 0 and probabilities[4] == 0
    assert float(probabilities.sum()) == pytest.approx(1.0, abs=1e-12)
    drawn = torch.bincount(labels[sampler.indices()], minlength=5)
    assert drawn[1] == 0 and drawn[4] == 0
    assert int(drawn.sum()) == 5_000


def test_class_counts_is_a_copy(name: str) -> None:
    sampler = SAMPLERS.build(name, labels=long_tail_labels())
    counts = sampler.class_counts
    assert counts.tolist() == COUNTS
    counts[0] = 0
    assert sampler.class_counts.tolist() == COUNTS


# ---------------------------------------------------------------------- frequencies


def drawn_class_counts(sampler: torch.utils.data.Sampler, labels: torch.Tensor) -> torch.Tensor:
    indices = torch.tensor(list(sampler))
    return torch.bincount(labels[indices], minlength=len(COUNTS))


def test_class_frequencies_match_hand_computed_distribution(name: str) -> None:
    labels = long_tail_labels()
    sampler = SAMPLERS.build(name, labels=labels, seed=11, num_samples=NUM_DRAWS)
    torch.testing.assert_close(
        sampler.class_probabilities(), torch.tensor(EXPECTED[name], dtype=torch.float64), rtol=0, atol=1e-12
    )
    observed = drawn_class_counts(sampler, labels)
    assert int(observed.sum()) == NUM_DRAWS
    assert chi_square_p_value(observed, EXPECTED[name]) > ALPHA
    # The test has power: every other distinct distribution is rejected by the same draws.
    for other, probabilities in EXPECTED.items():
        if not np.allclose(probabilities, EXPECTED[name]):
            assert chi_square_p_value(observed, probabilities) < ALPHA, f"{name} draws fit {other}"


@pytest.mark.parametrize("name", ["reversed", "class_balanced", "square_root"])
def test_images_uniform_within_each_class(name: str) -> None:
    labels = long_tail_labels()
    sampler = SAMPLERS.build(name, labels=labels, seed=21, num_samples=NUM_DRAWS)
    image_counts = torch.bincount(sampler.indices(), minlength=NUM_IMAGES)
    tested = 0
    for cls in range(len(COUNTS)):
        members = (labels == cls).nonzero().flatten()
        observed = image_counts[members]
        if observed.sum() / len(members) < 20:  # too few draws per image for a chi-square test
            continue
        tested += 1
        assert chi_square_p_value(observed, torch.full((len(members),), 1.0 / len(members))) > ALPHA, cls
    assert tested >= 2


def test_reversed_is_proportional_to_n_max_over_n_i() -> None:
    labels = torch.tensor([0] * 8 + [1] * 4 + [2] * 1)
    probabilities = ReversedSampler(labels).class_probabilities()
    # weights 8/8, 8/4, 8/1 = 1, 2, 8 -> / 11
    torch.testing.assert_close(probabilities, torch.tensor([1 / 11, 2 / 11, 8 / 11], dtype=torch.float64))


def test_progressive_moves_from_instance_to_class_balanced() -> None:
    # The authors' lams = numpy.linspace(0, 1, T): lam_t = t / (T - 1), class-balanced at the last epoch.
    labels = long_tail_labels()
    sampler = ProgressiveSampler(labels, max_epochs=10, num_samples=NUM_DRAWS, seed=4)
    instance = InstanceSampler(labels).class_probabilities()
    balanced = ClassBalancedSampler(labels).class_probabilities()
    torch.testing.assert_close(sampler.class_probabilities(), instance)
    sampler.set_epoch(3)
    torch.testing.assert_close(sampler.class_probabilities(), (2 / 3) * instance + (1 / 3) * balanced)
    sampler.set_epoch(9)  # the last of 10 epochs
    torch.testing.assert_close(sampler.class_probabilities(), balanced)
    assert chi_square_p_value(drawn_class_counts(sampler, labels), EXPECTED["class_balanced"]) > ALPHA
    sampler.set_epoch(25)  # past T it stays class-balanced
    torch.testing.assert_close(sampler.class_probabilities(), balanced)


def test_progressive_schedule_is_numpy_linspace() -> None:
    labels = [0, 0, 0, 1]  # instance [0.75, 0.25], balanced [0.5, 0.5]
    for max_epochs in (1, 2, 7):
        lams = np.linspace(0, 1, max_epochs)
        sampler = ProgressiveSampler(labels, max_epochs=max_epochs)
        for epoch in range(max_epochs + 2):
            sampler.set_epoch(epoch)
            lam = lams[min(epoch, max_epochs - 1)]  # the authors clip the epoch to [0, T - 1]
            assert sampler.progress == pytest.approx(lam, abs=1e-12)
            assert sampler.class_probabilities()[1].item() == pytest.approx(0.25 + 0.25 * lam, abs=1e-12)


def test_progressive_max_epochs_option_keeps_t_over_t() -> None:
    labels = long_tail_labels()
    sampler = ProgressiveSampler(labels, max_epochs=10, balanced_at="max_epochs")
    instance = InstanceSampler(labels).class_probabilities()
    balanced = ClassBalancedSampler(labels).class_probabilities()
    sampler.set_epoch(4)
    torch.testing.assert_close(sampler.class_probabilities(), 0.6 * instance + 0.4 * balanced)
    sampler.set_epoch(9)  # the last epoch of a 10-epoch run is not yet balanced in this form
    torch.testing.assert_close(sampler.class_probabilities(), 0.1 * instance + 0.9 * balanced)
    sampler.set_epoch(10)
    torch.testing.assert_close(sampler.class_probabilities(), balanced)
    with pytest.raises(ConfigError, match="balanced_at must be 'last_epoch'"):
        ProgressiveSampler(labels, balanced_at="end")


def test_progressive_cycles_images_within_each_class() -> None:
    # The authors' ClassPrioritySampler takes next(RandomCycleIter) of the drawn class: no image of a
    # class repeats before all of its images have been drawn.
    labels = long_tail_labels()
    sampler = ProgressiveSampler(labels, max_epochs=4, seed=3, num_samples=3_000)
    sampler.set_epoch(2)
    stream = sampler.indices()
    for cls in range(len(COUNTS)):
        images = stream[labels[stream] == cls].tolist()
        size = COUNTS[cls]
        for start in range(0, len(images), size):
            chunk = images[start:start + size]
            assert len(set(chunk)) == len(chunk), (cls, start)
    assert len(stream[labels[stream] == 3]) > 2 * COUNTS[3]  # the small class wrapped around several passes


def test_progressive_iid_option_is_the_class_weighted_draw() -> None:
    class Reference(ClassWeightedSampler):  # the two-stage i.i.d. draw with the same class weights
        def __init__(self, labels, **kw):
            super().__init__(labels, **kw)
            self.inner = ProgressiveSampler(labels, max_epochs=5)

        def class_weights(self):
            self.inner.set_epoch(self.epoch)
            return self.inner.class_weights()

    labels = long_tail_labels()
    iid, reference = ProgressiveSampler(labels, max_epochs=5, seed=2, cycle_images=False), Reference(labels, seed=2)
    for sampler in (iid, reference):
        sampler.set_epoch(2)
    assert list(iid) == list(reference)


def test_progressive_balanced_end_ignores_empty_classes() -> None:
    sampler = ProgressiveSampler([0, 0, 0, 2], num_classes=3, max_epochs=2)
    sampler.set_epoch(2)
    torch.testing.assert_close(sampler.class_probabilities(), torch.tensor([0.5, 0.0, 0.5], dtype=torch.float64))


def test_progressive_requires_positive_max_epochs() -> None:
    with pytest.raises(ConfigError, match="max_epochs must be >= 1"):
        ProgressiveSampler([0, 1], max_epochs=0)
    assert ProgressiveSampler([0, 1]).max_epochs == 90


# ---------------------------------------------------------------------- class-aware (cycling) sampler


def _concatenated_epochs(sampler, epochs: int) -> list[int]:
    stream: list[int] = []
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        stream += list(sampler)
    return stream


@pytest.mark.parametrize("num_samples", [625, 10, 7])
def test_class_balanced_cycles_through_the_classes_across_epochs(num_samples: int) -> None:
    # classifier-balancing's ClassAwareSampler: next(class RandomCycleIter) for every draw; its iterators
    # keep their state from one epoch to the next, so the cycles run on across epoch boundaries.
    labels = long_tail_labels()
    stream = _concatenated_epochs(ClassBalancedSampler(labels, seed=5, num_samples=num_samples), 6)
    classes = labels[torch.tensor(stream)].tolist()
    full = len(classes) // 4 * 4
    for start in range(0, full, 4):
        assert sorted(classes[start:start + 4]) == [0, 1, 2, 3], start
    # Class orders differ between cycles (a fresh shuffle per pass), not one fixed order.
    assert len({tuple(classes[i:i + 4]) for i in range(0, full, 4)}) > 1


def test_class_balanced_cycles_through_each_class_without_replacement() -> None:
    labels = long_tail_labels()
    stream = torch.tensor(_concatenated_epochs(ClassBalancedSampler(labels, seed=6, num_samples=101), 5))
    for cls, size in enumerate(COUNTS):
        images = stream[labels[stream] == cls].tolist()
        members = sorted((labels == cls).nonzero().flatten().tolist())
        for start in range(0, len(images) - size + 1, size):  # every full pass is a permutation of the class
            assert sorted(images[start:start + size]) == members, (cls, start)
        assert len(set(images[len(images) // size * size:])) == len(images) % size  # the pass in progress
    passes = [stream[labels[stream] == 3][i:i + 5].tolist() for i in range(0, 100, 5)]
    assert len({tuple(p) for p in passes}) > 1  # each pass is a fresh shuffle


def test_class_balanced_samples_per_class_takes_consecutive_images_of_one_class() -> None:
    # num_samples_cls = 4 (the authors' cRT configs): each class visit yields 4 images of that class.
    labels = long_tail_labels()
    sampler = ClassBalancedSampler(labels, seed=1, samples_per_class=4, num_samples=160)
    stream = sampler.indices()
    classes = labels[stream].view(-1, 4)
    assert bool((classes == classes[:, :1]).all())
    for cycle in classes[:, 0].view(-1, 4):
        assert sorted(cycle.tolist()) == [0, 1, 2, 3]
    tail = stream[labels[stream] == 3].tolist()  # 5 images: every 5 consecutive draws of class 3 are distinct
    assert all(len(set(tail[i:i + 5])) == 5 for i in range(0, len(tail) - 4, 5))
    with pytest.raises(ConfigError, match="samples_per_class=4 needs cycle=true"):
        ClassBalancedSampler(labels, cycle=False, samples_per_class=4)


def test_class_balanced_epoch_is_the_dataset_size() -> None:
    # The authors' trainer stops each epoch after int(len(dataset) / batch_size) steps.
    labels = long_tail_labels()
    assert len(ClassBalancedSampler(labels)) == NUM_IMAGES
    assert len(ClassBalancedSampler(labels, num_replicas=4, rank=1)) == math.ceil(NUM_IMAGES / 4)


def test_class_balanced_iid_option_is_the_class_weighted_draw() -> None:
    class Reference(ClassWeightedSampler):
        def class_weights(self) -> torch.Tensor:
            return torch.ones(self.num_classes, dtype=torch.float64)

    labels = long_tail_labels()
    iid, reference = ClassBalancedSampler(labels, seed=4, cycle=False), Reference(labels, seed=4)
    iid.set_epoch(3)
    reference.set_epoch(3)
    assert list(iid) == list(reference)
    with pytest.raises(ConfigError, match="cycle must be true or false"):
        ClassBalancedSampler(labels, cycle="yes")


# ---------------------------------------------------------------------- instance sampler


def test_instance_epoch_is_a_permutation() -> None:
    sampler = InstanceSampler(long_tail_labels(), seed=8)
    sampler.set_epoch(2)
    assert sorted(sampler) == list(range(NUM_IMAGES))


def test_instance_without_shuffle_is_dataset_order() -> None:
    sampler = InstanceSampler([2, 0, 1, 1, 0], shuffle=False)
    sampler.set_epoch(3)
    assert list(sampler) == [0, 1, 2, 3, 4]
    assert list(InstanceSampler([2, 0, 1], shuffle=False, num_samples=7)) == [0, 1, 2, 0, 1, 2, 0]


def test_instance_long_epoch_visits_every_image_once_per_pass() -> None:
    sampler = InstanceSampler(list(range(10)), seed=1, num_samples=25)
    stream = list(sampler)
    assert sorted(stream[:10]) == sorted(stream[10:20]) == list(range(10))
    assert len(set(stream[20:])) == 5


def test_instance_shards_partition_the_dataset() -> None:
    labels = long_tail_labels()
    shards = [set(InstanceSampler(labels, seed=0, num_replicas=5, rank=r)) for r in range(5)]
    assert sum(len(s) for s in shards) == NUM_IMAGES
    assert set().union(*shards) == set(range(NUM_IMAGES))


def test_plugin_subclass_only_needs_class_weights() -> None:
    class HeadOnly(ClassWeightedSampler):
        def class_weights(self) -> torch.Tensor:
            return torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=torch.float64)

    labels = long_tail_labels()
    sampler = HeadOnly(labels, seed=0, num_samples=1_000)
    assert set(labels[sampler.indices()].tolist()) == {0}
