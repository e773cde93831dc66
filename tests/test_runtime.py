"""The speed settings of aevb.runtime: applied by the `aevb` command (spin count, malloc) and
for the duration of aevb's own work (threads, `tuned`), never on import; the user's choice
wins, and AEVB_NO_TUNING=1 turns them off."""
import contextlib
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from aevb import runtime

GLIBC = sys.platform.startswith("linux") and os.confstr("CS_GNU_LIBC_VERSION") is not None


def _fresh(code: str, **env) -> str:
    """Run `code` in a fresh interpreter (the spin count acts only before torch loads) with
    `env` added."""
    clean = {k: v for k, v in os.environ.items()
             if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "AEVB_MALLOC", "AEVB_THREADS",
                          "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")}
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env={**clean, **env},
                         capture_output=True, text=True, timeout=120, check=True)
    return out.stdout.strip()


def test_spin_default_is_set_by_the_command_unless_the_user_chose():
    show = "import aevb.runtime as r, os; r.prepare_process(); print(os.environ.get('GOMP_SPINCOUNT'))"
    assert _fresh(show) == runtime.SPINCOUNT
    assert _fresh(show, GOMP_SPINCOUNT="5") == "5"
    assert _fresh(show, OMP_WAIT_POLICY="PASSIVE") == "None"
    assert _fresh(show, AEVB_NO_TUNING="1") == "None"
    # once torch is loaded, libgomp has read its variables: setting it would do nothing
    assert _fresh("import torch\n" + show) == "None"
    # the command applies it before anything imports torch
    command = ("import aevb.__main__ as m, os, sys; m.main(['datasets'])\n"
               "print(os.environ.get('GOMP_SPINCOUNT'), 'torch' in sys.modules)")
    assert _fresh(command).splitlines()[-1] == f"{runtime.SPINCOUNT} True"


@pytest.mark.skipif(not GLIBC, reason="the malloc default is for glibc only")
def test_malloc_default_applies_unless_turned_off(monkeypatch):
    for var in ("AEVB_MALLOC", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"):
        monkeypatch.delenv(var, raising=False)
    assert runtime.malloc_default() is True
    monkeypatch.setenv("AEVB_MALLOC", "0")
    assert runtime.malloc_default() is False
    monkeypatch.delenv("AEVB_MALLOC")
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "131072")
    assert runtime.malloc_default() is False


@pytest.mark.skipif(not GLIBC, reason="the malloc default is for glibc only")
def test_freed_buffers_stay_in_the_process():
    """The point of the malloc default: a loop that, like a training step, allocates several
    buffers and frees them together faults its pages in once, not on every iteration."""
    code = """
        import aevb.runtime; aevb.runtime.malloc_default()  # as the aevb command does at start
        import resource, torch
        def step():  # 8 buffers of 1 MiB, used, then all freed
            bufs = [torch.empty(1 << 18).fill_(1) for _ in range(8)]
            del bufs
        for _ in range(3):
            step()
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(100):
            step()
        print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
    """
    assert int(_fresh(code)) < 100  # 2,048 pages per iteration would be 204,800
    # the check can fail: with glibc's initial mmap threshold (128 KiB, fixed here because
    # glibc's dynamic threshold faults on some runs and not on others) every buffer is
    # mapped and faulted in again on every iteration (and aevb leaves the user's setting)
    assert int(_fresh(code, MALLOC_MMAP_THRESHOLD_="131072")) > 100_000


@pytest.fixture
def threads():
    """Leave PyTorch's thread count and aevb's thread policy as they were."""
    before, policy = torch.get_num_threads(), (runtime._POLICY, runtime._GOVERNOR)
    yield before
    torch.set_num_threads(before)
    runtime._POLICY, runtime._GOVERNOR = policy


class Load:
    """A fake /proc/stat: each read advances time by 1 s, in which other processes keep
    `others` CPUs busy and this process uses `own` CPU-seconds."""

    def __init__(self):
        self.t = self.busy = self.mine = 0.0
        self.others, self.own = 0.0, 1.0

    def __call__(self):
        self.t += 1.0
        self.busy += self.others + self.own
        self.mine += self.own
        return self.t, self.busy, self.mine


def test_governor_gives_up_threads_to_busy_processes_and_takes_them_back(threads):
    torch.set_num_threads(4)
    load = Load()
    gov = runtime.ThreadGovernor(interval=0.0, read=load, cpus=4)
    assert gov() == 4 and torch.get_num_threads() == 4           # a free machine: all of them
    load.others = 2.0
    assert gov() == 2 and torch.get_num_threads() == 2           # two CPUs busy elsewhere
    load.others = 3.6
    assert gov() == 1 and torch.get_num_threads() == 1           # never fewer than one
    load.others = 0.3
    assert gov() == 4 and torch.get_num_threads() == 4           # back when they are free
    torch.set_num_threads(3)                                     # the user's choice is the ceiling
    assert gov() == 3 and torch.get_num_threads() == 3


def test_governor_acts_only_every_interval(threads):
    load = Load()
    gov = runtime.ThreadGovernor(interval=3600.0, read=load, cpus=4)
    load.others = 4.0
    assert gov() == threads and load.t == 1.0  # read once, at creation


def test_cpu_times_are_real_and_count_this_process():
    first = runtime.cpu_times()
    if first is None:
        pytest.skip("no /proc/stat here (not Linux)")
    x = torch.randn(256, 256)
    while runtime.cpu_times()[2] - first[2] < 0.2:  # this process busy for 0.2 CPU-seconds
        x = torch.tanh(x @ x.T / 256)
    t, busy, mine = runtime.cpu_times()
    assert t > first[0] and mine - first[2] >= 0.2
    assert busy - first[1] >= 0.1  # /proc/stat saw the machine busy too (10 ms ticks)


def test_fixed_threads_are_never_changed(threads):
    runtime.set_threads(1)
    assert torch.get_num_threads() == 1 and runtime.adapt_threads() is None
    runtime.set_threads("auto")
    assert runtime.adapt_threads() == 1  # auto again, from the count in use
    for bad in (0, -2, "two", 1.5, True):
        with pytest.raises(ValueError, match="threads must be 'auto' or a positive number"):
            runtime.set_threads(bad)


def test_threads_from_the_environment_for_aevbs_own_work():
    show = """
        import aevb, torch
        before = torch.get_num_threads()
        with aevb.runtime.tuned():
            print(torch.get_num_threads(), aevb.runtime.adapt_threads())
        print(torch.get_num_threads() == before, aevb.runtime.adapt_threads())
    """
    assert _fresh(show, AEVB_THREADS="1").splitlines() == ["1 None", "True None"]
    with pytest.raises(subprocess.CalledProcessError) as e:
        _fresh(show, AEVB_THREADS="many")
    assert "AEVB_THREADS must be 'auto' or a positive number of threads, got 'many'" in e.value.stderr
    # the command: a one-line error, exit status 2
    out = subprocess.run([sys.executable, "-m", "aevb", "datasets"], capture_output=True, text=True,
                         env={**os.environ, "AEVB_THREADS": "many"}, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "AEVB_THREADS must be 'auto' or a positive number of threads" in out.stderr


def test_tuned_restores_the_thread_count_and_policy(threads):
    torch.set_num_threads(2)
    with runtime.tuned(1):
        assert torch.get_num_threads() == 1 and runtime.adapt_threads() is None
        with runtime.tuned():  # nested: keeps the enclosing policy
            assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2 and runtime.adapt_threads() is None
    with runtime.tuned():  # auto: aevb's loops adapt the count inside, and only there
        assert runtime.adapt_threads() is not None
    assert runtime.adapt_threads() is None and torch.get_num_threads() == 2
    with runtime.tuned(enabled=False):
        assert runtime.adapt_threads() is None


def test_train_leaves_the_thread_count_as_it_was(threads):
    from aevb import VAE, data, train
    ds = data.load("digits", limit=200)
    torch.set_num_threads(2)
    model = VAE(ds.shape, 2, hidden=[8])
    seen = []
    train(model, ds, epochs=1, threads=1, progress=False, tensorboard=False,
          callbacks=[lambda run, record: seen.append(torch.get_num_threads())])
    assert seen == [1] and torch.get_num_threads() == 2


def _denormals_left(n: int = 2_000_000) -> int:
    """How many of n float32 denormals survive a multiply by 1 that is split over the OpenMP
    threads (each half of the tensor on another thread): 0 when every thread flushes."""
    return int((torch.full((n,), 1e-40) * 1.0).count_nonzero())


def test_denormals_are_flushed_on_every_thread_inside_tuned_only(monkeypatch):
    monkeypatch.delenv("AEVB_NO_TUNING", raising=False)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert _denormals_left() == 2_000_000 and not runtime.flushing_denormals()
        with runtime.tuned(threads=2):
            assert _denormals_left() == 0                   # the worker thread's half too
            torch.set_num_threads(1)
            torch.set_num_threads(2)                        # the governor changing the count
            assert _denormals_left() == 0
            with runtime.tuned():                           # nested: leaves it on
                pass
            assert _denormals_left() == 0
        assert _denormals_left() == 2_000_000 and not runtime.flushing_denormals()
        monkeypatch.setenv("AEVB_NO_TUNING", "1")
        with runtime.tuned():
            assert _denormals_left() == 2_000_000          # opted out: IEEE gradual underflow
    finally:
        torch.set_num_threads(before)


def test_flushing_changes_adam_only_below_the_denormal_range():
    """The plain update (IEEE, denormals kept) against the flushed one, from an Adam state
    whose first moments are denormal (a unit that stopped getting gradient): the weights
    differ by less than 1e-30, far below float32's resolution of any weight that is not 0."""
    def run(flush: bool):
        torch.manual_seed(0)
        w = torch.nn.Parameter(torch.randn(4000))
        opt = torch.optim.Adam([w], lr=1e-3, fused=True)
        w.grad = torch.randn(4000)
        opt.step()
        opt.state[w]["exp_avg"][:2000] = 1e-40               # denormal first moments
        with runtime.tuned(threads=2) if flush else contextlib.nullcontext():
            for _ in range(5):
                w.grad = torch.cat([torch.zeros(2000), torch.randn(2000)])
                opt.step()
        return w.detach().clone(), opt.state[w]["exp_avg"][:2000].count_nonzero()
    (plain, kept), (flushed, left) = run(False), run(True)
    assert kept == 2000 and left == 0                       # the flush did act
    assert (plain - flushed).abs().max() < 1e-30
    assert torch.equal(plain[2000:], flushed[2000:])

