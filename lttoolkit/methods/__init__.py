"""Methods: recipes that assemble registered pieces into trainable models."""

from lttoolkit.methods.bilateral import BilateralBlock, BilateralWrapper, find_last_block
from lttoolkit.methods.single_branch import CosineClassifier, SingleBranchModel
from lttoolkit.methods import presets  # noqa: F401  (registers the presets)

__all__ = ["BilateralWrapper", "BilateralBlock", "SingleBranchModel", "CosineClassifier", "find_last_block"]
