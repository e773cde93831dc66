"""Numbers that judge a trained model: test ELBO and the importance-sampled log-likelihood.

All values are in nats per example (log-likelihoods summed over pixels); bits per dimension
is -value / (D log 2) for D pixel values per example.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .objectives import iwae_bound, log_weights


def _batches(n: int, batch_size: int):
    for i in range(0, n, batch_size):
        yield slice(i, min(i + batch_size, n))


@torch.no_grad()
def elbo_terms(model, split, batch_size: int = 1000, seed: int = 0) -> dict[str, float]:
    """Mean over `split` of each per-example term of the model's objective (e.g. elbo, rec,
    kl), with the sampling noise drawn from `seed` so that repeated evaluations agree. The
    global RNG is left as it was."""
    was_training = model.training
    model.eval()
    sums: dict[str, Tensor] = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for s in _batches(len(split), batch_size):
            x = split.x[s]
            y = None if split.y is None else split.y[s]
            for k, v in model.objective(x, y).items():
                if k != "loss":
                    sums[k] = sums.get(k, 0) + v.sum()
    model.train(was_training)
    return {k: v.item() / len(split) for k, v in sums.items()}


@torch.no_grad()
def log_likelihood(model, x: Tensor, y: Tensor | None = None, samples: int = 5000,
                   chunk: int = 500, batch_size: int = 100, seed: int = 0) -> Tensor:
    """Importance-sampled estimate of log p(x) per example (Burda et al. 2016):

        log p(x) ~= log 1/K sum_k p(x|z_k) p(z_k) / q(z_k|x),  z_k ~ q(z|x),  K = `samples`.

    Memory stays bounded: examples go `batch_size` at a time and the K samples `chunk` at a
    time; the chunks are combined with a running logsumexp. Returns shape (N,)."""
    out = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for s in _batches(x.shape[0], batch_size):
            xb, yb = x[s], None if y is None else y[s]
            acc = None
            for ks in _batches(samples, chunk):
                lw = torch.logsumexp(log_weights(model, xb, ks.stop - ks.start, yb), dim=0)
                acc = lw if acc is None else torch.logaddexp(acc, lw)
            out.append(acc - math.log(samples))
    return torch.cat(out)


__all__ = ["elbo_terms", "log_likelihood", "iwae_bound"]
