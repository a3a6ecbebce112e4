"""Long-tail losses, registered in :data:`lttoolkit.registry.LOSSES`.

Every loss is built as ``LossClass(class_counts, **options)`` and called as
``loss(logits[B, C], targets[B]) -> scalar`` (mean over the batch). Losses with
deferred re-weighting switch their class weights in :meth:`set_epoch`, which
the trainer calls at the start of every epoch. Shared conventions (weighted
mean, empty classes) are described in :mod:`lttoolkit.losses._base`.

>>> from lttoolkit.registry import LOSSES
>>> LOSSES.build("focal", class_counts=[100, 10], gamma=1.0)
FocalLoss(num_classes=2, gamma=1.0)
"""

from __future__ import annotations

from lttoolkit.losses._base import REWEIGHT_SCHEMES, LongTailLoss, as_class_counts, per_class_weights, weighted_mean
from lttoolkit.losses.balanced_softmax import BalancedSoftmaxLoss
from lttoolkit.losses.class_balanced import CLASS_BALANCED_BASES, CLASS_BALANCED_NORMALIZATIONS, ClassBalancedLoss
from lttoolkit.losses.cross_entropy import CrossEntropyLoss
from lttoolkit.losses.focal import FocalLoss, focal_loss
from lttoolkit.losses.label_smoothing import LabelSmoothingLoss
from lttoolkit.losses.ldam import LDAMLoss, ldam_margins
from lttoolkit.losses.logit_adjusted import LogitAdjustedLoss, adjust_logits, log_prior
from lttoolkit.losses.ride import RIDELoss, ride_diversity_weights

__all__ = [
    "LongTailLoss",
    "CrossEntropyLoss",
    "FocalLoss",
    "ClassBalancedLoss",
    "LDAMLoss",
    "BalancedSoftmaxLoss",
    "LogitAdjustedLoss",
    "LabelSmoothingLoss",
    "RIDELoss",
    "adjust_logits",
    "log_prior",
    "ldam_margins",
    "ride_diversity_weights",
    "focal_loss",
    "per_class_weights",
    "weighted_mean",
    "as_class_counts",
    "REWEIGHT_SCHEMES",
    "CLASS_BALANCED_BASES",
    "CLASS_BALANCED_NORMALIZATIONS",
]
