"""Downloads into a cache directory: mirrors tried in order, checksum, resume, progress bar.

A download is written to `<file>.part` and renamed to `<file>` only once its checksum
matches, so a file under its final name is always complete. A `.part` left by an
interrupted download is resumed with an HTTP Range request where the server honours it
(and restarted from zero where it does not). A lock file keeps concurrent processes (DDP
ranks) from writing the same file at once.
"""
from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import socket
import urllib.error
import urllib.request
from pathlib import Path

from tqdm.auto import tqdm

from .readers import DataError

try:  # POSIX only; elsewhere concurrent downloads of one file are not guarded
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

CHUNK = 1 << 16
USER_AGENT = "aevb (https://pypi.org/project/aevb)"


def cache_dir() -> Path:
    """Where datasets are cached: $AEVB_DATA, else ~/.cache/aevb."""
    return Path(os.environ.get("AEVB_DATA") or Path.home() / ".cache" / "aevb")


def parse_checksum(checksum: str) -> tuple[str, str]:
    """'md5:HEX', 'sha256:HEX', or bare HEX (32 digits: md5, 64: sha256) -> (algorithm, hex)."""
    algo, _, digest = checksum.rpartition(":")
    algo = algo.lower() or {32: "md5", 64: "sha256"}.get(len(digest), "")
    if algo not in ("md5", "sha256"):
        raise ValueError(f"checksum must be 'md5:HEX', 'sha256:HEX' or a bare md5/sha256, got {checksum!r}")
    return algo, digest.lower()


def file_hash(path, algorithm: str = "md5") -> str:
    """Hex digest of a file, read in chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def md5sum(path) -> str:
    return file_hash(path, "md5")


def verify(path, checksum: str) -> bool:
    """Whether the file at `path` has the given checksum."""
    algo, digest = parse_checksum(checksum)
    return file_hash(path, algo) == digest


@contextlib.contextmanager
def _locked(lock: Path):
    if fcntl is None:  # pragma: no cover
        yield
        return
    with open(lock, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _reason(e: BaseException) -> str:
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code} {e.reason}"
    if isinstance(e, urllib.error.URLError):
        e = e.reason if isinstance(e.reason, BaseException) else e
    if isinstance(e, (socket.timeout, TimeoutError)):
        return "timed out"
    return str(e) or type(e).__name__


def _download(url: str, part: Path, timeout: float, progress: bool) -> int:
    """Fetch `url` into `part`, resuming from the bytes already there when the server
    answers a Range request with 206; returns the byte offset the transfer started at."""
    have = _size(part)
    headers = {"User-Agent": USER_AGENT}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # the part is not a prefix the server knows: start over
            part.unlink()
            return _download(url, part, timeout, progress)
        raise
    with resp:
        resumed = have and resp.status == 206 and \
            resp.headers.get("Content-Range", "").startswith(f"bytes {have}-")
        if not resumed:
            have = 0
        length = resp.headers.get("Content-Length")
        total = have + int(length) if length and length.isdigit() else None
        with open(part, "ab" if resumed else "wb") as f, \
                tqdm(total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
                     desc=part.name[:-5], disable=not progress, leave=False) as bar:
            while chunk := resp.read(CHUNK):
                f.write(chunk)
                bar.update(len(chunk))
    got = _size(part)
    if total is not None and got < total:  # http.client returns b"" on a cut connection
        raise ConnectionError(f"connection closed after {got} of {total} bytes")
    return have


def fetch(urls: list[str], filename: str, checksum: str, directory, *, timeout: float = 30.0,
          retries: int = 3, progress: bool = True) -> Path:
    """Return `directory/filename`, verified against `checksum` ('md5:…', 'sha256:…' or bare
    hex), downloading it from the first of `urls` that works if it is not there yet.

    A transfer cut after some progress is resumed up to `retries` times per URL. Raises
    DataError naming the file, every URL tried with its failure, and where to put the file
    by hand on a machine without internet."""
    algo, digest = parse_checksum(checksum)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    dest, part = directory / filename, directory / (filename + ".part")
    with _locked(directory / (filename + ".lock")):
        if dest.exists():
            if file_hash(dest, algo) == digest:
                return dest
            dest.unlink()  # a corrupt file under the final name: fetch it again
        if part.exists() and file_hash(part, algo) == digest:  # finished, then interrupted
            os.replace(part, dest)
            return dest
        errors = []
        for url in urls:
            for attempt in range(1, retries + 1):
                before = _size(part)
                try:
                    start = _download(url, part, timeout, progress)
                except (OSError, http.client.HTTPException, ValueError) as e:
                    if _size(part) > before and attempt < retries:
                        continue  # some bytes arrived: resume from them
                    errors.append(f"{url} ({_reason(e)})")
                    break
                got = file_hash(part, algo)
                if got == digest:
                    os.replace(part, dest)
                    return dest
                part.unlink()
                if start and attempt < retries:
                    continue  # the resumed prefix may have been stale: once more from zero
                errors.append(f"{url} (checksum mismatch: {algo} {got}, expected {digest})")
                break
        tried = "; ".join(errors) if errors else "no download address is known"
        raise DataError(f"could not download {filename}: tried {tried}. If this machine is "
                        f"offline, get the file elsewhere and put it at {dest} ({algo} {digest}), "
                        f"or pass --data-dir DIR holding it")
