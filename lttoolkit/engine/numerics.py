"""How a run computes: autocast dtype, memory format and determinism (``train.*`` options).

>>> import torch
>>> from lttoolkit.engine.config import TrainConfig
>>> resolve_amp_dtype(TrainConfig(amp=True), torch.device("cpu"))
torch.bfloat16
>>> resolve_amp_dtype(TrainConfig(), torch.device("cpu")) is None  # auto: autocast on CUDA only
True
>>> use_channels_last("auto", torch.device("cpu"))
True
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Iterator

import torch

from lttoolkit.engine.config import TrainConfig
from lttoolkit.errors import ConfigError

__all__ = ["resolve_amp_dtype", "use_channels_last", "configure_numerics", "numerics", "NumericsState",
           "cpu_has_native_bfloat16", "amp_warning", "CUBLAS_WORKSPACE"]

#: The cuBLAS workspace setting deterministic CUDA runs need (PyTorch's reproducibility notes).
CUBLAS_WORKSPACE = ":4096:8"


def resolve_amp_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of a run, or None for full precision.

    ``amp=auto`` is on for CUDA only; ``amp=true`` also on the CPU and MPS. ``amp_dtype=auto``
    is bfloat16 where the device has it (the CPU, GPUs from Ampere on), else float16, which
    trains with a GradScaler.
    """
    enabled = cfg.amp if isinstance(cfg.amp, bool) else device.type == "cuda"
    if not enabled:
        return None
    if cfg.amp_dtype == "bfloat16":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ConfigError(f"train.amp_dtype=bfloat16 but {torch.cuda.get_device_name(device)} has no bfloat16; "
                              f"use train.amp_dtype=float16 (or auto)")
        return torch.bfloat16
    if cfg.amp_dtype == "float16":
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.bfloat16


def cpu_has_native_bfloat16() -> bool:
    """Whether this CPU computes bfloat16 natively (AMX tiles or AVX-512 BF16); elsewhere oneDNN
    converts, and bfloat16 autocast can be slower than float32."""
    try:
        return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())
    except AttributeError:  # an older or other build of torch: assume not
        return False


def amp_warning(dtype: torch.dtype | None, device: torch.device) -> str | None:
    """A warning for the log when the chosen autocast is likely slower than float32 here."""
    if device.type == "cpu" and dtype is torch.bfloat16 and not cpu_has_native_bfloat16():
        return ("this CPU has no native bfloat16 (AMX or AVX-512 BF16): bfloat16 autocast may be slower than "
                "float32 here; set train.amp=false")
    if device.type == "cpu" and dtype is torch.float16:
        return "float16 autocast on a CPU is slow (and needs a GradScaler); bfloat16 is the CPU's fast dtype"
    return None


def use_channels_last(option: bool | str, device: torch.device) -> bool:
    """``train.channels_last``: ``auto`` is on for CUDA and the CPU (measured faster there for
    the convolutional backbones: ``benchmarks/train_speed.py``), off for MPS."""
    if isinstance(option, bool):
        return option
    return device.type in ("cuda", "cpu")


@dataclass
class NumericsState:
    """The global flags :func:`configure_numerics` set, to put back with :meth:`restore`."""

    deterministic: bool
    warn_only: bool
    cudnn_deterministic: bool
    cudnn_benchmark: bool

    def restore(self) -> None:
        torch.use_deterministic_algorithms(self.deterministic, warn_only=self.warn_only)
        torch.backends.cudnn.deterministic = self.cudnn_deterministic
        torch.backends.cudnn.benchmark = self.cudnn_benchmark


def configure_numerics(cfg: TrainConfig, device: torch.device) -> NumericsState:
    """Set PyTorch's determinism flags for a run; returns the previous ones.

    ``deterministic=true``: ``torch.use_deterministic_algorithms(True)`` (an operation without a
    deterministic implementation raises, naming itself), ``cudnn.deterministic`` on,
    ``cudnn.benchmark`` off, and ``CUBLAS_WORKSPACE_CONFIG`` set (when unset) before CUDA
    starts its handles. ``false``: ``cudnn.benchmark`` on for CUDA (the fastest convolution
    algorithm per shape), which may differ from run to run in the last bits.
    """
    before = NumericsState(torch.are_deterministic_algorithms_enabled(),
                           torch.is_deterministic_algorithms_warn_only_enabled(),
                           torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    if cfg.deterministic:
        if device.type == "cuda":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return before


@contextlib.contextmanager
def numerics(cfg: TrainConfig, device: torch.device) -> Iterator[NumericsState]:
    """:func:`configure_numerics` for the length of a ``with`` block."""
    state = configure_numerics(cfg, device)
    try:
        yield state
    finally:
        state.restore()
