"""A mixture of Gaussians as a learned prior (issue "Beyond the seeds"; the simplest learnable
prior of Tomczak & Welling 2018, sec. 3)."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal

from .base import Prior


class DiagonalGaussianMixture(MixtureSameFamily):
    """sum_k pi_k N(z; loc_k, diag(scale_k^2)), a `MixtureSameFamily` whose log density is
    computed with two matrix products instead of K x D elementwise terms per z:

        log N_k(z) = -1/2 sum_d z_d^2 / v_kd + sum_d z_d loc_kd / v_kd + c_k,
        c_k = -1/2 sum_d (loc_kd^2 / v_kd + log v_kd) - D/2 log 2 pi,   v = scale^2,

    so (M, D) points against K components cost one (M, 2D) x (2D, K) product (the
    importance-sampled log p(x) of a mixture prior evaluates millions of z). The plain form,
    `MixtureSameFamily.log_prob`, is what tests/test_priors.py checks it against. Sampling
    and everything else are MixtureSameFamily's."""

    def __init__(self, logits: Tensor, loc: Tensor, scale: Tensor):
        super().__init__(Categorical(logits=logits, validate_args=False),
                         Independent(Normal(loc, scale, validate_args=False), 1, validate_args=False),
                         validate_args=False)
        self.log_weights = torch.log_softmax(logits, -1)
        inv_var = scale.pow(-2)
        self.quadratic = torch.cat([-0.5 * inv_var, loc * inv_var], -1)  # (K, 2D)
        self.constant = (-0.5 * (loc.square() * inv_var).sum(-1) - scale.log().sum(-1)
                         - 0.5 * loc.shape[-1] * math.log(2 * math.pi))

    def log_prob(self, z: Tensor) -> Tensor:
        flat = z.reshape(-1, z.shape[-1])
        terms = torch.cat([flat.square(), flat], -1) @ self.quadratic.T  # (M, K)
        return torch.logsumexp(terms + (self.constant + self.log_weights), -1).reshape(z.shape[:-1])


class MixtureOfGaussians(Prior):
    """p(z) = sum_k pi_k N(z; mu_k, diag(exp(logvar_k))) with K = `components` components
    whose means, log-variances and mixture logits (pi = softmax(logits)) are learned with the
    rest of the model. KL(q(z|x) || p(z)) has no closed form: it is estimated by Monte Carlo,
    log q(z|x) - log p(z) at the sampled z (`model.kl_method` is "mc"). Starts with means
    drawn from N(0, I), unit variances and equal weights."""

    support = "real"
    settings = ("components",)

    def __init__(self, latent_dim: int, components: int = 10):
        super().__init__(latent_dim)
        if components < 1:
            raise ValueError(f"prior_components must be >= 1, got {components}")
        self.means = nn.Parameter(torch.randn(components, latent_dim))
        self.logvars = nn.Parameter(torch.zeros(components, latent_dim))
        self.logits = nn.Parameter(torch.zeros(components))

    def forward(self) -> DiagonalGaussianMixture:
        return DiagonalGaussianMixture(self.logits, self.means, (0.5 * self.logvars).exp())
