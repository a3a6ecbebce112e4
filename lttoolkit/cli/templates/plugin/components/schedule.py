"""``__COMPONENT__``: a power-law decay of alpha, an example lttoolkit alpha schedule.

BBN's cumulative learning (Zhou et al., CVPR 2020) weights the conventional
branch by ``alpha`` and the re-balancing branch by ``1 - alpha``. This schedule
decays ``alpha = 1 - (T / T_max) ** power``: ``power = 2`` is BBN's parabolic
default, ``power = 1`` the linear decay.

Protocol (lttoolkit ``docs/plugins.md``): ``factory(**options)`` returning an
object with ``__call__(epoch, max_epochs) -> float`` in ``[0, 1]`` (0-based epochs).
"""

from __future__ import annotations

import math

from lttoolkit.errors import ConfigError

__all__ = ["__ATTR__"]


class __ATTR__:
    """alpha = 1 - (epoch / max_epochs) ** power.

    Args:
        power: exponent, ``> 0`` (2: BBN's parabolic decay).

    >>> __ATTR__(power=2.0)(5, 10)
    0.75
    """

    def __init__(self, power: float = 2.0) -> None:
        if isinstance(power, bool) or not isinstance(power, (int, float)) or not math.isfinite(power) or power <= 0:
            raise ConfigError(f"__COMPONENT__: power must be a finite number > 0, got {power!r}")
        self.power = float(power)

    def __call__(self, epoch: int, max_epochs: int) -> float:
        if max_epochs < 1:
            raise ConfigError(f"__COMPONENT__: max_epochs must be >= 1, got {max_epochs}")
        progress = min(max(epoch / max_epochs, 0.0), 1.0)
        return 1.0 - progress**self.power

    def __repr__(self) -> str:
        return f"__ATTR__(power={self.power})"
