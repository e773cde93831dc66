"""The variational autoencoder of Kingma & Welling (AEVB): encoder q_phi(z|x), decoder
p_theta(x|z), prior p(z), trained by maximizing the SGVB estimate of the ELBO."""
from __future__ import annotations

import torch
from torch import Tensor

from .. import nets
from ..distributions import latent_family, likelihood
from ..objectives import elbo
from .base import Model, register


@register("vae")
class VAE(Model):
    """A VAE = encoder + decoder + latent family + likelihood + prior.

    loss = -mean_x [ E_q log p(x|z) - beta * KL(q(z|x) || p(z)) ]   (nats per example)
    """

    def __init__(self, input_shape=(1, 28, 28), latent_dim: int = 20, net: str = "mlp",
                 hidden=(400, 400), activation: str = "relu", likelihood: str = "bernoulli",
                 sigma: float | str = 1.0, latent: str = "gaussian", beta: float = 1.0,
                 kl: str = "analytic", num_classes: int = 0):
        super().__init__()
        input_shape = tuple(int(s) for s in input_shape)
        if len(input_shape) != 3:
            raise ValueError(f"input_shape must be (channels, height, width), got {input_shape}")
        if latent_dim < 1:
            raise ValueError(f"latent_dim must be >= 1, got {latent_dim}")
        self.config = dict(input_shape=list(input_shape), latent_dim=latent_dim, net=net,
                           hidden=list(hidden), activation=activation, likelihood=likelihood,
                           sigma=sigma, latent=latent, beta=beta, kl=kl, num_classes=num_classes)
        self.input_shape, self.latent_dim, self.beta, self.kl = input_shape, latent_dim, beta, kl
        self.num_classes = num_classes
        self.latent = latent_family(latent)
        self.likelihood = _likelihood(likelihood, sigma)
        self.encoder, self.decoder = nets.build(
            net, input_shape, self.latent.params_per_dim * latent_dim, latent_dim,
            self.likelihood.params_per_dim * input_shape[0], hidden, activation, num_classes)

    @classmethod
    def from_config(cls, config: dict) -> "VAE":
        return cls(**config)

    @classmethod
    def mlp(cls, input_shape, latent_dim=20, hidden=(400, 400), **kw) -> "VAE":
        return cls(input_shape, latent_dim, net="mlp", hidden=hidden, **kw)

    # -- the parts
    def _cond(self, y: Tensor | None):
        if not self.num_classes:
            return None
        if y is None:
            raise ValueError("this is a conditional model: pass the labels y")
        return torch.nn.functional.one_hot(y, self.num_classes).to(torch.get_default_dtype())

    def encode(self, x: Tensor, y: Tensor | None = None):
        """q_phi(z|x) as a distribution over latent vectors (event = latent_dim)."""
        return self.latent(self.encoder(x, self._cond(y)))

    def decode(self, z: Tensor, y: Tensor | None = None):
        """p_theta(x|z) as a distribution over whole images (event = input_shape)."""
        c = self._cond(y)
        return self.likelihood(self.decoder(z if c is None else torch.cat([z, c], 1)), 3)

    def prior(self, device=None, dtype=None):
        return self.latent.prior(self.latent_dim, device, dtype)

    # -- what training and users call
    def objective(self, x: Tensor, y: Tensor | None = None, target: Tensor | None = None) -> dict:
        terms = elbo(self, x, y, target, self.kl)
        terms["loss"] = -(terms["rec"] - self.beta * terms["kl"]).mean()
        return terms

    @torch.no_grad()
    def sample(self, n: int, y: Tensor | None = None, mean: bool = True) -> Tensor:
        """n images from p(z) p(x|z): decoder means (default) or random draws."""
        p = self.decode(self.prior().sample((n,)), y)
        return p.mean if mean else p.sample()

    @torch.no_grad()
    def reconstruct(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """Decoder mean at the posterior mean: E[x | z = E_q z]."""
        return self.decode(self.latent.mean(self.encode(x, y)), y).mean

    @torch.no_grad()
    def log_likelihood(self, x, samples: int = 5000, **kw):
        """Importance-sampled estimate of log p(x) per example (see `aevb.evaluation`)."""
        from ..evaluation import log_likelihood
        return log_likelihood(self, x, samples=samples, **kw)


def _likelihood(name: str, sigma):
    return likelihood(name, sigma=sigma) if name == "gaussian" else likelihood(name)
