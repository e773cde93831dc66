"""Run by tests/test_distributed.py under torchrun: trains a deterministic VAE (z = posterior
mean, so that no per-rank noise enters), with a weight average (`ema`), and writes a checkpoint
in OUT."""
import os
import sys

import torch
from torch.distributions import kl_divergence

from aevb import VAE, data, train
from aevb.models.base import register


EMA = 0.9


@register("mean-vae")
class MeanVAE(VAE):
    """A VAE whose decoder sees the posterior mean: the loss is a deterministic function of x."""

    def objective(self, x, y=None, target=None):
        q = self.encode(x)
        rec = self.decode(q.base_dist.loc).log_prob(x)
        kl = kl_divergence(q, self.prior())
        return {"loss": -(rec - kl).mean(), "elbo": rec - kl}


def run(out, epochs, limit=1280):
    ds = data.load("digits", binarize="static", limit=limit)
    torch.manual_seed(0)
    model = MeanVAE(ds.shape, latent_dim=3, hidden=[32])
    return train(model, ds, epochs=epochs, batch_size=64, lr=3e-3, out=out, progress=False,
                 tensorboard=False, device="cpu", ema=EMA)


if __name__ == "__main__":
    out, epochs = sys.argv[1], int(sys.argv[2])
    with open(f"{out}.pid{os.environ.get('RANK', '0')}", "w") as f:
        f.write(str(os.getpid()))
    run(out, epochs)
