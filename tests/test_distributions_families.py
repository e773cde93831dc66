"""Added families checked against known answers: the factorized Bernoulli latent (KL,
prior), the discretized logistic (a proper distribution over 256 levels), the continuous
Bernoulli (a density on [0, 1]) and bits per dimension."""
from __future__ import annotations

import math

import torch
from torch.distributions import kl_divergence

from aevb.distributions import (BernoulliHalf, DiscretizedLogistic, FactorizedBernoulli, bits_per_dim,
                                latent_family, likelihood)


def test_bernoulli_latent_kl_against_closed_form():
    fam = latent_family("bernoulli")
    assert isinstance(fam, FactorizedBernoulli) and not fam.reparameterized
    logits = torch.tensor([[-3.0, 0.0, 2.0], [40.0, -40.0, 0.5]])
    q, p = fam(logits), BernoulliHalf(3)()
    probs = torch.sigmoid(logits)
    expected = (torch.xlogy(probs, 2 * probs) + torch.xlogy(1 - probs, 2 * (1 - probs))).sum(1)
    assert torch.allclose(kl_divergence(q, p), expected, atol=1e-5)
    assert torch.isfinite(kl_divergence(q, p)).all()
    # the KL to the uniform prior is log 2 per bit at a deterministic code
    det = fam(torch.full((1, 5), 60.0))
    assert torch.allclose(kl_divergence(det, BernoulliHalf(5)()), torch.tensor([5 * math.log(2)]), atol=1e-5)
    assert torch.equal(fam.mean(q), q.base_dist.probs)


def test_discretized_logistic_sums_to_one_over_the_levels():
    levels = torch.arange(256.0) / 255
    for loc, log_scale in [(0.5, -3.0), (0.0, -5.0), (1.0, -1.0), (0.3, -7.0), (1.4, 0.0), (-0.2, -2.0)]:
        d = DiscretizedLogistic(torch.full((256,), loc), torch.full((256,), log_scale))
        lp = d.log_prob(levels)
        assert (lp <= 1e-6).all()
        assert abs(torch.logsumexp(lp, 0).exp().item() - 1) < 1e-4, (loc, log_scale)


def test_discretized_logistic_matches_the_cdf_difference():
    loc, s = torch.tensor(0.4), torch.tensor(0.05)
    d = DiscretizedLogistic(loc, s.log())
    v = torch.tensor(100 / 255)
    h = 0.5 / 255
    expected = torch.sigmoid((v + h - loc) / s) - torch.sigmoid((v - h - loc) / s)
    assert torch.allclose(d.log_prob(v).exp(), expected, rtol=1e-4)


def test_logistic_likelihood_samples_and_mode_are_pixel_levels():
    lik = likelihood("logistic")
    out = torch.randn(2, 6, 4, 4)
    p = lik(out, 3)
    x = p.sample()
    assert x.shape == (2, 3, 4, 4) and x.min() >= 0 and x.max() <= 1
    assert torch.allclose(x * 255, (x * 255).round(), atol=1e-4)
    assert p.log_prob(x).shape == (2,)
    m = lik.mode(p)
    assert torch.allclose(m * 255, (m * 255).round(), atol=1e-4)


def test_continuous_bernoulli_is_a_density_on_the_unit_interval():
    lik = likelihood("continuous_bernoulli")
    grid = torch.linspace(0, 1, 20001)
    for logit in (-4.0, 0.0, 0.7, 5.0):
        p = lik(torch.full((20001, 1, 1, 1), logit), 3)
        dens = p.log_prob(grid.view(-1, 1, 1, 1)).exp()
        assert abs(torch.trapezoid(dens, grid).item() - 1) < 1e-3


def test_bits_per_dim():
    # a uniform distribution over 256 levels is 8 bits per value
    assert torch.allclose(bits_per_dim(torch.tensor([-784 * math.log(256)]), 784), torch.tensor([8.0]))
    # the density 1 on [0, 1]^D (uniformly dequantized 8-bit data) is 8 bits per value too
    assert torch.allclose(bits_per_dim(torch.tensor([0.0]), 3072, offset=8.0), torch.tensor([8.0]))
    assert likelihood("bernoulli").bpd_offset is None
    assert likelihood("logistic").bpd_offset == 0.0 and likelihood("gaussian").bpd_offset == 8.0
