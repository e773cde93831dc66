"""A deterministic autoencoder (seed 001 sec. 5.3, seed 004): x -> code z -> reconstruction.

It is not a generative model by itself; fit a density on its codes to sample from it
(`aevb.samplers.GMMSampler`, "ex-post density estimation"). Its own `sample` draws codes
from a Gaussian with the mean and covariance of the codes seen in training (tracked as a
moving average), a one-component stand-in for the mixture.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .. import nets
from .base import Model, check_sizes, register
from .vae import _likelihood, _where


@register("autoencoder")
class Autoencoder(Model):
    """Encoder x -> z (latent_dim numbers), decoder z -> p(x|z) of the given likelihood.

    loss = -mean_x log p(x | z = enc(x))  (nats per example): the cross-entropy summed over
    pixels for likelihood "bernoulli", the squared error / (2 sigma^2) plus a constant for
    "gaussian". `objective` returns "rec" = log p(x|z) and "mse" (mean squared error of the
    decoder mean, per pixel) per example.
    """

    def __init__(self, input_shape=(1, 28, 28), latent_dim: int = 2, net: str = "mlp",
                 hidden=(400, 400), activation: str = "relu", likelihood: str = "bernoulli",
                 sigma: float | str = 1.0, num_classes: int = 0, code_momentum: float = 0.95):
        super().__init__()
        input_shape = check_sizes(input_shape, latent_dim, hidden)
        self.config = dict(input_shape=list(input_shape), latent_dim=latent_dim, net=net,
                           hidden=list(hidden), activation=activation, likelihood=likelihood,
                           sigma=sigma, num_classes=num_classes, code_momentum=code_momentum)
        self.input_shape, self.latent_dim, self.num_classes = input_shape, latent_dim, num_classes
        self.code_momentum = code_momentum
        self.likelihood = _likelihood(likelihood, sigma)
        self.encoder, self.decoder = nets.build(
            net, input_shape, latent_dim, latent_dim,
            self.likelihood.params_per_dim * input_shape[0], hidden, activation, num_classes)
        self.register_buffer("code_mean", torch.zeros(latent_dim))
        self.register_buffer("code_moment", torch.eye(latent_dim))
        self.register_buffer("code_updates", torch.zeros(()))

    @classmethod
    def from_config(cls, config: dict) -> "Autoencoder":
        return cls(**config)

    def _cond(self, y):
        if not self.num_classes:
            return None
        if y is None:
            raise ValueError("this is a conditional model: pass the labels y")
        return nn.functional.one_hot(y, self.num_classes).to(torch.get_default_dtype())

    def encode(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """The code z = enc(x), (N, latent_dim)."""
        return self.encoder(x, self._cond(y))

    def decode(self, z: Tensor, y: Tensor | None = None):
        """p(x|z) as a distribution over whole images."""
        c = self._cond(y)
        return self.likelihood(self.decoder(z if c is None else torch.cat([z, c], 1)), 3)

    @torch.no_grad()
    def embed(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return self.encode(x, y)

    def objective(self, x: Tensor, y: Tensor | None = None, target: Tensor | None = None) -> dict:
        t = x if target is None else target
        z = self.encode(x, y)
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
            return torch.distributions.MultivariateNormal(torch.zeros_like(self.code_mean),
                                                          torch.eye(d, device=self.code_mean.device))
        corr = 1 - self.code_momentum ** self.code_updates
        mean, moment = self.code_mean / corr, self.code_moment / corr
        cov = moment - torch.outer(mean, mean)
        cov = (cov + cov.T) / 2 + 1e-5 * torch.eye(d, device=cov.device)
        return torch.distributions.MultivariateNormal(mean, cov)

    @torch.no_grad()
    def sample(self, n: int, y: Tensor | int | None = None, mean: bool = True,
               temperature: float = 1.0) -> Tensor:
        """n images decoded from codes drawn from a Gaussian fitted to the training codes
        (use `aevb.samplers.GMMSampler` for a mixture); `temperature` scales its spread."""
        from .vae import VAE
        y = VAE._labels(self, n, y)
        p = self.decode(self.sample_codes(n, temperature), y)
        return p.mean if mean else p.sample()

    @torch.no_grad()
    def sample_codes(self, n: int, temperature: float = 1.0) -> Tensor:
        """n codes from `code_distribution`, its spread scaled by `temperature` T:
        z = mean + T (z' - mean)."""
        if not temperature > 0:
            raise ValueError(f"temperature must be a positive number, got {temperature!r}")
        d = self.code_distribution()
        z = d.sample((n,))
        return (d.mean + temperature * (z - d.mean)).to(_where(self)[1])

    @torch.no_grad()
    def reconstruct(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return self.decode(self.encode(x, y), y).mean
