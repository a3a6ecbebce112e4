"""lttk-remix: the Remix method and a tiny ConvNet backbone for lttoolkit, as entry-point plugins.

* method ``remix``: Remix, rebalanced mixup (Chou et al., ECCV 2020 Workshops), :func:`remix`.
* backbone ``tiny_convnet``: a small plain ConvNet with timm's interface, :func:`tiny_convnet`.

lttoolkit finds them through the ``lttoolkit.methods`` and ``lttoolkit.backbones``
entry points declared in this distribution's ``pyproject.toml``; importing
this package registers nothing by itself.

>>> from lttk_remix import remix_label_weights
>>> import torch
>>> remix_label_weights(torch.tensor([500]), torch.tensor([50]), 0.2).tolist()  # label goes to the rare class
[0.0]
"""

from __future__ import annotations

from lttk_remix.backbone import ConvBlock, TinyConvNet, tiny_convnet
from lttk_remix.method import RemixModel, remix, remix_label_weights, remix_targets

__all__ = ["RemixModel", "remix", "remix_label_weights", "remix_targets", "TinyConvNet", "ConvBlock", "tiny_convnet"]
__version__ = "0.1.0"
