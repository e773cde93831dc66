"""Speed of aevb on this machine, measured in one run (not part of the test suite).

    python benchmarks/speed.py                    # throughput, memory, GFLOP/s, eval speed, quality/second
    python benchmarks/speed.py --peers            # + the same model in a plain PyTorch loop and in pythae
    python benchmarks/speed.py --tried            # + the A/B experiments of benchmarks/README.md
    python benchmarks/speed.py --quick --peers --tried   # everything tiny: a smoke test (~3 min)
    python benchmarks/speed.py --json speed.json  # also write every number as JSON

What is measured (details in benchmarks/README.md):
- machine: fp32 matmul rate, torch.matmul of 2048x2048 (best of several, 2 n^3 / t), and
  the same product through oneDNN, in a fresh process with the same thread settings;
- training, each configuration in its own process: MLP VAE 784-400-400-20 at batch 100 and
  1000, conv VAE (28x28, channels --conv-hidden) at batch 100, trained with `aevb.train` on
  the offline MNIST split (fit on 10,000 images): images/s and seconds per epoch of the
  training loop (epoch 1 excluded as start-up; the per-epoch test evaluation that
  aevb.train runs is timed and subtracted), peak resident memory of the process
  (ru_maxrss, and VmHWM), effective GFLOP/s = 6 x forward multiply-adds per image x
  images/s (for the MLP, 6 x weights of the linear layers; for conv, conv and linear MACs
  counted layer by layer), and its fraction of the matmul rate;
- evaluation: `aevb.evaluation.log_likelihood` with K=5000 importance samples on the 5,000
  evaluation images (--quick: a subset, scaled) and its GFLOP/s (2 x MACs per encoder and
  per decoder evaluation, K decoder evaluations per image);
- quality per second: test ELBO (aevb.evaluation.elbo_terms on the 5,000 evaluation images)
  after 10, 30 and 60 s of training wall clock (evaluation paused), for aevb and, with
  --peers, for the plain PyTorch loop;
- --peers: --peer-rounds rounds (default 3), each running, one after the other, the matmul
  rate, aevb's MLP at batch 100, benchmarks/peers/examples_style.py (pytorch/examples
  style), benchmarks/peers/plain_loop.py (the fastest simple tensor-slicing loop we could
  write) and benchmarks/peers/pythae_peer.py (run with --pythae-python). The ratios aevb /
  peer and aevb's fraction of the matmul rate are taken within each round and their median
  reported: on a shared VM the speed of the machine drifts by tens of percent over minutes,
  so only numbers measured close together are compared;
- --tried: A/B experiments on the MLP at batch 100 (channels_last: the conv VAE),
  interleaved, medians.

Every measurement records the load average and the share of the CPUs that other
processes used while it ran: numbers taken on a busy machine are marked as such.
Subprocesses get GOMP_SPINCOUNT=30000 (aevb's spin default, which the aevb command sets) unless
OMP_WAIT_POLICY or GOMP_SPINCOUNT is set, peers included, so that the comparison is between
the programs. The examples-style peer also gets aevb's malloc default (it imports
aevb.data to read the files); measured, it does not slow the peer down (11,471 images/s
with it, 10,395 without, 5 interleaved runs). Thread settings themselves are compared by
benchmarks/threads.py.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import result_files

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DATA_DIR = REPO.parent / "shared" / "data" / "mnist"
PYTHAE_PYTHON = os.environ.get("AEVB_PYTHAE_PYTHON", "/work/venvs/pythae/bin/python")
BUSY_SHARE = 0.10  # other processes using more than 10% of the CPUs: "busy machine"


# ============================================================================ helpers
def peak_rss_mib() -> dict:
    out = {"ru_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                out["vmhwm_mib"] = int(line.split()[1]) / 1024
    except OSError:
        pass
    return out


def _cpu_jiffies() -> tuple[float, float] | None:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    try:
        f = [float(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    hz = os.sysconf("SC_CLK_TCK")
    idle = f[3] + (f[4] if len(f) > 4 else 0.0)
    return (sum(f[:8]) - idle) / hz, sum(f[:8]) / hz


class Contention:
    """Load average and the share of all CPUs used by *other* processes (not this one or its
    children) while a measurement ran."""

    def __enter__(self):
        self.t = time.perf_counter()
        self.cpu = _cpu_jiffies()
        self.own = _own_cpu()
        self.load_before = os.getloadavg()[0]
        return self

    def __exit__(self, *exc):
        wall = time.perf_counter() - self.t
        cpu, own = _cpu_jiffies(), _own_cpu()
        self.info = {"wall_s": round(wall, 2), "load_before": round(self.load_before, 2),
                     "load_after": round(os.getloadavg()[0], 2)}
        if cpu and self.cpu and wall > 0:
            others = (cpu[0] - self.cpu[0]) - (own - self.own)
            self.info["others_cpu_share"] = round(max(0.0, others / (wall * (os.cpu_count() or 1))), 3)
        self.info["busy"] = self.info.get("others_cpu_share", 0) > BUSY_SHARE
        return False


def _own_cpu() -> float:
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def worker_env(extra: dict | None = None) -> dict:
    from aevb.runtime import SPINCOUNT
    env = dict(os.environ)
    if "OMP_WAIT_POLICY" not in env and "GOMP_SPINCOUNT" not in env:
        env["GOMP_SPINCOUNT"] = SPINCOUNT
    env.update(extra or {})
    return env


def run_json(cmd: list[str], env: dict, timeout: float, tag: str = "RESULT ") -> dict:
    """Run a command; its result is the last stdout line starting with `tag` (or a JSON
    object when tag is empty). Failures come back as {"error": ...}."""
    with Contention() as c:
        try:
            p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO)
        except subprocess.TimeoutExpired:
            res = {"error": f"timed out after {timeout:.0f} s"}
        except OSError as e:
            res = {"error": f"cannot run {cmd[0]}: {e}"}
        else:
            res = None
            for line in reversed(p.stdout.splitlines()):
                if tag and line.startswith(tag):
                    res = json.loads(line[len(tag):])
                    break
                if not tag and line.startswith("{"):
                    res = json.loads(line)
                    break
            if res is None:
                tail = (p.stderr or p.stdout).strip().splitlines()[-6:]
                res = {"error": f"exit {p.returncode}: " + " | ".join(tail)}
    res["contention"] = c.info
    return res


def run_worker(kind: str, spec: dict, env_extra: dict | None = None, timeout: float = 1800) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, "--spec", json.dumps(spec)]
    return run_json(cmd, worker_env(env_extra), timeout)


def fmt(v, nd=0, none="-"):
    if v is None:
        return none
    return f"{v:,.{nd}f}"


def median(xs):
    return statistics.median(xs) if xs else None


# ============================================================================ worker side
def _setup(spec):
    import torch
    import aevb.runtime  # the spin count is set by the parent (worker_env)
    aevb.runtime.malloc_default()  # as the aevb command does at start (AEVB_MALLOC=0: not)
    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    # The first optimizer a process creates imports torch._dynamo (1-2 s): a one-time cost
    # of any PyTorch program, paid here so that no training clock below counts it.
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])
    return torch


def _load(spec):
    from aevb import data
    return data.load("mnist-offline", binarize="dynamic", data_dir=spec["data_dir"],
                     limit=spec.get("limit"), progress=False)


def _model(ds, net="mlp", hidden=(400, 400)):
    from aevb import VAE
    return VAE(ds.shape, latent_dim=20, net=net, hidden=tuple(hidden))


def count_macs(model, shape) -> dict:
    """Forward multiply-adds per image of the encoder and of the decoder, layer by layer
    (Linear: in x out; Conv2d: output elements x in_channels x kernel area; ConvTranspose2d:
    input elements x out_channels x kernel area), and the weights of those layers."""
    import torch
    from torch import nn
    kinds = (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)
    macs, part = {"encoder": 0, "decoder": 0}, ["encoder"]

    def hook(m, inp, out):
        x = inp[0]
        if isinstance(m, nn.Linear):
            n = x.numel() // m.in_features * m.in_features * m.out_features
        elif isinstance(m, nn.Conv2d):
            n = out.numel() * (m.in_channels // m.groups) * math.prod(m.kernel_size)
        else:
            n = x.numel() * (m.out_channels // m.groups) * math.prod(m.kernel_size)
        macs[part[0]] += n

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, kinds)]
    try:
        with torch.no_grad():
            q = model.encode(torch.zeros(1, *shape))
            part[0] = "decoder"
            model.decode(q.mean)
    finally:
        for h in handles:
            h.remove()
    weights = {k: sum(m.weight.numel() for m in getattr(model, k).modules() if isinstance(m, kinds))
               for k in ("encoder", "decoder")}
    kinds_used = sorted({type(m).__name__ for m in model.modules() if isinstance(m, kinds)})
    return {"forward_macs": macs, "weights": weights, "layers": kinds_used}


class EpochTimer:
    """Per-epoch training seconds of `aevb.train`, from its epoch callbacks, minus the time of
    the test evaluation it runs every epoch (aevb.training.evaluate_epoch, wrapped while active)
    and minus the callbacks' own time. `hook(timer, record)` runs after each epoch."""

    def __init__(self, hook=None):
        import aevb.training as T
        self.T, self.hook = T, hook
        self.train_s, self.records, self.eval_s = [], [], 0.0

    def __enter__(self):
        self._orig = self.T.evaluate_epoch

        def timed(*a, **k):
            t = time.perf_counter()
            try:
                return self._orig(*a, **k)
            finally:
                self.eval_s += time.perf_counter() - t

        self.T.evaluate_epoch = timed
        self.last = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.T.evaluate_epoch = self._orig
        return False

    def callback(self, run, record):
        now = time.perf_counter()
        self.train_s.append(now - self.last - self.eval_s)
        self.eval_s = 0.0
        self.records.append(record)
        if self.hook is not None:
            self.hook(self, record)
        self.last = time.perf_counter()


def _train_epochs(model, ds, epochs, batch_size, hook=None, **kw):
    from aevb import train
    timer = EpochTimer(hook)
    with timer:
        try:
            train(model, ds, epochs=epochs, batch_size=batch_size, lr=1e-3, optimizer="adam", seed=0,
                  progress=False, tensorboard=False, device="cpu", callbacks=[timer.callback], **kw)
        except _Done:
            pass
    return timer


class _Done(Exception):
    pass


def w_matmul(spec):
    torch = _setup(spec)
    n, reps = spec.get("n", 2048), spec.get("reps", 10)
    a, b = torch.randn(n, n), torch.randn(n, n)

    def best(f):
        for _ in range(2):
            f()
        t = math.inf
        for _ in range(reps):
            t0 = time.perf_counter()
            f()
            t = min(t, time.perf_counter() - t0)
        return t

    out = {"n": n, "reps": reps, "threads": torch.get_num_threads(),
           "matmul_gflops": 2 * n ** 3 / best(lambda: torch.matmul(a, b)) / 1e9}
    try:  # the same product through oneDNN (a @ b.T, same flops)
        lp = torch.ops.mkldnn._linear_pointwise
        out["onednn_gflops"] = 2 * n ** 3 / best(lambda: lp(a, b, None, "none", [], "")) / 1e9
    except (AttributeError, RuntimeError) as e:
        out["onednn_gflops"] = None
        out["onednn_error"] = str(e)
    return out


def w_train(spec):
    torch = _setup(spec)
    ds = _load(spec)
    torch.manual_seed(0)
    try:
        model = _model(ds, spec["net"], spec["hidden"])
    except Exception as e:  # noqa: BLE001  (e.g. the conv net is not there yet)
        return {"skipped": f"{type(e).__name__}: {' '.join(str(e).split())}"}
    flops = count_macs(model, ds.shape)
    t0 = time.perf_counter()
    timer = _train_epochs(model, ds, spec["epochs"], spec["batch_size"])
    timed = timer.train_s[1:] or timer.train_s
    n = len(ds.train)
    return {"net": spec["net"], "hidden": list(spec["hidden"]), "batch_size": spec["batch_size"],
            "epochs": spec["epochs"], "train_images": n, "threads": torch.get_num_threads(),
            "params": sum(p.numel() for p in model.parameters()), **flops,
            "epoch_train_seconds": [round(t, 4) for t in timer.train_s],
            "images_per_s": n * len(timed) / sum(timed), "seconds_per_epoch": sum(timed) / len(timed),
            "wall_seconds": time.perf_counter() - t0, "final_test_elbo": timer.records[-1]["test_elbo"],
            "peak_memory": peak_rss_mib()}


def w_eval(spec):
    torch = _setup(spec)
    from aevb.evaluation import log_likelihood
    ds = _load(spec)
    torch.manual_seed(0)
    model = _model(ds, spec["net"], spec["hidden"]).eval()
    flops = count_macs(model, ds.shape)
    x = ds.test.x[: spec["n"]]
    k = spec["samples"]
    log_likelihood(model, x[:2], samples=min(k, 200))  # warm-up
    t = time.perf_counter()
    lp = log_likelihood(model, x, samples=k)
    dt = time.perf_counter() - t
    m = flops["forward_macs"]
    flop = len(x) * 2 * (m["encoder"] + k * m["decoder"])
    return {"images": len(x), "samples": k, "seconds": dt, "gflops": flop / dt / 1e9,
            "seconds_for_5000x5000": dt * (5000 * 5000) / (len(x) * k),
            "mean_log_px_untrained": float(lp.mean()), **flops, "peak_memory": peak_rss_mib()}


def _examples_peer():
    import importlib.util
    spec = importlib.util.spec_from_file_location("examples_style", HERE / "peers" / "examples_style.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def peer_as_aevb(peer, ds):
    """An aevb VAE holding the weights of an examples-style VAE (same architecture; the two
    heads fc31 / fc32 stacked into aevb's one head), so that both are scored by the same
    `aevb.evaluation.elbo_terms`."""
    import torch
    m = _model(ds)
    enc, dec = m.encoder.net, m.decoder.net
    with torch.no_grad():
        for dst, src in ((enc[0], peer.fc1), (enc[2], peer.fc2), (dec[0], peer.fc4), (dec[2], peer.fc5),
                         (dec[4], peer.fc6)):
            dst.weight.copy_(src.weight)
            dst.bias.copy_(src.bias)
        enc[4].weight.copy_(torch.cat([peer.fc31.weight, peer.fc32.weight]))
        enc[4].bias.copy_(torch.cat([peer.fc31.bias, peer.fc32.bias]))
    return m.eval()


def w_quality(spec):
    """Test ELBO after `budgets` seconds of training wall clock (evaluation not counted)."""
    torch = _setup(spec)
    from aevb.evaluation import elbo_terms
    ds = _load(spec)
    budgets = list(spec["budgets"])
    points = []
    torch.manual_seed(0)
    if spec["who"] == "aevb":
        model = _model(ds)

        def hook(timer, record):
            clock = sum(timer.train_s)
            while budgets and clock >= budgets[0]:
                # aevb.train's own per-epoch test ELBO is elbo_terms(model, test, 1000, seed 0)
                points.append({"budget_s": budgets.pop(0), "train_seconds": clock,
                               "epochs": record["epoch"], "test_elbo": record["test_elbo"]})
            if not budgets:
                raise _Done

        _train_epochs(model, ds, 100000, 100, hook=hook)
    else:
        peer = _examples_peer()
        loader = peer.make_loader(ds.train.x, 100, dynamic=True, shuffle=True)
        model = peer.VAE()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        clock, epoch = 0.0, 0
        while budgets:
            t = time.perf_counter()
            peer.train_epoch(model, opt, loader, torch.device("cpu"))
            clock += time.perf_counter() - t
            epoch += 1
            while budgets and clock >= budgets[0]:
                points.append({"budget_s": budgets.pop(0), "train_seconds": clock, "epochs": epoch,
                               "test_elbo": elbo_terms(peer_as_aevb(model, ds), ds.test)["elbo"]})
    return {"who": spec["who"], "points": points, "peak_memory": peak_rss_mib()}


# ---------------------------------------------------------------------------- A/B experiments
@contextlib.contextmanager
def _patched(obj, name, value):
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


class _FlatGradients:
    """The B arm of "flat_grads": every gradient a view of one flat buffer, zeroed by one
    kernel and normed by one (patched into torch.optim.Optimizer.zero_grad and
    torch.nn.utils.get_total_norm for the run)."""

    def __init__(self):
        self.buffer = None

    def zero_grad(self, opt):
        import torch
        params = [p for g in opt.param_groups for p in g["params"]]
        if self.buffer is None:
            self.buffer = torch.zeros(sum(p.numel() for p in params))
            offset = 0
            for p in params:
                p.grad = self.buffer[offset:offset + p.numel()].view_as(p)
                offset += p.numel()
        self.buffer.zero_()

    def norm(self, tensors, *a, **k):
        import torch
        return torch.linalg.vector_norm(self.buffer)

    @contextlib.contextmanager
    def active(self):
        import torch
        with _patched(torch.optim.Optimizer, "zero_grad", lambda opt, set_to_none=True: self.zero_grad(opt)), \
                _patched(torch.nn.utils, "get_total_norm", self.norm):
            yield


def _variants(name):
    """(label A, label B, setup B(model) -> model, context of B, train kwargs of B); A is the
    library as it is."""
    import torch
    from torch.distributions import Bernoulli, Independent, Normal
    import aevb.nets.linear as L
    import aevb.training as T
    nothing = contextlib.nullcontext
    if name == "adam_foreach":
        def foreach(opt_name, params, lr):
            return torch.optim.Adam(params, lr=lr, foreach=True)
        return ("Adam(fused=True) [library]", "Adam(foreach=True)", None,
                lambda: _patched(T, "make_optimizer", foreach), {})
    if name == "compile":
        def comp(model):
            model.compile()
            return model
        return "eager [library]", "model.compile() (torch.compile)", comp, nothing, {}
    if name == "threads":
        @contextlib.contextmanager
        def one():
            n = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                yield
            finally:
                torch.set_num_threads(n)
        return f"{torch.get_num_threads()} threads [default]", "1 thread", None, one, {}
    if name == "bf16":
        return "fp32 [library]", "bf16 autocast (precision='bf16')", None, nothing, {"precision": "bf16"}
    if name == "bernoulli":
        from aevb.distributions import BernoulliLikelihood
        general = lambda self, out, event_ndims: Independent(  # noqa: E731
            Bernoulli(logits=out, validate_args=False), event_ndims, validate_args=False)
        return ("Bernoulli log-likelihood as one autograd node [library]",
                "torch.distributions Bernoulli summed by Independent", None,
                lambda: _patched(BernoulliLikelihood, "__call__", general), {})
    if name == "kl":
        from aevb.distributions import DiagonalGaussian, StandardNormal

        def posterior(self, out):
            mu, logvar = out.chunk(2, dim=-1)
            return Independent(Normal(mu, (0.5 * logvar).exp(), validate_args=False), 1, validate_args=False)

        def prior(self):
            return Independent(Normal(self.zero, torch.ones_like(self.zero), validate_args=False), 1,
                               validate_args=False)

        @contextlib.contextmanager
        def normal_kl():
            with _patched(DiagonalGaussian, "__call__", posterior), _patched(StandardNormal, "forward", prior):
                yield
        return ("Gaussian KL from (mu, log-variance) [library]",
                "torch.distributions Normal KL (from the standard deviations)", None, normal_kl, {})
    if name == "grad_norm":
        init = T._GradNorm.__init__
        late = lambda self, parameters, early: init(self, parameters, False)  # noqa: E731
        return ("gradient norms taken as autograd stores each gradient [library]",
                "nn.utils.get_total_norm after backward", None,
                lambda: _patched(T._GradNorm, "__init__", late), {})
    if name == "flat_grads":
        flat = _FlatGradients()
        return ("gradients handed over by autograd, zero_grad to None [library]",
                "one flat gradient buffer: one zero, one norm", None, flat.active, {})
    if name == "reuse_grads":
        zero = torch.optim.Optimizer.zero_grad
        return ("gradients handed over by autograd, zero_grad to None [library]",
                "gradient buffers kept and zeroed (set_to_none=False)", None,
                lambda: _patched(torch.optim.Optimizer, "zero_grad",
                                 lambda opt, set_to_none=True: zero(opt, set_to_none=False)), {})
    if name == "fused_relu":
        return ("Linear + ReLU as one autograd node [library]", "separate nn.ReLU (plain nn.Sequential)",
                None, lambda: _patched(L.Sequential, "forward", torch.nn.Sequential.forward), {})
    if name == "binarize":
        import aevb.data.transforms as tr
        bernoulli = lambda x, generator=None: torch.bernoulli(x, generator=generator)  # noqa: E731
        return ("binarize from 24 random bits per pixel [library]", "torch.bernoulli (dynamic binarization)",
                None, lambda: _patched(tr, "binarize", bernoulli), {})
    if name == "channels_last":  # on the conv VAE (CONV_EXPERIMENTS)
        return ("NCHW [library]", "channels-last (model.to(memory_format=torch.channels_last))",
                lambda m: m.to(memory_format=torch.channels_last), nothing, {})
    if name == "mkl_train":
        return ("linear kernel measured per shape [library]", "F.linear (MKL sgemm)", None,
                lambda: _onednn(False), {})
    raise ValueError(f"unknown experiment {name!r}")


EXPERIMENTS = ("adam_foreach", "compile", "threads", "bf16", "bernoulli", "kl", "grad_norm", "reuse_grads", "flat_grads",
               "fused_relu", "binarize", "mkl_train", "channels_last", "malloc", "eval_onednn")
CONV_EXPERIMENTS = {"channels_last": (32, 64)}  # run on the conv VAE with these channels, not the MLP


def w_ab(spec):
    """Library (A) against one change (B) on the MLP (the conv VAE for CONV_EXPERIMENTS) at
    batch 100: one model each, a warm-up epoch each, then `rounds` rounds of one epoch each,
    alternating the order (ABBA...)."""
    torch = _setup(spec)
    ds = _load(spec)
    label_a, label_b, setup_b, ctx_b, kw_b = _variants(spec["experiment"])
    net = ("conv", CONV_EXPERIMENTS[spec["experiment"]]) if spec["experiment"] in CONV_EXPERIMENTS else ("mlp", (400, 400))
    torch.manual_seed(0)
    a = _model(ds, *net)
    torch.manual_seed(0)
    b = _model(ds, *net)
    b = setup_b(b) if setup_b else b
    arms = {"A": (a, contextlib.nullcontext, {}), "B": (b, ctx_b, kw_b)}
    warm = {}
    n = len(ds.train)

    elbo = {}

    def one(arm):
        model, ctx, kw = arms[arm]
        with ctx():
            timer = _train_epochs(model, ds, 1, spec.get("batch_size", 100), **kw)
        elbo[arm] = timer.records[-1]["test_elbo"]
        return n / timer.train_s[0]

    for arm in ("A", "B"):
        t = time.perf_counter()
        one(arm)
        warm[arm] = time.perf_counter() - t
    ips = {"A": [], "B": []}
    for r in range(spec["rounds"]):
        for arm in (("A", "B") if r % 2 == 0 else ("B", "A")):
            ips[arm].append(one(arm))
    ma, mb = median(ips["A"]), median(ips["B"])
    return {"experiment": spec["experiment"], "net": net[0], "a": label_a, "b": label_b,
            "a_images_per_s": ips["A"], "b_images_per_s": ips["B"], "a_median": ma, "b_median": mb,
            "ratio_b_over_a": mb / ma, "warmup_seconds": warm, "threads": torch.get_num_threads(),
            # each arm trained 1 + rounds epochs from the same initialization: a sanity check
            # that the change does not hurt the model (one sample each, so noisy)
            "epochs_each": 1 + spec["rounds"], "a_test_elbo": elbo["A"], "b_test_elbo": elbo["B"]}


def w_ab_eval(spec):
    """log_likelihood with the library's oneDNN linear layers (A) against F.linear / MKL (B)."""
    torch = _setup(spec)
    from aevb.evaluation import log_likelihood
    ds = _load(spec)
    torch.manual_seed(0)
    model = _model(ds).eval()
    x, k = ds.test.x[: spec["n"]], spec["samples"]
    times = {True: [], False: []}
    for r in range(spec["rounds"] + 1):
        for fast in ((True, False) if r % 2 == 0 else (False, True)):
            with _onednn(fast):
                t = time.perf_counter()
                log_likelihood(model, x if r else x[:2], samples=k if r else min(k, 200))
                if r:  # round 0 is the warm-up
                    times[fast].append(len(x) / (time.perf_counter() - t))
    ma, mb = median(times[True]), median(times[False])
    return {"experiment": "eval_onednn", "a": "log_likelihood, linear kernel measured per shape [library]",
            "b": "F.linear (MKL sgemm)", "unit": f"images/s of log_likelihood, K={k}",
            "a_images_per_s": times[True], "b_images_per_s": times[False], "a_median": ma,
            "b_median": mb, "ratio_b_over_a": mb / ma}


@contextlib.contextmanager
def _onednn(enabled: bool):
    """aevb.nets.linear.Linear computes with oneDNN (enabled) or falls back to F.linear."""
    import aevb.nets.linear as L
    saved = L._OK
    L._OK = None if enabled else False
    try:
        yield
    finally:
        L._OK = saved


def w_steploop(spec):
    """A hand-written training loop around aevb's VAE (a fixed batch of 100 random binary
    images; no aevb.train, no evaluation): the median ms per step over blocks of 50 steps,
    and minor page faults per step."""
    torch = _setup(spec)
    from aevb import VAE
    torch.manual_seed(0)
    model = VAE((1, 28, 28), latent_dim=20, hidden=(400, 400))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.bernoulli(torch.rand(100, 1, 28, 28))

    def step():
        opt.zero_grad()
        model(x)["loss"].backward()
        opt.step()

    for _ in range(50):
        step()
    f0, blocks = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, []
    for _ in range(spec.get("blocks", 8)):
        t = time.perf_counter()
        for _ in range(50):
            step()
        blocks.append((time.perf_counter() - t) / 50 * 1e3)
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / (50 * len(blocks))
    return {"ms_per_step": median(blocks), "page_faults_per_step": faults}


def ab_malloc(train_spec: dict, rounds: int) -> list[dict]:
    """aevb's malloc default (A) against glibc's own (B, AEVB_MALLOC=0), one process per run,
    interleaved: in aevb.train (`train_spec`) and in a hand-written loop (w_steploop)."""
    out = []
    for kind, spec, key in (("train", train_spec, "images_per_s"), ("steploop", train_spec, "ms_per_step")):
        vals, faults = {"A": [], "B": []}, {"A": [], "B": []}
        for r in range(rounds):
            for arm in (("A", "B") if r % 2 == 0 else ("B", "A")):
                res = run_worker(kind, spec, {"AEVB_MALLOC": "0"} if arm == "B" else None)
                vals[arm].append(res.get(key))
                faults[arm].append(res.get("page_faults_per_step"))
        ma, mb = median([v for v in vals["A"] if v]), median([v for v in vals["B"] if v])
        if key == "ms_per_step":  # report as images/s like the other rows
            ma, mb = 100e3 / ma, 100e3 / mb
        out.append({"experiment": f"malloc_{kind}", "a": f"malloc thresholds raised [library] ({kind})",
                    "b": f"glibc default malloc ({'aevb.train' if kind == 'train' else 'hand-written loop'})",
                    "a_median": ma, "b_median": mb, "ratio_b_over_a": mb / ma, "raw": vals,
                    "page_faults_per_step": faults})
    return out


WORKERS = {"matmul": w_matmul, "steploop": w_steploop, "train": w_train, "eval": w_eval, "quality": w_quality,
           "ab": w_ab, "ab_eval": w_ab_eval}


def worker_main(kind: str, spec: dict) -> None:
    res = WORKERS[kind](spec)
    res.setdefault("peak_memory", peak_rss_mib())
    print("RESULT " + json.dumps(res), flush=True)


# ============================================================================ parent side
def machine_info() -> dict:
    info = {"python": platform.python_version(), "platform": platform.platform(),
            "cpus": os.cpu_count(), "loadavg_at_start": [round(v, 2) for v in os.getloadavg()],
            "threads_env": {k: v for k, v in worker_env().items()
                            if k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")}}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        from importlib.metadata import version
        info["torch"] = version("torch")
    except Exception:  # noqa: BLE001
        pass
    return info


def busy_note(res: dict) -> str:
    c = res.get("contention", {})
    if not c:
        return ""
    share = c.get("others_cpu_share")
    mark = " BUSY" if c.get("busy") else ""
    return f"load {c.get('load_before')}->{c.get('load_after')}, others {fmt(100 * share, 0) if share is not None else '?'}% CPU{mark}"


def train_gflops(res: dict, ips: float | None) -> float | None:
    if ips is None or "forward_macs" not in res:
        return None
    m = res["forward_macs"]
    return 6 * (m["encoder"] + m["decoder"]) * ips / 1e9


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="everything tiny, to smoke-test the script")
    p.add_argument("--peers", action="store_true", help="also run the examples-style loop and pythae")
    p.add_argument("--tried", action="store_true", help="also run the A/B experiments")
    p.add_argument("--experiments", default=",".join(EXPERIMENTS),
                   help="with --tried: a comma list of the A/B experiments to run (default: all)")
    p.add_argument("--skip", default="", help="comma list of sections to skip: train,eval,quality")
    p.add_argument("--json", default=None, help="write all results to this JSON file")
    p.add_argument("--data-dir", default=str(DATA_DIR))
    p.add_argument("--epochs", type=int, default=None, help="MLP epochs per config (default 6; quick 3)")
    p.add_argument("--conv-epochs", type=int, default=None, help="conv epochs (default 3; quick 2)")
    p.add_argument("--conv-hidden", default="32,64", help="conv channels (configs/conv_vae_mnist.yaml)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads in every worker")
    p.add_argument("--rounds", type=int, default=None, help="A/B rounds (default 7; quick 1)")
    p.add_argument("--peer-rounds", type=int, default=None,
                   help="interleaved rounds of matmul rate, aevb and the peers (default 3; quick 1)")
    p.add_argument("--eval-images", type=int, default=None,
                   help="images for the log_likelihood timing (default 5000; quick 20), K=5000 (quick 1000)")
    p.add_argument("--pythae-python", default=PYTHAE_PYTHON)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--spec", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker_main(args.worker, json.loads(args.spec))
    if args.json:
        result_files.check(args.json, "speed.py")

    q = args.quick
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    limit = 1000 if q else None
    epochs = args.epochs or (3 if q else 6)
    conv_epochs = args.conv_epochs or (2 if q else 3)
    rounds = args.rounds or (1 if q else 7)
    budgets = [0.5, 1.0, 2.0] if q else [10, 30, 60]
    base = {"data_dir": args.data_dir, "limit": limit, "threads": args.threads}
    conv_hidden = [int(c) for c in args.conv_hidden.split(",")]
    mlp100 = {**base, "net": "mlp", "hidden": [400, 400], "batch_size": 100, "epochs": epochs}
    out = {"command": result_files.command("speed.py", argv),
           "machine": machine_info(), "quick": q, "settings": {
        "epochs": epochs, "conv_epochs": conv_epochs, "rounds": rounds, "budgets_s": budgets,
        "limit": limit, "threads": args.threads}, "notes": []}
    say = lambda *a: print(*a, flush=True)  # noqa: E731
    say(f"# aevb speed  ({out['machine'].get('cpu', '?')}, {out['machine']['cpus']} CPUs, torch "
        f"{out['machine'].get('torch', '?')}, threads env {out['machine']['threads_env']}, "
        f"load {out['machine']['loadavg_at_start']}){'  [QUICK: tiny settings]' if q else ''}")

    # -- machine rate
    mm = run_worker("matmul", {**base, "reps": 3 if q else 10})
    out["matmul"] = mm
    rate = mm.get("matmul_gflops")
    say(f"fp32 matmul 2048x2048: {fmt(rate, 1)} GFLOP/s (torch.matmul), {fmt(mm.get('onednn_gflops'), 1)} "
        f"GFLOP/s through oneDNN   [{busy_note(mm)}]")

    # -- training throughput
    configs = [("mlp", [400, 400], 100, epochs), ("mlp", [400, 400], 1000, epochs),
               ("conv", conv_hidden, 100, conv_epochs)]
    out["train"] = []
    if "train" not in skip:
        for net, hidden, bs, ep in configs:
            r = run_worker("train", {**base, "net": net, "hidden": hidden, "batch_size": bs, "epochs": ep})
            r.update({"config": f"{net} {'-'.join(map(str, hidden))} batch {bs}"})
            if "images_per_s" in r:
                r["gflops"] = train_gflops(r, r["images_per_s"])
                r["fraction_of_matmul_rate"] = r["gflops"] / rate if rate else None
            out["train"].append(r)
        say("\n## Training (aevb.train, offline MNIST split; epoch 1 and per-epoch test evaluation excluded)")
        say(f"{'config':<26}{'images/s':>10}{'s/epoch':>9}{'peak MiB':>10}{'GFLOP/s':>9}{'% matmul':>9}  "
            f"FLOPs counted / machine state")
        for r in out["train"]:
            if "images_per_s" not in r:
                say(f"{r['config']:<26}  skipped: {r.get('skipped') or r.get('error')}")
                continue
            m, w = r["forward_macs"], r["weights"]
            basis = ("6 x linear weights" if r["net"] == "mlp" else
                     f"6 x conv+linear MACs ({(m['encoder'] + m['decoder']) / 1e6:.2f}M/img; "
                     f"linear-equiv. 6 x weights = {6 * (w['encoder'] + w['decoder']) / 1e6:.2f}M)")
            say(f"{r['config']:<26}{fmt(r['images_per_s']):>10}{fmt(r['seconds_per_epoch'], 2):>9}"
                f"{fmt(r['peak_memory']['ru_maxrss_mib']):>10}{fmt(r['gflops'], 1):>9}"
                f"{fmt(100 * r['fraction_of_matmul_rate'] if r.get('fraction_of_matmul_rate') else None, 0):>9}  "
                f"{basis}; {busy_note(r)}")

    # -- evaluation speed
    if "eval" not in skip:
        n, k = (20, 1000) if q else (5000, 5000)
        n = args.eval_images or n
        ev = run_worker("eval", {**base, "net": "mlp", "hidden": [400, 400], "n": n, "samples": k})
        out["eval"] = ev
        say("\n## Evaluation: aevb.evaluation.log_likelihood (importance sampling), MLP 784-400-400-20")
        if "seconds" in ev:
            say(f"{ev['images']} images x K={ev['samples']}: {ev['seconds']:.2f} s, {ev['gflops']:.1f} GFLOP/s "
                f"(2 x MACs per encoder + K decoder evaluations); 5000 x 5000 would take "
                f"{ev['seconds_for_5000x5000']:.0f} s   [{busy_note(ev)}]")
        else:
            say(f"failed: {ev.get('error')}")

    # -- peers, interleaved with aevb and the matmul rate, round by round
    if args.peers:
        common = ["--epochs", str(epochs), "--batch-size", "100", "--data-dir", args.data_dir]
        common += ["--limit", str(limit)] if limit else []
        common += ["--threads", str(args.threads)] if args.threads else []
        py = Path(args.pythae_python)
        programs = {
            "aevb": lambda: run_worker("train", mlp100),
            "examples-style": lambda: run_json([sys.executable, str(HERE / "peers" / "examples_style.py"),
                                                *common], worker_env(), 1800, tag=""),
            "plain-loop": lambda: run_json([sys.executable, str(HERE / "peers" / "plain_loop.py"),
                                            *common], worker_env(), 1800, tag=""),
            "pythae": (lambda: run_json([str(py), str(HERE / "peers" / "pythae_peer.py"), *common],
                                        worker_env(), 1800, tag="")) if py.exists() else
            (lambda: {"error": f"no python at {py}: create the environment described in "
                               "benchmarks/README.md or pass --pythae-python"}),
        }
        peer_rounds = args.peer_rounds or (1 if q else 3)
        rounds_out = []
        for r in range(peer_rounds):
            one = {"matmul": run_worker("matmul", {**base, "reps": 3 if q else 10})}
            for name, run in programs.items():
                one[name] = run()
            a, m = one["aevb"].get("images_per_s"), one["matmul"].get("matmul_gflops")
            if a:
                one["aevb"]["gflops"] = train_gflops(one["aevb"], a)
                one["aevb"]["fraction_of_matmul_rate"] = one["aevb"]["gflops"] / m if m else None
                for name in programs:
                    ips = one[name].get("images_per_s")
                    if name != "aevb" and ips:
                        one[name]["aevb_over_peer"] = a / ips
            rounds_out.append(one)
        out["peers"] = {"rounds": rounds_out}
        say(f"\n## Peers: the same model, data and hyper-parameters (MLP 784-400-400-20, batch 100, "
            f"Adam 1e-3), images/s; {peer_rounds} interleaved round(s) of matmul rate, aevb, peers")
        say(f"{'round':<7}{'matmul GFLOP/s':>15}" + "".join(f"{n:>16}" for n in programs)
            + f"{'aevb % matmul':>15}" + "".join(f"{'aevb/' + n[:8]:>15}" for n in programs if n != "aevb"))
        for i, one in enumerate(rounds_out):
            a = one["aevb"]
            say(f"{i + 1:<7}{fmt(one['matmul'].get('matmul_gflops'), 1):>15}"
                + "".join(f"{fmt(one[n].get('images_per_s')):>16}" for n in programs)
                + f"{fmt(100 * a['fraction_of_matmul_rate'] if a.get('fraction_of_matmul_rate') else None):>15}"
                + "".join(f"{fmt(one[n].get('aevb_over_peer'), 2):>15}" for n in programs if n != "aevb")
                + f"  [{busy_note(a)}]")
        summary = {"aevb_fraction_of_matmul_rate": median(
            [o["aevb"]["fraction_of_matmul_rate"] for o in rounds_out if o["aevb"].get("fraction_of_matmul_rate")])}
        for n in programs:
            summary[f"{n}_images_per_s"] = median([o[n]["images_per_s"] for o in rounds_out
                                                   if "images_per_s" in o[n]])
            if n != "aevb":
                summary[f"aevb_over_{n}"] = median([o[n]["aevb_over_peer"] for o in rounds_out
                                                    if o[n].get("aevb_over_peer")])
        out["peers"]["median"] = summary
        say(f"{'median':<7}{'':>15}" + "".join(f"{fmt(summary[n + '_images_per_s']):>16}" for n in programs)
            + f"{fmt(100 * summary['aevb_fraction_of_matmul_rate'] if summary['aevb_fraction_of_matmul_rate'] else None):>15}"
            + "".join(f"{fmt(summary['aevb_over_' + n], 2):>15}" for n in programs if n != "aevb"))
        for n, r in rounds_out[-1].items():
            if "error" in r:
                say(f"{n}: failed: {r['error']}")
        say("(ratios and % of the matmul rate are taken within each round, then the median over rounds)")
        wanted = {"plain-loop": 1.5, "examples-style": 2.0, "pythae": 2.0}  # issue 18, batch 100
        met = {f"{x}x {n}": summary[f"aevb_over_{n}"] >= x for n, x in wanted.items()
               if summary.get(f"aevb_over_{n}")}
        if met:
            summary["targets_met"] = met
            say("targets: " + "; ".join(f"{k}: {'met' if v else 'NOT met'} "
                                        f"({summary['aevb_over_' + k.split(' ', 1)[1]]:.2f}x)"
                                        for k, v in met.items()))

    # -- quality per second
    if "quality" not in skip:
        out["quality"] = {}
        for who in (["aevb", "examples-style"] if args.peers else ["aevb"]):
            out["quality"][who] = run_worker("quality", {**base, "who": who, "budgets": budgets})
        say("\n## Quality per second: test ELBO (nats, 5,000 evaluation images) after t s of training")
        say(f"{'program':<18}" + "".join(f"{f'{b:g} s':>20}" for b in budgets))
        for who, r in out["quality"].items():
            cells = [f"{pt['test_elbo']:.2f} ({pt['train_seconds']:.1f}s,{pt['epochs']}ep)"
                     for pt in r.get("points", [])]
            say(f"{who:<18}" + "".join(f"{c:>20}" for c in cells) + (f"  failed: {r['error']}" if "error" in r else
                                                                     f"  [{busy_note(r)}]"))
        say("(each cell: ELBO (training seconds actually reached at the first epoch end past t, epochs))")

    # -- what we tried
    if args.tried:
        out["tried"] = []
        for name in [e.strip() for e in args.experiments.split(",") if e.strip()]:
            if name == "malloc":
                out["tried"] += ab_malloc({**mlp100, "epochs": 3 if q else 4}, max(2, rounds // 2))
            elif name == "eval_onednn":
                n, k = (10, 500) if q else (100, 5000)
                out["tried"].append(run_worker("ab_eval", {**base, "n": n, "samples": k,
                                                           "rounds": max(3, rounds // 2)}))
            else:
                out["tried"].append(run_worker("ab", {**base, "experiment": name, "rounds": rounds}))
        say("\n## What we tried (MLP 784-400-400-20, batch 100, unless marked [conv]; medians of "
            "interleaved runs, images/s)")
        say(f"{'change (B) vs library (A)':<58}{'A':>9}{'B':>9}{'B/A':>7}{'ELBO A':>9}{'ELBO B':>9}")
        for r in out["tried"]:
            if "a_median" not in r or r.get("a_median") is None:
                say(f"{r.get('experiment', '?'):<58}  failed: {r.get('error')}")
                continue
            label = ("[conv] " if r.get("net") == "conv" else "") + r["b"]
            say(f"{label[:57]:<58}{fmt(r['a_median']):>9}{fmt(r['b_median']):>9}"
                f"{fmt(r.get('ratio_b_over_a'), 2):>7}{fmt(r.get('a_test_elbo'), 1):>9}"
                f"{fmt(r.get('b_test_elbo'), 1):>9}  [{busy_note(r)}]")

    busy = [k for k, v in _walk_contention(out) if v.get("busy")]
    out["busy_machine"] = bool(busy)
    if busy:
        say(f"\nNOTE: other processes used more than {BUSY_SHARE:.0%} of the CPUs during {len(busy)} "
            "measurement(s), marked BUSY: those numbers are measured on a busy machine.")
    if args.json:
        result_files.write(args.json, json.dumps(out, indent=1) + "\n", "speed.py")
        say(f"wrote {args.json}")


def _walk_contention(obj, path=""):
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == "contention" and isinstance(v, dict):
                yield path, v
            else:
                yield from _walk_contention(v, f"{path}/{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _walk_contention(v, f"{path}/{i}")


if __name__ == "__main__":
    main()
