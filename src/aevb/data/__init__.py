"""Datasets held in memory as tensors: a registry of named datasets, readers, downloads.

Names: those in `DATASETS` (see `describe()`), "folder:PATH" (a folder of images) and
"npz:PATH" (an NPZ of x_train, x_test, y_train, y_test).

`load(name)` returns a `Dataset` with a train and a test `Split`; images are float32 in
[0, 1], shape (N, C, H, W); labels int64. Batches are slices of a random permutation.
Binarization: "none" (intensities), "static" (one draw per pixel with a fixed seed, for
train and test), "dynamic" (a fresh draw every time a training image is used; the test set
is binarized once with a fixed seed so that test numbers are comparable).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Iterator

import torch
from torch import Tensor

from .readers import DataError, DataWarning
from .registry import DATASETS, available, class_names, describe, load_arrays
from . import transforms
from .transforms import BINARIZE, salt_and_pepper

__all__ = ["Dataset", "Split", "load", "subset", "hold_out", "keep_classes", "DATASETS", "DataError", "DataWarning", "available",
           "class_names", "describe", "salt_and_pepper"]

EVAL_BINARIZE_SEED = 1234  # the fixed seed of static binarization and of the test set
VALIDATION_SEED = 4321  # the fixed choice of `hold_out`'s images and of their binarization


def eval_binarization(binarize: str) -> dict | None:
    """How `load` binarized the test images (None for binarize "none"), as `aevb eval`
    records it: one draw with the fixed seed, so that anyone can make the same images."""
    if binarize == "none":
        return None
    return {"seed": EVAL_BINARIZE_SEED,
            "method": "aevb.data.transforms.binarize(x_test, torch.Generator().manual_seed(1234)): "
                      "pixel = 1 where u < ceil(p * 2^24), u 24 random bits per pixel, one draw over "
                      "the whole test split (after classes and limit)"
                      + ("; then the train split from the same generator" if binarize == "static" else "")}


@dataclass
class Split:
    """Images x (N, C, H, W) float32 in [0, 1] and labels y (N,) int64 (or None)."""

    x: Tensor
    y: Tensor | None = None

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, idx) -> "Split":
        return Split(self.x[idx], None if self.y is None else self.y[idx])


@dataclass
class Dataset:
    name: str
    train: Split
    test: Split
    binarize: str = "none"
    num_classes: int = 0
    info: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.train.x.shape[1:])

    def batches(self, batch_size: int, generator: torch.Generator, split: str = "train",
                shuffle: bool = True, rank: int = 0, world_size: int = 1,
                drop_last: bool = False, start: int = 0) -> Iterator[tuple[Tensor, Tensor | None]]:
        """(x, y) batches of a split: slices of one permutation drawn from `generator`.

        With `world_size > 1` each rank gets a disjoint shard of every global batch of
        `batch_size * world_size` images. Dynamic binarization draws from the global RNG.
        `start` skips the first batches without touching any RNG (to resume mid-epoch)."""
        data = getattr(self, split)
        n = len(data)
        order = (torch.randperm(n, generator=generator) if shuffle else torch.arange(n)).to(data.x.device)
        step = batch_size * world_size
        stop = n - n % step if drop_last else n
        dynamic = split == "train" and self.binarize == "dynamic"
        for i in range(start * step, stop, step):
            idx = order[i:i + step][rank::world_size]
            x = data.x.index_select(0, idx)
            y = None if data.y is None else data.y.index_select(0, idx)
            yield (transforms.binarize(x) if dynamic else x), y


def _classes(split: Split, classes, name: str, part: str, names=None) -> Split:
    """`keep_classes`, with errors that name the dataset and the labels it has; class names
    (e.g. "cat") are looked up in the dataset's `names`."""
    classes = [classes] if isinstance(classes, (int, str)) else classes
    classes = [_label_of(c, names, name) if isinstance(c, str) else c for c in classes]
    if isinstance(classes, (str, bytes)) or not all(
            isinstance(c, int) and not isinstance(c, bool) for c in classes):
        raise ValueError(f"classes must be integer labels such as [0, 1, 2], got {classes!r}")
    if split.y is None:
        raise DataError(f"dataset {name!r} has no labels, so 'classes' cannot select images; "
                        "remove the classes setting")
    have = torch.unique(split.y).tolist()
    missing = [c for c in classes if c not in have]
    if missing:
        raise DataError(f"classes {missing} have no images in the {part} split of {name!r} "
                        f"(its labels: {', '.join(map(str, have))})")
    return keep_classes(split, classes)


def _label_of(cls: str, names, dataset: str) -> int:
    """The label of class name `cls` in the dataset's class names (a DataError if unknown)."""
    import difflib
    if not names:
        raise DataError(f"dataset {dataset!r} has no class names; select classes by their integer labels "
                        "(e.g. 0,1,2)")
    if cls not in names:
        close = difflib.get_close_matches(cls, names, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise DataError(f"dataset {dataset!r} has no class {cls!r}; {hint}its classes: {', '.join(names)}")
    return list(names).index(cls)


def subset(split, n: int | None, seed: int = 0):
    """`n` images of `split` chosen at random with `seed`, kept in their order (a test split
    may be sorted by label, so its first images are not a fair sample); all if n is None or
    at least len(split)."""
    if n is None or n >= len(split):
        return split
    g = torch.Generator().manual_seed(seed)
    return split[torch.randperm(len(split), generator=g)[:n].sort().values]


def hold_out(ds: Dataset, n: int) -> tuple[Dataset, Split]:
    """(`ds` without `n` of its training images, those `n` images): a validation split for
    model selection, a fixed random choice (the same for every training seed, so that runs
    are compared on the same images), kept in order. Under dynamic binarization the held-out
    images are binarized once with a fixed seed, as the test split is."""
    if isinstance(n, bool) or not isinstance(n, int) or not 0 < n < len(ds.train):
        raise ValueError(f"validation must be a number of training images between 1 and {len(ds.train) - 1} "
                         f"(dataset {ds.name!r} has {len(ds.train)}), got {n!r}")
    order = torch.randperm(len(ds.train), generator=torch.Generator().manual_seed(VALIDATION_SEED))
    val, rest = ds.train[order[:n].sort().values], ds.train[order[n:].sort().values]
    if ds.binarize == "dynamic":
        val = Split(transforms.binarize(val.x, torch.Generator().manual_seed(VALIDATION_SEED)), val.y)
    return dataclasses.replace(ds, train=rest), val


def keep_classes(split: Split, classes, exclude: bool = False) -> Split:
    """The images of `split` whose label is (not, with `exclude`) in `classes`."""
    if split.y is None:
        raise DataError("this split has no labels to select classes by")
    keep = torch.isin(split.y, torch.as_tensor(list(classes)))
    return split[~keep if exclude else keep]


def load(name: str = "digits", binarize: str = "none", data_dir=None, download: bool = True,
         limit: int | None = None, *, classes=None, image_size: int | None = None,
         channels: int | None = None, test_fraction: float = 0.1, seed: int = 0,
         progress: bool = True) -> Dataset:
    """Load dataset `name` (see `describe()`), optionally from local files in `data_dir`.

    `classes` keeps only the images with these labels, in both splits (e.g. train on the
    digits 0-8 and score the held-out 9s as anomalies); labels keep their values. Where the
    dataset names its classes (cifar10, fashion-mnist, a labelled folder), names work too
    (`classes=["cat", "dog"]`); the names are in `Dataset.info["classes"]`.
    `limit` then keeps `limit` images of each split, a fixed random choice kept in order (for
    quick experiments; a split sorted by label keeps every label). For
    "folder:PATH": `image_size` (default 64) and `channels` (1 or 3, default 3) set the
    image shape, and `test_fraction` of the images (seeded by `seed`) form the test split."""
    if binarize not in BINARIZE:
        raise ValueError(f"binarize must be one of {BINARIZE}, got {binarize!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive number of images (or None for all), got {limit!r}")
    arrays = load_arrays(name, data_dir=data_dir, download=download, image_size=image_size,
                         channels=channels, test_fraction=test_fraction, seed=seed,
                         progress=progress)
    splits = {}
    for part in ("train", "test"):
        x, y = arrays[part]
        split = Split(torch.as_tensor(x), None if y is None else torch.as_tensor(y).long())
        if classes is not None:
            split = _classes(split, classes, name, part, arrays.get("info", {}).get("classes"))
        split = subset(split, limit)
        if not len(split) and not (part == "test" and test_fraction == 0):  # no test split asked for
            raise DataError(f"dataset {name!r}: its {part} split has no images"
                            + (" of the chosen classes" if classes is not None else "")
                            + "; use more images (a folder needs at least 2: one to train, one to test)")
        x, y = split.x, split.y
        splits[part] = Split(x.float().div_(255.0) if x.dtype == torch.uint8 else x.float(), y)
    ds = Dataset(name, splits["train"], splits["test"], binarize, arrays.get("num_classes", 0),
                 arrays.get("info", {}))
    if binarize != "none":
        g = torch.Generator().manual_seed(EVAL_BINARIZE_SEED)
        ds.test = Split(transforms.binarize(ds.test.x, g), ds.test.y)
        if binarize == "static":
            ds.train = Split(transforms.binarize(ds.train.x, g), ds.train.y)
    return ds
