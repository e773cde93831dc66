"""Every model variant: objective shapes, a few training steps that reduce the loss, save /
load round trips through aevb.models.load, beta, the conditional VAE's sampling, and the
YAML configs of configs/ that build these models."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from aevb import config as config_mod
from aevb import data, runs, train
from aevb.models import MODELS, Autoencoder, VAE, load
from aevb.samplers import per_class_grid, samples_per_class

ROOT = Path(__file__).resolve().parents[1]
SHAPE = (1, 8, 8)

VARIANTS = {
    "gaussian": dict(),
    "binary-reinforce-none": dict(latent_family="bernoulli", baseline="none"),
    "binary-reinforce-mean": dict(latent_family="bernoulli", baseline="mean"),
    "binary-reinforce-learned": dict(latent_family="bernoulli", baseline="learned"),
    "binary-gumbel": dict(latent_family="bernoulli", estimator="gumbel"),
    "iwae": dict(objective="iwae", iwae_k=3),
    "conditional": dict(num_classes=10),
    "conv": dict(net="conv", hidden=[32]),
    "kl-mc-binary": dict(latent_family="bernoulli", kl="mc"),
    "gaussian-learned-sigma": dict(likelihood="gaussian", sigma="learned"),
}



@pytest.fixture(scope="module")
def digits():
    return data.load("digits", binarize="static")


def build(kind, **kw):
    torch.manual_seed(0)
    if kind == "autoencoder":
        return Autoencoder(SHAPE, 4, hidden=[32], **kw)
    opts = {"hidden": [32], **VARIANTS[kind], **kw}
    return VAE(SHAPE, 6, **opts)


ALL = [*VARIANTS, "autoencoder"]


@pytest.mark.parametrize("kind", ALL)
def test_objective_terms_and_shapes(kind, digits):
    model = build(kind)
    x, y = digits.train.x[:10], digits.train.y[:10]
    terms = model.objective(x, y)
    assert terms["loss"].dim() == 0 and torch.isfinite(terms["loss"])
    for k, v in terms.items():
        if k != "loss":
            assert v.shape == (10,), k
    assert "rec" in terms
    if kind != "autoencoder":
        assert {"elbo", "kl"} <= set(terms)
        assert torch.allclose(terms["elbo"], terms["rec"] - terms["kl"], atol=1e-4) or kind == "iwae"
    yk = y[:3] if kind == "conditional" else None
    assert model.sample(3, yk).shape == (3, *SHAPE)
    assert model.reconstruct(x[:3], y[:3] if kind == "conditional" else None).shape == (3, *SHAPE)
    assert model.embed(x[:3], y[:3] if kind == "conditional" else None).shape == (3, model.latent_dim)


@pytest.mark.parametrize("kind", ALL)
def test_a_few_steps_reduce_the_loss(kind, digits):
    model = build(kind)
    x, y = digits.train.x[:200], digits.train.y[:200]
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)

    def evaluate():
        torch.manual_seed(123)
        with torch.no_grad():
            t = model.objective(x, y)
        return -(t["elbo"] if "elbo" in t else t["rec"]).mean()

    before = evaluate()
    for _ in range(25):
        opt.zero_grad()
        model.objective(x, y)["loss"].backward()
        opt.step()
    after = evaluate()
    assert after < 0.85 * before, (kind, float(before), float(after))


@pytest.mark.parametrize("kind", ALL)
def test_save_load_round_trip(kind, digits, tmp_path):
    model = build(kind)
    x, y = digits.train.x[:50], digits.train.y[:50]
    model.objective(x, y)["loss"].backward()  # moves the moving averages (buffers) too
    model.eval()
    model.save(tmp_path / "m")
    again = load(tmp_path / "m")
    assert type(again) is type(model) and again.full_config() == model.full_config()
    for (k, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), k
    torch.manual_seed(7)
    t1 = model.objective(x, y)
    torch.manual_seed(7)
    t2 = again.objective(x, y)
    assert all(torch.allclose(t1[k], t2[k]) for k in t1)


def test_old_configs_with_latent_key_still_load():
    model = VAE.from_config({"input_shape": [1, 8, 8], "latent_dim": 3, "hidden": [8], "latent": "bernoulli"})
    assert model.config["latent_family"] == "bernoulli"


def test_beta_weighs_only_the_loss(digits):
    x = digits.train.x[:20]
    for kind in ("gaussian", "binary-reinforce-mean", "binary-gumbel"):
        model = build(kind)
        out = {}
        for beta in (1.0, 4.0):
            model.beta = beta
            torch.manual_seed(3)
            out[beta] = model.objective(x)
        assert torch.allclose(out[1.0]["elbo"], out[4.0]["elbo"])
        assert out[4.0]["loss"] > out[1.0]["loss"]


def test_trainer_with_warmup_and_binary_latent(digits):
    model = build("binary-reinforce-learned")
    run = train(model, digits, epochs=2, batch_size=100, warmup_epochs=1, progress=False, tensorboard=False)
    assert model.beta == 1.0
    assert {"train_elbo", "test_elbo", "test_kl"} <= set(run.last)
    assert run.history[-1]["test_elbo"] > run.history[0]["test_elbo"] - 1


def test_bad_options_are_refused():
    for kw, msg in [(dict(objective="nope"), "objective"), (dict(estimator="x"), "estimator"),
                    (dict(baseline="x"), "baseline"), (dict(latent_family="x"), "latent family"),
                    (dict(net="x"), "network"), (dict(gumbel_temperature=0), "gumbel_temperature")]:
        with pytest.raises(ValueError, match=msg):
            VAE(SHAPE, 3, **kw)


# ----------------------------------------------------------------------------- conditional VAE
def test_conditional_sampling_by_label():
    model = build("conditional")
    assert model.sample(4, 3).shape == (4, *SHAPE)
    assert model.sample(4, torch.tensor([0, 1, 2, 3])).shape == (4, *SHAPE)
    assert model.sample(12).shape == (12, *SHAPE)  # cycles through the classes
    torch.manual_seed(0)
    a = model.sample(5, 7)
    torch.manual_seed(0)
    b = model.sample(5, 2)
    assert not torch.allclose(a, b)  # the label changes the image
    with pytest.raises(ValueError, match="labels"):
        model.sample(2, torch.tensor([0, 10]))
    with pytest.raises(ValueError, match="not conditional"):
        build("gaussian").sample(2, 1)


def test_samples_per_class_and_grid(tmp_path):
    model = build("conditional")
    torch.manual_seed(0)
    imgs = samples_per_class(model, 3)
    assert imgs.shape == (30, *SHAPE)
    torch.manual_seed(0)
    assert torch.allclose(imgs, model.sample(30, torch.arange(10).repeat_interleave(3)))
    path = per_class_grid(model, 2, tmp_path / "pc.png")
    assert path.exists() and path.stat().st_size > 0
    with pytest.raises(ValueError, match="conditional"):
        samples_per_class(build("gaussian"), 2)


# ----------------------------------------------------------------------------- configs
MY_CONFIGS = ["binary_vae_mnist", "binary_vae_gumbel_mnist", "cvae_mnist", "ae_gmm_mnist",
              "conv_vae_mnist", "conv_vae_cifar10", "beta_vae_mnist", "iwae_mnist"]


@pytest.mark.parametrize("name", MY_CONFIGS)
def test_configs_build_their_models(name):
    cfg = config_mod.make_config(ROOT / "configs" / f"{name}.yaml")
    shape = (3, 32, 32) if "cifar" in name else (1, 28, 28)
    ds = type("DS", (), {"shape": shape, "num_classes": 10})()
    model = runs.build_model(cfg, ds)
    assert type(model) is MODELS[cfg.model]
    for key in ("latent_family", "objective", "iwae_k", "beta", "net", "likelihood"):
        if key in model.config:
            assert model.config[key] == getattr(cfg, key), key
    assert bool(getattr(model, "num_classes", 0)) == cfg.conditional


def test_a_config_trains_from_the_command_line(tmp_path):
    from aevb.cli import main
    out = tmp_path / "run"
    rc = main(["train", "--dataset", "digits", "--latent-family", "bernoulli", "--baseline", "mean",
               "--hidden", "32", "--latent-dim", "8", "--epochs", "1", "--out", str(out),
               "--no-progress", "--no-figures"])
    assert rc == 0
    assert load(out).config["latent_family"] == "bernoulli"


def test_binary_vae_on_real_mnist(mnist_dir):
    """A short run on real digits: the 64-bit binary VAE improves and stays finite."""
    ds = data.load("mnist-offline", binarize="dynamic", data_dir=mnist_dir, limit=1000)
    torch.manual_seed(0)
    model = VAE(ds.shape, 64, hidden=[200], latent_family="bernoulli", baseline="learned")
    run = train(model, ds, epochs=3, lr=2e-3, progress=False, tensorboard=False)
    elbos = [r["test_elbo"] for r in run.history]
    assert all(map(lambda v: v == v and abs(v) < 1e4, elbos))
    assert elbos[-1] > elbos[0]
    assert run.last["test_elbo"] > -250
