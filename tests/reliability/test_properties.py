"""Property-based tests (hypothesis): config parsing and the builtin samplers on arbitrary input.

* Any dotted override of a numeric config field, with any number (or junk) as its value, gives
  either a valid :class:`RunConfig` holding that value or a :class:`ConfigError` naming the
  field: never another exception type, which the CLI would show as a traceback.
* Every builtin sampler, on any label list (1-300 images, 1-20 classes, empty classes, huge
  imbalance), yields in-range indices of the right length, never draws an empty class,
  repeats itself for the same (seed, epoch) whatever the global RNG, and its shards for 1-4 processes interleave
  into the single-process stream.
"""

from __future__ import annotations

import math
import types
import typing

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lttoolkit.engine.config import DataConfig, OptimConfig, RunConfig, TrainConfig, load_config
from lttoolkit.errors import ConfigError
from lttoolkit.registry import BUILTIN, SAMPLERS
from lttoolkit.samplers.base import ClassWeightedSampler

PROPERTY_SETTINGS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ----------------------------------------------------------------------------- config parsing
def _numeric(annotation: object) -> bool:
    if annotation in (int, float):
        return True
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return len(args) == 1 and args[0] in (int, float)
    return False


# Read from the models, so a numeric field added later is covered too.
NUMERIC_FIELDS = ["seed"] + [
    f"{section}.{name}"
    for section, model in (("data", DataConfig), ("optim", OptimConfig), ("train", TrainConfig))
    for name, info in model.model_fields.items()
    if _numeric(info.annotation)
]


def test_numeric_fields_are_found():
    assert {"seed", "train.epochs", "data.batch_size", "data.imbalance_ratio", "optim.lr"} <= set(NUMERIC_FIELDS)


def _with_a_typo(key: str, position: int) -> str:
    position %= len(key)
    return key[:position] + key[position + 1:]


keys = st.one_of(
    st.sampled_from(NUMERIC_FIELDS),
    st.builds(_with_a_typo, st.sampled_from(NUMERIC_FIELDS), st.integers(0, 40)),
)
values = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.integers(-3, 300).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.floats(min_value=0, max_value=1).map(repr),
    st.sampled_from(["abc", "", "[1, 2]", "{a: 1}", "true", "null", "1e3", "1.0e3", ".inf", "-.inf", ".nan",
                     "0x10", "1_000", "'3'"]),
)


def _named(key: str, message: str) -> bool:
    # An unknown section is reported at the section ("dta: Extra inputs ..."), a field at its full path.
    parts = key.split(".")
    return any(".".join(parts[: i + 1]) in message for i in range(len(parts)))


def _same_number(held: object, given: object) -> bool:
    # pydantic's lax mode turns "3" and true into 3: the number must survive, not the type.
    if held is None or given is None:
        return held is given
    a, b = float(held), float(given)  # type: ignore[arg-type]
    return a == b or (math.isnan(a) and math.isnan(b))


def _held(cfg: RunConfig, key: str) -> object:
    node: object = cfg
    for part in key.split("."):
        node = getattr(node, part)
    return node


@settings(PROPERTY_SETTINGS, max_examples=150)  # a few ms each
@given(overrides=st.lists(st.tuples(keys, values), min_size=1, max_size=4))
def test_random_numeric_overrides_give_a_config_or_a_config_error_naming_the_field(overrides):
    items = [f"{key}={value}" for key, value in overrides]
    try:
        cfg = load_config(None, items)
    except ConfigError as error:
        message = str(error)
        assert any(_named(key, message) for key, _ in overrides), message
        return
    assert isinstance(cfg, RunConfig)
    for key, raw in dict(overrides).items():  # the last override of a key wins
        expected = yaml.safe_load(raw) if raw.strip() else None
        assert _same_number(_held(cfg, key), expected), (key, raw, _held(cfg, key))


# ----------------------------------------------------------------------------- samplers
BUILTIN_SAMPLERS = [entry.name for entry in SAMPLERS.entries() if entry.source == BUILTIN]


def test_every_builtin_sampler_is_covered():
    assert {"instance", "class_balanced", "square_root", "reversed", "progressive"} <= set(BUILTIN_SAMPLERS)


@st.composite
def label_lists(draw) -> tuple[list[int], int]:
    """Labels of 1-300 images over 1-20 classes: some classes empty, sizes from 1 to 300."""
    num_classes = draw(st.integers(1, 20))
    sizes = draw(st.lists(st.one_of(st.just(0), st.integers(1, 3), st.integers(1, 300)),
                          min_size=num_classes, max_size=num_classes))
    labels = [c for c, size in enumerate(sizes) for _ in range(size)]
    draw(st.randoms(use_true_random=False)).shuffle(labels)
    labels = labels[:300] or [draw(st.integers(0, num_classes - 1))]
    return labels, num_classes


def build(name: str, labels: list[int], num_classes: int, seed: int, **options) -> ClassWeightedSampler:
    return SAMPLERS.build(name, labels=labels, num_classes=num_classes, seed=seed, **options)


@pytest.mark.parametrize("name", BUILTIN_SAMPLERS)
@PROPERTY_SETTINGS
@given(data=label_lists(), seed=st.integers(0, 2**63 - 1), epochs=st.lists(st.integers(0, 500), min_size=1, max_size=3),
       num_samples=st.one_of(st.none(), st.integers(1, 600)))
def test_sampler_draws_in_range_from_non_empty_classes_and_repeats_per_seed_and_epoch(name, data, seed, epochs,
                                                                                     num_samples):
    labels, num_classes = data
    counts = torch.bincount(torch.tensor(labels), minlength=num_classes)
    sampler = build(name, labels, num_classes, seed, num_samples=num_samples)
    expected_length = num_samples if num_samples is not None else len(labels)
    streams = {}
    torch.manual_seed(seed % 1000)  # the global RNG must not matter
    for epoch in epochs:
        sampler.set_epoch(epoch)
        indices = list(sampler)
        assert list(sampler) == indices
        streams[epoch] = indices
        assert len(indices) == len(sampler) == expected_length
        assert all(isinstance(i, int) and 0 <= i < len(labels) for i in indices)

        probabilities = sampler.class_probabilities()
        assert probabilities.shape == (num_classes,)
        assert float(probabilities.sum()) == pytest.approx(1.0, abs=1e-9)
        assert bool((probabilities[counts == 0] == 0).all())
        assert all(counts[c] > 0 and probabilities[c] > 0 for c in {labels[i] for i in indices})
        if isinstance(sampler, ClassWeightedSampler):
            # Every class with images keeps a positive weight, however rare it is.
            assert bool((probabilities[counts > 0] > 0).all())
        if name == "instance" and num_samples is None:
            assert sorted(indices) == list(range(len(labels)))  # one pass over the data per epoch

    # A fresh sampler with the same seed replays every epoch, in any order.
    torch.manual_seed(seed % 1000 + 1)
    again = build(name, labels, num_classes, seed, num_samples=num_samples)
    for epoch in reversed(epochs):
        again.set_epoch(epoch)
        assert list(again) == streams[epoch]


@pytest.mark.parametrize("name", BUILTIN_SAMPLERS)
@PROPERTY_SETTINGS
@given(data=label_lists(), seed=st.integers(0, 2**63 - 1), epoch=st.integers(0, 500),
       num_replicas=st.integers(1, 4), num_samples=st.one_of(st.none(), st.integers(1, 600)))
def test_sampler_shards_interleave_into_the_single_process_stream(name, data, seed, epoch, num_replicas,
                                                                  num_samples):
    labels, num_classes = data
    single = build(name, labels, num_classes, seed, num_samples=num_samples)
    single.set_epoch(epoch)
    stream = list(single)
    shards = []
    for rank in range(num_replicas):
        shard = build(name, labels, num_classes, seed, num_samples=num_samples, num_replicas=num_replicas, rank=rank)
        shard.set_epoch(epoch)
        shards.append(list(shard))
    per_rank = math.ceil(len(stream) / num_replicas)
    assert [len(s) for s in shards] == [per_rank] * num_replicas
    interleaved = [shards[position % num_replicas][position // num_replicas]
                   for position in range(per_rank * num_replicas)]
    # The first len(stream) positions are the single-process stream; padding wraps around it.
    assert interleaved[: len(stream)] == stream
    assert interleaved == [stream[position % len(stream)] for position in range(len(interleaved))]
