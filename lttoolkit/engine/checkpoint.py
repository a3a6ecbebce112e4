"""Safe checkpoints: atomic writes, ``weights_only`` loads and RNG state capture.

A checkpoint is a dict of plain data (tensors, numbers, strings, lists, tuples,
dicts, ``None``), so it loads with ``torch.load(..., weights_only=True)``, which
rebuilds data but never runs code from the file. :func:`load_checkpoint` always
loads that way and refuses anything else.

:func:`save_checkpoint` writes a temporary file in the target's directory,
fsyncs it and renames it over the target (``os.replace`` is atomic on POSIX and
Windows), then fsyncs the directory: after a crash or a full disk the target is
either the previous checkpoint or the new one, never a truncated file.

:func:`capture_rng_state` / :func:`restore_rng_state` convert the states of
Python's ``random``, NumPy's global generator and torch (CPU and CUDA) to plain
data so that they travel inside such a checkpoint.
"""

from __future__ import annotations

import collections
import errno
import os
import pickle
import random
import re
import secrets
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lttoolkit.errors import LTToolkitError

__all__ = [
    "provenance",
    "save_checkpoint",
    "load_checkpoint",
    "capture_rng_state",
    "restore_rng_state",
    "CheckpointError",
    "CheckpointWriteError",
    "CheckpointNotFoundError",
    "InvalidCheckpointError",
    "UnsafeCheckpointError",
]


class CheckpointError(LTToolkitError):
    """Base class of the errors raised by :mod:`lttoolkit.engine.checkpoint`."""


class CheckpointWriteError(CheckpointError, OSError):
    """A checkpoint could not be written; the previous file at the path is unchanged."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """No checkpoint file at the given path."""


class InvalidCheckpointError(CheckpointError, ValueError):
    """A file is not a checkpoint (corrupt, other format, not a dict), or data is not plain."""


class UnsafeCheckpointError(InvalidCheckpointError):
    """A file holds objects other than plain data; ``weights_only`` loading refused it."""


# Types that torch.load(weights_only=True) rebuilds without running code from the file.
_SCALAR_TYPES = (bool, int, float, complex, str, bytes, type(None), torch.dtype, torch.device)
_TENSOR_TYPES = (torch.Tensor, torch.nn.Parameter)
_PLAIN_DATA = "tensors, numbers, strings, bytes, None, lists, tuples and dicts"


def _check_plain_data(value: Any, where: str) -> None:
    """Raise if ``value`` holds anything weights_only loading would refuse."""
    kind = type(value)
    # Exact types: subclasses (NumPy scalars subclass float, enums subclass int)
    # are pickled by reference to their class, which weights_only refuses.
    if kind in _TENSOR_TYPES or kind in _SCALAR_TYPES:
        return
    if kind in (dict, collections.OrderedDict, collections.Counter):
        for key, item in value.items():
            if type(key) not in (str, int, float, bool, type(None)):
                raise InvalidCheckpointError(
                    f"save_checkpoint: {where} has a key of type {type(key).__module__}."
                    f"{type(key).__qualname__} ({key!r}); use string or integer keys."
                )
            _check_plain_data(item, f"{where}[{key!r}]")
        return
    if kind in (list, tuple, torch.Size):
        for index, item in enumerate(value):
            _check_plain_data(item, f"{where}[{index}]")
        return
    if isinstance(value, torch.Tensor):
        hint = "convert it with .as_subclass(torch.Tensor)"
    elif isinstance(value, (np.ndarray, np.generic)):
        hint = "convert it with torch.from_numpy(...) or .tolist()"
    elif isinstance(value, dict):
        hint = "convert it with dict(...)"
    elif hasattr(value, "state_dict"):
        hint = "save its .state_dict() instead"
    else:
        hint = "convert it to one of those"
    raise InvalidCheckpointError(
        f"save_checkpoint: {where} is a {kind.__module__}.{kind.__qualname__}, but a checkpoint "
        f"may only hold {_PLAIN_DATA} (so that it loads with weights_only=True); {hint}."
    )


def _last_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith("Check the documentation")]
    return (useful or lines or [type(error).__name__])[-1]


def _describe(error: BaseException) -> str:
    if str(error):
        return f"{type(error).__name__}: {error}"
    return "it ends before any data" if isinstance(error, EOFError) else type(error).__name__


def _fsync_directory(directory: Path) -> None:
    # Makes the rename itself durable. Not every platform or file system lets a
    # directory be opened or fsynced (Windows, some network mounts); the new file is
    # already in place then, so the failure is not worth reporting.
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def _os_error_in(error: BaseException) -> OSError | None:
    """The first :class:`OSError` in ``error``'s chain (itself, its cause or its context)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, OSError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``state`` to ``path`` atomically.

    The data goes to a temporary file next to ``path``, is flushed and fsynced,
    then renamed over ``path``; the directory is fsynced last. If anything fails,
    the temporary file is removed and a previous checkpoint at ``path`` is left
    as it was. Missing parent directories are created.

    Args:
        state: a dict of plain data: tensors, numbers, strings, bytes, ``None``,
            lists, tuples and dicts of those (``model.state_dict()`` and
            ``optimizer.state_dict()`` qualify; modules and NumPy arrays do not).
        path: where to write the checkpoint.

    Returns:
        The path written, as a :class:`~pathlib.Path`.

    Raises:
        InvalidCheckpointError: ``state`` is not a dict of plain data (nothing is written).
        CheckpointWriteError: writing failed (full disk, read-only folder, ...).

    >>> import tempfile, torch
    >>> folder = tempfile.mkdtemp()
    >>> written = save_checkpoint({"epoch": 3, "weights": torch.ones(2)}, f"{folder}/last.pt")
    >>> load_checkpoint(written)["epoch"]
    3
    """
    target = Path(path)
    if not isinstance(state, dict):
        raise InvalidCheckpointError(
            f"save_checkpoint: state must be a dict, got {type(state).__qualname__}; "
            f"wrap it, e.g. {{'model': model.state_dict()}}."
        )
    _check_plain_data(state, "state")
    if target.is_dir():
        raise CheckpointWriteError(
            f"save_checkpoint: {target} is a directory; pass a file path such as "
            f"{target / 'last.pt'}."
        )

    directory = target.parent
    temporary = directory / f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        # O_EXCL: never write through a file someone else created under this name.
        # Mode 0o666 lets the umask decide the permissions, as for any new file.
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
        descriptor = os.open(temporary, flags, 0o666)
        with os.fdopen(descriptor, "wb") as stream:
            torch.save(state, stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, target)
    except BaseException as error:
        try:
            temporary.unlink(missing_ok=True)
        except OSError:
            pass
        if not isinstance(error, Exception):  # KeyboardInterrupt, SystemExit: clean up, then go on
            raise
        # torch's zip writer turns a failed write into "unexpected pos ..."; the OSError it hit
        # (a full disk, say) is in the exception's context: report that one.
        cause = _os_error_in(error) or error
        if isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
            reason = f"no space left on device ({cause.strerror or cause})"
        else:
            reason = str(cause) or type(cause).__name__
        failure = CheckpointWriteError(
            f"save_checkpoint: could not write {target}: {reason}. Any previous checkpoint at "
            f"{target} is unchanged. Check that {directory} exists, is writable and has free "
            f"space, then save again."
        )
        failure.errno = getattr(cause, "errno", None)
        raise failure from cause
    _fsync_directory(directory)
    return target


def load_checkpoint(path: str | os.PathLike[str], map_location: Any = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (or any plain-data ``torch.save``).

    Loading always uses ``torch.load(..., weights_only=True)``: a file that holds
    anything but plain data is refused, and nothing from it is executed.

    Args:
        path: the checkpoint file.
        map_location: passed to :func:`torch.load`; the default ``"cpu"`` loads
            checkpoints saved on a GPU on any machine.

    Returns:
        The checkpoint's dict.

    Raises:
        CheckpointNotFoundError: there is no file at ``path``.
        UnsafeCheckpointError: the file holds pickled objects other than plain data.
        InvalidCheckpointError: the file is corrupt, truncated, not a PyTorch
            checkpoint, or does not hold a dict.

    >>> try:
    ...     load_checkpoint("/nonexistent/last.pt")
    ... except FileNotFoundError as error:
    ...     print(type(error).__name__)
    CheckpointNotFoundError
    """
    source = Path(path)
    if not source.exists():
        raise CheckpointNotFoundError(
            f"no checkpoint at {source}: the file does not exist; check the path (a run "
            f"writes its checkpoints into its output directory)."
        )
    if not source.is_file():
        raise InvalidCheckpointError(f"{source} is not a file; pass the path of a checkpoint file.")
    try:
        with warnings.catch_warnings():
            # torch warns about the pickle protocol of files it did not write itself;
            # the refusal below is the message that matters for such files.
            warnings.filterwarnings("ignore", message=r".*pickle protocol.*", category=UserWarning)
            checkpoint = torch.load(source, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        # The safe unpickler names the class or function a file tries to import; a
        # stream it cannot parse at all (garbage, exotic opcodes) is reported as invalid.
        refused = re.search(r"GLOBAL (\S+) was not an allowed global", str(error))
        if refused is None and "unsupported global" not in str(error).lower():
            raise InvalidCheckpointError(
                f"{source} is not a valid checkpoint: the safe (weights_only) loader refused "
                f"it ({_last_line(error)}); nothing from it was executed. It may be corrupt, not "
                f"written by torch.save, or a pickle of objects other than plain data. Use "
                f"another checkpoint or train again."
            ) from error
        what = refused.group(1) if refused else "a class or function"
        raise UnsafeCheckpointError(
            f"refused to load {source} for safety: it holds pickled objects other than plain "
            f"data (it imports {what}), which could run code when loaded; nothing from it was "
            f"executed. If you trust the file, load it yourself with torch.load(..., "
            f"weights_only=False) and re-save its plain data with save_checkpoint."
        ) from error
    except Exception as error:  # torch raises RuntimeError, EOFError, KeyError... on bad files
        raise InvalidCheckpointError(
            f"{source} is not a valid checkpoint ({_describe(error)}); it may be truncated, "
            f"corrupt or in another format. Use another checkpoint or train again."
        ) from error
    if not isinstance(checkpoint, dict):
        raise InvalidCheckpointError(
            f"{source} holds a {type(checkpoint).__qualname__}, not a dict; lttoolkit checkpoints "
            f"are dicts written by save_checkpoint."
        )
    return checkpoint


def provenance(*, world_size: int = 1) -> dict[str, Any]:
    """What made a checkpoint: library versions, CUDA, the world size and the git commit.

    Plain data (strings, ints, ``None``), stored in every checkpoint under ``"provenance"``.
    ``git_commit`` is the commit of the lttoolkit source tree when it is a git checkout
    (an editable install), with ``+dirty`` when it has uncommitted changes; ``None`` otherwise.

    >>> info = provenance(world_size=2)
    >>> info["world_size"], sorted(info)[:3]
    (2, ['cuda', 'cudnn', 'devices'])
    """
    import platform
    import subprocess
    from importlib.metadata import PackageNotFoundError, version

    def installed(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    source = Path(__file__).resolve().parents[2]
    commit: str | None = None
    if (source / ".git").exists():
        try:
            head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=source, capture_output=True, text=True, timeout=5)
            if head.returncode == 0:
                dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=source,
                                       capture_output=True, text=True, timeout=5)
                commit = head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
        except (OSError, subprocess.SubprocessError):
            commit = None
    cuda = torch.cuda.is_available()
    return {
        "lttoolkit": installed("lttoolkit"),
        "torch": str(torch.__version__),
        "timm": installed("timm"),
        "python": platform.python_version(),
        "cuda": str(torch.version.cuda) if torch.version.cuda else None,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else [],
        "world_size": int(world_size),
        "git_commit": commit,
    }


def capture_rng_state() -> dict[str, Any]:
    """The states of Python's ``random``, NumPy's global generator and torch, as plain data.

    The result contains only tensors, ints, floats, strings and ``None``, so it can
    be stored in a checkpoint and loaded with ``weights_only=True``.

    Returns:
        ``{"python": ..., "numpy": ..., "torch": uint8 tensor}`` plus ``"cuda"`` (a
        list with one state per GPU) when CUDA is available.

    >>> import torch
    >>> state = capture_rng_state()
    >>> first = torch.rand(2)
    >>> restore_rng_state(state)
    >>> torch.equal(torch.rand(2), first)
    True
    """
    version, internal, gauss_next = random.getstate()
    bit_generator, keys, position, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": {
            "version": int(version),
            # 624 words of the Mersenne Twister (< 2**32) plus the position: int64 holds them.
            "state": torch.tensor(internal, dtype=torch.int64),
            "gauss_next": gauss_next,
        },
        "numpy": {
            "bit_generator": str(bit_generator),
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Restore the generators from :func:`capture_rng_state`'s result.

    Generators missing from ``state`` are left alone. CUDA states are restored for
    as many GPUs as both the state and this machine have; a warning says when some
    cannot be restored.

    Args:
        state: a dict from :func:`capture_rng_state` (possibly through a checkpoint).

    Raises:
        InvalidCheckpointError: ``state`` is not shaped like :func:`capture_rng_state`'s result.
    """
    if not isinstance(state, dict):
        raise InvalidCheckpointError(
            f"restore_rng_state: expected the dict from capture_rng_state(), got "
            f"{type(state).__qualname__}."
        )
    try:
        if "python" in state:
            python = state["python"]
            internal = tuple(int(word) for word in torch.as_tensor(python["state"]).tolist())
            random.setstate((int(python["version"]), internal, python["gauss_next"]))
        if "numpy" in state:
            saved = state["numpy"]
            keys = torch.as_tensor(saved["keys"]).numpy().astype(np.uint32)
            np.random.set_state(
                (
                    str(saved["bit_generator"]),
                    keys,
                    int(saved["pos"]),
                    int(saved["has_gauss"]),
                    float(saved["cached_gaussian"]),
                )
            )
        if "torch" in state:
            torch.set_rng_state(torch.as_tensor(state["torch"], dtype=torch.uint8).cpu())
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise InvalidCheckpointError(
            f"restore_rng_state: the RNG state is malformed ({type(error).__name__}: {error}); "
            f"pass the dict returned by capture_rng_state()."
        ) from error

    cuda_states = state.get("cuda")
    if not cuda_states:
        return
    available = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if available < len(cuda_states):
        warnings.warn(
            f"restore_rng_state: the state holds CUDA RNG states for {len(cuda_states)} GPU(s) "
            f"but {available} are available; only the first {available} are restored.",
            stacklevel=2,
        )
    for index, cuda_state in enumerate(cuda_states[:available]):
        torch.cuda.set_rng_state(torch.as_tensor(cuda_state, dtype=torch.uint8).cpu(), index)
