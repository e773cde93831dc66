"""The MLP networks' gated activation: h = a * sigmoid(g) for the two halves of a Linear twice
as wide (aevb.nets.mlp), checked against the formula written out, and refused where a net
cannot build it."""
from __future__ import annotations

import pytest
import torch

from aevb import VAE, data, nets, train
from aevb.nets.mlp import mlp


def test_gated_layer_is_a_times_sigmoid_g():
    torch.manual_seed(0)
    net = mlp([6, 5, 3], "gated")
    first, last = net[0], net[2]
    assert (first.weight.shape, last.weight.shape) == ((10, 6), (3, 5))  # the hidden layer is 2 x 5 wide
    x = torch.randn(7, 6)
    pre = x @ first.weight.T + first.bias
    h = pre[:, :5] * torch.sigmoid(pre[:, 5:])
    torch.testing.assert_close(net(x), h @ last.weight.T + last.bias)


def test_gated_vae_trains_and_conv_nets_refuse_it():
    ds = data.load("digits", binarize="dynamic")
    torch.manual_seed(0)
    model = VAE(ds.shape, latent_dim=2, hidden=(32,), activation="gated")
    plain = VAE(ds.shape, latent_dim=2, hidden=(32,))
    # 64 -> 2*32 -> 4 and 2 -> 2*32 -> 64: each hidden layer's Linear has 32 more outputs
    extra = 32 * (64 + 1) + 32 * (2 + 1)
    assert sum(p.numel() for p in model.parameters()) - sum(p.numel() for p in plain.parameters()) == extra
    run = train(model, ds, epochs=3, lr=3e-3, progress=False, tensorboard=False)
    assert run.history[-1]["test_elbo"] > run.history[0]["test_elbo"]
    with pytest.raises(ValueError, match="activation 'gated' is for net mlp"):
        nets.build("conv", (1, 28, 28), 4, 2, 1, act="gated")
