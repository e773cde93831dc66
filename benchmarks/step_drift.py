"""How the training step's time drifts over a long run (not part of the tests).

    python benchmarks/step_drift.py --seconds 45                    # aevb's defaults
    AEVB_NO_TUNING=1 python benchmarks/step_drift.py --threads 2    # no denormal flushing

Trains the MLP VAE (784-400-400-20, batch 100) on the offline MNIST split of ../shared with
`aevb.train` for `--seconds` of wall clock, evaluating 500 test images per epoch (as
benchmarks/quality.py does), and prints the milliseconds per step of every `--every`-th
epoch (from the history's "seconds"). A fresh model's step (what floor.py times) and the
step after some epochs can differ: without flushing denormals, Adam's update slowed ~9x
after ~8 epochs on an Intel Xeon (benchmarks/README.md, "Denormals").
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch

from aevb import VAE, data, train

DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=45.0)
    p.add_argument("--threads", default=None, help="a fixed thread count (default: aevb's auto)")
    p.add_argument("--every", type=int, default=3, help="print every N-th epoch")
    p.add_argument("--data-dir", default=str(DATA_DIR))
    a = p.parse_args(argv)
    ds = data.load("mnist-offline", binarize="dynamic", data_dir=a.data_dir, progress=False)
    ds = dataclasses.replace(ds, test=data.subset(ds.test, 500))
    torch.manual_seed(0)
    model = VAE((1, 28, 28), 20, hidden=(400, 400), likelihood="bernoulli")
    run = train(model, ds, epochs=10**6, batch_size=100, progress=False, tensorboard=False,
                time_limit=a.seconds, threads=a.threads)
    done = [r for r in run.history if "steps" not in r]
    steps = -(-len(ds.train) // 100)
    ms = [1000 * (cur["seconds"] - prev["seconds"]) / steps for prev, cur in zip(done, done[1:])]
    print(json.dumps({"epochs": len(done), "ms_per_step": [round(v, 2) for v in ms[::a.every]]}))


if __name__ == "__main__":
    main()
