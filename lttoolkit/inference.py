"""In-memory inference: a trained model, its classes and its preprocessing, loaded once.

:class:`Classifier` is what ``lttk predict`` runs on, and what a service or a
notebook keeps in memory::

    from lttoolkit import Classifier
    clf = Classifier.from_checkpoint("runs/x/best.pt", device="cuda")
    clf(["shirt.png", "boot.png"])[0].label      # top-1 class name
    clf(pil_image).probabilities                 # top-k probabilities
    clf.model                                    # the nn.Module (eval mode)

Inputs: file paths, PIL images and NumPy arrays (``H x W`` or ``H x W x C``,
``uint8`` 0-255 or float 0-1) are raw images, prepared with the checkpoint's own
evaluation preprocessing (:mod:`lttoolkit.data.preprocessing`); a torch tensor is
taken as already prepared (``[C, H, W]`` or ``[B, C, H, W]``, normalised, of the
model's input size), as timm models take it. A list is predicted in batches.
"""

from __future__ import annotations

import glob
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import torch
from torch import nn

from lttoolkit.errors import ConfigError, DataError

__all__ = ["Classifier", "Prediction", "predict", "expand_image_paths", "load_safetensors", "IMAGE_SUFFIXES", "META_KEY"]

#: The metadata key under which ``lttk export`` stores the recipe, classes and preprocessing.
META_KEY = "lttoolkit"

#: File suffixes ``expand_image_paths`` takes from a folder.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


@dataclass
class Prediction:
    """The top-k classes of one image (``error`` set instead when it could not be read)."""

    source: str
    labels: list[str] = field(default_factory=list)
    indices: list[int] = field(default_factory=list)
    probabilities: list[float] = field(default_factory=list)
    error: str | None = None

    @property
    def label(self) -> str | None:
        """The top-1 class name (``None`` for an image that could not be read)."""
        return self.labels[0] if self.labels else None

    def to_dict(self) -> dict[str, Any]:
        """``{"image": ..., "top": [{"class", "index", "probability"}, ...]}`` or ``{"image", "error"}``."""
        if self.error is not None:
            return {"image": self.source, "error": self.error}
        return {"image": self.source, "top": [{"class": c, "index": i, "probability": p}
                                               for c, i, p in zip(self.labels, self.indices, self.probabilities)]}


def expand_image_paths(items: Iterable[str | os.PathLike[str]]) -> list[str]:
    """Files from paths, folders (their image files, sorted, not recursive) and glob patterns.

    A pattern or folder that matches no image is an error naming it; a plain path is
    kept as it is (a missing file is reported when it is read).
    """
    paths: list[str] = []
    for item in items:
        text = os.fspath(item)
        if os.path.isdir(text):
            found = sorted(str(p) for p in Path(text).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not found:
                raise DataError(f"{text} holds no image file ({', '.join(IMAGE_SUFFIXES)}); pass image files or "
                                f"a folder of them")
            paths += found
        elif glob.has_magic(text) and not os.path.exists(text):
            found = sorted(glob.glob(text, recursive=True))
            if not found:
                raise DataError(f"no file matches {text!r}; check the pattern (quote it so the shell leaves it alone)")
            paths += found
        else:
            paths.append(text)
    return paths


def _to_pil(image: Any) -> Any:
    import numpy as np
    from PIL import Image

    if isinstance(image, Image.Image):
        return image
    if isinstance(image, np.ndarray):
        array = image
        if array.ndim == 3 and array.shape[2] == 1:
            array = array[:, :, 0]
        if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
            raise DataError(f"a NumPy image must be H x W or H x W x 3 (or 4), got shape {array.shape}")
        if array.dtype != np.uint8:
            if not np.issubdtype(array.dtype, np.floating):
                raise DataError(f"a NumPy image must be uint8 (0-255) or float (0-1), got dtype {array.dtype}")
            array = (np.clip(array, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        return Image.fromarray(array)
    raise DataError(
        f"cannot predict a {type(image).__name__}: pass a file path, a PIL image, a NumPy array or a prepared tensor"
    )


def _open(path: str) -> Any:
    from PIL import Image

    with warnings.catch_warnings():
        # Above MAX_IMAGE_PIXELS PIL only warns (and refuses at twice that): refuse both.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as img:
                img.load()
                return img.copy()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise DataError(
                f"{path}: refused: {exc} (PIL.Image.MAX_IMAGE_PIXELS={Image.MAX_IMAGE_PIXELS}, a guard against "
                f"decompression bombs); downscale the image first, or raise the limit in Python if you trust it"
            ) from None
        except (OSError, ValueError, SyntaxError) as exc:  # PIL raises SyntaxError for some broken headers
            raise DataError(f"{path}: cannot read the image: {exc}") from None


class Classifier:
    """A trained model with its class names and evaluation preprocessing, ready for images.

    Args:
        model: the network (put in eval mode on ``device``).
        classes: one name per output.
        preprocessing: the evaluation preprocessing (see :mod:`lttoolkit.data.preprocessing`).
        device: where the model runs (``"cpu"``, ``"cuda"``, ...).
        topk: how many classes each prediction lists by default.
        batch_size: images per forward pass.

    >>> import torch
    >>> from lttoolkit import build
    >>> from lttoolkit.data.preprocessing import eval_preprocessing
    >>> clf = Classifier(build("ce", backbone="resnet20_cifar", num_classes=3), classes=["a", "b", "c"],
    ...                  preprocessing=eval_preprocessing("cifar"), topk=2)
    >>> prediction = clf(torch.zeros(3, 32, 32))
    >>> len(prediction.labels), prediction.label in ("a", "b", "c")
    (2, True)
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        classes: Sequence[str],
        preprocessing: Mapping[str, Any],
        device: str | torch.device = "cpu",
        topk: int = 5,
        batch_size: int = 64,
    ) -> None:
        from lttoolkit.data.preprocessing import build_eval_transform

        if isinstance(topk, bool) or not isinstance(topk, int) or topk < 1:
            raise ConfigError(f"topk={topk!r}: ask for at least 1 class per image (e.g. topk=5)")
        if batch_size < 1:
            raise ConfigError(f"batch_size={batch_size!r} must be >= 1")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.classes = [str(c) for c in classes]
        self.preprocessing = dict(preprocessing)
        self.transform = build_eval_transform(self.preprocessing)
        self.topk = topk
        self.batch_size = batch_size

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike[str], *, device: str | torch.device = "cpu",
                        topk: int = 5, batch_size: int = 64) -> Classifier:
        """Load a run's checkpoint (``best.pt`` / ``last.pt``) or an exported ``.safetensors`` file.

        Loading never runs code from the file (``weights_only`` / safetensors), and never
        fetches pretrained weights.
        """
        if Path(path).suffix == ".safetensors":
            model, meta = load_safetensors(path)
            return cls(model, classes=meta["classes"], preprocessing=meta["preprocessing"], device=device,
                       topk=topk, batch_size=batch_size)
        from lttoolkit.engine.evaluate import load_model

        model, state = load_model(path, device=device)
        return cls(model, classes=checkpoint_classes(state, model), preprocessing=checkpoint_preprocessing(state),
                   device=device, topk=topk, batch_size=batch_size)

    # ------------------------------------------------------------------ preparing inputs
    def prepare(self, image: Any) -> torch.Tensor:
        """One input as a model-ready tensor ``[C, H, W]`` (a path, PIL image, array or tensor)."""
        if isinstance(image, torch.Tensor):
            expected = tuple(self.preprocessing["input_size"])
            if image.dim() != 3 or tuple(image.shape) != expected:
                raise DataError(f"a tensor is taken as a prepared image of shape {list(expected)} (normalised); "
                                f"got {list(image.shape)}. Pass raw images as PIL images, arrays or paths")
            return image.float()
        if isinstance(image, (str, os.PathLike)):
            image = _open(os.fspath(image))
        return self.transform(_to_pil(image))

    @staticmethod
    def _describe(image: Any, index: int) -> str:
        if isinstance(image, (str, os.PathLike)):
            return os.fspath(image)
        return f"<{type(image).__name__} #{index}>"

    # ------------------------------------------------------------------ predicting
    @torch.no_grad()
    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """The model's logits for a prepared batch ``[B, C, H, W]``."""
        return self.model(images.to(self.device))

    @torch.no_grad()
    def predict(self, images: Sequence[Any], *, topk: int | None = None, on_error: str = "raise") -> list[Prediction]:
        """Top-k classes of each image, in batches.

        Args:
            images: paths, PIL images, NumPy arrays or prepared tensors (a ``[B, C, H, W]``
                tensor counts as ``B`` images).
            topk: classes per prediction (default: the classifier's).
            on_error: ``"raise"`` stops at an image that cannot be read or prepared;
                ``"report"`` gives that image a :class:`Prediction` with ``error`` set and
                goes on with the others.
        """
        if on_error not in ("raise", "report"):
            raise ConfigError(f"on_error={on_error!r}: use 'raise' or 'report'")
        k = self.topk if topk is None else topk
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ConfigError(f"topk={k!r}: ask for at least 1 class per image (e.g. --topk 5)")
        k = min(k, len(self.classes))
        items: list[Any] = []
        for image in images:
            if isinstance(image, torch.Tensor) and image.dim() == 4:
                items.extend(image.unbind(0))
            else:
                items.append(image)
        results: list[Prediction | None] = [None] * len(items)
        pending: list[tuple[int, torch.Tensor]] = []

        def flush() -> None:
            if not pending:
                return
            batch = torch.stack([tensor for _, tensor in pending])
            probabilities = self.logits(batch).float().softmax(dim=1)
            values, indices = probabilities.topk(k, dim=1)
            for (index, _), row_values, row_indices in zip(pending, values.tolist(), indices.tolist()):
                results[index] = Prediction(self._describe(items[index], index),
                                            [self.classes[i] for i in row_indices], row_indices, row_values)
            pending.clear()

        for index, image in enumerate(items):
            try:
                pending.append((index, self.prepare(image)))
            except DataError as exc:
                if on_error == "raise":
                    raise
                results[index] = Prediction(self._describe(image, index), error=str(exc))
            if len(pending) >= self.batch_size:
                flush()
        flush()
        return [r for r in results if r is not None]

    def __call__(self, images: Any, *, topk: int | None = None) -> Prediction | list[Prediction]:
        """Predict one image (a :class:`Prediction`) or a list / batch tensor (a list of them)."""
        single = not isinstance(images, (list, tuple)) and not (isinstance(images, torch.Tensor) and images.dim() == 4)
        predictions = self.predict([images] if single else images, topk=topk)
        return predictions[0] if single else predictions

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({type(self.model).__name__}, {len(self.classes)} classes, "
                f"input {self.preprocessing['input_size']}, device={self.device})")


def checkpoint_classes(state: Mapping[str, Any], model: nn.Module) -> list[str]:
    """A checkpoint's class names (``"0"``, ``"1"``, ... where it has none)."""
    num_classes = int(model.recipe.num_classes)
    classes = state.get("classes") or [str(i) for i in range(num_classes)]
    return [str(c) for c in classes]


def checkpoint_preprocessing(state: Mapping[str, Any]) -> dict[str, Any]:
    """The evaluation preprocessing a checkpoint stores; derived from its run config for
    checkpoints written before it was stored (as ``lttk predict`` always did)."""
    stored = state.get("preprocessing")
    if isinstance(stored, Mapping):
        return dict(stored)
    from lttoolkit.data.preprocessing import eval_preprocessing
    from lttoolkit.engine.config import RunConfig
    from lttoolkit.engine.datasets import transform_family

    cfg = RunConfig.model_validate(state["config"])
    channels = int((state.get("input_size") or [state["recipe"].get("in_chans", 3)])[0])
    size = cfg.data.image_size or (state.get("input_size") or [None, None])[1]
    return eval_preprocessing(transform_family(cfg.data), in_chans=channels, image_size=size)


def predict(checkpoint: str | Path, images: Sequence[str | Path], *, topk: int = 5, device: str = "cpu") -> list[dict[str, Any]]:
    """Top-k classes with probabilities for each image file, folder (its images) or glob pattern.

    A thin layer over :class:`lttoolkit.Classifier`, with the checkpoint's own evaluation
    preprocessing. An image that cannot be read (missing, corrupt, larger than PIL's
    decompression-bomb limit ``PIL.Image.MAX_IMAGE_PIXELS``) gets ``{"image": path, "error":
    reason}`` in place of ``"top"``; the other images are still predicted.

    Raises:
        ConfigError: ``topk`` is below 1.
        DataError: a folder or pattern matches no image.
    """
    if isinstance(topk, bool) or not isinstance(topk, int) or topk < 1:
        raise ConfigError(f"topk={topk!r}: ask for at least 1 class per image (e.g. --topk 5)")
    clf = Classifier.from_checkpoint(checkpoint, device=device, topk=topk)
    return [p.to_dict() for p in clf.predict(expand_image_paths(images), on_error="report")]


def load_safetensors(path: str | os.PathLike[str]) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model from an lttoolkit ``.safetensors`` export: ``(model in eval mode, metadata)``.

    The metadata (recipe, classes, preprocessing) is JSON; the recipe names registered
    components only, and nothing from the file is imported or run.

    Raises:
        ConfigError: the file is not an lttoolkit export, or names a component that is not
            registered (load the plugin that provides it first).
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    from lttoolkit.recipe import Recipe

    with safe_open(os.fspath(path), framework="pt") as handle:
        raw = (handle.metadata() or {}).get(META_KEY)
    if raw is None:
        raise ConfigError(f"{path} has no lttoolkit metadata; it was not written by `lttk export --format safetensors`")
    meta = json.loads(raw)
    recipe = Recipe.model_validate(meta["recipe"])
    offline = {"pretrained": False} if recipe.options.get("pretrained") else {}
    model = recipe.rebuild(**offline)
    model.load_state_dict(load_file(os.fspath(path)))
    model.recipe = recipe
    return model.eval(), meta
