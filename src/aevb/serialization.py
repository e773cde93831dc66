"""Safe, atomic files: safetensors for tensors, JSON for everything else; never pickle.

A file is written to a temporary name in the same directory, flushed, fsynced and renamed
over the target, so a reader sees either the old complete file or the new complete file.
A file is read only if it is a regular file (never a FIFO or a device, which could block
forever) of a bounded size, and JSON only up to a bounded nesting depth, so that no input
makes a reader hang or recurse without end.
"""
from __future__ import annotations

import json
import os
import reprlib
import stat
import tempfile
from pathlib import Path

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch and safetensors are imported where tensors are read or written: the
    import torch   # JSON and file helpers here serve the config and the command line, which
                   # must start without torch


class CheckpointError(RuntimeError):
    """A checkpoint or model file is missing, corrupt or belongs to another model."""


def _umask() -> int:
    """The process's umask, read without setting it (os.umask can only be read by changing
    it, which other threads would see): Linux's /proc/self/status; else the usual 0o022."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


def atomic_write(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` so that a crash at any moment leaves the old file or the new one.
    The file gets the permissions a plain open() would give it (0o666 less the umask), not
    the owner-only mode of the temporary file it starts as."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def write_json(path, obj) -> None:
    atomic_write(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


#: the deepest nesting of lists / dicts accepted in a JSON or YAML document aevb reads
MAX_DEPTH = 32
#: the largest JSON or YAML document aevb reads (a config, a run's config.json, metrics.jsonl)
MAX_TEXT_BYTES = 64 << 20

_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxstring, _SHORT.maxother, _SHORT.maxlist, _SHORT.maxdict = 2, 60, 60, 6, 6


def short(value) -> str:
    """repr(value) cut to a few dozen characters and two levels of nesting: safe to put any
    user value (huge, deeply nested, self-referencing) into a one-line error message."""
    try:
        return _SHORT.repr(value)
    except Exception:  # a value whose repr fails
        return f"<{type(value).__name__}>"


def not_regular(path) -> str | None:
    """Why `path` cannot be read as a file (missing, a directory, a FIFO, a socket or a
    device), or None when it is a regular file (symbolic links followed). Checked before a
    file is opened: opening a FIFO waits for a writer, reading a device may never end."""
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return "file not found"
    except (OSError, ValueError) as e:  # no permission, a name too long, a NUL byte
        return f"cannot read it ({getattr(e, 'strerror', None) or e})"
    if stat.S_ISDIR(mode):
        return "cannot read it: a directory, not a file"
    if not stat.S_ISREG(mode):
        return "cannot read it: not a regular file (a FIFO, socket or device); aevb reads plain files only"
    return None


def read_file(path, error: type[Exception] = CheckpointError, limit: int | None = None) -> bytes:
    """The bytes of regular file `path`, at most `limit` of them; anything else (see
    `not_regular`, or a larger file) raises `error` with a one-line message naming the file."""
    why = not_regular(path)
    if why:
        raise error(f"{path}: {why}")
    try:  # O_NONBLOCK: should a FIFO have replaced the file since, opening it does not wait
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise error(f"{path}: cannot read it ({e.strerror})") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise error(f"{path}: cannot read it: not a regular file")
        if limit is not None and st.st_size > limit:
            raise error(f"{path}: {st.st_size / 2**20:.1f} MiB is too large for this file "
                        f"(at most {limit / 2**20:.0f} MiB); is it the right file?")
        try:
            return f.read()
        except OSError as e:
            raise error(f"{path}: cannot read it ({e.strerror})") from None


def too_deep(obj, limit: int = MAX_DEPTH) -> bool:
    """Whether lists / dicts nest more than `limit` levels in `obj` (counted without
    recursion, so any depth is safe to check)."""
    stack, seen = [(obj, 1)], set()
    while stack:
        o, depth = stack.pop()
        if isinstance(o, (list, tuple, dict)):
            if depth > limit:
                return True
            if id(o) in seen:  # shared (a YAML alias): looked at once, so the work stays bounded
                continue
            seen.add(id(o))
            items = list(o.keys()) + list(o.values()) if isinstance(o, dict) else o
            stack.extend((v, depth + 1) for v in items)
    return False


def parse_json(text, where, error: type[Exception] = CheckpointError, kind=dict):
    """JSON `text` (str or bytes) parsed, checked to be a `kind` (dict, list or None for
    any) nested at most MAX_DEPTH levels; else `error` naming `where`."""
    try:
        obj = json.loads(text)
    except RecursionError:
        raise error(f"{where}: not valid JSON (nested too deeply)") from None
    except (ValueError, UnicodeDecodeError, TypeError) as e:  # JSONDecodeError is a ValueError
        raise error(f"{where}: not valid JSON ({' '.join(str(e).split())[:200]})") from None
    if kind is not None and not isinstance(obj, kind):
        raise error(f"{where}: expected a JSON {'object' if kind is dict else kind.__name__}, "
                    f"got {type(obj).__name__}")
    if too_deep(obj):
        raise error(f"{where}: JSON nested more than {MAX_DEPTH} levels; not a file aevb wrote")
    return obj


def read_json(path, error: type[Exception] = CheckpointError, kind=dict):
    """The JSON object of file `path` (see `read_file` and `parse_json`)."""
    return parse_json(read_file(path, error, MAX_TEXT_BYTES), path, error, kind)


def save_tensors(path, tensors: dict[str, "torch.Tensor"], metadata: dict | None = None) -> None:
    """Atomically write tensors (made contiguous, un-shared) and a JSON-able metadata dict."""
    from safetensors.torch import save as st_save
    tensors = {k: v.detach().clone().contiguous() for k, v in tensors.items()}
    meta = {"json": json.dumps(metadata or {})}
    atomic_write(path, st_save(tensors, metadata=meta))


# The first bytes of files that unpickling would read: torch.save's zip archive, and the
# protocol-2+ pickle opcode PROTO. Used only to word the error message once a file has
# already failed to parse as safetensors; nothing here ever unpickles.
_PICKLE_MAGIC = (b"PK\x03\x04", b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")


def load_tensors(path) -> tuple[dict[str, "torch.Tensor"], dict]:
    """Read a safetensors file written by `save_tensors`: (tensors, metadata dict).

    Any other content (truncated, corrupt, random bytes, a pickle or torch.save file) is
    refused with a one-line `CheckpointError` naming the file. Nothing is ever unpickled:
    safetensors is raw tensor bytes plus a JSON header, so loading cannot run code."""
    from safetensors import SafetensorError
    from safetensors.torch import load as st_load
    path = Path(path)
    why = not_regular(path)
    if why:
        raise CheckpointError(f"{path}: {'checkpoint not found' if why == 'file not found' else why}")
    raw = read_file(path)
    try:
        tensors = st_load(raw)
        n = int.from_bytes(raw[:8], "little")  # safetensors layout: u64 header size, JSON header
        header = json.loads(raw[8:8 + n])
        meta = json.loads((header.get("__metadata__") or {}).get("json", "{}"))
    except (SafetensorError, json.JSONDecodeError, UnicodeDecodeError, ValueError,
            AttributeError, TypeError, RecursionError) as e:
        if raw.startswith(_PICKLE_MAGIC):
            raise CheckpointError(
                f"{path}: this is a pickle / torch.save file, not safetensors; aevb never "
                "unpickles files (unpickling can run arbitrary code)") from None
        what = " ".join(str(e).split()) or type(e).__name__
        raise CheckpointError(f"{path}: not a valid safetensors checkpoint ({what}); "
                              "aevb never loads pickled (.pt/.ckpt) files") from None
    if not isinstance(meta, dict) or too_deep(meta):
        raise CheckpointError(f"{path}: damaged checkpoint (its metadata is not a JSON object "
                              f"nested at most {MAX_DEPTH} levels)")
    return tensors, meta
