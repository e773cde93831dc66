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


def load_tensors(path) -> tuple[dict[str, torch.Tensor], dict]:
    """Read a safetensors file written by `save_tensors`; any other content is refused with a
    `CheckpointError` naming the file (safetensors never executes code, unlike pickle)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{path}: checkpoint not found") from None
    try:
        tensors = st_load(raw)
        n = int.from_bytes(raw[:8], "little")  # safetensors layout: u64 header size, JSON header
        meta = json.loads(raw[8:8 + n]).get("__metadata__") or {}
        return tensors, json.loads(meta.get("json", "{}"))
    except (SafetensorError, json.JSONDecodeError, UnicodeDecodeError, ValueError) as e:
        raise CheckpointError(f"{path}: not a valid safetensors checkpoint ({e}); "
                              "aevb never loads pickled (.pt/.ckpt) files") from None
