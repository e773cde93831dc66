"""Checks of every request: a bad one raises `BadRequest` (status 4xx, a one-line message)
before any model code runs.

Bodies are JSON objects of at most `MAX_BODY` bytes (a larger one is refused while it is
read, whatever its Content-Length says), with only the fields an endpoint knows. Numbers are
real numbers (not booleans, NaN or infinities: Python's json accepts NaN and Infinity, and
turns 1e999 into inf), within the endpoint's range; latent vectors have exactly latent_dim
entries.
"""
from __future__ import annotations

import json
import math

MAX_BODY = 6 << 20  # the largest image (4 MiB) as base64, and some room
MAX_LATENT = 1e3    # |z_i| beyond this is no place a decoder has seen


class BadRequest(Exception):
    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message, self.status = message, status


async def read_json(request, fields: dict) -> dict:
    """The request's JSON object; BadRequest for a body too large, not JSON, not an object,
    or holding fields other than `fields` (name -> required)."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY):
        raise BadRequest(f"request body larger than {MAX_BODY >> 20} MiB", 413)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise BadRequest(f"request body larger than {MAX_BODY >> 20} MiB", 413)
        chunks.append(chunk)
    try:
        body = json.loads(b"".join(chunks) or b"{}")
    except (ValueError, RecursionError):
        raise BadRequest("request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    unknown = sorted(set(body) - set(fields))
    if unknown:
        raise BadRequest(f"unknown field {unknown[0]!r}; expected {', '.join(fields) or 'none'}")
    missing = [k for k, required in fields.items() if required and k not in body]
    if missing:
        raise BadRequest(f"missing field {missing[0]!r}")
    return body


def number(value, name: str, lo: float, hi: float) -> float:
    """A finite real number in [lo, hi]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadRequest(f"{name} must be a number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise BadRequest(f"{name} must be finite, got {value}")
    if not lo <= value <= hi:
        raise BadRequest(f"{name} must be in [{lo:g}, {hi:g}], got {value:g}")
    return float(value)


def integer(value, name: str, lo: int, hi: int) -> int:
    """An integer in [lo, hi] (1.0 is not an integer here)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"{name} must be an integer, got {type(value).__name__}")
    if not lo <= value <= hi:
        raise BadRequest(f"{name} must be in {lo}..{hi}, got {value}")
    return value


def vector(value, name: str, length: int, bound: float = MAX_LATENT) -> list[float]:
    """A list of exactly `length` finite numbers, each within [-bound, bound]."""
    if not isinstance(value, list):
        raise BadRequest(f"{name} must be a list of {length} numbers")
    if len(value) != length:
        raise BadRequest(f"{name} must have {length} entries (the latent dimension), got {len(value)}")
    return [number(v, f"{name}[{i}]", -bound, bound) for i, v in enumerate(value)]


def label(value, num_classes: int) -> int | None:
    """The class of a conditional model (required, 0..K-1); None, and nothing else, for
    any other model."""
    if not num_classes:
        if value is not None:
            raise BadRequest("y: this model is not conditional; send no class")
        return None
    if value is None:
        raise BadRequest(f"y: this model is conditional; send a class in 0..{num_classes - 1}")
    return integer(value, "y", 0, num_classes - 1)


def flag(value, name: str) -> bool:
    if not isinstance(value, bool):
        raise BadRequest(f"{name} must be true or false")
    return value
