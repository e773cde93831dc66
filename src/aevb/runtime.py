"""Process-wide CPU defaults that `import aevb` applies, each overridable by the user.

- Threads: idle OpenMP threads of PyTorch's libgomp spin for ~300,000 iterations before
  sleeping; when another process is busy on a small machine this makes every small kernel
  many times slower (pytorch #3146, #80777), and OMP_WAIT_POLICY=ACTIVE is worse still.
  Fully passive threads (OMP_WAIT_POLICY=PASSIVE) are robust but pay a wake-up on every
  kernel. A short spin (GOMP_SPINCOUNT=1000) is the best of both in our measurements. It
  only takes effect if set before torch is first imported; a value the user set for
  OMP_WAIT_POLICY or GOMP_SPINCOUNT wins.
- Memory: glibc's malloc gives freed memory above its (dynamic) thresholds back to the
  kernel, so the activations and gradients of every training step can be fresh pages that
  fault in again: in a plain loop around the MLP VAE at batch 100, ~2,000 page faults and
  9.2 instead of 5.3 ms per step. Raising the mmap and trim thresholds (the mallopt(3)
  equivalent of MALLOC_MMAP_THRESHOLD_ and MALLOC_TRIM_THRESHOLD_) keeps those pages in the
  process. (aevb.train gains nothing: its per-epoch evaluation already raises glibc's
  dynamic threshold.) Skipped when the user set either variable, when AEVB_MALLOC=0, or
  where the C library is not glibc.

The measurements are in benchmarks/README.md ("Threads", "What we tried").
"""
from __future__ import annotations

import ctypes
import os

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 32 << 20  # glibc's largest allowed value (DEFAULT_MMAP_THRESHOLD_MAX on 64-bit)
TRIM_THRESHOLD = 1 << 30


def thread_default() -> None:
    if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
        os.environ["GOMP_SPINCOUNT"] = "1000"


def malloc_default() -> bool:
    """Raise glibc's mmap / trim thresholds (see the module docstring); True if applied."""
    if (os.environ.get("AEVB_MALLOC", "1") == "0" or "MALLOC_MMAP_THRESHOLD_" in os.environ
            or "MALLOC_TRIM_THRESHOLD_" in os.environ):
        return False
    try:  # the process's own symbols: no library search (find_library would spawn ldconfig)
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):  # no mallopt here: macOS, Windows
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
