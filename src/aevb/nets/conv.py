"""Convolutional encoder / transposed-convolutional decoder, shapes inferred from the input.

The encoder halves the image with stride-2 4x4 convolutions while both sides are even and
larger than 4 (28 -> 14 -> 7; 32 -> 16 -> 8 -> 4; 64 -> ... -> 4; 128 -> ... -> 4; 8 -> 4),
then one linear layer gives the latent parameters. The decoder mirrors it: a linear layer
to the smallest feature map, then stride-2 4x4 transposed convolutions that double it back
to exactly the input's height and width. Works for 1 or 3 channels and any such size.

`hidden` lists the channels per level, from the image inward (e.g. [32, 64]); missing
levels double the last entry (capped at 512), extra entries are ignored.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .linear import Linear, Sequential

from .mlp import activation


def levels(height: int, width: int) -> int:
    """Number of stride-2 halvings for an image of this size (see the module docstring)."""
    n = 0
    while height % 2 == 0 and width % 2 == 0 and min(height, width) > 4:
        height, width, n = height // 2, width // 2, n + 1
    return n


def channels(hidden, n: int) -> list[int]:
    hidden = [int(h) for h in hidden] or [32]
    out = hidden[:n]
    while len(out) < n:
        out.append(min(512, out[-1] * 2))
    return out


class ConvEncoder(nn.Module):
    """x (N, C, H, W) [+ condition (N, cond_dim)] -> (N, out_features)."""

    def __init__(self, input_shape, out_features: int, hidden=(32, 64), act="relu", cond_dim=0):
        super().__init__()
        c, h, w = input_shape
        n = levels(h, w)
        chans = channels(hidden, n)
        layers: list[nn.Module] = []
        for a, b in zip([c, *chans[:-1]], chans):
            layers += [nn.Conv2d(a, b, 4, 2, 1), activation(act)]
        self.features = nn.Sequential(*layers)
        self.feature_shape = (chans[-1] if n else c, h >> n, w >> n)
        feat = self.feature_shape[0] * self.feature_shape[1] * self.feature_shape[2]
        self.head = Linear(feat + cond_dim, out_features)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        h = self.features(x).flatten(1)
        if cond is not None:
            h = torch.cat([h, cond], dim=1)
        return self.head(h)


class ConvDecoder(nn.Module):
    """z (N, in_features) -> (N, out_channels, H, W) per-pixel distribution parameters."""

    def __init__(self, input_shape, in_features: int, out_channels: int, hidden=(32, 64), act="relu"):
        super().__init__()
        c, h, w = input_shape
        n = levels(h, w)
        chans = channels(hidden, n)
        self.start = (chans[-1] if n else out_channels, h >> n, w >> n)
        self.head = Sequential(Linear(in_features, self.start[0] * self.start[1] * self.start[2]),
                               *([activation(act)] if n else []))
        layers: list[nn.Module] = []
        rev = list(reversed(chans))
        for i, (a, b) in enumerate(zip(rev, [*rev[1:], out_channels])):
            layers.append(nn.ConvTranspose2d(a, b, 4, 2, 1))
            if i < n - 1:
                layers.append(activation(act))
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(self.head(z).view(-1, *self.start))
