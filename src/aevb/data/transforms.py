"""Pixel transforms. Images are float tensors in [0, 1], shape (N, C, H, W)."""
from __future__ import annotations

import torch
from torch import Tensor

BINARIZE = ("none", "static", "dynamic")


def binarize(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """One Bernoulli draw per pixel with the pixel's intensity as probability (stochastic
    binarization, as in Salakhutdinov & Murray 2008 and the IWAE paper)."""
    return torch.bernoulli(x, generator=generator)


def salt_and_pepper(x: Tensor, rate: float, generator: torch.Generator | None = None) -> Tensor:
    """Set a fraction `rate` of the pixels, chosen at random, to 0 or 1 with equal chance."""
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"salt-and-pepper rate must be in [0, 1], got {rate}")
    hit = torch.rand(x.shape, generator=generator) < rate
    salt = torch.rand(x.shape, generator=generator) < 0.5
    return torch.where(hit, salt.to(x.dtype), x)
