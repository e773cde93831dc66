"""Distributions of a VAE: likelihoods p_theta(x|z), posterior families q_phi(z|x), priors p(z).

Everything is a `torch.distributions.Distribution` whose event covers a whole example
(all pixels, or all latent dimensions), so `log_prob` returns one number per example:
log-likelihoods are summed over pixels / latent units, never averaged.

A *family* turns the raw output of a network into a distribution. It says how many numbers
per dimension it needs (`params_per_dim`) so that layer sizes are inferred, never hard-wired.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch.distributions import Bernoulli, Distribution, Independent, Normal

# Argument validation costs a few percent per step and the networks produce valid
# parameters by construction; turn it off globally for speed.
Distribution.set_default_validate_args(False)


def _image(d: Distribution, event_ndims: int) -> Independent:
    return Independent(d, event_ndims)


# ----------------------------------------------------------------------------- likelihoods
class BernoulliLikelihood:
    """p(x|z) = prod_i Bernoulli(x_i; sigmoid(l_i)) with decoder logits l; for binary or [0,1] data.

    log p(x|z) = sum_i x_i log sigmoid(l_i) + (1 - x_i) log sigmoid(-l_i)  (in nats).
    """

    params_per_dim = 1
    continuous = False

    def __call__(self, out: Tensor, event_ndims: int) -> Independent:
        return _image(Bernoulli(logits=out), event_ndims)

    def mode(self, p: Independent) -> Tensor:
        """The most probable image: pixels thresholded at probability 1/2."""
        return (p.base_dist.logits > 0).to(p.base_dist.logits.dtype)


class GaussianLikelihood:
    """p(x|z) = N(x; mu(z), sigma^2 I) with a fixed sigma (`sigma=float`), or with a per-pixel
    log-variance output by the decoder (`sigma="learned"`, Kingma & Welling appendix C.2).

    log p(x|z) = -sum_i [ (x_i - mu_i)^2 / (2 sigma_i^2) + log sigma_i + log(2 pi) / 2 ].
    The learned log-sigma is bounded below (`min_log_sigma`) so that it cannot collapse to a
    spike on a constant pixel and send the likelihood to infinity.
    """

    continuous = True

    def __init__(self, sigma: float | str = 1.0, min_log_sigma: float = -5.0):
        if sigma != "learned" and not (isinstance(sigma, (int, float)) and sigma > 0):
            raise ValueError(f"Gaussian likelihood: sigma must be a positive number or 'learned', got {sigma!r}")
        self.sigma = sigma
        self.min_log_sigma = min_log_sigma
        self.params_per_dim = 2 if sigma == "learned" else 1

    def __call__(self, out: Tensor, event_ndims: int) -> Independent:
        if self.sigma == "learned":
            mean, log_sigma = out.chunk(2, dim=-event_ndims)
            scale = log_sigma.clamp(min=self.min_log_sigma).exp()
        else:
            mean, scale = out, torch.full_like(out, float(self.sigma))
        return _image(Normal(mean, scale), event_ndims)

    def mode(self, p: Independent) -> Tensor:
        return p.base_dist.loc


LIKELIHOODS = {"bernoulli": BernoulliLikelihood, "gaussian": GaussianLikelihood}


def likelihood(name: str, **kwargs):
    """The likelihood family called `name` (see `LIKELIHOODS`)."""
    if name not in LIKELIHOODS:
        raise ValueError(f"unknown likelihood {name!r}; choose one of {sorted(LIKELIHOODS)}")
    return LIKELIHOODS[name](**kwargs)


# ----------------------------------------------------------------------------- latents
class DiagonalGaussian:
    """q_phi(z|x) = N(z; mu, diag(exp(logvar))): the encoder outputs mu and log-variance.

    Sampled by reparameterization, z = mu + exp(logvar / 2) * eps with eps ~ N(0, I), so
    that gradients flow through z (SGVB). The prior is N(0, I) and
    KL(q || p) = 1/2 sum_j (mu_j^2 + sigma_j^2 - log sigma_j^2 - 1) in closed form.
    """

    params_per_dim = 2
    reparameterized = True

    def __call__(self, out: Tensor) -> Independent:
        mu, logvar = out.chunk(2, dim=-1)
        return Independent(Normal(mu, (0.5 * logvar).exp()), 1)

    def prior(self, latent_dim: int, device=None, dtype=None) -> Independent:
        zero = torch.zeros(latent_dim, device=device, dtype=dtype)
        return Independent(Normal(zero, torch.ones_like(zero)), 1)

    @staticmethod
    def mean(q: Independent) -> Tensor:
        return q.base_dist.loc


LATENTS = {"gaussian": DiagonalGaussian}


def latent_family(name: str):
    if name not in LATENTS:
        raise ValueError(f"unknown latent family {name!r}; choose one of {sorted(LATENTS)}")
    return LATENTS[name]()

