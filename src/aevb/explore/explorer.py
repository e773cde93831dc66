"""What the page asks of a model, computed in torch with nothing but the model's interface:
decode a latent vector, go from a map point to a latent vector, interpolate between two test
images, encode and score a new image, sample with a temperature.

Everything that does not change is computed once at start-up: the posterior means ("codes")
of up to `n_map` test images (a fixed random choice; at most 1,000 for t-SNE), the order of
the latent dimensions (by the variance of the codes over those images: the active units
first), the 2-D map, the anomaly scores of up to `n_reference` of the images (for
percentiles; as many as `reference_seconds` allow). The model runs under
torch.inference_mode; decoding a latent vector is one decoder pass.

Conventions: images (C, H, W) in [0, 1] (decoder means, clipped for display); anomaly scores
in nats per image: -log p(x) by importance sampling with `score_samples` samples (a
conditional model: the marginal -log (1/K sum_y p(x|y)), since a new image's class is
unknown); an autoencoder has no p(x), and its score is the reconstruction loss
-log p(x | z = enc(x)).
"""
from __future__ import annotations

import math
import time

import numpy as np
import torch
from torch import Tensor

from .adapter import RunData
from .images import tile
from .latent_map import TSNE_MAX_POINTS, make_map

MAX_SLIDERS = 32


class Explorer:
    def __init__(self, run: RunData, map_kind: str = "pca", n_map: int = 2000, n_gallery: int = 48,
                 n_reference: int = 300, score_samples: int = 100, reference_seconds: float = 5.0,
                 seed: int = 0):
        self.run, self.model, self.prior = run, run.model, run.prior
        self.latent_dim, self.num_classes = int(run.model.latent_dim), int(run.model.num_classes or 0)
        self.shape, self.score_samples = tuple(run.model.input_shape), score_samples
        if map_kind == "tsne":
            n_map = min(n_map, TSNE_MAX_POINTS)
        g = torch.Generator().manual_seed(seed)
        keep = torch.randperm(len(run.x), generator=g)[:n_map].sort().values
        self.x = run.x[keep]
        self.y = None if run.y is None else run.y[keep]
        mixed = torch.randperm(len(self.x), generator=g)  # splits may be sorted by label
        self.gallery, ref = mixed[:n_gallery], mixed[:n_reference]
        with torch.inference_mode():
            self.codes = self._embed(self.x, self.y)
            self.reference = self._reference(ref, reference_seconds)
        c = self.codes.double()
        self.variance = c.var(0, unbiased=False) if len(c) > 1 else torch.zeros(self.latent_dim)
        self.order = self.variance.argsort(descending=True)[:MAX_SLIDERS].tolist()
        self.code_mean, self.code_chol = c.mean(0), _cholesky(c)
        self.map = make_map(map_kind, self.codes.double().numpy(), self.prior == "standard_normal")
        self._backgrounds = {}

    # -- the model's interface
    def _label(self, y: int | None, n: int = 1) -> Tensor | None:
        return torch.full((n,), int(y), dtype=torch.long) if self.num_classes else None

    def _embed(self, x: Tensor, y: Tensor | None, batch: int = 500) -> Tensor:
        parts = [self.model.embed(x[i:i + batch], None if not self.num_classes else y[i:i + batch])
                 for i in range(0, len(x), batch)]
        return torch.cat(parts).float()

    @torch.inference_mode()
    def decode(self, z, y: int | None = None) -> Tensor:
        """Decoder means of latent vectors `z` (N, latent_dim) or one (latent_dim,)."""
        z = torch.as_tensor(np.asarray(z), dtype=torch.get_default_dtype())
        one = z.dim() == 1
        z = z.reshape(-1, self.latent_dim)
        out = self.model.decode(z, self._label(y, len(z))).mean.float().clamp(0, 1)
        return out[0] if one else out

    @torch.inference_mode()
    def score(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """The anomaly score of each image (N,) in nats (see the module docstring)."""
        if not len(x):
            return torch.zeros(0, dtype=torch.float64)
        if self.prior == "none":
            yb = y if self.num_classes else None
            return -self.model.decode(self.model.embed(x, yb), yb).log_prob(x).double()
        if not self.num_classes:
            return -self.model.log_likelihood(x, samples=self.score_samples).double()
        per_class = torch.stack([self.model.log_likelihood(
            x, samples=self.score_samples, y=torch.full((len(x),), c, dtype=torch.long)).double()
            for c in range(self.num_classes)])
        return -(torch.logsumexp(per_class, 0) - math.log(self.num_classes))

    def _reference(self, index: Tensor, seconds: float, batch: int = 25) -> Tensor:
        """The sorted scores of the test images `index`, batch by batch until `seconds` have
        passed (at least one batch), so that a large conditional model starts quickly too."""
        t0, out = time.perf_counter(), []
        for i in range(0, len(index), batch):
            if out and time.perf_counter() - t0 > seconds:
                break
            j = index[i:i + batch]
            out.append(self.score(self.x[j], None if self.y is None else self.y[j]))
        return torch.cat(out).sort().values if out else torch.zeros(0, dtype=torch.float64)

    # -- what the page asks
    def from_map(self, uv) -> np.ndarray:
        return self.map.to_latent(np.asarray(uv, dtype=np.float64))

    def interpolate(self, a: int, b: int, t: float) -> np.ndarray:
        """The latent vector a fraction `t` of the way from gallery image a's code to b's."""
        za, zb = self.codes[self.gallery[a]].double(), self.codes[self.gallery[b]].double()
        return ((1 - t) * za + t * zb).numpy()

    @torch.inference_mode()
    def encode(self, x: Tensor, y: int | None = None) -> dict:
        """A new image (C, H, W): its code, map position, reconstruction, score, percentile."""
        xb, yb = x[None], self._label(y)
        z = self.model.embed(xb, yb).double()[0]
        score = float(self.score(xb, yb)[0])
        below = float((self.reference < score).double().mean()) if len(self.reference) else float("nan")
        return {"z": z.numpy(), "map": self.map.to_map(z.numpy()), "reconstruction": self.decode(z, y),
                "score": score, "percentile": 100 * below}

    @torch.inference_mode()
    def sample(self, n: int, temperature: float, y: int | None = None, seed: int | None = None) -> Tensor:
        """n images. A N(0, I) prior: z = temperature * eps; no prior (an autoencoder): a
        Gaussian fitted to the test codes, its spread scaled by the temperature; another
        prior (binary codes): the model's own `sample`, where a temperature has no meaning."""
        g = torch.Generator()
        g.seed() if seed is None else g.manual_seed(seed)
        eps = torch.randn(n, self.latent_dim, generator=g, dtype=torch.float64)
        if self.prior == "standard_normal":
            return self.decode((temperature * eps).numpy(), y)
        if self.prior == "none":
            return self.decode((self.code_mean + temperature * eps @ self.code_chol.T).numpy(), y)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(2**31, (), generator=g)))
            out = self.model.sample(n, self._label(y, n)) if self.num_classes else self.model.sample(n)
        return out.float().clamp(0, 1)

    def background(self, y: int | None = None) -> Tensor | None:
        """The map's plane decoded: a grid of decoder means, one per cell of the map's extent,
        the top row at the largest v (None for t-SNE, whose points are not a plane)."""
        if not self.map.plane:
            return None
        if y not in self._backgrounds:
            n = min(20, max(8, 512 // max(self.shape[1:])))
            x0, x1, y0, y1 = self.map.extent
            us = x0 + (np.arange(n) + 0.5) * (x1 - x0) / n
            vs = y1 - (np.arange(n) + 0.5) * (y1 - y0) / n
            z = np.stack([self.from_map((u, v)) for v in vs for u in us])
            self._backgrounds[y] = tile(self.decode(z, y), n)
        return self._backgrounds[y]

    def slider_ranges(self) -> list[tuple[float, float]]:
        """(low, high) of each slider dimension (in `order`): [-3, 3] or wider for a N(0, I)
        prior, [0, 1] for binary codes, the codes' range with a 10% margin otherwise."""
        out = []
        for d in self.order:
            lo, hi = float(self.codes[:, d].min()), float(self.codes[:, d].max())
            if self.prior == "standard_normal":
                lo, hi = min(lo, -3.0), max(hi, 3.0)
            elif self.prior == "other":
                lo, hi = 0.0, 1.0
            else:
                pad = 0.1 * max(hi - lo, 1e-3)
                lo, hi = lo - pad, hi + pad
            out.append((lo, hi))
        return out


def _cholesky(c: Tensor) -> Tensor:
    """A lower-triangular L with L L^T = the covariance of the rows of `c` (+ a little jitter)."""
    d = c.shape[1]
    cov = torch.cov(c.T).reshape(d, d) if len(c) > 1 else torch.eye(d, dtype=c.dtype)
    return torch.linalg.cholesky(cov + 1e-6 * torch.eye(d, dtype=c.dtype) * (1 + cov.diagonal().mean()))
