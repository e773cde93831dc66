"""Safe, atomic files: safetensors for tensors, JSON for everything else; never pickle.

A file is written to a temporary name in the same directory, flushed, fsynced and renamed
over the target, so a reader sees either the old complete file or the new complete file.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save


class CheckpointError(RuntimeError):
    """A checkpoint or model file is missing, corrupt or belongs to another model."""


def atomic_write(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` so that a crash at any moment leaves the old file or the new one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
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


def read_json(path) -> dict:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from None


def save_tensors(path, tensors: dict[str, torch.Tensor], metadata: dict | None = None) -> None:
    """Atomically write tensors (made contiguous, un-shared) and a JSON-able metadata dict."""
    tensors = {k: v.detach().clone().contiguous() for k, v in tensors.items()}
    meta = {"json": json.dumps(metadata or {})}
    atomic_write(path, st_save(tensors, metadata=meta))


# The first bytes of files that unpickling would read: torch.save's zip archive, and the
# protocol-2+ pickle opcode PROTO. Used only to word the error message once a file has
# already failed to parse as safetensors; nothing here ever unpickles.
_PICKLE_MAGIC = (b"PK\x03\x04", b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")


def load_tensors(path) -> tuple[dict[str, torch.Tensor], dict]:
    """Read a safetensors file written by `save_tensors`: (tensors, metadata dict).

    Any other content (truncated, corrupt, random bytes, a pickle or torch.save file) is
    refused with a one-line `CheckpointError` naming the file. Nothing is ever unpickled:
    safetensors is raw tensor bytes plus a JSON header, so loading cannot run code."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{path}: checkpoint not found") from None
    except IsADirectoryError:
        raise CheckpointError(f"{path}: is a directory, not a checkpoint file") from None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read the checkpoint ({e.strerror})") from None
    try:
        tensors = st_load(raw)
        n = int.from_bytes(raw[:8], "little")  # safetensors layout: u64 header size, JSON header
        header = json.loads(raw[8:8 + n])
        meta = json.loads((header.get("__metadata__") or {}).get("json", "{}"))
    except (SafetensorError, json.JSONDecodeError, UnicodeDecodeError, ValueError,
            AttributeError, TypeError) as e:
        if raw.startswith(_PICKLE_MAGIC):
            raise CheckpointError(
                f"{path}: this is a pickle / torch.save file, not safetensors; aevb never "
                "unpickles files (unpickling can run arbitrary code)") from None
        what = " ".join(str(e).split()) or type(e).__name__
        raise CheckpointError(f"{path}: not a valid safetensors checkpoint ({what}); "
                              "aevb never loads pickled (.pt/.ckpt) files") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: damaged checkpoint (its metadata is not a JSON object)")
    return tensors, meta
