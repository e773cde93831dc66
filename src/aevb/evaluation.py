"""Numbers that judge a trained model (Kingma & Welling sec. 5; Burda et al. sec. 5.2).

- `elbo_terms` / `elbo_stats`: the test ELBO and its two terms, E_q log p(x|z) and
  KL(q(z|x) || p(z)), with one reparameterized sample per image (as in training).
- `importance_sampling` / `log_likelihood`: the importance-sampled estimate of log p(x),

      log p(x) ~= log 1/K sum_k p(x|z_k) p(z_k) / q(z_k|x),   z_k ~ q(z|x),

  computed with logsumexp (never a raw weight), K up to thousands, in bounded memory.
- `active_units`: units u whose posterior mean varies over the data,
  Cov_x(E_q[z_u]) > 0.01 (Burda et al.); posterior collapse shows as few active units.
- `denoising`: the error of reconstructing a clean test image from a salt-and-pepper
  corrupted one, against the noise rate.
- `evaluate`: all of the above as one JSON-ready dict (what `aevb eval` writes to eval.json).

Conventions: log-likelihoods are summed over pixels and averaged over examples, in nats per
example; the KL weight beta plays no part here (the ELBO is the true bound, beta = 1).
Bits per dimension is -log p(x) / (D log 2) for D pixel values per example, plus 8 for a
density over [0, 1]-scaled 8-bit data (log2 256: the discrete rate of uniformly dequantized
data), plus 0 for a discrete likelihood. Standard errors are over examples: std / sqrt(N).
"""
from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from torch import Tensor

from .data import salt_and_pepper, subset
from .distributions import bits_per_dim
from .models.base import check_shape
from .objectives import DEFAULT_ROWS, iwae_bound, log_px_estimate, log_weights, objective_terms
from .runtime import adapt_threads, tuned

ACTIVE_THRESHOLD = 0.01


class NotApplicable(ValueError):
    """This number or figure does not apply to this model (the message says why)."""


def _batches(n: int, batch_size: int):
    for i in range(0, n, batch_size):
        adapt_threads()
        yield slice(i, min(i + batch_size, n))


def _labels(split, s):
    return None if split.y is None else split.y[s]


def _needs_density(model, what: str) -> None:
    if not model.has_density:
        raise NotApplicable(f"the model has no prior p(z) and its encoder gives no distribution "
                            f"q(z|x) (a deterministic autoencoder): {what} needs both")


# ----------------------------------------------------------------------------- ELBO
def elbo_terms(model, split, batch_size: int = 1000, seed: int = 0) -> dict[str, float]:
    """Mean over `split` of each per-example term of the model's objective (e.g. elbo, rec,
    kl), with the sampling noise drawn from `seed` so that repeated evaluations agree. The
    global RNG is left as it was."""
    return {k: v["mean"] for k, v in elbo_stats(model, split, batch_size, seed).items()}


def elbo_stats(model, split, batch_size: int = 1000, seed: int = 0) -> dict[str, dict]:
    """Per term of the model's objective (elbo, rec = E_q log p(x|z), kl, ...): its mean over
    `split` and the standard error of that mean, {"elbo": {"mean": m, "stderr": s}, ...}, in
    nats per example. One sample z ~ q(z|x) per image, drawn from `seed` (the global RNG is
    left as it was), the same estimate as the trainer's test_elbo."""
    check_shape(model, split.x)
    terms = objective_terms(model, split.x, split.y, batch_size, seed)
    return {k: _mean_stderr(v) for k, v in terms.items()}


def _mean_stderr(v: Tensor) -> dict:
    v = v.double()
    n = v.numel()
    return {"mean": v.mean().item(), "stderr": (v.std().item() / math.sqrt(n)) if n > 1 else 0.0}


# ----------------------------------------------------------------------------- log p(x)
def importance_sampling(model, x: Tensor, y: Tensor | None = None, samples: int = 5000, *,
                        rows: int = DEFAULT_ROWS, batch_size: int | None = None, seed: int = 0,
                        progress=None) -> dict[str, Tensor]:
    """Importance-sampled log-likelihood of each example (Burda et al. 2016, eq. 10), with
    the encoder's q(z|x) as the proposal:

        log p(x) ~= log 1/K sum_k w_k,   log w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x).

    The estimate is a lower bound in expectation (the IWAE bound L_K) that rises to log p(x)
    as K = `samples` grows; it is exact for any K when q(z|x) is the true posterior.
    Computed by `aevb.objectives.log_px_estimate` (a loop over batches of examples around
    the log-weights the IWAE objective trains with): memory stays bounded (about `rows`
    latent vectors per decoder call, `batch_size` examples at once), sampling noise comes
    from `seed`, the global RNG is left as it was; `progress`, if given, is called with the
    number of examples done after each batch. NotApplicable for a model without a density.

    Returns per-example tensors (N,), float64:
      "log_px": the estimate of log p(x);
      "elbo":   mean_k log w_k, an ELBO estimate from the same K samples (KL by sampling);
      "ess":    the effective sample size (sum w)^2 / sum w^2 of the K weights, in 1..K.
    """
    check_shape(model, x)
    _needs_density(model, "importance sampling")
    return log_px_estimate(model, x, y, samples, rows=rows, batch_size=batch_size, seed=seed,
                           progress=progress)


def log_likelihood(model, x: Tensor, y: Tensor | None = None, samples: int = 5000,
                   chunk: int | None = None, batch_size: int | None = None, seed: int = 0,
                   **kw) -> Tensor:
    """Importance-sampled estimate of log p(x) per example, shape (N,), in nats (see
    `importance_sampling`; `chunk` * `batch_size` latent vectors go through the decoder at
    once)."""
    if chunk is not None:
        kw["rows"] = chunk * (batch_size or 1)
        batch_size = batch_size or 1
    return importance_sampling(model, x, y, samples, batch_size=batch_size, seed=seed,
                               **kw)["log_px"].to(x.dtype)


# ----------------------------------------------------------------------------- latents
@torch.no_grad()
def posterior_means(model, x: Tensor, y: Tensor | None = None, batch_size: int = 1000) -> Tensor:
    """E_q[z] for each image (N, latent_dim), the model's `embed`: the posterior mean
    (probabilities q(z_j = 1 | x) for binary latents; a deterministic encoder's code)."""
    was_training = model.training
    model.eval()
    try:
        out = []
        for s in _batches(x.shape[0], batch_size):
            m = model.embed(x[s], None if y is None else y[s])
            out.append(m.reshape(m.shape[0], -1))
        return torch.cat(out)
    finally:
        model.train(was_training)


def active_units(model, x: Tensor, y: Tensor | None = None, threshold: float = ACTIVE_THRESHOLD,
                 batch_size: int = 1000) -> dict:
    """Active latent units (Burda et al. 2016, sec. 5.2): unit u is active when
    A_u = Cov_x(E_{q(z|x)}[z_u]) > `threshold` (0.01), the variance over the images x of the
    posterior mean. Returns {"active_units": count, "latent_dim": D, "threshold": t,
    "unit_variance": [A_u per unit]}; posterior collapse shows as units with A_u ~ 0."""
    m = posterior_means(model, x, y, batch_size).double()
    var = m.var(0, unbiased=False) if m.shape[0] > 1 else torch.zeros(m.shape[1], dtype=m.dtype)
    return {"active_units": int((var > threshold).sum()), "latent_dim": int(m.shape[1]),
            "threshold": threshold, "unit_variance": [round(v, 6) for v in var.tolist()]}


# ----------------------------------------------------------------------------- denoising
@torch.no_grad()
def denoising(model, split, rates=(0.1, 0.2, 0.3, 0.5), seed: int = 0,
              batch_size: int = 1000) -> list[dict]:
    """Denoising error against the salt-and-pepper rate: each test image x is corrupted
    (a fraction `rate` of its pixels set to 0 or 1 at random), the corrupted image is
    reconstructed (`model.reconstruct`), and the reconstruction r is compared with the
    clean x, per pixel:

      "mse": mean (r - x)^2;   "bce": mean -[x log r + (1 - x) log(1 - r)]  (nats per pixel,
      r clipped to [1e-6, 1 - 1e-6]);   "noisy_mse": mean (noisy - x)^2, the error of doing
      nothing, for comparison.

    One dict per rate, in the order given; the noise comes from `seed`."""
    was_training = model.training
    model.eval()
    try:
        return [_denoising_at(model, split, float(rate), seed, batch_size) for rate in rates]
    finally:
        model.train(was_training)


def _denoising_at(model, split, rate: float, seed: int, batch_size: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    sums = {"mse": 0.0, "bce": 0.0, "noisy_mse": 0.0}
    count = 0
    for s in _batches(len(split), batch_size):
        x, y = split.x[s], _labels(split, s)
        noisy = salt_and_pepper(x, rate, generator=g)
        r = model.reconstruct(noisy, y).clamp(0, 1)
        sums["mse"] += (r - x).square().sum().item()
        sums["noisy_mse"] += (noisy - x).square().sum().item()
        sums["bce"] += F.binary_cross_entropy(r.clamp(1e-6, 1 - 1e-6), x, reduction="sum").item()
        count += x.numel()
    return {"rate": rate, **{k: v / count for k, v in sums.items()}}


# ----------------------------------------------------------------------------- everything
def bpd_offset(model, binarized: bool) -> float | None:
    """The bits/dim offset of the model's likelihood (its `bpd_offset`: 8 for a density on
    [0, 1], 0 for a discrete likelihood); for a Bernoulli likelihood (no offset of its own)
    0 on binarized data and None on grey levels, where bits/dim has no meaning (a Bernoulli
    likelihood of grey levels is not a normalized density)."""
    off = model.likelihood.bpd_offset
    return 0.0 if off is None and binarized else off


def evaluate(model, split, *, nll_samples: int = 5000, limit: int | None = None,
             batch_size: int = 1000, rows: int = DEFAULT_ROWS, seed: int = 0, binarized: bool = True,
             denoise=(), active_threshold: float = ACTIVE_THRESHOLD, progress=None) -> dict:
    """All numbers of a trained model on a test split, as a JSON-ready dict (nats per example):

      n, elbo / rec / kl (+ "<key>_stderr"): the test ELBO with one sample per image, and
          kl_method ("analytic", or "mc": sampled, where no closed form is registered);
      log_px, log_px_stderr, nll_samples, elbo_is, gap = log_px - elbo_is, ess:
          the importance-sampled log p(x) with K = `nll_samples` (0 skips it), the ELBO of
          the same K samples (not the one-sample elbo above), their difference (>= 0 in
          expectation), and the mean, median and minimum effective sample size over images;
      bits_per_dim (+ bits_per_dim_elbo) where it has a meaning (see `bpd_offset`);
      active_units, latent_dim, unit_variance;
      denoising: `denoising(...)` for the rates in `denoise` (if any);
      seconds: the wall time of each part.

    `limit` keeps `limit` test images chosen at random (seed 0, the same every time: a test
    split may be sorted by label); `binarized` says whether the data are binary (so that a
    Bernoulli likelihood is a true discrete likelihood)."""
    split = subset(split, limit)
    res: dict = {"n": len(split), "seconds": {}}
    if model.num_classes:
        res["conditional"] = True  # a conditional model: log p(x|y), the ELBO of p(x|y)
    if model.kl_method is not None:
        res["kl_method"] = model.kl_method
    with tuned():
        _timed(res, "elbo", lambda: _elbo_numbers(model, split, batch_size, seed))
        if nll_samples:
            _timed(res, "log_px", lambda: _log_px_numbers(model, split, nll_samples, rows, seed, progress))
        _bits_per_dim(res, math.prod(split.x.shape[1:]), bpd_offset(model, binarized))
        _timed(res, "active_units", lambda: active_units(model, split.x, split.y, active_threshold, batch_size))
        if denoise:
            _timed(res, "denoising", lambda: {"denoising": denoising(model, split, denoise, seed, batch_size)})
    return res


def _timed(res: dict, part: str, compute) -> None:
    """res.update(compute()), and the seconds it took in res["seconds"][part]."""
    t = time.perf_counter()
    res.update(compute())
    res["seconds"][part] = round(time.perf_counter() - t, 3)


def _elbo_numbers(model, split, batch_size: int, seed: int) -> dict:
    res = {}
    for k, v in elbo_stats(model, split, batch_size, seed).items():
        res[k], res[f"{k}_stderr"] = v["mean"], v["stderr"]
    return res


def _log_px_numbers(model, split, nll_samples: int, rows: int, seed: int, progress) -> dict:
    try:
        r = importance_sampling(model, split.x, split.y, nll_samples, rows=rows, seed=seed,
                                progress=progress)
    except NotApplicable as e:
        return {"log_px_skipped": str(e)}
    lp, gap = _mean_stderr(r["log_px"]), _mean_stderr(r["log_px"] - r["elbo"])
    return dict(log_px=lp["mean"], log_px_stderr=lp["stderr"], nll_samples=nll_samples,
                elbo_is=r["elbo"].mean().item(), gap=gap["mean"], gap_stderr=gap["stderr"],
                ess=r["ess"].mean().item(), ess_median=r["ess"].median().item(),
                ess_min=r["ess"].min().item())


def _bits_per_dim(res: dict, d: int, offset: float | None) -> None:
    if offset is None:
        return
    if "log_px" in res:
        res["bits_per_dim"] = bits_per_dim(res["log_px"], d, offset)
    if "elbo" in res:
        res["bits_per_dim_elbo"] = bits_per_dim(res["elbo"], d, offset)


def format_table(res: dict) -> str:
    """A plain-text table of `evaluate`'s result."""
    def pm(key):
        v = res.get(key)
        if v is None:
            return None
        e = res.get(f"{key}_stderr")
        return f"{v:10.3f}" + (f" ± {e:.3f}" if e is not None else "")
    rows = [("test images", f"{res['n']:10d}")]
    for key, label in (("elbo", "ELBO, 1 sample per image"), ("rec", "  E_q log p(x|z)"),
                       ("kl", "  KL(q(z|x) || p(z))")):
        if pm(key):
            rows.append((label + " [nats]", pm(key)))
    if "log_px" in res:
        px = "log p(x|y)" if res.get("conditional") else "log p(x)"
        rows.append((f"{px}, IS K={res['nll_samples']} [nats]", pm("log_px")))
        rows.append((f"ELBO of the same K={res['nll_samples']} samples", f"{res['elbo_is']:10.3f}"))
        rows.append(("gap: log p(x) - that ELBO", pm("gap")))
        rows.append(("effective sample size, mean", f"{res['ess']:10.1f}"))
        if "ess_median" in res:
            rows.append(("  median / minimum", f"{res['ess_median']:10.1f} / {res['ess_min']:.3f}"))
    elif "log_px_skipped" in res:
        rows.append(("log p(x)", "skipped: " + res["log_px_skipped"]))
    if "bits_per_dim" in res:
        rows.append(("bits/dim (log p(x))", f"{res['bits_per_dim']:10.4f}"))
    if "bits_per_dim_elbo" in res:
        rows.append(("bits/dim (ELBO)", f"{res['bits_per_dim_elbo']:10.4f}"))
    if "active_units" in res:
        rows.append((f"active units (A_u > {res['threshold']:g})",
                     f"{res['active_units']:10d} / {res['latent_dim']}"))
    w = max(len(r[0]) for r in rows)
    lines = [f"{a:<{w}}  {b}" for a, b in rows]
    if res.get("denoising"):
        lines.append("")
        lines.append(f"{'noise rate':>10}  {'MSE/pixel':>10}  {'BCE/pixel':>10}  {'noisy MSE':>10}")
        for r in res["denoising"]:
            lines.append(f"{r['rate']:10.2f}  {r['mse']:10.5f}  {r['bce']:10.5f}  {r['noisy_mse']:10.5f}")
    if res.get("test_binarization"):
        lines.append(f"test images binarized once with seed {res['test_binarization']['seed']} "
                     "(eval.json's test_binarization says how)")
    secs = res.get("seconds", {})
    if secs:
        lines.append("")
        lines.append("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in secs.items()))
    return "\n".join(lines)


__all__ = ["elbo_terms", "elbo_stats", "importance_sampling", "log_likelihood", "iwae_bound",
           "log_weights", "active_units", "posterior_means", "denoising", "evaluate", "bpd_offset",
           "format_table", "bits_per_dim", "subset", "NotApplicable"]
