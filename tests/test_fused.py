"""The fused ELBO step (aevb.fused) against the plain computation it replaces: VAE.objective
through torch.distributions and autograd's backward. Same terms, same gradients, the same
training run; and it is used exactly where it applies."""
import math

import pytest
import torch

from aevb import VAE, data, train
from aevb import training


def _images(n=9, seed=0, binary=True):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 6, 5, generator=g)
    return (x < 0.4).float() if binary else x


def _plain(model, x, target=None, beta=None, seed=0):
    """The terms and gradients of the general path (objective + backward)."""
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    terms = model.objective(x, target=target, beta=beta)
    terms["loss"].backward()
    return {k: v.detach() for k, v in terms.items()}, [p.grad.clone() for p in model.parameters()]


def _fused(model, step, x, target=None, beta=None, seed=0):
    torch.manual_seed(seed)
    terms = step(x, target=target, beta=beta)
    return terms, [p.grad.clone() for p in model.parameters()]


def _assert_close(a, b):
    ta, ga = a
    tb, gb = b
    assert ta.keys() == tb.keys()
    for k in ta:
        assert torch.allclose(ta[k], tb[k], rtol=1e-5, atol=1e-4), k
    for p, q in zip(ga, gb):
        assert torch.allclose(p, q, rtol=1e-4, atol=1e-6 * p.abs().max().item())


@pytest.mark.parametrize("hidden", [(), (7,), (11, 8, 6)], ids=["no hidden layer", "one", "three"])
@pytest.mark.parametrize("beta", [None, 0.3])
def test_terms_and_gradients_equal_the_plain_path(kernel, hidden, beta):
    """Both kernels (MKL and oneDNN), several depths, beta, and three steps in a row: the
    later steps write into the gradients and workspace buffers of the first."""
    torch.manual_seed(0)
    model = VAE((1, 6, 5), latent_dim=3, hidden=hidden, beta=0.8)
    step = model.fused_step()
    assert step is not None
    for seed in range(3):
        x = _images(seed=seed)
        _assert_close(_plain(model, x, beta=beta, seed=seed), _fused(model, step, x, beta=beta, seed=seed))


def test_denoising_target_and_intensity_images():
    """A corrupted input with the clean image as target, and [0, 1] intensities (not 0/1)."""
    torch.manual_seed(0)
    model = VAE((1, 6, 5), latent_dim=2, hidden=(8,))
    step = model.fused_step()
    x, clean = _images(binary=False), _images(seed=1, binary=False)
    _assert_close(_plain(model, x, target=clean), _fused(model, step, x, target=clean))


def test_gradients_go_to_the_grad_of_each_parameter_and_hooks_see_them():
    torch.manual_seed(0)
    model = VAE((1, 6, 5), latent_dim=2, hidden=(8,))
    seen = []
    model.fused_step()(_images(), on_grad=seen.append)
    assert {id(p) for p in seen} == {id(p) for p in model.parameters()} and len(seen) == 8
    norm = training._GradNorm(list(model.parameters()), early=True)
    model.fused_step()(_images(), on_grad=norm.record)
    expected = torch.nn.utils.get_total_norm([p.grad for p in model.parameters()])
    assert norm().item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize("settings", [
    dict(objective="iwae"), dict(net="conv"), dict(prior="mog"), dict(prior="vamp"),
    dict(likelihood="gaussian"), dict(num_classes=3), dict(activation="gated"),
    dict(activation="tanh"), dict(kl="mc"), dict(latent_family="bernoulli"), dict(posterior="iaf")])
def test_other_models_train_through_autograd(settings):
    shape = (1, 28, 28) if settings.get("net") == "conv" else (1, 6, 5)
    model = VAE(shape, latent_dim=2, hidden=(8,) if "net" not in settings else (4, 8), **settings)
    assert model.fused_step() is None


def test_a_subclass_with_its_own_objective_trains_through_autograd():
    class MeanVAE(VAE):
        def objective(self, x, y=None, target=None, beta=None):
            return super().objective(x, y, target, beta)

    assert MeanVAE((1, 6, 5), latent_dim=2, hidden=(8,)).fused_step() is None
    assert VAE((1, 6, 5), latent_dim=2, hidden=(8,)).fused_step() is not None


def test_a_patched_objective_trains_through_autograd(monkeypatch):
    real = VAE.objective
    monkeypatch.setattr(VAE, "objective", lambda self, *a, **kw: real(self, *a, **kw))
    assert VAE((1, 6, 5), latent_dim=2, hidden=(8,)).fused_step() is None


def test_hooks_keep_the_autograd_path():
    """Forward hooks on a module, or gradient hooks on a parameter: the fused step would
    bypass them, so there is none."""
    model = VAE((1, 6, 5), latent_dim=2, hidden=(8,))
    handle = model.decoder.register_forward_hook(lambda m, i, o: None)
    assert model.fused_step() is None
    handle.remove()
    handle = model.encoder.net[0].weight.register_post_accumulate_grad_hook(lambda p: None)
    assert model.fused_step() is None
    handle.remove()
    assert model.fused_step() is not None


def test_aevb_fused_0_turns_it_off(monkeypatch):
    monkeypatch.setenv("AEVB_FUSED", "0")
    assert VAE((1, 6, 5), latent_dim=2, hidden=(8,)).fused_step() is None


def _train(monkeypatch, fused: str, **kw):
    monkeypatch.setenv("AEVB_FUSED", fused)
    ds = data.load("digits", binarize="dynamic")
    torch.manual_seed(0)
    model = VAE.mlp(ds.shape, latent_dim=4, hidden=(32, 16))
    run = train(model, ds, epochs=2, batch_size=64, progress=False, tensorboard=False, **kw)
    return run, [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("kw", [{}, {"clip_grad": 5.0, "warmup_epochs": 1.0}], ids=["plain", "clip+warmup"])
def test_a_training_run_equals_the_autograd_run(monkeypatch, kw):
    """Two epochs of aevb.train with and without the fused step (same seed, same random
    draws): the same metrics and weights up to float rounding. With clipping and a KL
    warm-up, the gradient norm and the per-step beta reach the fused step too."""
    fused, wf = _train(monkeypatch, "1", **kw)
    plain, wp = _train(monkeypatch, "0", **kw)
    for key in ("train_elbo", "train_kl", "test_elbo"):
        assert fused.last[key] == pytest.approx(plain.last[key], rel=1e-4, abs=1e-3), key
    for a, b in zip(wf, wp):
        assert torch.allclose(a, b, atol=1e-4)


def _loop(model, ds, precision):
    """The training loop `aevb.train` would run (batch 50, one epoch), before its first step."""
    o = training.Options(1, 50, 1e-3, "adam", 0, None, 0.0, 0.0, 1000, 100, precision, False, None,
                         "constant", 0, False, None)
    return training.start(model, ds, o, "cpu", out=None, resume=False, overwrite=False, config=None,
                          progress=False, tensorboard=False)


def test_the_loop_uses_it_only_where_it_applies(monkeypatch):
    """fp32 outside torch.compile: the model's fused step; bf16 autocast: autograd."""
    ds = data.load("digits", binarize="static")
    model = VAE.mlp(ds.shape, latent_dim=2, hidden=(8,))
    used = []
    for precision in ("fp32", "bf16"):
        used.append(_loop(model, ds, precision).fused is not None)
    assert used == [True, False]


def test_a_non_finite_step_is_skipped():
    """NaN weights: the fused step's loss is NaN, and the loop skips the step as it does
    for the autograd path (the weights stay as they were)."""
    ds = data.load("digits", binarize="static")
    torch.manual_seed(0)
    model = VAE.mlp(ds.shape, latent_dim=2, hidden=(8,))
    with torch.no_grad():
        model.decoder.net[0].weight[0, 0] = math.nan
    before = [p.detach().clone() for p in model.parameters()]
    loop = _loop(model, ds, "fp32")
    assert loop.fused is not None
    with training._GradNorm(loop.parameters, True) as loop.grad_norm:
        x, y = next(ds.batches(50, torch.Generator().manual_seed(0)))
        assert training.step(loop, x, y) is False
    assert loop.state["skipped"] == 1
    for p, q in zip(before, model.parameters()):
        assert torch.equal(p, q) or torch.isnan(p).any()
