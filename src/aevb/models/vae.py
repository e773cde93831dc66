"""The variational autoencoder of Kingma & Welling (AEVB): encoder q_phi(z|x), decoder
p_theta(x|z), prior p(z), trained by maximizing the SGVB estimate of the ELBO.

One class covers the variants of the seed reports, each a choice of shared parts:
- posterior family: `latent_family="gaussian"` (reparameterized) or `"bernoulli"` (binary
  codes; encoder trained by REINFORCE with a baseline, or straight-through Gumbel with
  `estimator="gumbel"`); `posterior="iaf"` puts `flow_steps` inverse autoregressive flow
  steps (MADEs of hidden sizes `flow_hidden`, with the encoder's context if `flow_context`,
  each step affine or gated, `flow_form`)
  on the Gaussian (`aevb.distributions.iaf`);
- prior: `prior=` a name in `aevb.distributions.PRIORS` (default: the posterior family's,
  N(0, I) or Bernoulli(1/2)); `prior_components` for a mixture prior;
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
from torch import Tensor

from .. import fused, nets
from ..distributions import LATENTS, InverseAutoregressiveFlow, bits_per_dim, build_prior
from ..distributions import latent_family as make_latent_family
from ..distributions import likelihood as make_likelihood
from ..objectives import (KL_METHODS, elbo, iwae_terms, kl_method, score_function_elbo,
                          straight_through_elbo)
from .base import Model, check_choice, register
from .baseline import ScoreBaseline

OBJECTIVES = ("elbo", "iwae")
ESTIMATORS = ("reinforce", "gumbel")
BASELINES = ("none", "mean", "learned")
POSTERIORS = ("diagonal", "iaf")


def _default_prior(family) -> str | None:
    return LATENTS[family].default_prior if isinstance(family, str) and family in LATENTS else None


@register("vae")
class VAE(Model):
    """A VAE = encoder + decoder + posterior family + likelihood + prior.

    loss = -mean_x [ E_q log p(x|z) - beta * KL(q(z|x) || p(z)) ]   (nats per example)
    (objective="iwae": loss = -mean_x L_K(x)). `objective(x, y)` also returns per-example
    "elbo", "rec" = log p(x|z), "kl" (and "iwae", and "bpd" for intensity likelihoods).
    KL is analytic where a closed form is registered for the posterior and the prior, else
    estimated by Monte Carlo: `kl_method` says which (config `kl: mc` asks for Monte Carlo).
    """

    capturable = True  # its step may be replayed as a CUDA graph (aevb.graphed)
    settings = ("latent_dim", "net", "hidden", "activation", "likelihood", "sigma", "latent_family",
                "prior", "prior_components", "beta", "kl", "objective", "iwae_k", "estimator",
                "baseline", "gumbel_temperature", "posterior", "flow_steps", "flow_hidden", "flow_context",
                "flow_form")

    def __init__(self, input_shape=(1, 28, 28), latent_dim: int = 20, net: str = "mlp",
                 hidden=(400, 400), activation: str = "relu", likelihood: str = "bernoulli",
                 sigma: float | str = 1.0, latent_family: str = "gaussian", beta: float = 1.0,
                 kl: str = "analytic", num_classes: int = 0, objective: str = "elbo",
                 iwae_k: int = 5, estimator: str = "reinforce", baseline: str = "learned",
                 gumbel_temperature: float = 0.5, prior: str | None = None, prior_components: int = 10,
                 posterior: str = "diagonal", flow_steps: int = 2, flow_hidden=(128, 128),
                 flow_context: bool = False, flow_form: str = "affine"):
        super().__init__(input_shape, latent_dim, num_classes, hidden)
        _check_options(objective, estimator, baseline, kl, iwae_k, gumbel_temperature)
        self.latent = _posterior_family(latent_family, posterior, latent_dim,
                                        dict(steps=flow_steps, hidden=flow_hidden, context=flow_context,
                                             form=flow_form))
        if objective == "iwae" and not self.latent.reparameterized:
            raise ValueError(f"objective 'iwae' needs a reparameterized latent family (gaussian), "
                             f"not {latent_family!r}; use objective 'elbo'")
        prior = prior or self.latent.default_prior
        self.config = dict(input_shape=list(self.input_shape), latent_dim=latent_dim, net=net,
                           hidden=list(hidden), activation=activation, likelihood=likelihood,
                           sigma=sigma, latent_family=latent_family, prior=prior,
                           prior_components=prior_components, beta=beta, kl=kl,
                           num_classes=num_classes, objective=objective, iwae_k=iwae_k,
                           estimator=estimator, baseline=baseline,
                           gumbel_temperature=gumbel_temperature, posterior=posterior,
                           flow_steps=flow_steps, flow_hidden=list(flow_hidden), flow_context=flow_context,
                           flow_form=flow_form)
        self.beta, self.kl, self.objective_name, self.iwae_k = beta, kl, objective, iwae_k
        self.estimator, self.gumbel_temperature = estimator, gumbel_temperature
        self.likelihood = make_likelihood(likelihood, sigma, self.input_shape[0])
        enc_out = self.latent.params_per_dim * latent_dim + self.latent.context_dim
        self.encoder, self.decoder = nets.build(
            net, self.input_shape, enc_out, latent_dim,
            self.likelihood.params_per_dim * self.input_shape[0], hidden, activation, num_classes,
            out_bias=self.likelihood.initial_output)
        # every prior is offered these; each keeps those it declares (a VampPrior: the encoder,
        # whose q(z|x) before any flow: a mixture of flows would need D inversions per density)
        self.prior = build_prior(prior, latent_dim, self.latent.support, components=prior_components,
                                 input_shape=self.input_shape,
                                 encode=self.encode if posterior == "diagonal" else self._encode_base,
                                 num_classes=num_classes)
        self.baseline = None
        if not self.latent.reparameterized and estimator == "reinforce" and baseline != "none":
            self.baseline = ScoreBaseline(baseline, math.prod(self.input_shape) + num_classes)
        with torch.no_grad():  # the posterior at a zero encoder output stands for all of them
            q = self.latent(torch.zeros(1, enc_out))
            self.kl_method = kl_method(kl, q, self.prior())

    @classmethod
    def upgrade_config(cls, config: dict) -> dict:
        """Configs of earlier versions: the latent family was called "latent"; there was no
        `prior` (the family's default), no `prior_components`, and no `posterior` (the
        diagonal one) with `flow_steps` and `flow_hidden`; IAF posteriors before `flow_context`
        all had the context, and before `flow_form` all were gated."""
        config = dict(config)
        if "latent" in config:
            config["latent_family"] = config.pop("latent")
        if config.get("prior") is None and _default_prior(config.get("latent_family", "gaussian")):
            config["prior"] = _default_prior(config.get("latent_family", "gaussian"))
        config.setdefault("prior_components", 10)
        config.setdefault("posterior", "diagonal")
        config.setdefault("flow_steps", 2)
        config.setdefault("flow_hidden", [128, 128])
        config.setdefault("flow_context", config["posterior"] == "iaf")
        config.setdefault("flow_form", "gated" if config["posterior"] == "iaf" else "affine")
        return config

    @classmethod
    def mlp(cls, input_shape, latent_dim=20, hidden=(400, 400), **kw) -> "VAE":
        return cls(input_shape, latent_dim, net="mlp", hidden=hidden, **kw)

    @classmethod
    def conv(cls, input_shape, latent_dim=20, hidden=(32, 64), **kw) -> "VAE":
        return cls(input_shape, latent_dim, net="conv", hidden=hidden, **kw)

    def encode(self, x: Tensor, y: Tensor | None = None):
        """q_phi(z|x) as a distribution over latent vectors (event = latent_dim)."""
        return self.latent(self.encoder(x, self.condition(y)))

    def _encode_base(self, x: Tensor, y: Tensor | None = None):
        """posterior "iaf": the diagonal Gaussian q0(z|x) the flow starts from."""
        return self.latent.base(self.encoder(x, self.condition(y)))

    def objective(self, x: Tensor, y: Tensor | None = None, target: Tensor | None = None,
                  beta: float | None = None) -> dict:
        """{"loss": scalar to minimize, and per-example (N,) "elbo", "rec", "kl", ...}, in
        nats per example. The ELBO is always the true bound (beta = 1); `beta` (default:
        the model's) only weighs the KL term of the loss."""
        beta = self.beta if beta is None else beta
        if self.objective_name == "iwae":
            terms = iwae_terms(self, x, self.iwae_k, y, target, beta)
            terms["loss"] = -terms.pop("loss_terms").mean()
        elif self.latent.reparameterized:
            terms = elbo(self, x, y, target, self.kl_method)
            terms["loss"] = -(terms["rec"] - beta * terms["kl"]).mean()
        elif self.estimator == "gumbel":
            terms = straight_through_elbo(self, x, y, target, self.kl_method, self.gumbel_temperature)
            terms["loss"] = -(terms["rec"] - beta * terms["kl"]).mean()
        else:
            terms = self._reinforce(x, y, target, beta)
        if self.likelihood.bpd_offset is not None:
            terms["bpd"] = bits_per_dim(terms["elbo"].detach(), math.prod(self.input_shape),
                                        self.likelihood.bpd_offset)
        return terms

    def fused_step(self):
        """`aevb.fused.FusedELBO`'s step for the plain MLP VAE (ReLU, diagonal Gaussian
        posterior, standard normal prior, analytic KL, Bernoulli pixels, ELBO, no labels);
        None where `objective`, `encode` or `decode` is not VAE's own (a subclass, a patch),
        or where hooks are registered (the fused step would bypass them)."""
        if any(getattr(type(self), name) is not f for name, f in _FUSED_WRITES_OUT.items()):
            return None
        return self.fused_elbo_step()

    def fused_elbo_step(self):
        """The fused step where the settings allow it, whatever the class: for a subclass whose
        training steps are the VAE's own (its `fused_step` may return this)."""
        c = self.config
        if (c["latent_family"], c["posterior"], c["prior"], c["likelihood"], c["objective"], c["num_classes"],
                self.kl_method) != ("gaussian", "diagonal", "standard_normal", "bernoulli", "elbo", 0, "analytic"):
            return None
        if c["net"] != "mlp" or not fused.enabled() or fused.hooked(self):
            return None
        encoder, decoder = fused.relu_layers(self.encoder.net), fused.relu_layers(self.decoder.net)
        if encoder is None or decoder is None:
            return None
        f = fused.FusedELBO(encoder, decoder, self.latent_dim)
        return lambda x, target=None, beta=None, on_grad=None: f.step(
            x, target, self.beta if beta is None else beta, on_grad)

    def _reinforce(self, x, y, target, beta: float) -> dict:
        """Score-function training of a discrete latent: decoder by backprop, encoder by
        (signal - baseline) * grad log q, the baseline's net by squared error."""
        b, fit = 0.0, None
        if self.baseline is not None:
            c, r = self.baseline(x, self.condition(y))
            b = c if r is None else c + r.detach()
        terms, surrogate, signal = score_function_elbo(self, x, y, target, self.kl_method, b, beta)
        loss = -surrogate.mean()
        if self.baseline is not None:
            if r is not None:
                fit = ((signal - c - r) ** 2).mean()
                loss = loss + fit
            if self.training and torch.is_grad_enabled():
                self.baseline.update(signal)
        terms["loss"] = loss
        return terms


#: the methods whose computation the fused step writes out: a subclass or a patch that
#: replaces one of them trains through autograd
_FUSED_WRITES_OUT = {name: getattr(VAE, name) for name in ("objective", "encode", "decode")}


def _posterior_family(latent_family: str, posterior: str, latent_dim: int, flow: dict):
    """The posterior family: `latent_family`'s, or an inverse autoregressive flow on it (with
    the `InverseAutoregressiveFlow` arguments `flow`)."""
    check_choice("posterior", posterior, POSTERIORS)
    family = make_latent_family(latent_family)
    if posterior == "diagonal":
        return family
    if latent_family != "gaussian":
        raise ValueError(f"posterior 'iaf' is a flow over real-valued codes; it needs latent_family "
                         f"'gaussian', not {latent_family!r} (or use posterior 'diagonal')")
    return InverseAutoregressiveFlow(latent_dim, **flow)


def _check_options(objective, estimator, baseline, kl, iwae_k, gumbel_temperature) -> None:
    check_choice("objective", objective, OBJECTIVES)
    check_choice("estimator", estimator, ESTIMATORS)
    check_choice("baseline", baseline, BASELINES)
    check_choice("kl", kl, KL_METHODS)
    if objective == "iwae" and iwae_k < 1:
        raise ValueError(f"iwae_k must be >= 1, got {iwae_k}")
    if gumbel_temperature <= 0:
        raise ValueError(f"gumbel_temperature must be > 0, got {gumbel_temperature}")
