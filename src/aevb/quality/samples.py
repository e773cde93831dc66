"""Sample quality of one sampler (a model, or a model with `samplers.GMMSampler`) against
real images, as one JSON-ready dict (what `aevb eval RUN --fid` adds to eval.json):

- "inception": FID, precision and recall (k = 3) on the 2048-d pool3 features of the FID
  Inception (torch-fidelity's network; `inception.py`), N samples against N test images
  (all of them if the test split is smaller), with the implementation, the weights' file
  and sha256, and N. The test images' features are cached (keyed by their pixels and the
  weights' sha256) in <cache>/fid/, <cache> being $AEVB_DATA or ~/.cache/aevb.
- "domain": the same three numbers on the 128-d features of the dataset's own classifier
  (`classifier.py`), its test accuracy, and the classifier's view of the samples and of
  the test images (mean max-probability, entropy of the predicted-class histogram).
- "recon_mse": mean squared error per pixel of the model's reconstructions of the test
  images used (only when a model is given).

Samples are `sampler.sample(n)`: decoder means, values clamped to [0, 1], drawn in batches
of 1,000 from the seed given (the global RNG is left as it was). Real images are a fixed
random subset (seed 0) of the test split, as intensities: never binarized, since samples
are decoder means.
"""
from __future__ import annotations

import hashlib
import time

import torch
from torch import Tensor

from ..data import subset
from . import classifier, inception
from .frechet import fid_from_features
from .precision_recall import precision_recall

FID_N = 2000      # `--fid` without a value
DOMAIN_N = 10000  # `--domain-fid` without a value


def draw(sampler, n: int, seed: int = 0, batch_size: int = 1000) -> Tensor:
    """n samples (N, C, H, W) in [0, 1] on the CPU, from `seed`."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        parts = [sampler.sample(min(batch_size, n - i)) for i in range(0, n, batch_size)]
    return torch.cat(parts).float().clamp(0, 1).cpu()


@torch.no_grad()
def recon_mse(model, split, batch_size: int = 1000) -> float:
    """Mean over pixels and images of (model.reconstruct(x) - x)^2."""
    conditional = model.num_classes
    device = next(model.parameters()).device
    total = 0.0
    for i in range(0, len(split), batch_size):
        x = split.x[i:i + batch_size]
        y = split.y[i:i + batch_size].to(device) if conditional else None
        total += float((model.reconstruct(x.to(device), y).float().cpu() - x).square().sum())
    return total / split.x.numel()


def _scores(real: Tensor, fake: Tensor) -> dict:
    fid, eps = fid_from_features(real, fake)
    return {"fid": fid, **precision_recall(real, fake), "eps_added": eps,
            "n_samples": len(fake), "n_real": len(real)}


def _real_inception_features(net, x: Tensor, weights_sha256: str) -> Tensor:
    from ..data.download import cache_dir
    from ..serialization import load_tensors, save_tensors
    key = hashlib.sha256(weights_sha256.encode() + inception.to_uint8_rgb(x).numpy().tobytes()).hexdigest()
    path = cache_dir() / "fid" / f"real-{key[:24]}.safetensors"
    if path.exists():
        tensors, meta = load_tensors(path)
        if meta.get("key") == key:
            return tensors["features"]
    f = inception.features(net, x).float()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_tensors(path, {"features": f}, {"key": key, "n": len(x)})
    return f


def inception_scores(samples: Tensor, real: Tensor, weights=None, device="cpu") -> dict:
    """FID, precision, recall on the FID Inception's pool3 features (see the module doc)."""
    t = time.perf_counter()
    w = inception.find_weights(weights)
    desc = w.describe()
    net = inception.build_extractor(w, device)
    real_f = _real_inception_features(net, real, desc["sha256"])
    # float32 features on both sides, as cached: a cached and a fresh run give the same FID
    out = _scores(real_f.double(), inception.features(net, samples).float().double())
    return {**out, "implementation": inception.implementation(), "weights": desc,
            "input": "uint8 RGB (grey repeated to 3 channels), resized to 299x299 by torch-fidelity "
                     "(TensorFlow-1 bilinear)", "seconds": round(time.perf_counter() - t, 1)}


def domain_scores(samples: Tensor, ds, n_real: int) -> dict:
    """FID, precision, recall on the domain classifier's features against `n_real` test
    images, its accuracy on the whole test split and its view of samples and test images."""
    t = time.perf_counter()
    net, info = classifier.classifier_for(ds.train, ds.name)
    test_f, test_p = classifier.embed(net, ds.test.x)
    accuracy = float((torch.tensor(info["classes"])[test_p.argmax(1)] == ds.test.y).double().mean())
    real_f, real_p = (test_f, test_p) if n_real >= len(ds.test) else \
        classifier.embed(net, subset(ds.test, n_real).x)
    fake_f, fake_p = classifier.embed(net, samples)
    keep = ("file", "version", "classes", "seed", "epochs", "n_train", "trained_now", "train_seconds")
    return {**_scores(real_f, fake_f), "implementation": f"aevb LeNet ({classifier.VERSION}), 128-d penultimate layer",
            "classifier": {**{k: info.get(k) for k in keep}, "sha256": _sha256(info["file"]),
                           "test_accuracy": accuracy, "n_test": len(ds.test)},
            "samples_view": classifier.class_view(fake_p), "real_view": classifier.class_view(real_p),
            "seconds": round(time.perf_counter() - t, 1)}


def _sha256(path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def evaluate_samples(sampler, ds, *, inception_n: int | None = FID_N, domain_n: int | None = DOMAIN_N,
                     weights=None, seed: int = 0, model=None, device="cpu") -> dict:
    """Quality of `sampler`'s samples against dataset `ds` (intensities, not binarized): the
    "inception" and/or "domain" blocks (None skips one), and "recon_mse" when `model` is
    given. A domain block that cannot apply (no labels) is replaced by "domain_skipped"."""
    n = max(inception_n or 0, domain_n or 0)
    if not n:
        raise ValueError("ask for Inception or domain scores (a number of samples)")
    samples = draw(sampler, n, seed)
    if samples.shape[1:] != ds.test.x.shape[1:]:
        raise ValueError(f"samples of shape {tuple(samples.shape[1:])}, test images {tuple(ds.test.x.shape[1:])}")
    out: dict = {"samples": {"n": n, "seed": seed, "what": "sampler.sample(n): decoder means, clamped to [0, 1]"},
                 "real": {"dataset": ds.name, "split": "test", "binarized": False}}
    if model is not None:
        out["recon_mse"] = recon_mse(model, subset(ds.test, n))
    if domain_n:
        if ds.train.y is None or ds.test.y is None:
            out["domain_skipped"] = f"dataset {ds.name!r} has no labels to train a classifier on"
        else:
            out["domain"] = domain_scores(samples[:domain_n], ds, domain_n)
    if inception_n:
        out["inception"] = inception_scores(samples[:inception_n], subset(ds.test, inception_n).x,
                                            weights, device)
    return out


def format_quality(q: dict) -> str:
    """Plain-text lines of `evaluate_samples`' result: every FID with its implementation,
    weights (sha256) and N."""
    lines = []
    if "inception" in q:
        r = q["inception"]
        lines += [f"FID (Inception) {r['fid']:10.3f}   N = {r['n_samples']} samples vs {r['n_real']} test images",
                  f"  {r['implementation']}",
                  f"  weights {r['weights']['file']} sha256 {r['weights']['sha256']}",
                  f"  precision / recall (k={r['k']})  {r['precision']:.3f} / {r['recall']:.3f}"]
    if "domain" in q:
        r, c = q["domain"], q["domain"]["classifier"]
        s, t = r["samples_view"], r["real_view"]
        lines += [f"FID (domain)    {r['fid']:10.3f}   N = {r['n_samples']} samples vs {r['n_real']} test images",
                  f"  {r['implementation']}, test accuracy {100 * c['test_accuracy']:.2f}% on {c['n_test']}",
                  f"  classifier {c['file']} sha256 {c['sha256']}",
                  f"  precision / recall (k={r['k']})  {r['precision']:.3f} / {r['recall']:.3f}",
                  f"  classifier's view, samples: mean max-prob {s['mean_max_prob']:.3f}, class entropy "
                  f"{s['class_entropy']:.3f} of {s['max_class_entropy']:.3f} nats "
                  f"(test images: {t['mean_max_prob']:.3f}, {t['class_entropy']:.3f})"]
    if "domain_skipped" in q:
        lines.append(f"domain FID: skipped: {q['domain_skipped']}")
    if "recon_mse" in q:
        lines.append(f"reconstruction MSE per pixel {q['recon_mse']:.5f}")
    return "\n".join(lines)
