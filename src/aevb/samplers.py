"""Ways to draw images from a trained model, kept apart from the models themselves.

- `GMMSampler`: "ex-post density estimation" (seed 001 sec. 5.3; Ghosh et al. 2020, pythae's
  two-stage sampler): fit a Gaussian mixture (scikit-learn) to the codes of the training
  images (an autoencoder's codes, or a VAE's posterior means), then sample a component,
  a code from it, and decode. Works for `Autoencoder` and `VAE` alike.
- `samples_per_class` / `per_class_grid`: a conditional model's samples, one row per class.

A fitted mixture is saved as safetensors (weights, means, covariances) plus a JSON file
describing it; never pickled.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from .data import Split
from .evaluation import posterior_means
from .serialization import CheckpointError, load_tensors, save_tensors, write_json

COVARIANCE_TYPES = ("full", "diag", "tied", "spherical")


def _x_and_y(data, y=None):
    """Images and labels from a Split, a (x, y) pair or a tensor."""
    if isinstance(data, Split):
        return data.x, data.y if y is None else y
    if isinstance(data, (tuple, list)):
        return data[0], data[1] if y is None else y
    return data, y


@torch.no_grad()
def codes(model, data, y=None, batch_size: int = 1000) -> Tensor:
    """The code of every image (`model.embed`: an autoencoder's code, a VAE's posterior
    mean), computed in batches; (N, latent_dim)."""
    x, y = _x_and_y(data, y)
    if model.num_classes and y is None:
        raise ValueError("a conditional model needs the images' labels to encode them")
    return posterior_means(model, x, y, batch_size)


class GMMSampler:
    """A Gaussian mixture p(z) = sum_k w_k N(z; mu_k, Sigma_k) over a model's codes, and the
    model's decoder: `GMMSampler.fit(model, ds.train, n_components=30).sample(64)`."""

    def __init__(self, model, weights: Tensor, means: Tensor, covariances: Tensor, info: dict | None = None):
        k, d = means.shape
        if weights.shape != (k,) or covariances.shape != (k, d, d):
            raise ValueError(f"mixture parameters do not fit: weights {tuple(weights.shape)}, means "
                             f"{tuple(means.shape)}, covariances {tuple(covariances.shape)}")
        if d != model.latent_dim:
            raise ValueError(f"mixture over {d}-dimensional codes, but the model has latent_dim "
                             f"{model.latent_dim}")
        self.model = model
        self.weights, self.means, self.covariances = weights.double(), means.double(), covariances.double()
        self.scale_tril = torch.linalg.cholesky(self.covariances)
        self.info = dict(info or {})

    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    @classmethod
    def fit(cls, model, data, n_components: int = 30, covariance_type: str = "full", y=None,
            seed: int = 0, max_iter: int = 200, reg_covar: float = 1e-6) -> "GMMSampler":
        """Fit a `n_components`-component mixture (sklearn.mixture.GaussianMixture, k-means
        initialization, seeded) to the codes of `data` (a Split, (x, y) or image tensor)."""
        from sklearn.mixture import GaussianMixture
        if covariance_type not in COVARIANCE_TYPES:
            raise ValueError(f"covariance_type must be one of {COVARIANCE_TYPES}, got {covariance_type!r}")
        z = codes(model, data, y).double().cpu().numpy()
        if n_components < 1 or n_components > len(z):
            raise ValueError(f"n_components must be in 1..{len(z)} (the number of codes), got {n_components}")
        gmm = GaussianMixture(n_components, covariance_type=covariance_type, random_state=seed,
                              max_iter=max_iter, reg_covar=reg_covar).fit(z)
        d = z.shape[1]
        cov = torch.as_tensor(gmm.covariances_)
        if covariance_type == "diag":
            cov = torch.diag_embed(cov)
        elif covariance_type == "tied":
            cov = cov.expand(n_components, d, d)
        elif covariance_type == "spherical":
            cov = cov[:, None, None] * torch.eye(d, dtype=cov.dtype)
        info = {"n_components": n_components, "covariance_type": covariance_type, "seed": seed,
                "fitted_on": len(z), "converged": bool(gmm.converged_),
                "mean_log_density": float(gmm.score(z)), "model": model.full_config()}
        return cls(model, torch.as_tensor(gmm.weights_), torch.as_tensor(gmm.means_), cov.contiguous(), info)

    def mixture(self) -> torch.distributions.MixtureSameFamily:
        return torch.distributions.MixtureSameFamily(
            torch.distributions.Categorical(probs=self.weights, validate_args=False),
            torch.distributions.MultivariateNormal(self.means, scale_tril=self.scale_tril, validate_args=False),
            validate_args=False)

    def log_density(self, z: Tensor) -> Tensor:
        """log p(z) under the mixture, per code."""
        return self.mixture().log_prob(z.double())

    def sample_codes(self, n: int, generator: torch.Generator | None = None,
                     temperature: float = 1.0) -> Tensor:
        """n codes: a component k ~ Categorical(w), then z ~ N(mu_k, T^2 Sigma_k) for
        temperature T (1: the fitted mixture); (n, latent_dim)."""
        if not temperature > 0:
            raise ValueError(f"temperature must be a positive number, got {temperature!r}")
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        eps = torch.randn(n, self.means.shape[1], dtype=torch.float64, generator=generator)
        return self.means[k] + temperature * (self.scale_tril[k] @ eps[:, :, None]).squeeze(2)

    @torch.no_grad()
    def sample(self, n: int, y=None, mean: bool = True, generator: torch.Generator | None = None,
               temperature: float = 1.0) -> Tensor:
        """n images: decoder means (default) or draws of p(x|z) at codes from the mixture
        (`temperature` as in `sample_codes`). A conditional model takes labels y as in
        `model.sample`."""
        p = next(self.model.parameters())
        z = self.sample_codes(n, generator, temperature).to(device=p.device, dtype=p.dtype)
        out = self.model.decode(z, self.model.class_labels(n, y))
        return out.mean if mean else out.sample()

    def save(self, path) -> Path:
        """Write `path`.safetensors (weights, means, covariances) and `path`.json (what it is)."""
        path = Path(path)
        path = path.with_suffix("") if path.suffix in (".safetensors", ".json") else path
        path.parent.mkdir(parents=True, exist_ok=True)
        save_tensors(path.with_suffix(".safetensors"), {"weights": self.weights, "means": self.means,
                                                         "covariances": self.covariances}, self.info)
        write_json(path.with_suffix(".json"), self.info)
        return path.with_suffix(".safetensors")

    @classmethod
    def load(cls, path, model) -> "GMMSampler":
        path = Path(path)
        path = path.with_suffix(".safetensors")
        tensors, info = load_tensors(path)
        missing = {"weights", "means", "covariances"} - set(tensors)
        if missing:
            raise CheckpointError(f"{path}: not a saved GMMSampler (missing {sorted(missing)})")
        return cls(model, tensors["weights"], tensors["means"], tensors["covariances"], info)


@torch.no_grad()
def samples_per_class(model, n_per_class: int, mean: bool = True) -> Tensor:
    """n_per_class samples of each class of a conditional model, class-major:
    (num_classes * n_per_class, C, H, W), rows 0..n-1 of class 0, then class 1, ..."""
    k = model.num_classes
    if not k:
        raise ValueError("samples per class need a conditional model (trained with conditional: true)")
    if n_per_class < 1:
        raise ValueError(f"n_per_class must be >= 1, got {n_per_class}")
    y = torch.arange(k).repeat_interleave(n_per_class)
    return model.sample(len(y), y, mean=mean)


def per_class_grid(model, n_per_class: int, path, mean: bool = True) -> Path:
    """A PNG grid of a conditional model's samples: one row per class, n_per_class columns."""
    from . import plots
    images = samples_per_class(model, n_per_class, mean)
    return plots.save_grid(path, images, nrow=n_per_class,
                           title=f"{n_per_class} samples per class (rows: class 0..{model.num_classes - 1})")


__all__ = ["GMMSampler", "codes", "per_class_grid", "samples_per_class"]
