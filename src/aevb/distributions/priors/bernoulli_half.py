"""The uniform prior over binary codes, p(z) = prod_j Bernoulli(z_j; 1/2) (seed 001 sec. 3.1.2)."""
from __future__ import annotations

import torch
from torch.distributions import Independent

from ..posteriors import bernoulli_codes
from .base import Prior


class BernoulliHalf(Prior):
    """p(z) = prod_j Bernoulli(z_j; 1/2) over z in {0, 1}^D: log p(z) = -D log 2 for every
    code; KL to a factorized Bernoulli q(z|x) in closed form, D log 2 - H(q)."""

    support = "binary"

    def __init__(self, latent_dim: int):
        super().__init__(latent_dim)
        self.register_buffer("logits", torch.zeros(latent_dim), persistent=False)

    def forward(self) -> Independent:
        return bernoulli_codes(self.logits)
