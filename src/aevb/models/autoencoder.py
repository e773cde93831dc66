"""A deterministic autoencoder (seed 001 sec. 5.3, seed 004): x -> code z -> reconstruction.

It is not a generative model by itself: it has no prior (`prior is None`, `has_density`
False), and its encoder gives a point mass at the code. Fit a density on its codes to
sample from it (`aevb.samplers.GMMSampler`, "ex-post density estimation"). Its own
`sample` draws codes from a Gaussian with the mean and covariance of the codes seen in
training (tracked as a moving average), a one-component stand-in for the mixture.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .. import nets
from ..distributions import PointMass, likelihood as make_likelihood
from .base import Model, register


@register("autoencoder")
class Autoencoder(Model):
    """Encoder x -> z (latent_dim numbers), decoder z -> p(x|z) of the given likelihood.

    loss = -mean_x log p(x | z = enc(x))  (nats per example): the cross-entropy summed over
    pixels for likelihood "bernoulli", the squared error / (2 sigma^2) plus a constant for
    "gaussian". `objective` returns "rec" = log p(x|z) and "mse" (mean squared error of the
    decoder mean, per pixel) per example; it takes `beta` like every model and ignores it
    (there is no KL term).
    """

    capturable = True  # its step may be replayed as a CUDA graph (aevb.graphed)
    settings = ("latent_dim", "net", "hidden", "activation", "likelihood", "sigma")

    def __init__(self, input_shape=(1, 28, 28), latent_dim: int = 2, net: str = "mlp",
                 hidden=(400, 400), activation: str = "relu", likelihood: str = "bernoulli",
                 sigma: float | str = 1.0, num_classes: int = 0, code_momentum: float = 0.95):
        super().__init__(input_shape, latent_dim, num_classes, hidden)
        self.config = dict(input_shape=list(self.input_shape), latent_dim=latent_dim, net=net,
                           hidden=list(hidden), activation=activation, likelihood=likelihood,
                           sigma=sigma, num_classes=num_classes, code_momentum=code_momentum)
        self.code_momentum = code_momentum
        self.likelihood = make_likelihood(likelihood, sigma, self.input_shape[0])
        self.encoder, self.decoder = nets.build(
            net, self.input_shape, latent_dim, latent_dim,
            self.likelihood.params_per_dim * self.input_shape[0], hidden, activation, num_classes,
            out_bias=self.likelihood.initial_output)
        self.register_buffer("code_mean", torch.zeros(latent_dim))
        self.register_buffer("code_moment", torch.eye(latent_dim))
        self.register_buffer("code_updates", torch.zeros(()))

    def encode(self, x: Tensor, y: Tensor | None = None) -> PointMass:
        """A point mass at the code z = enc(x), (N, latent_dim)."""
        return PointMass(self.encoder(x, self.condition(y)))

    def objective(self, x: Tensor, y: Tensor | None = None, target: Tensor | None = None,
                  beta: float | None = None) -> dict:
        t = x if target is None else target
        z = self.encode(x, y).mean
        p = self.decode(z, y)
        rec = p.log_prob(t)
        if self.training and torch.is_grad_enabled():
            self._track(z.detach())
        mse = (p.mean.detach() - t).pow(2).flatten(1).mean(1)
        return {"loss": -rec.mean(), "rec": rec, "mse": mse}

    @torch.no_grad()
    def _track(self, z: Tensor) -> None:
        m = self.code_momentum
        self.code_mean.mul_(m).add_((1 - m) * z.mean(0))
        self.code_moment.mul_(m).add_((1 - m) * (z.T @ z) / z.shape[0])
        self.code_updates.add_(1)

    def code_distribution(self) -> torch.distributions.MultivariateNormal:
        """N(mean, covariance) of the training codes (moving averages, bias-corrected)."""
        d = self.latent_dim
        if self.code_updates == 0:
            return torch.distributions.MultivariateNormal(
                torch.zeros_like(self.code_mean), torch.eye(d, device=self.code_mean.device),
                validate_args=False)
        corr = 1 - self.code_momentum ** self.code_updates
        mean, moment = self.code_mean / corr, self.code_moment / corr
        cov = moment - torch.outer(mean, mean)
        cov = (cov + cov.T) / 2 + 1e-5 * torch.eye(d, device=cov.device)
        return torch.distributions.MultivariateNormal(mean, cov, validate_args=False)

    def latent_distribution(self):
        """Codes are drawn from the Gaussian fitted to the training codes (`code_distribution`)."""
        return self.code_distribution()
