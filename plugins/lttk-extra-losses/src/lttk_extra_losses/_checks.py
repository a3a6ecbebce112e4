"""Option checks shared by the losses: errors name the option and the fix."""

from __future__ import annotations

import math
import numbers

from lttoolkit.errors import ConfigError


def non_negative(name: str, value: float) -> float:
    """``value`` as a float, or :class:`ConfigError` unless it is a finite number >= 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0:
        raise ConfigError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def probability(name: str, value: float) -> float:
    """``value`` as a float, or :class:`ConfigError` unless ``0 <= value <= 1``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= float(value) <= 1.0:
        raise ConfigError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


def flag(name: str, value: bool) -> bool:
    """``value`` if it is a bool, else :class:`ConfigError` (``"false"`` from a config must not mean True)."""
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be true or false, got {value!r} ({type(value).__name__})")
    return value
