"""Contract tests for ``__COMPONENT__`` (__KIND__ plugin of the ``__DIST__`` distribution)."""

from __future__ import annotations

import pytest

from lttoolkit.errors import ConfigError
from lttoolkit.schedules import checked_alpha

from __PACKAGE__ import __ATTR__


def test_values_by_hand():
    schedule = __ATTR__(power=2.0)
    assert [schedule(epoch, 4) for epoch in range(4)] == pytest.approx([1.0, 1 - 1 / 16, 0.75, 1 - 9 / 16])
    assert __ATTR__(power=1.0)(3, 4) == pytest.approx(0.25)


@pytest.mark.parametrize("power", [0.5, 1.0, 2.0, 5.0])
def test_alpha_in_unit_interval_and_non_increasing(power):
    schedule = __ATTR__(power=power)  # factory(**options)
    values = [checked_alpha(schedule, epoch, 20) for epoch in range(20)]
    assert values[0] == 1.0
    assert all(later <= earlier for earlier, later in zip(values, values[1:]))


def test_invalid_option():
    with pytest.raises(ConfigError):
        __ATTR__(power=0.0)
