"""The variational autoencoder of Kingma & Welling (AEVB): encoder q_phi(z|x), decoder
p_theta(x|z), prior p(z), trained by maximizing the SGVB estimate of the ELBO.

One class covers the variants of the seed reports, each a choice of shared parts:
- latent family: `latent_family="gaussian"` (reparameterized) or `"bernoulli"` (binary codes,
  prior Bernoulli(1/2); encoder trained by REINFORCE with a baseline, or straight-through
  Gumbel with `estimator="gumbel"`);
- networks: `net="mlp"` or `"conv"` (shapes inferred from the input);
- likelihood: bernoulli | gaussian (fixed or learned sigma) | logistic | continuous_bernoulli;
- objective: `"elbo"` or `"iwae"` (importance-weighted bound with `iwae_k` samples);
- conditional (CVAE): `num_classes > 0` concatenates the one-hot label to the encoder's
  input and to z;
- beta-VAE: `beta` weighs the KL term of the training loss (the reported ELBO is at beta 1).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .. import nets
from ..distributions import bits_per_dim, latent_family as make_latent_family, likelihood
from ..objectives import elbo, iwae_terms, score_function_elbo, straight_through_elbo
from .base import Model, check_sizes, register

OBJECTIVES = ("elbo", "iwae")
ESTIMATORS = ("reinforce", "gumbel")
BASELINES = ("none", "mean", "learned")


class ScoreBaseline(nn.Module):
    """A baseline b(x) for the score-function estimator (Mnih & Gregor 2014): a moving
    average c of the learning signal ("mean"), plus, for "learned", a small MLP regressing
    the signal's residual from x (trained by squared error; its loss is added to the
    model's, and its input is detached, so it never changes the encoder or decoder)."""

    def __init__(self, kind: str, in_features: int, hidden: int = 100, momentum: float = 0.9):
        super().__init__()
        self.kind, self.momentum = kind, momentum
        self.register_buffer("average", torch.zeros(()))
        self.register_buffer("updates", torch.zeros(()))
        self.net = None
        if kind == "learned":
            self.net = nn.Sequential(nn.Linear(in_features, hidden), nn.Tanh(), nn.Linear(hidden, 1))
            nn.init.zeros_(self.net[-1].weight)  # starts as the plain moving average
            nn.init.zeros_(self.net[-1].bias)

    def constant(self) -> Tensor:
        """The bias-corrected moving average (0 before the first update)."""
        if self.updates == 0:
            return self.average
        return self.average / (1 - self.momentum ** self.updates)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """(c, r(x)): the constant part and the learned part (None unless "learned")."""
        c = self.constant()
        if self.net is None:
            return c, None
        h = x.detach().flatten(1)
        if cond is not None:
            h = torch.cat([h, cond], 1)
        return c, self.net(h).squeeze(1)

    @torch.no_grad()
    def update(self, signal: Tensor) -> None:
        self.average.mul_(self.momentum).add_((1 - self.momentum) * signal.mean())
        self.updates.add_(1)


@register("vae")
class VAE(Model):
    """A VAE = encoder + decoder + latent family + likelihood + prior.

    loss = -mean_x [ E_q log p(x|z) - beta * KL(q(z|x) || p(z)) ]   (nats per example)
    (objective="iwae": loss = -mean_x L_K(x)). `objective(x, y)` also returns per-example
    "elbo", "rec" = log p(x|z), "kl" (and "iwae", and "bpd" for intensity likelihoods).
    """

    def __init__(self, input_shape=(1, 28, 28), latent_dim: int = 20, net: str = "mlp",
                 hidden=(400, 400), activation: str = "relu", likelihood: str = "bernoulli",
                 sigma: float | str = 1.0, latent_family: str = "gaussian", beta: float = 1.0,
                 kl: str = "analytic", num_classes: int = 0, objective: str = "elbo",
                 iwae_k: int = 5, estimator: str = "reinforce", baseline: str = "learned",
                 gumbel_temperature: float = 0.5):
        super().__init__()
        input_shape = check_sizes(input_shape, latent_dim, hidden)
        _choice("objective", objective, OBJECTIVES)
        _choice("estimator", estimator, ESTIMATORS)
        _choice("baseline", baseline, BASELINES)
        _choice("kl", kl, ("analytic", "mc"))
        if objective == "iwae" and iwae_k < 1:
            raise ValueError(f"iwae_k must be >= 1, got {iwae_k}")
        if gumbel_temperature <= 0:
            raise ValueError(f"gumbel_temperature must be > 0, got {gumbel_temperature}")
        self.config = dict(input_shape=list(input_shape), latent_dim=latent_dim, net=net,
                           hidden=list(hidden), activation=activation, likelihood=likelihood,
                           sigma=sigma, latent_family=latent_family, beta=beta, kl=kl,
                           num_classes=num_classes, objective=objective, iwae_k=iwae_k,
                           estimator=estimator, baseline=baseline,
                           gumbel_temperature=gumbel_temperature)
        self.input_shape, self.latent_dim, self.beta, self.kl = input_shape, latent_dim, beta, kl
        self.num_classes, self.objective_name, self.iwae_k = num_classes, objective, iwae_k
        self.estimator, self.gumbel_temperature = estimator, gumbel_temperature
        self.latent = make_latent_family(latent_family)
        if objective == "iwae" and not self.latent.reparameterized:
            raise ValueError(f"objective 'iwae' needs a reparameterized latent family (gaussian), "
                             f"not {latent_family!r}; use objective 'elbo'")
        self.likelihood = _likelihood(likelihood, sigma)
        self.encoder, self.decoder = nets.build(
            net, input_shape, self.latent.params_per_dim * latent_dim, latent_dim,
            self.likelihood.params_per_dim * input_shape[0], hidden, activation, num_classes)
        self.baseline = None
        if not self.latent.reparameterized and estimator == "reinforce" and baseline != "none":
            self.baseline = ScoreBaseline(baseline, math.prod(input_shape) + num_classes)

    @classmethod
    def from_config(cls, config: dict) -> "VAE":
        config = dict(config)
        if "latent" in config:  # older checkpoints named the latent family "latent"
            config["latent_family"] = config.pop("latent")
        return cls(**config)

    @classmethod
    def mlp(cls, input_shape, latent_dim=20, hidden=(400, 400), **kw) -> "VAE":
        return cls(input_shape, latent_dim, net="mlp", hidden=hidden, **kw)

    @classmethod
    def conv(cls, input_shape, latent_dim=20, hidden=(32, 64), **kw) -> "VAE":
        return cls(input_shape, latent_dim, net="conv", hidden=hidden, **kw)

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

    @torch.no_grad()
    def embed(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """The code of each image: the posterior mean E_q[z] (N, latent_dim)."""
        return self.latent.mean(self.encode(x, y))

    # -- what training and users call
    def objective(self, x: Tensor, y: Tensor | None = None, target: Tensor | None = None) -> dict:
        """{"loss": scalar to minimize, and per-example (N,) "elbo", "rec", "kl", ...}, in
        nats per example. The ELBO is always the true bound (beta = 1); beta only weighs
        the KL term of the loss."""
        if self.objective_name == "iwae":
            terms = iwae_terms(self, x, self.iwae_k, y, target, self.beta)
            terms["loss"] = -terms.pop("loss_terms").mean()
        elif self.latent.reparameterized:
            terms = elbo(self, x, y, target, self.kl)
            terms["loss"] = -(terms["rec"] - self.beta * terms["kl"]).mean()
        elif self.estimator == "gumbel":
            terms = straight_through_elbo(self, x, y, target, self.kl, self.gumbel_temperature)
            terms["loss"] = -(terms["rec"] - self.beta * terms["kl"]).mean()
        else:
            terms = self._reinforce(x, y, target)
        if self.likelihood.bpd_offset is not None:
            terms["bpd"] = bits_per_dim(terms["elbo"].detach(), math.prod(self.input_shape),
                                        self.likelihood.bpd_offset)
        return terms

    def _reinforce(self, x, y, target) -> dict:
        """Score-function training of a discrete latent: decoder by backprop, encoder by
        (signal - baseline) * grad log q, the baseline's net by squared error."""
        b, fit = 0.0, None
        if self.baseline is not None:
            c, r = self.baseline(x, self._cond(y))
            b = c if r is None else c + r.detach()
        terms, surrogate, signal = score_function_elbo(self, x, y, target, self.kl, b, self.beta)
        loss = -surrogate.mean()
        if self.baseline is not None:
            if r is not None:
                fit = ((signal - c - r) ** 2).mean()
                loss = loss + fit
            if self.training and torch.is_grad_enabled():
                self.baseline.update(signal)
        terms["loss"] = loss
        return terms

    @torch.no_grad()
    def sample(self, n: int, y: Tensor | int | None = None, mean: bool = True,
               temperature: float = 1.0) -> Tensor:
        """n images from p(z) p(x|z): decoder means (default) or random draws.

        A conditional model takes labels `y`: a tensor of n labels, or one int for all; when
        none are given it cycles through the classes (0, 1, ..., K-1, 0, ...). `temperature`
        T scales the prior's spread (`sample_codes`)."""
        y = self._labels(n, y)
        p = self.decode(self.sample_codes(n, temperature), y)
        return p.mean if mean else p.sample()

    @torch.no_grad()
    def sample_codes(self, n: int, temperature: float = 1.0) -> Tensor:
        """n codes z ~ p(z), the prior's spread around its mean scaled by `temperature` T:
        z = mean + T (z' - mean), z' ~ p(z); for the standard normal prior z = T eps. Binary
        latents have no spread to scale (T must be 1)."""
        prior = self.prior(*_where(self))
        z = prior.sample((n,))
        if temperature == 1:
            return z
        if not temperature > 0:
            raise ValueError(f"temperature must be a positive number, got {temperature!r}")
        if not self.latent.reparameterized:
            raise ValueError(f"temperature applies to Gaussian latents, not to latent family "
                             f"{self.config['latent_family']!r} (binary codes)")
        return prior.mean + temperature * (z - prior.mean)

    def _labels(self, n: int, y) -> Tensor | None:
        if not self.num_classes:
            if y is not None:
                raise ValueError("labels y given, but this model is not conditional")
            return None
        device = _where(self)[0]
        if y is None:
            return torch.arange(n, device=device) % self.num_classes
        y = torch.as_tensor(y, device=device).long()
        if y.dim() == 0:
            y = y.expand(n)
        if y.shape != (n,):
            raise ValueError(f"need {n} labels, got shape {tuple(y.shape)}")
        if (y < 0).any() or (y >= self.num_classes).any():
            raise ValueError(f"labels must be in 0..{self.num_classes - 1}")
        return y

    @torch.no_grad()
    def reconstruct(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """Decoder mean at the posterior mean: E[x | z = E_q z]."""
        return self.decode(self.latent.mean(self.encode(x, y)), y).mean

    @torch.no_grad()
    def log_likelihood(self, x, samples: int = 5000, **kw):
        """Importance-sampled estimate of log p(x) per example (see `aevb.evaluation`)."""
        from ..evaluation import log_likelihood
        return log_likelihood(self, x, samples=samples, **kw)


def _choice(key: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"{key} must be one of {', '.join(allowed)}; got {value!r}")


def _where(model: nn.Module):
    p = next(model.parameters())
    return p.device, p.dtype


def _likelihood(name: str, sigma):
    return likelihood(name, sigma=sigma) if name == "gaussian" else likelihood(name)
