"""A VAE with two stochastic layers (Burda, Grosse & Salakhutdinov 2016, sec. 5: the MNIST
architecture of their best models), trained with the ELBO or the IWAE bound.

    inference   x -> `hidden` (200-200) -> q(z1|x)  -> `inner_hidden` (100-100) -> q(z2|z1)
    generation  z2 ~ N(0, I) -> `inner_hidden` -> p(z1|z2) -> `hidden` -> p(x|z1)

z1 (`inner_latent_dim`, 100) and z2 (`latent_dim`, 50: the code of plots, samples and
embeddings) are diagonal Gaussians; p(x|z1) is any aevb likelihood. The activation is relu
by default (Burda et al. used tanh; relu reached a better bound in the same training time
on the offline MNIST split, README). The importance weights
run over both layers,

    log w = log p(x|z1) + log p(z1|z2) + log p(z2) - log q(z1|x) - log q(z2|z1),

declared as the model's `log_weight_terms`, which the IWAE objective, the ELBO (K = 1) and
the importance-sampled log p(x) of `aevb eval` all use; `beta` weighs both KL terms
(log q(z1|x) + log q(z2|z1) - log p(z1|z2) - log p(z2), estimated by sampling:
`kl_method` "mc").

The one-layer interface (`encode`, `decode`, `prior`) is that of the top layer z2, with
the means of the layer between: `encode(x)` = q(z2 | z1 = E q(z1|x)), so `embed` is the
top-layer mean through the z1 mean; `decode(z2)` = p(x | z1 = E p(z1|z2)) (images of
samples, manifolds and the explorer); `sample(mean=False)` draws z1 ~ p(z1|z2) and
x ~ p(x|z1) instead (ancestral sampling). `latent_layers` is 2: a use that needs the whole
model as one latent (imputation) refuses it with a one-line error.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .. import nets
from ..distributions import DiagonalGaussian, bits_per_dim, build_prior
from ..distributions import likelihood as make_likelihood
from ..nets.mlp import mlp
from ..objectives import LogWeights, decoded_log_prob, iwae_terms
from .base import Model, check_choice, register

OBJECTIVES = ("elbo", "iwae")


@register("hvae")
class HVAE(Model):
    """Two stochastic layers z2 -> z1 -> x (see the module docstring).

    loss = -mean_x [ log p(x|z1) - beta (log q(z1|x) + log q(z2|z1) - log p(z1|z2) - log p(z2)) ]
    at one sample (z1, z2) ~ q (objective "elbo"), or -mean_x L_K (objective "iwae",
    K = `iwae_k`); `objective(x, y)` returns per example "elbo", "rec" = log p(x|z1), "kl"
    (both layers) and, for "iwae", "iwae" = L_K. A conditional model (`num_classes`) gives the label to q(z1|x)
    and p(x|z1). `net` "conv" makes the x <-> z1 networks convolutional (`hidden` = channels).
    """

    capturable = True  # its step may be replayed as a CUDA graph (aevb.graphed)
    settings = ("latent_dim", "inner_latent_dim", "net", "hidden", "inner_hidden", "activation",
                "likelihood", "sigma", "latent_family", "prior", "beta", "objective", "iwae_k")
    latent_layers = 2
    kl_method = "mc"

    def __init__(self, input_shape=(1, 28, 28), latent_dim: int = 50, inner_latent_dim: int = 100,
                 net: str = "mlp", hidden=(200, 200), inner_hidden=(100, 100), activation: str = "relu",
                 likelihood: str = "bernoulli", sigma: float | str = 1.0, latent_family: str = "gaussian",
                 prior: str | None = None, beta: float = 1.0, num_classes: int = 0,
                 objective: str = "elbo", iwae_k: int = 5):
        super().__init__(input_shape, latent_dim, num_classes, hidden)
        _check_options(inner_latent_dim, inner_hidden, latent_family, prior, objective, iwae_k)
        self.config = dict(input_shape=list(self.input_shape), latent_dim=latent_dim,
                           inner_latent_dim=inner_latent_dim, net=net, hidden=list(hidden),
                           inner_hidden=list(inner_hidden), activation=activation, likelihood=likelihood,
                           sigma=sigma, latent_family="gaussian", prior="standard_normal", beta=beta,
                           num_classes=num_classes, objective=objective, iwae_k=iwae_k)
        self.beta, self.objective_name, self.iwae_k = beta, objective, iwae_k
        self.inner_latent_dim = inner_latent_dim
        self.gaussian = DiagonalGaussian()
        self.likelihood = make_likelihood(likelihood, sigma, self.input_shape[0])
        # x <-> z1: the networks of a one-layer VAE with latent z1
        self.encoder, self.decoder = nets.build(
            net, self.input_shape, 2 * inner_latent_dim, inner_latent_dim,
            self.likelihood.params_per_dim * self.input_shape[0], hidden, activation, num_classes,
            out_bias=self.likelihood.initial_output)
        # z1 <-> z2: MLPs giving a mean and a log-variance per unit
        self.inner_encoder = mlp([inner_latent_dim, *inner_hidden, 2 * latent_dim], activation)
        self.inner_decoder = mlp([latent_dim, *reversed(list(inner_hidden)), 2 * inner_latent_dim], activation)
        self.prior = build_prior("standard_normal", latent_dim, "real")

    # -- the layers
    def encode_inner(self, x: Tensor, y: Tensor | None = None):
        """q(z1|x), a diagonal Gaussian over z1 (event = inner_latent_dim)."""
        return self.gaussian(self.encoder(x, self.condition(y)))

    def encode_top(self, z1: Tensor):
        """q(z2|z1) for z1 of any leading shape (..., inner_latent_dim)."""
        return self.gaussian(self.inner_encoder(z1))

    def decode_inner(self, z2: Tensor):
        """p(z1|z2) for z2 of any leading shape (..., latent_dim)."""
        return self.gaussian(self.inner_decoder(z2))

    def decode_x(self, z1: Tensor, y: Tensor | None = None):
        """p(x|z1) over whole images, batch shape z1.shape[:-1]."""
        return super().decode(z1, y)

    # -- the one-layer interface: the top layer, through the means of z1
    def encode(self, x: Tensor, y: Tensor | None = None):
        """q(z2 | z1 = E q(z1|x)): the top-layer posterior through the mean of the layer below."""
        return self.encode_top(self.encode_inner(x, y).mean)

    def decode(self, z: Tensor, y: Tensor | None = None):
        """p(x | z1 = E p(z1|z2)) for codes z2 of any leading shape (..., latent_dim)."""
        return self.decode_x(self.decode_inner(z).mean, y)

    @torch.no_grad()
    def sample(self, n: int, y: Tensor | int | None = None, mean: bool = True,
               temperature: float = 1.0) -> Tensor:
        """n images: decoder means at z1 = E p(z1|z2) (default, as `decode`), or ancestral
        draws z1 ~ p(z1|z2), x ~ p(x|z1) (`mean=False`); z2 ~ p(z2) at `temperature`."""
        if mean:
            return super().sample(n, y, True, temperature)
        y = self.class_labels(n, y)
        z1 = self.decode_inner(self.sample_latents(n, temperature)).sample()
        return self.decode_x(z1, y).sample()

    # -- the log-weights over both layers, and the objective
    def log_weight_terms(self, x: Tensor, k: int, y: Tensor | None = None, target: Tensor | None = None,
                         *, rsample: bool = False, rows: int | None = None) -> LogWeights:
        """(log p(x|z1), log p(z1|z2) + log p(z2), log q(z1|x) + log q(z2|z1)), each (N, K), for
        K samples z1_k ~ q(z1|x), z2_k ~ q(z2|z1_k) (reparameterized if `rsample`). p(x|z1)
        is computed on about `rows` samples at a time (`aevb.objectives.decoded_log_prob`)."""
        q1 = self.encode_inner(x, y)
        z1 = q1.rsample((k,)) if rsample else q1.sample((k,))     # (K, N, D1)
        q2 = self.encode_top(z1)
        z2 = q2.rsample() if rsample else q2.sample()              # (K, N, D2)
        log_q = q1.log_prob(z1) + q2.log_prob(z2)
        log_p = self.prior().log_prob(z2) + self.decode_inner(z2).log_prob(z1)
        t = x if target is None else target
        log_px_z = decoded_log_prob(self.decode_x, z1.transpose(0, 1), t, y, rows)
        return LogWeights(log_px_z, log_p.T, log_q.T)

    def objective(self, x: Tensor, y: Tensor | None = None, target: Tensor | None = None,
                  beta: float | None = None) -> dict:
        """{"loss", and per example (N,) "elbo", "rec", "kl" (+ "iwae", "bpd")}, nats per
        example; the ELBO is the true bound (beta = 1), `beta` weighs the KL terms of the loss."""
        beta = self.beta if beta is None else beta
        terms = iwae_terms(self, x, self.iwae_k if self.objective_name == "iwae" else 1, y, target, beta)
        terms["loss"] = -terms.pop("loss_terms").mean()
        if self.objective_name == "elbo":
            del terms["iwae"]  # the same number at K = 1
        if self.likelihood.bpd_offset is not None:
            terms["bpd"] = bits_per_dim(terms["elbo"].detach(), math.prod(self.input_shape),
                                        self.likelihood.bpd_offset)
        return terms


def _check_options(inner_latent_dim, inner_hidden, latent_family, prior, objective, iwae_k) -> None:
    if inner_latent_dim < 1 or any(int(h) < 1 for h in inner_hidden):
        raise ValueError(f"inner_latent_dim and inner_hidden sizes must be >= 1, got {inner_latent_dim} "
                         f"and {list(inner_hidden)}")
    if latent_family != "gaussian":
        raise ValueError(f"model hvae has Gaussian latents only (latent_family gaussian), got {latent_family!r}")
    if prior not in (None, "standard_normal"):
        raise ValueError(f"model hvae has the prior standard_normal on its top layer only, got {prior!r}; "
                         "leave prior unset")
    check_choice("objective", objective, OBJECTIVES)
    if iwae_k < 1:
        raise ValueError(f"iwae_k must be >= 1, got {iwae_k}")
