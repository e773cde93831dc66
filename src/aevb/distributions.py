"""Distributions of a VAE: likelihoods p_theta(x|z), posterior families q_phi(z|x), priors p(z).

Everything is a `torch.distributions.Distribution` whose event covers a whole example
(all pixels, or all latent dimensions), so `log_prob` returns one number per example:
log-likelihoods are summed over pixels / latent units, never averaged.

A *family* turns the raw output of a network into a distribution. It says how many numbers
per dimension it needs (`params_per_dim`) so that layer sizes are inferred, never hard-wired.
"""
from __future__ import annotations

import torch
from torch import Tensor
import math

import torch.nn.functional as F
from torch.distributions import (Bernoulli, ContinuousBernoulli, Distribution, Independent, Normal,
                                 register_kl)

# Argument validation costs a few percent per step and the networks produce valid
# parameters by construction; turn it off globally for speed.
Distribution.set_default_validate_args(False)


def _image(d: Distribution, event_ndims: int) -> Independent:
    return Independent(d, event_ndims)


class _BernoulliLogProb(torch.autograd.Function):
    """log p(x|l) = sum_d [x_d l_d - softplus(l_d)] for logits (b, k, D) and images (b, D):
    (b, k). Gradient: x - sigmoid(l). One autograd node of three kernels each way; the
    general path (torch.distributions' Bernoulli summed by Independent) runs ~20 kernels
    and was 2.7x slower at batch 100 x 784 pixels (benchmarks/README.md)."""

    @staticmethod
    def forward(ctx, logits: Tensor, x: Tensor) -> Tensor:
        ctx.save_for_backward(logits, x)
        return torch.bmm(logits, x.unsqueeze(2)).squeeze(2) - F.softplus(logits).sum(2)

    @staticmethod
    def backward(ctx, g: Tensor):
        logits, x = ctx.saved_tensors
        return torch.sigmoid(logits).sub_(x.unsqueeze(1)).mul_(-g.unsqueeze(2)), None


def bernoulli_log_prob(logits: Tensor, x: Tensor) -> Tensor:
    """sum_d x_d log sigmoid(l_d) + (1 - x_d) log sigmoid(-l_d) for logits (b, k, D), each of
    k rows scored against its image x (b, D); returns (b, k). x may be any values in [0, 1]."""
    return _BernoulliLogProb.apply(logits, x.to(logits.dtype))


class BernoulliImage(Independent):
    """Independent Bernoulli pixels (logits) forming one event, scored by `bernoulli_log_prob`."""

    def __init__(self, logits: Tensor, event_ndims: int):
        super().__init__(Bernoulli(logits=logits), event_ndims)

    def log_prob(self, value: Tensor) -> Tensor:
        logits = self.base_dist.logits
        if value.shape != logits.shape or not value.is_floating_point():
            return super().log_prob(value)
        events = math.prod(self.event_shape)
        lp = bernoulli_log_prob(logits.reshape(-1, 1, events), value.reshape(-1, events))
        return lp.view(self.batch_shape)

    def expand(self, batch_shape, _instance=None):
        shape = torch.Size(batch_shape) + self.event_shape
        return BernoulliImage(self.base_dist.logits.expand(shape), len(self.event_shape))


# ----------------------------------------------------------------------------- likelihoods
class BernoulliLikelihood:
    """p(x|z) = prod_i Bernoulli(x_i; sigmoid(l_i)) with decoder logits l; for binary or [0,1] data.

    log p(x|z) = sum_i x_i log sigmoid(l_i) + (1 - x_i) log sigmoid(-l_i)  (in nats).
    """

    params_per_dim = 1
    continuous = False
    bpd_offset = None  # nats per example is the convention for binary images; no bits/dim

    def __call__(self, out: Tensor, event_ndims: int) -> Independent:
        return BernoulliImage(out, event_ndims)

    def mode(self, p: Independent) -> Tensor:
        """The most probable image: pixels thresholded at probability 1/2."""
        return (p.base_dist.logits > 0).to(p.base_dist.logits.dtype)


class GaussianLikelihood:
    """p(x|z) = N(x; mu(z), sigma^2 I) with a fixed sigma (`sigma=float`), or with a per-pixel
    log-variance output by the decoder (`sigma="learned"`, Kingma & Welling appendix C.2).

    log p(x|z) = -sum_i [ (x_i - mu_i)^2 / (2 sigma_i^2) + log sigma_i + log(2 pi) / 2 ].
    The learned log-sigma is bounded below (`min_log_sigma`) so that it cannot collapse to a
    spike on a constant pixel and send the likelihood to infinity.
    """

    continuous = True
    bpd_offset = 8.0  # a density on [0, 1]: + log2(256) bits per value for 8-bit data

    def __init__(self, sigma: float | str = 1.0, min_log_sigma: float = -5.0):
        if sigma != "learned" and not (isinstance(sigma, (int, float)) and sigma > 0):
            raise ValueError(f"Gaussian likelihood: sigma must be a positive number or 'learned', got {sigma!r}")
        self.sigma = sigma
        self.min_log_sigma = min_log_sigma
        self.params_per_dim = 2 if sigma == "learned" else 1

    def __call__(self, out: Tensor, event_ndims: int) -> Independent:
        if self.sigma == "learned":
            mean, log_sigma = out.chunk(2, dim=-event_ndims)
            scale = log_sigma.clamp(min=self.min_log_sigma).exp()
        else:
            mean, scale = out, torch.full_like(out, float(self.sigma))
        return _image(Normal(mean, scale), event_ndims)

    def mode(self, p: Independent) -> Tensor:
        return p.base_dist.loc


class DiscretizedLogistic(Distribution):
    """A logistic distribution with location `loc` and scale exp(`log_scale`), discretized to
    `bins` equally spaced values 0, 1/(bins-1), ..., 1 (as in PixelCNN++ / IAF, one
    component): the probability of value v is the logistic mass of [v - h, v + h] with
    h = 1/(2(bins-1)), and the two edge bins take the tails (-inf, h] and [1 - h, inf).
    A proper distribution over 8-bit pixel values, so -log p / (D log 2) is bits per dim."""

    arg_constraints: dict = {}
    has_rsample = False

    def __init__(self, loc: Tensor, log_scale: Tensor, bins: int = 256, validate_args=None):
        self.loc, self.log_scale, self.bins = loc, log_scale, bins
        super().__init__(loc.shape, validate_args=False)

    def log_prob(self, x: Tensor) -> Tensor:
        half = 0.5 / (self.bins - 1)
        inv_s = torch.exp(-self.log_scale)
        centered = x - self.loc
        plus, minus = inv_s * (centered + half), inv_s * (centered - half)
        log_cdf_plus = -F.softplus(-plus)               # log sigmoid(plus): the x = 0 bin
        log_sf_minus = -F.softplus(minus)               # log (1 - sigmoid(minus)): the x = 1 bin
        delta = torch.sigmoid(plus) - torch.sigmoid(minus)
        mid = inv_s * centered                          # far in a tail: density * bin width
        log_mid = mid - self.log_scale - 2 * F.softplus(mid) + math.log(2 * half)
        inner = torch.where(delta > 1e-5, torch.log(delta.clamp(min=1e-12)), log_mid)
        return torch.where(x < half, log_cdf_plus, torch.where(x > 1 - half, log_sf_minus, inner))

    @property
    def mean(self) -> Tensor:
        return self.loc.clamp(0, 1)  # display mean: the location, clipped to the pixel range

    def sample(self, sample_shape=torch.Size()) -> Tensor:
        with torch.no_grad():
            shape = self._extended_shape(sample_shape)
            u = torch.rand(shape, dtype=self.loc.dtype, device=self.loc.device).clamp(1e-6, 1 - 1e-6)
            x = self.loc + self.log_scale.exp() * (u.log() - (-u).log1p())
            return (x.clamp(0, 1) * (self.bins - 1)).round() / (self.bins - 1)


class LogisticLikelihood:
    """p(x|z) = prod_i DiscretizedLogistic(x_i; mu_i, s_i) over 256 levels, with the decoder
    giving mu and log s per pixel and channel; for 8-bit images (colour or gray) scaled to
    [0, 1]. log s is bounded below (`min_log_scale`) for stability. Reported as nats per
    example, and as bits per dimension (a true discrete likelihood: no offset)."""

    params_per_dim = 2
    continuous = False
    bpd_offset = 0.0

    def __init__(self, bins: int = 256, min_log_scale: float = -7.0):
        self.bins, self.min_log_scale = bins, min_log_scale

    def __call__(self, out: Tensor, event_ndims: int) -> Independent:
        loc, log_scale = out.chunk(2, dim=-event_ndims)
        return _image(DiscretizedLogistic(loc, log_scale.clamp(min=self.min_log_scale), self.bins),
                      event_ndims)

    def mode(self, p: Independent) -> Tensor:
        d = p.base_dist
        return (d.loc.clamp(0, 1) * (d.bins - 1)).round() / (d.bins - 1)


class ContinuousBernoulliLikelihood:
    """p(x|z) = prod_i ContinuousBernoulli(x_i; sigmoid(l_i)) (Loaiza-Ganem & Cunningham
    2019): the Bernoulli log-likelihood plus the normalizing constant that makes it a proper
    density on [0, 1], for intensities that are not binarized."""

    params_per_dim = 1
    continuous = True
    bpd_offset = 8.0

    def __call__(self, out: Tensor, event_ndims: int) -> Independent:
        return _image(ContinuousBernoulli(logits=out), event_ndims)

    def mode(self, p: Independent) -> Tensor:
        return p.base_dist.mean


LIKELIHOODS = {"bernoulli": BernoulliLikelihood, "gaussian": GaussianLikelihood,
               "logistic": LogisticLikelihood, "continuous_bernoulli": ContinuousBernoulliLikelihood}


def bits_per_dim(log_px: Tensor, num_dims: int, offset: float = 0.0) -> Tensor:
    """Bits per dimension of a log-likelihood (nats per example): -log p / (D log 2) + offset.
    `offset` is 8 for a density on [0, 1] of 8-bit data (log2 256; exact for uniformly
    dequantized data), 0 for a discrete likelihood."""
    return -log_px / (num_dims * math.log(2)) + offset


def likelihood(name: str, **kwargs):
    """The likelihood family called `name` (see `LIKELIHOODS`)."""
    if name not in LIKELIHOODS:
        raise ValueError(f"unknown likelihood {name!r}; choose one of {sorted(LIKELIHOODS)}")
    return LIKELIHOODS[name](**kwargs)


# ----------------------------------------------------------------------------- latents
class DiagonalGaussian:
    """q_phi(z|x) = N(z; mu, diag(exp(logvar))): the encoder outputs mu and log-variance.

    Sampled by reparameterization, z = mu + exp(logvar / 2) * eps with eps ~ N(0, I), so
    that gradients flow through z (SGVB). The prior is N(0, I) and
    KL(q || p) = 1/2 sum_j (mu_j^2 + sigma_j^2 - log sigma_j^2 - 1) in closed form.
    """

    params_per_dim = 2
    reparameterized = True

    def __call__(self, out: Tensor) -> Independent:
        mu, logvar = out.chunk(2, dim=-1)
        return DiagonalNormal(mu, logvar)

    def prior(self, latent_dim: int, device=None, dtype=None) -> Independent:
        zero = torch.zeros(latent_dim, device=device, dtype=dtype)
        return DiagonalNormal(zero, zero, standard=True)

    @staticmethod
    def mean(q: Independent) -> Tensor:
        return q.base_dist.loc


class DiagonalNormal(Independent):
    """N(mu, diag(exp(logvar))) over the last dimension, keeping the log-variance so that the
    KL divergence (registered below) is a few kernels on (mu, logvar) rather than ~30 on the
    standard deviations (measured: KL and sampling 1.5x faster at batch 100 x 20).
    `standard=True` marks N(0, I), whose KL term is shorter still."""

    def __init__(self, loc: Tensor, logvar: Tensor, standard: bool = False):
        super().__init__(Normal(loc, (0.5 * logvar).exp()), 1)
        self.logvar, self.standard = logvar, standard

    def expand(self, batch_shape, _instance=None):
        shape = torch.Size(batch_shape) + self.event_shape
        return DiagonalNormal(self.base_dist.loc.expand(shape), self.logvar.expand(shape), self.standard)


@register_kl(DiagonalNormal, DiagonalNormal)
def _kl_diagonal_normal(p: DiagonalNormal, q: DiagonalNormal) -> Tensor:
    # KL = 1/2 sum_j [(v_p + (m_p - m_q)^2) / v_q - 1 - log v_p + log v_q]; q = N(0, I):
    # 1/2 sum_j (m_p^2 + v_p - log v_p - 1)
    mp, lp = p.base_dist.loc, p.logvar
    if q.standard:
        return 0.5 * (mp.square() + lp.exp() - lp - 1).sum(-1)
    mq, lq = q.base_dist.loc, q.logvar
    return 0.5 * ((lp.exp() + (mp - mq).square()) * (-lq).exp() - 1 - lp + lq).sum(-1)


class LogitBernoulli(Bernoulli):
    """A Bernoulli whose KL divergence (registered below) works from the logits, broadcasts
    over batch shapes and stays finite for any finite logits."""


@register_kl(LogitBernoulli, LogitBernoulli)
def _kl_logit_bernoulli(p: LogitBernoulli, q: LogitBernoulli) -> Tensor:
    # KL = s(lp) [log s(lp) - log s(lq)] + s(-lp) [log s(-lp) - log s(-lq)], s = sigmoid
    lp, lq = p.logits, q.logits
    return (torch.sigmoid(lp) * (F.softplus(-lq) - F.softplus(-lp))
            + torch.sigmoid(-lp) * (F.softplus(lq) - F.softplus(lp)))


class FactorizedBernoulli:
    """q_phi(z|x) = prod_j Bernoulli(z_j; sigmoid(l_j)) over binary codes z in {0, 1}^D, the
    encoder giving the logits l; prior p(z) = prod_j Bernoulli(z_j; 1/2) (seed 001 sec. 3.1.2).

    z cannot be reparameterized: the encoder is trained with the score-function (REINFORCE)
    estimator or a straight-through Gumbel relaxation (see `aevb.objectives`). KL(q || p) is
    exact: sum_j [q_j log 2 q_j + (1 - q_j) log 2 (1 - q_j)] = D log 2 - H(q).
    """

    params_per_dim = 1
    reparameterized = False

    def __call__(self, out: Tensor) -> Independent:
        return Independent(LogitBernoulli(logits=out), 1)

    def prior(self, latent_dim: int, device=None, dtype=None) -> Independent:
        return Independent(LogitBernoulli(logits=torch.zeros(latent_dim, device=device, dtype=dtype)), 1)

    @staticmethod
    def mean(q: Independent) -> Tensor:
        return q.base_dist.probs


LATENTS = {"gaussian": DiagonalGaussian, "bernoulli": FactorizedBernoulli}


def latent_family(name: str):
    if name not in LATENTS:
        raise ValueError(f"unknown latent family {name!r}; choose one of {sorted(LATENTS)}")
    return LATENTS[name]()

