"""The Fréchet distance and precision/recall against answers known in closed form, against
scipy.linalg.sqrtm (pytorch-fid's computation) and against plain loops."""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch

from aevb.quality.frechet import fid_from_features, frechet_distance, statistics
from aevb.quality.precision_recall import coverage, knn_radii, precision_recall


def _random_cov(d, g, rank=None):
    a = torch.randn(d, rank or d, generator=g, dtype=torch.float64)
    return a @ a.T / (rank or d) + (0 if rank else 0.1) * torch.eye(d, dtype=torch.float64)


def _sqrtm_reference(mu1, s1, mu2, s2, eps=0.0):
    """pytorch-fid's calculate_frechet_distance, with the offset always applied."""
    s1, s2 = s1.numpy() + eps * np.eye(len(s1)), s2.numpy() + eps * np.eye(len(s2))
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    covmean = covmean.real if np.iscomplexobj(covmean) else covmean
    diff = (mu1 - mu2).numpy()
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def test_commuting_covariances_give_the_closed_form():
    # N(m1, R diag(a) R^T) and N(m2, R diag(b) R^T): d^2 = |m1 - m2|^2 + sum (sqrt a - sqrt b)^2
    g = torch.Generator().manual_seed(1)
    d = 50
    r, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    a = torch.rand(d, generator=g, dtype=torch.float64) * 4 + 0.01
    b = torch.rand(d, generator=g, dtype=torch.float64) * 4 + 0.01
    m1, m2 = torch.randn(d, generator=g, dtype=torch.float64), torch.randn(d, generator=g, dtype=torch.float64)
    exact = float((m1 - m2).square().sum() + (a.sqrt() - b.sqrt()).square().sum())
    got = frechet_distance(m1, r @ torch.diag(a) @ r.T, m2, r @ torch.diag(b) @ r.T)
    assert got == pytest.approx(exact, rel=1e-10)


def test_two_by_two_non_commuting_closed_form():
    # for 2x2 matrices tr sqrt(S1 S2) = sqrt(tr(S1 S2) + 2 sqrt(det S1 det S2))
    s1 = torch.tensor([[2.0, 0.7], [0.7, 1.0]], dtype=torch.float64)
    s2 = torch.tensor([[0.5, -0.3], [-0.3, 3.0]], dtype=torch.float64)
    assert not torch.allclose(s1 @ s2, s2 @ s1)
    mu1, mu2 = torch.tensor([1.0, -2.0]), torch.tensor([0.5, 0.5])
    tr_sqrt = math.sqrt(float((s1 @ s2).trace()) + 2 * math.sqrt(float(s1.det() * s2.det())))
    exact = 0.25 + 6.25 + float(s1.trace() + s2.trace()) - 2 * tr_sqrt
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(exact, rel=1e-12)


def test_agrees_with_scipy_sqrtm_on_random_covariances():
    g = torch.Generator().manual_seed(2)
    for d in (3, 64, 256):
        s1, s2 = _random_cov(d, g), _random_cov(d, g)
        mu1, mu2 = torch.randn(d, generator=g, dtype=torch.float64), torch.randn(d, generator=g, dtype=torch.float64)
        assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(_sqrtm_reference(mu1, s1, mu2, s2), rel=1e-8)


def test_fewer_samples_than_dimensions_adds_eps_and_stays_finite():
    g = torch.Generator().manual_seed(3)
    f1 = torch.randn(40, 100, generator=g, dtype=torch.float64)
    f2 = torch.randn(30, 100, generator=g, dtype=torch.float64) + 0.5
    value, eps = fid_from_features(f1, f2)
    assert eps == 1e-6 and math.isfinite(value) and value > 0
    (mu1, s1), (mu2, s2) = statistics(f1), statistics(f2)
    assert value == pytest.approx(_sqrtm_reference(mu1, s1, mu2, s2, eps=1e-6), rel=1e-6)
    same, _ = fid_from_features(f1, f1)
    assert abs(same) < 1e-6  # identical sets: 0 up to rounding, even with singular covariances
    _, eps_full_rank = fid_from_features(torch.randn(300, 10), torch.randn(300, 10))
    assert eps_full_rank == 0.0


def test_statistics_match_numpy_and_sample_fid_converges_to_the_exact_distance():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(5000, 4, generator=g, dtype=torch.float64)
    mu, s = statistics(x)
    assert torch.allclose(s, torch.as_tensor(np.cov(x.numpy(), rowvar=False)))
    assert torch.allclose(mu, x.mean(0))
    # samples of N(0, I) and N(1, 4 I) in 4 dims: d^2 = 4 * 1 + 4 * (2 - 1)^2 = 8
    y = 1 + 2 * torch.randn(5000, 4, generator=g, dtype=torch.float64)
    assert fid_from_features(x, y)[0] == pytest.approx(8.0, abs=0.3)


def test_shapes_are_checked():
    with pytest.raises(ValueError, match="do not fit"):
        frechet_distance(torch.zeros(3), torch.eye(3), torch.zeros(2), torch.eye(2))
    with pytest.raises(ValueError, match="n >= 2"):
        statistics(torch.zeros(1, 3))


# ----------------------------------------------------------------------------- precision / recall
def test_identical_sets_have_precision_and_recall_one():
    x = torch.randn(200, 5)
    assert precision_recall(x, x.clone()) == {"precision": 1.0, "recall": 1.0, "k": 3}


def test_far_apart_sets_have_precision_and_recall_zero():
    x = torch.randn(200, 5)
    r = precision_recall(x, torch.randn(150, 5) + 1000)
    assert (r["precision"], r["recall"]) == (0.0, 0.0)


def test_a_subset_on_a_line_has_the_answer_worked_out_by_hand():
    # real = 0..9, fake = 0..4 (k = 3). Every fake point is a real point: precision 1.
    # Fake radii (3rd nearest other fake): 3, 2, 2, 2, 3 -> balls cover [-3, 7]: reals 0..7, recall 0.8.
    real = torch.arange(10.0)[:, None]
    fake = torch.arange(5.0)[:, None]
    assert knn_radii(fake).tolist() == [3.0, 2.0, 2.0, 2.0, 3.0]
    assert knn_radii(real).tolist() == [3.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 3.0]
    r = precision_recall(real, fake)
    assert r["precision"] == 1.0 and r["recall"] == pytest.approx(0.8)


def test_blocked_computation_equals_plain_loops():
    g = torch.Generator().manual_seed(5)
    real, fake = torch.randn(60, 3, generator=g), torch.randn(45, 3, generator=g) * 1.5
    radii = [sorted(float((real[i] - real[j]).norm()) for j in range(60) if j != i)[2] for i in range(60)]
    assert knn_radii(real, block=7).tolist() == pytest.approx(radii, rel=1e-5)  # float32
    inside = [any(float((f - real[j]).norm()) <= radii[j] for j in range(60)) for f in fake]
    assert coverage(fake, real, torch.tensor(radii, dtype=torch.float64), block=8).tolist() == inside


def test_too_few_points_is_an_error():
    with pytest.raises(ValueError, match="more than k"):
        precision_recall(torch.randn(3, 2), torch.randn(10, 2))
