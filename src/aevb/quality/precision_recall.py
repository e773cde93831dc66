"""Improved precision and recall of generated samples (Kynkäänniemi et al. 2019).

Each set of features spans a manifold: the union of balls around its points, each ball's
radius the distance to the point's k-th nearest neighbour in its own set (k = 3, the
paper's choice; the point itself does not count). Then

    precision = fraction of generated points inside the real manifold  (are samples realistic)
    recall    = fraction of real points inside the generated manifold  (is the data covered)

A point on a ball's boundary is inside (distance <= radius), as in the authors' code and
torch-fidelity's `prc`. Squared Euclidean distances |a|^2 + |b|^2 - 2 a.b in float32 (as
torch-fidelity), in blocks of rows so that memory stays bounded (10,000 x 5,000 points of
128 dimensions take about a second).
"""
from __future__ import annotations

import torch
from torch import Tensor

K = 3
BLOCK = 1024  # rows of a distance block


def _blocks(n: int, size: int):
    for i in range(0, n, size):
        yield slice(i, min(i + size, n))


def _squared_distances(a: Tensor, b: Tensor, b_sq: Tensor) -> Tensor:
    return (a.square().sum(1)[:, None] + b_sq[None] - 2 * a @ b.T).clamp_min_(0)


def _squared_radii(x: Tensor, k: int, block: int) -> Tensor:
    if len(x) <= k:
        raise ValueError(f"need more than k = {k} points for k-nearest-neighbour radii, got {len(x)}")
    x_sq = x.square().sum(1)
    out = torch.empty(len(x), dtype=x.dtype)
    for s in _blocks(len(x), block):  # the smallest distance is the point itself: take the (k+1)-th
        out[s] = _squared_distances(x[s], x, x_sq).topk(k + 1, dim=1, largest=False).values[:, -1]
    return out


def _covered(points: Tensor, centers: Tensor, squared_radii: Tensor, block: int) -> Tensor:
    c_sq = centers.square().sum(1)
    out = torch.empty(len(points), dtype=torch.bool)
    for s in _blocks(len(points), block):
        out[s] = (_squared_distances(points[s], centers, c_sq) <= squared_radii).any(1)
    return out


def _float(x) -> Tensor:
    return torch.as_tensor(x).float()


def knn_radii(x, k: int = K, block: int = BLOCK) -> Tensor:
    """Distance of each row of x (n, d) to its k-th nearest other row."""
    return _squared_radii(_float(x), k, block).sqrt()


def coverage(points, centers, radii, block: int = BLOCK) -> Tensor:
    """For each row of `points`: is it within radii[j] of some row j of `centers`? (bool)."""
    return _covered(_float(points), _float(centers), _float(radii).square(), block)


def precision_recall(real, fake, k: int = K) -> dict:
    """{"precision", "recall", "k"} of generated features `fake` against `real` (rows)."""
    real, fake = _float(real), _float(fake)
    if real.dim() != 2 or fake.dim() != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"features must be (n, d) with the same d, got {tuple(real.shape)} and "
                         f"{tuple(fake.shape)}")
    precision = _covered(fake, real, _squared_radii(real, k, BLOCK), BLOCK).double().mean().item()
    recall = _covered(real, fake, _squared_radii(fake, k, BLOCK), BLOCK).double().mean().item()
    return {"precision": precision, "recall": recall, "k": k}


__all__ = ["K", "knn_radii", "coverage", "precision_recall"]
