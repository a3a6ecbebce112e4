"""Export a trained model for deployment, each export checked on the spot.

Three formats, each holding the inference model (for BBN: the trunk once, both
blocks, α = 0.5 in the one classifier call):

* ``pt2``: a :func:`torch.export` program (``torch.export.load(path).module()(x)``),
  dynamic in the batch size; no lttoolkit needed to run it. The recipe, classes and
  preprocessing travel as ``extra_files["lttoolkit.json"]``.
* ``onnx``: through torch's ONNX exporter (needs ``pip install "lttoolkit[export]"``:
  ``onnx`` and ``onnxscript``; the check also needs ``onnxruntime``). Metadata in the
  model's ``metadata_props``.
* ``safetensors``: the weights only, with the recipe, classes and preprocessing as
  metadata; :func:`load_safetensors` (and :meth:`lttoolkit.Classifier.from_checkpoint`)
  rebuild the model from it without running code from the file.

After writing, the file is loaded back and its logits on a random batch are compared
with the eager model's: ``pt2`` and ``onnx`` must agree within ``atol=1e-4`` (float32,
a different kernel order), ``safetensors`` exactly.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from lttoolkit.errors import ConfigError, LTToolkitError
from lttoolkit.inference import META_KEY as _META_KEY
from lttoolkit.inference import Classifier, load_safetensors

__all__ = ["export_checkpoint", "load_safetensors", "ExportResult", "ExportError", "FORMATS", "TOLERANCE"]

FORMATS = ("pt2", "onnx", "safetensors")
#: Largest |logit difference| accepted between an exported program and the eager model (float32).
TOLERANCE = {"pt2": 1e-4, "onnx": 1e-4, "safetensors": 0.0}


class ExportError(LTToolkitError):
    """An export failed or its logits did not match the eager model's."""


@dataclass
class ExportResult:
    """What :func:`export_checkpoint` wrote and how it was checked."""

    format: str
    path: str
    checked: bool
    max_abs_difference: float | None
    tolerance: float
    batch: int
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _metadata(model: nn.Module, classes: list[str], preprocessing: Mapping[str, Any]) -> dict[str, Any]:
    return {"format": "lttoolkit-export-1", "recipe": model.recipe.model_dump(mode="json"), "classes": classes,
            "preprocessing": dict(preprocessing)}


def _example(preprocessing: Mapping[str, Any], batch: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(batch, *[int(v) for v in preprocessing["input_size"]], generator=generator)


def _difference(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.shape != b.shape:
        raise ExportError(f"the exported model returned shape {list(a.shape)}, the eager model {list(b.shape)}")
    return float((a.float() - b.float()).abs().max())


def _export_pt2(model: nn.Module, example: torch.Tensor, path: Path, meta: dict[str, Any]) -> torch.Tensor:
    batch = torch.export.Dim("batch", min=1, max=4096)
    try:
        program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},), strict=False)
    except Exception as exc:  # torch.export raises many kinds of errors for untraceable models
        raise ExportError(f"torch.export could not trace {type(model).__name__}: {type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''}; try --format safetensors") from exc
    torch.export.save(program, path, extra_files={"lttoolkit.json": json.dumps(meta)})
    loaded = torch.export.load(path)
    with torch.no_grad():
        return loaded.module()(example)


def _export_onnx(model: nn.Module, example: torch.Tensor, path: Path, meta: dict[str, Any]) -> torch.Tensor | None:
    missing = [name for name in ("onnx", "onnxscript") if not _importable(name)]
    if missing:
        raise ExportError(f"ONNX export needs {' and '.join(missing)}, which are not installed: "
                          f"pip install \"lttoolkit[export]\" (or choose --format pt2 / safetensors)")
    import onnx

    batch = torch.export.Dim("batch", min=1, max=4096)
    try:
        program = torch.onnx.export(model, (example,), dynamo=True, input_names=["images"], output_names=["logits"],
                                    dynamic_shapes=({0: batch},), verbose=False)
    except Exception as exc:
        raise ExportError(f"torch.onnx.export failed for {type(model).__name__}: {type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''}") from exc
    proto = program.model_proto
    entry = proto.metadata_props.add()
    entry.key, entry.value = _META_KEY, json.dumps(meta)
    onnx.save(proto, os.fspath(path))
    if not _importable("onnxruntime"):
        return None
    import onnxruntime

    session = onnxruntime.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(["logits"], {"images": example.numpy()})
    return torch.from_numpy(logits)


def _export_safetensors(model: nn.Module, example: torch.Tensor, path: Path, meta: dict[str, Any]) -> torch.Tensor:
    from safetensors.torch import save_file

    tensors = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    save_file(tensors, os.fspath(path), metadata={_META_KEY: json.dumps(meta)})
    loaded, _ = load_safetensors(path)
    with torch.no_grad():
        return loaded(example)


def _importable(name: str) -> bool:
    from importlib.util import find_spec

    return find_spec(name) is not None


def export_checkpoint(
    checkpoint: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    format: str,
    batch: int = 2,
) -> ExportResult:
    """Export a run's checkpoint to ``output`` and check the export's logits.

    Args:
        checkpoint: ``best.pt`` / ``last.pt`` of a run.
        output: the file to write; an existing file is never replaced.
        format: ``"pt2"``, ``"onnx"`` or ``"safetensors"``.
        batch: images in the check batch (the export stays dynamic in the batch size).

    Raises:
        ConfigError: an unknown format, or ``output`` exists.
        ExportError: the export failed, or its logits differ from the eager model's by more than
            :data:`TOLERANCE`.
    """
    if format not in FORMATS:
        raise ConfigError(f"export format {format!r} is not one of {', '.join(FORMATS)}")
    target = Path(output)
    if target.exists():
        raise ConfigError(f"{target} already exists; choose another output path (nothing was written)")
    if batch < 1:
        raise ConfigError(f"batch={batch} must be >= 1")
    clf = Classifier.from_checkpoint(checkpoint)
    model = clf.model.eval()
    meta = _metadata(model, clf.classes, clf.preprocessing)
    example = _example(clf.preprocessing, batch)
    with torch.no_grad():
        expected = model(example)
    target.parent.mkdir(parents=True, exist_ok=True)
    exporter = {"pt2": _export_pt2, "onnx": _export_onnx, "safetensors": _export_safetensors}[format]
    try:
        got = exporter(model, example, target, meta)
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    tolerance = TOLERANCE[format]
    if got is None:
        return ExportResult(format, str(target), False, None, tolerance, batch,
                            note="written, not checked: install onnxruntime to compare its logits")
    difference = _difference(got, expected)
    if difference > tolerance:
        raise ExportError(f"the {format} export at {target} gives logits that differ from the eager model's by "
                          f"{difference:.3g} (> {tolerance}); the file is kept for inspection")
    return ExportResult(format, str(target), True, difference, tolerance, batch)
