"""Likelihoods p_theta(x|z): a family turns the decoder's output into a distribution over
whole images (event = all pixels), so `log_prob` is one number per example, summed over
pixels, in nats. Each family says how many numbers per pixel it needs (`params_per_dim`), so
that layer sizes are inferred, never hard-wired.

Fast paths live inside `log_prob`, beside the plain formula, and serve training and
evaluation alike: an image may be scored against K rows of parameters at once (parameters
of batch shape (..., K), the image of batch shape (..., 1): K samples of z for one image)
without copying the image K times; Bernoulli pixels run as one fused autograd node.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.distributions import Bernoulli, ContinuousBernoulli, Distribution, Independent, Normal


def rows_per_value(param_shape, value_shape, event_ndims: int) -> int | None:
    """How many rows of parameters share each value in `log_prob`: 1 when the shapes are
    equal; K when the value has size 1 where the parameters have K in the last batch
    dimension (one image scored against K decoded samples); None for any other shape (then
    the general, broadcasting path of torch.distributions applies)."""
    param_shape, value_shape = tuple(param_shape), tuple(value_shape)
    if value_shape == param_shape:
        return 1
    b = len(param_shape) - event_ndims  # batch dimensions
    if (len(value_shape) == len(param_shape) and b >= 1 and value_shape[b - 1] == 1
            and value_shape[:b - 1] == param_shape[:b - 1] and value_shape[b:] == param_shape[b:]):
        return param_shape[b - 1]
    return None


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
    k rows scored against its image x (b, D); returns (b, k). x may be any values in [0, 1].
    With one row per image (k = 1) it is minus torch's cross-entropy with logits, summed: one
    fused kernel, 2.0 against 1.5 ms forward and 2.9 against 2.3 ms with its gradient at
    1000 x 784 (benchmarks/README.md); with k > 1 that kernel would need the image copied
    k times (6.5 against 1.9 ms at k = 2000), so the bmm form stays."""
    x = x.to(logits.dtype)
    if logits.shape[1] == 1:
        return -F.binary_cross_entropy_with_logits(logits[:, 0], x, reduction="none").sum(1, keepdim=True)
    return _BernoulliLogProb.apply(logits, x)


class BernoulliImage(Independent):
    """Independent Bernoulli pixels (logits) forming one event, scored by `bernoulli_log_prob`."""

    def __init__(self, logits: Tensor, event_ndims: int):
        super().__init__(Bernoulli(logits=logits, validate_args=False), event_ndims, validate_args=False)

    def log_prob(self, value: Tensor) -> Tensor:
        logits = self.base_dist.logits
        k = rows_per_value(logits.shape, value.shape, len(self.event_shape))
        if k is None or not value.is_floating_point():
            return super().log_prob(value)
        d = math.prod(self.event_shape)
        return bernoulli_log_prob(logits.reshape(-1, k, d), value.reshape(-1, d)).view(self.batch_shape)

    def expand(self, batch_shape, _instance=None):
        shape = torch.Size(batch_shape) + self.event_shape
        return BernoulliImage(self.base_dist.logits.expand(shape), len(self.event_shape))


class NormalImage(Independent):
    """Independent Normal pixels forming one event:
    log p(x) = -sum_d [(x_d - mu_d)^2 / (2 s_d^2) + log s_d] - D log(2 pi) / 2,
    summed in one pass over (rows, pixels) with the image broadcast over its rows."""

    def __init__(self, loc: Tensor, scale: Tensor, event_ndims: int):
        super().__init__(Normal(loc, scale, validate_args=False), event_ndims, validate_args=False)

    def log_prob(self, value: Tensor) -> Tensor:
        base = self.base_dist
        k = rows_per_value(base.loc.shape, value.shape, len(self.event_shape))
        if k is None:
            return super().log_prob(value)
        d = math.prod(self.event_shape)
        loc, scale = base.loc.reshape(-1, k, d), base.scale.reshape(-1, k, d)
        sq = ((value.reshape(-1, 1, d).to(loc.dtype) - loc) / scale).square().sum(2)
        lp = -0.5 * sq - scale.log().sum(2) - 0.5 * d * math.log(2 * math.pi)
        return lp.view(self.batch_shape)

    def expand(self, batch_shape, _instance=None):
        shape = torch.Size(batch_shape) + self.event_shape
        return NormalImage(self.base_dist.loc.expand(shape), self.base_dist.scale.expand(shape),
                           len(self.event_shape))


def to_levels(v: Tensor, bins: int) -> Tensor:
    """`v` clipped to [0, 1] and rounded to the nearest of `bins` levels 0, 1/(bins-1), ..., 1."""
    return (v.clamp(0, 1) * (bins - 1)).round() / (bins - 1)


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
            return to_levels(x, self.bins)


class CoupledLogisticRGB(Distribution):
    """Discretized logistic RGB pixels whose channel means depend linearly on the channels
    before them (PixelCNN++, Salimans et al. 2017, one component): with decoder outputs m, s,
    and coefficients (a, b, c) per pixel,

        R ~ DL(m_R, s_R),   G | R ~ DL(m_G + a R, s_G),   B | R, G ~ DL(m_B + b R + c G, s_B).

    Still exact and normalized (a product of conditionals, each over the 256 levels), but the
    colour noise that a pixel's channels share, most of it brightness, is paid for once instead
    of three times. Parameters (..., 3, H, W); one event = one image (log_prob sums all pixels)."""

    arg_constraints: dict = {}
    has_rsample = False

    def __init__(self, loc: Tensor, log_scale: Tensor, coeff: Tensor, bins: int = 256):
        self.loc, self.log_scale, self.coeff, self.bins = loc, log_scale, coeff, bins
        super().__init__(loc.shape[:-3], loc.shape[-3:], validate_args=False)

    def conditional_loc(self, x: Tensor) -> Tensor:
        """The three channels' locations given the image x (the channels before each)."""
        m, (a, b, c) = self.loc, self.coeff.unbind(-3)
        r, g = x[..., 0, :, :], x[..., 1, :, :]
        return torch.stack(torch.broadcast_tensors(
            m[..., 0, :, :], m[..., 1, :, :] + a * r, m[..., 2, :, :] + b * r + c * g), -3)

    def log_prob(self, x: Tensor) -> Tensor:
        pixels = DiscretizedLogistic(self.conditional_loc(x), self.log_scale, self.bins)
        return pixels.log_prob(x).sum((-3, -2, -1))

    def _in_order(self, pick) -> Tensor:
        """An image built channel after channel: `pick(loc, log_scale)` gives each channel
        from its location given the channels already built."""
        x = torch.zeros(torch.broadcast_shapes(self.loc.shape, self.log_scale.shape),
                        dtype=self.loc.dtype, device=self.loc.device)
        for ch in range(3):
            x[..., ch, :, :] = pick(self.conditional_loc(x)[..., ch, :, :], self.log_scale[..., ch, :, :])
        return x

    @property
    def mean(self) -> Tensor:  # display mean: each channel's location given the ones before
        return self._in_order(lambda loc, _: loc.clamp(0, 1))

    def mode(self) -> Tensor:
        return self._in_order(lambda loc, _: to_levels(loc, self.bins))

    def sample(self, sample_shape=torch.Size()) -> Tensor:
        with torch.no_grad():
            if sample_shape:
                shape = torch.Size(sample_shape) + self.loc.shape
                return CoupledLogisticRGB(self.loc.expand(shape), self.log_scale.expand(shape),
                                          self.coeff.expand(shape), self.bins).sample()
            return self._in_order(lambda loc, ls: DiscretizedLogistic(loc, ls, self.bins).sample())


# ----------------------------------------------------------------------------- families
def soft_bound(raw: Tensor, low: float, high: float) -> Tensor:
    """low + softplus(raw - low) - softplus(raw - high) (= high + softplus(low - raw) -
    softplus(high - raw), the form used above the midpoint, where it keeps its precision):
    strictly inside (low, high), close to `raw` well inside the bounds, smooth, with a
    gradient that stays positive far past either bound (a clamp's is zero past the bound, so
    a pixel pushed there never comes back)."""
    below = low + F.softplus(raw - low) - F.softplus(raw - high)
    above = high + F.softplus(low - raw) - F.softplus(high - raw)
    return torch.where(raw < 0.5 * (low + high), below, above)


class BernoulliLikelihood:
    """p(x|z) = prod_i Bernoulli(x_i; sigmoid(l_i)) with decoder logits l; for binary or [0,1] data.

    log p(x|z) = sum_i x_i log sigmoid(l_i) + (1 - x_i) log sigmoid(-l_i)  (in nats).
    """

    params_per_dim = 1
    initial_output = (0.0,)  # see `LIKELIHOODS`
    continuous = False
    bpd_offset = None  # nats per example is the convention for binary images; no bits/dim

    def __call__(self, out: Tensor, event_ndims: int) -> Independent:
        return BernoulliImage(out, event_ndims)

    def mode(self, p: Independent) -> Tensor:
        """The most probable image: pixels thresholded at probability 1/2."""
        return (p.base_dist.logits > 0).to(p.base_dist.logits.dtype)


class GaussianLikelihood:
    """p(x|z) = N(x; mu(z), sigma^2 I) with a fixed sigma (`sigma=float`), or with a per-pixel
    log-sigma output by the decoder (`sigma="learned"`, Kingma & Welling appendix C.2).

    log p(x|z) = -sum_i [ (x_i - mu_i)^2 / (2 sigma_i^2) + log sigma_i + log(2 pi) / 2 ].
    The learned log-sigma is the decoder's output softly bounded to [`min_log_sigma`,
    `max_log_sigma`] (`soft_bound`: smooth, gradients never exactly zero): below, a spike on a
    constant pixel would send the likelihood to infinity; above, a flat density that ignores
    z (posterior collapse) costs nothing. A hard clamp would stop the gradient of every pixel
    past the bound, which is how an early, wild decoder got stuck (issue 16).
    """

    continuous = True
    bpd_offset = 8.0  # a density on [0, 1]: + log2(256) bits per value for 8-bit data

    def __init__(self, sigma: float | str = 1.0, min_log_sigma: float = -6.0, max_log_sigma: float = 0.0):
        if sigma != "learned" and not (isinstance(sigma, (int, float)) and sigma > 0):
            raise ValueError(f"Gaussian likelihood: sigma must be a positive number or 'learned', got {sigma!r}")
        self.sigma = sigma
        self.min_log_sigma, self.max_log_sigma = min_log_sigma, max_log_sigma
        self.params_per_dim = 2 if sigma == "learned" else 1
        self.initial_output = (0.5, -2.0) if sigma == "learned" else (0.5,)  # sigma 0.14 at start

    def __call__(self, out: Tensor, event_ndims: int) -> Independent:
        if self.sigma == "learned":
            mean, raw = out.chunk(2, dim=-event_ndims)
            scale = soft_bound(raw, self.min_log_sigma, self.max_log_sigma).exp()
        else:
            mean, scale = out, torch.full_like(out, float(self.sigma))
        return NormalImage(mean, scale, event_ndims)

    def mode(self, p: Independent) -> Tensor:
        return p.base_dist.loc


class LogisticLikelihood:
    """p(x|z) = prod_i DiscretizedLogistic(x_i; mu_i, s_i) over 256 levels, with the decoder
    giving mu and log s per pixel and channel; for 8-bit images (colour or gray) scaled to
    [0, 1]. log s is the decoder's output softly bounded to [`min_log_scale`,
    `max_log_scale`] (`soft_bound`; s from 0.23 of a level to the whole range). Reported as
    nats per example, and as bits per dimension (a true discrete likelihood: no offset)."""

    params_per_dim = 2
    initial_output = (0.5, -2.0)  # scale 0.14 (35 of 255 levels) at the start
    continuous = False
    bpd_offset = 0.0

    def __init__(self, bins: int = 256, min_log_scale: float = -7.0, max_log_scale: float = 0.0):
        self.bins, self.min_log_scale, self.max_log_scale = bins, min_log_scale, max_log_scale

    def __call__(self, out: Tensor, event_ndims: int) -> Independent:
        loc, raw = out.chunk(2, dim=-event_ndims)
        log_scale = soft_bound(raw, self.min_log_scale, self.max_log_scale)
        return Independent(DiscretizedLogistic(loc, log_scale, self.bins), event_ndims, validate_args=False)

    def mode(self, p: Independent) -> Tensor:
        d = p.base_dist
        return to_levels(d.loc, d.bins)


class CoupledLogisticLikelihood(LogisticLikelihood):
    """p(x|z) for RGB images: the discretized logistic with each channel's location shifted
    linearly by the channels before it (`CoupledLogisticRGB`); the decoder gives a location,
    a log-scale and one coefficient per pixel and channel (for R: G's weight on R; for G: B's
    weight on R; for B: B's weight on G), each coefficient tanh-bounded to (-1, 1) and
    starting at 0 (the uncoupled logistic). Only for 3 channels."""

    params_per_dim = 3
    initial_output = (0.5, -2.0, 0.0)
    channels = 3

    def __call__(self, out: Tensor, event_ndims: int) -> CoupledLogisticRGB:
        loc, raw, coeff = out.chunk(3, dim=-3)
        log_scale = soft_bound(raw, self.min_log_scale, self.max_log_scale)
        return CoupledLogisticRGB(loc, log_scale, torch.tanh(coeff), self.bins)

    def mode(self, p: CoupledLogisticRGB) -> Tensor:
        return p.mode()


class ContinuousBernoulliLikelihood:
    """p(x|z) = prod_i ContinuousBernoulli(x_i; sigmoid(l_i)) (Loaiza-Ganem & Cunningham
    2019): the Bernoulli log-likelihood plus the normalizing constant that makes it a proper
    density on [0, 1], for intensities that are not binarized."""

    params_per_dim = 1
    initial_output = (0.0,)
    continuous = True
    bpd_offset = 8.0

    def __call__(self, out: Tensor, event_ndims: int) -> Independent:
        return Independent(ContinuousBernoulli(logits=out, validate_args=False), event_ndims,
                           validate_args=False)

    def mode(self, p: Independent) -> Tensor:
        return p.base_dist.mean


#: Each family's `initial_output`: per group of parameters (location, log-scale), the value a
#: decoder whose last layer's bias can be set starts from (`net: resconv`): a mid-grey image
#: with a scale that is neither flat nor a spike, so that the first epoch is spent on z and
#: not on moving a bias from 0 (log-scale 0: a scale of the whole pixel range).
LIKELIHOODS = {"bernoulli": BernoulliLikelihood, "gaussian": GaussianLikelihood,
               "logistic": LogisticLikelihood, "logistic_rgb": CoupledLogisticLikelihood,
               "continuous_bernoulli": ContinuousBernoulliLikelihood}


def likelihood(name: str, sigma: float | str = 1.0, channels: int | None = None):
    """The likelihood family called `name` (see `LIKELIHOODS`) for images of `channels`
    channels; `sigma` is the Gaussian's (a fixed standard deviation or "learned"), unused by
    the others."""
    if name not in LIKELIHOODS:
        raise ValueError(f"unknown likelihood {name!r}; choose one of {sorted(LIKELIHOODS)}")
    needs = getattr(LIKELIHOODS[name], "channels", None)
    if needs is not None and channels is not None and channels != needs:
        raise ValueError(f"likelihood {name} needs images of {needs} channels, not {channels}: "
                         f"use likelihood logistic")
    return LIKELIHOODS[name](sigma=sigma) if name == "gaussian" else LIKELIHOODS[name]()


def bits_per_dim(log_px: Tensor, num_dims: int, offset: float = 0.0) -> Tensor:
    """Bits per dimension of a log-likelihood (nats per example): -log p / (D log 2) + offset.
    `offset` is 8 for a density on [0, 1] of 8-bit data (log2 256; exact for uniformly
    dequantized data), 0 for a discrete likelihood."""
    return -log_px / (num_dims * math.log(2)) + offset
