"""The declared model interface, the settings that configure each part, the beta schedule and
the noise transform of training, and the distributions aevb builds (no argument validation,
without touching torch's global switch)."""
from __future__ import annotations

import inspect
import math

import pytest
import torch
from torch.distributions import Distribution

from aevb import VAE, data, runs, train
from aevb.config import FIELDS
from aevb.data.transforms import noisy_inputs
from aevb.distributions import PRIORS, BernoulliHalf, Prior, StandardNormal, build_prior
from aevb.evaluation import importance_sampling
from aevb.models import HVAE, MODELS, Autoencoder
from aevb.objectives import kl_method
from aevb.training import kl_warmup

SHAPE = (1, 8, 8)
VARIANTS = [dict(), dict(latent_family="bernoulli"), dict(latent_family="bernoulli", estimator="gumbel"),
            dict(objective="iwae", iwae_k=3), dict(num_classes=3), dict(net="conv", hidden=[8]),
            dict(likelihood="gaussian", sigma="learned"), dict(likelihood="logistic"),
            dict(likelihood="continuous_bernoulli"), dict(kl="mc"),
            dict(posterior="iaf", flow_hidden=[8]), dict(posterior="iaf", prior="vamp", objective="iwae")]


def model_of(kw):
    torch.manual_seed(0)
    return VAE(SHAPE, 3, **{"hidden": [8], **kw})


@pytest.mark.parametrize("kw", VARIANTS + ["autoencoder", "hvae"], ids=str)
def test_every_model_declares_the_interface(kw):
    model = (Autoencoder(SHAPE, 3, hidden=[8]) if kw == "autoencoder" else
             HVAE(SHAPE, 3, inner_latent_dim=4, hidden=[8], inner_hidden=[4]) if kw == "hvae" else model_of(kw))
    k = model.num_classes
    x, y = torch.rand(4, *SHAPE).bernoulli(), (torch.arange(4) % 3 if k else None)
    assert tuple(model.input_shape) == SHAPE and model.latent_dim == 3
    q = model.encode(x, y)
    assert isinstance(q, Distribution) and q.mean.shape == (4, 3)
    p = model.decode(torch.zeros(2, 5, 3), None if not k else torch.zeros(2, 5, dtype=torch.long))
    assert isinstance(p, Distribution) and p.batch_shape == (2, 5) and p.mean.shape == (2, 5, *SHAPE)
    if kw == "autoencoder":
        assert model.prior is None and not model.has_density and model.kl_method is None
        with pytest.raises(ValueError, match="no density"):
            model.log_likelihood(x, y)
    else:
        assert isinstance(model.prior, Prior) and model.has_density
        assert model.prior().sample((6,)).shape == (6, 3) and model.kl_method in ("analytic", "mc")
        assert torch.allclose(model.log_likelihood(x, y, samples=7, seed=3).double(),
                              importance_sampling(model, x, y, samples=7, seed=3)["log_px"])
    assert model.sample_latents(5).shape == (5, 3)
    assert model.sample(5).shape == (5, *SHAPE)
    assert model.embed(x, y).shape == (4, 3) and model.reconstruct(x, y).shape == x.shape
    terms = model.objective(x, y, beta=0.5)
    assert terms["loss"].shape == () and all(v.shape == (4,) for n, v in terms.items() if n != "loss")


def test_objective_takes_beta_and_never_changes_the_model():
    model = model_of({})
    x = torch.rand(8, *SHAPE).bernoulli()
    torch.manual_seed(1)
    t1 = model.objective(x, beta=0.25)
    torch.manual_seed(1)
    t2 = model.objective(x)
    assert model.beta == 1.0 and torch.equal(t1["elbo"], t2["elbo"])
    assert torch.allclose(t1["loss"], -(t1["rec"] - 0.25 * t1["kl"]).mean())


# ----------------------------------------------------------------------------- settings
def test_each_models_settings_are_config_keys_and_constructor_arguments():
    for name, cls in MODELS.items():
        params = inspect.signature(cls.__init__).parameters
        assert set(cls.settings) <= set(FIELDS), (name, set(cls.settings) - set(FIELDS))
        assert set(cls.settings) <= set(params), (name, set(cls.settings) - set(params))


def test_every_config_key_goes_somewhere():
    used = set(runs.DATA_KEYS) | set(runs.TRAIN_KEYS) | {k for c in MODELS.values() for k in c.settings}
    assert set(FIELDS) - used == {"model", "conditional", "out"}
    train_params = inspect.signature(train).parameters
    assert all(train_params[k].kind == inspect.Parameter.KEYWORD_ONLY for k in runs.TRAIN_KEYS)


def test_a_config_builds_its_model_from_the_declared_settings():
    cfg = runs.config_mod.make_config(None, latent_dim=5, hidden=[12], beta=2.0, prior="standard_normal")
    ds = data.load("digits", limit=50)
    model = runs.build_model(cfg, ds)
    assert model.latent_dim == 5 and model.beta == 2.0 and model.config["hidden"] == [12]
    ae = runs.build_model(runs.config_mod.make_config(None, model="autoencoder", latent_dim=4), ds)
    assert type(ae) is Autoencoder and ae.latent_dim == 4


# ----------------------------------------------------------------------------- priors
def test_the_prior_is_chosen_apart_from_the_posterior_family():
    assert isinstance(model_of({}).prior, StandardNormal)
    assert isinstance(model_of(dict(latent_family="bernoulli")).prior, BernoulliHalf)
    assert isinstance(model_of(dict(prior="standard_normal")).prior, StandardNormal)
    with pytest.raises(ValueError, match="prior 'standard_normal' is a distribution over real vectors"):
        model_of(dict(latent_family="bernoulli", prior="standard_normal"))
    with pytest.raises(ValueError, match="unknown prior 'flat'"):
        model_of(dict(prior="flat"))
    assert set(PRIORS) >= {"standard_normal", "bernoulli_half"}


def test_priors_follow_the_model_and_are_not_saved_when_they_hold_no_parameters():
    model = model_of({}).double()
    assert model.prior().sample((2,)).dtype == torch.float64
    assert not any(k.startswith("prior.") for k in model.state_dict())


def test_kl_is_analytic_where_a_closed_form_is_registered_else_sampled():
    q = model_of({}).encode(torch.rand(2, *SHAPE))
    assert kl_method("analytic", q, StandardNormal(3)()) == "analytic"
    assert kl_method("mc", q, StandardNormal(3)()) == "mc"
    mixture = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(logits=torch.zeros(2)),
        torch.distributions.Independent(torch.distributions.Normal(torch.zeros(2, 3), torch.ones(2, 3)), 1))
    assert kl_method("analytic", q, mixture) == "mc"  # no closed form: Monte Carlo, said so
    assert model_of(dict(kl="mc")).kl_method == "mc" and model_of({}).kl_method == "analytic"
    assert build_prior("bernoulli_half", 4).support == "binary"


# ----------------------------------------------------------------------------- training
class Recorder(VAE):
    """A VAE that records the beta and target it is trained with."""

    def objective(self, x, y=None, target=None, beta=None):
        if self.training and torch.is_grad_enabled():
            self.seen.append((beta, None if target is None else target.clone(), x.clone()))
        return super().objective(x, y, target, beta)


def test_kl_warmup_is_a_schedule_passed_to_the_objective():
    ds = data.load("digits", binarize="static", limit=300)  # 3 steps of 100 per epoch
    torch.manual_seed(0)
    model = Recorder(ds.shape, 2, hidden=[8], beta=2.0)
    model.seen = []
    train(model, ds, epochs=2, batch_size=100, warmup_epochs=1.5, progress=False, tensorboard=False,
          callbacks=[lambda run, record: model.seen.append(("epoch", model.beta))])
    betas = [b for b, *_ in model.seen if b != "epoch"]
    assert betas == pytest.approx([2.0 * min(1.0, (t + 1) / 4.5) for t in range(6)])
    assert [b for tag, b, *_ in model.seen if tag == "epoch"] == [2.0, 2.0]  # never changed
    assert kl_warmup(2.0, 0)(5) is None  # no warm-up: the model's own beta


def test_noise_is_a_transform_of_the_batch_with_the_clean_image_as_target():
    x = torch.rand(200, *SHAPE).bernoulli()
    same, none = noisy_inputs(0.0)(x)
    assert same is x and none is None
    noisy, clean = noisy_inputs(0.4)(x)
    assert clean is x and abs((noisy != x).float().mean().item() - 0.2) < 0.02  # half the hits flip
    ds = data.load("digits", binarize="static", limit=100)
    torch.manual_seed(0)
    model = Recorder(ds.shape, 2, hidden=[8])
    model.seen = []
    train(model, ds, epochs=1, batch_size=100, noise=0.3, progress=False, tensorboard=False)
    (_, target, inputs), = model.seen
    assert set(target.unique().tolist()) <= {0.0, 1.0} and 0.1 < (inputs != target).float().mean() < 0.2


# ----------------------------------------------------------------------------- validation
def test_aevb_builds_its_distributions_without_validation_and_leaves_the_switch_alone():
    made = []
    init = Distribution.__init__

    def spy(self, *a, **kw):
        init(self, *a, **kw)
        made.append(self)

    saved = Distribution._validate_args  # (torch.compile, run by another test, turns it off)
    Distribution.set_default_validate_args(True)  # torch's default, which aevb leaves alone
    Distribution.__init__ = spy
    try:
        for kw in VARIANTS:
            model = model_of(kw)
            x, y = torch.rand(4, *SHAPE).bernoulli(), (torch.arange(4) % 3 if model.num_classes else None)
            model.objective(x, y)
            model.sample(3)
            importance_sampling(model, x, y, samples=4)
        ae = Autoencoder(SHAPE, 3, hidden=[8])
        ae.objective(torch.rand(4, *SHAPE))
        ae.sample(2)
        assert Distribution._validate_args is True
    finally:
        Distribution.__init__ = init
        Distribution.set_default_validate_args(saved)
    assert len(made) > 50 and all(d._validate_args is False for d in made), \
        {type(d).__name__ for d in made if d._validate_args}


def test_log_weights_are_the_same_whole_or_in_chunks():
    """The one log-weights function, all K samples in one decoder call (training) or in
    chunks of `rows` (evaluation), with the same draws."""
    from aevb.objectives import log_weight_terms
    model = model_of(dict(num_classes=3)).eval()
    x, y = torch.rand(5, *SHAPE).bernoulli(), torch.arange(5) % 3
    torch.manual_seed(2)
    whole = log_weight_terms(model, x, 7, y)
    for rows in (3, 10, 35):
        torch.manual_seed(2)
        chunked = log_weight_terms(model, x, 7, y, rows=rows)
        assert torch.allclose(chunked.total, whole.total, atol=1e-5)
    assert whole.total.shape == (5, 7) and math.isfinite(whole.total.sum().item())
