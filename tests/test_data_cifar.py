"""CIFAR-10 binary reader on small synthetic tars built here (the real one is 170 MB)."""
import io
import tarfile
import warnings

import numpy as np
import pytest

from aevb.data import DATASETS, DataError, DataWarning, load
from aevb.data.readers import read_cifar10_binary

BATCHES = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]


def records(seed, n=3):
    """n CIFAR records (label byte + 3072 CHW bytes) and the (x, y) they encode."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
    y = rng.integers(0, 10, n).astype(np.uint8)
    raw = b"".join(bytes([int(label)]) + img.tobytes() for label, img in zip(y, x))
    return raw, x, y


def make_tar(path, blobs, prefix="cifar-10-batches-bin/"):
    with tarfile.open(path, "w:gz") as tar:
        for name, raw in blobs.items():
            info = tarfile.TarInfo(prefix + name)
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return path


@pytest.fixture
def cifar(tmp_path):
    data = {n: records(i) for i, n in enumerate(BATCHES)}
    blobs = {n: r for n, (r, _, _) in data.items()}
    blobs["batches.meta.txt"] = b"airplane\n"
    return make_tar(tmp_path / "cifar-10-binary.tar.gz", blobs), data


def test_reads_records_from_tar(cifar):
    path, data = cifar
    out = read_cifar10_binary(path)
    x_train, y_train = out["train"]
    assert x_train.shape == (15, 3, 32, 32) and x_train.dtype == np.uint8
    assert np.array_equal(x_train[3:6], data["data_batch_2.bin"][1])  # batch order kept
    assert y_train.tolist() == sum((data[n][2].tolist() for n in BATCHES[:5]), [])
    assert np.array_equal(out["test"][0], data["test_batch.bin"][1])
    # a pixel by hand: record 0 of the test batch, channel 2 (blue), row 1, column 0
    raw = data["test_batch.bin"][0]
    assert out["test"][0][0, 2, 1, 0] == raw[1 + 2 * 1024 + 32]


def test_load_via_data_dir_tar_and_extracted(cifar, tmp_path):
    path, data = cifar
    with pytest.warns(DataWarning, match="cifar-10-binary.tar.gz"):  # not the official md5
        ds = load("cifar10", data_dir=tmp_path)
    assert ds.shape == (3, 32, 32) and ds.num_classes == 10 and ds.info["classes"][0] == "airplane"
    assert np.allclose(ds.test.x.numpy(), data["test_batch.bin"][1] / 255.0)
    extracted = tmp_path / "x"
    with tarfile.open(path) as tar:
        tar.extractall(extracted, filter="data")
    for where in (extracted, extracted / "cifar-10-batches-bin"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # extracted copies are not checksummed
            ds2 = load("cifar10", data_dir=where)
        assert np.array_equal(ds2.train.x.numpy(), ds.train.x.numpy())
        assert ds2.train.y.tolist() == ds.train.y.tolist()


def test_errors_name_the_file(tmp_path):
    good = {n: records(i)[0] for i, n in enumerate(BATCHES)}
    bad = make_tar(tmp_path / "short.tar.gz", {**good, "data_batch_3.bin": good["data_batch_3.bin"][:-1]})
    with pytest.raises(DataError, match=r"short\.tar\.gz:data_batch_3\.bin: 9218 bytes"):
        read_cifar10_binary(bad)
    lacking = make_tar(tmp_path / "lacking.tar.gz", {n: r for n, r in good.items() if n != "test_batch.bin"})
    with pytest.raises(DataError, match=r"lacking\.tar\.gz: .*test_batch\.bin not found"):
        read_cifar10_binary(lacking)
    label = bytearray(good["test_batch.bin"])
    label[0] = 10
    with pytest.raises(DataError, match="label 10 out of range"):
        read_cifar10_binary(make_tar(tmp_path / "label.tar.gz", {**good, "test_batch.bin": bytes(label)}))
    (tmp_path / "trunc.tar.gz").write_bytes((tmp_path / "short.tar.gz").read_bytes()[:500])
    with pytest.raises(DataError, match=r"trunc\.tar\.gz: corrupt or truncated"):
        read_cifar10_binary(tmp_path / "trunc.tar.gz")


def test_registry_entry_is_the_binary_version():
    spec = DATASETS["cifar10"]
    assert spec.files == {"cifar-10-binary.tar.gz": "c32a1d4ab5d03f1284b67883e8d87530"}
    assert spec.mirrors == ["https://www.cs.toronto.edu/~kriz/"]
    assert not any("python" in f for f in spec.files)  # never the pickled version
