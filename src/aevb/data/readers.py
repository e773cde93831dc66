"""Readers for the file formats of image datasets: IDX (MNIST family, gzip or not) and NPZ."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np


class DataError(ValueError):
    """A dataset file is missing, corrupt or of the wrong shape; the message names the file."""


_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path) -> np.ndarray:
    """Read an IDX file (http://yann.lecun.com/exdb/mnist/), gzipped or not, into an array."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DataError(f"{path}: corrupt gzip stream ({e})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise DataError(f"{path}: not an IDX file (bad magic number {raw[:4].hex()})")
    dtype, ndim = np.dtype(_IDX_TYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise DataError(f"{path}: IDX file is {len(raw)} bytes but its header {shape} says "
                        f"{expected}; the file is truncated or corrupt, download it again")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def read_npz(path, keys=("x_train", "y_train", "x_test", "y_test")) -> dict[str, np.ndarray]:
    """Read arrays from an NPZ file without unpickling (allow_pickle=False)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = [k for k in keys if k not in f.files]
            if missing:
                raise DataError(f"{path}: NPZ file lacks arrays {missing} (has {f.files})")
            return {k: f[k] for k in f.files}
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except DataError:
        raise
    except Exception as e:  # zipfile.BadZipFile, ValueError (pickled object arrays), ...
        raise DataError(f"{path}: not a valid NPZ file ({type(e).__name__}: {e})") from None


def to_nchw(x: np.ndarray, path="") -> np.ndarray:
    """(N, H, W) or (N, H, W, C) or (N, C, H, W) -> (N, C, H, W)."""
    if x.ndim == 3:
        return x[:, None]
    if x.ndim == 4:
        return x if x.shape[1] in (1, 3) else x.transpose(0, 3, 1, 2)
    raise DataError(f"{path}: images must have shape (N, H, W), (N, H, W, C) or (N, C, H, W); got {x.shape}")
