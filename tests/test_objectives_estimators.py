"""Estimators checked against exact answers on a model small enough to enumerate every
binary code z in {0, 1}^3: the score-function (REINFORCE) gradient is unbiased with and
without baselines, the baseline cuts its variance, the reported ELBO and the importance-
sampled log p(x) are right; the IWAE objective behaves as a bound."""
from __future__ import annotations

import itertools
import math

import pytest
import torch

from aevb.evaluation import log_likelihood
from aevb.models import VAE
from aevb.objectives import elbo, iwae_terms, score_function_elbo, straight_through_bernoulli

BITS = 3



def tiny(baseline="mean", estimator="reinforce", seed=1):
    torch.manual_seed(seed)
    return VAE((1, 4, 4), BITS, hidden=[8], activation="tanh", latent_family="bernoulli",
               baseline=baseline, estimator=estimator)


@pytest.fixture
def x():
    return torch.bernoulli(torch.full((4, 1, 4, 4), 0.4), generator=torch.Generator().manual_seed(3))


def all_codes():
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=BITS)))  # (8, 3)


def exact(model, x):
    """Exact ELBO (mean over x, with grad), exact log p(x) per example."""
    q = model.encode(x)
    zs = all_codes()
    log_q = q.log_prob(zs[:, None, :])                                             # (8, N)
    rec = torch.stack([model.decode(z.expand(len(x), -1)).log_prob(x) for z in zs])  # (8, N)
    kl = torch.distributions.kl_divergence(q, model.prior())
    elbo_exact = (log_q.exp() * rec).sum(0) - kl
    log_px = torch.logsumexp(rec + model.prior().log_prob(zs)[:, None], 0)
    return elbo_exact, log_px


def model_params(model):
    return [p for n, p in model.named_parameters() if not n.startswith("baseline")]


def flat_grad(loss, params):
    return torch.cat([g.flatten() for g in torch.autograd.grad(loss, params, allow_unused=False)])


def estimates(model, x, batches=40, copies=100):
    """`batches` independent estimates, each the mean of `copies` single-sample estimates."""
    xs = x.repeat(copies, 1, 1, 1)
    params = model_params(model)
    return torch.stack([flat_grad(model.objective(xs)["loss"], params) for _ in range(batches)])


def z_scores(model, x):
    elbo_exact, _ = exact(model, x)
    truth = flat_grad(-elbo_exact.mean(), model_params(model))
    g = estimates(model, x)
    mean, se = g.mean(0), g.std(0) / math.sqrt(len(g))
    live = se > 0
    assert torch.allclose(mean[~live], truth[~live], atol=1e-6)  # deterministic coordinates agree
    return (mean - truth)[live] / se[live]


def test_kl_of_bernoulli_latent_is_exact():
    model = tiny()
    x = torch.rand(5, 1, 4, 4)
    q = model.encode(x)
    zs = all_codes()
    log_q = q.log_prob(zs[:, None, :])
    brute = (log_q.exp() * (log_q - model.prior().log_prob(zs)[:, None])).sum(0)
    assert torch.allclose(torch.distributions.kl_divergence(q, model.prior()), brute, atol=1e-5)
    assert torch.allclose(model.prior().log_prob(zs), torch.full((8,), -BITS * math.log(2)))


@pytest.mark.parametrize("baseline", ["none", "mean", "learned"])
def test_score_function_gradient_is_unbiased(x, baseline):
    """The mean of many estimates matches the exact gradient within its standard error:
    z-scores ~ N(0, 1) (40 batch means: t with 39 dof; the ~340 coordinates share samples,
    so their mean square spreads over about 0.5..2.7 between seeds)."""
    model = tiny(baseline)
    if model.baseline is not None:  # a baseline near E[log p(x|z)], as after some training
        elbo_exact, _ = exact(model, x)
        model.baseline.average.fill_(float(elbo_exact.detach().mean()))
        model.baseline.updates.fill_(1e4)
        if model.baseline.net is not None:
            torch.nn.init.normal_(model.baseline.net[-1].weight, std=0.5)
    z = z_scores(model, x)
    assert z.abs().max() < 5.5, z.abs().max()
    assert 0.2 < (z ** 2).mean() < 4.0


def test_the_check_detects_a_biased_estimator(x):
    """The same check rejects the straight-through Gumbel gradient, which is biased."""
    z = z_scores(tiny(estimator="gumbel"), x)
    assert z.abs().max() > 10


def test_baseline_cuts_the_gradient_variance(x):
    model = tiny("mean")
    params = [p for p in model.encoder.parameters()]
    elbo_exact, _ = exact(model, x)
    c = float(elbo_exact.detach().mean())
    xs = x.repeat(25, 1, 1, 1)
    var = {}
    for name, b in (("none", 0.0), ("mean", c)):
        torch.manual_seed(0)
        g = torch.stack([flat_grad(-score_function_elbo(model, xs, baseline=b)[1].mean(), params)
                         for _ in range(40)])
        var[name] = g.var(0).sum()
    assert var["mean"] < var["none"] / 10, var


def test_moving_average_tracks_the_signal(x):
    model = tiny("mean")
    for _ in range(100):
        model.objective(x)
    elbo_exact, _ = exact(model, x)
    kl = torch.distributions.kl_divergence(model.encode(x), model.prior())
    rec_mean = float((elbo_exact + kl).detach().mean())
    assert model.baseline.constant().item() == pytest.approx(rec_mean, abs=1.0)
    model.eval()
    before = model.baseline.updates.clone()
    with torch.no_grad():
        model.objective(x)
    assert model.baseline.updates == before  # evaluation never moves the baseline


@pytest.mark.parametrize("estimator", ["reinforce", "gumbel"])
def test_reported_elbo_is_unbiased(x, estimator):
    model = tiny(estimator=estimator)
    elbo_exact, _ = exact(model, x)
    with torch.no_grad():
        vals = torch.stack([model.objective(x.repeat(100, 1, 1, 1))["elbo"].view(100, -1).mean(0)
                            for _ in range(50)])
    se = vals.std(0) / math.sqrt(len(vals))
    assert ((vals.mean(0) - elbo_exact.detach()).abs() < 5 * se + 1e-4).all()


def test_straight_through_sample_is_an_exact_bernoulli_draw():
    q = tiny().encode(torch.rand(2, 1, 4, 4))
    probs = q.base_dist.probs.detach()
    z = torch.stack([straight_through_bernoulli(q, 0.5) for _ in range(4000)])
    assert set(z.unique().tolist()) <= {0.0, 1.0}
    assert torch.allclose(z.mean(0), probs, atol=0.04)


def test_importance_sampled_log_likelihood_of_binary_latent_model(x):
    model = tiny()
    _, log_px = exact(model, x)
    est = log_likelihood(model, x, samples=4000)
    assert torch.allclose(est, log_px.detach(), atol=0.05)


# ----------------------------------------------------------------------------- IWAE
def gaussian(objective="iwae", k=5, beta=1.0):
    torch.manual_seed(0)
    return VAE((1, 4, 4), 2, hidden=[16], objective=objective, iwae_k=k, beta=beta)


def test_iwae_bound_lies_between_elbo_and_log_likelihood(x):
    model = gaussian(k=50)
    with torch.no_grad():
        t = iwae_terms(model, x.repeat(200, 1, 1, 1), 50)
        iw, el = t["iwae"].view(200, -1).mean(0), t["elbo"].view(200, -1).mean(0)
        log_px = log_likelihood(model, x, samples=20000)
    assert (el < iw).all() and (iw < log_px + 0.02).all()


def test_iwae_with_one_sample_is_the_elbo(x):
    model = gaussian(k=1)
    torch.manual_seed(5)
    a = iwae_terms(model, x, 1)
    torch.manual_seed(5)
    b = elbo(model, x, kl="mc")
    assert torch.allclose(a["iwae"], b["elbo"], atol=1e-5) and torch.allclose(a["elbo"], b["elbo"], atol=1e-5)


def test_iwae_objective_trains_and_reports_both(x):
    model = gaussian(k=5)
    terms = model.objective(x)
    assert {"loss", "iwae", "elbo", "rec", "kl"} <= set(terms)
    terms["loss"].backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    model.beta = 0.5  # beta weighs log p(z) - log q(z|x) inside the weights; the bound stays reported
    other = gaussian(k=5)
    torch.manual_seed(1)
    t = model.objective(x)
    torch.manual_seed(1)
    t1 = other.objective(x)
    assert torch.allclose(t["iwae"], t1["iwae"]) and not torch.isclose(t["loss"], t1["loss"])


def test_iwae_needs_a_reparameterized_latent():
    with pytest.raises(ValueError, match="reparameterized"):
        VAE((1, 4, 4), 3, latent_family="bernoulli", objective="iwae")
