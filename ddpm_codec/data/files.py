"""Dataset file formats, read safely: IDX (optionally gzipped), CIFAR-10
python batches (pickles, through an unpickler that can only build dicts,
lists, strings, numbers and numpy arrays), ImageNet npz (without pickle) and
folders of PNGs.  Sizes are checked against what a file holds before
anything is allocated.  Which dataset lives where is :mod:`ddpm_codec.data.datasets`.
"""
from __future__ import annotations

import gzip
import math
import os
import pickle
import struct
import zipfile
import zlib

import numpy as np

from ddpm_codec.errors import DdpmCodecError


class DataError(DdpmCodecError):
    """Base class for dataset errors."""


class DataMissingError(DataError):
    """A dataset or one of its files is not where it was looked for."""


class DataRequestError(DataError, ValueError):
    """A request the data cannot satisfy (split name, n beyond the split)."""


class DataFormatError(DataError):
    """A dataset file exists but does not hold what its format promises."""


# ---------------------------------------------------------------- IDX (MNIST)

_IDX_TYPES = {0x08: np.uint8}


def _open_maybe_gzip(path: str):
    with open(path, "rb") as f:
        magic = f.read(2)
    return gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")


def _read_at_most(f, limit: int) -> bytearray:
    """Up to `limit` bytes, read in chunks so memory follows what the file holds."""
    chunks, got = [], 0
    while got < limit:
        piece = f.read(min(1 << 24, limit - got))
        if not piece:
            break
        chunks.append(piece)
        got += len(piece)
    return bytearray().join(chunks)


def read_idx(path) -> np.ndarray:
    """An IDX file (optionally gzipped) as an array of its declared shape, uint8 only."""
    path = os.fspath(path)
    try:
        with _open_maybe_gzip(path) as f:
            head = f.read(4)
            if len(head) != 4 or head[:2] != b"\0\0":
                raise DataFormatError(f"{path}: not an IDX file (bad magic {head!r})")
            code, ndim = head[2], head[3]
            if code not in _IDX_TYPES:
                raise DataFormatError(f"{path}: IDX element type 0x{code:02x} is not "
                                      "supported (only unsigned bytes, 0x08)")
            if ndim == 0:
                raise DataFormatError(f"{path}: IDX file declares zero dimensions")
            dims_raw = f.read(4 * ndim)
            if len(dims_raw) != 4 * ndim:
                raise DataFormatError(f"{path}: IDX header truncated")
            dims = struct.unpack(f">{ndim}I", dims_raw)
            count = int(np.prod(dims, dtype=np.int64))
            body = _read_at_most(f, count + 1)  # a lying header cannot make us allocate
    except (OSError, EOFError, zlib.error) as e:
        if isinstance(e, FileNotFoundError):
            raise DataMissingError(f"{path}: no such file") from None
        raise DataFormatError(f"{path}: cannot read ({e})") from None
    if len(body) != count:
        raise DataFormatError(f"{path}: IDX header promises {count} bytes for shape {dims}, "
                              f"file holds {len(body) if len(body) < count else 'more'}")
    return np.frombuffer(body, dtype=_IDX_TYPES[code]).reshape(dims)


def _idx_images(path: str) -> np.ndarray:
    arr = read_idx(path)
    if arr.ndim != 3:
        raise DataFormatError(f"{path}: expected an IDX image file (3 dimensions), got "
                              f"shape {arr.shape}")
    return arr[:, None, :, :]


# ---------------------------------------------------------------- CIFAR-10

def _np_core():
    return getattr(np, "_core", None) or np.core


def _latin1_encode(text, encoding="utf-8", errors="strict"):
    """What protocol-2 pickles of bytes call; nothing but latin1 is allowed."""
    if encoding != "latin1" or not isinstance(text, str):
        raise pickle.UnpicklingError("only latin1 byte strings are allowed")
    return text.encode("latin1")


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that builds containers, scalars and numpy arrays, nothing else.

    dict, list, str, bytes and int come from pickle opcodes; the only globals
    it resolves are numpy's array and dtype reconstructors (under their numpy
    1.x and 2.x module names) and a latin1-only stand-in for _codecs.encode.
    """

    def find_class(self, module, name):
        core = _np_core()
        allowed = {
            ("builtins", "dict"): dict, ("builtins", "list"): list,
            ("builtins", "bytes"): bytes, ("builtins", "str"): str, ("builtins", "int"): int,
            ("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
            ("_codecs", "encode"): _latin1_encode,
        }
        for mod in ("numpy.core", "numpy._core"):
            allowed[(mod + ".multiarray", "_reconstruct")] = core.multiarray._reconstruct
            allowed[(mod + ".numeric", "_frombuffer")] = core.numeric._frombuffer
        if (module, name) not in allowed:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")
        return allowed[(module, name)]


def _cifar_batch(path: str) -> np.ndarray:
    try:
        with open(path, "rb") as f:
            obj = _ArrayUnpickler(f, encoding="bytes").load()
    except FileNotFoundError:
        raise DataMissingError(f"{path}: no such file") from None
    except Exception as e:  # an unpickler can fail in many ways on a bad file
        raise DataFormatError(f"{path}: not a CIFAR-10 python batch ({e})") from None
    if not isinstance(obj, dict):
        raise DataFormatError(f"{path}: not a CIFAR-10 python batch (no dict inside)")
    data = obj.get(b"data", obj.get("data"))
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != 3 * 32 * 32:
        desc = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data)
        raise DataFormatError(f"{path}: 'data' must be a uint8 (N, 3072) array, got {desc}")
    return data.reshape(-1, 3, 32, 32)


# ---------------------------------------------------------------- ImageNet npz

def _npz_data_shape(path: str) -> tuple[int, ...]:
    """Shape of 'data' in an npz, read from the member's header only."""
    try:
        with zipfile.ZipFile(path) as z, z.open("data.npy") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, _ = np.lib.format.read_array_header_1_0(f)
            else:
                shape, _, _ = np.lib.format.read_array_header_2_0(f)
            return shape
    except KeyError:
        raise DataFormatError(f"{path}: npz has no 'data' array") from None
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise DataFormatError(f"{path}: not a readable npz file ({e})") from None


def _npz_images(path: str, side: int | None = None) -> np.ndarray:
    try:
        with np.load(path, allow_pickle=False) as z:
            if "data" not in z.files:
                raise DataFormatError(f"{path}: npz has no 'data' array")
            data = z["data"]
    except DataFormatError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise DataFormatError(f"{path}: not a readable npz file ({e})") from None
    if data.dtype != np.uint8 or data.ndim != 2:
        raise DataFormatError(f"{path}: 'data' must be uint8 (N, 3*H*W), got "
                              f"{data.dtype} {data.shape}")
    s = side or math.isqrt(data.shape[1] // 3)
    if data.shape[1] != 3 * s * s:
        raise DataFormatError(f"{path}: 'data' rows have {data.shape[1]} values, not "
                              f"3*{s}*{s} for square RGB images")
    return data.reshape(-1, 3, s, s)


def _png_files(folder: str) -> list[str]:
    return sorted(os.path.join(folder, f) for f in os.listdir(folder)
                  if f.lower().endswith(".png") and os.path.isfile(os.path.join(folder, f)))
