"""The 2-D map of a latent space, and the way back from a map point to a latent vector.

- latent_dim 2: the map is the latent plane itself (a point is a latent vector);
- PCA (the default for larger latents): the plane through the mean of the test codes
  spanned by their first two principal components; a map point goes back by the PCA
  inverse transform, z = mean + u * pc1 + v * pc2 (every other component at its mean);
- t-SNE (computed once at start-up): it has no inverse, so a map point goes back to the
  code of the test image nearest to it on the map, and a new code is placed at the map
  position of the nearest test code in latent space.
latent_dim 1 is drawn as a line: the code on the horizontal axis, 0 on the vertical.
"""
from __future__ import annotations

import numpy as np

KINDS = ("pca", "tsne")
TSNE_MAX_POINTS = 1000  # t-SNE of more codes takes too long for a start-up (tens of seconds)


class LatentMap:
    """`coords` (N, 2): the map position of each code; `extent` (xmin, xmax, ymin, ymax);
    `to_latent(uv)` a map point -> a latent vector; `to_map(z)` -> a map point; `plane`:
    True when every map point decodes to a distinct latent vector (a background image of
    decoded map points makes sense)."""

    kind = "latent"
    plane = True

    def __init__(self, codes: np.ndarray, standard_prior: bool, coords: np.ndarray | None = None):
        self.codes = codes
        self.coords = self.to_map_many(codes) if coords is None else coords
        self.extent = _extent(self.coords, standard_prior and self.kind == "latent")

    def describe(self) -> str:
        return ("The latent plane itself: a point is the latent vector (z1, z2). Dots: the "
                "posterior means of test images; the background: the decoded plane.")

    def to_map_many(self, z: np.ndarray) -> np.ndarray:
        return z[:, :2] if z.shape[1] >= 2 else np.concatenate([z, np.zeros_like(z)], 1)

    def to_map(self, z: np.ndarray) -> np.ndarray:
        return self.to_map_many(z[None])[0]

    def to_latent(self, uv: np.ndarray) -> np.ndarray:
        return np.asarray(uv[:self.codes.shape[1]], dtype=np.float64)


class PCAMap(LatentMap):
    kind = "pca"

    def __init__(self, codes: np.ndarray, standard_prior: bool):
        from sklearn.decomposition import PCA
        self.pca = PCA(2).fit(codes)
        super().__init__(codes, standard_prior)

    def describe(self) -> str:
        share = 100 * self.pca.explained_variance_ratio_.sum()
        return (f"PCA of the posterior means of test images (the two axes hold {share:.0f}% of "
                "their variance). A map point decodes through the PCA inverse transform: "
                "z = mean + u * pc1 + v * pc2, the other components at their mean.")

    def to_map_many(self, z: np.ndarray) -> np.ndarray:
        return self.pca.transform(z)

    def to_latent(self, uv: np.ndarray) -> np.ndarray:
        return self.pca.inverse_transform(np.asarray(uv, dtype=np.float64)[None])[0]


class TSNEMap(LatentMap):
    kind = "tsne"
    plane = False

    def __init__(self, codes: np.ndarray, standard_prior: bool, seed: int = 0):
        from sklearn.manifold import TSNE
        perplexity = min(30.0, max(2.0, (len(codes) - 1) / 3))
        coords = TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(codes)
        super().__init__(codes, standard_prior, coords)

    def describe(self) -> str:
        return ("t-SNE of the posterior means of test images (computed once at start-up). "
                "t-SNE has no inverse: a map point decodes to the code of the nearest test "
                "image on the map, and a new image is placed where its nearest test code is.")

    def to_map_many(self, z: np.ndarray) -> np.ndarray:
        return self.coords[[int(((self.codes - v) ** 2).sum(1).argmin()) for v in z]]

    def to_latent(self, uv: np.ndarray) -> np.ndarray:
        nearest = ((self.coords - np.asarray(uv)[None]) ** 2).sum(-1).argmin()
        return self.codes[nearest].astype(np.float64)


def make_map(kind: str, codes: np.ndarray, standard_prior: bool) -> LatentMap:
    """The map of `codes` (N, latent_dim): the latent plane for latent_dim <= 2, else `kind`."""
    if codes.shape[1] <= 2:
        return LatentMap(codes, standard_prior)
    if kind not in KINDS:
        raise ValueError(f"map must be one of {', '.join(KINDS)}, got {kind!r}")
    return (PCAMap if kind == "pca" else TSNEMap)(codes, standard_prior)


def _extent(coords: np.ndarray, standard_prior: bool) -> tuple[float, float, float, float]:
    """Bounds holding 99% of the points with a 10% margin (a few outliers do not shrink the
    rest); for the plane of a N(0, I) prior at least [-3, 3], where almost all its mass is."""
    out = []
    for axis in range(2):
        lo, hi = np.percentile(coords[:, axis], [0.5, 99.5])
        pad = 0.1 * max(hi - lo, 1e-3)
        lo, hi = lo - pad, hi + pad
        if standard_prior:
            lo, hi = min(lo, -3.0), max(hi, 3.0)
        out += [float(lo), float(hi)]
    return tuple(out)
