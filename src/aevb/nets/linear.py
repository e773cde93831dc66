"""`Linear`: nn.Linear whose CPU float32 matmuls run in whichever of oneDNN and the default
BLAS (MKL) is faster for the layer's shape on this CPU, measured on first use.

Why: the faster kernel depends on the CPU. On older AMD EPYC machines we measured, MKL's
sgemm reached about half of oneDNN's rate at a VAE's shapes; on an Intel Xeon with
AVX-512/AMX, MKL was faster at every shape of the 784-400-400-20 VAE (forward, weight and
input gradients, batch 100 and 1000; benchmarks/README.md). So the first time a layer
sees inputs of a given (rows, in, out) shape, `use_onednn` times the three products of
forward and backward through both kernels, interleaved, best of a few, and remembers the
choice for the rest of the process: oneDNN only where it takes at most `MARGIN` of MKL's
time. A few milliseconds once per shape. AEVB_ONEDNN=0 / =1 fixes the choice (no
measurement).

The two kernels round differently, so the choice is part of a run's numerics. The margin
keeps it away from measurement noise: on an AMD EPYC (Zen 4) oneDNN was 5-9% faster at the
VAE's large shapes, single measurements ranged from 0 to 20% faster, and with a margin of
5% or 15% the choice, and so the trained weights, changed from one process to the next. A
checkpoint records the choices (`choices`) and a resumed run takes them back
(`restore_choices`), so that it continues bit for bit.

The layer is an ordinary nn.Linear (same parameters, same state dict); it falls back to
F.linear on GPU, for other dtypes or shapes, under autocast or torch.compile (which
chooses its own kernels), or when oneDNN's linear is missing or disagrees with F.linear.
`Sequential` runs a Linear followed by a ReLU as one autograd node where oneDNN computes
it, the ReLU applied in place: one node and one buffer fewer per layer.

    forward  y = x W^T + b                  (relu: y = max(x W^T + b, 0))
    backward dx = g W,  dW = g^T x,  db = sum_n g_n   (relu: g <- g * 1[y > 0] first)
"""
from __future__ import annotations

import math
import os
import re
import time

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# oneDNN where its time is at most this fraction of MKL's. Measured: ~0.5-0.6 on older AMD
# EPYCs, 0.91-0.95 on a Zen 4 (single measurements 0.80-1.00), above 1 on an Intel Xeon.
MARGIN = 0.75
_OK: bool | None = None
_CHOICE: dict[tuple[int, int, int], bool] = {}  # (rows, in, out) -> oneDNN computes it


def onednn_ok() -> bool:
    """Whether oneDNN's linear exists here, is allowed (AEVB_ONEDNN is not 0) and agrees
    with F.linear (checked once)."""
    global _OK
    if _OK is None:
        _OK = False
        if os.environ.get("AEVB_ONEDNN", "auto") != "0" and torch.backends.mkldnn.is_available():
            try:
                g = torch.Generator().manual_seed(0)
                x, w, b = (torch.randn(s, generator=g) for s in ((7, 5), (3, 5), (3,)))
                with torch.no_grad():
                    got = torch.ops.mkldnn._linear_pointwise(x, w, b, "none", [], "")
                _OK = bool(torch.allclose(got, F.linear(x, w, b), atol=1e-5))
            except (AttributeError, RuntimeError, NotImplementedError):
                pass
    return _OK


def use_onednn(rows: int, in_features: int, out_features: int) -> bool:
    """Whether oneDNN computes a (rows, in) x (in, out) layer: measured once per shape
    (see the module docstring), or fixed by AEVB_ONEDNN=0 / 1."""
    if not onednn_ok():
        return False
    if os.environ.get("AEVB_ONEDNN", "auto") == "1":
        return True
    key = (rows, in_features, out_features)
    if key not in _CHOICE:
        _CHOICE[key] = _measure(*key)
    return _CHOICE[key]


def choices() -> dict[str, bool]:
    """The kernel chosen so far for each shape, {"ROWSxINxOUT": oneDNN?}: what a checkpoint
    saves."""
    return {"x".join(map(str, k)): v for k, v in _CHOICE.items()}


def are_choices(saved) -> bool:
    """Whether `saved` has the form `choices` returns (checked before a resume takes it back)."""
    return isinstance(saved, dict) and all(
        isinstance(v, bool) and re.fullmatch(r"[0-9]{1,9}x[0-9]{1,9}x[0-9]{1,9}", k) for k, v in saved.items())


def restore_choices(saved: dict[str, bool]) -> None:
    """Take back the choices `choices` returned (a resumed run computes with the kernels it
    started with); shapes not in `saved` are measured when first used, as usual."""
    for key, onednn in saved.items():
        _CHOICE[tuple(int(n) for n in key.split("x"))] = bool(onednn)


def _measure(rows: int, n_in: int, n_out: int, rounds: int = 5) -> bool:
    """True where oneDNN's forward + backward products take at most `MARGIN` of torch.mm's
    time (best of `rounds`, the two kernels alternating)."""
    g = torch.Generator().manual_seed(0)
    a, w, d = (torch.randn(s, generator=g) for s in ((rows, n_in), (n_out, n_in), (rows, n_out)))
    plain = (lambda: torch.mm(a, w.t()), lambda: torch.mm(d.t(), a), lambda: torch.mm(d, w))
    fast = (lambda: _mm(a, w), lambda: _mm(d.t(), a.t()), lambda: _mm(d, w.t()))
    best = [math.inf, math.inf]
    with torch.no_grad():
        for _ in range(rounds + 1):  # the first round warms both up
            for i, products in enumerate((plain, fast)):
                t = time.perf_counter()
                for f in products:
                    f()
                best[i] = min(best[i], time.perf_counter() - t)
    return best[1] <= MARGIN * best[0]


def _mm(a: Tensor, w: Tensor, b: Tensor | None = None) -> Tensor:
    """a @ w^T (+ b) in oneDNN."""
    return torch.ops.mkldnn._linear_pointwise(a, w, b, "none", [], "")


def affine(x: Tensor, w: Tensor, b: Tensor | None, onednn: bool, out: Tensor | None = None) -> Tensor:
    """x W^T + b, in oneDNN or through torch.addmm (torch.mm without a bias); `out`: write
    the result there (the torch.mm kernels only; oneDNN returns a new tensor)."""
    if onednn:
        return _mm(x, w, b)
    if b is None:
        return torch.mm(x, w.t(), out=out)
    return torch.addmm(b, x, w.t(), out=out)


def weight_grad(g: Tensor, x: Tensor, onednn: bool, out: Tensor | None = None) -> Tensor:
    """g^T x; oneDNN reads the transposed operands through their strides (no copies)."""
    return _mm(g.t(), x.t()) if onednn else torch.mm(g.t(), x, out=out)


def input_grad(g: Tensor, w: Tensor, onednn: bool, out: Tensor | None = None) -> Tensor:
    """g W."""
    return _mm(g, w.t()) if onednn else torch.mm(g, w, out=out)


class _OneDNNLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, relu=False):
        y = affine(x.contiguous(), weight, bias, onednn=True)
        if relu:  # in place; not oneDNN's relu post-op, which turns NaN into 0 and would hide it
            y.relu_()
        ctx.save_for_backward(x, weight, y if relu else None)
        ctx.has_bias = bias is not None
        return y

    @staticmethod
    def backward(ctx, g):
        x, weight, y = ctx.saved_tensors
        g = (g if y is None else torch.ops.aten.threshold_backward(g, y, 0)).contiguous()
        gx = input_grad(g, weight, onednn=True) if ctx.needs_input_grad[0] else None
        gw = weight_grad(g, x, onednn=True) if ctx.needs_input_grad[1] else None
        gb = g.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return gx, gw, gb, None


class Linear(nn.Linear):
    """nn.Linear, computed by oneDNN for 2-D float32 CPU inputs where that is faster (see the
    module docstring)."""

    def onednn_for(self, x: Tensor) -> bool:
        """Whether oneDNN computes this layer's products for input `x`."""
        return (x.dim() == 2 and x.dtype == torch.float32 and x.device.type == "cpu"
                and self.weight.dtype == torch.float32
                and not torch.is_autocast_enabled("cpu") and not torch.compiler.is_compiling()
                and use_onednn(x.shape[0], self.in_features, self.out_features))

    def forward(self, x: Tensor, relu: bool = False) -> Tensor:
        """x W^T + b, or relu(x W^T + b) with `relu`."""
        if self.onednn_for(x):
            return _OneDNNLinear.apply(x, self.weight, self.bias, relu)
        y = F.linear(x, self.weight, self.bias)
        return y.relu_() if relu else y  # in place: y is ours, and addmm's backward does not need it


class Sequential(nn.Sequential):
    """nn.Sequential (same modules, same state dict) that runs each `Linear` directly
    followed by an nn.ReLU as one fused layer."""

    def forward(self, x: Tensor) -> Tensor:
        layers, i = list(self), 0
        while i < len(layers):
            layer = layers[i]
            if isinstance(layer, Linear) and i + 1 < len(layers) and type(layers[i + 1]) is nn.ReLU:
                x, i = layer(x, relu=True), i + 2
            else:
                x, i = layer(x), i + 1
        return x
