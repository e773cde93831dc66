"""Process-wide CPU defaults that `import aevb` applies, each overridable by the user.

- Threads. The OpenMP threads of one PyTorch kernel wait for each other. An idle thread
  spins for GOMP_SPINCOUNT iterations, then sleeps and must be woken for the next kernel.
  * On a free machine, waking is the cost: a training step runs ~100 kernels separated by
    a few to a few hundred microseconds of Python, and with a short spin (1,000) training
    the MLP VAE at batch 100 took 1.3x as long as with 30,000 (benchmarks/README.md). aevb
    sets GOMP_SPINCOUNT=30000 (libgomp's own default is 300,000); it acts only if set
    before torch is first imported, and a value the user set for OMP_WAIT_POLICY or
    GOMP_SPINCOUNT wins.
  * When another process keeps a CPU busy, spinning is the cost: a thread that shares its
    CPU makes every kernel wait for the scheduler, 10-100x slower (pytorch #3146, #80777).
    So aevb's loops (training, evaluation) call `adapt_threads()`, which looks at the load
    of the machine every half second and uses as many threads as there are free CPUs (at
    least one, at most PyTorch's setting). A fixed count instead: `set_threads(n)`, the
    environment variable AEVB_THREADS=n, or the config key / flag `threads`.
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
import time

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 32 << 20  # glibc's largest allowed value (DEFAULT_MMAP_THRESHOLD_MAX on 64-bit)
TRIM_THRESHOLD = 1 << 30
SPINCOUNT = "30000"
MAX_THREADS = 1024  # more is a typo, and asking OpenMP for millions of threads never returns


def thread_default() -> None:
    """Set GOMP_SPINCOUNT (see the module docstring) unless the user set a wait policy."""
    if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
        os.environ["GOMP_SPINCOUNT"] = SPINCOUNT


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
_FIXED = False


def set_threads(threads: int | str = "auto", source: str = "threads") -> None:
    """This process's thread policy: "auto" (aevb's loops adapt the count to the load, see
    the module docstring) or a fixed count (torch.set_num_threads(n), never changed; results
    then repeat bit for bit, which they need not across different thread counts). The
    environment variable AEVB_THREADS sets the same at import."""
    global _FIXED, _GOVERNOR
    n = parse_threads(threads, source)
    if n == "auto":
        _FIXED, _GOVERNOR = False, None  # a fresh governor: the current count is the ceiling
        return
    import torch
    torch.set_num_threads(n)
    _FIXED = True


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
    """Tick the process-wide `ThreadGovernor` (created on first use) unless the thread count
    is fixed; returns the thread count it chose, None when fixed."""
    global _GOVERNOR
    if _FIXED:
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
