"""Use a trained checkpoint: rebuild its model, evaluate it, predict images."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from lttoolkit.engine.checkpoint import load_checkpoint
from lttoolkit.engine.config import RunConfig, load_config
from lttoolkit.errors import ConfigError
from lttoolkit.recipe import Recipe

__all__ = ["load_model", "evaluate_checkpoint", "predict"]


def load_model(checkpoint: str | Path | dict[str, Any], *, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model a checkpoint was trained as and load its weights.

    Loading uses ``torch.load(weights_only=True)``: a checkpoint cannot run code.

    Returns:
        ``(model in eval mode, checkpoint dict)``.
    """
    state = checkpoint if isinstance(checkpoint, dict) else load_checkpoint(checkpoint)
    if "recipe" not in state or "model" not in state:
        raise ConfigError(
            f"{checkpoint if not isinstance(checkpoint, dict) else 'the checkpoint'} is not an lttoolkit checkpoint "
            f"(no recipe/model); pass best.pt or last.pt from a run folder"
        )
    for module in state.get("config", {}).get("plugins", []):
        from lttoolkit.registry import load_plugin

        load_plugin(module)
    recipe = Recipe.model_validate(state["recipe"])
    # The checkpoint holds every weight: never fetch pretrained ones (works offline), but keep
    # the recipe as trained, so the model still says it started from pretrained weights.
    offline = {"pretrained": False} if recipe.options.get("pretrained") else {}
    model = recipe.rebuild(**offline)
    model.load_state_dict(state["model"])
    model.recipe = recipe
    return model.to(device).eval(), state


def evaluate_checkpoint(checkpoint: str | Path, overrides: Sequence[str] = (), *, device: str = "auto") -> dict[str, Any]:
    """Evaluate a checkpoint on the test split its run used (or another, via ``data.*`` overrides).

    Returns:
        The same metrics as training reports (top-1/5, many/medium/few-shot,
        per-class accuracy, confusion matrix), plus ``checkpoint`` and ``epoch``.
    """
    from lttoolkit.engine.datasets import build_datasets
    from lttoolkit.engine.trainer import evaluate_model, resolve_device

    state = load_checkpoint(checkpoint)
    # load_config, not model_validate: a bad override is a ConfigError naming the field.
    cfg = load_config(None, overrides, base=state["config"])
    torch_device = resolve_device(device)
    model, _ = load_model(state, device=torch_device)
    data = build_datasets(cfg.data, seed=cfg.seed)
    if data.num_classes != model.recipe.num_classes:
        raise ConfigError(
            f"the checkpoint has {model.recipe.num_classes} classes but the data has {data.num_classes}; "
            f"evaluate on data with the same classes"
        )
    results = evaluate_model(model, data.test, data.class_counts, device=torch_device,
                             batch_size=cfg.data.test_batch_size, num_workers=cfg.data.num_workers)
    results.update(checkpoint=str(checkpoint), epoch=state.get("epoch"))
    return results


@torch.no_grad()
def predict(checkpoint: str | Path, images: Sequence[str | Path], *, topk: int = 5, device: str = "cpu") -> list[dict[str, Any]]:
    """Top-k classes with probabilities for each image file."""
    from PIL import Image

    from lttoolkit.data.transforms import build_transforms
    from lttoolkit.engine.datasets import transform_family

    model, state = load_model(checkpoint, device=device)
    cfg = RunConfig.model_validate(state["config"])
    classes: list[str] = state.get("classes") or [str(i) for i in range(model.recipe.num_classes)]
    channels, height, width = state.get("input_size", [model.recipe.in_chans, 32, 32])
    family = transform_family(cfg.data)
    transform = build_transforms(family, train=False, in_chans=channels, image_size=cfg.data.image_size)
    k = max(1, min(topk, len(classes)))
    out = []
    for path in images:
        try:
            with Image.open(path) as img:
                img = img.convert("L" if channels == 1 else "RGB")
                if family != "imagenet":
                    img = img.resize((width, height))
                tensor = transform(img).unsqueeze(0).to(device)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read image {str(path)!r}: {exc}") from None
        probs = model(tensor).softmax(dim=1)[0]
        values, indices = probs.topk(k)
        out.append({
            "image": str(path),
            "top": [{"class": classes[i], "index": int(i), "probability": float(v)} for v, i in zip(values, indices)],
        })
    return out
