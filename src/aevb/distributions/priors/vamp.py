"""The VampPrior (Tomczak & Welling 2018, "VAE with a VampPrior"): the prior is the mixture of
the posteriors of K learned pseudo-inputs."""
from __future__ import annotations

import torch
from torch import nn
from .base import Prior
from .mixture import DiagonalGaussianMixture


class VampPrior(Prior):
    """p(z) = 1/K sum_k q(z | u_k): the model's own posterior q(z|x) (its `encode`, which
    the VAE offers to every prior) at K learned pseudo-inputs u_k, images of the data's
    shape kept in [0, 1] (a hard tanh, as in the paper) so that they can be looked at
    (`pseudo_inputs_images`). The pseudo-inputs are learned with the rest of the model.
    KL(q(z|x) || p(z)) has no closed form: Monte Carlo (`model.kl_method` is "mc"). Not for
    a conditional model, whose posterior needs a label the prior does not have. With a flow
    posterior (posterior: iaf) the model offers its base Gaussian q0(z|x) as `encode`.
    Initialization: u_k ~ N(0.05, 0.01^2), as in the paper's MNIST experiments."""

    support = "real"
    settings = ("components", "input_shape", "encode", "num_classes")

    def __init__(self, latent_dim: int, components: int = 10, input_shape=(1, 28, 28),
                 encode=None, num_classes: int = 0):
        super().__init__(latent_dim)
        if components < 1:
            raise ValueError(f"prior_components must be >= 1, got {components}")
        if encode is None or num_classes:
            raise ValueError("prior 'vamp' needs the model's own encoder and no labels: use it "
                             "with a VAE that is not conditional")
        self.pseudo_inputs = nn.Parameter(0.05 + 0.01 * torch.randn(components, *input_shape))
        self.encode = encode

    def pseudo_inputs_images(self) -> torch.Tensor:
        """The K pseudo-inputs as images (K, C, H, W) in [0, 1]."""
        return nn.functional.hardtanh(self.pseudo_inputs, 0.0, 1.0)

    def forward(self) -> DiagonalGaussianMixture:
        q = self.encode(self.pseudo_inputs_images()).base_dist  # K diagonal Gaussians, (K, latent_dim)
        k = self.pseudo_inputs.shape[0]
        return DiagonalGaussianMixture(torch.zeros(k, device=q.loc.device, dtype=q.loc.dtype), q.loc, q.scale)
