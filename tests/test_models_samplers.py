"""The Gaussian-mixture sampler on latent codes ("ex-post density estimation"): fitted on an
autoencoder's codes or a VAE's posterior means, sampled, saved as safetensors + JSON."""
from __future__ import annotations

import json

import pytest
import torch

from aevb import data, train
from aevb.models import Autoencoder, VAE
from aevb.samplers import GMMSampler, codes



@pytest.fixture(scope="module")
def trained():
    ds = data.load("digits", binarize="static")
    torch.manual_seed(0)
    ae = Autoencoder(ds.shape, 2, hidden=[64])
    train(ae, ds, epochs=3, progress=False, tensorboard=False)
    torch.manual_seed(0)
    vae = VAE(ds.shape, 4, hidden=[64])
    train(vae, ds, epochs=3, progress=False, tensorboard=False)
    return ds, ae, vae


@pytest.mark.parametrize("which", ["ae", "vae"])
def test_fit_and_sample(trained, which):
    ds, ae, vae = trained
    model = ae if which == "ae" else vae
    g = GMMSampler.fit(model, ds.train, n_components=5, seed=0)
    assert g.n_components == 5 and abs(float(g.weights.sum()) - 1) < 1e-6
    imgs = g.sample(16)
    assert imgs.shape == (16, *ds.shape) and imgs.min() >= 0 and imgs.max() <= 1
    z = codes(model, ds.train)
    # the mixture describes the codes: its mean matches theirs, and it fits them better than
    # one Gaussian (the sampled codes' mean too)
    mix_mean = (g.weights[:, None] * g.means).sum(0)
    assert torch.allclose(mix_mean.float(), z.mean(0), atol=0.05 * float(z.std()) + 1e-3)
    one = GMMSampler.fit(model, ds.train, n_components=1)
    assert g.log_density(z).mean() > one.log_density(z).mean()
    torch.manual_seed(0)
    s = g.sample_codes(20000)
    assert torch.allclose(s.mean(0).float(), z.mean(0), atol=0.1 * float(z.std()))


def test_codes_are_posterior_means_for_a_vae(trained):
    ds, _, vae = trained
    x = ds.test.x[:7]
    assert torch.allclose(codes(vae, x), vae.encode(x).base_dist.loc)


def test_save_and_load_round_trip(trained, tmp_path):
    ds, ae, _ = trained
    g = GMMSampler.fit(ae, ds.train, n_components=4, covariance_type="diag", seed=1)
    path = g.save(tmp_path / "gmm")
    assert path.suffix == ".safetensors" and (tmp_path / "gmm.json").exists()
    info = json.loads((tmp_path / "gmm.json").read_text())
    assert info["n_components"] == 4 and info["covariance_type"] == "diag"
    assert b"pickle" not in path.read_bytes()[:200]
    g2 = GMMSampler.load(tmp_path / "gmm", ae)
    for k in ("weights", "means", "covariances"):
        assert torch.equal(getattr(g, k), getattr(g2, k))
    gen = torch.Generator().manual_seed(3)
    a = g.sample(5, generator=gen)
    gen = torch.Generator().manual_seed(3)
    assert torch.allclose(a, g2.sample(5, generator=gen))


@pytest.mark.parametrize("cov", ["full", "diag", "tied", "spherical"])
def test_covariance_types(trained, cov):
    ds, ae, _ = trained
    g = GMMSampler.fit(ae, ds.train, n_components=3, covariance_type=cov)
    assert g.covariances.shape == (3, 2, 2)
    assert g.sample(4).shape == (4, *ds.shape)


def test_bad_arguments(trained):
    ds, ae, vae = trained
    with pytest.raises(ValueError, match="n_components"):
        GMMSampler.fit(ae, ds.train, n_components=0)
    with pytest.raises(ValueError, match="covariance_type"):
        GMMSampler.fit(ae, ds.train, covariance_type="banded")
    g = GMMSampler.fit(ae, ds.train, n_components=2)
    with pytest.raises(ValueError, match="latent_dim"):
        GMMSampler(vae, g.weights, g.means, g.covariances)


def test_autoencoder_samples_from_its_code_statistics(trained):
    """The code mean and covariance are tracked while training (moving averages): with the
    weights held fixed they converge to the statistics of the codes."""
    ds, ae, _ = trained
    ae = Autoencoder.from_config(ae.config)
    ae.load_state_dict(trained[1].state_dict())
    x = ds.train.x[:500]
    ae.train()
    for _ in range(150):
        ae.objective(x)
    z = codes(ae, x)
    dist = ae.code_distribution()
    assert torch.allclose(dist.loc, z.mean(0), atol=1e-3 * float(z.abs().max()))
    assert torch.allclose(dist.covariance_matrix, torch.cov(z.T, correction=0), rtol=1e-2, atol=1e-3)
    assert ae.sample(6).shape == (6, *ds.shape)
