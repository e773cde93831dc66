"""Evaluation: every estimator against a case with a known answer.

- probabilistic PCA (a VAE with linear encoder and decoder and a Gaussian likelihood):
  log p(x) = log N(x; b, W W^T + s^2 I) exactly, and the ELBO of a Gaussian q in closed form;
- a 1-D latent with Bernoulli pixels: log p(x) by quadrature over z;
- active units, denoising error and bits/dim against hand-computed values.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch
from torch.distributions import MultivariateNormal, Normal

from aevb import evaluation as ev
from aevb.data import Split
from aevb.models import VAE

D, LATENT, SIGMA = 16, 3, 0.5


def ppca_vae(W, b, s=SIGMA, var_scale=1.0, mean_shift=0.0, exact=True) -> VAE:
    """A VAE whose decoder is x = W z + b + s eps and whose (linear) encoder gives the exact
    posterior mean M^-1 W^T (x - b), M = W^T W + s^2 I, and as variances the posterior's
    diagonal (`exact`: the true posterior when W has orthogonal columns) or the mean-field
    optimum 1 / diag(precision), times `var_scale`; `mean_shift` moves the means."""
    m = VAE(input_shape=(1, 4, 4), latent_dim=LATENT, hidden=[], likelihood="gaussian", sigma=s)
    M = W.T @ W + s ** 2 * torch.eye(LATENT)
    minv = torch.linalg.inv(M)
    cov = s ** 2 * minv
    A = minv @ W.T
    var = cov.diagonal() if exact else 1 / torch.linalg.inv(cov).diagonal()
    with torch.no_grad():
        enc, dec = m.encoder.net[0], m.decoder.net[0]
        dec.weight.copy_(W)
        dec.bias.copy_(b)
        enc.weight.zero_()
        enc.bias.zero_()
        enc.weight[:LATENT] = A
        enc.bias[:LATENT] = -A @ b + mean_shift
        enc.bias[LATENT:] = (var * var_scale).log()
    return m.eval()


def ppca_data(W, b, n, s=SIGMA, seed=1):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, LATENT, generator=g)
    x = z @ W.T + b + s * torch.randn(n, D, generator=g)
    exact = MultivariateNormal(b.double(), (W @ W.T + s ** 2 * torch.eye(D)).double()).log_prob(x.double())
    return x.view(n, 1, 4, 4), exact


def analytic_elbo(model, x, W, b, s=SIGMA):
    """ELBO of a Gaussian q(z|x) in the linear-Gaussian model, in closed form (float64)."""
    q = model.encode(x)
    mu, v = q.base_dist.loc.double(), q.base_dist.scale.double() ** 2
    W, b = W.double(), b.double()
    rec = Normal(mu @ W.T + b, s).log_prob(x.view(len(x), -1).double()).sum(1) \
        - (v @ (W ** 2).sum(0)) / (2 * s * s)
    kl = 0.5 * (v + mu ** 2 - 1 - v.log()).sum(1)
    return rec - kl


@pytest.fixture(scope="module")
def orthogonal():
    g = torch.Generator().manual_seed(0)
    Q, _ = torch.linalg.qr(torch.randn(D, LATENT, generator=g))
    return Q * torch.tensor([2.0, 1.0, 0.5]), 0.3 * torch.randn(D, generator=g)


@pytest.fixture(scope="module")
def general():
    g = torch.Generator().manual_seed(2)
    return torch.randn(D, LATENT, generator=g), 0.3 * torch.randn(D, generator=g)


def test_exact_posterior_gives_exact_log_likelihood_with_any_k(orthogonal):
    W, b = orthogonal
    model = ppca_vae(W, b)
    x, exact = ppca_data(W, b, 100)
    for k in (1, 10):
        r = ev.importance_sampling(model, x, samples=k)
        # every weight equals p(x): the estimate, the ELBO and log p(x) coincide
        assert (r["log_px"] - exact).abs().max() < 1e-3
        assert (r["elbo"] - exact).abs().max() < 1e-3
        assert torch.allclose(r["ess"], torch.full_like(r["ess"], k), rtol=1e-3)
    # the closed-form ELBO agrees, and does not exceed log p(x)
    assert (analytic_elbo(model, x, W, b) - exact).abs().max() < 1e-3


def test_importance_sampling_converges_to_exact_and_elbo_stays_below(general):
    W, b = general
    model = ppca_vae(W, b, var_scale=2.0, mean_shift=0.2, exact=False)
    x, exact = ppca_data(W, b, 100)
    elbo = analytic_elbo(model, x, W, b)
    gap = exact - elbo
    assert gap.min() > 1.0  # a posterior mismatch of a few nats, by construction
    errors = {}
    for k in (1, 100, 5000):
        r = ev.importance_sampling(model, x, samples=k, seed=3, rows=100_000)
        errors[k] = r["log_px"] - exact
        if k >= 100:  # the ELBO from the same samples is below log p(x) for every example
            assert (r["elbo"] < exact).all()
    # L_1 < L_100 < L_5000 ~ log p(x): bias shrinks with K, to within Monte Carlo error
    assert errors[1].mean() < errors[100].mean() < errors[5000].mean() + 0.02
    assert errors[1].mean() < -1.0
    assert abs(errors[5000].mean()) < 0.05
    assert errors[5000].abs().max() < 0.6
    # the ELBO from 5000 samples matches the closed form
    assert (r["elbo"] - elbo).abs().max() < 0.5
    assert abs((r["elbo"] - elbo).mean()) < 0.05
    # evaluate(): the test ELBO (one sample per image) is below the estimate of log p(x)
    res = ev.evaluate(model, Split(x), nll_samples=1000, binarized=False, rows=100_000)
    assert res["elbo"] < exact.mean().item() < res["elbo"] + 2 * gap.mean().item()
    assert abs(res["log_px"] - exact.mean().item()) < 0.1
    assert res["gap"] > 1.0 and res["log_px_stderr"] > 0


def test_bernoulli_pixels_match_quadrature():
    torch.manual_seed(1)
    model = VAE(input_shape=(1, 3, 3), latent_dim=1, hidden=[16], likelihood="bernoulli").eval()
    with torch.no_grad():
        for p in model.decoder.parameters():
            p.mul_(3)
    x = torch.bernoulli(torch.full((30, 1, 3, 3), 0.4))
    zs = torch.linspace(-12, 12, 20001, dtype=torch.float64)
    with torch.no_grad():
        p = model.decode(zs.float()[:, None])
        lp = torch.stack([p.log_prob(xi.expand(len(zs), 1, 3, 3)).double() for xi in x])
    exact = torch.logsumexp(lp - 0.5 * zs ** 2 - 0.5 * math.log(2 * math.pi), 1) + math.log(zs[1] - zs[0])
    r = ev.importance_sampling(model, x, samples=5000, rows=150_000)
    assert (r["log_px"] - exact).abs().max() < 0.15
    assert abs((r["log_px"] - exact).mean()) < 0.03
    assert (r["elbo"] < exact).all()


@pytest.mark.parametrize("likelihood,sigma", [("bernoulli", 1.0), ("gaussian", 0.7), ("gaussian", "learned")])
def test_fast_likelihood_paths_equal_log_prob(likelihood, sigma):
    """The likelihoods' fast log_prob, one image scored against its K decoded samples without
    being copied (as importance sampling and the IWAE objective call it), against the plain
    torch.distributions formula on a copy of the image for every sample."""
    model = VAE(input_shape=(1, 5, 4), latent_dim=3, hidden=[8], likelihood=likelihood, sigma=sigma).eval()
    x = torch.rand(6, 1, 5, 4)
    if likelihood == "bernoulli":
        x = torch.bernoulli(x)
    k = 4
    with torch.no_grad():
        p = model.decode(torch.randn(6, k, 3))                      # batch shape (6, k)
        fast = p.log_prob(x.unsqueeze(1))                            # x broadcast over k
        base = p.base_dist
        plain = (torch.distributions.Bernoulli(logits=base.logits, validate_args=False)
                 if likelihood == "bernoulli" else torch.distributions.Normal(base.loc, base.scale))
        slow = torch.distributions.Independent(plain, 3).log_prob(x.unsqueeze(1).expand(6, k, 1, 5, 4).clone())
    assert fast.shape == (6, k)
    assert torch.allclose(fast, slow, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("num_classes", [0, 3])
def test_chunking_does_not_change_the_estimate(num_classes):
    model = VAE(input_shape=(1, 4, 4), latent_dim=2, hidden=[8], num_classes=num_classes).eval()
    x = torch.bernoulli(torch.rand(7, 1, 4, 4))
    y = torch.arange(7) % 3 if num_classes else None
    # the samples are drawn per batch of examples before the decoder sees them in chunks of
    # `rows`, so the chunking (per example, or several examples at once) changes nothing
    ref = ev.importance_sampling(model, x, y, samples=300, rows=300, batch_size=7)
    for rows in (64, 1000, 5000):
        r = ev.importance_sampling(model, x, y, samples=300, rows=rows, batch_size=7)
        for key in ("log_px", "elbo", "ess"):
            assert torch.allclose(r[key], ref[key], rtol=1e-5, atol=1e-4)
    # seeded: reproducible; other batch sizes draw other samples, close within MC error
    again = ev.importance_sampling(model, x, y, samples=300, rows=300, batch_size=7)
    assert torch.equal(again["log_px"], ref["log_px"])
    other = ev.importance_sampling(model, x, y, samples=300, batch_size=2)
    assert (other["log_px"] - ref["log_px"]).abs().max() < 0.3
    # the log-likelihood wrapper keeps its old signature
    d = ev.log_likelihood(model, x, y, samples=300, chunk=300, batch_size=7)
    assert torch.allclose(d.double(), ref["log_px"], atol=1e-4)
    # and the global RNG is left alone
    torch.manual_seed(5)
    before = torch.rand(1)
    torch.manual_seed(5)
    ev.importance_sampling(model, x, y, samples=10)
    assert torch.equal(torch.rand(1), before)


def test_active_units_count_only_units_that_vary(general):
    W, b = general
    model = ppca_vae(W, b)
    with torch.no_grad():
        model.encoder.net[0].weight[1] = 0  # unit 1's mean no longer depends on x: collapsed
    x, _ = ppca_data(W, b, 500)
    res = ev.active_units(model, x)
    assert res["active_units"] == 2 and res["latent_dim"] == 3
    assert res["unit_variance"][1] == 0.0
    means = model.encode(x).base_dist.loc.detach().double()
    assert res["unit_variance"][0] == pytest.approx(means[:, 0].var(unbiased=False).item(), rel=1e-4)


def test_denoising_error_against_rate():
    torch.manual_seed(0)
    x = torch.bernoulli(torch.full((400, 1, 6, 6), 0.3))
    model = VAE(input_shape=(1, 6, 6), latent_dim=2, hidden=[16]).eval()
    res = ev.denoising(model, Split(x), rates=(0.0, 0.2, 0.5))
    assert [r["rate"] for r in res] == [0.0, 0.2, 0.5]
    # a corrupted pixel differs from a binary one half of the time: E (noisy - x)^2 = rate / 2
    assert res[0]["noisy_mse"] == 0.0
    assert res[1]["noisy_mse"] == pytest.approx(0.1, abs=0.01)
    assert res[2]["noisy_mse"] == pytest.approx(0.25, abs=0.015)
    # the reconstruction error, checked by hand for one rate
    from aevb.data import salt_and_pepper
    noisy = salt_and_pepper(x, 0.2, generator=torch.Generator().manual_seed(0))
    r = model.reconstruct(noisy)
    assert res[1]["mse"] == pytest.approx((r - x).square().mean().item(), rel=1e-5)
    bce = torch.nn.functional.binary_cross_entropy(r.clamp(1e-6, 1 - 1e-6), x).item()
    assert res[1]["bce"] == pytest.approx(bce, rel=1e-5)


def test_evaluate_fields_and_bits_per_dim():
    torch.manual_seed(0)
    model = VAE(input_shape=(1, 4, 4), latent_dim=2, hidden=[8]).eval()
    split = Split(torch.bernoulli(torch.rand(50, 1, 4, 4)), torch.arange(50) % 3)
    res = ev.evaluate(model, split, nll_samples=100, denoise=(0.1,), limit=40)
    assert res["n"] == 40
    assert res["rec"] - res["kl"] == pytest.approx(res["elbo"], abs=1e-6)
    assert res["bits_per_dim"] == pytest.approx(-res["log_px"] / (16 * math.log(2)))
    assert res["log_px"] > res["elbo_is"]
    assert res["gap"] == pytest.approx(res["log_px"] - res["elbo_is"], abs=1e-9)
    assert 1 <= res["ess"] <= 100
    assert len(res["unit_variance"]) == 2 and len(res["denoising"]) == 1
    json.dumps(res)  # JSON-ready
    table = ev.format_table(res)
    assert "log p(x), IS K=100" in table and "active units" in table and "0.10" in table
    # continuous data with a Gaussian density: + 8 bits for [0, 1]-scaled 8-bit values
    g = VAE(input_shape=(1, 4, 4), latent_dim=2, hidden=[8], likelihood="gaussian", sigma=0.3).eval()
    res = ev.evaluate(g, Split(torch.rand(20, 1, 4, 4)), nll_samples=50, binarized=False)
    assert res["bits_per_dim"] == pytest.approx(-res["log_px"] / (16 * math.log(2)) + 8)


def test_limit_draws_a_fixed_random_subset():
    split = Split(torch.zeros(100, 1, 2, 2), torch.arange(100) // 10)  # sorted by label
    a, b = ev.subset(split, 30), ev.subset(split, 30)
    assert torch.equal(a.y, b.y) and len(a) == 30
    assert len(a.y.unique()) > 5  # not the first 30 (three labels)
    assert ev.subset(split, None) is split and ev.subset(split, 500) is split


def test_autoencoder_has_no_log_likelihood_but_other_numbers():
    models = pytest.importorskip("aevb.models")
    if not hasattr(models, "Autoencoder"):
        pytest.skip("no Autoencoder model in this version")
    ae = models.Autoencoder(input_shape=(1, 4, 4), latent_dim=2, hidden=[8]).eval()
    split = Split(torch.bernoulli(torch.rand(20, 1, 4, 4)))
    res = ev.evaluate(ae, split, nll_samples=10, denoise=(0.1,))
    assert "log_px" not in res and "q(z|x)" in res["log_px_skipped"]
    assert res["latent_dim"] == 2 and res["denoising"][0]["rate"] == 0.1


def test_real_mnist_log_likelihood_above_elbo(mnist_dir):
    from aevb import data, train
    ds = data.load("mnist-offline", binarize="dynamic", data_dir=mnist_dir, limit=1000)
    model = VAE.mlp(ds.shape, latent_dim=10, hidden=(100,))
    run = train(model, ds, epochs=3, batch_size=100, progress=False)
    res = ev.evaluate(run.model, ds.test, nll_samples=100, limit=100, denoise=(0.2,))
    # log p(x) >= IWAE bound L_100 >= ELBO, in expectation; with 100 images well beyond noise
    assert res["log_px"] > res["elbo_is"] + 0.5
    assert res["log_px"] > res["elbo"]
    assert -400 < res["log_px"] < -60  # nats per image, a model trained for seconds
    assert res["active_units"] >= 1
    assert res["denoising"][0]["noisy_mse"] == pytest.approx(0.1, abs=0.02)


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads the resident memory from /proc (Linux)")
def test_importance_sampling_memory_stays_flat_over_images():
    """K = 5000 on one image after another, after another computation has used the heap:
    the process's resident memory must not grow with the number of images. It grew by ~7 MB
    per image (glibc's heap, fragmented by small result tensors kept between the decoder's
    6 MB buffers) until the results were written into tensors made before the loop."""
    from aevb import VAE
    from aevb.evaluation import elbo_stats, importance_sampling
    from aevb.data import Split

    def resident_mb():
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    torch.manual_seed(0)
    model = VAE((1, 28, 28), latent_dim=20, hidden=(400, 400)).eval()
    x = (torch.rand(300, 1, 28, 28) < 0.3).float()
    elbo_stats(model, Split(x), 1000, 0)  # (before the fix: +125 MB over the next 100 images)
    importance_sampling(model, x[:10], samples=5000, rows=2000)
    before = resident_mb()
    importance_sampling(model, x[10:110], samples=5000, rows=2000)
    assert resident_mb() - before < 40, "memory grew while scoring 100 images"
