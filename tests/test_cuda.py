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
