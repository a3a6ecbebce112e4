"""lttk-extra-losses: two long-tail losses for lttoolkit, shipped as entry-point plugins.

* ``seesaw``: Seesaw loss (Wang et al., CVPR 2021), :class:`SeesawLoss`.
* ``equalization``: equalization loss (Tan et al., CVPR 2020), sigmoid form by default, :class:`EqualizationLoss`.

lttoolkit finds them through the ``lttoolkit.losses`` entry points declared in
this distribution's ``pyproject.toml``; importing this package registers
nothing by itself.

>>> from lttk_extra_losses import SeesawLoss
>>> SeesawLoss([100, 10])
SeesawLoss(num_classes=2, p=0.8, q=2.0)
"""

from __future__ import annotations

from lttk_extra_losses.equalization import EqualizationLoss, tail_classes
from lttk_extra_losses.seesaw import SeesawLoss, seesaw_log_factors

__all__ = ["SeesawLoss", "EqualizationLoss", "seesaw_log_factors", "tail_classes"]
__version__ = "0.1.0"
