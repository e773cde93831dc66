"""`Linear`: nn.Linear whose CPU float32 matmuls run in oneDNN rather than the default BLAS.

Why: on the AMD EPYC machines we measured, MKL's sgemm reaches about half of oneDNN's rate
at a VAE's shapes (benchmarks/README.md), and matmuls are most of a training step. The
layer is an ordinary nn.Linear (same parameters, same state dict); it falls back to
F.linear on GPU, for other dtypes or shapes, for layers with few inputs (where MKL is
faster), under autocast or torch.compile (which chooses its own kernels), or with
AEVB_ONEDNN=0.
`Sequential` runs a Linear followed by a ReLU as one autograd node, the ReLU applied in
place: one node and one buffer fewer per layer.

    forward  y = x W^T + b                  (relu: y = max(x W^T + b, 0))
    backward dx = g W,  dW = g^T x,  db = sum_n g_n   (relu: g <- g * 1[y > 0] first)
"""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_OK: bool | None = None
SMALL = 32  # layers with at most this many inputs (a VAE's z -> hidden) are faster in MKL:
# measured at batch 100, 20 -> 400: forward 14 against 20 us, dW 16 against 61 us


def onednn_ok() -> bool:
    """Whether oneDNN's linear exists here and agrees with F.linear (checked once)."""
    global _OK
    if _OK is None:
        _OK = False
        if os.environ.get("AEVB_ONEDNN", "1") != "0" and torch.backends.mkldnn.is_available():
            try:
                g = torch.Generator().manual_seed(0)
                x, w, b = (torch.randn(s, generator=g) for s in ((7, 5), (3, 5), (3,)))
                with torch.no_grad():
                    got = torch.ops.mkldnn._linear_pointwise(x, w, b, "none", [], "")
                _OK = bool(torch.allclose(got, F.linear(x, w, b), atol=1e-5))
            except (AttributeError, RuntimeError, NotImplementedError):
                pass
    return _OK


def _mm(a: Tensor, w: Tensor, b: Tensor | None = None) -> Tensor:
    """a @ w^T (+ b) in oneDNN."""
    return torch.ops.mkldnn._linear_pointwise(a, w, b, "none", [], "")


class _OneDNNLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, relu=False):
        y = _mm(x.contiguous(), weight, bias)
        if relu:  # in place; not oneDNN's relu post-op, which turns NaN into 0 and would hide it
            y.relu_()
        ctx.save_for_backward(x, weight, y if relu else None)
        ctx.has_bias = bias is not None
        return y

    @staticmethod
    def backward(ctx, g):
        x, weight, y = ctx.saved_tensors
        g = (g if y is None else torch.ops.aten.threshold_backward(g, y, 0)).contiguous()
        # oneDNN reads the transposed operands through their strides: no copies
        gx = _mm(g, weight.t()) if ctx.needs_input_grad[0] else None
        gw = _mm(g.t(), x.t()) if ctx.needs_input_grad[1] else None
        gb = g.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return gx, gw, gb, None


class Linear(nn.Linear):
    """nn.Linear, computed by oneDNN for 2-D float32 CPU inputs (see the module docstring)."""

    def forward(self, x: Tensor, relu: bool = False) -> Tensor:
        """x W^T + b, or relu(x W^T + b) with `relu`."""
        if (x.dim() == 2 and x.dtype == torch.float32 and x.device.type == "cpu"
                and self.in_features > SMALL and self.weight.dtype == torch.float32
                and not torch.is_autocast_enabled("cpu") and not torch.compiler.is_compiling()
                and onednn_ok()):
            return _OneDNNLinear.apply(x, self.weight, self.bias, relu)
        y = F.linear(x, self.weight, self.bias)
        return F.relu(y) if relu else y


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
