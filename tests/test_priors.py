"""Priors against math: log densities against a direct computation (scipy, an explicit loop),
the Monte Carlo KL of the learned mixture converging to the analytic KL where one exists (one
component), and the mixture prior used end to end by a model that was not changed for it."""
from __future__ import annotations

import inspect
import tempfile
import math

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal
from torch.distributions import Independent, Normal, kl_divergence

import aevb.evaluation
import aevb.models.vae
import aevb.objectives
from aevb import VAE, data, train
from aevb.distributions import PRIORS, BernoulliHalf, Prior, StandardNormal
from aevb.distributions.priors.mixture import MixtureOfGaussians
from aevb.evaluation import importance_sampling
from aevb.models import load


def mixture(k=3, d=2, seed=0):
    torch.manual_seed(seed)
    prior = MixtureOfGaussians(d, components=k).double()
    with torch.no_grad():  # away from the initial values: distinct weights and variances
        prior.logvars.normal_(0, 0.5)
        prior.logits.normal_(0, 1)
    return prior


def test_mixture_log_density_against_scipy():
    prior = mixture(k=3, d=2)
    z = torch.randn(50, 2, dtype=torch.float64) * 2
    weights = torch.softmax(prior.logits, 0).detach().numpy()
    means, variances = prior.means.detach().numpy(), prior.logvars.exp().detach().numpy()
    direct = np.log(sum(w * multivariate_normal(m, np.diag(v)).pdf(z.numpy())
                        for w, m, v in zip(weights, means, variances)))
    assert np.allclose(prior().log_prob(z).detach().numpy(), direct, atol=1e-10)


def test_mixture_log_density_by_an_explicit_loop_and_it_integrates_to_one():
    prior = mixture(k=4, d=1, seed=1)
    z = torch.linspace(-15, 15, 30001, dtype=torch.float64)[:, None]
    loop = []
    for zi in z[::3000, 0].tolist():
        terms = [torch.log_softmax(prior.logits, 0)[k] - 0.5 * prior.logvars[k, 0]
                 - 0.5 * math.log(2 * math.pi) - 0.5 * (zi - prior.means[k, 0]) ** 2 / prior.logvars[k, 0].exp()
                 for k in range(4)]
        loop.append(torch.logsumexp(torch.stack(terms), 0).item())
    assert np.allclose(prior().log_prob(z[::3000]).detach().numpy(), loop, atol=1e-12)
    density = prior().log_prob(z).exp().detach()
    assert abs(torch.trapezoid(density, z[:, 0]).item() - 1) < 1e-6


def test_fixed_priors_against_their_formulas():
    z = torch.randn(7, 3, dtype=torch.float64)
    assert torch.allclose(StandardNormal(3).double()().log_prob(z),
                          torch.tensor(multivariate_normal(np.zeros(3), np.eye(3)).logpdf(z.numpy())))
    codes = torch.bernoulli(torch.full((7, 5), 0.5))
    assert torch.allclose(BernoulliHalf(5)().log_prob(codes), torch.full((7,), -5 * math.log(2)))


def test_mixture_mc_kl_converges_to_the_analytic_kl_with_one_component():
    """With K = 1 the mixture is one Gaussian, whose KL to q has a closed form: the Monte
    Carlo estimate log q(z) - log p(z), z ~ q, agrees within its standard error, and its
    error shrinks as the samples grow."""
    torch.manual_seed(0)
    prior = MixtureOfGaussians(4, components=1).double()
    with torch.no_grad():
        prior.logvars.normal_(0, 0.7)
    q = Independent(Normal(torch.randn(3, 4, dtype=torch.float64), torch.rand(3, 4, dtype=torch.float64) + 0.3), 1)
    p = prior()
    exact = kl_divergence(q, Independent(Normal(prior.means[0], (0.5 * prior.logvars[0]).exp()), 1)).detach()
    errors = []
    for n in (100, 10_000, 1_000_000):
        z = q.sample((n,))
        terms = (q.log_prob(z) - p.log_prob(z)).detach()
        est, se = terms.mean(0), terms.std(0) / math.sqrt(n)
        assert ((est - exact).abs() < 5 * se).all(), (n, est, exact, se)
        errors.append((est - exact).abs().max().item())
    assert errors[2] < errors[0] and errors[2] < 0.01


def test_a_model_with_the_mixture_prior_trains_saves_and_is_evaluated(tmp_path):
    ds = data.load("digits", binarize="static", limit=300)
    torch.manual_seed(0)
    model = VAE(ds.shape, 2, hidden=[32], prior="mog", prior_components=3)
    assert isinstance(model.prior, MixtureOfGaussians) and model.kl_method == "mc"
    before = model.prior.means.detach().clone()
    run = train(model, ds, epochs=3, lr=3e-3, out=tmp_path / "run", progress=False, tensorboard=False)
    assert run.history[-1]["test_elbo"] > run.history[0]["test_elbo"]
    assert not torch.equal(model.prior.means, before)  # the prior learned
    again = load(tmp_path / "run")
    assert isinstance(again.prior, MixtureOfGaussians) and torch.equal(again.prior.means, model.prior.means)
    r = importance_sampling(again, ds.test.x[:20], samples=50)
    assert (r["log_px"] >= r["elbo"] - 1e-6).all()
    assert again.sample(4).shape == (4, *ds.shape)


def test_the_command_line_takes_the_mixture_prior(tmp_path):
    from aevb.cli import main
    out = tmp_path / "mog"
    assert main(["train", "--dataset", "digits", "--limit", "200", "--epochs", "1", "--hidden", "16",
                 "--latent-dim", "2", "--prior", "mog", "--prior-components", "4", "--out", str(out),
                 "--no-progress", "--no-figures"]) == 0
    assert load(out).prior.means.shape == (4, 2)
    assert main(["train", "--dataset", "digits", "--prior", "mog", "--prior-components", "0", "--out",
                 str(tmp_path / "bad"), "--no-progress", "--no-figures"]) == 2


def test_the_mixture_needed_no_change_to_the_model_objectives_or_evaluation():
    """It is one Prior subclass in its own file and one registry entry: nothing in the model,
    the objectives or the evaluation names it."""
    assert PRIORS["mog"] is MixtureOfGaussians and issubclass(MixtureOfGaussians, Prior)
    assert inspect.getsourcefile(MixtureOfGaussians).endswith("priors/mixture.py")
    for module in (aevb.models.vae, aevb.objectives, aevb.evaluation):
        text = inspect.getsource(module)
        assert "mog" not in text.lower() and "MixtureOfGaussians" not in text, module.__name__


@pytest.mark.parametrize("k", [1, 5])
def test_the_mixture_samples_follow_its_density(k):
    """Samples of the prior (as `model.sample` draws them) match its density: the mean and
    variance of many draws against the mixture's moments."""
    prior = mixture(k=k, d=2, seed=3)
    z = prior().sample((200_000,))
    w = torch.softmax(prior.logits, 0).detach()
    mean = (w[:, None] * prior.means).sum(0).detach()
    second = (w[:, None] * (prior.logvars.exp() + prior.means ** 2)).sum(0).detach()
    assert torch.allclose(z.mean(0), mean, atol=0.03)
    assert torch.allclose(z.var(0), second - mean ** 2, rtol=0.03, atol=0.02)


class PseudoInputs(Prior):
    """A test-only VampPrior (Tomczak & Welling 2018): p(z) = 1/K sum_k q(z | u_k) over K
    learned pseudo-inputs u_k, built from the model's own encoder, which the model offers to
    every prior as the setting `encode`."""

    support = "real"
    settings = ("components", "input_shape", "encode")

    def __init__(self, latent_dim, components, input_shape, encode):
        super().__init__(latent_dim)
        self.pseudo_inputs = torch.nn.Parameter(torch.rand(components, *input_shape))
        self.encode = encode

    def forward(self):
        q = self.encode(self.pseudo_inputs)  # K posteriors: batch (K,), event (latent_dim,)
        k = self.pseudo_inputs.shape[0]
        return torch.distributions.MixtureSameFamily(
            torch.distributions.Categorical(logits=torch.zeros(k, device=self.pseudo_inputs.device),
                                            validate_args=False), q, validate_args=False)


def test_a_prior_built_from_the_encoder_needs_no_change_to_the_model(monkeypatch):
    monkeypatch.setitem(PRIORS, "pseudo", PseudoInputs)
    ds = data.load("digits", binarize="static", limit=200)
    torch.manual_seed(0)
    model = VAE(ds.shape, 2, hidden=[16], prior="pseudo", prior_components=4)
    assert model.kl_method == "mc" and model.prior.pseudo_inputs.shape == (4, *ds.shape)
    z = torch.randn(6, 2)
    q = model.encode(model.prior.pseudo_inputs)
    direct = torch.logsumexp(torch.stack([q.log_prob(zi[None].expand(4, 2)) for zi in z]), 1) - math.log(4)
    assert torch.allclose(model.prior().log_prob(z), direct, atol=1e-5)
    before = model.prior.pseudo_inputs.detach().clone()
    run = train(model, ds, epochs=2, lr=3e-3, progress=False, tensorboard=False)
    assert not torch.equal(model.prior.pseudo_inputs, before)  # learned with the model
    assert all(math.isfinite(r["test_elbo"]) for r in run.history)


def test_the_vamp_prior_is_the_mixture_of_the_posteriors_of_its_pseudo_inputs():
    """prior: vamp (Tomczak & Welling 2018): log p(z) equals log 1/K sum_k q(z|u_k) computed
    directly from the encoder; the pseudo-inputs stay images in [0, 1], are learned, and the
    model saves, loads and scores log p(x) with them; a conditional model is refused."""
    from aevb.models import load
    ds = data.load("digits", binarize="static", limit=200)
    torch.manual_seed(0)
    model = VAE(ds.shape, 2, hidden=[16], prior="vamp", prior_components=5)
    assert model.kl_method == "mc"
    u = model.prior.pseudo_inputs_images()
    assert u.shape == (5, *ds.shape) and u.min() >= 0 and u.max() <= 1
    z = torch.randn(7, 2)
    q = model.encode(u)
    direct = torch.stack([torch.logsumexp(q.log_prob(zi.expand(5, 2)), 0) for zi in z]) - math.log(5)
    assert torch.allclose(model.prior().log_prob(z), direct, atol=1e-5)
    before = model.prior.pseudo_inputs.detach().clone()
    run = train(model, ds, epochs=2, lr=3e-3, progress=False, tensorboard=False)
    assert not torch.equal(model.prior.pseudo_inputs, before)
    assert all(math.isfinite(r["test_elbo"]) for r in run.history)
    with tempfile.TemporaryDirectory() as d:
        again = load(model.save(d))
    x = ds.test.x[:4]
    assert torch.equal(again.prior.pseudo_inputs, model.prior.pseudo_inputs)
    assert torch.allclose(again.log_likelihood(x, samples=50, seed=0), model.log_likelihood(x, samples=50, seed=0))
    with pytest.raises(ValueError, match="not conditional"):
        VAE(ds.shape, 2, hidden=[16], prior="vamp", num_classes=10)


def test_matrix_product_mixture_density_equals_the_plain_mixture_in_float32():
    """DiagonalGaussianMixture.log_prob (two matrix products) against MixtureSameFamily's
    elementwise log_prob, in float32, with narrow components (variances down to 1e-3, as a
    VampPrior's posteriors reach) and z of batch shape (N, S)."""
    from torch.distributions import Categorical, MixtureSameFamily
    from aevb.distributions.priors.mixture import DiagonalGaussianMixture
    g = torch.Generator().manual_seed(0)
    k, d = 50, 20
    logits, loc = torch.randn(k, generator=g), torch.randn(k, d, generator=g) * 2
    scale = torch.exp(torch.empty(k, d).uniform_(-3.5, 0.5, generator=g))
    z = torch.randn(6, 7, d, generator=g) * 2
    z[0, 0] = loc[3] + 0.01  # a point inside one narrow component
    plain = MixtureSameFamily(Categorical(logits=logits), Independent(Normal(loc, scale), 1)).log_prob(z)
    fast = DiagonalGaussianMixture(logits, loc, scale).log_prob(z)
    assert fast.shape == (6, 7)
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=2e-3)
