"""The method protocol: what ``lttk train`` calls on a method, written down once.

A method (what :func:`lttoolkit.build` returns) is trained through this typed
:class:`TrainableMethod` protocol only, in the spirit of Lightning's
``training_step``: the trainer gives a step its images, targets, the loss, the
epoch and the forward to call (the model itself, or its DDP wrapper), and gets
back the loss to minimise plus what the training metrics need. A method keeps no
state between its forward and its loss: the step does both.

>>> import torch
>>> from lttoolkit import build
>>> model = build("ce", backbone="resnet20_cifar", num_classes=3)
>>> missing_members(model)
[]
>>> out = model.train().training_step([torch.randn(4, 3, 32, 32)], [torch.tensor([0, 1, 2, 0])],
...                                   torch.nn.CrossEntropyLoss(), EpochInfo(0, 10), model)
>>> out.loss.dim(), tuple(out.logits.shape), out.batch_size
(0, (4, 3), 4)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

from torch import Tensor

__all__ = ["EpochInfo", "StepOutput", "TrainableMethod", "SecondStageMethod", "missing_members", "PROTOCOL_MEMBERS"]

Criterion = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class EpochInfo:
    """Where training is: the 0-based ``epoch`` of ``max_epochs``."""

    epoch: int
    max_epochs: int


@dataclass
class StepOutput:
    """What one training step gives the trainer.

    Attributes:
        loss: the scalar to minimise.
        logits: the logits of the step's forward (for logging and metrics).
        hits: correctly classified images of the batch, possibly weighted (BBN: ``α·hits(y_c) +
            (1−α)·hits(y_r)``, as the official code), as a number or a 0-dim tensor.
        batch_size: images per stream in the batch (the denominator of the training accuracy).
        stats: per-step values to log beside the loss (BBN: ``alpha``).
    """

    loss: Tensor
    logits: Tensor
    hits: float | Tensor
    batch_size: int
    stats: dict[str, float] = field(default_factory=dict)


@runtime_checkable
class TrainableMethod(Protocol):
    """What a method provides to be trained by ``lttk train`` (docs/plugins.md, *method*)."""

    recipe: Any  # lttoolkit.Recipe: the samplers (one per input stream), the loss and the schedule

    def on_train_start(self, class_counts: Sequence[int]) -> None:
        """Called once before training with the training set's images per class."""

    def epoch_stats(self, epoch: EpochInfo) -> dict[str, float]:
        """Per-epoch values the method trains with and the log records (BBN: ``{"alpha": ...}``)."""

    def training_step(
        self,
        images: Sequence[Tensor],
        targets: Sequence[Tensor],
        criterion: Criterion,
        epoch: EpochInfo,
        forward: Callable[..., Tensor],
    ) -> StepOutput:
        """One step: call ``forward`` once (the model, or its DDP wrapper) and compute the loss."""


@runtime_checkable
class SecondStageMethod(Protocol):
    """A decoupling stage 2 (Kang et al., ICLR 2020: cRT, LWS, tau-norm), on top of
    :class:`TrainableMethod`: it starts from a stage-1 run's weights (``--from``).

    The trainer recognises it with ``isinstance(model, SecondStageMethod)``: it refuses to start
    one without ``init_from``, loads the stage-1 weights with :meth:`load_stage1`, and for a
    method that ``requires_training`` is false (tau-norm) builds no optimizer and calls
    :meth:`choose_tau` with the validation split's evaluation instead of training.

    >>> from lttoolkit import build
    >>> isinstance(build("crt", backbone="resnet20_cifar", num_classes=3), SecondStageMethod)
    True
    >>> isinstance(build("ce", backbone="resnet20_cifar", num_classes=3), SecondStageMethod)
    False
    """

    requires_training: bool

    def load_stage1(self, state_dict: Any) -> None:
        """Take the stage-1 run's weights (the representation; the classifier as the method needs)."""

    def choose_tau(self, evaluate: Callable[[], Any]) -> dict[str, Any]:
        """Calibrate on the validation split (``evaluate()`` gives its metrics); the chosen values."""


PROTOCOL_MEMBERS = ("recipe", "on_train_start", "epoch_stats", "training_step")


def missing_members(model: Any) -> list[str]:
    """The members of :class:`TrainableMethod` that ``model`` lacks (empty: it can be trained)."""
    return [name for name in PROTOCOL_MEMBERS if not hasattr(model, name)
            or (name != "recipe" and not callable(getattr(model, name)))]
