"""Reading and writing the IDX format of MNIST and Fashion-MNIST.

The format is described by LeCun et al. with the MNIST database (1998) and
reused unchanged by Fashion-MNIST (Xiao, Rasul and Vollgraf, arXiv:1708.07747,
2017): two zero bytes, a type code, the number of dimensions, one big-endian
uint32 per dimension, then the values in C order, big-endian. Files may be
gzip-compressed; they are recognised by content, not by name.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np

from lttoolkit.errors import DataError

__all__ = ["read_idx", "write_idx", "IDX_DTYPES"]

# IDX type code -> big-endian numpy dtype.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_GZIP_MAGIC = b"\x1f\x8b"


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"IDX file {path} does not exist") from None
    except OSError as exc:
        raise DataError(f"cannot read IDX file {path}: {exc}") from exc
    if raw[:2] == _GZIP_MAGIC:
        try:
            return gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as exc:
            raise DataError(
                f"IDX file {path} is a damaged or truncated gzip archive ({exc}); re-download or reinstall it"
            ) from exc
    return raw


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (plain or gzipped) into a native-endian numpy array.

    Args:
        path: the file.

    Returns:
        An array with the file's shape; ``uint8`` for image and label files.

    Raises:
        DataError: the file is missing, has a bad magic number, or its size
            does not match its header (a truncated download, for instance).

    >>> import tempfile, numpy as np
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     write_idx(f"{tmp}/x.idx.gz", np.arange(6, dtype=np.uint8).reshape(2, 3))
    ...     read_idx(f"{tmp}/x.idx.gz").tolist()
    [[0, 1, 2], [3, 4, 5]]
    """
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise DataError(f"IDX file {path} is truncated: {len(raw)} bytes, shorter than the 4-byte magic number")
    zero1, zero2, code, ndim = raw[0], raw[1], raw[2], raw[3]
    if zero1 != 0 or zero2 != 0 or code not in IDX_DTYPES or ndim == 0:
        raise DataError(
            f"{path} is not an IDX file: magic number {raw[:4].hex()} (expected 0000 then a type code "
            f"in {', '.join(f'{c:02x}' for c in IDX_DTYPES)} and a non-zero dimension count)"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"IDX file {path} is truncated inside its header ({len(raw)} of {header} bytes)")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_DTYPES[code]
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        state = "truncated" if len(raw) < expected else "longer than its header says"
        raise DataError(
            f"IDX file {path} is {state}: the header announces shape {shape} "
            f"({expected} bytes in all) but the file holds {len(raw)} bytes; re-download or reinstall it"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Write ``array`` as an IDX file, gzipped when ``path`` ends in ``.gz``.

    Args:
        path: destination.
        array: values of one of the IDX types (uint8, int8, int16, int32, float32, float64).
    """
    array = np.asarray(array)
    for code, dtype in IDX_DTYPES.items():
        if array.dtype.kind == dtype.kind and array.dtype.itemsize == dtype.itemsize:
            break
    else:
        raise DataError(f"IDX cannot store dtype {array.dtype}; use uint8, int8, int16, int32, float32 or float64")
    if array.ndim == 0 or array.ndim > 255:
        raise DataError(f"IDX stores arrays of 1 to 255 dimensions, got {array.ndim}")
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    payload = header + np.ascontiguousarray(array, dtype=dtype).tobytes()
    path = Path(path)
    path.write_bytes(gzip.compress(payload) if path.suffix == ".gz" else payload)
