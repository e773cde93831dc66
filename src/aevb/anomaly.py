"""Anomaly scores of a density model (seed 000 sec. 3).

- `anomaly_scores`: -log p(x) per image, importance-sampled (`aevb.evaluation.log_likelihood`);
  a conditional model is scored by its marginal p(x) = 1/K sum_y p(x|y), since an anomaly's
  label is unknown; a model without a density (an autoencoder, `has_density` False) by its
  reconstruction loss -log p(x | z = enc(x)). Higher = more anomalous.
- `roc_auc` tells two sets apart with them (sklearn.metrics.roc_auc_score; 1 = perfect,
  0.5 = chance); `held_out_classes_auc` scores the images of some classes against the rest.
- Raw likelihoods favour simple images (a held-out "1" looks *more* likely than the
  training digits, Nalisnick et al. 2019); `likelihood_ratio_scores` corrects that with a
  structure-free `PixelBackground` (Ren et al. 2019).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .evaluation import log_likelihood
from .models.base import check_shape


def score_name(model) -> str:
    """What `anomaly_scores` computes for this model."""
    return "-log p(x)" if model.has_density else "-log p(x|enc(x))"


@torch.no_grad()
def anomaly_scores(model, x: Tensor, y: Tensor | None = None, samples: int = 100,
                   batch_size: int = 100, seed: int = 0) -> Tensor:
    """An anomaly score per image (N,), in nats: -log p(x) estimated with `samples`
    importance samples (a VAE), or the reconstruction loss -log p(x|enc(x)) (an autoencoder).
    A conditional VAE gives -log p(x|y) when labels `y` are passed, else the marginal
    -log (1/K sum_y p(x|y))."""
    model.eval()
    check_shape(model, x)
    k = model.num_classes
    if not model.has_density:
        return _reconstruction_scores(model, x, y, batch_size)
    if k and y is None:
        per_class = torch.stack([log_likelihood(model, x, torch.full((len(x),), c, dtype=torch.long),
                                                samples=samples, batch_size=batch_size, seed=seed)
                                 for c in range(k)])
        return -(torch.logsumexp(per_class, 0) - math.log(k))
    return -log_likelihood(model, x, y if k else None, samples=samples, batch_size=batch_size, seed=seed)


def _reconstruction_scores(model, x: Tensor, y: Tensor | None, batch_size: int) -> Tensor:
    """-log p(x | z = enc(x)) per image."""
    if model.num_classes and y is None:
        raise ValueError("a conditional autoencoder needs labels to score images")
    out = []
    for i in range(0, len(x), batch_size):
        xb, yb = x[i:i + batch_size], None if not model.num_classes else y[i:i + batch_size]
        out.append(-model.decode(model.encode(xb, yb).mean, yb).log_prob(xb))
    return torch.cat(out)


def roc_auc(normal: Tensor, anomalous: Tensor) -> float:
    """ROC-AUC of telling `anomalous` scores from `normal` ones (higher score = anomaly)."""
    from sklearn.metrics import roc_auc_score
    normal, anomalous = torch.as_tensor(normal).double(), torch.as_tensor(anomalous).double()
    if len(normal) == 0 or len(anomalous) == 0:
        raise ValueError("ROC-AUC needs at least one normal and one anomalous score")
    labels = torch.cat([torch.zeros(len(normal)), torch.ones(len(anomalous))])
    return float(roc_auc_score(labels.numpy(), torch.cat([normal, anomalous]).numpy()))


def held_out_classes_auc(scores: Tensor, labels: Tensor, classes) -> dict:
    """ROC-AUC of telling images of `classes` (the anomalies, e.g. a digit left out of
    training) from the other images, given their scores."""
    anomalous = torch.isin(labels, torch.as_tensor(list(classes)))
    if anomalous.all() or not anomalous.any():
        raise ValueError(f"classes {list(classes)}: need images both of these classes and of others")
    return {"auc": roc_auc(scores[~anomalous], scores[anomalous]), "n_normal": int((~anomalous).sum()),
            "n_anomalous": int(anomalous.sum()), "mean_score_normal": float(scores[~anomalous].mean()),
            "mean_score_anomalous": float(scores[anomalous].mean())}


class PixelBackground:
    """A background model with no structure at all: independent pixels, each a Bernoulli
    (binary images) or a 256-level histogram with add-one smoothing (8-bit intensities),
    fitted to training images. `likelihood_ratio_scores` subtracts its log-likelihood from
    the model's, which removes much of what makes simple images likely under any model
    (Ren et al. 2019, "Likelihood ratios for out-of-distribution detection")."""

    def __init__(self, table: Tensor, binary: bool):
        self.table, self.binary = table, binary

    @classmethod
    def fit(cls, x: Tensor) -> "PixelBackground":
        binary = bool(((x == 0) | (x == 1)).all())
        if binary:
            return cls(x.mean(0).clamp(1e-3, 1 - 1e-3), True)
        levels = (x * 255).round().long().clamp(0, 255)                   # (N, C, H, W)
        counts = torch.nn.functional.one_hot(levels, 256).sum(0).double() + 1
        return cls((counts / counts.sum(-1, keepdim=True)).log(), False)  # (C, H, W, 256)

    def log_prob(self, x: Tensor) -> Tensor:
        """log p_background(x) per image (N,), in nats (a discrete probability)."""
        if self.binary:
            p = self.table
            return (x * p.log() + (1 - x) * (1 - p).log()).flatten(1).sum(1)
        levels = (x * 255).round().long().clamp(0, 255)
        t = self.table.unsqueeze(0).expand(len(x), *self.table.shape)
        return t.gather(-1, levels.unsqueeze(-1)).squeeze(-1).flatten(1).sum(1).to(x.dtype)


def likelihood_ratio_scores(scores: Tensor, x: Tensor, background: PixelBackground) -> Tensor:
    """-log p(x) + log p_background(x): how much less likely x is under the model than under
    the structure-free background (higher = more anomalous)."""
    return scores + background.log_prob(x)


