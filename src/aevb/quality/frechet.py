"""The Fréchet distance between two Gaussians, the statistic of FID (Heusel et al. 2017):

    d^2 = ||mu_1 - mu_2||^2 + tr(S_1) + tr(S_2) - 2 tr((S_1 S_2)^(1/2))

for features of two image sets summarized by their means mu and covariances S (unbiased,
divided by n - 1, as pytorch-fid, torch-fidelity and torchmetrics do).

tr((S_1 S_2)^(1/2)) is computed as the sum of the square roots of the eigenvalues of the
symmetric matrix S_1^(1/2) S_2 S_1^(1/2), which has the eigenvalues of S_1 S_2 (`eigh`,
float64, eigenvalues clamped at 0): no general matrix square root (pytorch-fid's
scipy.linalg.sqrtm, tested against here) and no complex parts to discard. When a set has
no more images than feature dimensions its covariance is singular; `fid_from_features`
then adds eps * I (eps = 1e-6) to both covariances, as pytorch-fid does when sqrtm fails,
and says so in its result.
"""
from __future__ import annotations

import torch
from torch import Tensor

EPS = 1e-6


def statistics(features) -> tuple[Tensor, Tensor]:
    """Mean (d,) and unbiased covariance (d, d) of features (n, d), in float64."""
    f = torch.as_tensor(features).double()
    if f.dim() != 2 or f.shape[0] < 2:
        raise ValueError(f"need features of shape (n >= 2, d), got {tuple(f.shape)}")
    mu = f.mean(0)
    c = f - mu
    return mu, c.T @ c / (f.shape[0] - 1)


def _psd_sqrt(s: Tensor) -> Tensor:
    w, v = torch.linalg.eigh((s + s.T) / 2)
    return (v * w.clamp_min(0).sqrt()) @ v.T


def trace_sqrt_product(s1: Tensor, s2: Tensor) -> Tensor:
    """tr((S_1 S_2)^(1/2)) for symmetric positive semi-definite S_1, S_2."""
    r = _psd_sqrt(s1)
    m = r @ s2 @ r
    return torch.linalg.eigvalsh((m + m.T) / 2).clamp_min(0).sqrt().sum()


def frechet_distance(mu1, s1, mu2, s2, eps: float = 0.0) -> float:
    """The squared Fréchet (2-Wasserstein) distance between N(mu1, s1) and N(mu2, s2);
    `eps` > 0 adds eps * I to both covariances first."""
    mu1, mu2, s1, s2 = (torch.as_tensor(t).double() for t in (mu1, mu2, s1, s2))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (*mu1.shape, *mu1.shape):
        raise ValueError(f"means {tuple(mu1.shape)}, {tuple(mu2.shape)} and covariances "
                         f"{tuple(s1.shape)}, {tuple(s2.shape)} do not fit")
    if eps:
        eye = eps * torch.eye(s1.shape[0], dtype=torch.float64)
        s1, s2 = s1 + eye, s2 + eye
    diff = mu1 - mu2
    return float(diff @ diff + s1.trace() + s2.trace() - 2 * trace_sqrt_product(s1, s2))


def fid_from_features(f1, f2, eps: float = EPS) -> tuple[float, float]:
    """(Fréchet distance between the Gaussians fitted to features f1 and f2, the eps added):
    eps * I is added only when a set has no more rows than columns (singular covariance)."""
    (mu1, s1), (mu2, s2) = statistics(f1), statistics(f2)
    singular = min(len(f1), len(f2)) <= s1.shape[0]
    used = eps if singular else 0.0
    return frechet_distance(mu1, s1, mu2, s2, used), used


__all__ = ["EPS", "statistics", "trace_sqrt_product", "frechet_distance", "fid_from_features"]
