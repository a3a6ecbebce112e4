"""Alpha schedules of cumulative learning (Zhou et al., "BBN", CVPR 2020, Sec. 3.3).

alpha weights the conventional branch against the re-balancing branch. BBN's
default is the parabolic decay alpha = 1 - (T / T_max)^2 with T the 0-based
epoch and T_max the number of epochs; the paper's ablation (Table 4) also
compares linear, cosine and the reversed (increasing) parabola.

These objects are plain Python (no torch), so listing and plotting them is cheap.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Protocol, runtime_checkable

from lttoolkit.errors import ComponentContractError, ConfigError

__all__ = [
    "AlphaSchedule",
    "ParabolicDecay",
    "LinearDecay",
    "CosineDecay",
    "StepDecay",
    "ConstantAlpha",
    "ParabolicIncrement",
    "checked_alpha",
    "check_built_schedule",
]


@runtime_checkable
class AlphaSchedule(Protocol):
    """What a schedule is: ``schedule(epoch, max_epochs) -> alpha`` in [0, 1]."""

    def __call__(self, epoch: int, max_epochs: int) -> float: ...


def checked_alpha(schedule: Any, epoch: int, max_epochs: int, *, name: str = "schedule") -> float:
    # `name` reads after "alpha": e.g. "schedule 'parabolic' from my-plugin 1.0".
    """Call ``schedule`` and check its value, so a broken plugin fails loudly.

    Raises:
        ComponentContractError: alpha is not a finite number in [0, 1].

    >>> checked_alpha(ParabolicDecay(), 5, 10)
    0.75
    """
    value = schedule(epoch, max_epochs)
    try:
        alpha = float(value)
    except (TypeError, ValueError):
        raise ComponentContractError(
            f"alpha {name} returned {value!r} at epoch {epoch}/{max_epochs}; it must return a float in [0, 1]."
        ) from None
    if not (0.0 <= alpha <= 1.0):  # also catches NaN
        raise ComponentContractError(
            f"alpha {name} returned {alpha} at epoch {epoch}/{max_epochs}, outside [0, 1]; "
            f"fix the schedule (or its options) so that it stays within [0, 1]."
        )
    return alpha


def check_built_schedule(schedule: Any, *, who: str, options: Mapping[str, Any]) -> None:
    """What :data:`lttoolkit.SCHEDULES` checks a plugin's schedule for: alpha in [0, 1] at a few epochs."""
    for epoch, epochs in ((0, 10), (5, 10), (9, 10), (0, 1)):
        checked_alpha(schedule, epoch, epochs, name=who)


# The official code changes its divisor only for these numbers of epochs (its iNaturalist
# and ImageNet recipes); see ``_ProgressSchedule``.
_OFFICIAL_QUIRK_EPOCHS = (90, 180)


class _ProgressSchedule:
    """Base for schedules that are a function of progress T / T_max.

    Args:
        div_epoch_quirk: reproduce the official BBN code exactly
            (``lib/core/combiner.py``): when ``max_epochs`` is 90 or 180 it divides
            the epoch by ``100 * (max_epochs // 100 + 1)`` (100 or 200) instead of
            ``max_epochs``, so alpha never gets near 0: it ends at
            1 - (89/100)^2 = 0.2079 or 1 - (179/200)^2 = 0.1990. For every other
            number of epochs the official divisor is ``max_epochs``, as without
            the quirk. Off by default.
    """

    def __init__(self, div_epoch_quirk: bool = False) -> None:
        self.div_epoch_quirk = bool(div_epoch_quirk)

    def _progress(self, epoch: int, max_epochs: int) -> float:
        if max_epochs <= 0:
            raise ConfigError(f"max_epochs must be positive, got {max_epochs}")
        if epoch < 0:
            raise ConfigError(f"epoch must be >= 0, got {epoch}")
        return min(epoch / self.divisor(max_epochs), 1.0)

    def divisor(self, max_epochs: int) -> int:
        """What the epoch is divided by: ``max_epochs``, or the official code's 100 / 200
        for 90 / 180 epochs with ``div_epoch_quirk``.

        >>> [ParabolicDecay(div_epoch_quirk=True).divisor(e) for e in (90, 180, 200)]
        [100, 200, 200]
        """
        if self.div_epoch_quirk and max_epochs in _OFFICIAL_QUIRK_EPOCHS:
            return 100 * (max_epochs // 100 + 1)
        return max_epochs

    def _value(self, progress: float) -> float:
        raise NotImplementedError

    def __call__(self, epoch: int, max_epochs: int) -> float:
        return min(1.0, max(0.0, self._value(self._progress(epoch, max_epochs))))

    def __repr__(self) -> str:
        quirk = ", div_epoch_quirk=True" if self.div_epoch_quirk else ""
        return f"{type(self).__name__}({quirk.lstrip(', ')})"


class ParabolicDecay(_ProgressSchedule):
    """BBN's cumulative-learning default: alpha = 1 - (T/T_max)^2.

    >>> schedule = ParabolicDecay()
    >>> [round(schedule(t, 4), 4) for t in range(4)]
    [1.0, 0.9375, 0.75, 0.4375]
    >>> round(ParabolicDecay(div_epoch_quirk=True)(89, 90), 4)  # the official code's value
    0.2079
    >>> round(ParabolicDecay(div_epoch_quirk=True)(199, 200), 4)  # 200 epochs: no quirk there
    0.01
    """

    def _value(self, progress: float) -> float:
        return 1.0 - progress**2


class LinearDecay(_ProgressSchedule):
    """alpha = 1 - T/T_max.

    >>> LinearDecay()(3, 4)
    0.25
    """

    def _value(self, progress: float) -> float:
        return 1.0 - progress


class CosineDecay(_ProgressSchedule):
    """alpha = cos(pi/2 * T/T_max).

    >>> round(CosineDecay()(2, 4), 4)
    0.7071
    """

    def _value(self, progress: float) -> float:
        return math.cos(math.pi / 2 * progress)


class ParabolicIncrement(_ProgressSchedule):
    """alpha = (T/T_max)^2: the reverse of BBN's default, from the paper's ablation.

    >>> ParabolicIncrement()(2, 4)
    0.25
    """

    def _value(self, progress: float) -> float:
        return progress**2


class StepDecay:
    """alpha = 1 before ``switch_epoch``, 0 from it on (hard switch, like deferred re-sampling).

    Args:
        switch_epoch: first epoch with alpha = 0; ``None`` means 80% of the epochs,
            the DRW/DRS convention of Cao et al. (2019).

    >>> schedule = StepDecay(switch_epoch=3)
    >>> [schedule(t, 5) for t in range(5)]
    [1.0, 1.0, 1.0, 0.0, 0.0]
    """

    def __init__(self, switch_epoch: int | None = None) -> None:
        if switch_epoch is not None and switch_epoch < 0:
            raise ConfigError(f"step schedule: switch_epoch must be >= 0, got {switch_epoch}")
        self.switch_epoch = switch_epoch

    def __call__(self, epoch: int, max_epochs: int) -> float:
        switch = self.switch_epoch if self.switch_epoch is not None else int(0.8 * max_epochs)
        return 1.0 if epoch < switch else 0.0

    def __repr__(self) -> str:
        return f"StepDecay(switch_epoch={self.switch_epoch})"


class ConstantAlpha:
    """alpha fixed to ``value`` (0.5 by default: both branches weighted equally).

    >>> ConstantAlpha(0.3)(7, 10)
    0.3
    """

    def __init__(self, value: float = 0.5) -> None:
        if not 0.0 <= float(value) <= 1.0:
            raise ConfigError(f"constant schedule: value must be in [0, 1], got {value}")
        self.value = float(value)

    def __call__(self, epoch: int, max_epochs: int) -> float:
        return self.value

    def __repr__(self) -> str:
        return f"ConstantAlpha(value={self.value})"
