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
`hidden` lists the channels per level from the image inward (e.g. [32, 64, 128]), completed
as in `conv.channels`. Budget, measured for docs/colour.md: see there.
"""
from __future__ import annotations

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


class ResConvEncoder(nn.Module):
    """x (N, C, H, W) [+ condition (N, cond_dim)] -> (N, out_features)."""

    def __init__(self, input_shape, out_features: int, hidden=(32, 64, 128), act="relu", cond_dim=0):
        super().__init__()
        c, h, w = input_shape
        n = levels(h, w)
        chans = channels(hidden, max(n, 1))
        layers: list[nn.Module] = [nn.Conv2d(c, chans[0], 3, 1, 1)]
        for a, b in zip(chans, chans[1:] + chans[-1:]) if n else []:
            layers += [ResBlock(a, act), nn.Conv2d(a, b, 4, 2, 1)]
        layers += [ResBlock(chans[-1], act), activation(act)]
        self.features = nn.Sequential(*layers)
        self.feature_shape = (chans[-1], h >> n, w >> n)
        feat = self.feature_shape[0] * self.feature_shape[1] * self.feature_shape[2]
        self.head = Linear(feat + cond_dim, out_features)

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
        self.head = Linear(in_features, self.start[0] * self.start[1] * self.start[2])
        layers: list[nn.Module] = []
        for a, b in zip(chans[:1] + chans[:-1], chans) if n else []:
            layers += [ResBlock(a, act), nn.ConvTranspose2d(a, b, 4, 2, 1)]
        layers += [ResBlock(chans[-1], act), activation(act), nn.Conv2d(chans[-1], out_channels, 3, 1, 1)]
        self.net = nn.Sequential(*layers)
        if out_bias is not None:  # per group of channels (a likelihood's `initial_output`)
            with torch.no_grad():
                self.net[-1].bias.copy_(torch.tensor(out_bias).repeat_interleave(out_channels // len(out_bias)))

    def forward(self, z: Tensor) -> Tensor:
        return self.net(self.head(z).view(-1, *self.start))
