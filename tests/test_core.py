"""The Gaussian VAE against math: KL in closed form vs Monte Carlo, the ELBO against the exact
log-likelihood of a linear-Gaussian model (probabilistic PCA), shapes, data batching."""
import math

import pytest
import torch
from torch.distributions import Bernoulli, Independent, MultivariateNormal, Normal, kl_divergence

from aevb import VAE, data
from aevb.distributions import (BernoulliImage, BernoulliLikelihood, DiagonalGaussian, DiagonalNormal,
                                GaussianLikelihood, StandardNormal)
from aevb.evaluation import elbo_terms, log_likelihood
from aevb.objectives import elbo, iwae_bound


def test_analytic_kl_matches_monte_carlo_and_formula():
    fam = DiagonalGaussian()
    out = torch.randn(4, 6)
    q = fam(out)
    prior = StandardNormal(3)()
    mu, logvar = out.chunk(2, -1)
    formula = 0.5 * (mu ** 2 + logvar.exp() - logvar - 1).sum(-1)
    assert torch.allclose(kl_divergence(q, prior), formula, atol=1e-5)
    z = q.sample((200_000,))
    mc = (q.log_prob(z) - prior.log_prob(z)).mean(0)
    assert torch.allclose(mc, formula, atol=0.03)


def test_bernoulli_likelihood_sums_over_pixels_with_every_constant():
    logits = torch.randn(2, 1, 3, 3)
    x = torch.bernoulli(torch.full((2, 1, 3, 3), 0.5))
    lp = BernoulliLikelihood()(logits, 3).log_prob(x)
    p = torch.sigmoid(logits)
    manual = (x * p.log() + (1 - x) * (1 - p).log()).flatten(1).sum(1)
    assert lp.shape == (2,) and torch.allclose(lp, manual, atol=1e-5)


def _value_and_grads(f, *inputs):
    inputs = [t.detach().requires_grad_() for t in inputs]
    v = f(*inputs)
    grads = torch.autograd.grad((v * torch.linspace(0.5, 2, v.numel()).view(v.shape)).sum(), inputs)
    return v.detach(), grads


def test_fused_bernoulli_log_prob_matches_torch_in_value_and_gradient():
    """BernoulliImage's one-node log-likelihood against torch.distributions' Bernoulli summed
    by Independent, for a (K, N) batch, binary and gray-level images."""
    logits = 3 * torch.randn(3, 2, 1, 4, 4, dtype=torch.float64)
    for x in (torch.bernoulli(torch.full(logits.shape, 0.3, dtype=torch.float64)),
              torch.rand(logits.shape, dtype=torch.float64)):
        fused, g_fused = _value_and_grads(lambda lg: BernoulliImage(lg, 3).log_prob(x), logits)
        ref, g_ref = _value_and_grads(lambda lg: Independent(Bernoulli(logits=lg, validate_args=False), 3).log_prob(x),
                                      logits)  # validate_args=False: gray levels are scored too
        assert fused.shape == (3, 2) and torch.allclose(fused, ref, atol=1e-10)
        assert torch.allclose(g_fused[0], g_ref[0], atol=1e-12)
    one = x[0]  # one image per column, broadcast over the 3 rows: the general path, same numbers
    assert torch.allclose(BernoulliImage(logits, 3).log_prob(one),
                          Independent(Bernoulli(logits=logits, validate_args=False), 3).log_prob(one), atol=1e-10)
    assert BernoulliImage(logits[0, :1], 3).expand((5, 1)).log_prob(x[0, :1]).shape == (5, 1)
    # several rows per image (the IWAE's and log p(x)'s k samples): the bmm form, same numbers
    rows, img = logits.transpose(0, 1), x[0].unsqueeze(1)  # (2, 3, 1, 4, 4) against (2, 1, 1, 4, 4)
    fused, g_fused = _value_and_grads(lambda lg: BernoulliImage(lg, 3).log_prob(img), rows)
    ref, g_ref = _value_and_grads(lambda lg: Independent(Bernoulli(logits=lg, validate_args=False), 3).log_prob(
        img.expand_as(lg)), rows)
    assert fused.shape == (2, 3) and torch.allclose(fused, ref, atol=1e-10)
    assert torch.allclose(g_fused[0], g_ref[0], atol=1e-12)


def test_diagonal_normal_kl_matches_torch_in_value_and_gradient():
    mu_p, lv_p, mu_q, lv_q = torch.randn(4, 5, 3, dtype=torch.float64)

    def ours(mp, lp, mq, lq):
        return kl_divergence(DiagonalNormal(mp, lp), DiagonalNormal(mq, lq))

    def torchs(mp, lp, mq, lq):
        return kl_divergence(Independent(Normal(mp, (lp / 2).exp()), 1), Independent(Normal(mq, (lq / 2).exp()), 1))

    for standard in (False, True):
        args = (mu_p, lv_p) + ((torch.zeros(3, dtype=torch.float64),) * 2 if standard else (mu_q, lv_q))
        if standard:
            kl, g = _value_and_grads(lambda mp, lp: kl_divergence(DiagonalNormal(mp, lp),
                                                                 StandardNormal(3).double()()),
                                     *args[:2])
        else:
            kl, g = _value_and_grads(ours, *args)
        ref, g_ref = _value_and_grads(torchs, *args)
        assert kl.shape == (5,) and torch.allclose(kl, ref, atol=1e-12)
        assert all(torch.allclose(a, b, atol=1e-12) for a, b in zip(g, g_ref))
    assert DiagonalNormal(mu_p[0], lv_p[0]).expand((2, 5)).rsample().shape == (2, 5, 3)


def test_gaussian_likelihood_fixed_and_learned():
    x = torch.rand(2, 1, 2, 2)
    mean = torch.rand(2, 1, 2, 2)
    lp = GaussianLikelihood(sigma=0.5)(mean, 3).log_prob(x)
    manual = (-(x - mean) ** 2 / (2 * 0.25) - math.log(0.5) - 0.5 * math.log(2 * math.pi)).flatten(1).sum(1)
    assert torch.allclose(lp, manual, atol=1e-5)
    learned = GaussianLikelihood(sigma="learned")
    raw = torch.full_like(mean, -0.5)  # channels: mean, then log-sigma before its soft bounds
    s = math.exp(-6 + math.log1p(math.exp(5.5)) - math.log1p(math.exp(-0.5)))  # soft_bound(-0.5, -6, 0)
    manual = (-(x - mean) ** 2 / (2 * s * s) - math.log(s) - 0.5 * math.log(2 * math.pi)).flatten(1).sum(1)
    assert torch.allclose(learned(torch.cat([mean, raw], dim=1), 3).log_prob(x), manual, atol=1e-5)
    with pytest.raises(ValueError, match="sigma"):
        GaussianLikelihood(sigma=-1)


def _ppca(d=5, k=2, s=0.3, seed=0):
    """A linear-Gaussian VAE p(z) = N(0, I), p(x|z) = N(Wz + b, s^2 I) whose encoder is set to
    the exact posterior q(z|x) = N(M^-1 W^T (x - b), s^2 M^-1), M = W^T W + s^2 I. W has
    orthogonal columns so that M, and the posterior covariance, are diagonal."""
    g = torch.Generator().manual_seed(seed)
    W = torch.linalg.qr(torch.randn(d, k, generator=g))[0] * torch.tensor([2.0, 0.7])
    b = torch.randn(d, generator=g)
    model = VAE((1, 1, d), latent_dim=k, hidden=[], likelihood="gaussian", sigma=s, kl="mc")
    m = (W.T @ W).diagonal() + s ** 2
    A = W.T / m[:, None]
    with torch.no_grad():
        dec, enc = model.decoder.net[0], model.encoder.net[0]
        dec.weight.copy_(W)
        dec.bias.copy_(b)
        enc.weight.zero_()
        enc.weight[:k] = A
        enc.bias.zero_()
        enc.bias[:k] = -A @ b
        enc.bias[k:] = torch.log(s ** 2 / m)
    exact = MultivariateNormal(b, W @ W.T + s ** 2 * torch.eye(d))
    return model, exact, enc


def test_elbo_equals_exact_log_likelihood_with_exact_posterior():
    model, exact, _ = _ppca()
    x = exact.sample((64,)).view(64, 1, 1, -1)
    truth = exact.log_prob(x.flatten(1))
    # with q = p(z|x) every importance weight equals p(x): the one-sample ELBO is exact
    assert torch.allclose(elbo(model, x, kl="mc")["elbo"], truth, atol=1e-4)
    model.kl = "analytic"
    est = torch.stack([elbo(model, x)["elbo"] for _ in range(2000)]).mean(0)
    assert torch.allclose(est, truth, atol=0.05)


def test_elbo_below_and_iwae_converges_to_exact_log_likelihood_with_a_worse_encoder():
    model, exact, enc = _ppca()
    with torch.no_grad():
        enc.bias[2:] += 1.0          # posterior too wide: a strictly looser bound
        enc.weight[:2] *= 0.8        # and a shifted mean
    x = exact.sample((32,)).view(32, 1, 1, -1)
    truth = exact.log_prob(x.flatten(1))
    model.kl = "analytic"
    l1 = torch.stack([elbo(model, x)["elbo"] for _ in range(400)]).mean(0)
    gap = truth - l1
    assert (gap > 0.05).all(), "ELBO must lie strictly below log p(x) for a wrong posterior"
    l10 = torch.stack([iwae_bound(model, x, 10) for _ in range(100)]).mean(0)
    assert ((l10 > l1) & (l10 < truth + 0.02)).all()
    ll = log_likelihood(model, x.view(32, 1, 1, -1), samples=5000, chunk=1000)
    assert (ll - truth).abs().max() < 0.1        # Monte Carlo error of K = 5000 (std ~0.02)
    assert (ll - truth).mean().abs() < 0.01      # and no bias beyond it


def test_vae_shapes_sample_reconstruct_and_loss_decreases():
    model = VAE.mlp((1, 8, 8), latent_dim=3, hidden=(32,))
    x = torch.rand(16, 1, 8, 8).bernoulli()
    terms = model.objective(x)
    assert terms["loss"].shape == () and terms["elbo"].shape == (16,)
    assert torch.allclose(terms["elbo"], terms["rec"] - terms["kl"])
    assert model.sample(5).shape == (5, 1, 8, 8)
    assert model.reconstruct(x).shape == x.shape
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = model.objective(x)["loss"].item()
    for _ in range(50):
        opt.zero_grad()
        model.objective(x)["loss"].backward()
        opt.step()
    assert model.objective(x)["loss"].item() < first - 5


def test_beta_weighs_only_the_kl_term_of_the_loss():
    model = VAE.mlp((1, 4, 4), latent_dim=2, hidden=(8,), beta=4.0)
    x = torch.rand(8, 1, 4, 4).bernoulli()
    torch.manual_seed(1)
    t = model.objective(x)
    assert torch.allclose(t["loss"], -(t["rec"] - 4.0 * t["kl"]).mean())


def test_batches_cover_every_image_once_and_shard_disjointly():
    ds = data.load("digits")
    g = torch.Generator().manual_seed(0)
    seen = torch.cat([x for x, _ in ds.batches(100, g)])
    assert seen.shape[0] == len(ds.train)
    assert torch.equal(seen.sum(0), ds.train.x.sum(0))
    shards = [torch.cat([y for _, y in ds.batches(50, torch.Generator().manual_seed(3), rank=r, world_size=2)])
              for r in range(2)]
    whole = torch.cat([y for _, y in ds.batches(100, torch.Generator().manual_seed(3))])
    assert sorted(torch.cat(shards).tolist()) == sorted(whole.tolist())


def test_binarization_static_dynamic_none():
    none = data.load("digits")
    assert 0 < none.train.x.mean() < 1 and len(none.train.x.unique()) > 2
    static = data.load("digits", binarize="static")
    assert set(static.train.x.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(static.test.x, data.load("digits", binarize="static").test.x)  # fixed seed
    dyn = data.load("digits", binarize="dynamic")
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    a = next(dyn.batches(len(dyn.train), g(), shuffle=False))[0]
    b = next(dyn.batches(len(dyn.train), g(), shuffle=False))[0]
    assert set(a.unique().tolist()) <= {0.0, 1.0} and not torch.equal(a, b)  # a fresh draw each time
    assert torch.allclose((a + b).mean() / 2, dyn.train.x.mean(), atol=0.01)
    with pytest.raises(ValueError, match="binarize"):
        data.load("digits", binarize="sometimes")


def test_binarize_draws_bernoulli_with_the_pixel_as_probability():
    """transforms.binarize: P(1) = p for each pixel (a binomial test at 5 standard errors for
    gray levels of 8-bit images), exactly 0 and 1 at the ends, independent pixels, any
    shape (odd sizes too), reproducible with a generator."""
    from aevb.data.transforms import binarize
    p = torch.tensor([0.0, 1 / 255, 0.1, 0.3, 0.5, 128 / 255, 0.9, 254 / 255, 1.0])
    n = 400_000
    draws = binarize(p.repeat(n, 1))
    assert set(draws.unique().tolist()) <= {0.0, 1.0} and draws.dtype == p.dtype
    freq = draws.mean(0)
    se = (p * (1 - p) / n).sqrt()
    assert (freq[[0, -1]] == p[[0, -1]]).all()
    assert ((freq - p).abs() <= 5 * se + 1e-7).all(), (freq - p) / se
    # neighbouring pixels (which share a 64-bit random word) are independent
    half = binarize(torch.full((n, 2), 0.5))
    assert abs((half[:, 0] * half[:, 1]).mean().item() - 0.25) < 5 * (0.25 * 0.75 / n) ** 0.5
    assert binarize(torch.rand(3, 1, 5, 7)).shape == (3, 1, 5, 7)
    x = torch.rand(9, 13)
    a = binarize(x, torch.Generator().manual_seed(4))
    assert torch.equal(a, binarize(x, torch.Generator().manual_seed(4)))
    assert not torch.equal(a, binarize(x, torch.Generator().manual_seed(5)))


def test_elbo_terms_are_deterministic_and_leave_global_rng_alone():
    ds = data.load("digits", binarize="static")
    model = VAE.mlp(ds.shape, latent_dim=2, hidden=(16,))
    state = torch.get_rng_state()
    a = elbo_terms(model, ds.test)
    assert torch.equal(state, torch.get_rng_state())
    assert a == elbo_terms(model, ds.test)
    assert a["elbo"] == pytest.approx(a["rec"] - a["kl"], abs=1e-3)


def test_onednn_linear_matches_torch_linear_forward_and_backward(kernel):
    from aevb.nets.linear import Linear
    layer, ref = Linear(50, 30), torch.nn.Linear(50, 30)
    ref.load_state_dict(layer.state_dict())
    x = torch.randn(16, 50, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    (layer(x) ** 2).sum().backward()
    (ref(x2) ** 2).sum().backward()
    assert torch.allclose(layer(x), ref(x2), atol=1e-5)
    assert torch.allclose(x.grad, x2.grad, atol=1e-4)
    assert torch.allclose(layer.weight.grad, ref.weight.grad, atol=1e-4)
    assert torch.allclose(layer.bias.grad, ref.bias.grad, atol=1e-4)
    assert layer(torch.randn(3, 4, 50)).shape == (3, 4, 30)  # other shapes: plain F.linear


def test_kernel_choice_is_measured_once_per_shape_and_can_be_fixed(monkeypatch):
    """AEVB_ONEDNN unset: the first call of a shape measures both kernels and the choice is
    kept; =0 / =1 fix it without measuring."""
    import aevb.nets.linear as L
    measure, calls = L._measure, []
    monkeypatch.setattr(L, "_measure", lambda *shape: calls.append(shape) or True)
    monkeypatch.setattr(L, "_CHOICE", {})
    monkeypatch.delenv("AEVB_ONEDNN", raising=False)
    monkeypatch.setattr(L, "_OK", None)
    if not L.onednn_ok():
        pytest.skip("oneDNN's linear is not available in this torch build")
    assert L.use_onednn(16, 50, 30) and L.use_onednn(16, 50, 30) and L.use_onednn(8, 50, 30)
    assert calls == [(16, 50, 30), (8, 50, 30)]
    monkeypatch.setenv("AEVB_ONEDNN", "1")
    assert L.use_onednn(4, 5, 6) and calls == [(16, 50, 30), (8, 50, 30)]
    monkeypatch.setenv("AEVB_ONEDNN", "0")
    monkeypatch.setattr(L, "_OK", None)
    assert not L.use_onednn(16, 50, 30)
    assert isinstance(measure(10, 12, 14, rounds=1), bool)  # the real measurement runs


def test_torch_compile_of_a_model_trains():
    """torch.compile (inductor) of an aevb model: its oneDNN layers step aside for inductor's
    own kernels, and one compiled training step gives the eager loss and gradients."""
    torch.manual_seed(0)
    model = VAE.mlp((1, 4, 4), latent_dim=2, hidden=(8,))
    x = torch.bernoulli(torch.rand(5, 1, 4, 4))
    torch.manual_seed(1)
    eager = model(x)["loss"]
    eager.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    torch.manual_seed(1)
    compiled = torch.compile(model)(x)["loss"]
    compiled.backward()
    assert torch.allclose(compiled, eager, atol=1e-5)
    for p, g in zip(model.parameters(), grads):
        assert torch.allclose(p.grad, g, atol=1e-5)


def test_fused_linear_relu_matches_plain_sequential(kernel):
    """nets.linear.Sequential runs Linear + ReLU as one layer: same outputs and gradients as an
    nn.Sequential of nn.Linear / nn.ReLU with the same weights, the same state dict, and a NaN
    input still gives NaN (a NaN-to-0 ReLU would hide divergence from the training guard)."""
    from aevb.nets.linear import Linear, Sequential
    torch.manual_seed(0)
    fused = Sequential(Linear(48, 40), torch.nn.ReLU(), Linear(40, 36), torch.nn.Tanh(), Linear(36, 5),
                       torch.nn.ReLU())
    plain = torch.nn.Sequential(torch.nn.Linear(48, 40), torch.nn.ReLU(), torch.nn.Linear(40, 36),
                                torch.nn.Tanh(), torch.nn.Linear(36, 5), torch.nn.ReLU())
    plain.load_state_dict(fused.state_dict())
    x = torch.randn(20, 48, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    y, y2 = fused(x), plain(x2)
    assert (y == 0).any() and (y > 0).any()  # the ReLUs cut something
    assert torch.allclose(y, y2, atol=1e-5)
    g = torch.randn_like(y)
    (y * g).sum().backward()
    (y2 * g).sum().backward()
    assert torch.allclose(x.grad, x2.grad, atol=1e-5)
    for (name, p), p2 in zip(fused.named_parameters(), plain.parameters()):
        assert torch.allclose(p.grad, p2.grad, atol=1e-5), name
    with torch.no_grad():
        assert fused(torch.full((2, 48), float("nan"))).isnan().all()
