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
from torch.distributions import Independent, Normal

from .data import subset
from .distributions import BernoulliImage, bernoulli_log_prob, bits_per_dim
from .models.base import check_shape
from .objectives import iwae_bound, log_weights
from .runtime import adapt_threads

ACTIVE_THRESHOLD = 0.01
#: latent vectors per decoder call while importance sampling: small enough that the decoder's
#: activations stay in cache and are recycled by the allocator (no fresh pages per call),
#: large enough that the matrix products run at full speed
DEFAULT_ROWS = 2000


class NotApplicable(ValueError):
    """This number or figure does not apply to this model (the message says why)."""


def _batches(n: int, batch_size: int):
    for i in range(0, n, batch_size):
        adapt_threads()
        yield slice(i, min(i + batch_size, n))


def _labels(split, s):
    return None if split.y is None else split.y[s]


# ----------------------------------------------------------------------------- ELBO
@torch.no_grad()
def elbo_terms(model, split, batch_size: int = 1000, seed: int = 0) -> dict[str, float]:
    """Mean over `split` of each per-example term of the model's objective (e.g. elbo, rec,
    kl), with the sampling noise drawn from `seed` so that repeated evaluations agree. The
    global RNG is left as it was."""
    return {k: v["mean"] for k, v in elbo_stats(model, split, batch_size, seed).items()}


@torch.no_grad()
def elbo_stats(model, split, batch_size: int = 1000, seed: int = 0) -> dict[str, dict]:
    """Per term of the model's objective (elbo, rec = E_q log p(x|z), kl, ...): its mean over
    `split` and the standard error of that mean, {"elbo": {"mean": m, "stderr": s}, ...}, in
    nats per example. One sample z ~ q(z|x) per image, drawn from `seed` (the global RNG is
    left as it was), the same estimate as the trainer's test_elbo."""
    check_shape(model, split.x)
    was_training = model.training
    model.eval()
    parts: dict[str, list[Tensor]] = {}
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for s in _batches(len(split), batch_size):
                for k, v in model.objective(split.x[s], _labels(split, s)).items():
                    if k != "loss" and torch.is_tensor(v) and v.dim() == 1:
                        parts.setdefault(k, []).append(v.detach().double())
    finally:
        model.train(was_training)
    return {k: _mean_stderr(torch.cat(v)) for k, v in parts.items()}


def _mean_stderr(v: Tensor) -> dict:
    v = v.double()
    n = v.numel()
    return {"mean": v.mean().item(), "stderr": (v.std().item() / math.sqrt(n)) if n > 1 else 0.0}


# ----------------------------------------------------------------------------- log p(x)
@torch.inference_mode()
def importance_sampling(model, x: Tensor, y: Tensor | None = None, samples: int = 5000, *,
                        rows: int = DEFAULT_ROWS, batch_size: int | None = None, seed: int = 0,
                        progress=None) -> dict[str, Tensor]:
    """Importance-sampled log-likelihood of each example (Burda et al. 2016, eq. 10), with
    the encoder's q(z|x) as the proposal:

        log p(x) ~= log 1/K sum_k w_k,   log w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x).

    The estimate is a lower bound in expectation (the IWAE bound L_K) that rises to log p(x)
    as K = `samples` grows; it is exact for any K when q(z|x) is the true posterior.

    Memory stays bounded and the work is done in large matrix products: the K samples of
    `batch_size` examples are drawn at once (default: as many examples as fit `rows`, at
    least one), and the decoder sees about `rows` latent vectors per call. Binary
    (Bernoulli) and Gaussian likelihoods are scored without copying the image once per
    sample. Sampling noise comes from `seed`; the global RNG is left as it was. `progress`,
    if given, is called with the number of examples done after each batch.

    Returns per-example tensors (N,), float64:
      "log_px": the estimate of log p(x);
      "elbo":   mean_k log w_k, an ELBO estimate from the same K samples (KL by sampling);
      "ess":    the effective sample size (sum w)^2 / sum w^2 of the K weights, in 1..K.
    """
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    check_shape(model, x)
    n = x.shape[0]
    rows = max(1, rows)
    if batch_size is None:
        batch_size = max(1, min(100, rows // samples))
    out = {"log_px": [], "elbo": [], "ess": []}
    was_training = model.training
    model.eval()
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            device = next(model.parameters()).device
            for s in _batches(n, batch_size):
                xb, yb = x[s].to(device), None if y is None else y[s].to(device)
                lw = _log_weights(model, xb, yb, samples, rows)         # (b, K)
                lse = torch.logsumexp(lw, 1).double()
                out["log_px"].append(lse - math.log(samples))
                out["elbo"].append(lw.double().mean(1))
                out["ess"].append((2 * lse - torch.logsumexp(2 * lw, 1).double()).exp())
                if progress is not None:
                    progress(s.stop - s.start)
    finally:
        model.train(was_training)
    return {k: torch.cat(v).cpu() for k, v in out.items()}


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


def _check_posterior(q) -> None:
    if not (hasattr(q, "sample") and hasattr(q, "log_prob")):
        raise NotApplicable("the model's encoder gives no distribution q(z|x) (a deterministic "
                            "autoencoder?): importance sampling needs one")


def _prior(model, x: Tensor):
    try:
        return model.prior(x.device, x.dtype)
    except TypeError:
        return model.prior()


def _log_weights(model, x: Tensor, y: Tensor | None, k: int, rows: int) -> Tensor:
    """(b, k) log weights log p(x|z) + log p(z) - log q(z|x) of k samples z ~ q(z|x) for
    each of the b examples in x. All k samples are drawn (and their prior and posterior
    densities computed) at once; the decoder then sees about `rows` of them per call,
    example-major (row i * k + j is sample j of example i) so that each example's image is
    broadcast over its own rows: `rows` samples of one example when k >= rows, else all k
    samples of rows // k examples."""
    q = model.encode(x, y)
    _check_posterior(q)
    z = q.sample((k,))                                            # (k, b, d)
    log_pz_qz = _prior(model, x).log_prob(z) - q.log_prob(z)      # (k, b)
    b = x.shape[0]
    zt = z.transpose(0, 1).contiguous()                          # (b, k, d)
    lpx = torch.empty(b, k, dtype=log_pz_qz.dtype, device=log_pz_qz.device)
    if k >= rows:
        for i in range(b):
            xi, yi = x[i:i + 1], None if y is None else y[i:i + 1]
            for ks in _batches(k, rows):
                c = ks.stop - ks.start
                yc = None if yi is None else yi.expand(c)
                lpx[i, ks] = _log_px_given_z(model.decode(zt[i, ks], yc), xi, c)[0].to(lpx.dtype)
    else:
        for es in _batches(b, max(1, rows // k)):
            e = es.stop - es.start
            ye = None if y is None else y[es].repeat_interleave(k, 0)
            p = model.decode(zt[es].reshape(e * k, *z.shape[2:]), ye)
            lpx[es] = _log_px_given_z(p, x[es], k).to(lpx.dtype)
    return lpx + log_pz_qz.T


def _log_px_given_z(p, x: Tensor, k: int) -> Tensor:
    """log p(x_i | z_ij) as (b, k) for a decoder distribution `p` over b*k rows (example-major)
    and images x (b, ...). Bernoulli and Gaussian pixels take a fast path that neither copies
    x k times nor builds per-pixel log-probabilities:
      Bernoulli: sum_d [x_d l_d - softplus(l_d)]  (l the logits; the first sum a batched matmul);
      Gaussian:  -sum_d [(x_d - mu_d)^2 / (2 s_d^2) + log s_d] - D log(2 pi) / 2.
    Any other distribution is scored by its own log_prob."""
    b = x.shape[0]
    base = p.base_dist if isinstance(p, Independent) else None
    event = math.prod(x.shape[1:])
    full_event = isinstance(p, Independent) and p.batch_shape == (b * k,) and \
        math.prod(p.event_shape) == event
    if full_event and isinstance(p, BernoulliImage):
        return bernoulli_log_prob(base.logits.reshape(b, k, event), x.reshape(b, event))
    if full_event and type(base) is Normal:
        loc = base.loc.reshape(b, k, event)
        scale = base.scale.reshape(b, k, event)
        sq = ((x.reshape(b, 1, event).to(loc.dtype) - loc) / scale).square_().sum(2)
        return -0.5 * sq - scale.log().sum(2) - 0.5 * event * math.log(2 * math.pi)
    xk = x.repeat_interleave(k, 0)
    return p.log_prob(xk).reshape(b, k)


# ----------------------------------------------------------------------------- latents
@torch.no_grad()
def posterior_means(model, x: Tensor, y: Tensor | None = None, batch_size: int = 1000) -> Tensor:
    """E_q[z] for each image (N, latent_dim): the model's `embed` if it has one, else the
    latent family's mean of q(z|x) (probabilities for binary latents), else q.mean; a
    deterministic encoder's code as it is."""
    was_training = model.training
    model.eval()
    try:
        out = []
        for s in _batches(x.shape[0], batch_size):
            xb, yb = x[s], None if y is None else y[s]
            if hasattr(model, "embed"):
                m = model.embed(xb, yb)
            else:
                q = model.encode(xb, yb)
                if torch.is_tensor(q):
                    m = q
                elif hasattr(model, "latent") and hasattr(model.latent, "mean"):
                    m = model.latent.mean(q)
                else:
                    m = q.mean
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
def reconstruct(model, x: Tensor, y: Tensor | None = None) -> Tensor:
    """The model's reconstruction E[x | z = E_q z] (its `reconstruct`, else decoding the
    posterior mean), values in the data's range."""
    if hasattr(model, "reconstruct"):
        return model.reconstruct(x, y)
    p = model.decode(posterior_means(model, x, y), y)
    return p if torch.is_tensor(p) else p.mean


@torch.no_grad()
def denoising(model, split, rates=(0.1, 0.2, 0.3, 0.5), seed: int = 0,
              batch_size: int = 1000) -> list[dict]:
    """Denoising error against the salt-and-pepper rate: each test image x is corrupted
    (a fraction `rate` of its pixels set to 0 or 1 at random), the corrupted image is
    reconstructed, and the reconstruction r is compared with the clean x, per pixel:

      "mse": mean (r - x)^2;   "bce": mean -[x log r + (1 - x) log(1 - r)]  (nats per pixel,
      r clipped to [1e-6, 1 - 1e-6]);   "noisy_mse": mean (noisy - x)^2, the error of doing
      nothing, for comparison.

    One dict per rate, in the order given; the noise comes from `seed`."""
    from .data import salt_and_pepper
    was_training = model.training
    model.eval()
    results = []
    try:
        for rate in rates:
            rate = float(rate)
            g = torch.Generator().manual_seed(seed)
            sums = {"mse": 0.0, "bce": 0.0, "noisy_mse": 0.0}
            count = 0
            for s in _batches(len(split), batch_size):
                x, y = split.x[s], _labels(split, s)
                noisy = salt_and_pepper(x, rate, generator=g)
                r = reconstruct(model, noisy, y).clamp(0, 1)
                sums["mse"] += (r - x).square().sum().item()
                sums["noisy_mse"] += (noisy - x).square().sum().item()
                sums["bce"] += F.binary_cross_entropy(r.clamp(1e-6, 1 - 1e-6), x,
                                                      reduction="sum").item()
                count += x.numel()
            results.append({"rate": rate, **{k: v / count for k, v in sums.items()}})
    finally:
        model.train(was_training)
    return results


# ----------------------------------------------------------------------------- everything
def _bpd_offset(model, binarized: bool) -> float | None:
    """The bits/dim offset of the model's likelihood: the likelihood's own `bpd_offset` when
    it declares one; else 8 for a continuous likelihood (a density on [0, 1]) and 0 for a
    discrete one on binarized data; None when bits/dim has no meaning (a Bernoulli
    likelihood applied to grey levels is not a normalized density)."""
    lik = getattr(model, "likelihood", None)
    if lik is not None and hasattr(lik, "bpd_offset"):
        off = lik.bpd_offset
        return 0.0 if off is None and binarized else off
    if lik is not None and getattr(lik, "continuous", False):
        return 8.0
    return 0.0 if binarized else None


def evaluate(model, split, *, nll_samples: int = 5000, limit: int | None = None,
             batch_size: int = 1000, rows: int = DEFAULT_ROWS, seed: int = 0, binarized: bool = True,
             denoise=(), active_threshold: float = ACTIVE_THRESHOLD, progress=None) -> dict:
    """All numbers of a trained model on a test split, as a JSON-ready dict (nats per example):

      n, elbo / rec / kl (+ "<key>_stderr"): the test ELBO with one sample per image;
      log_px, log_px_stderr, nll_samples, elbo_is, gap = log_px - elbo_is, ess:
          the importance-sampled log p(x) with K = `nll_samples` (0 skips it), the ELBO of
          the same K samples (not the one-sample elbo above), their difference (>= 0 in
          expectation), and the mean, median and minimum effective sample size over images;
      bits_per_dim (+ bits_per_dim_elbo) where it has a meaning (see `_bpd_offset`);
      active_units, latent_dim, unit_variance;
      denoising: `denoising(...)` for the rates in `denoise` (if any);
      seconds: the wall time of each part.

    `limit` keeps `limit` test images chosen at random (seed 0, the same every time: a test
    split may be sorted by label); `binarized` says whether the data are binary (so that a
    Bernoulli likelihood is a true discrete likelihood)."""
    split = subset(split, limit)
    x, y = split.x, split.y
    d = math.prod(x.shape[1:])
    res: dict = {"n": len(split), "seconds": {}}
    if getattr(model, "num_classes", 0):
        res["conditional"] = True  # a conditional model: log p(x|y), the ELBO of p(x|y)
    t = time.perf_counter()
    for k, v in elbo_stats(model, split, batch_size, seed).items():
        res[k], res[f"{k}_stderr"] = v["mean"], v["stderr"]
    res["seconds"]["elbo"] = round(time.perf_counter() - t, 3)
    offset = _bpd_offset(model, binarized)
    if nll_samples:
        t = time.perf_counter()
        try:
            r = importance_sampling(model, x, y, nll_samples, rows=rows, seed=seed, progress=progress)
        except NotApplicable as e:
            res["log_px_skipped"] = str(e)
        else:
            lp = _mean_stderr(r["log_px"])
            res.update(log_px=lp["mean"], log_px_stderr=lp["stderr"], nll_samples=nll_samples,
                       elbo_is=r["elbo"].mean().item(),
                       gap=(r["log_px"] - r["elbo"]).mean().item(),
                       gap_stderr=_mean_stderr(r["log_px"] - r["elbo"])["stderr"],
                       ess=r["ess"].mean().item(), ess_median=r["ess"].median().item(),
                       ess_min=r["ess"].min().item())
            if offset is not None:
                res["bits_per_dim"] = bits_per_dim(res["log_px"], d, offset)
        res["seconds"]["log_px"] = round(time.perf_counter() - t, 3)
    if offset is not None and "elbo" in res:
        res["bits_per_dim_elbo"] = bits_per_dim(res["elbo"], d, offset)
    t = time.perf_counter()
    try:
        res.update(active_units(model, x, y, active_threshold, batch_size))
    except (NotImplementedError, AttributeError, TypeError) as e:
        res["active_units_skipped"] = f"{type(e).__name__}: {e}"
    res["seconds"]["active_units"] = round(time.perf_counter() - t, 3)
    if denoise:
        t = time.perf_counter()
        res["denoising"] = denoising(model, split, denoise, seed, batch_size)
        res["seconds"]["denoising"] = round(time.perf_counter() - t, 3)
    return res


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
           "log_weights", "active_units", "posterior_means", "denoising", "evaluate",
           "format_table", "bits_per_dim", "subset", "NotApplicable"]
