"""Uses of a density model (seed 000 sec. 3): anomaly scores, and filling in missing pixels.

- `anomaly_scores`: -log p(x) per image, importance-sampled (`aevb.evaluation.log_likelihood`);
  a conditional model is scored by its marginal p(x) = 1/K sum_y p(x|y), since an anomaly's
  label is unknown; an autoencoder, which has no likelihood, by its reconstruction loss
  -log p(x | z = enc(x)). Higher = more anomalous. `roc_auc` tells two sets apart with them
  (sklearn.metrics.roc_auc_score; 1 = perfect, 0.5 = chance). Raw likelihoods favour simple
  images (a held-out "1" looks *more* likely than the training digits, Nalisnick et al.
  2019); `likelihood_ratio_scores` corrects that with a structure-free `PixelBackground`.
- `impute`: fill in the pixels of a mask by iterating encode -> decode on the missing part
  (pseudo-Gibbs, Rezende et al. 2014), or with a Metropolis-within-Gibbs step on z that makes
  it a proper MCMC sampler of p(x_missing | x_observed) (Mattei & Frellsen 2018).
- `load_images`: a dataset name or an image file (NPZ or IDX), prepared as the run's data was.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import torch
from torch import Tensor

from .data import DataError, Split
from .models.base import check_shape

MASKS = ("top-half", "bottom-half", "left-half", "right-half", "random:P", "square:S")


# ----------------------------------------------------------------------------- images
def run_config(run):
    """The Config of a run directory (its config.json), or None for a bare checkpoint."""
    from . import config as config_mod
    path = Path(run)
    f = path / "config.json" if path.is_dir() else path.parent / "config.json"
    if not f.exists():
        return None
    try:
        return config_mod.make_config(f)
    except config_mod.ConfigError:
        return None  # a model directory written by Model.save: a model config, not a run's


def load_images(spec: str, cfg=None, split: str = "test", data_dir=None, limit: int | None = None,
                classes=None) -> Split:
    """Images named by `spec`: a file (.npz with x_test / x / images arrays, or an IDX file
    such as t10k-images-idx3-ubyte.gz, labels read from its -labels- sibling when there) or a
    registered dataset name (its `split`; all its classes, not the run's `classes`, unless
    `classes` is given). Binarized as the run's data was (`cfg.binarize`; once, with the
    fixed evaluation seed)."""
    from . import config as config_mod
    from .data import EVAL_BINARIZE_SEED, subset, transforms
    binarize = cfg.binarize if cfg is not None else "none"
    path = Path(spec)
    if path.suffix in (".npz", ".gz", ".idx") or "-ubyte" in path.name or path.is_file():
        images = subset(Split(*_read_image_file(path, split)), limit)
        if binarize != "none":
            images = Split(transforms.binarize(images.x, torch.Generator().manual_seed(EVAL_BINARIZE_SEED)), images.y)
        return images
    if split not in ("train", "test"):
        raise DataError(f"split must be 'train' or 'test', got {split!r}")
    base = cfg if cfg is not None else config_mod.Config()
    same = cfg is not None and spec == cfg.dataset
    c = dataclasses.replace(base, dataset=spec, binarize=binarize, limit=limit, classes=classes,
                            data_dir=data_dir or (base.data_dir if same else None))
    ds = config_mod.load_dataset(c)
    s = getattr(ds, split)
    if split == "train" and binarize == "dynamic":  # the train split is kept gray for dynamic draws
        s = Split(transforms.binarize(s.x, torch.Generator().manual_seed(EVAL_BINARIZE_SEED)), s.y)
    return s


def run_images(cfg, split: str = "train") -> Split:
    """The run's own images: its dataset's `split`, only its `classes`, binarized as above."""
    return load_images(cfg.dataset, cfg, split, classes=cfg.classes)


def _read_image_file(path: Path, split: str) -> tuple[Tensor, Tensor | None]:
    import numpy as np

    from .data.readers import images_and_labels, read_idx, read_npz
    if not path.exists():
        raise DataError(f"{path}: no such file, and not a registered dataset name")
    if path.suffix == ".npz":
        arrays = read_npz(path, keys=())
        for xk, yk in ((f"x_{split}", f"y_{split}"), ("x", "y"), ("images", "labels")):
            if xk in arrays:
                x, y = arrays[xk], arrays.get(yk)
                break
        else:
            raise DataError(f"{path}: expected an array x_{split}, x or images; found {sorted(arrays)}")
    else:
        x = read_idx(path)
        lab = path.with_name(path.name.replace("images-idx3", "labels-idx1"))
        y = read_idx(lab) if lab != path and lab.exists() else None
    x, y = images_and_labels(np.asarray(x), None if y is None else np.asarray(y), str(path), str(path))
    xt = torch.as_tensor(x)
    xt = xt.float().div_(255.0) if xt.dtype == torch.uint8 else xt.float()
    if xt.min() < 0 or xt.max() > 1:
        raise DataError(f"{path}: pixel values must be in [0, 1] (or uint8 0..255), found "
                        f"{xt.min().item():.3g}..{xt.max().item():.3g}")
    return xt, None if y is None else torch.as_tensor(y).long()


# ----------------------------------------------------------------------------- anomaly scores
def _is_density(model) -> bool:
    return hasattr(model, "prior")


@torch.no_grad()
def anomaly_scores(model, x: Tensor, y: Tensor | None = None, samples: int = 100,
                   batch_size: int = 100, seed: int = 0) -> Tensor:
    """An anomaly score per image (N,), in nats: -log p(x) estimated with `samples`
    importance samples (a VAE), or the reconstruction loss -log p(x|enc(x)) (an autoencoder).
    A conditional VAE gives -log p(x|y) when labels `y` are passed, else the marginal
    -log (1/K sum_y p(x|y))."""
    from .evaluation import log_likelihood
    model.eval()
    check_shape(model, x)
    k = getattr(model, "num_classes", 0)
    if not _is_density(model):
        out = []
        for i in range(0, len(x), batch_size):
            xb = x[i:i + batch_size]
            yb = None if not k else (y[i:i + batch_size] if y is not None else None)
            if k and yb is None:
                raise ValueError("a conditional autoencoder needs labels to score images")
            out.append(-model.decode(model.encode(xb, yb), yb).log_prob(xb))
        return torch.cat(out)
    if k and y is None:
        per_class = torch.stack([log_likelihood(model, x, torch.full((len(x),), c, dtype=torch.long),
                                                samples=samples, batch_size=batch_size, seed=seed)
                                 for c in range(k)])
        return -(torch.logsumexp(per_class, 0) - math.log(k))
    return -log_likelihood(model, x, y if k else None, samples=samples, batch_size=batch_size, seed=seed)


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


# ----------------------------------------------------------------------------- imputation
def make_mask(spec: str, shape, n: int = 1, generator: torch.Generator | None = None) -> Tensor:
    """A boolean mask (n, C, H, W), True where a pixel is missing. `spec`: top-half,
    bottom-half, left-half, right-half (of the image), random:P (each pixel missing with
    probability P, drawn per image), square:S (a centered S x S square)."""
    c, h, w = shape
    m = torch.zeros(n, c, h, w, dtype=torch.bool)
    kind, _, arg = spec.partition(":")
    if kind == "top-half":
        m[:, :, : h // 2] = True
    elif kind == "bottom-half":
        m[:, :, h // 2:] = True
    elif kind == "left-half":
        m[:, :, :, : w // 2] = True
    elif kind == "right-half":
        m[:, :, :, w // 2:] = True
    elif kind == "random":
        p = _number(spec, arg, float)
        if not 0 < p < 1:
            raise ValueError(f"mask {spec!r}: the missing fraction must be in (0, 1)")
        m = (torch.rand(n, 1, h, w, generator=generator) < p).expand(n, c, h, w).clone()
    elif kind == "square":
        s = _number(spec, arg, int)
        if not 0 < s <= min(h, w):
            raise ValueError(f"mask {spec!r}: the side must be in 1..{min(h, w)}")
        top, left = (h - s) // 2, (w - s) // 2
        m[:, :, top:top + s, left:left + s] = True
    else:
        raise ValueError(f"unknown mask {spec!r}; choose one of {', '.join(MASKS)}")
    return m


def _number(spec, arg, kind):
    try:
        return kind(arg)
    except ValueError:
        raise ValueError(f"mask {spec!r}: expected a number after ':'") from None


@dataclasses.dataclass
class Imputation:
    filled: Tensor          # observed pixels kept, missing ones = posterior mean estimate
    last: Tensor            # the chain's last state (a sample of the missing pixels)
    acceptance: float | None = None  # Metropolis-within-Gibbs acceptance rate


@torch.no_grad()
def impute(model, x: Tensor, mask: Tensor, y: Tensor | None = None, iterations: int = 100,
           method: str = "gibbs", burn_in: int | None = None, seed: int = 0) -> Imputation:
    """Fill in the pixels where `mask` is True.

    method "gibbs" (pseudo-Gibbs): repeat z ~ q(z|x), x_miss ~ p(x_miss|z).
    method "mh" (Metropolis-within-Gibbs): propose z' ~ q(z|x) and accept it with probability
      min(1, p(x|z') p(z') q(z|x) / (p(x|z) p(z) q(z'|x))), then x_miss ~ p(x_miss|z).
    `filled` holds the average decoder mean on the missing pixels over the iterations after
    `burn_in` (default: half), an estimate of E[x_miss | x_obs]. An autoencoder (no
    distribution over z) iterates x_miss <- reconstruction deterministically.
    """
    if method not in ("gibbs", "mh"):
        raise ValueError(f"method must be 'gibbs' or 'mh', got {method!r}")
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    check_shape(model, x)
    mask = mask.expand_as(x)
    if getattr(model, "num_classes", 0) and y is None:
        raise ValueError("a conditional model needs the images' labels to impute")
    model.eval()
    burn_in = iterations // 2 if burn_in is None else min(burn_in, iterations - 1)
    density = _is_density(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        cur = torch.where(mask, torch.rand_like(x), x)
        if type(model.likelihood).__name__ == "BernoulliLikelihood":
            cur = torch.where(mask, torch.bernoulli(torch.full_like(x, 0.5)), x)
        total, count = torch.zeros_like(x), 0
        z = None
        accepted = proposed = 0
        for it in range(iterations):
            if not density:
                p = model.decode(model.encode(cur, y), y)
                new = p.mean
            else:
                q = model.encode(cur, y)
                z_new = q.sample()
                if method == "mh" and z is not None:
                    prior = model.prior(x.device, x.dtype)
                    lt_new = model.decode(z_new, y).log_prob(cur) + prior.log_prob(z_new)
                    lt_old = model.decode(z, y).log_prob(cur) + prior.log_prob(z)
                    log_ratio = lt_new - lt_old + q.log_prob(z) - q.log_prob(z_new)
                    accept = torch.rand_like(log_ratio).log() < log_ratio
                    accepted += int(accept.sum())
                    proposed += len(accept)
                    z = torch.where(accept.unsqueeze(1), z_new, z)
                else:
                    z = z_new
                p = model.decode(z, y)
                new = p.sample()
            cur = torch.where(mask, new, x)
            if it >= burn_in:
                total += p.mean
                count += 1
        filled = torch.where(mask, total / count, x)
    return Imputation(filled, cur, accepted / proposed if proposed else None)


def missing_error(filled: Tensor, x: Tensor, mask: Tensor) -> Tensor:
    """Mean squared error over the missing pixels, per image (N,)."""
    mask = mask.expand_as(x).to(x.dtype)
    return ((filled - x) ** 2 * mask).flatten(1).sum(1) / mask.flatten(1).sum(1).clamp(min=1)


def imputation_figure(path, x: Tensor, mask: Tensor, filled: Tensor, columns: int = 8) -> Path:
    """Rows of masked images (missing pixels gray), their imputations and the true images."""
    from . import plots
    mask = mask.expand_as(x)
    masked = torch.where(mask, torch.full_like(x, 0.5), x)
    n = len(x)
    cols = min(columns, n)
    rows = [t for i in range(0, n, cols) for t in (masked[i:i + cols], filled[i:i + cols], x[i:i + cols])]
    return plots.save_grid(path, torch.cat(rows), nrow=cols, title="masked / imputed / true")
