"""Objectives. Conventions: log-likelihoods are summed over pixels and latent units and
returned per example (shape (N,)), in nats; losses are their negated mean over examples.

- ELBO (Kingma & Welling eq. 3):  L(x) = E_q[log p(x|z)] - KL(q(z|x) || p(z)),
  estimated with one reparameterized sample z ~ q(z|x) (SGVB). The training loss weighs the
  KL term by `beta` (1 unless set); the reported ELBO is always the true bound (beta = 1).
- IWAE bound (Burda et al.): L_K(x) = log 1/K sum_k p(x, z_k) / q(z_k|x), z_k ~ q(z|x);
  L_1 = ELBO <= L_K <= log p(x), and L_K -> log p(x) as K grows.
- Discrete latents (z in {0, 1}^D), which cannot be reparameterized:
  * score function / REINFORCE (Williams 1992; Mnih & Gregor 2014, "NVIL"):
    grad_phi E_q[f(z)] = E_q[(f(z) - b(x)) grad_phi log q(z|x)] for any baseline b(x) that
    does not depend on z; `score_function_elbo` returns a surrogate whose gradient is that
    estimate (encoder) plus ordinary backprop (decoder, analytic KL);
  * straight-through Gumbel-sigmoid (Jang et al. 2017; Maddison et al. 2017): the forward
    pass uses an exact sample of q, the backward pass the gradient of a relaxed sample;
    biased gradients, but the reported ELBO is exact.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.distributions import kl_divergence


def _terms(model, q, z: Tensor, x: Tensor, y, target, kl: str) -> dict[str, Tensor]:
    rec = model.decode(z, y).log_prob(x if target is None else target)
    prior = model.prior(x.device, x.dtype)
    if kl == "analytic":
        k = kl_divergence(q, prior)
    elif kl == "mc":
        k = q.log_prob(z) - prior.log_prob(z)
    else:
        raise ValueError(f"kl must be 'analytic' or 'mc', got {kl!r}")
    return {"elbo": rec - k, "rec": rec, "kl": k}


def elbo(model, x: Tensor, y: Tensor | None = None, target: Tensor | None = None,
         kl: str = "analytic") -> dict[str, Tensor]:
    """Per-example ELBO and its two terms: {"elbo", "rec" = log p(x|z), "kl"}, each (N,).

    `target` is the image whose likelihood is scored (defaults to `x`); a denoising VAE
    encodes a corrupted `x` and scores the clean `target`. `kl="analytic"` uses the closed
    form, `kl="mc"` the single-sample estimate log q(z|x) - log p(z). z is reparameterized
    where the latent family allows it (gradients flow through z), else a plain sample (the
    values are the same; use `score_function_elbo` to train such a model).
    """
    q = model.encode(x, y)
    z = q.rsample() if q.has_rsample else q.sample()
    return _terms(model, q, z, x, y, target, kl)


def score_function_elbo(model, x: Tensor, y: Tensor | None = None, target: Tensor | None = None,
                        kl: str = "analytic", baseline: Tensor | float = 0.0,
                        beta: float = 1.0) -> tuple[dict[str, Tensor], Tensor, Tensor]:
    """ELBO terms for a latent family without reparameterization, with the REINFORCE surrogate.

    Returns (terms, surrogate, signal), each per example (N,):
    - terms: {"elbo", "rec", "kl"} exactly as `elbo` (the values are an unbiased ELBO estimate);
    - signal: the learning signal f = log p(x|z) (minus beta (log q - log p) when kl="mc"),
      detached;
    - surrogate = rec - beta kl + (f - baseline) log q(z|x): its gradient is, for the
      decoder, the ordinary gradient of log p(x|z); for the encoder, the analytic gradient
      of -beta KL plus the score-function estimate (f - b) grad log q(z|x), unbiased for any
      `baseline` b that does not depend on z (a constant or a function of x, detached).
    Minimize -surrogate.mean() (nats per example)."""
    q = model.encode(x, y)
    z = q.sample()
    terms = _terms(model, q, z, x, y, target, kl)
    log_q = q.log_prob(z)
    signal = terms["rec"].detach()
    if kl == "mc":
        signal = signal - beta * terms["kl"].detach()
    baseline = baseline.detach() if torch.is_tensor(baseline) else baseline
    surrogate = terms["rec"] - beta * terms["kl"] + (signal - baseline) * log_q
    return terms, surrogate, signal


def straight_through_bernoulli(q, temperature: float = 0.5) -> Tensor:
    """A sample z ~ q(z|x) of a factorized Bernoulli whose gradient is that of the
    Gumbel-sigmoid (binary concrete) relaxation sigmoid((l + L) / temperature), L logistic
    noise: the forward value 1[l + L > 0] is an exact Bernoulli(sigmoid(l)) draw."""
    logits = q.base_dist.logits
    u = torch.rand_like(logits).clamp_(1e-6, 1 - 1e-6)
    noisy = logits + (u.log() - (-u).log1p())
    soft = torch.sigmoid(noisy / temperature)
    hard = (noisy > 0).to(logits.dtype)
    return hard + (soft - soft.detach())  # exactly `hard` forward, d soft backward


def straight_through_elbo(model, x: Tensor, y: Tensor | None = None, target: Tensor | None = None,
                          kl: str = "analytic", temperature: float = 0.5) -> dict[str, Tensor]:
    """`elbo` for a factorized-Bernoulli latent with a straight-through Gumbel sample: the
    values are exact (an unbiased ELBO estimate), the encoder gradients biased but low-variance."""
    q = model.encode(x, y)
    return _terms(model, q, straight_through_bernoulli(q, temperature), x, y, target, kl)


def log_weight_terms(model, x: Tensor, k: int, y: Tensor | None = None,
                     target: Tensor | None = None, rsample: bool = False):
    """(log p(x|z_k), log p(z_k), log q(z_k|x)), each (K, N), for K samples z_k ~ q(z|x)
    (reparameterized if `rsample`). All K samples go through the decoder as one batch of
    K*N rows (one large matmul)."""
    q = model.encode(x, y)
    z = q.rsample((k,)) if rsample else q.sample((k,))  # (K, N, D)
    n = x.shape[0]
    yk = None if y is None else y.expand(k, *y.shape).reshape(k * n, *y.shape[1:])
    t = x if target is None else target
    p = model.decode(z.reshape(k * n, -1), yk)
    log_px_z = p.log_prob(t.expand(k, *t.shape).reshape(k * n, *t.shape[1:])).view(k, n)
    return log_px_z, model.prior(x.device, x.dtype).log_prob(z), q.log_prob(z)


def log_weights(model, x: Tensor, k: int, y: Tensor | None = None) -> Tensor:
    """log w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x) for K samples z_k ~ q(z|x); (K, N)."""
    log_px_z, log_pz, log_qz = log_weight_terms(model, x, k, y)
    return log_px_z + log_pz - log_qz


def iwae_terms(model, x: Tensor, k: int, y: Tensor | None = None, target: Tensor | None = None,
               beta: float = 1.0) -> dict[str, Tensor]:
    """The IWAE bound as a training objective, with reparameterized samples, per example (N,):
    {"iwae": L_K, "elbo": mean_k log w_k (the 1-sample ELBO, estimated with K samples),
    "rec": mean_k log p(x|z_k), "kl": mean_k log q(z_k|x) - log p(z_k)} and "loss_terms" =
    L_K with beta weighing log p(z) - log q(z|x) inside every weight (= "iwae" at beta 1).
    Differentiating logsumexp directly gives the IWAE gradient sum_k w~_k grad log w_k with
    normalized weights w~ that need no detaching by hand."""
    log_px_z, log_pz, log_qz = log_weight_terms(model, x, k, y, target, rsample=True)
    kl = log_qz - log_pz
    lw = log_px_z - kl
    out = {"iwae": torch.logsumexp(lw, 0) - math.log(k), "elbo": lw.mean(0),
           "rec": log_px_z.mean(0), "kl": kl.mean(0)}
    out["loss_terms"] = out["iwae"] if beta == 1 else torch.logsumexp(log_px_z - beta * kl, 0) - math.log(k)
    return out


def iwae_bound(model, x: Tensor, k: int, y: Tensor | None = None) -> Tensor:
    """Per-example L_K = logsumexp_k(log w_k) - log K (stable: never exponentiates a raw weight)."""
    return torch.logsumexp(log_weights(model, x, k, y), dim=0) - math.log(k)
