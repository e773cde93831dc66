"""The domain classifier: a small LeNet-like network trained once on a dataset's labelled
training images and cached; its penultimate layer gives the features of the "domain FID"
(as MNIST papers report FID with an MNIST classifier), its softmax the classifier's view of
samples.

Architecture (any C x H x W): conv 3x3 32 - ReLU - max-pool 2 - conv 3x3 64 - ReLU -
max-pool 2 - adaptive average pool to 7 x 7 - linear 3136 -> 128 - ReLU (the 128-d
features) - linear 128 -> K classes. Trained with Adam (lr 1e-3, batch 64, `EPOCHS`
epochs) on the training images as intensities (never binarized), seeded.

Cached as safetensors (never pickle) in `<cache>/classifiers/<dataset>-<key>.safetensors`,
`<cache>` being $AEVB_DATA or ~/.cache/aevb; the key is a sha256 of the training images,
their labels, the seed and the architecture/training version, so another dataset, class
selection, limit or seed gets its own network.
"""
from __future__ import annotations

import hashlib
import json
import re
import time
from pathlib import Path

import torch
from torch import Tensor, nn

from ..runtime import adapt_threads
from ..serialization import CheckpointError, load_tensors, save_tensors

VERSION = "lenet-2"  # changes whenever the architecture or training changes
EPOCHS = 5


class LeNet(nn.Module):
    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, 32, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(7), nn.Flatten(), nn.Linear(64 * 49, 128), nn.ReLU())
        self.head = nn.Linear(128, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def cache_key(x: Tensor, y: Tensor, seed: int) -> str:
    h = hashlib.sha256(json.dumps({"version": VERSION, "epochs": EPOCHS, "seed": seed,
                                   "shape": list(x.shape)}).encode())
    h.update(x.float().contiguous().numpy().tobytes())
    h.update(y.long().contiguous().numpy().tobytes())
    return h.hexdigest()


def cache_path(dataset: str, key: str) -> Path:
    from ..data.download import cache_dir
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", dataset).strip("-")[:40] or "data"
    return cache_dir() / "classifiers" / f"{slug}-{key[:16]}.safetensors"


def train_classifier(x: Tensor, y: Tensor, seed: int = 0, epochs: int = EPOCHS,
                     batch_size: int = 64) -> tuple[LeNet, list[int]]:
    """A LeNet trained on images x (N, C, H, W) in [0, 1] with labels y; (net, classes),
    output k of the net standing for label classes[k]. Trained on one CPU thread, so that
    the weights do not depend on the thread count (sums in one order): the same data and
    seed give the same network whatever the machine's load."""
    classes = torch.unique(y).tolist()
    target = torch.searchsorted(torch.tensor(classes), y.long())
    threads = torch.get_num_threads()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        torch.set_num_threads(1)
        try:
            net = LeNet(x.shape[1], len(classes))
            opt = torch.optim.Adam(net.parameters(), lr=1e-3)
            for _ in range(epochs):
                order = torch.randperm(len(x))
                for i in range(0, len(x), batch_size):
                    idx = order[i:i + batch_size]
                    loss = nn.functional.cross_entropy(net(x[idx]), target[idx])
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
        finally:
            torch.set_num_threads(threads)
    return net.eval(), classes


def _load(path: Path, key: str):
    tensors, meta = load_tensors(path)
    if meta.get("key") != key:
        raise CheckpointError(f"{path}: a classifier of other data (key {meta.get('key')!r})")
    net = LeNet(meta["channels"], len(meta["classes"]))
    net.load_state_dict(tensors)
    return net.eval(), meta


def classifier_for(train, dataset: str, seed: int = 0) -> tuple[LeNet, dict]:
    """The cached classifier of a training split (Split with x, y), trained now if absent:
    (net, info) with info = the cache file's metadata plus "file" and "trained_now"."""
    if train.y is None:
        raise ValueError(f"dataset {dataset!r} has no labels: no domain classifier")
    key = cache_key(train.x, train.y, seed)
    path = cache_path(dataset, key)
    if path.exists():
        net, meta = _load(path, key)
        return net, {**meta, "file": str(path), "trained_now": False}
    t = time.perf_counter()
    net, classes = train_classifier(train.x, train.y, seed)
    meta = {"key": key, "version": VERSION, "dataset": dataset, "classes": classes, "seed": seed,
            "epochs": EPOCHS, "n_train": len(train.x), "channels": train.x.shape[1],
            "train_seconds": round(time.perf_counter() - t, 1)}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_tensors(path, net.state_dict(), meta)
    return net, {**meta, "file": str(path), "trained_now": True}


@torch.no_grad()
def embed(net: LeNet, x: Tensor, batch_size: int = 250) -> tuple[Tensor, Tensor]:
    """(features (N, 128) float64, class probabilities (N, K)) of images x in [0, 1]."""
    feats, probs = [], []
    for i in range(0, len(x), batch_size):
        adapt_threads()
        f = net.features(x[i:i + batch_size].clamp(0, 1))
        feats.append(f.double())
        probs.append(net.head(f).softmax(1))
    return torch.cat(feats), torch.cat(probs)


def class_view(probs: Tensor) -> dict:
    """The classifier's view of a set of images from their class probabilities (N, K):
    mean_max_prob (how recognizable: 1 = every image classified with certainty),
    class_entropy of the histogram of predicted classes in nats (how balanced: log K when
    every class is predicted equally often), and that histogram."""
    k = probs.shape[1]
    hist = torch.bincount(probs.argmax(1), minlength=k).double()
    p = hist / hist.sum()
    entropy = -(p[p > 0] * p[p > 0].log()).sum()
    return {"mean_max_prob": float(probs.max(1).values.mean()), "class_entropy": float(entropy) + 0.0,
            "max_class_entropy": float(torch.log(torch.tensor(float(k)))),
            "class_histogram": [int(v) for v in hist.tolist()]}


__all__ = ["LeNet", "VERSION", "train_classifier", "classifier_for", "embed", "class_view", "cache_path"]
