"""Fully connected encoder / decoder (Kingma & Welling's MLPs)."""
from __future__ import annotations

import functools
import math

import torch
from torch import Tensor, nn

from .linear import Linear, Sequential

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU, "gelu": nn.GELU,
               "softplus": nn.Softplus, "leaky_relu": nn.LeakyReLU, "sigmoid": nn.Sigmoid,
               "gated": functools.partial(nn.GLU, dim=1)}
#: activations that take twice their width: "gated" is h = a * sigmoid(g) for the two halves
#: [a, g] of the layer before it (a gated linear unit, Dauphin et al. 2017; the GatedDense
#: layers of Tomczak & Welling's VampPrior experiments), so a hidden layer of n units is a
#: Linear to 2n outputs
WIDTH = {"gated": 2}


def activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def mlp(sizes: list[int], act: str) -> Sequential:
    """Linear layers of the given sizes with `act` between them (none after the last); a
    Linear + ReLU pair runs as one fused layer (see `nets.linear`). A gated activation's
    Linear gives twice the layer's size (`WIDTH`)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        hidden = i < len(sizes) - 2
        layers.append(Linear(a, b * WIDTH.get(act, 1) if hidden else b))
        if hidden:
            layers.append(activation(act))
    return Sequential(*layers)


class MLPEncoder(nn.Module):
    """x (N, C, H, W) [+ condition (N, cond_dim)] -> (N, out_features): one flat head, so the
    mean and log-variance come from a single matmul."""

    def __init__(self, input_shape, out_features: int, hidden=(400, 400), act="relu", cond_dim=0):
        super().__init__()
        self.net = mlp([math.prod(input_shape) + cond_dim, *hidden, out_features], act)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        h = x.flatten(1)
        if cond is not None:
            h = torch.cat([h, cond], dim=1)
        return self.net(h)


class MLPDecoder(nn.Module):
    """z (N, latent_dim) -> (N, out_channels, H, W) per-pixel distribution parameters."""

    def __init__(self, input_shape, in_features: int, out_channels: int, hidden=(400, 400), act="relu"):
        super().__init__()
        _, h, w = input_shape
        self.out_shape = (out_channels, h, w)
        self.net = mlp([in_features, *reversed(hidden), out_channels * h * w], act)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z).view(-1, *self.out_shape)
