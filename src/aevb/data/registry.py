"""The named datasets: where their files come from and how they are read."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .download import cache_dir, fetch
from .readers import DataError, read_idx, to_nchw


@dataclass
class Spec:
    """A dataset: its files (name -> md5), mirrors, and a function reading them into arrays."""

    description: str
    read: Callable[[dict[str, Path]], dict]
    files: dict[str, str] = field(default_factory=dict)
    mirrors: list[str] = field(default_factory=list)


def _idx_reader(train: str, test: str) -> Callable:
    def read(paths):
        out = {}
        for part, stem in (("train", train), ("test", test)):
            x = read_idx(paths[f"{stem}-images-idx3-ubyte.gz"])
            y = read_idx(paths[f"{stem}-labels-idx1-ubyte.gz"])
            if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
                raise DataError(f"{stem}-images/labels: expected images (N, H, W) and labels (N,), "
                                f"got {x.shape} and {y.shape}")
            out[part] = (to_nchw(x), y.astype(np.int64))
        out["num_classes"] = 10
        return out
    return read


def _digits(_paths) -> dict:
    """scikit-learn's 8x8 handwritten digits (1,797 images, intensities 0..16), shipped inside
    scikit-learn: real data with no download. Split 80/20 with a fixed permutation."""
    from sklearn.datasets import load_digits
    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]
    order = np.random.default_rng(0).permutation(len(x))
    n = int(0.8 * len(x))
    tr, te = order[:n], order[n:]
    return {"train": (x[tr], d.target[tr]), "test": (x[te], d.target[te]), "num_classes": 10}


def _idx_files(*stems):
    return [f"{s}-{k}-idx{n}-ubyte.gz" for s in stems for k, n in (("images", 3), ("labels", 1))]


DATASETS: dict[str, Spec] = {
    "digits": Spec("scikit-learn's 8x8 digits, embedded (no download)", _digits),
    "mnist": Spec(
        "MNIST handwritten digits, 60,000 train / 10,000 test, 28x28",
        _idx_reader("train", "t10k"),
        dict(zip(_idx_files("train", "t10k"), [
            "f68b3c2dcbeaaa9fbdd348bbdeb94873", "d53e105ee54ea40749a09fcbcd1e9432",
            "9fb629c4189551a2d022fa330f9573f3", "ec29112dd5afa0611ce80d1b7f02629c"])),
        ["https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"]),
    "fashion-mnist": Spec(
        "Fashion-MNIST (Zalando), 60,000 train / 10,000 test, 28x28",
        _idx_reader("train", "t10k"),
        dict(zip(_idx_files("train", "t10k"), [
            "8d4fb7e6c68d591d4c3dfef9ec88bf0d", "25c81989df183df01b3e8a0aad5dffbe",
            "bef4ecab320f06d8554ea6380940ec79", "bb300cfdad3c16e7a12a480ee83cd310"])),
        ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"]),
    "mnist-offline": Spec(
        "the offline MNIST split: fit on the 10,000 official test images, evaluate on 5,000 "
        "official training images (files in ../shared/data/mnist; pass --data-dir)",
        _idx_reader("t10k", "train5k"),
        dict(zip(_idx_files("t10k", "train5k"), [
            "9fb629c4189551a2d022fa330f9573f3", "ec29112dd5afa0611ce80d1b7f02629c",
            "6057ca5a67cd8660e9946050476aec42", "f4e4f8640ad2a3b028472f5598c37e79"]))),
}


def load_arrays(name: str, data_dir=None, download: bool = True) -> dict:
    """Arrays {"train": (x, y), "test": (x, y), "num_classes": k} of dataset `name`.

    Files are read from `data_dir` when given, else from the cache (downloading them)."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; available: {', '.join(sorted(DATASETS))}")
    spec = DATASETS[name]
    paths = {}
    if spec.files:
        where = Path(data_dir) if data_dir else cache_dir() / name
        missing = [f for f in spec.files if not (where / f).exists()]
        if missing and (data_dir or not download or not spec.mirrors):
            raise DataError(f"dataset {name!r}: missing {', '.join(missing)} in {where}; put the "
                            f"files there (or pass --data-dir DIR holding {', '.join(spec.files)})")
        for f, md5 in spec.files.items():
            paths[f] = where / f if (where / f).exists() else fetch(
                [m + f for m in spec.mirrors], f, md5, where)
    return spec.read(paths)
