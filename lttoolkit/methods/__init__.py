"""Methods: recipes that assemble registered pieces into trainable models."""

from lttoolkit.methods.bilateral import BilateralBlock, BilateralWrapper, find_last_block
from lttoolkit.methods.single_branch import SingleBranchModel

__all__ = ["BilateralWrapper", "BilateralBlock", "SingleBranchModel", "find_last_block"]
