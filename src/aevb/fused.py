"""The ELBO training step of the plain MLP VAE, written out by hand: forward pass, loss and
backward pass as ~45 tensor operations, with no autograd graph, the gradients written into
the parameters' `.grad`. The plain computation it replaces is `VAE.objective` (through
`aevb.objectives.elbo` and torch.distributions) followed by `loss.backward()`;
tests/test_fused.py checks that both give the same terms and gradients.

Why: at batch 100 the products of this model take ~2.9 ms and Adam ~0.6 ms on the 2-core
CPU, while the step through autograd took ~6.5 ms: the rest was the ~500 small operations of
the distributions, the loss and autograd's bookkeeping (benchmarks/README.md, "The step
against its floor"). Written out, the step runs the same products plus ~30 elementwise
operations and sums: 55-57% of the floor instead of 47-50% (benchmarks/floor.py).

It covers the model that `VAE.fused_step` declares it for: an MLP encoder and decoder of
Linear layers with ReLU between them, the diagonal Gaussian posterior with the standard
normal prior and the analytic KL, Bernoulli pixels, the ELBO objective, no conditioning
labels, no hooks on its modules or parameters (`hooked`), no subclass that changes
`objective`, `encode` or `decode`. Training uses it for fp32 steps outside torchrun and
torch.compile; AEVB_FUSED=0 turns it off. Notation (N examples, beta the KL weight):

    encoder   h_0 = x,  h_l = relu(h_{l-1} W_l^T + b_l),  [mu, lv] = last layer (no relu)
    sample    s = exp(lv / 2),  z = mu + s * eps,  eps ~ N(0, I)   (the same draws as q.rsample())
    decoder   the same layers from z to the logits l
    terms     rec_i = sum_d [x_d l_d - softplus(l_d)]   (minus the cross-entropy with logits)
              kl_i = 1/2 sum_j (mu^2 + s^2 - lv - 1)
              loss = -1/N sum_i (rec_i - beta kl_i)
    backward  dL/dl = (sigmoid(l) - x) / N
              a layer: dW = g^T h_in,  db = sum_n g_n,  g_in = (g W) * 1[h_in > 0]
              dL/dmu = dz + beta mu / N,  dL/dlv = dz * eps * s / 2 + beta (s^2 - 1) / (2N)
"""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules import module as torch_module

from .nets.linear import Linear, affine, input_grad, weight_grad


def enabled() -> bool:
    """Whether the fused step may be used (AEVB_FUSED=0 turns it off)."""
    return os.environ.get("AEVB_FUSED", "1").strip() != "0"


def hooked(module: nn.Module) -> bool:
    """Whether `module`, a submodule or a parameter has hooks (forward, backward or
    gradient), or any module hook is registered globally: the fused step would bypass them."""
    if (torch_module._global_forward_hooks or torch_module._global_forward_pre_hooks
            or torch_module._global_backward_hooks or torch_module._global_backward_pre_hooks):
        return True
    for m in module.modules():
        if m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks:
            return True
    return any(p._backward_hooks or p._post_accumulate_grad_hooks for p in module.parameters())


def relu_layers(net: nn.Module) -> list[Linear] | None:
    """The Linear layers of `net` if it is exactly Linear, ReLU, Linear, ..., Linear (the
    layers this step knows how to differentiate), else None."""
    layers = list(net)
    linears, relus = layers[0::2], layers[1::2]
    if (len(layers) % 2 == 1 and all(type(m) is Linear and m.bias is not None for m in linears)
            and all(type(m) is nn.ReLU for m in relus)):
        return linears
    return None


class FusedELBO:
    """`step(x, target, beta, on_grad=None)`: the terms of `VAE.objective` ("elbo", "rec",
    "kl" per example and "loss", all without gradient), with the loss's gradients written
    into the parameters' `.grad`, replacing what was there (as zero_grad and backward
    would). Built by `VAE.fused_step` from its encoder's and decoder's layers.

    The gradients are written into the existing `.grad` tensors and the activations into
    buffers kept between steps (a workspace per batch shape): at batch 100, a weight gradient
    of 784 x 400 written into a freshly allocated tensor took twice as long as into one
    already in use (benchmarks/README.md)."""

    def __init__(self, encoder: list[Linear], decoder: list[Linear], latent_dim: int):
        self.encoder, self.decoder, self.latent_dim = encoder, decoder, latent_dim
        self.workspace: dict = {}

    def buffer(self, name: str, shape, like: Tensor) -> Tensor:
        """The workspace tensor `name` of `shape` (made on first use)."""
        key = (name, tuple(shape), like.dtype, like.device)
        if key not in self.workspace:
            self.workspace[key] = torch.empty(shape, dtype=like.dtype, device=like.device)
        return self.workspace[key]

    @torch.no_grad()
    def step(self, x: Tensor, target: Tensor | None, beta: float, on_grad=None) -> dict:
        x = x.flatten(1)
        t = x if target is None else target.flatten(1).to(x.dtype)
        n, d = x.shape[0], self.latent_dim
        out, enc_in = self.forward("enc", self.encoder, x)
        mu, lv = out[:, :d], out[:, d:]
        s = (0.5 * lv).exp()
        eps = torch.empty_like(mu).normal_()
        z = mu + eps * s
        logits, dec_in = self.forward("dec", self.decoder, z)
        rec = F.binary_cross_entropy_with_logits(logits, t, reduction="none").sum(1).neg_()
        s2 = s.square()
        kl = 0.5 * (mu.square() + s2 - lv - 1).sum(1)
        g = torch.sigmoid(logits, out=self.buffer("dlogits", logits.shape, x)).sub_(t).mul_(1.0 / n)
        dz = self.backward("dec", self.decoder, dec_in, g, True, on_grad)
        g = self.buffer("dout", out.shape, x)
        torch.add(dz, mu, alpha=beta / n, out=g[:, :d])
        torch.mul(dz, eps, out=g[:, d:]).mul_(s).mul_(0.5).add_(s2.sub_(1.0), alpha=0.5 * beta / n)
        self.backward("enc", self.encoder, enc_in, g, False, on_grad)
        return {"elbo": rec - kl, "rec": rec, "kl": kl, "loss": (beta * kl - rec).mean()}

    def forward(self, name: str, layers: list[Linear], h: Tensor) -> tuple[Tensor, list[tuple[Tensor, bool]]]:
        """The output of the layers (ReLU between them) and, per layer, its input and whether
        oneDNN computes its products (the backward pass uses the same kernel)."""
        inputs = []
        for i, layer in enumerate(layers):
            onednn = layer.onednn_for(h)
            inputs.append((h, onednn))
            out = self.buffer(f"{name}{i}", (h.shape[0], layer.out_features), h)
            h = affine(h, layer.weight, layer.bias, onednn, out=out)
            if i < len(layers) - 1:
                h.relu_()
        return h, inputs

    def backward(self, name: str, layers: list[Linear], inputs: list[tuple[Tensor, bool]], g: Tensor,
                 input_grad_wanted: bool, on_grad=None) -> Tensor | None:
        """Write the gradients of the layers' parameters, given g = dL/d(output), into their
        `.grad`, calling `on_grad(parameter)` after each (as autograd calls a parameter's
        post-accumulate-grad hooks); returns dL/d(input of the first layer) if wanted."""
        for i in reversed(range(len(layers))):
            layer, (h, onednn) = layers[i], inputs[i]
            _set_grad(layer.weight, weight_grad(g, h, onednn, out=layer.weight.grad), on_grad)
            _set_grad(layer.bias, torch.sum(g, 0, out=layer.bias.grad), on_grad)
            if i == 0 and not input_grad_wanted:
                return None
            g = input_grad(g, layer.weight, onednn, out=self.buffer(f"d{name}{i}", h.shape, h))
            if i > 0:  # through the ReLU that made h, in place
                torch.ops.aten.threshold_backward.grad_input(g, h, 0, grad_input=g)
        return g


def _set_grad(p: Tensor, g: Tensor, on_grad) -> None:
    if p.grad is not g:
        p.grad = g
    if on_grad is not None:
        on_grad(p)
