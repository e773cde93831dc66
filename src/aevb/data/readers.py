"""Readers for the file formats of image datasets: IDX (MNIST family, gzip or not), NPZ, and
CIFAR-10's binary batches (a tar or its extracted folder; never the pickled version).

Every failure is a one-line DataError that names the file and the problem, so that a user
with a truncated download or a re-packed file learns which file to fix.
"""
from __future__ import annotations

import gzip
import math
import tarfile
import zlib
from pathlib import Path

import numpy as np


class DataError(ValueError):
    """A dataset file is missing, corrupt or of the wrong shape; the message names the file."""


class DataWarning(UserWarning):
    """A dataset file was skipped, or differs from its published checksum but was used."""


def _one_line(e: BaseException) -> str:
    return " ".join(f"{type(e).__name__}: {e}".split())


_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _read_bytes(path: Path) -> bytes:
    """The bytes of a regular file (never a FIFO or a device: those could block forever)."""
    from ..serialization import read_file
    return read_file(path, DataError)


def _check_file(path: Path) -> None:
    from ..serialization import not_regular
    why = not_regular(path)
    if why:
        raise DataError(f"{path}: {why}")


def read_idx(path) -> np.ndarray:
    """Read an IDX file (http://yann.lecun.com/exdb/mnist/), gzipped or not, into an array."""
    path = Path(path)
    raw = _read_bytes(path)
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"{path}: corrupt or truncated gzip stream ({_one_line(e)})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise DataError(f"{path}: not an IDX file (bad magic number {raw[:4].hex() or 'empty'})")
    dtype, ndim = np.dtype(_IDX_TYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header ({len(raw)} bytes, {ndim} dimensions)")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = header + math.prod(shape) * dtype.itemsize
    if len(raw) != expected:
        raise DataError(f"{path}: IDX file is {len(raw)} bytes but its header (shape {shape}) "
                        f"says {expected}; the file is truncated or corrupt, download it again")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def read_npz(path, keys=("x_train", "y_train", "x_test", "y_test")) -> dict[str, np.ndarray]:
    """Read every array of an NPZ file without unpickling (allow_pickle=False); `keys` must
    be among them."""
    path = Path(path)
    _check_file(path)
    try:
        f = np.load(path, allow_pickle=False)
        if not isinstance(f, np.lib.npyio.NpzFile):
            raise DataError(f"{path}: an .npy file, not an .npz archive of named arrays")
        with f:
            missing = [k for k in keys if k not in f.files]
            if missing:
                raise DataError(f"{path}: NPZ file lacks arrays {missing} (has {f.files[:20]})")
            arrays = {k: f[k] for k in f.files}
        odd = [k for k, v in arrays.items() if not isinstance(v, np.ndarray)]
        if odd:  # a member that is not a .npy file comes back as its raw bytes
            raise DataError(f"{path}: member {odd[0]!r} is not a NumPy array (.npy); an NPZ "
                            "dataset holds arrays only")
        return arrays
    except (FileNotFoundError, IsADirectoryError):
        raise DataError(f"{path}: file not found") from None
    except DataError:
        raise
    except Exception as e:  # BadZipFile, zlib.error, EOFError, ValueError (object arrays), ...
        raise DataError(f"{path}: not a valid NPZ file ({_one_line(e)})") from None


def to_nchw(x: np.ndarray, path="") -> np.ndarray:
    """(N, H, W) or (N, H, W, C) or (N, C, H, W) -> (N, C, H, W), with C 1 or 3."""
    if x.ndim == 3:
        return x[:, None]
    if x.ndim == 4 and x.shape[1] in (1, 3):
        return x
    if x.ndim == 4 and x.shape[3] in (1, 3):
        return x.transpose(0, 3, 1, 2)
    raise DataError(f"{path}: images must have shape (N, H, W), (N, H, W, C) or (N, C, H, W) "
                    f"with 1 or 3 channels; got {x.shape}")


def images_and_labels(x: np.ndarray, y: np.ndarray | None, x_path="", y_path="") -> tuple:
    """Check a split and bring it to (N, C, H, W) images and (N,) int64 labels (or None).
    Pixels must be uint8 (0..255) or numbers in [0, 1]: NaN, infinities and other ranges
    (such as 0..255 as floats) are refused, naming the file."""
    if not isinstance(x, np.ndarray) or x.dtype.kind not in "uif" or x.size == 0:
        raise DataError(f"{x_path}: expected a non-empty numeric image array, got "
                        f"{getattr(x, 'dtype', type(x).__name__)} {getattr(x, 'shape', '')}")
    x = to_nchw(x, x_path)
    check_pixels(x, x_path)
    if y is None:
        return x, None
    if y.ndim != 1 or y.dtype.kind not in "ui":
        raise DataError(f"{y_path}: labels must be a 1-D integer array, got {y.dtype} {y.shape}")
    if len(y) != len(x):
        raise DataError(f"{y_path}: {len(y)} labels for {len(x)} images in {x_path}")
    if len(y) and y.min() < 0:
        raise DataError(f"{y_path}: labels must be >= 0, found {y.min()}")
    return x, y.astype(np.int64)


def check_pixels(x: np.ndarray, where="") -> None:
    """Refuse images that are not uint8 or numbers in [0, 1] (NaN, inf, 0..255 floats, ...)."""
    if x.dtype == np.uint8:
        return
    finite = np.isfinite(x)
    if not finite.all():
        raise DataError(f"{where}: {int((~finite).sum())} pixel values are NaN or infinite; "
                        "fix or drop those images")
    lo, hi = x.min(), x.max()
    if lo < 0 or hi > 1:
        hint = "; divide by 255 (or store uint8)" if hi <= 255 and lo >= 0 else ""
        raise DataError(f"{where}: pixel values must be in [0, 1] (or uint8 0..255), found "
                        f"{float(lo):.4g}..{float(hi):.4g}{hint}")


# CIFAR-10, binary version: each record is 1 label byte + 3072 bytes (3 x 32 x 32, CHW).
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")
CIFAR10_TRAIN = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
CIFAR10_TEST = ("test_batch.bin",)
_CIFAR_RECORD = 1 + 3 * 32 * 32


def _cifar_records(raw: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    if not raw or len(raw) % _CIFAR_RECORD:
        raise DataError(f"{where}: {len(raw)} bytes is not a whole number of {_CIFAR_RECORD}-byte "
                        f"CIFAR-10 records; the file is truncated or not a CIFAR-10 binary batch")
    rec = np.frombuffer(raw, np.uint8).reshape(-1, _CIFAR_RECORD)
    y = rec[:, 0].astype(np.int64)
    if y.max() >= 10:
        raise DataError(f"{where}: label {y.max()} out of range 0..9; not a CIFAR-10 binary batch")
    return rec[:, 1:].reshape(-1, 3, 32, 32).copy(), y


def read_cifar10_binary(path) -> dict:
    """Read CIFAR-10's binary batches straight from cifar-10-binary.tar.gz (no extraction, no
    unpickling), or from a folder holding the extracted .bin files."""
    path = Path(path)
    if path.suffix == ".bin":  # one of the extracted batches: read its folder
        path = path.parent
    names = CIFAR10_TRAIN + CIFAR10_TEST
    blobs: dict[str, bytes] = {}
    if path.is_dir():
        for n in names:
            for p in (path / n, path / "cifar-10-batches-bin" / n):
                if p.is_file():
                    blobs[n] = _read_bytes(p)
                    break
    else:
        _check_file(path)
        try:
            with tarfile.open(path, "r:*") as tar:
                for m in tar:
                    base = m.name.rsplit("/", 1)[-1]
                    if m.isfile() and base in names and base not in blobs:
                        blobs[base] = tar.extractfile(m).read()
        except FileNotFoundError:
            raise DataError(f"{path}: file not found") from None
        except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
            raise DataError(f"{path}: corrupt or truncated tar archive ({_one_line(e)})") from None
    missing = [n for n in names if n not in blobs]
    if missing:
        raise DataError(f"{path}: CIFAR-10 binary batches {', '.join(missing)} not found in it")
    out = {}
    for part, batch in (("train", CIFAR10_TRAIN), ("test", CIFAR10_TEST)):
        xs, ys = zip(*(_cifar_records(blobs[n], f"{path}:{n}") for n in batch))
        out[part] = (np.concatenate(xs), np.concatenate(ys))
    return out
