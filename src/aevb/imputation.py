"""Filling in missing pixels with a density model (seed 000 sec. 3).

- `make_mask`: which pixels are missing (top-half, ..., random:P, square:S);
- `impute`: iterate encode -> decode on the missing part (pseudo-Gibbs, Rezende et al. 2014),
  or a Metropolis-within-Gibbs step on z that makes it a proper MCMC sampler of
  p(x_missing | x_observed) (Mattei & Frellsen 2018); a model without a density (an
  autoencoder) iterates its reconstruction;
- `missing_error`, `imputation_figure`: how well, and what it looks like.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch import Tensor

from .distributions import BernoulliLikelihood
from .models.base import check_shape

MASKS = ("top-half", "bottom-half", "left-half", "right-half", "random:P", "square:S")


def make_mask(spec: str, shape, n: int = 1, generator: torch.Generator | None = None) -> Tensor:
    """A boolean mask (n, C, H, W), True where a pixel is missing. `spec`: top-half,
    bottom-half, left-half, right-half (of the image), random:P (each pixel missing with
    probability P, drawn per image), square:S (a centered S x S square)."""
    c, h, w = shape
    m = torch.zeros(n, c, h, w, dtype=torch.bool)
    kind, _, arg = spec.partition(":")
    if kind == "top-half":
        m[:, :, : h // 2] = True
    elif kind == "bottom-half":
        m[:, :, h // 2:] = True
    elif kind == "left-half":
        m[:, :, :, : w // 2] = True
    elif kind == "right-half":
        m[:, :, :, w // 2:] = True
    elif kind == "random":
        p = _number(spec, arg, float)
        if not 0 < p < 1:
            raise ValueError(f"mask {spec!r}: the missing fraction must be in (0, 1)")
        m = (torch.rand(n, 1, h, w, generator=generator) < p).expand(n, c, h, w).clone()
    elif kind == "square":
        s = _number(spec, arg, int)
        if not 0 < s <= min(h, w):
            raise ValueError(f"mask {spec!r}: the side must be in 1..{min(h, w)}")
        top, left = (h - s) // 2, (w - s) // 2
        m[:, :, top:top + s, left:left + s] = True
    else:
        raise ValueError(f"unknown mask {spec!r}; choose one of {', '.join(MASKS)}")
    return m


def _number(spec, arg, kind):
    try:
        return kind(arg)
    except ValueError:
        raise ValueError(f"mask {spec!r}: expected a number after ':'") from None


@dataclasses.dataclass
class Imputation:
    filled: Tensor          # observed pixels kept, missing ones = posterior mean estimate
    last: Tensor            # the chain's last state (a sample of the missing pixels)
    acceptance: float | None = None  # Metropolis-within-Gibbs acceptance rate


@torch.no_grad()
def impute(model, x: Tensor, mask: Tensor, y: Tensor | None = None, iterations: int = 100,
           method: str = "gibbs", burn_in: int | None = None, seed: int = 0) -> Imputation:
    """Fill in the pixels where `mask` is True.

    method "gibbs" (pseudo-Gibbs): repeat z ~ q(z|x), x_miss ~ p(x_miss|z).
    method "mh" (Metropolis-within-Gibbs): propose z' ~ q(z|x) and accept it with probability
      min(1, p(x|z') p(z') q(z|x) / (p(x|z) p(z) q(z'|x))), then x_miss ~ p(x_miss|z).
    `filled` holds the average decoder mean on the missing pixels over the iterations after
    `burn_in` (default: half), an estimate of E[x_miss | x_obs]. A model without a density
    (an autoencoder) iterates x_miss <- reconstruction deterministically.
    """
    if method not in ("gibbs", "mh"):
        raise ValueError(f"method must be 'gibbs' or 'mh', got {method!r}")
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    check_shape(model, x)
    if model.latent_layers != 1:
        raise ValueError(f"imputation needs a model with one stochastic layer (its chain moves z of "
                         f"q(z|x) and p(x|z)); this {model.kind} model has {model.latent_layers}")
    mask = mask.expand_as(x)
    if model.num_classes and y is None:
        raise ValueError("a conditional model needs the images' labels to impute")
    model.eval()
    burn_in = iterations // 2 if burn_in is None else min(burn_in, iterations - 1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        cur = torch.where(mask, torch.rand_like(x), x)
        if isinstance(model.likelihood, BernoulliLikelihood):
            cur = torch.where(mask, torch.bernoulli(torch.full_like(x, 0.5)), x)
        total, count, z, moves = torch.zeros_like(x), 0, None, [0, 0]
        for it in range(iterations):
            p, new, z = _transition(model, cur, y, z, method, moves)
            cur = torch.where(mask, new, x)
            if it >= burn_in:
                total += p.mean
                count += 1
        filled = torch.where(mask, total / count, x)
    return Imputation(filled, cur, moves[0] / moves[1] if moves[1] else None)


def _transition(model, cur: Tensor, y, z, method: str, moves: list):
    """One step of the chain from the current images `cur`: (p(x|z) at the new z, the new
    values of the missing pixels, the new z); `moves` counts [accepted, proposed]."""
    if not model.has_density:
        p = model.decode(model.encode(cur, y).mean, y)
        return p, p.mean, None
    q = model.encode(cur, y)
    z_new = q.sample()
    if method == "mh" and z is not None:
        prior = model.prior()
        lt_new = model.decode(z_new, y).log_prob(cur) + prior.log_prob(z_new)
        lt_old = model.decode(z, y).log_prob(cur) + prior.log_prob(z)
        log_ratio = lt_new - lt_old + q.log_prob(z) - q.log_prob(z_new)
        accept = torch.rand_like(log_ratio).log() < log_ratio
        moves[0] += int(accept.sum())
        moves[1] += len(accept)
        z = torch.where(accept.unsqueeze(1), z_new, z)
    else:
        z = z_new
    p = model.decode(z, y)
    return p, p.sample(), z


def missing_error(filled: Tensor, x: Tensor, mask: Tensor) -> Tensor:
    """Mean squared error over the missing pixels, per image (N,)."""
    mask = mask.expand_as(x).to(x.dtype)
    return ((filled - x) ** 2 * mask).flatten(1).sum(1) / mask.flatten(1).sum(1).clamp(min=1)


def imputation_figure(path, x: Tensor, mask: Tensor, filled: Tensor, columns: int = 8) -> Path:
    """Rows of masked images (missing pixels gray), their imputations and the true images."""
    from . import plots
    mask = mask.expand_as(x)
    masked = torch.where(mask, torch.full_like(x, 0.5), x)
    n = len(x)
    cols = min(columns, n)
    rows = [t for i in range(0, n, cols) for t in (masked[i:i + cols], filled[i:i + cols], x[i:i + cols])]
    return plots.save_grid(path, torch.cat(rows), nrow=cols, title="masked / imputed / true")
