"""Methods: recipes that assemble registered pieces into trainable models."""

from lttoolkit.methods.bilateral import BilateralBlock, BilateralWrapper, bbn_logits, bbn_loss, find_last_block
from lttoolkit.methods.single_branch import CosineClassifier, SingleBranchModel
from lttoolkit.methods.decoupling import DecoupledModel
from lttoolkit.methods.multi_expert import (
    BilateralExperts,
    ConcatHead,
    ExpertHeads,
    ExpertOutput,
    MultiExpertWrapper,
    later_modules,
    stage_split,
)
from lttoolkit.methods.ride import ExpertRouter, RoutedExperts

__all__ = ["BilateralWrapper", "BilateralBlock", "SingleBranchModel", "CosineClassifier", "DecoupledModel",
           "find_last_block", "bbn_logits", "bbn_loss", "MultiExpertWrapper", "BilateralExperts", "ExpertHeads",
           "ConcatHead", "ExpertOutput", "later_modules", "stage_split", "ExpertRouter", "RoutedExperts"]
