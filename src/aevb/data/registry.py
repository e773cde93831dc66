"""The named datasets: where their files come from and how they are read.

Besides the names in DATASETS, `load_arrays` takes "folder:PATH" (a folder of images, see
folder.py) and "npz:PATH" (an NPZ with x_train, x_test and optionally y_train, y_test).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .download import cache_dir, fetch, file_hash, parse_checksum
from .folder import has_splits
from .readers import (CIFAR10_CLASSES, DataError, DataWarning, images_and_labels,
                      read_cifar10_binary, read_idx, read_npz)


@dataclass
class Spec:
    """A dataset: its files (name -> checksum, 'md5:…'/'sha256:…' or bare md5), mirrors, a
    function reading them into arrays, and other names a user's --data-dir may hold instead
    of a file (an uncompressed or extracted copy; not checksummed)."""

    description: str
    read: Callable[[dict[str, Path]], dict]
    files: dict[str, str] = field(default_factory=dict)
    mirrors: list[str] = field(default_factory=list)
    alternatives: dict[str, list[str]] = field(default_factory=dict)

    def stand_ins(self, filename: str) -> list[str]:
        gz = [filename[:-3]] if filename.endswith(".gz") else []
        return self.alternatives.get(filename, []) + gz


FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                         "Sneaker", "Bag", "Ankle boot")


def _idx_reader(train: str, test: str, classes: tuple | None = None) -> Callable:
    def read(paths):
        out = {"info": {"classes": list(classes)}} if classes else {}
        for part, stem in (("train", train), ("test", test)):
            xp, yp = paths[f"{stem}-images-idx3-ubyte.gz"], paths[f"{stem}-labels-idx1-ubyte.gz"]
            x, y = read_idx(xp), read_idx(yp)
            if x.ndim != 3:
                raise DataError(f"{xp}: expected images of shape (N, H, W), got {x.shape}")
            out[part] = images_and_labels(x, y, xp, yp)
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


def _cifar10(paths) -> dict:
    arrays = read_cifar10_binary(paths["cifar-10-binary.tar.gz"])
    return {**arrays, "num_classes": 10, "info": {"classes": list(CIFAR10_CLASSES)}}


def _idx_files(*stems):
    return [f"{s}-{k}-idx{n}-ubyte.gz" for s in stems for k, n in (("images", 3), ("labels", 1))]


DATASETS: dict[str, Spec] = {
    "digits": Spec("scikit-learn's 8x8 digits, 1,437 train / 360 test, embedded (no download)",
                   _digits),
    "mnist": Spec(
        "MNIST handwritten digits, 60,000 train / 10,000 test, 28x28",
        _idx_reader("train", "t10k"),
        dict(zip(_idx_files("train", "t10k"), [
            "f68b3c2dcbeaaa9fbdd348bbdeb94873", "d53e105ee54ea40749a09fcbcd1e9432",
            "9fb629c4189551a2d022fa330f9573f3", "ec29112dd5afa0611ce80d1b7f02629c"])),
        ["https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"]),
    "fashion-mnist": Spec(
        "Fashion-MNIST (Zalando), 60,000 train / 10,000 test, 28x28",
        _idx_reader("train", "t10k", FASHION_MNIST_CLASSES),
        dict(zip(_idx_files("train", "t10k"), [
            "8d4fb7e6c68d591d4c3dfef9ec88bf0d", "25c81989df183df01b3e8a0aad5dffbe",
            "bef4ecab320f06d8554ea6380940ec79", "bb300cfdad3c16e7a12a480ee83cd310"])),
        ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"]),
    "mnist-offline": Spec(
        "the offline MNIST split: fit on the 10,000 official test images, evaluate on 5,000 "
        "official training images (no download: --data-dir DIR holding its four IDX files, "
        "e.g. the shared data's mnist/, or put them in $AEVB_DATA/mnist-offline)",
        _idx_reader("t10k", "train5k"),
        dict(zip(_idx_files("t10k", "train5k"), [
            "9fb629c4189551a2d022fa330f9573f3", "ec29112dd5afa0611ce80d1b7f02629c",
            "6057ca5a67cd8660e9946050476aec42", "f4e4f8640ad2a3b028472f5598c37e79"]))),
    "cifar10": Spec(
        "CIFAR-10 colour images, 10 classes, 50,000 train / 10,000 test, 3x32x32 (the binary "
        "version, read from the tar; --data-dir may hold the tar or cifar-10-batches-bin/)",
        _cifar10,
        {"cifar-10-binary.tar.gz": "c32a1d4ab5d03f1284b67883e8d87530"},
        ["https://www.cs.toronto.edu/~kriz/"],
        {"cifar-10-binary.tar.gz": ["cifar-10-batches-bin", "test_batch.bin"]}),
}

_PATH_KINDS = {
    "folder:PATH": "a folder of images: PATH/<class>/<image> (labelled) or PATH/<image> "
                   "(unlabelled), resized to image_size, 1 or 3 channels, split by test_fraction; "
                   "PATH/train/ and PATH/test/ (only those) are the two splits",
    "npz:PATH": "an NPZ file with arrays x_train, x_test (and optionally y_train, y_test)",
}


def class_names(name: str) -> list[str] | None:
    """The names of the labels 0, 1, ... of dataset `name` (CIFAR-10's, Fashion-MNIST's, a
    labelled folder's subfolders), without reading its images; None where labels are plain
    numbers (the digits) or there are none."""
    if name == "cifar10":
        return list(CIFAR10_CLASSES)
    if name == "fashion-mnist":
        return list(FASHION_MNIST_CLASSES)
    if name.startswith("folder:"):
        root = Path(name[len("folder:"):]).expanduser()
        root = root / "train" if has_splits(root) else root
        subs = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) \
            if root.is_dir() else []
        return subs or None
    return None


def available() -> list[str]:
    """Names accepted by `load`: the registered datasets, then the PATH forms."""
    return sorted(DATASETS) + list(_PATH_KINDS)


def describe() -> str:
    """One line per dataset: its name and what it is."""
    rows = {**{k: DATASETS[k].description for k in sorted(DATASETS)}, **_PATH_KINDS}
    width = max(map(len, rows))
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows.items())


def _local_files(name: str, spec: Spec, where: Path) -> dict[str, Path]:
    """Files of `spec` in a user's folder; a checksum mismatch only warns (users re-pack)."""
    paths, missing = {}, []
    for f, checksum in spec.files.items():
        p = where / f
        if p.is_file():
            algo, digest = parse_checksum(checksum)
            got = file_hash(p, algo)
            if got != digest:
                warnings.warn(f"{p}: {algo} {got} differs from the published {digest} of {f} "
                              f"({name}); using it anyway (fine if you re-packed it, but a "
                              f"truncated or corrupt download will fail or give wrong data)",
                              DataWarning, stacklevel=4)
            paths[f] = p
            continue
        alt = next((where / a for a in spec.stand_ins(f) if (where / a).exists()), None)
        if alt is None:
            missing.append(f)
        else:
            paths[f] = alt
    if missing:
        raise DataError(f"dataset {name!r}: missing {', '.join(missing)} in {where}; put the files "
                        f"there" + (f" (from {spec.mirrors[0]})" if spec.mirrors else ""))
    return paths


def _npz_arrays(path: str) -> dict:
    d = read_npz(path, keys=("x_train", "x_test"))
    out = {}
    for part in ("train", "test"):
        out[part] = images_and_labels(d[f"x_{part}"], d.get(f"y_{part}"), f"{path}:x_{part}",
                                      f"{path}:y_{part}")
    if (out["train"][1] is None) != (out["test"][1] is None):
        have, lack = ("y_train", "y_test") if out["test"][1] is None else ("y_test", "y_train")
        raise DataError(f"{path}: has {have} but no {lack}; give labels for both splits or for neither")
    ys = [y for _, y in (out["train"], out["test"]) if y is not None and len(y)]
    out["num_classes"] = int(max(y.max() for y in ys)) + 1 if ys else 0
    return out


def load_arrays(name: str, data_dir=None, download: bool = True, *, image_size: int | None = None,
                channels: int | None = None, test_fraction: float = 0.1, seed: int = 0,
                progress: bool = True) -> dict:
    """Arrays {"train": (x, y), "test": (x, y), "num_classes": k, "info": {...}} of `name`.

    Files are read from `data_dir` when given, else from the cache (downloading them when
    `download`). `image_size`, `channels`, `test_fraction` and `seed` apply to folder:PATH."""
    if name.startswith("folder:"):
        from .folder import load_folder
        return load_folder(name[len("folder:"):], 64 if image_size is None else image_size,
                           3 if channels is None else channels, test_fraction, seed, progress=progress)
    if image_size is not None or channels is not None:
        raise ValueError(f"image_size and channels apply to folder:PATH datasets, not {name!r}")
    if name.startswith("npz:"):
        return _npz_arrays(name[len("npz:"):])
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; available: {', '.join(available())}")
    spec = DATASETS[name]
    if not spec.files:
        return spec.read({})
    if data_dir:
        return spec.read(_local_files(name, spec, Path(data_dir).expanduser()))
    where = cache_dir() / name
    missing = [f for f in spec.files if not (where / f).exists()]
    if missing and not (download and spec.mirrors):
        why = "downloads are off" if spec.mirrors else "it has no download address"
        raise DataError(f"dataset {name!r}: missing {', '.join(missing)} in {where} and {why}; "
                        f"put the files there, or pass --data-dir DIR holding them")
    paths = {f: fetch([m + f for m in spec.mirrors], f, checksum, where, progress=progress)
             for f, checksum in spec.files.items()}
    return spec.read(paths)
