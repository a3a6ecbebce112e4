"""Use a trained checkpoint: rebuild its model and evaluate it (predicting images: :mod:`lttoolkit.inference`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from lttoolkit.engine.checkpoint import load_checkpoint
from lttoolkit.engine.config import load_config
from lttoolkit.errors import ConfigError
from lttoolkit.recipe import Recipe

__all__ = ["load_model", "evaluate_checkpoint"]


def load_model(checkpoint: str | Path | dict[str, Any], *, device: str | torch.device = "cpu",
               ema: bool | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model a checkpoint was trained as and load its weights.

    A run trained with ``train.ema_decay`` saves the raw weights (``model``, what training
    continues from) and their moving average (``ema``), which the run evaluated and selected
    on; ``ema=None`` loads the average when there is one, ``False`` the raw weights.

    Loading uses ``torch.load(weights_only=True)`` and nothing a checkpoint names is imported, so a
    checkpoint cannot run code: components from plugin modules must be loaded first
    (``--plugin MODULE``, :func:`lttoolkit.load_plugin`), and an error says which.

    Returns:
        ``(model in eval mode, checkpoint dict)``.
    """
    state = checkpoint if isinstance(checkpoint, dict) else load_checkpoint(checkpoint)
    require_run_checkpoint(state, checkpoint)
    recipe = Recipe.model_validate(state["recipe"])
    from lttoolkit.registry import require_distributions

    required = (state.get("config") or {}).get("plugins_required") or []
    require_distributions([str(name) for name in required], what=f"{_describe_source(checkpoint)} (plugins_required)")
    require_components(recipe, state, checkpoint)
    # The checkpoint holds every weight: never fetch pretrained ones (works offline), but keep
    # the recipe as trained, so the model still says it started from pretrained weights.
    offline = {"pretrained": False} if recipe.options.get("pretrained") else {}
    model = recipe.rebuild(**offline)
    if ema and "ema" not in state:
        raise ConfigError(f"{_describe_source(checkpoint)} holds no EMA weights (its run did not set "
                          f"train.ema_decay); load its weights without ema=True")
    use_ema = "ema" in state if ema is None else ema
    model.load_state_dict(state["ema"] if use_ema else state["model"])
    model.recipe = recipe
    return model.to(device).eval(), state


def _describe_source(checkpoint: Any) -> str:
    return "the checkpoint" if isinstance(checkpoint, dict) else str(checkpoint)


def require_run_checkpoint(state: dict[str, Any], checkpoint: Any) -> None:
    """Refuse a file that is not an lttoolkit run checkpoint (a bare state dict, another tool's file)."""
    missing = [key for key in ("model", "recipe", "config") if not isinstance(state.get(key), dict)]
    if missing:
        bare = all(isinstance(v, torch.Tensor) for v in state.values()) and bool(state)
        what = "a bare state dict (only weights)" if bare else f"a dict without {', '.join(missing)}"
        raise ConfigError(
            f"{_describe_source(checkpoint)} is {what}, not an lttoolkit run checkpoint, which also records how "
            f"the model was built; pass best.pt or last.pt from a run folder (to use bare weights, build the model "
            f"with lttoolkit.build(...) and call load_state_dict)"
        )


def require_components(recipe: Recipe, state: dict[str, Any], checkpoint: Any) -> None:
    """Every component the recipe names must be registered already: a checkpoint's ``plugins`` are never
    imported (that would run code a downloaded file names), so say which to load and how."""
    from lttoolkit.registry import LOSSES, METHODS, SAMPLERS, SCHEDULES
    from lttoolkit.registry._registry import singular

    wanted = [(METHODS, recipe.method), (LOSSES, recipe.loss.type),
              *((SAMPLERS, spec.type) for spec in recipe.samplers.values())]
    if recipe.schedule is not None:
        wanted.append((SCHEDULES, recipe.schedule.type))
    missing = [f"{singular(registry.kind)} {name!r}"
               for registry, name in wanted if name not in registry]
    if not missing:
        return
    plugins = [str(m) for m in (state.get("config") or {}).get("plugins", []) or []]
    if plugins:
        flags = " ".join(f"--plugin {module}" for module in plugins)
        how = (f"it was trained with the plugin modules {plugins}, which lttoolkit never imports from a checkpoint "
               f"(a file must not choose code to run); if you trust them, load them yourself: lttk {flags} eval|predict|"
               f"analyze ... (Python: lttoolkit.load_plugin(...) first)")
    else:
        how = "install the plugin distribution that provides it (see `lttk plugins`), or load its module with --plugin"
    raise ConfigError(f"{_describe_source(checkpoint)} needs {', '.join(missing)}, which is not registered here: {how}")


def evaluate_checkpoint(checkpoint: str | Path, overrides: Sequence[str] = (), *, device: str = "auto",
                        confusion_matrix: str | Path | None = None) -> dict[str, Any]:
    """Evaluate a checkpoint on the test split its run used (or another, via ``data.*`` overrides).

    The model runs as it trained: under the run's autocast dtype (``train.amp``) on this device,
    in its memory format. ``confusion_matrix``: also write the C x C matrix (int64, rows: true
    class, columns: predicted) to this ``.npy`` file, never into the results (at 8,142 classes it
    is 506 MiB); an existing file is not overwritten.

    Returns:
        The same metrics as training reports (top-1/5, many/medium/few-shot,
        per-class accuracy and counts), plus ``checkpoint`` and ``epoch``.
    """
    from lttoolkit.engine.datasets import build_datasets
    from lttoolkit.engine.numerics import resolve_amp_dtype, use_channels_last
    from lttoolkit.engine.trainer import evaluate_model, resolve_device

    matrix_path = Path(confusion_matrix) if confusion_matrix is not None else None
    if matrix_path is not None:
        if matrix_path.suffix != ".npy":
            raise ConfigError(f"--confusion-matrix {matrix_path}: the matrix is written as NumPy's .npy; "
                              f"name a file ending in .npy")
        if matrix_path.exists():
            raise ConfigError(f"--confusion-matrix {matrix_path}: the file exists and is not overwritten; "
                              f"choose another name or remove it")
        if not matrix_path.parent.is_dir():
            raise ConfigError(f"--confusion-matrix {matrix_path}: the folder {matrix_path.parent} does not exist")
    state = load_checkpoint(checkpoint)
    require_run_checkpoint(state, checkpoint)
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
    if state.get("classes"):
        from lttoolkit.engine.datasets import match_classes

        trained_on = [str(c) for c in state["classes"]]
        match_classes(data.test, trained_on, what=f"the test data ({cfg.data.dataset})",
                      fix=f"evaluate {checkpoint} on data with its classes")
        if list(data.classes) != trained_on:  # the same names in another order: counts follow the names
            position = {str(name): i for i, name in enumerate(data.classes)}
            data.class_counts = [data.class_counts[position[name]] for name in trained_on]
            data.classes = trained_on
    channels_last = use_channels_last(cfg.train.channels_last, torch_device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    results = evaluate_model(model, data.test, data.class_counts, device=torch_device,
                             batch_size=cfg.data.test_batch_size, num_workers=cfg.data.num_workers,
                             amp_dtype=resolve_amp_dtype(cfg.train, torch_device), channels_last=channels_last,
                             confusion_matrix=matrix_path is not None)
    if matrix_path is not None:
        import numpy as np

        matrix = np.asarray(results.pop("confusion_matrix"), dtype=np.int64)
        with open(matrix_path, "xb") as handle:  # exclusive: a file made meanwhile is not overwritten
            np.save(handle, matrix)
        results["confusion_matrix_file"] = str(matrix_path)
    results.update(checkpoint=str(checkpoint), epoch=state.get("epoch"))
    return results
