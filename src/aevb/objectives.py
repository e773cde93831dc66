"""Objectives. Conventions: log-likelihoods are summed over pixels and latent units and
returned per example (shape (N,)), in nats; losses are their negated mean over examples.

- ELBO (Kingma & Welling eq. 3):  L(x) = E_q[log p(x|z)] - KL(q(z|x) || p(z)),
  estimated with one reparameterized sample z ~ q(z|x) (SGVB). The training loss weighs the
  KL term by `beta` (1 unless set); the reported ELBO is always the true bound (beta = 1).
- IWAE bound (Burda et al.): L_K(x) = log 1/K sum_k p(x, z_k) / q(z_k|x), z_k ~ q(z|x);
  L_1 = ELBO <= L_K <= log p(x), and L_K -> log p(x) as K grows.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.distributions import kl_divergence


def elbo(model, x: Tensor, y: Tensor | None = None, target: Tensor | None = None,
         kl: str = "analytic") -> dict[str, Tensor]:
    """Per-example ELBO and its two terms: {"elbo", "rec" = log p(x|z), "kl"}, each (N,).

    `target` is the image whose likelihood is scored (defaults to `x`); a denoising VAE
    encodes a corrupted `x` and scores the clean `target`. `kl="analytic"` uses the closed
    form, `kl="mc"` the single-sample estimate log q(z|x) - log p(z).
    """
    q = model.encode(x, y)
    z = q.rsample()
    rec = model.decode(z, y).log_prob(x if target is None else target)
    prior = model.prior(x.device, x.dtype)
    if kl == "analytic":
        k = kl_divergence(q, prior)
    elif kl == "mc":
        k = q.log_prob(z) - prior.log_prob(z)
    else:
        raise ValueError(f"kl must be 'analytic' or 'mc', got {kl!r}")
    return {"elbo": rec - k, "rec": rec, "kl": k}


def log_weights(model, x: Tensor, k: int, y: Tensor | None = None) -> Tensor:
    """log w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x) for K samples z_k ~ q(z|x); (K, N).

    All K samples go through the decoder as one batch of K*N rows (one large matmul)."""
    q = model.encode(x, y)
    z = q.sample((k,))                                  # (K, N, D)
    n = x.shape[0]
    yk = None if y is None else y.expand(k, *y.shape).reshape(k * n, *y.shape[1:])
    p = model.decode(z.reshape(k * n, -1), yk)
    log_px_z = p.log_prob(x.expand(k, *x.shape).reshape(k * n, *x.shape[1:])).view(k, n)
    return log_px_z + model.prior(x.device, x.dtype).log_prob(z) - q.log_prob(z)


def iwae_bound(model, x: Tensor, k: int, y: Tensor | None = None) -> Tensor:
    """Per-example L_K = logsumexp_k(log w_k) - log K (stable: never exponentiates a raw weight)."""
    return torch.logsumexp(log_weights(model, x, k, y), dim=0) - math.log(k)
