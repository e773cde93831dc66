"""IDX and NPZ readers: round trips, one-line errors naming the file, and fuzzing."""
import gzip
import io
import shutil
import struct
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from aevb.data import DataError, DataWarning, load
from aevb.data.readers import images_and_labels, read_idx, read_npz, to_nchw

MNIST = Path("/work/shared/data/mnist")
needs_mnist = pytest.mark.skipif(not MNIST.is_dir(), reason="needs the shared MNIST files")


def idx_bytes(a: np.ndarray) -> bytes:
    """IDX encoding of `a` (written independently of the reader: big-endian header)."""
    code = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(np.int16): 0x0B,
            np.dtype(np.int32): 0x0C, np.dtype(np.float32): 0x0D, np.dtype(np.float64): 0x0E}[a.dtype]
    head = bytes([0, 0, code, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape)
    return head + a.astype(a.dtype.newbyteorder(">")).tobytes()


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("gz", [False, True])
def test_idx_round_trip(tmp_path, dtype, gz):
    a = (np.random.default_rng(0).normal(size=(5, 4, 3)) * 50).astype(dtype)
    raw = idx_bytes(a)
    p = tmp_path / "a.idx"
    p.write_bytes(gzip.compress(raw) if gz else raw)
    b = read_idx(p)
    assert b.dtype == np.dtype(dtype) and b.shape == (5, 4, 3) and np.array_equal(a, b)


def one_line_error(fn, path, *words):
    with pytest.raises(DataError) as e:
        fn(path)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg, msg
    for w in words:
        assert w in msg, msg
    return msg


def test_idx_errors(tmp_path):
    good = idx_bytes(np.arange(60, dtype=np.uint8).reshape(3, 4, 5))
    cases = {
        "missing.idx": (None, "not found"),
        "empty.idx": (b"", "bad magic"),
        "magic.idx": (b"\x00\x01\x08\x03" + good[4:], "bad magic number 00010803"),
        "type.idx": (b"\x00\x00\x07\x03" + good[4:], "bad magic"),
        "header.idx": (good[:9], "truncated IDX header"),
        "short.idx": (good[:-1], "truncated"),
        "long.idx": (good + b"\0", "says"),
        "gz.idx": (gzip.compress(good)[:-7], "gzip"),
        "gzcrc.idx": (gzip.compress(good)[:-8] + b"\0\0\0\0" + gzip.compress(good)[-4:], "gzip"),
    }
    for name, (content, word) in cases.items():
        if content is not None:
            (tmp_path / name).write_bytes(content)
        one_line_error(read_idx, tmp_path / name, word)


def test_npz_round_trip_and_load(tmp_path):
    rng = np.random.default_rng(1)
    arrays = dict(x_train=rng.integers(0, 256, (7, 6, 6, 3), dtype=np.uint8),
                  y_train=np.arange(7) % 3, x_test=rng.integers(0, 256, (2, 6, 6, 3), dtype=np.uint8),
                  y_test=np.array([2, 0]))
    for save in (np.savez, np.savez_compressed):
        p = tmp_path / f"{save.__name__}.npz"
        save(p, **arrays)
        back = read_npz(p)
        assert all(np.array_equal(back[k], v) for k, v in arrays.items())
    ds = load(f"npz:{p}")
    assert ds.shape == (3, 6, 6) and ds.num_classes == 3 and len(ds.test) == 2
    assert np.allclose(ds.train.x.numpy(), arrays["x_train"].transpose(0, 3, 1, 2) / 255.0)
    assert ds.train.y.tolist() == [0, 1, 2, 0, 1, 2, 0]
    np.savez(tmp_path / "nolabels.npz", x_train=arrays["x_train"], x_test=arrays["x_test"])
    ds = load(f"npz:{tmp_path / 'nolabels.npz'}")
    assert ds.train.y is None and ds.num_classes == 0


def test_npz_errors(tmp_path):
    p = tmp_path / "a.npz"
    np.savez(p, x_train=np.zeros((2, 4, 4)), x_test=np.zeros((1, 4, 4)))
    one_line_error(read_npz, p, "lacks arrays ['y_train', 'y_test']")
    np.savez(p, x_train=np.array([{"a": 1}], dtype=object), y_train=[1], x_test=[1], y_test=[1])
    one_line_error(read_npz, p, "not a valid NPZ")  # object arrays would need unpickling
    np.save(tmp_path / "b.npy", np.zeros(3))
    one_line_error(read_npz, tmp_path / "b.npy", ".npy file")
    (tmp_path / "c.npz").write_bytes(b"PK\x03\x04 garbage")
    one_line_error(read_npz, tmp_path / "c.npz", "not a valid NPZ")
    one_line_error(read_npz, tmp_path / "none.npz", "not found")
    good = io.BytesIO()
    np.savez(good, x_train=np.zeros((2, 4, 4)), y_train=[0, 1], x_test=np.zeros((1, 4, 4)), y_test=[0])
    (tmp_path / "d.npz").write_bytes(good.getvalue()[:-40])
    one_line_error(read_npz, tmp_path / "d.npz", "not a valid NPZ")


def test_shape_and_count_checks():
    x = np.zeros((4, 5, 5), np.uint8)
    assert images_and_labels(x, np.arange(4))[0].shape == (4, 1, 5, 5)
    assert to_nchw(np.zeros((2, 7, 7, 3))).shape == (2, 3, 7, 7)
    assert to_nchw(np.zeros((2, 3, 7, 7))).shape == (2, 3, 7, 7)
    for bad_x, word in [(np.zeros((4, 25)), "must have shape"), (np.zeros((4, 5, 5, 7)), "got (4, 5, 5, 7)"),
                        (np.zeros((0, 5, 5)), "non-empty")]:
        with pytest.raises(DataError, match=word.replace("(", r"\(").replace(")", r"\)")):
            images_and_labels(bad_x, None, "img.idx")
    with pytest.raises(DataError, match=r"lab\.idx: 3 labels for 4 images in img\.idx"):
        images_and_labels(x, np.arange(3), "img.idx", "lab.idx")
    with pytest.raises(DataError, match="1-D integer"):
        images_and_labels(x, np.zeros((4, 2), np.int64), "img.idx", "lab.idx")
    with pytest.raises(DataError, match=">= 0"):
        images_and_labels(x, np.array([0, 1, -1, 2]), "img.idx", "lab.idx")


# -- fuzzing: any input gives an array or a DataError, never another exception -------------

FUZZ_DIR = Path(tempfile.mkdtemp(prefix="aevb-fuzz-"))
VALID_IDX = idx_bytes(np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4))
_buf = io.BytesIO()
np.savez_compressed(_buf, x_train=np.arange(24, dtype=np.uint8).reshape(2, 3, 4), y_train=[0, 1],
                    x_test=np.zeros((1, 3, 4), np.uint8), y_test=[1])
VALID_NPZ = _buf.getvalue()
VALID = {"idx": VALID_IDX, "idx.gz": gzip.compress(VALID_IDX), "npz": VALID_NPZ}
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def teardown_module():
    shutil.rmtree(FUZZ_DIR, ignore_errors=True)


def survives(reader, content: bytes, name: str):
    p = FUZZ_DIR / name
    p.write_bytes(content)
    try:
        out = reader(p)
    except DataError as e:
        assert "\n" not in str(e) and str(p) in str(e)
        return
    assert isinstance(out, (np.ndarray, dict))


def flip(raw: bytes, bits) -> bytes:
    out = bytearray(raw)
    for i in bits:
        out[i // 8] ^= 1 << (i % 8)
    return bytes(out)


def mutated(kind):
    """Truncations, bit flips, and a mix of both, of a valid file of `kind`."""
    raw = VALID[kind]
    cut = st.integers(0, len(raw)).map(lambda n: raw[:n])
    flips = st.lists(st.integers(0, len(raw) * 8 - 1), min_size=1, max_size=4).map(
        lambda bits: flip(raw, bits))
    return st.one_of(cut, flips, st.binary(max_size=64).map(lambda tail: raw[:len(raw) // 2] + tail))


@FUZZ
@given(st.one_of(st.binary(max_size=200), mutated("idx"), mutated("idx.gz"),
                 st.binary(max_size=40).map(lambda b: b"\x1f\x8b" + b)))
def test_fuzz_read_idx(content):
    survives(read_idx, content, "f.idx")


@FUZZ
@given(st.one_of(st.binary(max_size=200), mutated("npz"),
                 st.binary(max_size=60).map(lambda b: b"PK\x03\x04" + b)))
def test_fuzz_read_npz(content):
    survives(read_npz, content, "f.npz")


# -- --data-dir: checksums of the user's files --------------------------------------------

@needs_mnist
def test_data_dir_checksum_mismatch_warns_and_names_file(tmp_path):
    for f in MNIST.iterdir():
        shutil.copy(f, tmp_path / f.name)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the official files: no warning at all
        ds = load("mnist-offline", data_dir=tmp_path)
    # re-pack one file (same content, another gzip stream): a warning, not an error
    name = "train5k-labels-idx1-ubyte.gz"
    (tmp_path / name).write_bytes(gzip.compress(gzip.decompress((tmp_path / name).read_bytes()), 1, mtime=0))
    with pytest.warns(DataWarning, match=name) as w:
        ds2 = load("mnist-offline", data_dir=tmp_path)
    assert len(w) == 1 and "f4e4f8640ad2a3b028472f5598c37e79" in str(w[0].message)
    assert ds2.test.y.tolist() == ds.test.y.tolist()


@needs_mnist
def test_data_dir_uncompressed_idx_and_errors(tmp_path):
    for f in MNIST.iterdir():
        (tmp_path / f.name[:-3]).write_bytes(gzip.decompress(f.read_bytes()))
    ds = load("mnist-offline", data_dir=tmp_path)
    assert (len(ds.train), len(ds.test)) == (10_000, 5_000)
    assert np.bincount(ds.test.y.numpy()).tolist() == [500] * 10  # train5k: 500 per class
    (tmp_path / "train5k-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(4999, np.uint8)))
    with pytest.raises(DataError, match="4999 labels for 5000 images"):
        load("mnist-offline", data_dir=tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte").unlink()
    with pytest.raises(DataError, match="missing t10k-images-idx3-ubyte.gz"):
        load("mnist-offline", data_dir=tmp_path)


@needs_mnist
def test_real_mnist_idx():
    x = read_idx(MNIST / "t10k-images-idx3-ubyte.gz")
    y = read_idx(MNIST / "t10k-labels-idx1-ubyte.gz")
    assert x.shape == (10_000, 28, 28) and x.dtype == np.uint8 and x.max() == 255
    assert np.bincount(y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
