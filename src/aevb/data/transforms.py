"""Pixel transforms. Images are float tensors in [0, 1], shape (N, C, H, W)."""
from __future__ import annotations

import torch
from torch import Tensor

BINARIZE = ("none", "static", "dynamic")


def binarize(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """One Bernoulli draw per pixel with the pixel's intensity as probability (stochastic
    binarization, as in Salakhutdinov & Murray 2008 and the IWAE paper).

    Drawn as 1[u < p 2^24] with u uniform on the integers 0..2^24-1, from 32 random bits per
    pixel: P(1) = ceil(p 2^24) / 2^24, the same 24-bit resolution as torch.bernoulli (which
    compares p with a float32 uniform), about twice as fast on CPU (benchmarks/README.md)."""
    n = x.numel()
    words = torch.empty((n + 1) // 2, dtype=torch.int64, device=x.device)
    words.random_(-(2 ** 63), None, generator=generator)  # 64 uniform random bits each
    u = words.view(torch.int32)[:n].view(x.shape) & 0xFFFFFF
    # u < p 2^24 <=> u < ceil(p 2^24) for integer u: compared as integers, written as floats
    # (the same draws as a float comparison, in one kernel instead of three)
    return torch.lt(u, (x * 2.0 ** 24).ceil_().to(torch.int32), out=torch.empty_like(x))


def salt_and_pepper(x: Tensor, rate: float, generator: torch.Generator | None = None) -> Tensor:
    """Set a fraction `rate` of the pixels, chosen at random, to 0 or 1 with equal chance."""
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"salt-and-pepper rate must be in [0, 1], got {rate}")
    hit = torch.rand(x.shape, generator=generator) < rate
    salt = torch.rand(x.shape, generator=generator) < 0.5
    return torch.where(hit, salt.to(x.dtype), x)


def noisy_inputs(rate: float):
    """A batch transform for a denoising model: x -> (x with a fraction `rate` of its pixels
    set to 0 or 1 at random (`salt_and_pepper`, drawn from the global RNG), the clean x as
    the target the model scores); rate 0: x -> (x, None), no target."""
    def transform(x: Tensor) -> tuple[Tensor, Tensor | None]:
        if rate == 0:
            return x, None
        return salt_and_pepper(x.cpu(), rate).to(x.device), x
    return transform
