"""A mixture of Gaussians as a learned prior (issue "Beyond the seeds"; the simplest learnable
prior of Tomczak & Welling 2018, sec. 3)."""
from __future__ import annotations

import torch
from torch import nn
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal

from .base import Prior


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

    def forward(self) -> MixtureSameFamily:
        scale = (0.5 * self.logvars).exp()
        return MixtureSameFamily(Categorical(logits=self.logits, validate_args=False),
                                 Independent(Normal(self.means, scale, validate_args=False), 1,
                                             validate_args=False), validate_args=False)
