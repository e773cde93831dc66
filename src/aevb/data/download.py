"""Downloads into a cache directory, verified by checksum."""
from __future__ import annotations

import hashlib
import os
import urllib.request
from pathlib import Path

from .readers import DataError


def cache_dir() -> Path:
    """Where datasets are cached: $AEVB_DATA, else ~/.cache/aevb."""
    return Path(os.environ.get("AEVB_DATA", Path.home() / ".cache" / "aevb"))


def md5sum(path, chunk=1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def fetch(urls: list[str], filename: str, md5: str, directory: Path) -> Path:
    """Return `directory/filename`, downloading it from the first mirror that works."""
    directory.mkdir(parents=True, exist_ok=True)
    dest = directory / filename
    if dest.exists() and md5sum(dest) == md5:
        return dest
    errors = []
    for url in urls:
        tmp = dest.with_suffix(dest.suffix + ".part")
        try:
            urllib.request.urlretrieve(url, tmp)
        except OSError as e:
            errors.append(f"{url}: {e}")
            continue
        if md5sum(tmp) != md5:
            tmp.unlink(missing_ok=True)
            errors.append(f"{url}: checksum mismatch")
            continue
        os.replace(tmp, dest)
        return dest
    raise DataError(f"could not download {filename}: " + "; ".join(errors))
