"""Optimizer and learning-rate schedule of the BBN recipes.

SGD with momentum; linear warm-up over the first epochs, then multistep decay
(BBN CIFAR: x0.01 at epochs 120 and 160) or cosine decay. Warm-up rises with
every step (from lr/(warm-up steps) at the first step, as in Goyal et al. 2017),
so the first steps of a run never see the full rate; the decay changes at epoch
boundaries.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lttoolkit.engine.config import OptimConfig

__all__ = ["build_optimizer", "build_lr_scheduler", "lr_factor"]


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """SGD over the parameters that require gradients (frozen ones are left out)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        from lttoolkit.errors import ConfigError

        raise ConfigError(f"{type(model).__name__} has no trainable parameter: nothing for the optimizer to train")
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                           nesterov=cfg.nesterov and cfg.momentum > 0)


def lr_factor(epoch: int, cfg: OptimConfig, epochs: int, fraction: float = 1.0) -> float:
    """The multiplier of ``cfg.lr`` at ``fraction`` (0, 1] through ``epoch`` (0-based).

    >>> cfg = OptimConfig(warmup_epochs=5, milestones=[120, 160], gamma=0.01)
    >>> [lr_factor(e, cfg, 200) for e in (0, 4, 5, 119, 120, 160)]  # at the end of each epoch
    [0.2, 1.0, 1.0, 1.0, 0.01, 0.0001]
    >>> lr_factor(0, cfg, 200, fraction=0.5)  # half-way through the first epoch
    0.1
    """
    if epoch < cfg.warmup_epochs:
        return (epoch + fraction) / cfg.warmup_epochs
    if cfg.schedule == "multistep":
        return cfg.gamma ** sum(epoch >= m for m in cfg.milestones)
    if cfg.schedule == "cosine":
        span = max(epochs - cfg.warmup_epochs, 1)
        return 0.5 * (1.0 + math.cos(math.pi * (epoch - cfg.warmup_epochs) / span))
    return 1.0


def build_lr_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig, epochs: int,
                       steps_per_epoch: int = 1) -> torch.optim.lr_scheduler.LambdaLR:
    """A step-wise :class:`~torch.optim.lr_scheduler.LambdaLR` following :func:`lr_factor`.

    Step it after every optimizer step; ``steps_per_epoch=1`` makes it epoch-wise.
    """
    steps = max(1, int(steps_per_epoch))

    def factor(step: int) -> float:
        return lr_factor(step // steps, cfg, epochs, fraction=(step % steps + 1) / steps)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
