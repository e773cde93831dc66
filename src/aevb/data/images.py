"""Images from one file, for scoring or imputing images that are not a registered dataset:
an NPZ (arrays x_<split>, x or images, with labels y_<split>, y or labels) or an IDX file
such as t10k-images-idx3-ubyte.gz (labels from its -labels-idx1- sibling when present)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .readers import DataError, images_and_labels, read_idx, read_npz


def is_image_file(spec: str) -> bool:
    """Whether `spec` names an image file (rather than a registered dataset)."""
    path = Path(spec)
    return path.suffix in (".npz", ".gz", ".idx") or "-ubyte" in path.name or path.is_file()


def read_image_file(path, split: str = "test") -> tuple[Tensor, Tensor | None]:
    """(images (N, C, H, W) float in [0, 1], labels (N,) int64 or None) of an image file."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file, and not a registered dataset name")
    if path.suffix == ".npz":
        arrays = read_npz(path, keys=())
        for xk, yk in ((f"x_{split}", f"y_{split}"), ("x", "y"), ("images", "labels")):
            if xk in arrays:
                x, y = arrays[xk], arrays.get(yk)
                break
        else:
            raise DataError(f"{path}: expected an array x_{split}, x or images; found {sorted(arrays)}")
    else:
        x = read_idx(path)
        lab = path.with_name(path.name.replace("images-idx3", "labels-idx1"))
        y = read_idx(lab) if lab != path and lab.exists() else None
    x, y = images_and_labels(np.asarray(x), None if y is None else np.asarray(y), str(path), str(path))
    xt = torch.as_tensor(x)
    xt = xt.float().div_(255.0) if xt.dtype == torch.uint8 else xt.float()
    if xt.min() < 0 or xt.max() > 1:
        raise DataError(f"{path}: pixel values must be in [0, 1] (or uint8 0..255), found "
                        f"{xt.min().item():.3g}..{xt.max().item():.3g}")
    return xt, None if y is None else torch.as_tensor(y).long()
