"""Colour images (issue 16): a VAE on the CIFAR-10 JPEGs of ../shared/data/cifar10-jpg (fit
on train/, the 10,000 training images; evaluate on test/, the 10,000 test images) for a
budget of wall-clock minutes, then bits/dim of the test images by importance sampling.

    python benchmarks/colour_cifar.py --minutes 5                       # a short design run
    python benchmarks/colour_cifar.py --minutes 5 --likelihood gaussian --sigma learned
    python benchmarks/colour_cifar.py --minutes 30 --test-n 10000 --samples 100   # the target
    python benchmarks/colour_cifar.py --minutes 30 --epochs 40 --lr-schedule cosine ...

Prints one JSON line per epoch (seconds since training began, train and test bits/dim of the
ELBO, the latter on `--curve-n` test images) and at the end the importance-sampled bits/dim of `--test-n` test images
with `--samples` samples each; `--out DIR` saves the model and samples/reconstructions PNGs.
Bits/dim: -log p(x) / (3072 log 2) for the discretized logistic (a distribution over the
256 levels), + 8 for a Gaussian density on [0, 1] (valid for uniformly dequantized data).
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from aevb import VAE, data, train
from aevb.evaluation import importance_sampling, subset

CIFAR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpg"


def curve(start: float):
    """An epoch callback: a JSON line with the time and bits/dim."""
    def cb(run, record):
        line = {"epoch": record["epoch"], "seconds": round(time.perf_counter() - start, 1),
                **{k: round(record[k], 4) for k in ("train_bpd", "test_bpd", "test_kl") if k in record}}
        print(json.dumps(line), flush=True)
    return cb


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=5.0)
    p.add_argument("--likelihood", default="logistic")
    p.add_argument("--sigma", default="learned")
    p.add_argument("--net", default="resconv")
    p.add_argument("--hidden", default="32,64,128")
    p.add_argument("--latent", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--lr-schedule", default="constant", choices=("constant", "cosine"))
    p.add_argument("--epochs", type=int, default=None,
                   help="epochs to train (and for the cosine schedule to span); default: until --minutes")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--curve-n", type=int, default=1000, help="test images for the per-epoch curve")
    p.add_argument("--test-n", type=int, default=1000, help="test images for the final bits/dim")
    p.add_argument("--samples", type=int, default=100, help="importance samples per test image")
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    if a.lr_schedule == "cosine" and a.epochs is None:
        p.error("--lr-schedule cosine decays over --epochs: give --epochs (e.g. the number that fits in --minutes)")
    out = Path(a.out) if a.out else None
    if out and (out.is_symlink() or out.exists() and (not out.is_dir() or any(out.iterdir()))):
        p.error(f"--out {a.out} is not a new or empty folder: give one (nothing there is replaced)")
    torch.manual_seed(0)
    ds = data.load(f"folder:{CIFAR}", image_size=32, progress=False)
    model = VAE((3, 32, 32), a.latent, net=a.net, hidden=[int(h) for h in a.hidden.split(",")],
                likelihood=a.likelihood, sigma=a.sigma if a.sigma == "learned" else float(a.sigma))
    offset = model.likelihood.bpd_offset
    start = time.perf_counter()
    small = data.Dataset(ds.name, ds.train, subset(ds.test, a.curve_n), "none", ds.num_classes, ds.info)
    # test_bpd per epoch: bits/dim of the ELBO on --curve-n test images; training stops after
    # the step that crosses the budget (start-up and the per-epoch curve count in it)
    run = train(model, small, epochs=a.epochs or 10_000, batch_size=a.batch_size, lr=a.lr,
          lr_schedule=a.lr_schedule, progress=False,
          tensorboard=False, callbacks=[curve(start)], out=None, time_limit=a.minutes * 60)
    trained = time.perf_counter() - start
    model.eval()
    test = subset(ds.test, a.test_n)
    lp = importance_sampling(model, test.x, None, a.samples)["log_px"]
    bpd = (-lp / (3072 * math.log(2)) + offset)
    print(json.dumps({"final": True, "train_seconds": round(trained, 1), "test_n": len(test),
                      "samples": a.samples, "bpd_is": round(bpd.mean().item(), 4),
                      "last_record": {k: run.last.get(k) for k in ("epoch", "steps", "test_bpd")},
                      "bpd_is_stderr": round(bpd.std().item() / math.sqrt(len(bpd)), 4),
                      "config": vars(a)}), flush=True)
    if a.out:
        from aevb import plots
        out.mkdir(parents=True, exist_ok=True)
        model.save(out)  # model.safetensors and config.json
        plots.samples(model, out / "samples.png")
        plots.reconstructions(model, ds.test, out / "reconstructions.png")


if __name__ == "__main__":
    main()
