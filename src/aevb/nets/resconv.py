"""Residual convolutional encoder / decoder for colour images of 32-128 px (`net: resconv`).

Depth follows the image size as in `conv.levels`: the encoder halves the image with stride-2
4x4 convolutions down to 4x4 (32 px: 3 levels, 64: 4, 128: 5), each level a residual block
(x + conv3x3(act(conv3x3(act(x))))) before the halving; one linear layer gives the latent
parameters from the 4x4 map. The decoder mirrors it: a linear layer to the 4x4 map, then per
level a residual block and a stride-2 4x4 transposed convolution, and a 3x3 convolution to
the per-pixel parameters. The residual blocks start as the identity (their last convolution
is zero-initialized), so a deep net trains as stably as a shallow one.

The last layer's bias starts at `out_bias` (one value per group of channels, e.g. location
and log-scale: the likelihood's `initial_output`), so the first steps need not move it there.
`net: resconv_spatial` keeps the latent spatial: the encoder stops one level earlier (8x8
for 32-128 px) and a 3x3 convolution gives latent_dim / 64 maps of means and as many of
log-variances; the decoder starts from those maps. More of the image's layout stays in z,
so reconstructions are sharper; latent_dim must be a multiple of 64 (at 8x8).
`hidden` lists the channels per level from the image inward (e.g. [32, 64, 128]), completed
as in `conv.channels`. Budget, measured for docs/colour.md: see there.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .conv import channels, levels
from .linear import Linear
from .mlp import activation


class ResBlock(nn.Module):
    """x + conv3x3(act(conv3x3(act(x)))), channels kept; the identity at initialization."""

    def __init__(self, c: int, act: str = "relu"):
        super().__init__()
        self.body = nn.Sequential(activation(act), nn.Conv2d(c, c, 3, 1, 1),
                                  activation(act), nn.Conv2d(c, c, 3, 1, 1))
        nn.init.zeros_(self.body[-1].weight)
        nn.init.zeros_(self.body[-1].bias)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


def _stack(c: int, chans: list[int], n: int, act: str) -> nn.Sequential:
    """The encoder's body: 3x3 stem, n x (residual block, stride-2 4x4 conv), a last block."""
    layers: list[nn.Module] = [nn.Conv2d(c, chans[0], 3, 1, 1)]
    for a, b in zip(chans, chans[1:] + chans[-1:]) if n else []:
        layers += [ResBlock(a, act), nn.Conv2d(a, b, 4, 2, 1)]
    return nn.Sequential(*layers, ResBlock(chans[-1], act), activation(act))


def _unstack(chans: list[int], n: int, out_channels: int, act: str, out_bias) -> nn.Sequential:
    """The decoder's body (chans from the inside out): n x (residual block, stride-2 4x4
    transposed conv), a last block, a 3x3 conv to the parameters, its bias `out_bias`."""
    layers: list[nn.Module] = []
    for a, b in zip(chans[:1] + chans[:-1], chans) if n else []:
        layers += [ResBlock(a, act), nn.ConvTranspose2d(a, b, 4, 2, 1)]
    net = nn.Sequential(*layers, ResBlock(chans[-1], act), activation(act),
                        nn.Conv2d(chans[-1], out_channels, 3, 1, 1))
    if out_bias is not None:  # per group of channels (a likelihood's `initial_output`)
        with torch.no_grad():
            net[-1].bias.copy_(torch.tensor(out_bias).repeat_interleave(out_channels // len(out_bias)))
    return net


class ResConvEncoder(nn.Module):
    """x (N, C, H, W) [+ condition (N, cond_dim)] -> (N, out_features)."""

    def __init__(self, input_shape, out_features: int, hidden=(32, 64, 128), act="relu", cond_dim=0):
        super().__init__()
        c, h, w = input_shape
        n = levels(h, w)
        chans = channels(hidden, max(n, 1))
        self.features = _stack(c, chans, n, act)
        self.feature_shape = (chans[-1], h >> n, w >> n)
        self.head = Linear(math.prod(self.feature_shape) + cond_dim, out_features)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        h = self.features(x).flatten(1)
        if cond is not None:
            h = torch.cat([h, cond], dim=1)
        return self.head(h)


class ResConvDecoder(nn.Module):
    """z (N, in_features) -> (N, out_channels, H, W) per-pixel distribution parameters."""

    def __init__(self, input_shape, in_features: int, out_channels: int, hidden=(32, 64, 128), act="relu",
                 out_bias=None):
        super().__init__()
        c, h, w = input_shape
        n = levels(h, w)
        chans = list(reversed(channels(hidden, max(n, 1))))
        self.start = (chans[0], h >> n, w >> n)
        self.head = Linear(in_features, math.prod(self.start))
        self.net = _unstack(chans, n, out_channels, act, out_bias)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(self.head(z).view(-1, *self.start))


def _grid(input_shape, features: int, cond_dim: int) -> tuple[int, int, int]:
    """(levels, map height, map width) of a spatial latent: one level fewer than `levels`
    (an 8x8 map for 32, 64 and 128 px); `features` must fill whole channels of the map."""
    _, h, w = input_shape
    n = levels(h, w) - 1
    if n < 1 or cond_dim:
        raise ValueError("net resconv_spatial needs images of at least 16 px and no condition "
                         "(conditional: false); use net resconv")
    gh, gw = h >> n, w >> n
    if features % (gh * gw):
        raise ValueError(f"net resconv_spatial: latent_dim must be a multiple of {gh * gw} (a "
                         f"{gh}x{gw} map of latent channels), e.g. {gh * gw * 4}")
    return n, gh, gw


class SpatialResConvEncoder(nn.Module):
    """`net: resconv_spatial`: x -> the latent parameters as maps of one level above 4x4
    (8x8 for 32-128 px), flattened channel by channel: (N, out_features)."""

    def __init__(self, input_shape, out_features: int, hidden=(32, 64, 128), act="relu", cond_dim=0):
        super().__init__()
        n, gh, gw = _grid(input_shape, out_features // 2, cond_dim)
        chans = channels(hidden, n)
        self.features = _stack(input_shape[0], chans, n, act)
        self.head = nn.Conv2d(chans[-1], out_features // (gh * gw), 3, 1, 1)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        return self.head(self.features(x)).flatten(1)


class SpatialResConvDecoder(nn.Module):
    """z (N, latent_dim), read as latent_dim / (gh gw) maps of gh x gw -> per-pixel parameters."""

    def __init__(self, input_shape, in_features: int, out_channels: int, hidden=(32, 64, 128), act="relu",
                 out_bias=None):
        super().__init__()
        n, gh, gw = _grid(input_shape, in_features, 0)
        chans = list(reversed(channels(hidden, n)))
        self.start = (in_features // (gh * gw), gh, gw)
        self.head = nn.Conv2d(self.start[0], chans[0], 3, 1, 1)
        self.net = _unstack(chans, n, out_channels, act, out_bias)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(self.head(z.reshape(-1, *self.start)))
