"""Objectives. Conventions: log-likelihoods are summed over pixels and latent units and
returned per example (shape (N,)), in nats; losses are their negated mean over examples.

- ELBO (Kingma & Welling eq. 3):  L(x) = E_q[log p(x|z)] - KL(q(z|x) || p(z)),
  estimated with one reparameterized sample z ~ q(z|x) (SGVB). The training loss weighs the
  KL term by `beta` (1 unless set); the reported ELBO is always the true bound (beta = 1).
- IWAE bound (Burda et al.): L_K(x) = log 1/K sum_k p(x, z_k) / q(z_k|x), z_k ~ q(z|x);
  L_1 = ELBO <= L_K <= log p(x), and L_K -> log p(x) as K grows. The log-weights
  log w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x) come from one function,
  `log_weight_terms`, which the IWAE objective and the importance-sampled log p(x) of
  `aevb.evaluation` share, through the model's declared `model.log_weight_terms` (this
  function for a one-layer model; a model with more stochastic layers, `aevb.models.HVAE`,
  declares its own: z = all its layers, p(z) and q(z|x) their products).
- Discrete latents (z in {0, 1}^D), which cannot be reparameterized:
  * score function / REINFORCE (Williams 1992; Mnih & Gregor 2014, "NVIL"):
    grad_phi E_q[f(z)] = E_q[(f(z) - b(x)) grad_phi log q(z|x)] for any baseline b(x) that
    does not depend on z; `score_function_elbo` returns a surrogate whose gradient is that
    estimate (encoder) plus ordinary backprop (decoder, analytic KL);
  * straight-through Gumbel-sigmoid (Jang et al. 2017; Maddison et al. 2017): the forward
    pass uses an exact sample of q, the backward pass the gradient of a relaxed sample;
    biased gradients, but the reported ELBO is exact.

A model reaches these functions only through its declared interface: `model.encode(x, y)`
(q(z|x)), `model.decode(z, y)` (p(x|z)), `model.prior()` (p(z)). Samples of q(z|x) and
their log densities come together from one function,
`aevb.distributions.sample_with_log_prob` (a flow posterior's density comes with its sample).
"""
from __future__ import annotations

import logging
import math
from typing import NamedTuple

import torch
from torch import Tensor
from torch.distributions import Distribution, kl_divergence

from .distributions import sample_with_log_prob
from .runtime import adapt_threads, tuned

log = logging.getLogger("aevb")
KL_METHODS = ("analytic", "mc")
#: latent vectors per decoder call while estimating log p(x): small enough that the decoder's
#: activations stay in cache and are recycled by the allocator (no fresh pages per call),
#: large enough that the matrix products run at full speed
DEFAULT_ROWS = 2000


def kl_method(requested: str, q: Distribution, p: Distribution) -> str:
    """How KL(q || p) is computed for posteriors like `q` and the prior `p`: "analytic" when
    it is asked for and torch.distributions has a closed form registered for the pair of
    types, else "mc" (log q(z|x) - log p(z) at the sampled z, an unbiased estimate); a
    fallback from "analytic" to "mc" is logged once, here (so for a flow posterior, "iaf",
    whose KL to any prior has no closed form, "analytic" means "mc")."""
    if requested not in KL_METHODS:
        raise ValueError(f"kl must be 'analytic' or 'mc', got {requested!r}")
    if requested == "mc":
        return "mc"
    try:
        kl_divergence(q, p)
    except NotImplementedError:
        log.info("KL(q || p) has no closed form for %s and %s: estimated by Monte Carlo",
                 type(q).__name__, type(p).__name__)
        return "mc"
    return "analytic"


def _terms(model, q, z: Tensor, log_qz: Tensor, x: Tensor, y, target, kl: str) -> dict[str, Tensor]:
    rec = model.decode(z, y).log_prob(x if target is None else target)
    prior = model.prior()
    if kl == "analytic":
        k = kl_divergence(q, prior)
    elif kl == "mc":
        k = log_qz - prior.log_prob(z)
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
    return _terms(model, q, *sample_with_log_prob(q), x, y, target, kl)


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
    z, log_q = sample_with_log_prob(q, reparameterized=False)
    terms = _terms(model, q, z, log_q, x, y, target, kl)
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
    z = straight_through_bernoulli(q, temperature)
    return _terms(model, q, z, q.log_prob(z), x, y, target, kl)


# ----------------------------------------------------------------------------- log-weights
class LogWeights(NamedTuple):
    """The three terms of log w = log p(x|z) + log p(z) - log q(z|x), each (N, K): example i,
    sample k."""

    log_px_z: Tensor
    log_pz: Tensor
    log_qz: Tensor

    @property
    def total(self) -> Tensor:
        """log w_ik = log p(x_i|z_ik) + log p(z_ik) - log q(z_ik|x_i), (N, K)."""
        return self.log_px_z + (self.log_pz - self.log_qz)


def log_weight_terms(model, x: Tensor, k: int, y: Tensor | None = None, target: Tensor | None = None,
                     *, rsample: bool = False, rows: int | None = None) -> LogWeights:
    """The importance weights of K samples z_k ~ q(z|x) of each example (reparameterized if
    `rsample`, for training): log p(x|z_k), log p(z_k), log q(z_k|x), each (N, K).

    All K samples are drawn at once, and their prior and posterior densities computed at
    once. The decoder sees them example-major (sample k of example i is row i * K + k), so
    that each image is scored against its own K rows by the likelihood's `log_prob` without
    being copied: all N * K rows in one call, or about `rows` per call to bound memory
    (`rows` samples of one example when K >= rows, else all K samples of rows // K examples).
    `target` is the image scored (default `x`; a denoising model's clean image)."""
    q = model.encode(x, y)
    z, log_qz = sample_with_log_prob(q, (k,), rsample)             # (K, N, D), (K, N)
    log_pz, log_qz = model.prior().log_prob(z).T, log_qz.T         # (N, K)
    t = x if target is None else target
    return LogWeights(decoded_log_prob(model.decode, z.transpose(0, 1), t, y, rows), log_pz, log_qz)


def decoded_log_prob(decode, z: Tensor, x: Tensor, y: Tensor | None, rows: int | None) -> Tensor:
    """log p(x_i | z_ik) as (N, K) for latents z (N, K, D) and images x (N, ...), where
    `decode(z, y)` is p(x|z); about `rows` latent vectors per call (all at once if None)."""
    n, k = z.shape[:2]
    if rows is None or rows >= n * k:
        return decode(z, None if y is None else y[:, None].expand(n, k)).log_prob(x.unsqueeze(1))
    out = torch.empty(n, k, dtype=z.dtype, device=z.device)
    for es, ks in _chunks(n, k, rows):
        yc = None if y is None else y[es, None].expand(-1, ks.stop - ks.start)
        out[es, ks] = decode(z[es, ks], yc).log_prob(x[es].unsqueeze(1)).to(out.dtype)
    return out


def _chunks(n: int, k: int, rows: int):
    """(example slice, sample slice) pairs covering an (n, k) grid in about `rows` cells each."""
    if k >= rows:
        for i in range(n):
            for j in range(0, k, rows):
                adapt_threads()
                yield slice(i, i + 1), slice(j, min(j + rows, k))
    else:
        step = max(1, rows // k)
        for i in range(0, n, step):
            adapt_threads()
            yield slice(i, min(i + step, n)), slice(0, k)


def log_weights(model, x: Tensor, k: int, y: Tensor | None = None, **kw) -> Tensor:
    """log w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x) for K samples z_k ~ q(z|x); (N, K)
    (the model's declared `log_weight_terms`: over all its stochastic layers)."""
    return model.log_weight_terms(x, k, y, **kw).total


def iwae_terms(model, x: Tensor, k: int, y: Tensor | None = None, target: Tensor | None = None,
               beta: float = 1.0) -> dict[str, Tensor]:
    """The IWAE bound as a training objective, with reparameterized samples, per example (N,):
    {"iwae": L_K, "elbo": mean_k log w_k (the 1-sample ELBO, estimated with K samples),
    "rec": mean_k log p(x|z_k), "kl": mean_k log q(z_k|x) - log p(z_k)} and "loss_terms" =
    L_K with beta weighing log p(z) - log q(z|x) inside every weight (= "iwae" at beta 1).
    Differentiating logsumexp directly gives the IWAE gradient sum_k w~_k grad log w_k with
    normalized weights w~ that need no detaching by hand."""
    w = model.log_weight_terms(x, k, y, target, rsample=True)
    kl = w.log_qz - w.log_pz
    lw = w.log_px_z - kl
    out = {"iwae": torch.logsumexp(lw, 1) - math.log(k), "elbo": lw.mean(1),
           "rec": w.log_px_z.mean(1), "kl": kl.mean(1)}
    out["loss_terms"] = out["iwae"] if isinstance(beta, (int, float)) and beta == 1 else torch.logsumexp(w.log_px_z - beta * kl, 1) - math.log(k)
    return out


def iwae_bound(model, x: Tensor, k: int, y: Tensor | None = None) -> Tensor:
    """Per-example L_K = logsumexp_k(log w_k) - log K (stable: never exponentiates a raw weight)."""
    return torch.logsumexp(log_weights(model, x, k, y), dim=1) - math.log(k)


@torch.inference_mode()
def log_px_estimate(model, x: Tensor, y: Tensor | None = None, samples: int = 5000, *,
                    rows: int = DEFAULT_ROWS, batch_size: int | None = None, seed: int = 0,
                    progress=None) -> dict[str, Tensor]:
    """log p(x) ~= L_K = log 1/K sum_k w_k with K = `samples` importance samples per example
    (Burda et al. 2016, eq. 10; see `aevb.evaluation.importance_sampling`), per example (N,)
    in float64: {"log_px", "elbo": mean_k log w_k, "ess": (sum w)^2 / sum w^2}. The K samples
    of `batch_size` examples (default: as many as fit `rows`, at least one) are drawn at
    once, the decoder sees about `rows` of them per call; noise from `seed`, the global RNG
    left as it was; `progress(n)` after each batch of n examples."""
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    rows = max(1, rows)
    batch_size = batch_size or max(1, min(100, rows // samples))
    # the results are written into tensors made before the loop: small tensors kept from each
    # batch would sit between the decoder's large buffers in the heap, which then grew by
    # ~7 MB per image at K = 5000 (glibc malloc; 12 GB over 5,000 images)
    out = {k: torch.empty(x.shape[0], dtype=torch.float64) for k in ("log_px", "elbo", "ess")}
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        with tuned(), torch.random.fork_rng(devices=_gpu(device)):
            torch.manual_seed(seed)
            for i in range(0, x.shape[0], batch_size):
                adapt_threads()
                yb = None if y is None else y[i:i + batch_size].to(device)
                lw = log_weights(model, x[i:i + batch_size].to(device), samples, yb, rows=rows)  # (b, K)
                lse = torch.logsumexp(lw, 1).double()
                part = slice(i, i + lw.shape[0])
                out["log_px"][part] = lse - math.log(samples)
                out["elbo"][part] = lw.double().mean(1)
                out["ess"][part] = (2 * lse - torch.logsumexp(2 * lw, 1).double()).exp()
                if progress is not None:
                    progress(lw.shape[0])
    finally:
        model.train(was_training)
    return out


# ----------------------------------------------------------------------------- over a data set
@torch.no_grad()
def objective_terms(model, x: Tensor, y: Tensor | None = None, batch_size: int = 1000,
                    seed: int = 0) -> dict[str, Tensor]:
    """Every per-example term of `model.objective` (elbo, rec, kl, ...) for all of `x`, each
    (N,) in float64, in eval mode and without autograd, in batches of `batch_size`, with the
    sampling noise drawn from `seed` (so that repeated evaluations agree; the global RNG is
    left as it was)."""
    was_training = model.training
    model.eval()
    parts: dict[str, list[Tensor]] = {}
    device = next(model.parameters()).device
    try:
        with torch.random.fork_rng(devices=_gpu(device)), torch.no_grad():
            torch.manual_seed(seed)
            for i in range(0, x.shape[0], batch_size):
                adapt_threads()
                yb = None if y is None else y[i:i + batch_size].to(device)
                for k, v in model.objective(x[i:i + batch_size].to(device), yb).items():
                    if k != "loss" and torch.is_tensor(v) and v.dim() == 1:
                        parts.setdefault(k, []).append(v.detach().double())
    finally:
        model.train(was_training)
    return {k: torch.cat(v).cpu() for k, v in parts.items()}


def _gpu(device: torch.device) -> list:
    """The devices whose RNG state `torch.random.fork_rng` must save and restore for work on
    `device`: a GPU's own generator (manual_seed seeds it too), none for the CPU's."""
    return [device] if device.type == "cuda" else []
