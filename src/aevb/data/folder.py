"""Image-folder datasets (`folder:PATH`): a tree of image files read with Pillow.

PATH/<class>/<images...> gives labels (classes in sorted order); a flat PATH/<images...>
gives none; a folder of exactly train/ and test/ (each such a tree) gives the two splits.
Each image is center-cropped to a square and resized (Pillow's ImageOps.fit),
converted to grayscale or RGB, and the whole set is cached as one uint8 .npz in the cache
dir, keyed by a hash of the path, the file list with sizes and mtimes, the size and the
channels: a second load reads one file instead of decoding every image again.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

import numpy as np

from .download import cache_dir
from .readers import DataError, DataWarning

CACHE_VERSION = 2  # 2: 16-bit and float images scaled, not clipped


def _listing(root: Path) -> tuple[list[Path], list[str] | None]:
    """The candidate files under `root` and the class names (None for a flat folder).

    Hidden files and folders (".DS_Store", ".git") are ignored, and so is anything that is not
    a regular file (a FIFO or a device would block or never end when read)."""
    if not root.is_dir():
        raise DataError(f"{root}: not a folder (folder:PATH needs a folder of images)")
    entries = sorted(p for p in root.iterdir() if not p.name.startswith("."))
    classes = [p.name for p in entries if p.is_dir()]
    if not classes:
        return [p for p in entries if p.is_file()], None
    loose = [p.name for p in entries if p.is_file()]
    if loose:
        warnings.warn(f"{root}: has class subfolders, so the files at its top level are ignored: "
                      f"{', '.join(loose[:5])}{' ...' if len(loose) > 5 else ''}", DataWarning, stacklevel=4)
    files = []
    for c in classes:
        for dirpath, dirnames, filenames in os.walk(root / c):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            files += [Path(dirpath) / f for f in sorted(filenames)
                      if not f.startswith(".") and (Path(dirpath) / f).is_file()]
    return files, classes


def _key(root: Path, files: list[Path], image_size: int, channels: int) -> str:
    h = hashlib.sha256(json.dumps([CACHE_VERSION, str(root), image_size, channels]).encode())
    for p in files:
        st = p.stat()
        h.update(f"\0{p.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return h.hexdigest()[:32]


def _decode(files: list[Path], image_size: int, channels: int,
            progress: bool = True) -> tuple[np.ndarray, list[int], list[str]]:
    from PIL import Image, ImageOps
    from tqdm.auto import tqdm

    mode = {1: "L", 3: "RGB"}[channels]
    out, kept, bad = [], [], []
    for i, p in enumerate(tqdm(files, desc="reading images", unit="img", leave=False,
                               disable=not progress or len(files) < 1000)):
        try:
            with Image.open(p) as im:
                im = ImageOps.fit(_eight_bit(im).convert(mode), (image_size, image_size),
                                  method=Image.Resampling.BICUBIC)
        except Exception as e:  # not an image, truncated, unsupported: Pillow raises many kinds
            bad.append(f"{p} ({type(e).__name__})")
            continue
        a = np.asarray(im, dtype=np.uint8)
        out.append(a[None] if channels == 1 else a.transpose(2, 0, 1))
        kept.append(i)
    x = np.stack(out) if out else np.zeros((0, channels, image_size, image_size), np.uint8)
    return x, kept, bad


def _eight_bit(im):
    """An image of 16-bit or float pixels as 8-bit grayscale, scaled (Pillow's convert would
    clip 16-bit values above 255 to white): 16-bit by 255/65535, "I" (32-bit) as 16-bit when
    its values exceed 255, "F" (float) from [0, 1] when its values are at most 1."""
    if im.mode not in ("I", "F") and not im.mode.startswith("I;16"):
        return im
    from PIL import Image
    a = np.asarray(im, dtype=np.float64)
    top = a.max(initial=0.0) if np.isfinite(a).all() else 0.0
    scale = {True: 255 / 65535, False: 1.0}[im.mode.startswith("I;16") or (im.mode == "I" and top > 255)]
    if im.mode == "F" and 0 < top <= 1:
        scale = 255.0
    a = np.nan_to_num(a * scale, nan=0.0).clip(0, 255).round()
    return Image.fromarray(a.astype(np.uint8))  # 2-D uint8: mode "L"


def read_folder(path, image_size: int = 64, channels: int = 3, cache: bool = True,
                progress: bool = True) -> dict:
    """All images under `path` as {"x": uint8 (N, C, S, S), "y": int64 (N,) or None,
    "classes": [...]}; files Pillow cannot read are skipped with a warning naming them."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels!r}")
    if not isinstance(image_size, int) or not 1 <= image_size <= 4096:
        raise ValueError(f"image_size must be a positive int (28, 32, 64, 128, ...), got {image_size!r}")
    root = Path(path).expanduser().resolve()
    files, classes = _listing(root)
    key = _key(root, files, image_size, channels)
    cached = cache_dir() / "folders" / f"{key}.npz"
    if cache and cached.exists():
        try:
            with np.load(cached, allow_pickle=False) as f:
                got = {k: f[k] for k in f.files}
            skipped = got["skipped"].tolist()
            if skipped:
                warnings.warn(f"{root}: skipped {len(skipped)} files that are not readable images: "
                              f"{', '.join(skipped)}", DataWarning, stacklevel=3)
            return {"x": got["x"], "y": got["y"] if classes is not None else None,
                    "classes": got["classes"].tolist() if classes is not None else None,
                    "cache": cached}
        except Exception:  # a damaged cache file: rebuild it below
            pass
    x, kept, bad = _decode(files, image_size, channels, progress)
    if bad:
        warnings.warn(f"{root}: skipped {len(bad)} files that are not readable images: "
                      f"{', '.join(bad)}", DataWarning, stacklevel=3)
    if not len(x):
        raise DataError(f"{root}: no readable images among {len(files)} files")
    y = None
    if classes is not None:
        index = {c: i for i, c in enumerate(classes)}
        y = np.array([index[files[i].relative_to(root).parts[0]] for i in kept], np.int64)
    if cache:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_name(f"{cached.stem}.{os.getpid()}.tmp.npz")
        np.savez(tmp, x=x, y=y if y is not None else np.zeros(0, np.int64),
                 classes=np.array(classes or [], dtype=str), skipped=np.array(bad, dtype=str))
        os.replace(tmp, cached)  # atomic: never a half-written cache file
    return {"x": x, "y": y, "classes": classes, "cache": cached if cache else None}


def split(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, test) of a fixed random split; at least one of each when n >= 2."""
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    order = np.random.default_rng(seed).permutation(n)
    n_test = min(max(round(n * test_fraction), 1 if test_fraction > 0 and n >= 2 else 0), n - 1)
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def has_splits(path) -> bool:
    """Whether the visible subfolders of `path` are exactly train and test (the two splits
    of a dataset, as ../shared/data/cifar10-jpg; loose files such as a README are ignored)."""
    root = Path(path).expanduser()
    if not root.is_dir():
        return False
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) == ["test", "train"]


def load_folder(path, image_size: int = 64, channels: int = 3, test_fraction: float = 0.1,
                seed: int = 0, cache: bool = True, progress: bool = True) -> dict:
    """Arrays in the form of `registry.load_arrays` for an image folder. A folder of exactly
    train/ and test/ gives those as the splits (`test_fraction` unused; both must name the
    same classes); any other folder is split at random by `test_fraction` and `seed`."""
    root = Path(path).expanduser().resolve()
    info = {"root": str(root), "image_size": image_size, "channels": channels}
    if has_splits(root):
        tr, te = (read_folder(root / s, image_size, channels, cache, progress) for s in ("train", "test"))
        if tr["classes"] != te["classes"]:
            raise DataError(f"{root}: train/ and test/ name different classes "
                            f"({tr['classes']} vs {te['classes']}); give them the same subfolders")
        return {"train": (tr["x"], tr["y"]), "test": (te["x"], te["y"]),
                "num_classes": len(tr["classes"]) if tr["classes"] else 0,
                "info": info | {"classes": tr["classes"], "splits": "train/, test/"}}
    d = read_folder(path, image_size, channels, cache, progress)
    tr, te = split(len(d["x"]), test_fraction, seed)
    y = d["y"]
    return {"train": (d["x"][tr], None if y is None else y[tr]),
            "test": (d["x"][te], None if y is None else y[te]),
            "num_classes": len(d["classes"]) if d["classes"] else 0,
            "info": info | {"classes": d["classes"], "test_fraction": test_fraction, "seed": seed}}
