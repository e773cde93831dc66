"""The training step without host synchronization (aevb.graphed), run uncaptured on the CPU
(AEVB_GRAPH=eager), against the plain computation it replaces: the eager loop of
aevb.training (AEVB_GRAPH=0). Same weights, the same epoch means, the same skipped steps and
divergence guard. The CUDA graph itself is checked in tests/test_cuda.py (on a GPU)."""
import math
import warnings

import pytest
import torch

from aevb import VAE, data, graphed, train
from aevb.checkpoint import TrainingError


class Flaky(VAE):
    """A VAE whose training loss is NaN at the steps (counted from 0) in `bad`."""

    def __init__(self, *args, bad=(), **kw):
        super().__init__(*args, **kw)
        self.bad, self.calls = set(bad), 0

    def objective(self, x, y=None, target=None, beta=None):
        terms = super().objective(x, y, target, beta)
        if self.training and torch.is_grad_enabled():
            if self.calls in self.bad:
                terms["loss"] = terms["loss"] * math.nan
            self.calls += 1
        return terms


def _train(monkeypatch, how: str, model_kw=None, bad=None, **kw):
    monkeypatch.setenv("AEVB_GRAPH", how)
    ds = data.load("digits", binarize="dynamic")
    torch.manual_seed(0)
    settings = {"latent_dim": 4, "hidden": (32, 16), **(model_kw or {})}
    model = VAE(ds.shape, **settings) if bad is None else Flaky(ds.shape, bad=bad, **settings)
    run = train(model, ds, epochs=2, batch_size=64, progress=False, tensorboard=False, **kw)
    return run, [p.detach().clone() for p in model.parameters()]


def _assert_same_run(a, b, keys=("train_elbo", "train_kl", "test_elbo")):
    (ra, wa), (rb, wb) = a, b
    for key in keys:
        assert ra.last[key] == pytest.approx(rb.last[key], rel=1e-5, abs=1e-4), key
    for p, q in zip(wa, wb):
        assert torch.allclose(p, q, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("model_kw, kw", [
    ({}, {}),
    ({}, {"clip_grad": 5.0, "warmup_epochs": 1.0, "lr_schedule": "cosine"}),
    ({"objective": "iwae", "iwae_k": 3}, {"noise": 0.1}),
    ({}, {"optimizer": "adamw"}),
], ids=["fused step", "clip, warm-up, cosine lr", "iwae, denoising", "adamw"])
def test_a_run_equals_the_eager_loop(monkeypatch, model_kw, kw):
    """Two epochs of 1,437 digits in batches of 64 (the last, smaller batch of each epoch
    takes the eager step): the same weights and epoch means. The fused step, the autograd
    step with a per-step KL weight, clipping and a cosine learning rate as device tensors,
    the IWAE objective with input noise, and AdamW."""
    _assert_same_run(_train(monkeypatch, "eager", model_kw, **kw), _train(monkeypatch, "0", model_kw, **kw))


def test_non_finite_steps_are_skipped_alike(monkeypatch):
    """Three NaN losses: skipped on the device (the fused Adam kernel's found_inf), counted at
    the end of the epoch, left out of its means; the weights equal the eager loop's."""
    bad = {3, 4, 30}
    a = _train(monkeypatch, "eager", bad=bad)
    b = _train(monkeypatch, "0", bad=bad)
    assert a[0].last["skipped_steps"] == b[0].last["skipped_steps"] == 3
    _assert_same_run(a, b)


def test_ten_skips_in_a_row_halve_the_lr_and_too_many_stop(monkeypatch):
    """The divergence guard acts on the counters when the host reads them (the end of the
    epoch here): 12 NaN steps in a row halve the learning rate once, as in the eager loop;
    more than max_skips stop training with the same error."""
    for how in ("eager", "0"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            run, _ = _train(monkeypatch, how, bad=set(range(2, 14)))
        assert run.last["skipped_steps"] == 12
        assert any("learning rate halved" in str(w.message) for w in caught), how
        with pytest.raises(TrainingError, match="diverged"):
            _train(monkeypatch, how, bad=set(range(5, 100)), max_skips=5)


def test_mode_follows_the_device_and_aevb_graph(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.delenv("AEVB_GRAPH", raising=False)  # opt-in until it has run on a GPU
    assert (graphed.mode(cpu), graphed.mode(cuda)) == (None, None)
    monkeypatch.setenv("AEVB_GRAPH", "1")
    assert (graphed.mode(cpu), graphed.mode(cuda)) == (None, "graph")
    monkeypatch.setenv("AEVB_GRAPH", "0")
    assert (graphed.mode(cpu), graphed.mode(cuda)) == (None, None)
    monkeypatch.setenv("AEVB_GRAPH", "eager")
    assert (graphed.mode(cpu), graphed.mode(cuda)) == ("eager", "eager")


def test_flush_reads_and_restarts_the_counters(monkeypatch):
    """The sums and counts of the steps since the last read; the run of skips goes on."""
    monkeypatch.setenv("AEVB_GRAPH", "eager")
    ds = data.load("digits", binarize="static")
    torch.manual_seed(0)
    model = Flaky(ds.shape, latent_dim=2, hidden=(8,), bad={1, 2})
    from aevb import training
    o = training.Options(1, 50, 1e-3, "adam", 0, None, 0.0, 0.0, 1000, 100, "fp32", False, None,
                         "constant", 0, False, None)
    loop = training.start(model, ds, o, "cpu", out=None, resume=False, overwrite=False, config=None,
                          progress=False, tensorboard=False)
    with training._GradNorm(loop.parameters, True) as loop.grad_norm:
        step = loop.graphed = training._graphed_step(loop)
        loop.sums = training._Sums({}, loop.ctx.device)
        batches = ds.batches(50, torch.Generator().manual_seed(0))
        x, y = next(batches)
        assert step.flush() is None and not step.fits(x, y, None, None)  # no Adam state yet
        training.step(loop, x, y)  # the eager first step makes it
        for _ in range(2):
            x, y = next(batches)
            assert step.fits(x, y, None, None)
            step(x, y, None, None)
        got = step.flush()
        assert (got["n"], got["skipped"], got["consecutive"]) == (0, 2, 2)
        assert all(v == 0 for v in got["sums"].values())
        x, y = next(batches)
        step(x, y, None, None)
        got = step.flush()
        assert (got["n"], got["skipped"], got["consecutive"]) == (50, 0, 0)
        assert got["sums"]["elbo"] < 0 and set(got["sums"]) == {"elbo", "rec", "kl"}


def test_a_model_declares_whether_its_step_may_be_captured():
    """aevb's models declare `capturable`; a subclass that changes the step (Python state in
    it would not be replayed) and a model that does not declare it are not captured."""
    from aevb.models.autoencoder import Autoencoder
    from aevb.models.base import Model
    from aevb.models.hvae import HVAE

    class Renamed(VAE):  # the step unchanged
        pass

    class Custom(Model):
        pass

    shape = (1, 8, 8)
    assert VAE(shape, latent_dim=2, hidden=(8,)).graph_capturable()
    assert Renamed(shape, latent_dim=2, hidden=(8,)).graph_capturable()
    assert Autoencoder(shape, latent_dim=2, hidden=(8,)).graph_capturable()
    assert HVAE(shape, latent_dim=2, hidden=(8,), inner_hidden=(8,), inner_latent_dim=3).graph_capturable()
    assert not Flaky(shape, latent_dim=2, hidden=(8,)).graph_capturable()
    assert not Custom(shape, latent_dim=2).graph_capturable()
