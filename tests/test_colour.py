"""Colour images (issue 16): the likelihoods against math (discretized logistic mass, bits/dim
of known distributions, bounded learned scales, finite gradients from wild decoder outputs),
the residual conv net's shapes at 32/64/128 px, a folder of train/ and test/ as the two
splits, divergence said loudly, and a tiny training run on real CIFAR-10 JPEGs."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from aevb import data
from aevb.diagnostics import DivergenceWarning, problems
from aevb.distributions import (CoupledLogisticRGB, DiscretizedLogistic, GaussianLikelihood, LogisticLikelihood,
                                bits_per_dim)
from aevb.distributions.likelihoods import soft_bound
from aevb.models import VAE
from aevb.nets import build
from aevb.training import train

CIFAR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpg"
LEVELS = torch.arange(256, dtype=torch.float64) / 255


@pytest.mark.parametrize("loc,log_scale", [(0.5, -3.0), (0.0, -7.0), (1.0, -1.0), (0.37, -5.5),
                                           (-2.0, -2.0), (3.0, 0.0), (0.5, 4.0)])
def test_discretized_logistic_mass_sums_to_one(loc, log_scale):
    d = DiscretizedLogistic(torch.full((256,), loc, dtype=torch.float64),
                            torch.full((256,), log_scale, dtype=torch.float64))
    p = d.log_prob(LEVELS).exp()
    assert torch.all(p >= 0) and abs(p.sum().item() - 1) < 1e-6


def test_discretized_logistic_mass_is_the_cdf_difference():
    """Each inner bin's probability is sigmoid((v + h - mu)/s) - sigmoid((v - h - mu)/s)."""
    loc, s = 0.3, math.exp(-3.0)
    d = DiscretizedLogistic(torch.full((256,), loc, dtype=torch.float64),
                            torch.full((256,), -3.0, dtype=torch.float64))
    h = 0.5 / 255
    ref = torch.sigmoid((LEVELS + h - loc) / s) - torch.sigmoid((LEVELS - h - loc) / s)
    edge = torch.tensor([h - loc, 1 - h - loc], dtype=torch.float64) / s
    ref[0], ref[-1] = torch.sigmoid(edge[0]), 1 - torch.sigmoid(edge[1])
    p = d.log_prob(LEVELS).exp()
    exact = ref > 1e-5  # below, the bin takes density x width (PixelCNN++'s safe branch)
    assert torch.allclose(p[exact], ref[exact], rtol=1e-9, atol=0)
    assert torch.allclose(p[~exact], ref[~exact], rtol=1e-3, atol=0)


def test_bits_per_dim_of_known_distributions():
    # uniform over 256 levels: exactly 8 bits per value
    assert bits_per_dim(torch.tensor(-3072 * math.log(256)), 3072).item() == pytest.approx(8.0)
    # a uniform density on [0, 1] (log p = 0) of 8-bit data: 0 + the offset log2 256 = 8
    assert bits_per_dim(torch.tensor(0.0), 3072, offset=8.0).item() == pytest.approx(8.0)
    # samples of a distribution cost its entropy on average (Monte Carlo vs the exact sum)
    d = DiscretizedLogistic(torch.full((200_000,), 0.4, dtype=torch.float64),
                            torch.full((200_000,), -4.0, dtype=torch.float64))
    p = DiscretizedLogistic(torch.full((256,), 0.4, dtype=torch.float64),
                            torch.full((256,), -4.0, dtype=torch.float64)).log_prob(LEVELS).exp()
    entropy_bits = -(p * p.clamp(min=1e-300).log2()).sum().item()
    mc = bits_per_dim(d.log_prob(d.sample()).sum(), 200_000).item()
    assert mc == pytest.approx(entropy_bits, abs=0.02)


def test_soft_bound_stays_inside_with_live_gradients():
    raw = torch.tensor([-1e4, -50.0, -7.0, -3.0, 0.0, 50.0, 1e4], requires_grad=True)
    b = soft_bound(raw, -7.0, 0.0)
    assert torch.all(b >= -7.0) and torch.all(b <= 0.0)
    b.sum().backward()
    assert torch.all(torch.isfinite(raw.grad)) and torch.all(raw.grad[1:-1] > 0)
    assert soft_bound(torch.tensor(-3.0), -7.0, 0.0).item() == pytest.approx(-3.0, abs=0.07)


@pytest.mark.parametrize("family", [LogisticLikelihood(), GaussianLikelihood(sigma="learned")])
def test_learned_scale_is_bounded_and_gradients_are_finite_from_extreme_outputs(family):
    """A decoder that starts wild (outputs of +-1e4) gives a finite loss and finite, nonzero
    gradients; the scale stays inside its bounds (the issue's -1.2e10 ELBO came from a clamp
    that stopped the gradient of log-sigma)."""
    torch.manual_seed(0)
    x = torch.randint(0, 256, (4, 3, 8, 8)) / 255
    for magnitude in (1.0, 1e2, 1e4):
        out = (torch.randn(4, 6, 8, 8) * magnitude).requires_grad_()
        p = family(out, 3)
        lp = p.log_prob(x)
        assert lp.shape == (4,) and torch.all(torch.isfinite(lp))
        lp.sum().backward()
        assert torch.all(torch.isfinite(out.grad)) and out.grad.abs().sum() > 0
        base = p.base_dist
        scale = base.log_scale.exp() if hasattr(base, "log_scale") else base.scale
        lo, hi = (math.exp(-7), 1.0) if isinstance(family, LogisticLikelihood) else (math.exp(-6), 1.0)
        assert torch.all(scale >= lo * (1 - 1e-6)) and torch.all(scale <= hi * (1 + 1e-6))


@pytest.mark.parametrize("size,levels", [(32, 3), (64, 4), (128, 5)])
def test_resconv_shapes(size, levels):
    enc, dec = build("resconv", (3, size, size), 2 * 64, 64, 6, [8, 16, 32])
    x = torch.rand(2, 3, size, size)
    assert enc(x).shape == (2, 128)
    assert dec(torch.randn(5, 64)).shape == (5, 6, size, size)
    assert sum(isinstance(m, torch.nn.Conv2d) and m.stride == (2, 2) for m in enc.modules()) == levels
    assert enc.feature_shape[1:] == (4, 4)
    model = VAE((3, size, size), 16, net="resconv", hidden=[8, 16], likelihood="logistic", num_classes=3)
    y = torch.tensor([0, 2])
    assert model.reconstruct(x, y).shape == x.shape and model.sample(3, torch.tensor([1, 1, 0])).shape == (3, 3, size, size)
    assert torch.isfinite(model.objective(x, y)["loss"])


@pytest.mark.parametrize("size", [32, 64, 128])
def test_resconv_spatial_shapes(size):
    """The latent is a 4-channel 8x8 map: means then log-variances, channel by channel."""
    model = VAE((3, size, size), 256, net="resconv_spatial", hidden=[8, 16], likelihood="logistic")
    x = torch.rand(2, 3, size, size)
    assert model.encoder(x).shape == (2, 512) and model.encoder.head.out_channels == 8
    assert model.reconstruct(x).shape == x.shape and model.sample(3).shape == (3, 3, size, size)
    assert torch.isfinite(model.objective(x)["loss"])
    with pytest.raises(ValueError, match="multiple of 64"):
        VAE((3, size, size), 100, net="resconv_spatial")
    with pytest.raises(ValueError, match="no condition"):
        VAE((3, size, size), 256, net="resconv_spatial", num_classes=10)


def test_divergence_is_reported():
    bad = {"epoch": 3, "train_bpd": 3.5e5, "test_bpd": 3.4e5, "test_kl": 0.001, "skipped_steps": 4}
    assert problems({"epoch": 1, "test_bpd": 9.5, "test_kl": 0.05}) == [] and "uniform" in problems({"epoch": 3, "test_bpd": 8.5})[0]
    said = problems(bad)
    assert len(said) == 3 and "non-finite" in said[0] and "worse than a uniform" in said[1] and "collapsed" in said[2]
    assert problems({"epoch": 2, "test_bpd": 5.1, "test_kl": 40.0, "skipped_steps": 4}, skipped_before=4) == []
    assert "non-finite" in problems({"epoch": 2, "skipped_steps": 4}, steps=100)[0]
    assert problems({"epoch": 2, "skipped_steps": 60}, steps=100) == []  # the run fails by itself


def test_training_that_diverges_warns_loudly():
    """A Gaussian with a tiny fixed sigma on colour noise: bits/dim far above 8 -> a warning."""
    torch.manual_seed(0)
    x = torch.randint(0, 256, (40, 3, 8, 8)).float() / 255
    ds = data.Dataset("noise", data.Split(x[:30]), data.Split(x[30:]), "none", 0, {})
    model = VAE((3, 8, 8), 4, hidden=[16], likelihood="gaussian", sigma=1e-3)
    with pytest.warns(DivergenceWarning, match="worse than a uniform"):
        train(model, ds, epochs=1, batch_size=10, progress=False, tensorboard=False)


def _jpeg_tree(root: Path, split: str, classes=("cat", "dog"), n=2):
    from PIL import Image
    for c in classes:
        (root / split / c).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(np.full((10, 12, 3), 40 * i, np.uint8)).save(root / split / c / f"{i}.jpg")


def test_folder_of_train_and_test_gives_the_splits(tmp_path):
    _jpeg_tree(tmp_path, "train", n=3)
    _jpeg_tree(tmp_path, "test", n=2)
    (tmp_path / "README.md").write_text("ignored")
    ds = data.load(f"folder:{tmp_path}", image_size=8, progress=False)
    assert ds.train.x.shape == (6, 3, 8, 8) and ds.test.x.shape == (4, 3, 8, 8)
    assert ds.num_classes == 2 and ds.info["classes"] == ["cat", "dog"]
    assert data.registry.class_names(f"folder:{tmp_path}") == ["cat", "dog"]


def test_folder_splits_with_different_classes_are_refused(tmp_path):
    _jpeg_tree(tmp_path, "train", classes=("cat", "dog"))
    _jpeg_tree(tmp_path, "test", classes=("cat", "cow"))
    with pytest.raises(data.DataError, match="different classes"):
        data.load(f"folder:{tmp_path}", image_size=8, progress=False)


@pytest.mark.skipif(not CIFAR.is_dir(), reason=f"needs the CIFAR-10 JPEGs in {CIFAR} (../shared)")
def test_tiny_training_run_on_real_cifar_jpegs():
    ds = data.load(f"folder:{CIFAR}", image_size=32, limit=60, progress=False)
    assert ds.train.x.shape == (60, 3, 32, 32) and ds.num_classes == 10
    torch.manual_seed(0)
    model = VAE((3, 32, 32), 16, net="resconv", hidden=[8, 16, 32], likelihood="logistic")
    run = train(model, ds, epochs=3, batch_size=10, lr=3e-3, progress=False, tensorboard=False)
    bpd = [r["test_bpd"] for r in run.history]
    assert all(math.isfinite(b) for b in bpd) and bpd[-1] < bpd[0] and bpd[-1] < 8.0, bpd


# ----------------------------------------------------------------------- coupled RGB channels
def _coupled(bins=256, n=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    shape = (n, 3, 2, 2)
    return CoupledLogisticRGB(torch.rand(shape, generator=g, dtype=torch.float64),
                              torch.rand(shape, generator=g, dtype=torch.float64) * 3 - 5,
                              torch.rand(shape, generator=g, dtype=torch.float64) * 2 - 1, bins)


def test_coupled_rgb_is_a_distribution_over_all_colours():
    """Summed over every (R, G, B) of a pixel (16 levels: 4,096 colours), the mass is 1 (up
    to the density x width of bins whose mass is below 1e-5, as in the uncoupled test)."""
    d = _coupled(bins=16)
    levels = torch.arange(16, dtype=torch.float64) / 15
    colours = torch.cartesian_prod(levels, levels, levels).view(-1, 3, 1, 1)   # (4096, 3, 1, 1)
    for i, j in ((0, 0), (1, 1)):
        one = CoupledLogisticRGB(*(t[..., i:i + 1, j:j + 1] for t in (d.loc, d.log_scale, d.coeff)), 16)
        assert abs(one.log_prob(colours).exp().sum().item() - 1) < 1e-5


def test_coupled_rgb_is_the_chain_of_its_conditionals():
    """log p(x) = log DL(R; m_R) + log DL(G; m_G + a R) + log DL(B; m_B + b R + c G), written
    out by hand; with zero coefficients it is the uncoupled logistic."""
    d = _coupled(n=4)
    x = torch.randint(0, 256, (4, 3, 2, 2), dtype=torch.float64) / 255
    m, s, (a, b, c) = d.loc, d.log_scale, d.coeff.unbind(1)
    r, gr = x[:, 0], x[:, 1]
    locs = torch.stack([m[:, 0], m[:, 1] + a * r, m[:, 2] + b * r + c * gr], 1)
    ref = DiscretizedLogistic(locs, s).log_prob(x).sum((1, 2, 3))
    assert torch.allclose(d.log_prob(x), ref, rtol=1e-12)
    flat = CoupledLogisticRGB(m, s, torch.zeros_like(m))
    assert torch.allclose(flat.log_prob(x), DiscretizedLogistic(m, s).log_prob(x).sum((1, 2, 3)), rtol=1e-12)


def test_coupled_rgb_samples_follow_it_and_k_rows_broadcast():
    """Samples cost the distribution's entropy (MC over samples vs the exact sum over the
    colours of a 16-level pixel); one image scored against K rows of parameters equals
    scoring K copies of it (the importance-sampling layout)."""
    d = _coupled(bins=16, n=1)
    one = CoupledLogisticRGB(d.loc[..., :1, :1], d.log_scale[..., :1, :1], d.coeff[..., :1, :1], 16)
    levels = torch.arange(16, dtype=torch.float64) / 15
    colours = torch.cartesian_prod(levels, levels, levels).view(-1, 3, 1, 1)
    p = one.log_prob(colours).exp()
    entropy = -(p * p.log()).sum().item()
    torch.manual_seed(0)
    xs = one.sample((100_000,))
    assert -one.log_prob(xs).mean().item() == pytest.approx(entropy, abs=0.02)
    k = _coupled(n=5)
    x = torch.randint(0, 256, (1, 3, 2, 2), dtype=torch.float64) / 255
    assert torch.allclose(k.log_prob(x), k.log_prob(x.expand(5, -1, -1, -1)), rtol=1e-12)


def test_logistic_rgb_trains_and_needs_three_channels():
    model = VAE((3, 16, 16), 16, net="resconv", hidden=[8, 16], likelihood="logistic_rgb")
    x = torch.rand(6, 3, 16, 16)
    x = (x * 255).round() / 255
    out = model(x)
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and out["bpd"].shape == (6,)
    assert model.sample(2).shape == (2, 3, 16, 16)
    with pytest.raises(ValueError, match="3 channels, not 1: use likelihood logistic"):
        VAE((1, 28, 28), 4, likelihood="logistic_rgb")
