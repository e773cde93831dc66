"""CPU speed settings for aevb's own work, applied where aevb does that work and never on
import: `import aevb` changes nothing in the process.

- Threads (`tuned`, used by `aevb.train`, `aevb.evaluation` and the `aevb` command for their
  duration, restored afterwards). The OpenMP threads of one PyTorch kernel wait for each
  other; when another process keeps a CPU busy, a spinning or descheduled thread makes
  every kernel wait for the scheduler, 10-100x slower (pytorch #3146, #80777). So inside
  `tuned()` aevb's loops call `adapt_threads()`, which looks at the load of the machine
  every half second and uses as many threads as there are free CPUs (at least one, at most
  PyTorch's setting). A fixed count instead: the `threads` argument / config key, or the
  environment variable AEVB_THREADS=n.
- Denormal numbers (`flush_denormals`, inside `tuned`). Adam's first moment of a weight
  that stops getting gradient (a dead ReLU unit, a rarely active one) decays by 0.9 per
  step through the float32 denormal range (below 1.2e-38), where an Intel CPU takes a
  microcode assist of ~100 cycles per operation: in aevb.train on the MLP VAE the fused
  Adam update went from 1.0 to 9.2 ms per step after ~8 epochs (1 thread) and the step from
  6 to 10 ms (2 threads; benchmarks/README.md). So inside `tuned()` every thread of
  PyTorch's OpenMP pool flushes denormals to zero (FTZ/DAZ, as TensorFlow does on CPU and
  GPUs do by default): `torch.set_flush_denormal` sets it on the calling thread only, so
  aevb runs it once on every pool thread through the OpenMP runtime's GOMP_parallel (libgomp,
  or LLVM / Intel OpenMP, which export it too); threads the runtime creates later inherit
  it from the main thread. Values below 1.2e-38 become 0, nothing else changes. Restored on
  exit, unless the process already flushed.
- Spin count (`spin_default`, applied by the `aevb` command before it imports torch). An
  idle OpenMP thread spins for GOMP_SPINCOUNT iterations, then sleeps and must be woken
  for the next kernel; a training step runs ~100 kernels separated by a few to a few
  hundred microseconds of Python, and with a short spin (1,000) training the MLP VAE at
  batch 100 took 1.3x as long as with 30,000 (benchmarks/README.md). The `aevb` command sets
  GOMP_SPINCOUNT=30000 (libgomp's default is 300,000). libgomp reads it once, when torch
  is first imported, so only a process that has not imported torch yet can set it: the
  command does (`aevb/__main__.py`); a Python program that wants it sets the variable
  itself before importing torch. A value the user set for OMP_WAIT_POLICY or
  GOMP_SPINCOUNT wins.
- Memory (`malloc_default`, applied by the `aevb` command at start; it cannot be undone,
  so nothing else applies it): glibc's malloc gives freed memory above its (dynamic)
  thresholds back to the kernel, so the activations and gradients of every training step
  can be fresh pages that fault in again: in a plain loop around the MLP VAE at batch 100,
  ~2,000 page faults and 9.2 instead of 5.3 ms per step. Raising the mmap and trim
  thresholds (the mallopt(3) equivalent of MALLOC_MMAP_THRESHOLD_ and
  MALLOC_TRIM_THRESHOLD_) keeps those pages in the process. (aevb.train gains nothing: its
  per-epoch evaluation already raises glibc's dynamic threshold.) Skipped when the user set
  either variable, when AEVB_MALLOC=0, or where the C library is not glibc.

Opting out: AEVB_NO_TUNING=1 (or `tuning=False` for `aevb.train`) leaves the thread count,
the spin count and malloc as they are (an explicit `threads` still applies). The
measurements are in benchmarks/README.md ("Threads", "What we tried").
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import time

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 32 << 20  # glibc's largest allowed value (DEFAULT_MMAP_THRESHOLD_MAX on 64-bit)
TRIM_THRESHOLD = 1 << 30
SPINCOUNT = "30000"
#: set by the `aevb` command when a Ctrl-C arrives. CPython ignores an exception raised in a
#: weakref callback (one of importlib's runs while torch loads), so a Ctrl-C's
#: KeyboardInterrupt can be lost; training then stops at once, with a checkpoint, when it sees
#: this (`aevb.training`).
interrupted = False
MAX_THREADS = 1024  # more is a typo, and asking OpenMP for millions of threads never returns


def opted_out() -> bool:
    """Whether the user turned aevb's speed settings off (AEVB_NO_TUNING=1)."""
    return os.environ.get("AEVB_NO_TUNING", "0").strip() not in ("", "0")


def spin_default() -> bool:
    """Set GOMP_SPINCOUNT (see the module docstring) unless the user set a wait policy or
    opted out; only while torch is not imported yet, since libgomp reads it when torch
    loads. True if set."""
    if ("torch" in sys.modules or opted_out() or "OMP_WAIT_POLICY" in os.environ
            or "GOMP_SPINCOUNT" in os.environ):
        return False
    os.environ["GOMP_SPINCOUNT"] = SPINCOUNT
    return True


def prepare_process() -> dict:
    """What the `aevb` command applies first, to a process that is all aevb's: the spin
    count (before torch is imported) and the malloc thresholds. Returns what it applied."""
    return {"spincount": spin_default(), "malloc": not opted_out() and malloc_default()}


def cpu_times() -> tuple[float, float, float] | None:
    """(monotonic seconds, CPU-seconds that the whole machine spent busy, CPU-seconds of this
    process) now, from /proc/stat; None where there is no /proc/stat (not Linux)."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(v) for v in f.readline().split()[1:8]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq = (ticks + [0] * 7)[:7]
    busy = (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")
    return time.monotonic(), busy, time.process_time()


class ThreadGovernor:
    """Sets PyTorch's intra-op thread count to the CPUs that other processes leave free.

    Each call at least `interval` seconds after the last one measures, since that last
    one, how many CPUs other processes kept busy: others = (busy CPU-seconds of the machine
    - this process's CPU-seconds) / seconds; then uses round(cpus - others) threads,
    between 1 and `most` (PyTorch's thread count when first called, or the user's own
    torch.set_num_threads since). Cheap enough to call every step."""

    def __init__(self, interval: float = 0.5, read=cpu_times, cpus: int | None = None):
        import torch
        self.torch, self.interval, self.read = torch, interval, read
        self.cpus = cpus or os.cpu_count() or 1
        self.most = self.set = torch.get_num_threads()
        self.last = read()
        self.due = time.monotonic() + interval

    def __call__(self) -> int:
        """Look at the load if it is time; returns the thread count in use."""
        if self.last is None or time.monotonic() < self.due:
            return self.set
        now = self.read()
        self.due = time.monotonic() + self.interval
        if now is None:
            return self.set
        current = self.torch.get_num_threads()
        if current != self.set:  # the user chose a count: that is the new ceiling
            self.most = current
        seconds = now[0] - self.last[0]
        others = max(0.0, (now[1] - self.last[1]) - (now[2] - self.last[2])) / seconds
        self.last = now
        self.set = max(1, min(self.most, int(self.cpus - others + 0.5)))
        if self.set != current:
            self.torch.set_num_threads(self.set)
        return self.set


_GOVERNOR: ThreadGovernor | None = None
_POLICY: int | str | None = None  # None: aevb leaves the thread count alone (the start)


def set_threads(threads: int | str = "auto", source: str = "threads") -> None:
    """The thread policy of aevb's loops from now on: "auto" (they adapt the count to the
    load, see the module docstring) or a fixed count (torch.set_num_threads(n), never
    changed; results then repeat bit for bit, which they need not across different thread
    counts). `tuned()` sets it for the duration of aevb's own work and restores it."""
    global _POLICY, _GOVERNOR
    n = parse_threads(threads, source)
    _POLICY, _GOVERNOR = n, None  # "auto": a fresh governor, the current count is the ceiling
    if n != "auto":
        import torch
        torch.set_num_threads(n)


@contextlib.contextmanager
def tuned(threads: int | str | None = None, enabled: bool = True):
    """aevb's thread policy for the work inside the block: `threads` if given, else (unless
    an enclosing `tuned` or the user's `set_threads` chose one already) AEVB_THREADS, else
    "auto". Nothing with enabled=False or AEVB_NO_TUNING=1 (an explicit `threads` still
    applies). On exit the policy and PyTorch's thread count are restored."""
    global _POLICY, _GOVERNOR
    import torch
    saved = _POLICY, _GOVERNOR, torch.get_num_threads()
    if threads is not None:
        set_threads(threads)
    elif enabled and not opted_out() and _POLICY is None:
        set_threads(os.environ.get("AEVB_THREADS", "auto"), source="AEVB_THREADS")
    flushed = enabled and not opted_out() and not flushing_denormals() and flush_denormals(True)
    try:
        yield
    finally:
        _POLICY, _GOVERNOR = saved[0], saved[1]
        if flushed:
            flush_denormals(False)
        if torch.get_num_threads() != saved[2]:
            torch.set_num_threads(saved[2])


def flushing_denormals() -> bool:
    """Whether this thread flushes denormals: 1e-40 (a float32 denormal) times 1 reads 0."""
    import torch
    return (torch.tensor([1e-40]) * 1.0).item() == 0.0


_PARALLEL_BODY = ctypes.CFUNCTYPE(None, ctypes.c_void_p)


def openmp_parallels() -> list:
    """GOMP_parallel of every OpenMP runtime loaded in this process (libgomp; LLVM's and
    Intel's libomp / libiomp5 export it as well), from /proc/self/maps; [] elsewhere."""
    try:
        with open("/proc/self/maps") as f:
            paths = sorted({line.split()[-1] for line in f if "omp" in line.rsplit("/", 1)[-1]})
    except OSError:
        return []
    found = []
    for path in paths:
        try:
            fn = ctypes.CDLL(path).GOMP_parallel
        except (OSError, AttributeError):
            continue
        fn.argtypes, fn.restype = [_PARALLEL_BODY, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint], None
        found.append(fn)
    return found


def flush_denormals(on: bool) -> bool:
    """Turn flushing denormals to zero (FTZ and DAZ) on or off on this thread and on every
    thread of each OpenMP pool (see the module docstring); False where the CPU cannot."""
    import torch
    if not torch.set_flush_denormal(on):
        return False
    body = _PARALLEL_BODY(lambda _: torch.set_flush_denormal(on))
    team = max(torch.get_num_threads(), os.cpu_count() or 1)  # threads idle now are reached too
    for parallel in openmp_parallels():
        parallel(body, None, team, 0)
    return True


def parse_threads(threads: int | str, source: str = "threads") -> int | str:
    """"auto", or the positive thread count `threads` names; ValueError naming `source`."""
    if threads == "auto":
        return "auto"
    try:
        n = int(threads)
    except (TypeError, ValueError):
        n = 0
    if not 1 <= n <= MAX_THREADS or isinstance(threads, bool) or str(n) != str(threads).strip():
        raise ValueError(f"{source} must be 'auto' or a positive number of threads, got "
                         f"{str(threads)[:40]!r} (at most {MAX_THREADS})")
    return n


def adapt_threads() -> int | None:
    """Tick the process-wide `ThreadGovernor` (created on first use) when the policy is
    "auto"; returns the thread count it chose, None otherwise (a fixed count, or no policy:
    outside `tuned` aevb leaves threads alone)."""
    global _GOVERNOR
    if _POLICY != "auto":
        return None
    if _GOVERNOR is None:
        _GOVERNOR = ThreadGovernor()
    return _GOVERNOR()


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
