"""Try a model on held-out training images, never the evaluation images: how the race's models
(benchmarks/quality.py) were chosen.

    python benchmarks/heldout.py '{"prior": "mog", "objective": "iwae", "iwae_k": 5}' --budget 150
    python benchmarks/heldout.py '{"prior": "mog", "activation": "gated"}' --budget 150
    python benchmarks/heldout.py '{"ema": 0.999}' --budget 150   # with weight averaging

Trains an aevb model (MLP 784-400-400-20 and the settings given as JSON config keys; Adam 1e-3,
batch 100) on the offline MNIST split's 10,000 fitting images less `--validation` held out
(`aevb.data.hold_out`, the same images quality.py holds out) for `--budget` seconds, keeping
the best epoch on them (`keep_best`); prints the validation curve, then log p(x) of the kept
model by importance sampling (K = `--k`) on the held-out images, with its standard error.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch

DATA_DIR = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "mnist"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("settings", nargs="?", default="{}", help="config keys as JSON (default: the plain VAE)")
    p.add_argument("--budget", type=float, default=150.0, help="training seconds (150)")
    p.add_argument("--validation", type=int, default=1000, help="held-out fitting images (1000)")
    p.add_argument("--k", type=int, default=1000, help="importance samples per image (1000)")
    p.add_argument("--components", type=int, default=50, help="prior_components (50, as quality.py)")
    p.add_argument("--data-dir", default=str(DATA_DIR))
    args = p.parse_args(argv)
    from aevb import data, train
    from aevb.config import make_config
    from aevb.evaluation import evaluate
    from aevb.runs import build_model
    settings = {"hidden": [400, 400], "latent_dim": 20, "prior_components": args.components,
                **json.loads(args.settings)}
    ds = data.load("mnist-offline", binarize="dynamic", data_dir=args.data_dir, progress=False)
    cfg = make_config(dataset="mnist-offline", data_dir=args.data_dir, binarize="dynamic",
                      likelihood="bernoulli", **settings)
    torch.manual_seed(0)
    model = build_model(cfg, ds)
    no_test = dataclasses.replace(ds, test=data.subset(ds.test, 100))  # the per-epoch test: a token 100
    run = train(model, no_test, epochs=10**6, batch_size=100, lr=1e-3, seed=0, progress=False,
                tensorboard=False, time_limit=args.budget, warmup_epochs=cfg.warmup_epochs,
                validation=args.validation, keep_best=True, ema=cfg.ema)
    for r in run.history[::max(1, len(run.history) // 12)] + run.history[-1:]:
        print(r["epoch"], f"{r['seconds']:.0f} s", {k: round(v, 2) for k, v in r.items() if k.startswith("val_")})
    val = data.hold_out(ds, args.validation)[1]
    res = evaluate(model, val, nll_samples=args.k, seed=0, binarized=True)
    print(json.dumps({"settings": settings, "epochs": run.last["epoch"], "best_epoch": run.last["best_epoch"],
                      "heldout_log_px": round(res["log_px"], 2), "stderr": round(res["log_px_stderr"], 2),
                      "heldout_elbo": round(res["elbo"], 2), "active_units": res["active_units"],
                      "k": args.k, "images": len(val)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
