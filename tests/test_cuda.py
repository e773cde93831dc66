"""The CUDA path (run by benchmarks/gpu.sh on a machine with a GPU; each test skips, saying
why, where there is none)."""
from __future__ import annotations

import pytest
import torch

from aevb import VAE, data, train
from aevb.evaluation import log_likelihood

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")]


def _digits():
    return data.load("digits", binarize="static")


def test_a_cuda_training_step_matches_the_cpu():
    """One epoch on the GPU and on the CPU from the same weights and seed. The GPU draws its
    reparameterization noise from its own generator, so the runs differ by Monte Carlo
    noise, not by rounding: the test ELBOs agree within 5% and the GPU's weights are finite."""
    ds = _digits()
    torch.backends.cuda.matmul.allow_tf32 = False
    runs = []
    for device in ("cpu", "cuda"):
        torch.manual_seed(0)
        model = VAE.mlp(ds.shape, latent_dim=4, hidden=(32,))
        run = train(model, ds, epochs=1, batch_size=50, device=device, progress=False, tensorboard=False)
        runs.append((run.last, [p.detach().cpu() for p in run.model.parameters()]))
    (a, wa), (b, wb) = runs
    assert run.model.encoder.net[0].weight.device.type == "cuda"
    assert abs(a["test_elbo"] - b["test_elbo"]) < 0.05 * abs(a["test_elbo"])
    for p, q in zip(wa, wb):
        assert torch.isfinite(q).all() and p.shape == q.shape


def test_log_likelihood_on_cuda_matches_the_cpu():
    ds = _digits()
    torch.manual_seed(0)
    model = VAE.mlp(ds.shape, latent_dim=4, hidden=(32,)).eval()
    x = ds.test.x[:20]
    cpu = log_likelihood(model, x, samples=2000, seed=0)
    gpu = log_likelihood(model.cuda(), x.cuda(), samples=2000, seed=0).cpu()
    assert torch.allclose(cpu, gpu, atol=0.05), (cpu - gpu).abs().max()


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_training_on_cuda(precision):
    ds = _digits()
    torch.manual_seed(0)
    model = VAE.mlp(ds.shape, latent_dim=4, hidden=(32,))
    run = train(model, ds, epochs=2, batch_size=50, device="cuda", precision=precision,
                progress=False, tensorboard=False)
    assert torch.isfinite(torch.tensor(run.last["test_elbo"]))
    assert run.history[-1]["train_elbo"] > run.history[0]["train_elbo"] - 1.0


def _fit(model, ds, epochs=2, **kw):
    """aevb.train's loop on the GPU (batches of 50, the digits' last one smaller), returned
    for inspection after `epochs`."""
    from aevb import training
    o = training.Options(epochs=epochs, batch_size=50, **kw)
    loop = training.start(model, ds, o, "cuda", out=None, resume=False, overwrite=False, config=None,
                          progress=False, tensorboard=False)
    training.fit(loop, ds)
    return loop


def test_the_cuda_graph_equals_the_uncaptured_step(monkeypatch):
    """A deterministic model (the autoencoder, static binarization): the step replayed as a
    CUDA graph and the same step run uncaptured (AEVB_GRAPH=eager) give the same weights."""
    from aevb.models.autoencoder import Autoencoder
    ds = _digits()
    torch.backends.cuda.matmul.allow_tf32 = False
    weights = {}
    for how in ("1", "eager"):
        monkeypatch.setenv("AEVB_GRAPH", how)
        torch.manual_seed(0)
        model = Autoencoder(ds.shape, latent_dim=4, hidden=(32,))
        loop = _fit(model, ds)
        assert (loop.graphed.graph is not None) == (how == "1")
        weights[how] = [p.detach().cpu() for p in model.parameters()]
    for p, q in zip(weights["1"], weights["eager"]):
        assert torch.allclose(p, q, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kw", [{}, {"warmup_epochs": 1.0, "clip_grad": 5.0}], ids=["fused", "autograd"])
def test_a_graphed_vae_trains_as_the_eager_loop(monkeypatch, kw):
    """The VAE through the graph (its fused step; with a KL warm-up, autograd with beta as a
    device tensor) against AEVB_GRAPH=0: the random draws differ, so the test ELBOs agree
    within Monte Carlo noise."""
    ds = _digits()
    out = {}
    for how in ("1", "0"):
        monkeypatch.setenv("AEVB_GRAPH", how)
        torch.manual_seed(0)
        model = VAE.mlp(ds.shape, latent_dim=4, hidden=(32,))
        run = train(model, ds, epochs=3, batch_size=50, device="cuda", progress=False, tensorboard=False, **kw)
        out[how] = run.last
    assert out["1"]["skipped_steps"] == 0
    assert abs(out["1"]["test_elbo"] - out["0"]["test_elbo"]) < 0.03 * abs(out["0"]["test_elbo"])


def test_graph_replays_do_not_synchronize_with_the_host(monkeypatch):
    """After the warm-up and the capture, training steps run with CUDA's sync debug mode set
    to "error": no step reads a value back (the counters wait for `flush`)."""
    from aevb import training
    monkeypatch.setenv("AEVB_GRAPH", "1")
    ds = _digits()
    torch.manual_seed(0)
    model = VAE.mlp(ds.shape, latent_dim=4, hidden=(32,))
    o = training.Options(epochs=1, batch_size=50)
    loop = training.start(model, ds, o, "cuda", out=None, resume=False, overwrite=False, config=None,
                          progress=False, tensorboard=False)
    resident = training._resident(ds, loop.ctx.device)
    batches = [b for b in resident.batches(50, torch.Generator().manual_seed(0))][:20]
    assert batches[0][0].is_cuda
    with training._GradNorm(loop.parameters, True) as loop.grad_norm:
        loop.graphed = training._graphed_step(loop)
        loop.sums = training._Sums({}, loop.ctx.device)
        for x, y in batches[:6]:  # the eager first step, the warm-up, the capture
            training.step(loop, x, y)
        assert loop.graphed.graph is not None
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            for x, y in batches[6:]:
                training.step(loop, x, y)
        finally:
            torch.cuda.set_sync_debug_mode(0)
        got = loop.graphed.flush()
    assert got["n"] == 50 * 19 and got["skipped"] == 0  # the warm-up, the capture and 14 replays


def test_a_step_that_cannot_be_captured_falls_back_to_the_eager_step(monkeypatch):
    """A model that declares itself capturable but reads a value back in its step: the
    capture fails, a warning says so, and training finishes with the eager step."""

    class Reads(VAE):
        capturable = True

        def objective(self, x, y=None, target=None, beta=None):
            terms = super().objective(x, y, target, beta)
            terms["loss"] = terms["loss"] + 0.0 * terms["loss"].item()  # a host synchronization
            return terms

    monkeypatch.setenv("AEVB_GRAPH", "1")
    ds = _digits()
    torch.manual_seed(0)
    model = Reads(ds.shape, latent_dim=4, hidden=(32,))
    with pytest.warns(UserWarning, match="could not be captured"):
        loop = _fit(model, ds)
    assert loop.graphed.failed and loop.state["epoch"] == 2
    assert torch.isfinite(torch.tensor(loop.run.last["test_elbo"]))
