"""Distributions of a VAE, each a `torch.distributions.Distribution` whose event covers a
whole example, so that `log_prob` returns one number per example (log-likelihoods summed
over pixels / latent units, never averaged):

- `likelihoods`: p_theta(x|z), from the decoder's output (Bernoulli, Gaussian, discretized
  logistic, the same with RGB channels coupled, continuous Bernoulli);
- `posteriors`: q_phi(z|x), from the encoder's output (diagonal Gaussian, factorized
  Bernoulli; a point mass for a deterministic encoder); `iaf`: an inverse autoregressive
  flow on the diagonal Gaussian;
- `priors`: p(z) as modules (standard normal, Bernoulli(1/2), ...), chosen independently.

aevb builds every distribution with `validate_args=False` (the networks give valid
parameters by construction; validation costs a few percent per step) and leaves
torch.distributions' global default alone.
"""
from .likelihoods import (LIKELIHOODS, BernoulliImage, BernoulliLikelihood, ContinuousBernoulliLikelihood,
                          CoupledLogisticLikelihood, CoupledLogisticRGB, DiscretizedLogistic, GaussianLikelihood, LogisticLikelihood, NormalImage,
                          bernoulli_log_prob, bits_per_dim, likelihood)
from .iaf import IAFNormal, InverseAutoregressiveFlow
from .posteriors import (LATENTS, DiagonalGaussian, DiagonalNormal, FactorizedBernoulli, LogitBernoulli,
                         PointMass, bernoulli_codes, latent_family, sample_with_log_prob)
from .priors import PRIORS, BernoulliHalf, Prior, StandardNormal, build_prior

__all__ = ["LATENTS", "LIKELIHOODS", "PRIORS", "BernoulliHalf", "BernoulliImage", "BernoulliLikelihood",
           "ContinuousBernoulliLikelihood", "CoupledLogisticLikelihood", "CoupledLogisticRGB", "DiagonalGaussian", "DiagonalNormal", "DiscretizedLogistic",
           "FactorizedBernoulli", "GaussianLikelihood", "IAFNormal", "InverseAutoregressiveFlow",
           "LogisticLikelihood", "LogitBernoulli", "NormalImage", "PointMass", "Prior", "StandardNormal",
           "bernoulli_codes", "bernoulli_log_prob", "bits_per_dim", "build_prior", "latent_family",
           "likelihood", "sample_with_log_prob"]
