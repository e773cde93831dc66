"""The model zoo: seven generators trained alike on the offline MNIST split (fit on the
10,000 official test images, evaluate on 5,000 official training images;
../shared/data/README.md), then judged by the same numbers: test ELBO, importance-sampled
log p(x), Inception FID, domain FID, precision and recall in both feature spaces, the
domain classifier's view of the samples, reconstruction error, parameters and time.

    python benchmarks/model_zoo.py                           # quick: 3 epochs, Inception N 500
    python benchmarks/model_zoo.py --epochs 10 --fid-n 1000  # what results/model_zoo.md shows
    python benchmarks/model_zoo.py --no-inception            # without the Inception weights

Models (MLP nets 784-400-400, latent 20, Adam 1e-3, batch 100, dynamic binarization, the
same epochs for all): MLP VAE; conv VAE (channels 32, 64); beta-VAE (beta = 4); autoencoder
+ GMM sampler (30 full-covariance components fitted to its training codes; seed report 001);
VAE + GMM (the MLP VAE above, its samples drawn from a 30-component GMM on its posterior
means, "ex-post density estimation"); binary-latent VAE (64 Bernoulli latents,
straight-through Gumbel, T = 0.5); CVAE (conditioned on the label; samples cycle through the
classes). Samples are decoder means. Writes results/model_zoo.md (and prints JSON lines).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from aevb import VAE, data, train
from aevb.evaluation import elbo_terms, log_likelihood
from aevb.models import Autoencoder
from aevb.quality.samples import evaluate_samples
from aevb.samplers import GMMSampler

import result_files

HERE = Path(__file__).resolve().parent
SHAPE = (1, 28, 28)


def models():
    """(name, builder of the model, sampler kind) in table order; "gmm" samples through a GMM."""
    return [("MLP VAE", lambda: VAE(SHAPE, 20), "own"),
            ("conv VAE", lambda: VAE(SHAPE, 20, net="conv", hidden=(32, 64)), "own"),
            ("beta-VAE (beta=4)", lambda: VAE(SHAPE, 20, beta=4.0), "own"),
            ("AE + GMM", lambda: Autoencoder(SHAPE, 20), "gmm"),
            ("VAE + GMM", None, "gmm"),  # the MLP VAE, trained once
            ("binary VAE (64 bits)", lambda: VAE(SHAPE, 64, latent_family="bernoulli", estimator="gumbel"), "own"),
            ("CVAE", lambda: VAE(SHAPE, 20, num_classes=10), "own")]


def likelihood_numbers(model, ds, args) -> dict:
    """Test ELBO (all test images) and log p(x) (K importance samples, `args.nll_images` test
    images spread over the split); none for an autoencoder."""
    if not model.has_density:
        return {}
    out = {"test_elbo": elbo_terms(model, ds.test)["elbo"]}
    step = max(1, len(ds.test) // args.nll_images)
    x, y = ds.test.x[::step][:args.nll_images], ds.test.y[::step][:args.nll_images]
    out["log_px"] = float(log_likelihood(model, x, y if model.num_classes else None, samples=args.nll_k).mean())
    return out


def measure(name, model, sampler, ds, gray, args, train_s) -> dict:
    t = time.perf_counter()
    q = evaluate_samples(sampler, gray, inception_n=None if args.no_inception else args.fid_n,
                         domain_n=args.domain_n, model=model, seed=args.seed)
    row = {"model": name, "parameters": sum(p.numel() for p in model.parameters()), "train_s": train_s,
           **likelihood_numbers(model, ds, args), "recon_mse": q["recon_mse"],
           "quality_s": round(time.perf_counter() - t, 1)}
    for space, block in (("", q.get("inception")), ("domain_", q.get("domain"))):
        if block:
            row.update({f"{space}fid": block["fid"], f"{space}precision": block["precision"],
                        f"{space}recall": block["recall"], f"{space}n": block["n_samples"],
                        f"{space}n_real": block["n_real"]})
    d = q["domain"]
    row.update(mean_max_prob=d["samples_view"]["mean_max_prob"], class_entropy=d["samples_view"]["class_entropy"],
               classifier_accuracy=d["classifier"]["test_accuracy"],
               classifier=f"{d['classifier']['version']}, sha256 {d['classifier']['sha256']}")
    if "inception" in q:
        row["inception_how"] = f"{q['inception']['implementation']}, weights sha256 {q['inception']['weights']['sha256']}"
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
    return row


def run_zoo(args) -> list[dict]:
    ds = data.load("mnist-offline", binarize="dynamic", data_dir=args.data_dir)
    gray = data.load("mnist-offline", binarize="none", data_dir=args.data_dir)
    rows, trained = [], {}
    for name, build, kind in models():
        if build is None:
            model, train_s = trained["MLP VAE"]
        else:
            torch.manual_seed(args.seed)
            model = build()
            t = time.perf_counter()
            train(model, ds, epochs=args.epochs, batch_size=100, lr=1e-3, seed=args.seed, progress=False,
                  tensorboard=False)
            train_s = round(time.perf_counter() - t, 1)
            trained[name] = (model, train_s)
        sampler = GMMSampler.fit(model, gray.train, 30, seed=args.seed) if kind == "gmm" else model
        rows.append(measure(name, model, sampler, ds, gray, args, train_s))
    return rows


def _f(v, fmt):
    return "-" if v is None else fmt.format(v)


def write_markdown(rows, args, path: Path, seconds: float) -> None:
    head = ("| model | params | train s | test ELBO | log p(x) | FID | prec. | recall | domain FID | "
            "dom. prec. | dom. recall | max-prob | class entropy | recon MSE |")
    lines = [f"# Model zoo on the offline MNIST split ({args.epochs} epochs each)", "",
             f"Command: `python benchmarks/model_zoo.py --epochs {args.epochs} --fid-n {args.fid_n} "
             f"--domain-n {args.domain_n}` ({seconds / 60:.0f} min in all). Measured on a shared, busy "
             "2-core machine (other jobs running): times are only indicative.", "", head,
             "|" + " --- |" * (head.count("|") - 1)]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['parameters']:,} | {r['train_s']:.0f} | {_f(r.get('test_elbo'), '{:.2f}')} | "
            f"{_f(r.get('log_px'), '{:.2f}')} | {_f(r.get('fid'), '{:.1f}')} | {_f(r.get('precision'), '{:.3f}')} | "
            f"{_f(r.get('recall'), '{:.3f}')} | {r['domain_fid']:.1f} | {r['domain_precision']:.3f} | "
            f"{r['domain_recall']:.3f} | {r['mean_max_prob']:.3f} | {r['class_entropy']:.3f} | {r['recon_mse']:.4f} |")
    lines += ["", _notes(rows, args)]
    result_files.write(path, "\n".join(lines) + "\n", "model_zoo.py")


def _notes(rows, args) -> str:
    how = rows[0].get("inception_how", "no Inception FID (--no-inception)")
    r = rows[0]
    return (f"FID: {args.fid_n} samples vs {r.get('n_real', '-')} test images; {how}. Domain FID: {args.domain_n} "
            f"samples vs {r['domain_n_real']} test images, aevb's LeNet classifier {r['classifier']} (test "
            f"accuracy {r['classifier_accuracy']:.4f}). "
            f"Precision/recall: k = 3. log p(x): K = {args.nll_k} importance samples on {args.nll_images} test "
            "images. max-prob: the classifier's mean max-probability on samples; class entropy: of its predicted-"
            "class histogram, nats (log 10 = 2.303 when balanced). recon MSE: per pixel, test images as "
            "intensities. Samples are decoder means.")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=3, help="training epochs of every model (the budget)")
    p.add_argument("--fid-n", type=int, default=500, help="samples (and test images) for the Inception FID")
    p.add_argument("--domain-n", type=int, default=10000, help="samples for the domain FID")
    p.add_argument("--no-inception", action="store_true", help="skip the Inception FID")
    p.add_argument("--nll-k", type=int, default=100, help="importance samples for log p(x)")
    p.add_argument("--nll-images", type=int, default=500, help="test images for log p(x)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=str(HERE.parent.parent / "shared" / "data" / "mnist"))
    p.add_argument("--out", default=str(HERE / "results" / "model_zoo.md"))
    args = p.parse_args()
    result_files.check(args.out, "model_zoo.py")
    t = time.perf_counter()
    rows = run_zoo(args)
    write_markdown(rows, args, Path(args.out), time.perf_counter() - t)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
