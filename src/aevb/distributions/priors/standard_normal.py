"""The standard normal prior p(z) = N(0, I) (Kingma & Welling)."""
from __future__ import annotations

import torch

from ..posteriors import DiagonalNormal
from .base import Prior


class StandardNormal(Prior):
    """p(z) = N(0, I); KL to a diagonal Gaussian q(z|x) in closed form,
    1/2 sum_j (mu_j^2 + sigma_j^2 - log sigma_j^2 - 1)."""

    support = "real"

    def __init__(self, latent_dim: int):
        super().__init__(latent_dim)
        self.register_buffer("zero", torch.zeros(latent_dim), persistent=False)

    def forward(self) -> DiagonalNormal:
        return DiagonalNormal(self.zero, self.zero, standard=True)
