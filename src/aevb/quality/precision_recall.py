"""Improved precision and recall of generated samples (Kynkäänniemi et al. 2019).

Each set of features spans a manifold: the union of balls around its points, each ball's
radius the distance to the point's k-th nearest neighbour in its own set (k = 3, the
paper's choice; the point itself does not count). Then

    precision = fraction of generated points inside the real manifold  (are samples realistic)
    recall    = fraction of real points inside the generated manifold  (is the data covered)

A point on a ball's boundary is inside (distance <= radius), as in the authors' code and
torch-fidelity's `prc`. Distances are Euclidean, in float64, computed in blocks of rows so
that memory stays bounded (10,000 x 5,000 points take a few seconds).
"""
from __future__ import annotations

import torch
from torch import Tensor

K = 3


def _blocks(n: int, size: int):
    for i in range(0, n, size):
        yield slice(i, min(i + size, n))


def knn_radii(x, k: int = K, block: int = 1024) -> Tensor:
    """Distance of each row of x (n, d) to its k-th nearest other row."""
    x = torch.as_tensor(x).double()
    if len(x) <= k:
        raise ValueError(f"need more than k = {k} points for k-nearest-neighbour radii, got {len(x)}")
    out = torch.empty(len(x), dtype=torch.float64)
    for s in _blocks(len(x), block):
        d = torch.cdist(x[s], x)
        out[s] = d.kthvalue(k + 1, dim=1).values  # the smallest distance is the point itself
    return out


def coverage(points, centers, radii, block: int = 1024) -> Tensor:
    """For each row of `points`: is it within radii[j] of some row j of `centers`? (bool)."""
    points, centers = torch.as_tensor(points).double(), torch.as_tensor(centers).double()
    out = torch.empty(len(points), dtype=torch.bool)
    for s in _blocks(len(points), block):
        out[s] = (torch.cdist(points[s], centers) <= radii).any(1)
    return out


def precision_recall(real, fake, k: int = K) -> dict:
    """{"precision", "recall", "k"} of generated features `fake` against `real` (rows)."""
    real, fake = torch.as_tensor(real).double(), torch.as_tensor(fake).double()
    if real.dim() != 2 or fake.dim() != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"features must be (n, d) with the same d, got {tuple(real.shape)} and "
                         f"{tuple(fake.shape)}")
    precision = coverage(fake, real, knn_radii(real, k)).double().mean().item()
    recall = coverage(real, fake, knn_radii(fake, k)).double().mean().item()
    return {"precision": precision, "recall": recall, "k": k}


__all__ = ["K", "knn_radii", "coverage", "precision_recall"]
