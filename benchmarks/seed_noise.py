"""How much of a same-model gap in quality.py is the training seed: aevb.train against a
plain PyTorch loop of the same VAE, over several seeds, with the race's data protocol (the
offline MNIST split, 1,000 fitting images held out with `aevb.data.hold_out`, dynamic
binarization, Adam at lr 1e-3, batch 100, MLP 784-400-400-20).

    python benchmarks/seed_noise.py --seeds 1-10 --epochs 20

Each seed trains both programs for `--epochs` epochs, one after the other, and scores their
ELBO on the held-out images (one sample per image, the same noise for both). The plain loop
is the textbook one: nn.Linear layers, two encoder heads, `binary_cross_entropy_with_logits`,
`torch.bernoulli` binarization, torch.optim.Adam. Reported: each seed's held-out ELBO of
both, the mean difference (plain - aevb) with its standard error over seeds, and the
spread of each program over seeds, which is what one race seed cannot see.
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


def held_out_elbo(elbo_fn, x: torch.Tensor) -> float:
    """The mean one-sample ELBO of `x`, the noise from seed 0 (the global RNG left as it was)."""
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(0)
        return elbo_fn(x).mean().item()


def run_aevb(ds, seed: int, epochs: int) -> float:
    from aevb import VAE, train
    from aevb.data import subset
    torch.manual_seed(seed)
    model = VAE(ds.shape, latent_dim=20, hidden=(400, 400))
    small = dataclasses.replace(ds, test=subset(ds.test, 100))
    run = train(model, small, epochs=epochs, batch_size=100, lr=1e-3, seed=seed, progress=False,
                tensorboard=False, validation=1000)
    return run.last["val_elbo"]


def run_plain(fit, val, seed: int, epochs: int) -> float:
    torch.manual_seed(seed)
    enc = nn.Sequential(nn.Linear(784, 400), nn.ReLU(), nn.Linear(400, 400), nn.ReLU())
    heads = nn.ModuleList([nn.Linear(400, 20), nn.Linear(400, 20)])
    dec = nn.Sequential(nn.Linear(20, 400), nn.ReLU(), nn.Linear(400, 400), nn.ReLU(), nn.Linear(400, 784))
    opt = torch.optim.Adam([*enc.parameters(), *heads.parameters(), *dec.parameters()], lr=1e-3)

    def elbo(x):
        h = enc(x)
        mu, lv = heads[0](h), heads[1](h)
        z = mu + torch.exp(0.5 * lv) * torch.randn_like(mu)
        rec = -F.binary_cross_entropy_with_logits(dec(z), x, reduction="none").sum(1)
        return rec + 0.5 * (1 + lv - mu ** 2 - lv.exp()).sum(1)

    x_all = fit.flatten(1)
    for _ in range(epochs):
        order = torch.randperm(len(x_all))
        for i in range(0, len(x_all), 100):
            loss = -elbo(torch.bernoulli(x_all[order[i:i + 100]])).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return held_out_elbo(elbo, val.flatten(1))


def seeds_of(text: str) -> list[int]:
    a, _, b = text.partition("-")
    return list(range(int(a), int(b) + 1)) if b else [int(s) for s in text.split(",")]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", default="1-10", help="a range (1-10) or a list (1,4,7)")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--data-dir", default=str(DATA_DIR))
    a = p.parse_args(argv)
    from aevb import data
    from aevb.data import hold_out
    if not Path(a.data_dir).is_dir():
        print(f"no MNIST at {a.data_dir}: put ../shared beside the checkout or pass --data-dir", file=sys.stderr)
        return 2
    ds = data.load("mnist-offline", binarize="dynamic", data_dir=a.data_dir, progress=False)
    fit, val = hold_out(ds, 1000)
    rows = []
    for seed in seeds_of(a.seeds):
        t = time.perf_counter()
        ours, plain = run_aevb(ds, seed, a.epochs), run_plain(fit.train.x, val.x, seed, a.epochs)
        rows.append((seed, ours, plain))
        print(f"seed {seed}: held-out ELBO after {a.epochs} epochs: aevb {ours:.2f}, plain loop {plain:.2f} "
              f"(plain - aevb {plain - ours:+.2f}; {time.perf_counter() - t:.0f} s)", flush=True)
    diffs = [p - o for _, o, p in rows]
    if len(rows) > 1:
        se = statistics.stdev(diffs) / len(diffs) ** 0.5
        print(f"plain - aevb: {statistics.fmean(diffs):+.2f} ± {se:.2f} nats (mean ± s.e. over {len(rows)} seeds); "
              f"spread over seeds (sd): aevb {statistics.stdev(o for _, o, _ in rows):.2f}, "
              f"plain loop {statistics.stdev(p for _, _, p in rows):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
