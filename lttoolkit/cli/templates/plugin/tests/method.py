"""Contract tests for ``__COMPONENT__`` (__KIND__ plugin of the ``__DIST__`` distribution)."""

from __future__ import annotations

import pytest
import torch

from lttoolkit import Recipe
from lttoolkit.errors import LTToolkitError
from lttoolkit.methods.protocol import EpochInfo, missing_members

from __PACKAGE__ import __ATTR__


def test_builds_a_model_with_a_recipe():
    model = __ATTR__(backbone="resnet20_cifar", num_classes=5)  # factory(**options)
    assert isinstance(model, torch.nn.Module)
    assert isinstance(model.recipe, Recipe)
    assert model.recipe.method == "__COMPONENT__"
    assert model.recipe.samplers["main"].type == "class_balanced"
    assert model.recipe.loss.type == "cross_entropy"


def test_one_training_step_and_inference():
    model = __ATTR__(backbone="resnet20_cifar", num_classes=3)
    assert missing_members(model) == []  # lttoolkit's method protocol
    images, targets = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])
    model.on_train_start([10, 5, 1])
    out = model.train().training_step([images], [targets], torch.nn.CrossEntropyLoss(), EpochInfo(0, 10), model)
    loss = out.loss
    assert loss.dim() == 0 and torch.isfinite(loss) and out.logits.shape == (4, 3)
    loss.backward()
    assert model.eval()(images).shape == (4, 3)


def test_unknown_piece_fails_at_build_time():
    with pytest.raises(LTToolkitError):
        __ATTR__(backbone="resnet20_cifar", num_classes=3, sampler="no_such_sampler")
