"""Plugin components are checked against their protocol when first built (docs/plugins.md)."""

from __future__ import annotations

import pytest
import torch

from lttoolkit.errors import ComponentContractError
from lttoolkit.registry import LOSSES, SAMPLERS, SCHEDULES, registration_source


@pytest.fixture
def plugin_components():
    """Register deliberately broken components as if a plugin distribution had."""

    class TooBig:
        """Returns alpha above 1."""

        def __call__(self, epoch: int, max_epochs: int) -> float:
            return 1.5

    class VectorLoss(torch.nn.Module):
        """Forgets to reduce over the batch."""

        def __init__(self, class_counts):
            super().__init__()

        def forward(self, logits, targets):
            return torch.nn.functional.cross_entropy(logits, targets, reduction="none")

    class OffByOne(torch.utils.data.Sampler):
        """Yields 1..n instead of 0..n-1."""

        def __init__(self, labels, *, seed=0, num_replicas=1, rank=0):
            self.n = len(labels)

        def set_epoch(self, epoch):
            pass

        def __len__(self):
            return self.n

        def __iter__(self):
            return iter(range(1, self.n + 1))

    def no_rank(labels, seed=0):
        """Lacks num_replicas and rank."""
        return None

    class GoodHalf:
        """alpha = 0.5."""

        def __call__(self, epoch: int, max_epochs: int) -> float:
            return 0.5

    added = [(SCHEDULES, "t_too_big", TooBig), (LOSSES, "t_vector", VectorLoss), (SAMPLERS, "t_off_by_one", OffByOne),
             (SAMPLERS, "t_no_rank", no_rank), (SCHEDULES, "t_half", GoodHalf)]
    with registration_source("lttk-broken-things 0.3"):
        for registry, name, obj in added:
            registry.register(obj, name=name)
    yield
    for registry, name, _ in added:
        registry.unregister(name)


def test_schedule_outside_unit_interval_is_refused(plugin_components):
    with pytest.raises(ComponentContractError, match=r"schedule 't_too_big' from lttk-broken-things 0.3 returned 1.5"):
        SCHEDULES.build("t_too_big")


def test_loss_must_return_a_scalar(plugin_components):
    with pytest.raises(ComponentContractError, match=r"loss 't_vector' from lttk-broken-things 0.3 returned \(2,\)"):
        LOSSES.build("t_vector", class_counts=[3, 2])


def test_sampler_indices_must_lie_in_the_dataset(plugin_components):
    with pytest.raises(ComponentContractError, match=r"yielded index 3, outside \[0, 3\)"):
        SAMPLERS.build("t_off_by_one", labels=[0, 1, 1])


def test_sampler_signature_is_checked(plugin_components):
    with pytest.raises(ComponentContractError, match="does not accept num_replicas, rank"):
        SAMPLERS.build("t_no_rank", labels=[0, 1])


def test_conforming_plugin_component_passes(plugin_components):
    assert SCHEDULES.build("t_half")(3, 10) == 0.5


def test_builtins_are_not_rechecked_at_build():
    # builtins are covered by the suite; building one must not iterate or probe it
    sampler = SAMPLERS.build("reversed", labels=[0] * 5 + [1])
    assert len(sampler) == 6
