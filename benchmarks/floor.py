"""The floor of a training step, and how close aevb's step comes to it (not part of the tests).

    python benchmarks/floor.py                        # MLP 784-400-400-20 at batch 100
    python benchmarks/floor.py --batch 1000
    python benchmarks/floor.py --net conv             # conv VAE (28x28, channels 32, 64)
    python benchmarks/floor.py --eval                 # importance-sampled log p(x), K=5000
    python benchmarks/floor.py --compile              # aevb's step with compile=True
    python benchmarks/floor.py --peer                 # also the plain loop's step (peers/plain_loop.py)
    python benchmarks/floor.py --all --json floor.json

The floor of one training step is the time of its matrix products at their real shapes,
each with the fastest kernel this torch has for that shape, plus one fused Adam update:
- every Linear layer: the forward product x W^T, the weight gradient g^T x and (except the
  first layer, whose input needs no gradient) the input gradient g W; each timed through
  torch.mm (MKL / the default BLAS) and through oneDNN, and the faster kernel counted;
- every convolution: its forward and its backward (input and weight gradients) at the
  shapes the step uses;
- torch.optim.Adam(fused=True).step() over the model's parameters.
Everything else in a step (elementwise work, the loss, random numbers, autograd, Python,
thread handling) is overhead. The shapes are captured from the model itself with forward
hooks, so the floor follows the architecture.

aevb's step is timed inside `aevb.train` itself: the training set holds exactly
`--steps` batches, the test set one image, and the epoch callback runs one floor block
between epochs. So floor and step alternate in one process, block by block (drift of the
machine hits both), and the ratio floor / step is taken per block; the median over
`--blocks` blocks is reported (the first epoch, start-up, is dropped). For --eval the
"step" is `aevb.evaluation.log_likelihood` on --eval-images images with K samples, and the
floor is the forward products of the encoder on the images and of the decoder on K rows
per image (the rows' chunking as evaluation does it).

The ceiling. Some work outside the products is not overhead that a faster program could
remove: every correct step draws one Bernoulli sample per pixel (dynamic binarization) and
scores the logits with the Bernoulli log-likelihood (log(1 + e^l) per pixel, gradient
sigmoid(l) - x); every evaluation call computes log(1 + e^l) for each pixel of its rows.
Each block also times that work alone, each part at its cheapest in this torch
(`required_work`), and reports ceiling = floor / (floor + required work): the most of its
floor that any step of this model can reach here. A target above the ceiling cannot be met.
With --peer each training block also times the plain loop of benchmarks/peers/plain_loop.py
on the same images (its floor share; aevb / plain loop = aevb's share / the loop's).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import result_files

REPO = Path(__file__).resolve().parents[1]
DEVICE = torch.device("cpu")  # --device: on a GPU the candidates are cuBLAS / cuDNN only
DATA_DIR = REPO.parent / "shared" / "data" / "mnist"


# ----------------------------------------------------------------------------- kernels
def _onednn(a, w):
    """a @ w^T in oneDNN."""
    return torch.ops.mkldnn._linear_pointwise(a, w, None, "none", [], "")


def sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)


def _best_time(fn, reps: int = 20) -> float:
    for _ in range(3):
        fn()
    t = math.inf
    for _ in range(reps):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        t = min(t, time.perf_counter() - t0)
    return t


def linear_products(a: torch.Tensor, weight: torch.Tensor, first: bool) -> list:
    """The products of one Linear layer with input `a` (rows, in) as (name, [candidate
    kernels]) pairs; each candidate is a zero-argument function."""
    g = torch.randn(a.shape[0], weight.shape[0], device=a.device)
    a, w = a.contiguous(), weight.detach().contiguous()
    prods = [("forward", [lambda: torch.mm(a, w.t()), lambda: _onednn(a, w)]),
             ("weight grad", [lambda: torch.mm(g.t(), a), lambda: _onednn(g.t(), a.t())])]
    if not first:
        prods.append(("input grad", [lambda: torch.mm(g, w), lambda: _onednn(g, w.t())]))
    if a.device.type != "cpu":  # oneDNN is a CPU library
        prods = [(what, cands[:1]) for what, cands in prods]
    return prods


def conv_products(m: nn.Module, a: torch.Tensor, out: torch.Tensor, first: bool) -> list:
    """Forward and backward (input grad unless first, weight grad) of one convolution."""
    transposed = isinstance(m, nn.ConvTranspose2d)
    a, w = a.detach().contiguous(), m.weight.detach()
    g = torch.randn_like(out)
    args = (m.stride, m.padding, m.dilation, transposed,
            m.output_padding if transposed else (0, 0), m.groups)
    fwd = (lambda: F.conv_transpose2d(a, w, None, m.stride, m.padding, m.output_padding, m.groups)) \
        if transposed else (lambda: F.conv2d(a, w, None, m.stride, m.padding, m.dilation, m.groups))
    back = lambda: torch.ops.aten.convolution_backward(g, a, w, None, *args, [not first, True, False])  # noqa: E731
    return [("forward", [fwd]), ("backward", [back])]


def capture_products(model: nn.Module, x: torch.Tensor) -> list[tuple[str, object, float]]:
    """(label, fastest kernel) for every product of one step of `model` on batch `x`.
    Shapes come from forward hooks on a real objective call."""
    found = []
    layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d))]
    # the first layer that sees the data (the encoder's first), whose input needs no gradient
    first_of_encoder = next(m for m in model.encoder.modules() if m in layers)

    def hook(m, inp, out):
        found.append((m, inp[0].detach(), out.detach()))

    handles = [m.register_forward_hook(hook) for m in layers]
    try:
        with torch.no_grad():
            model.objective(x)
    finally:
        for h in handles:
            h.remove()
    chosen = []
    for m, a, out in found:
        name = f"{type(m).__name__}{tuple(a.shape)}->{tuple(out.shape)}"
        if isinstance(m, nn.Linear):
            prods = linear_products(a.flatten(0, -2) if a.dim() > 2 else a, m.weight, m is first_of_encoder)
        else:
            prods = conv_products(m, a, out, m is first_of_encoder)
        for what, candidates in prods:
            times = [_best_time(c) for c in candidates]
            chosen.append((f"{name} {what}", candidates[times.index(min(times))], min(times)))
    return chosen


def fused_adam(model: nn.Module):
    """One fused Adam update over a copy of the model's parameters (their gradients random)."""
    params = [p.detach().clone().requires_grad_() for p in model.parameters()]  # on the model's device
    for p in params:
        p.grad = torch.randn_like(p)
    opt = torch.optim.Adam(params, lr=1e-3, fused=True)
    opt.step()
    return opt.step


def timed_block(fn, steps: int) -> float:
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    sync()
    return (time.perf_counter() - t0) / steps


def floor_block(kernels, adam, steps: int) -> float:
    def once():
        for _, k, _ in kernels:
            k()
        if adam is not None:
            adam()
    return timed_block(once, steps)


def required_work(pixels: int, rows: int, draws: bool = True, gradient: bool = True):
    """A zero-argument function doing the per-pixel work that every correct step
    (`gradient`) or evaluation call of a VAE with Bernoulli pixels must do besides its
    products, each part at its cheapest here:
    - with `draws`, `pixels` random draws of 32 bits from torch's generator (dynamic
      binarization: one word per pixel, the fewest that keep torch.bernoulli's 24-bit
      resolution, as aevb's transforms.binarize draws them);
    - the Bernoulli log-likelihood summed over `rows` rows of logits, which needs
      log(1 + e^l) per pixel: the faster of binary_cross_entropy_with_logits and softplus
      summed minus the dot product x . l;
    - with `gradient`, its gradient sigmoid(l) - x, in place.
    Bias additions, ReLUs and their gradients are not counted: a kernel can fold them into
    the products (a column of ones, a GEMM epilogue)."""
    logits = torch.randn(rows, pixels // rows, device=DEVICE)
    x = (torch.rand_like(logits) < 0.2).float()
    words = torch.empty((pixels + 1) // 2, dtype=torch.int64, device=DEVICE)
    grad = torch.empty_like(logits)
    likelihood = min(likelihood_candidates(logits, x), key=_best_time)

    def work():
        if draws:
            words.random_(-(2 ** 63), None)
        likelihood()
        if gradient:
            torch.sigmoid(logits, out=grad).sub_(x)
    return work


def likelihood_candidates(logits: torch.Tensor, x: torch.Tensor) -> list:
    """Ways to compute -log p(x | logits) = sum log(1 + e^l) - x . l of Bernoulli pixels,
    as zero-argument functions (tests/test_bench_floor.py checks that they agree)."""
    return [lambda: F.binary_cross_entropy_with_logits(logits, x, reduction="sum"),
            lambda: F.softplus(logits).sum() - torch.dot(logits.view(-1), x.view(-1))]


# ----------------------------------------------------------------------------- what aevb does
def _dataset(n_train: int, n_test: int):
    from aevb import data
    if (DATA_DIR / "t10k-images-idx3-ubyte.gz").exists():
        ds = data.load("mnist-offline", binarize="dynamic", data_dir=str(DATA_DIR))
        return data.Dataset(ds.name, ds.train[:n_train], ds.test[:n_test], ds.binarize, ds.num_classes), "mnist-offline"
    g = torch.Generator().manual_seed(0)  # no real data here: random images of MNIST's shape
    x = torch.rand(n_train + n_test, 1, 28, 28, generator=g)
    return data.Dataset("random", data.Split(x[:n_train]), data.Split(x[n_train:]), "dynamic"), "random"


def _model(net: str, shape):
    from aevb import VAE
    torch.manual_seed(0)
    return VAE(shape, latent_dim=20, net=net, hidden=(400, 400) if net == "mlp" else (32, 64))


def measure_training(net: str, batch: int, steps: int, blocks: int, profile: int = 0,
                     compiled: bool = False, peer: bool = False) -> dict:
    from aevb import train
    ds, source = _dataset(batch * steps, 1)
    model = _model(net, ds.shape).to(DEVICE)
    kernels = capture_products(model, ds.train.x[:batch].to(DEVICE))
    adam = fused_adam(model)
    required = required_work(ds.train.x[:batch].numel(), batch, draws=ds.binarize == "dynamic")
    plain = _plain_loop(ds.train.x.to(DEVICE), batch) if peer and net == "mlp" else None
    floors, steps_t, marks, extra = [], [], {}, {"required_ms": [], "plain_ms": []}
    profiler = _Profiler(profile, steps)

    def between_epochs(run, record):
        sync()
        now = time.perf_counter()
        profiler.stop()
        if "t" in marks:
            steps_t.append((now - marks["t"]) / steps)
            floors.append(floor_block(kernels, adam, steps))
            extra["required_ms"].append(round(1e3 * timed_block(required, steps), 3))
            if plain is not None:
                extra["plain_ms"].append(round(1e3 * plain() / steps, 3))
        if len(steps_t) == 1:
            profiler.start()  # the third epoch: start-up is over
        marks["t"] = time.perf_counter()

    train(model, ds, epochs=blocks + 1, batch_size=batch, progress=False, tensorboard=False,
          device=str(DEVICE), threads=torch.get_num_threads() if DEVICE.type == "cpu" else None,
          compile=compiled, callbacks=[between_epochs])
    what = f"{net} training step" + (" (compile)" if compiled else "")
    res = _summary({"what": what, "batch": batch, "steps_per_block": steps,
                    "data": source}, kernels, floors, steps_t, **extra)
    if profiler.table:  # the profiled block is slower: left out of the shares
        res["profile"], res["blocks"] = profiler.table, res["blocks"] - 1
        res["floor_share"] = res["floor_share"][:1] + res["floor_share"][2:]
        res["median_floor_share"] = round(statistics.median(res["floor_share"]), 3)
    return res


def _plain_loop(images: torch.Tensor, batch: int):
    """One epoch of benchmarks/peers/plain_loop.py over `images` (a fresh model of the same
    architecture; its first epoch is run here, as warm-up), as a function returning seconds."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("plain_loop", REPO / "benchmarks" / "peers" / "plain_loop.py")
    plain = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plain)
    torch.manual_seed(0)
    enc, dec = (m.to(DEVICE) for m in plain.make_model())
    opt = torch.optim.Adam([*enc.parameters(), *dec.parameters()], lr=1e-3, fused=True)
    return lambda: timed_block(lambda: plain.train_epoch(enc, dec, opt, images, batch), 1)


class _Profiler:
    """torch.profiler over one block of training steps, its operators grouped by name:
    (self CPU microseconds per step, calls per step, name), the largest first."""

    def __init__(self, rows: int, steps: int):
        self.rows, self.steps, self.prof, self.table = rows, steps, None, None

    def start(self):
        if self.rows and self.table is None:
            self.prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
            self.prof.__enter__()

    def stop(self):
        if self.prof is not None:
            self.prof.__exit__(None, None, None)
            events = sorted(self.prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
            self.table = [(e.key, round(e.self_cpu_time_total / self.steps, 1), e.count / self.steps)
                          for e in events[:self.rows]]
            self.prof = None


def measure_eval(images: int, k: int, blocks: int) -> dict:
    from aevb.evaluation import DEFAULT_ROWS, log_likelihood
    ds, source = _dataset(1, images)
    model = _model("mlp", ds.shape).to(DEVICE).eval()
    x = ds.test.x.to(DEVICE)
    rows = min(DEFAULT_ROWS, k * images)
    # decoder products at the chunk size evaluation uses: rows latent vectors per call
    z = torch.randn(rows, model.latent_dim, device=DEVICE)
    dec = _decoder_products(model, z)
    enc = _encoder_products(model, x)
    calls = k * images / rows

    def floor_once():
        for _, f, _ in enc:
            f()
        for _ in range(round(calls)):
            for _, f, _ in dec:
                f()

    required = required_work(rows * math.prod(x.shape[1:]), rows, draws=False, gradient=False)
    floors, steps_t, needed = [], [], []
    log_likelihood(model, x, samples=k)  # warm-up: the kernel choice for each shape is made here
    for _ in range(blocks):
        steps_t.append(timed_block(lambda: log_likelihood(model, x, samples=k), 1))
        floors.append(timed_block(floor_once, 1))
        needed.append(round(1e3 * timed_block(required, round(calls)) * round(calls), 3))
    return _summary({"what": "importance-sampled log p(x)", "images": images, "K": k, "rows": rows,
                     "data": source}, enc + dec, floors, steps_t, required_ms=needed)


def _part_products(part: nn.Module, inp: torch.Tensor) -> list:
    found = []
    layers = [m for m in part.modules() if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d))]
    handles = [m.register_forward_hook(lambda m, i, o: found.append((m, i[0].detach(), o.detach())))
               for m in layers]
    try:
        with torch.no_grad():
            part(inp)
    finally:
        for h in handles:
            h.remove()
    out = []
    for m, a, o in found:
        prods = linear_products(a, m.weight, True) if isinstance(m, nn.Linear) else conv_products(m, a, o, True)
        cands = prods[0][1]
        times = [_best_time(c) for c in cands]
        out.append((f"{type(m).__name__}{tuple(a.shape)} forward", cands[times.index(min(times))], min(times)))
    return out


def _encoder_products(model, x):
    return _part_products(model.encoder, x)


def _decoder_products(model, z):
    return _part_products(model.decoder, z)


def _summary(info: dict, kernels, floors, steps_t, required_ms=(), plain_ms=()) -> dict:
    """Per-block floor shares and their median; the ceiling (floor / (floor + required work))
    and the plain loop's share where measured."""
    ratios = [f / s for f, s in zip(floors, steps_t)]
    res = {**info, "blocks": len(ratios), "threads": torch.get_num_threads(),
           "floor_ms": [round(1e3 * f, 3) for f in floors],
           "step_ms": [round(1e3 * s, 3) for s in steps_t],
           "floor_share": [round(r, 3) for r in ratios],
           "median_floor_share": round(statistics.median(ratios), 3) if ratios else None,
           "products": [(name, round(1e6 * t, 1)) for name, _, t in kernels]}

    def shares(ms, share):  # per block (floor and ms in milliseconds), and their median
        values = [share(1e3 * f, m) for f, m in zip(floors, ms)]
        return [round(v, 3) for v in values], round(statistics.median(values), 3)
    if required_ms:
        res["required_ms"] = list(required_ms)
        res["ceiling"], res["median_ceiling"] = shares(required_ms, lambda f, r: f / (f + r))
    if plain_ms:
        res["plain_ms"] = list(plain_ms)
        res["plain_share"], res["median_plain_share"] = shares(plain_ms, lambda f, q: f / q)
    return res


def machine() -> dict:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    return {"cpu": model, "amx": " amx_tile" in flags, "avx512": " avx512f" in flags,
            "cpus": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
            "load_before": round(os.getloadavg()[0], 2)}


def _line(r: dict) -> str:
    """One result as a line: the floor share, the ceiling, the plain loop where measured."""
    text = (f"{r['what']}: floor / step = {r['median_floor_share']:.0%} (median of {r['blocks']} blocks; "
            f"floor {statistics.median(r['floor_ms']):.3f} ms, step {statistics.median(r['step_ms']):.3f} ms; "
            f"per block {', '.join(f'{v:.0%}' for v in r['floor_share'])})")
    if "ceiling" in r:
        text += (f"; ceiling {r['median_ceiling']:.0%} (required work "
                 f"{statistics.median(r['required_ms']):.3f} ms)")
    if "plain_share" in r:
        ratio = statistics.median(p / s for p, s in zip(r["plain_ms"], r["step_ms"]))
        text += (f"; plain loop {r['median_plain_share']:.0%} of the floor "
                 f"({statistics.median(r['plain_ms']):.3f} ms), aevb / plain loop {ratio:.2f}")
    return text


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--net", choices=["mlp", "conv"], default="mlp")
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--steps", type=int, default=100, help="training steps per block")
    p.add_argument("--blocks", type=int, default=7)
    p.add_argument("--eval", action="store_true", help="the importance-sampled log-likelihood instead")
    p.add_argument("--eval-images", type=int, default=20)
    p.add_argument("--k", type=int, default=5000)
    p.add_argument("--all", action="store_true", help="MLP at 100 and 1000, conv at 100, eval")
    p.add_argument("--profile", type=int, default=0, metavar="ROWS",
                   help="also profile one block of training steps: the ROWS costliest operators")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--compile", action="store_true", help="aevb's step with compile=True (torch.compile)")
    p.add_argument("--peer", action="store_true",
                   help="MLP training: also time the plain loop (benchmarks/peers/plain_loop.py) in every block")
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    if a.json:
        result_files.check(a.json, "floor.py")
    global DEVICE
    DEVICE = torch.device(a.device)
    res = {"command": result_files.command("floor.py", argv),
           "machine": machine(), "device": str(DEVICE), "results": []}
    if DEVICE.type == "cuda":
        res["machine"]["gpu"] = torch.cuda.get_device_name(DEVICE)
    jobs = ([("mlp", 100), ("mlp", 1000), ("conv", 100), "eval"] if a.all else
            ["eval"] if a.eval else [(a.net, a.batch)])
    for job in jobs:
        r = (measure_eval(a.eval_images, a.k, a.blocks) if job == "eval" else
             measure_training(job[0], job[1], a.steps if job[1] <= 100 else max(10, a.steps // 10), a.blocks,
                                  a.profile, a.compile, a.peer))
        res["results"].append(r)
        print(_line(r), flush=True)
        for name, us, calls in r.get("profile", []):
            print(f"  {us:9.1f} us/step  {calls:6.1f} calls/step  {name}")
    res["machine"]["load_after"] = round(os.getloadavg()[0], 2)
    if a.json:
        result_files.write(a.json, json.dumps(res, indent=2) + "\n", "floor.py")
    return 0


if __name__ == "__main__":
    sys.exit(main())
