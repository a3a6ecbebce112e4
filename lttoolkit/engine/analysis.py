"""The BBN paper's classifier analysis (Zhou et al. 2020, Fig. 5): per-class weight norms.

For BBN the classifier W = [W_c, W_r] reads the conventional and the re-balancing
features; the paper compares the per-class L2 norms of W_c, W_r and W with those of
plain CE / re-sampling / re-weighting classifiers. Norms that fall from head to tail
mean a classifier biased to the head.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lttoolkit.engine.evaluate import load_model

__all__ = ["classifier_weight_norms", "analyze_checkpoint", "plot_weight_norms"]


def classifier_weight_norms(model: torch.nn.Module) -> dict[str, list[float]]:
    """Per-class L2 norms of the classifier weights, by part.

    Returns:
        ``{"both": [...]}`` for single-branch models; for BBN also
        ``"conventional"`` and ``"rebalancing"`` (the halves of W).
    """
    if hasattr(model, "classifier_halves"):
        conventional, rebalancing = model.classifier_halves()
        return {
            "conventional": conventional.detach().norm(dim=1).tolist(),
            "rebalancing": rebalancing.detach().norm(dim=1).tolist(),
            "both": model.classifier.weight.detach().norm(dim=1).tolist(),
        }
    head = getattr(model, "classifier", None)
    weight = getattr(head, "weight", None)
    if not isinstance(weight, torch.Tensor):
        raise ValueError(f"{type(model).__name__} has no linear classifier weight to analyse")
    return {"both": weight.detach().norm(dim=1).tolist()}


def analyze_checkpoint(checkpoint: str | Path) -> dict[str, Any]:
    """Weight norms of a checkpoint's classifier, with the training class counts (head first)."""
    model, state = load_model(checkpoint)
    return {
        "checkpoint": str(checkpoint),
        "method": model.recipe.method,
        "classes": state.get("classes"),
        "train_class_counts": state.get("class_counts"),
        "weight_norms": classifier_weight_norms(model),
    }


def plot_weight_norms(analysis: dict[str, Any], path: str | Path) -> Path:
    """Plot per-class norms against classes sorted by training count (needs the ``plot`` extra)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        from lttoolkit.errors import ConfigError

        raise ConfigError("plotting needs matplotlib: pip install 'lttoolkit[plot]'") from None
    counts = analysis.get("train_class_counts") or list(range(len(analysis["weight_norms"]["both"])))[::-1]
    order = sorted(range(len(counts)), key=lambda i: -counts[i])
    fig, ax = plt.subplots(figsize=(7, 4))
    for part, norms in analysis["weight_norms"].items():
        ax.plot(range(len(order)), [norms[i] for i in order], marker="o", label=part)
    ax.set_xlabel("class, sorted by training images (head → tail)")
    ax.set_ylabel("L2 norm of classifier weights")
    ax.set_title(f"{analysis['method']}: classifier weight norms")
    ax.legend()
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
