"""Convolutional encoder / decoder: layer shapes inferred for every supported image size,
conditioning, and a conv VAE that learns."""
from __future__ import annotations

import pytest
import torch

from aevb import nets
from aevb.models import VAE
from aevb.nets.conv import channels, levels



@pytest.mark.parametrize("size,expected", [(28, 2), (32, 3), (64, 4), (128, 5), (8, 1), (7, 0), (30, 1)])
def test_levels_halve_to_a_small_map(size, expected):
    assert levels(size, size) == expected


def test_channels_double_past_the_given_list():
    assert channels([32, 64], 4) == [32, 64, 128, 256]
    assert channels([32, 64, 128], 2) == [32, 64]
    assert channels([256], 3) == [256, 512, 512]


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (1, 64, 64), (3, 64, 64),
                                   (1, 128, 128), (3, 128, 128), (1, 8, 8)])
def test_shapes_for_every_size(shape):
    enc, dec = nets.build("conv", shape, 2 * 16, 16, 2 * shape[0], [8, 16], "relu", cond_dim=10)
    x = torch.rand(2, *shape)
    cond = torch.zeros(2, 10)
    assert enc(x, cond).shape == (2, 32)
    assert dec(torch.zeros(2, 16 + 10)).shape == (2, 2 * shape[0], shape[1], shape[2])


@pytest.mark.parametrize("likelihood,sigma", [("bernoulli", 1.0), ("gaussian", "learned"),
                                              ("logistic", 1.0), ("continuous_bernoulli", 1.0)])
def test_conv_vae_for_colour_likelihoods(likelihood, sigma):
    model = VAE((3, 32, 32), 8, net="conv", hidden=[8, 16], likelihood=likelihood, sigma=sigma)
    x = torch.rand(4, 3, 32, 32)
    if likelihood == "bernoulli":
        x = torch.bernoulli(x)
    if likelihood == "logistic":
        x = (x * 255).round() / 255
    terms = model.objective(x)
    assert terms["elbo"].shape == (4,) and torch.isfinite(terms["loss"])
    assert ("bpd" in terms) == (likelihood != "bernoulli")
    assert model.sample(3).shape == (3, 3, 32, 32)
    assert model.reconstruct(x).shape == x.shape


def blobs(n=64, size=28, seed=0):
    """Binary images of a filled square at a random place: structure a model can learn."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, 1, size, size)
    for i in range(n):
        r, c = torch.randint(0, size - 10, (2,), generator=g).tolist()
        x[i, 0, r:r + 10, c:c + 10] = 1
    return x


def test_a_few_steps_reduce_the_loss():
    torch.manual_seed(0)
    model = VAE((1, 28, 28), 4, net="conv", hidden=[8, 16])
    x = blobs()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    with torch.no_grad():
        torch.manual_seed(1)
        before = -model.objective(x)["elbo"].mean()
    for _ in range(20):
        opt.zero_grad()
        model.objective(x)["loss"].backward()
        opt.step()
    with torch.no_grad():
        torch.manual_seed(1)
        after = -model.objective(x)["elbo"].mean()
    assert after < 0.8 * before, (before, after)
