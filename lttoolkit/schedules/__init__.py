"""Alpha schedules for cumulative learning (BBN, Zhou et al. CVPR 2020).

A schedule is an object whose ``__call__(epoch, max_epochs)`` returns alpha in
[0, 1]: the weight of the conventional branch at that (0-based) epoch.
"""

from lttoolkit.schedules.alpha import (
    AlphaSchedule,
    ConstantAlpha,
    CosineDecay,
    LinearDecay,
    ParabolicDecay,
    ParabolicIncrement,
    StepDecay,
    checked_alpha,
)

__all__ = [
    "AlphaSchedule",
    "ParabolicDecay",
    "LinearDecay",
    "CosineDecay",
    "StepDecay",
    "ConstantAlpha",
    "ParabolicIncrement",
    "checked_alpha",
]
