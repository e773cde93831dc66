"""Quality measurements of the model variants on the offline MNIST split (fit on the 10,000
official test images, evaluate on 5,000 official training images; ../shared/data/README.md).

    python benchmarks/models.py binary   [--epochs 30]   # 64-bit binary VAE: no / mean / learned baseline, gumbel
    python benchmarks/models.py variance [--epochs 5]    # encoder-gradient variance by baseline
    python benchmarks/models.py conv     [--epochs 10]   # conv VAE vs MLP VAE 784-400-400-20
    python benchmarks/models.py iwae     [--epochs 10]   # ELBO vs IWAE (K=5) training
    python benchmarks/models.py auc      [--epochs 10]   # anomaly ROC-AUC: held-out digit, inverted images
    python benchmarks/models.py impute   [--epochs 10]   # imputation error on missing pixels
    python benchmarks/models.py gmm      [--epochs 10]   # AE + GMM and VAE + GMM sampling

Every experiment prints one JSON line per measurement (nats per example; test split).
Short runs: numbers compare variants trained alike, not papers. Measured with --threads 1
(torch 2.13 CPU, shared 2-core machine); log p(x): 100 importance samples, 1000 test images:

  binary (64 bits, 784-400-400, Adam 1e-3, 20 epochs)   test ELBO    log p(x)
    REINFORCE, no baseline                               -193.6      -180.2   (noisy curve)
    REINFORCE, moving average                            -166.2      -153.2
    REINFORCE, moving average + learned MLP b(x)         -156.9      -145.5
    straight-through Gumbel (T = 0.5)                    -138.6      -126.8
  variance (trace of the encoder-gradient covariance, batch of 100, 100 draws; --threads 2)
    epoch 1:  none 5.18e5   mean 4.01e4   learned 4.34e4
    epoch 5:  none 7.30e5   mean 3.51e4   learned 2.01e4
  conv (latent 20, 10 epochs): MLP 784-400-400 -121.4 (log p(x) -116.5);
                               conv [32, 64]   -107.6 (log p(x) -101.8)
  iwae (10 epochs): ELBO training: ELBO -121.4, log p(x) -116.5; IWAE K=5: -124.8, -114.3
  auc (train on the other 9 digits; -log p(x) / likelihood ratio to a pixel background):
    held out 9: VAE 0.53 / 0.72   1: 0.13 / 0.59   0: 0.91 / 0.36   7: 0.63 / 0.64
    MNIST vs inverted MNIST: 1.00; vs Bernoulli noise: 1.00
  impute (top-half, 100 iterations, MSE on missing binarized pixels; mean image 0.080):
    pseudo-Gibbs 0.075, Metropolis-within-Gibbs 0.081 (acceptance 6%)
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from aevb import VAE, data, train
from aevb.evaluation import log_likelihood
from aevb.models import Autoencoder
from aevb.objectives import score_function_elbo

HERE = Path(__file__).resolve().parent


def load(args, **kw):
    return data.load("mnist-offline", binarize="dynamic", data_dir=args.data_dir, **kw)


def fit(model, ds, args, epochs=None):
    t = time.perf_counter()
    run = train(model, ds, epochs=epochs or args.epochs, batch_size=100, lr=1e-3, seed=args.seed,
                progress=False, tensorboard=False)
    return run, time.perf_counter() - t


def report(**kw):
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in kw.items()}), flush=True)


def test_ll(model, ds, samples, n=None):
    """Mean importance-sampled log p(x) over n test images spread evenly over the split
    (the offline test split is ordered by class)."""
    x = ds.test.x if n is None else ds.test.x[::max(1, len(ds.test) // n)][:n]
    return float(log_likelihood(model, x, samples=samples).mean())


# ----------------------------------------------------------------------------- binary latent
def binary_model(baseline="learned", estimator="reinforce"):
    return VAE((1, 28, 28), 64, hidden=(400, 400), latent_family="bernoulli", baseline=baseline,
               estimator=estimator)


def exp_binary(args):
    ds = load(args)
    for baseline, estimator in (("none", "reinforce"), ("mean", "reinforce"), ("learned", "reinforce"),
                                ("none", "gumbel")):
        torch.manual_seed(args.seed)
        model = binary_model(baseline, estimator)
        run, sec = fit(model, ds, args)
        curve = [round(r["test_elbo"], 2) for r in run.history]
        report(exp="binary", estimator=estimator, baseline=baseline, epochs=args.epochs,
               test_elbo=run.last["test_elbo"], test_kl=run.last["test_kl"],
               test_log_px=test_ll(model, ds, args.samples, 1000), seconds=sec, curve=curve)


def encoder_grad_variance(model, x, kind, repeats=100):
    """Sum over encoder parameters of the variance of the mini-batch score-function gradient
    (x fixed, z resampled `repeats` times), and the squared norm of its mean (unbiased)."""
    params = list(model.encoder.parameters())
    grads = []
    for _ in range(repeats):
        b = 0.0
        if kind != "none":
            c, r = model.baseline(x)
            b = c if (kind == "mean" or r is None) else c + r
        terms, surrogate, _ = score_function_elbo(model, x, baseline=b)
        g = torch.autograd.grad(-surrogate.mean(), params)
        grads.append(torch.cat([t.flatten() for t in g]))
    g = torch.stack(grads)
    var = g.var(0).sum()
    return float(var), float(g.mean(0).pow(2).sum() - var / len(g))  # unbiased |E g|^2


def exp_variance(args):
    """Train a 64-bit binary VAE with the learned baseline; at epochs 0, 1 and args.epochs
    measure the encoder-gradient variance with no baseline, the moving average, and the
    moving average + learned MLP, on the same model and the same 100 test images."""
    ds = load(args)
    torch.manual_seed(args.seed)
    model = binary_model("learned")
    x = ds.test.x[:100]
    done = 0
    for epoch in sorted({0, 1, args.epochs}):
        if epoch > done:
            fit(model, ds, args, epochs=epoch - done)  # continues training the same model
            done = epoch
        else:  # untrained: let the moving average reach the current signal first
            for i in range(30):  # (the baseline moves only in training mode with gradients on)
                model.objective(torch.bernoulli(ds.train.x[i * 100:(i + 1) * 100]))
        model.eval()
        for kind in ("none", "mean", "learned"):
            torch.manual_seed(1)
            var, sq = encoder_grad_variance(model, x, kind, args.repeats)
            report(exp="variance", epoch=epoch, baseline=kind, grad_var=var, grad_mean_sq=sq,
                   snr=sq / var if var else None)
        model.train()


# ----------------------------------------------------------------------------- conv vs mlp
def exp_conv(args):
    ds = load(args)
    for net, hidden in (("mlp", (400, 400)), ("conv", (32, 64))):
        torch.manual_seed(args.seed)
        model = VAE((1, 28, 28), 20, net=net, hidden=hidden)
        run, sec = fit(model, ds, args)
        report(exp="conv", net=net, hidden=list(hidden), params=sum(p.numel() for p in model.parameters()),
               epochs=args.epochs, test_elbo=run.last["test_elbo"],
               test_log_px=test_ll(model, ds, args.samples, 1000), seconds=sec,
               curve=[round(r["test_elbo"], 2) for r in run.history])


# ----------------------------------------------------------------------------- iwae
def exp_iwae(args):
    ds = load(args)
    for objective in ("elbo", "iwae"):
        torch.manual_seed(args.seed)
        model = VAE((1, 28, 28), 20, hidden=(400, 400), objective=objective, iwae_k=5)
        run, sec = fit(model, ds, args)
        report(exp="iwae", objective=objective, k=5, epochs=args.epochs, test_elbo=run.last["test_elbo"],
               test_log_px=test_ll(model, ds, args.samples, 1000), seconds=sec)


# ----------------------------------------------------------------------------- anomaly AUC
def exp_auc(args):
    from aevb import anomaly
    full = load(args)
    for digit in args.digits:
        ds = load(args)
        ds.train = data.keep_classes(ds.train, [digit], exclude=True)
        for kind in ("vae", "autoencoder"):
            torch.manual_seed(args.seed)
            model = (VAE((1, 28, 28), 20, hidden=(400, 400)) if kind == "vae"
                     else Autoencoder((1, 28, 28), 20, hidden=(400, 400)))
            fit(model, ds, args)
            scores = anomaly.anomaly_scores(model, full.test.x, samples=args.samples)
            res = anomaly.held_out_classes_auc(scores, full.test.y, [digit])
            background = anomaly.PixelBackground.fit(torch.bernoulli(ds.train.x))
            ratio = anomaly.likelihood_ratio_scores(scores, full.test.x, background)
            res["auc_ratio"] = anomaly.held_out_classes_auc(ratio, full.test.y, [digit])["auc"]
            report(exp="auc", held_out=digit, model=kind, epochs=args.epochs, samples=args.samples, **res)
    # one dataset against another: MNIST test digits vs the same digits inverted (1 - x)
    torch.manual_seed(args.seed)
    model = VAE((1, 28, 28), 20, hidden=(400, 400))
    fit(model, full, args)
    normal = anomaly.anomaly_scores(model, full.test.x[:1000], samples=args.samples)
    inverted = anomaly.anomaly_scores(model, 1 - full.test.x[1000:2000], samples=args.samples)
    noise = anomaly.anomaly_scores(model, torch.bernoulli(torch.full((1000, 1, 28, 28), full.test.x.mean().item())),
                                samples=args.samples)
    report(exp="auc", normal="mnist", anomalous="inverted mnist", auc=anomaly.roc_auc(normal, inverted))
    report(exp="auc", normal="mnist", anomalous="bernoulli noise (mnist mean)", auc=anomaly.roc_auc(normal, noise))


# ----------------------------------------------------------------------------- imputation
def exp_impute(args):
    from aevb import imputation
    ds = load(args)
    torch.manual_seed(args.seed)
    model = VAE((1, 28, 28), 20, hidden=(400, 400))
    fit(model, ds, args)
    x = ds.test.x[::25][:200]  # 200 images, every class
    mean_image = ds.train.x.mean(0, keepdim=True)
    for spec in ("top-half", "left-half", "square:14", "random:0.5"):
        mask = imputation.make_mask(spec, x.shape[1:], len(x), torch.Generator().manual_seed(0))
        naive = imputation.missing_error(torch.where(mask, mean_image.expand_as(x), x), x, mask).mean()
        for method in ("gibbs", "mh"):
            res = imputation.impute(model, x, mask, iterations=args.iterations, method=method)
            report(exp="impute", mask=spec, method=method, iterations=args.iterations,
                   mse_missing=float(imputation.missing_error(res.filled, x, mask).mean()),
                   mse_missing_mean_image=float(naive), acceptance=res.acceptance)
    if args.figures:
        mask = imputation.make_mask("top-half", x.shape[1:], 8)
        res = imputation.impute(model, x[:8], mask, iterations=args.iterations)
        imputation.imputation_figure(Path(args.figures) / "impute_top_half.png", x[:8], mask, res.filled)


# ----------------------------------------------------------------------------- GMM sampler
def exp_gmm(args):
    """How well a 30-component mixture fitted to the training codes describes the *test*
    codes, against the density a model samples from without it (the VAE's prior N(0, I);
    the autoencoder's single Gaussian of its codes): mean log-density of the test codes,
    nats per code. Figures of the decoded mixture samples with --figures."""
    from aevb import plots
    from aevb.samplers import GMMSampler, codes
    ds = load(args)
    for kind, dim in (("autoencoder", 2), ("autoencoder", 20), ("vae", 2), ("vae", 20)):
        torch.manual_seed(args.seed)
        model = VAE((1, 28, 28), dim, hidden=(400, 400)) if kind == "vae" else \
            Autoencoder((1, 28, 28), dim, hidden=(400, 400))
        fit(model, ds, args)
        g = GMMSampler.fit(model, ds.train, n_components=30, seed=args.seed)
        z = codes(model, ds.test)
        plain = model.prior() if kind == "vae" else model.code_distribution()
        report(exp="gmm", model=kind, latent_dim=dim, components=30,
               test_code_log_density_gmm=float(g.log_density(z).mean()),
               test_code_log_density_plain=float(plain.log_prob(z).mean()))
        if args.figures:
            torch.manual_seed(0)
            plots.save_grid(Path(args.figures) / f"gmm_{kind}_{dim}.png", g.sample(64))
            torch.manual_seed(0)
            plots.save_grid(Path(args.figures) / f"plain_{kind}_{dim}.png", model.sample(64))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("experiment", choices=["binary", "variance", "conv", "iwae", "auc", "impute", "gmm"])
    p.add_argument("--data-dir", default=str(HERE.parent.parent / "shared" / "data" / "mnist"))
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--samples", type=int, default=100, help="importance samples for log p(x)")
    p.add_argument("--repeats", type=int, default=100, help="variance: gradient estimates per setting")
    p.add_argument("--iterations", type=int, default=100, help="impute: sampler iterations")
    p.add_argument("--digits", type=lambda s: [int(d) for d in s.split(",")], default=[9],
                   help="auc: the digits held out, one model each (e.g. 0,1,9)")
    p.add_argument("--figures", default=None, help="a folder for figures")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    globals()[f"exp_{args.experiment}"](args)


if __name__ == "__main__":
    main()
