"""The entry points this distribution declares resolve to loss factories with the pinned protocol."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import torch

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def declared() -> dict[str, str]:
    data = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))
    return data["project"]["entry-points"]["lttoolkit.losses"]


def test_declares_both_losses():
    assert sorted(declared()) == ["equalization", "seesaw"]


@pytest.mark.parametrize("name", sorted(declared()))
def test_entry_point_follows_the_loss_protocol(name):
    module, _, attr = declared()[name].partition(":")
    factory = getattr(importlib.import_module(module), attr)
    loss = factory(class_counts=[50, 20, 5])  # factory(class_counts, **options)
    assert isinstance(loss, torch.nn.Module)
    logits = torch.randn(4, 3, requires_grad=True)
    value = loss(logits, torch.tensor([0, 1, 2, 0]))
    assert value.dim() == 0 and torch.isfinite(value)
    value.backward()
    assert torch.isfinite(logits.grad).all()
    loss.set_epoch(0, 10)  # the trainer calls it at every epoch start
