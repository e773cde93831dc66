"""Figures of a trained model, written as PNG files with matplotlib (no display needed).

Each figure is one function taking the model (and test data where it needs images):

  samples        z ~ p(z) (or a fitted mixture, at a temperature) decoded: decoder means
                 ("distributions") and most probable values; a conditional model one
                 labelled row per class
  reconstructions  test images beside their reconstructions            (kind "recon")
  manifold       decoder means over a grid of latent points Phi^-1(u), u on a regular grid
                 of the unit square (Kingma & Welling fig. 4); the two most active dims (or
                 two chosen ones), others 0
  latent         posterior means of test images coloured by label: directly in 2-D, by
                 t-SNE and PCA above; a histogram of q(z_j = 1 | x) for binary latents
  mixture        codes beside samples of a Gaussian mixture fitted to them (kind "latent"
                 with a sampler)
  interpolate    decoder means along straight lines between the codes of pairs of images
  denoise        salt-and-pepper corrupted images beside their reconstructions
  curves         train and test ELBO per epoch (nats per example)
  latent_sweep   samples of models with different latent sizes side by side (K&W fig. 5)

`make(kind, model, dataset, path, ...)` draws one by its command-line name and raises
`NotApplicable` (with the reason) when a figure does not apply to a model, e.g. a manifold
of binary latents. Randomness comes from a `seed` argument; the global RNG is left as it was.
Figures are matplotlib `Figure` objects drawn without pyplot: importing this module leaves
matplotlib's backend and pyplot's state alone.
"""
from __future__ import annotations

import io
from pathlib import Path

import matplotlib
import numpy as np
import torch
from matplotlib.figure import Figure

from .distributions.priors import prior_name
from .evaluation import NotApplicable, posterior_means, subset

KINDS = ("samples", "recon", "manifold", "latent", "interpolate", "denoise", "curves")


# ----------------------------------------------------------------------------- grids
def grid_columns(n: int) -> int:
    """Images per row for a grid of n: the divisor of n nearest above sqrt(n) when it keeps
    the grid within 2:1 (32 -> 8 x 4, 64 -> 8 x 8, 18 -> 6 x 3), so that no row is ragged;
    else ceil(sqrt(n)) (a prime such as 7 -> 3, 3, 1)."""
    root = int(np.ceil(np.sqrt(n)))
    return next((c for c in range(root, int(2 * np.sqrt(n)) + 1) if n % c == 0), root) if n else 1


def image_grid(images: torch.Tensor, nrow: int | None = None, pad: int = 1) -> np.ndarray:
    """(N, C, H, W) images in [0, 1] -> one (rows*H, cols*W[, 3]) array with `pad` pixel gaps;
    `nrow` images per row (default: `grid_columns(N)`)."""
    images = images.detach().float().clamp(0, 1).cpu()
    n, c, h, w = images.shape
    nrow = nrow or grid_columns(n)
    ncol = int(np.ceil(n / nrow))
    grid = torch.ones(c, ncol * (h + pad) + pad, nrow * (w + pad) + pad)
    for i in range(n):
        r, q = divmod(i, nrow)
        grid[:, pad + r * (h + pad): pad + r * (h + pad) + h, pad + q * (w + pad): pad + q * (w + pad) + w] = images[i]
    return grid[0].numpy() if c == 1 else grid.permute(1, 2, 0).numpy()


def _inches(pixels: int) -> float:
    """Display size: small images (8x8 digits) are enlarged more than 28x28 ones."""
    return max(2.2, min(9.0, pixels / 40))


def save_grid(path, images: torch.Tensor, nrow: int | None = None, title: str | None = None,
              row_labels=None) -> Path:
    """Save a grid of images as a PNG (grayscale for one channel); `row_labels` name its rows
    (e.g. the class of each row)."""
    return save_panels(path, [(title, images, nrow, row_labels)])


def save_panels(path, panels, suptitle: str | None = None) -> Path:
    """Several image grids side by side: `panels` = [(title, images (N, C, H, W), nrow), ...],
    each optionally with a fourth item, labels for its rows."""
    panels = [(*p, None) if len(p) == 3 else tuple(p) for p in panels]
    # (title, grid, pixels from one row of images to the next: H + pad, row labels)
    grids = [(t, image_grid(im, nr), im.shape[2] + 1, labels) for t, im, nr, labels in panels]
    widths = [_inches(g.shape[1]) for _, g, _, _ in grids]
    height = max(w * g.shape[0] / g.shape[1] for w, (_, g, _, _) in zip(widths, grids))
    fig = Figure(figsize=(sum(widths) + 0.2 * len(grids), height + (0.45 if suptitle else 0) + 0.35))
    axes = fig.subplots(1, len(grids), squeeze=False, gridspec_kw={"width_ratios": widths})
    for ax, (title, g, step, labels) in zip(axes[0], grids):
        ax.imshow(g, cmap="gray" if g.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
        ax.axis("off")
        if labels is not None:  # row names left of the grid: ticks without the frame
            ax.axis("on")
            ax.set_xticks([])
            ax.set_yticks([step * (r + 0.5) for r in range(len(labels))], [str(t) for t in labels])
            ax.tick_params(length=0)
            for spine in ax.spines.values():
                spine.set_visible(False)
        if title:
            ax.set_title(title, fontsize=10)
    if suptitle:
        fig.suptitle(suptitle)
    return _save(fig, path)


def _save(fig, path) -> Path | io.BytesIO:
    """Write `fig` as PNG to a path (parents created; atomically: drawn into memory, then
    `serialization.atomic_write`, so a kill leaves the old file or the new) or a binary file
    object; cropped to what is drawn plus a margin, so that no title or label is cut at an
    edge."""
    from .serialization import atomic_write
    fig.tight_layout()
    opts = {"dpi": 100, "bbox_inches": "tight", "pad_inches": 0.1}
    if hasattr(path, "write"):
        fig.savefig(path, format="png", **opts)
        return path
    path = Path(path)
    fmt = path.suffix[1:].lower()  # the format named by the suffix (.png, .pdf, .svg, ...)
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt if fmt in fig.canvas.get_supported_filetypes() else "png", **opts)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, buf.getvalue())
    return path


# ----------------------------------------------------------------------------- model helpers
def _where(model):
    p = next(model.parameters())
    return p.device, p.dtype


def _labels_for(model, n: int, label: int | None = None):
    """Labels for a conditional model (`label` for all, else cycling 0..K-1); None otherwise."""
    return model.class_labels(n, label) if model.num_classes else None


def _standard_normal_prior(model) -> str | None:
    """None if the model's prior is N(0, I), else why a figure that needs one does not apply."""
    if prior_name(model.prior) == "standard_normal":
        return None
    return f"the manifold needs a standard normal prior; this model's prior is {prior_name(model.prior)}"


def _binary_codes(model) -> bool:
    return model.prior is not None and model.prior.support == "binary"


def _eval(model):
    was = model.training
    model.eval()
    return was


# ----------------------------------------------------------------------------- figures
@torch.no_grad()
def samples(model, path, n: int = 64, seed: int = 0, nrow: int | None = None, *,
            temperature: float = 1.0, sampler=None, per_class: int | None = None,
            class_names=None) -> Path:
    """Codes z decoded, in two panels (seed report 001 figs. 4-5): the decoder means
    E[x|z] ("distributions") and the most probable values argmax_x p(x|z) (binary images
    thresholded at 1/2 for a Bernoulli likelihood); one panel when the two coincide (a
    continuous likelihood). The codes come from the prior p(z) (an autoencoder: the Gaussian
    fitted to its training codes), or from `sampler` (a `samplers.GMMSampler`, seed report
    001 sec. 5.3), their spread scaled by `temperature`; the figure's title says which.
    A conditional model gets one row per class (`per_class` samples each, default n // K),
    labelled with `class_names` (default: the labels)."""
    was = _eval(model)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            y, nrow, rows = _class_rows(model, n, nrow, per_class, class_names)
            z = _codes(model, n if y is None else len(y), temperature, sampler)
            p = model.decode(z, y)
        panels = [("decoder means E[x|z]", p.mean, nrow, rows)]
        mode = model.likelihood.mode(p)
        if not torch.allclose(mode, p.mean):
            panels.append(("most probable values", mode, nrow, rows))
        return save_panels(path, panels, _source(model, sampler, temperature))
    finally:
        model.train(was)


def _class_rows(model, n: int, nrow, per_class, class_names):
    """(labels, images per row, row labels) of a conditional model's samples, one row per
    class; (None, nrow, None) for other models."""
    k = model.num_classes
    if not k:
        return None, nrow, None
    per = per_class or max(1, n // k)
    names = list(class_names) if class_names is not None and len(class_names) == k else range(k)
    return torch.arange(k).repeat_interleave(per), per, [str(c) for c in names]


def _codes(model, n: int, temperature: float, sampler):
    """n codes from `sampler`, else from the model's prior (or code distribution), at
    `temperature`."""
    if sampler is not None:
        device, dtype = _where(model)
        return sampler.sample_codes(n, temperature=temperature).to(device, dtype)
    return model.sample_latents(n, temperature)


def _source(model, sampler, temperature: float) -> str:
    """Where the codes of `samples` come from, for its title."""
    if sampler is not None:
        what = f"z from a {sampler.n_components}-component Gaussian mixture fitted to the training codes"
    elif model.prior is None:
        what = "z from a Gaussian fitted to the training codes (not a prior)"
    else:
        what = "z ~ p(z)"
    return what + ("" if temperature == 1 else f", temperature {temperature:g}")


@torch.no_grad()
def reconstructions(model, split, path, n: int = 32, seed: int = 0) -> Path:
    """`n` test images (left; chosen at random with `seed`) beside their reconstructions
    E[x | z = E_q z] (right)."""
    was = _eval(model)
    try:
        split = subset(split, n, seed)
        x, y = split.x, split.y
        rec = model.reconstruct(x, y)
        cols = min(8, n)
        return save_panels(path, [("test images", x, cols), ("reconstructions", rec, cols)])
    finally:
        model.train(was)


def manifold_grid(n: int, dims=(0, 1), latent_dim: int = 2) -> torch.Tensor:
    """(n*n, latent_dim) latent points: a regular n x n grid of the unit square, centred in
    its cells ((i + 1/2) / n), passed through the inverse standard-normal CDF, so that each
    point stands for an equal share of prior mass (Kingma & Welling fig. 4). Dims `dims`
    vary (the first across, the second down, increasing upwards); the others stay at 0."""
    u = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    v = torch.special.ndtri(u)
    i, j = dims
    z = torch.zeros(n, n, latent_dim, dtype=torch.float64)
    z[:, :, i] = v[None, :]             # across: dim i
    z[:, :, j] = v.flip(0)[:, None]     # down: dim j, high values at the top
    return z.reshape(n * n, latent_dim).to(torch.get_default_dtype())


@torch.no_grad()
def manifold(model, path, n: int = 20, dims=None, label: int | None = None, split=None,
             class_names=None) -> Path:
    """The learned data manifold: decoder means over `manifold_grid(n, dims)` (K&W fig. 4).
    For a latent of more than two dimensions, dims `dims` vary and the others are 0 (the
    prior's mode); by default the two most active dims over the images of `split`
    (`most_active_dims`; dims 0 and 1 without a split), as the title says. A conditional
    model decodes every point with class `label` (default 0). Not for binary latents or
    models without a standard normal prior."""
    reason = _standard_normal_prior(model)
    if reason:
        raise NotApplicable(reason)
    d = model.latent_dim
    if d < 2:
        raise NotApplicable(f"the manifold needs at least 2 latent dimensions, the model has {d}")
    active = dims is None and split is not None and d > 2
    i, j = (int(k) for k in (most_active_dims(model, split) if active else dims or (0, 1)))
    if not (0 <= i < d and 0 <= j < d) or i == j:
        raise ValueError(f"dims must be two different latent dimensions in 0..{d - 1}, got {dims}")
    was = _eval(model)
    try:
        device, dtype = _where(model)
        z = manifold_grid(n, (i, j), d).to(device, dtype)
        y = _labels_for(model, n * n, 0 if label is None else label)
        x = model.decode(z, y).mean
    finally:
        model.train(was)
    title = "learned manifold" + ("" if d == 2 else f" over dims {i} (across) and {j} (down)"
                                  + (", the two most active" if active else "") + "; others 0")
    if y is not None:
        title += f", class {_name(y[0], class_names)}"
    return save_grid(path, x, n, title)


@torch.no_grad()
def most_active_dims(model, split, n: int = 1000, seed: int = 0) -> tuple[int, int]:
    """The two latent dims whose posterior mean varies most over (up to `n` of) the images of
    `split`, most active first: Var_x E_q[z_u], the activity of `evaluation.active_units`."""
    split = subset(split, n, seed)
    var = posterior_means(model, split.x, split.y).double().var(0, unbiased=False)
    i, j = var.argsort(descending=True)[:2].tolist()
    return i, j


@torch.no_grad()
def latent(model, split, path, n: int = 2000, tsne: bool = True, seed: int = 0,
           class_names=None) -> Path:
    """Posterior means E_q[z] of (up to `n`) test images, coloured by label:
    - a 2-D latent: the means themselves (a scatter);
    - a larger latent: a 2-D PCA projection, and a t-SNE embedding (scikit-learn, perplexity
      30, PCA initialization, seeded) when `tsne` is true;
    - binary latents: a histogram of the means q(z_j = 1 | x) over all units, stacked by
      label (seed report 001 fig. 6).
    Legends name the classes by `class_names` where given (e.g. CIFAR-10's), else by label."""
    split = subset(split, n, seed)
    m = posterior_means(model, split.x, split.y).double().cpu().numpy()
    labels = None if split.y is None else split.y.cpu().numpy()
    if _binary_codes(model):
        fig = Figure(figsize=(6, 3.8))
        ax = fig.subplots()
        if labels is None:
            ax.hist(m.ravel(), bins=50, color="C0")
        else:
            classes = np.unique(labels)
            ax.hist([m[labels == c].ravel() for c in classes], bins=50, stacked=True,
                    label=[_name(c, class_names) for c in classes], color=[_color(c) for c in classes])
            ax.legend(title="label", fontsize=7, ncol=2)
        ax.set_xlabel("posterior mean q(z_j = 1 | x), all units")
        ax.set_ylabel("count")
        ax.set_title(f"binary latent codes ({m.shape[1]} units, {m.shape[0]} test images)")
        return _save(fig, path)
    panels = []
    if m.shape[1] == 1:
        panels.append(("posterior means", np.c_[m[:, 0], np.zeros(len(m))], ("z", "")))
    elif m.shape[1] == 2:
        panels.append(("posterior means", m, ("z1", "z2")))
    else:
        from sklearn.decomposition import PCA
        pca = PCA(2, random_state=seed).fit(m)
        share = pca.explained_variance_ratio_.sum()
        panels.append((f"PCA ({share:.0%} of the variance)", pca.transform(m), ("PC 1", "PC 2")))
        if tsne:
            panels.append(("t-SNE", _tsne(m, seed), ("", "")))
    fig = Figure(figsize=(5.2 * len(panels), 4.6))
    axes = fig.subplots(1, len(panels), squeeze=False)
    for ax, (title, pts, (xl, yl)) in zip(axes[0], panels):
        _scatter(ax, pts, labels, class_names)
        ax.set_title(title)
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
    fig.suptitle(f"posterior means of {len(m)} test images ({m.shape[1]}-D latent)")
    return _save(fig, path)


def _tsne(m: np.ndarray, seed: int) -> np.ndarray:
    """2-D t-SNE of the rows of m: Barnes-Hut, or the exact gradient for a few hundred points
    (as fast there, and more accurate)."""
    from sklearn.manifold import TSNE
    return TSNE(2, perplexity=min(30.0, max(2.0, (len(m) - 1) / 3)), init="pca",
                method="exact" if len(m) <= 300 else "barnes_hut",
                random_state=seed).fit_transform(m)


def _color(c):
    return matplotlib.colormaps["tab10"](int(c) % 10)


def _name(c, class_names) -> str:
    """Label c by its class name where there is one."""
    return str(class_names[int(c)]) if class_names is not None and 0 <= int(c) < len(class_names) else str(c)


def _scatter(ax, pts, labels, class_names=None):
    if labels is None:
        ax.scatter(pts[:, 0], pts[:, 1], s=4, alpha=0.6)
        return
    for c in np.unique(labels):
        k = labels == c
        ax.scatter(pts[k, 0], pts[k, 1], s=4, alpha=0.7, color=_color(c), label=_name(c, class_names))
    ax.legend(markerscale=3, fontsize=7, loc="best", ncol=2, title="class")


@torch.no_grad()
def mixture(model, split, sampler, path, n: int = 2000, seed: int = 0, class_names=None) -> Path:
    """Ex-post density estimation seen in the latent space (seed report 001 fig. 9): the
    codes of (up to `n`) images of `split` coloured by label, and beside them as many codes
    drawn from `sampler` (a `samplers.GMMSampler` fitted to the training codes) scattered
    over the same codes in grey. A latent of more than two dims is shown in the codes' 2-D PCA."""
    split = subset(split, n, seed)
    m = posterior_means(model, split.x, split.y).double().cpu().numpy()
    g = torch.Generator().manual_seed(seed)
    drawn = sampler.sample_codes(len(m), generator=g).double().cpu().numpy()
    axes_names, project = ("z1", "z2"), (lambda a: a)
    if m.shape[1] == 1:
        axes_names, project = ("z", ""), (lambda a: np.c_[a[:, 0], np.zeros(len(a))])
    elif m.shape[1] > 2:
        from sklearn.decomposition import PCA
        pca = PCA(2, random_state=seed).fit(m)
        axes_names, project = ("PC 1 of the codes", "PC 2"), pca.transform
    pts, dots = project(m), project(drawn)
    fig = Figure(figsize=(10.4, 4.6))
    axes = fig.subplots(1, 2, sharex=True, sharey=True)
    _scatter(axes[0], pts, None if split.y is None else split.y.cpu().numpy(), class_names)
    axes[0].set_title(f"codes of {len(m)} images")
    axes[1].scatter(pts[:, 0], pts[:, 1], s=4, color="0.8", label="codes")
    axes[1].scatter(dots[:, 0], dots[:, 1], s=4, color="C3", alpha=0.6, label="mixture samples")
    axes[1].legend(markerscale=3, fontsize=7, loc="best")
    axes[1].set_title(f"{len(dots)} samples of the {sampler.n_components}-component mixture")
    for ax in axes:
        ax.set_xlabel(axes_names[0])
        ax.set_ylabel(axes_names[1])
    fig.suptitle(f"Gaussian mixture on the {m.shape[1]}-D codes (ex-post density estimation)")
    return _save(fig, path)


@torch.no_grad()
def interpolate(model, split, path, pairs: int = 8, steps: int = 10, seed: int = 0) -> Path:
    """Decoder means along the straight line z(t) = (1 - t) z_a + t z_b, t = 0..1 in `steps`
    steps, between the posterior means of `pairs` random pairs of test images (one row per
    pair, the two images at its ends)."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(split), generator=g)[:2 * pairs]
    if len(idx) < 2:
        raise NotApplicable("interpolation needs at least two test images")
    pairs = len(idx) // 2
    a, b = split[idx[:pairs]], split[idx[pairs:2 * pairs]]
    was = _eval(model)
    try:
        za = posterior_means(model, a.x, a.y)
        zb = posterior_means(model, b.x, b.y)
        t = torch.linspace(0, 1, steps, dtype=za.dtype)
        z = (za[:, None] * (1 - t)[None, :, None] + zb[:, None] * t[None, :, None])
        z = z.reshape(pairs * steps, -1)
        y = None if a.y is None or not model.num_classes else \
            a.y.repeat_interleave(steps)  # a conditional model keeps the first image's class
        x = model.decode(z, y).mean.reshape(pairs, steps, *a.x.shape[1:])
    finally:
        model.train(was)
    rows = torch.cat([a.x[:, None], x, b.x[:, None]], 1).reshape(-1, *a.x.shape[1:])
    return save_grid(path, rows, steps + 2,
                     "interpolation between posterior means (real images at the ends)")


@torch.no_grad()
def denoise(model, split, path, rate: float = 0.2, n: int = 16, seed: int = 0) -> Path:
    """Salt-and-pepper denoising: `n` clean test images, the same with a fraction `rate` of
    their pixels set to 0 or 1 at random, and the reconstructions of the noisy ones (images
    chosen at random with `seed`)."""
    from .data import salt_and_pepper
    split = subset(split, n, seed)
    x, y = split.x, split.y
    noisy = salt_and_pepper(x, rate, generator=torch.Generator().manual_seed(seed))
    was = _eval(model)
    try:
        rec = model.reconstruct(noisy, y)
    finally:
        model.train(was)
    cols = min(4, n)
    return save_panels(path, [("clean", x, cols), (f"noisy (rate {rate:g})", noisy, cols),
                              ("reconstruction", rec, cols)])


def curves(history: list[dict], path, keys=("elbo",)) -> Path:
    """Train and test values per epoch (ELBO in nats per example by default); one panel per
    key present in `history` (the records of metrics.jsonl)."""
    keys = [k for k in keys if any(f"train_{k}" in r or f"test_{k}" in r for r in history)] or list(keys)[:1]
    fig = Figure(figsize=(5 * len(keys), 3.5))
    axes = fig.subplots(1, len(keys), squeeze=False)
    epochs = [r["epoch"] for r in history]
    for ax, key in zip(axes[0], keys):
        for split in ("train", "test"):
            vals = [r.get(f"{split}_{key}") for r in history]
            if any(v is not None for v in vals):
                ax.plot(epochs, [np.nan if v is None else v for v in vals],
                        marker="." if len(epochs) < 30 else None, label=split)
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"{key} (nats per example)")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    return _save(fig, path)


def tradeoff(points, path, title: str | None = None) -> Path:
    """Rate against distortion of several runs: test KL(q(z|x) || p(z)) (x axis) and
    -E_q log p(x|z) (y axis), in nats per example, one labelled point per run; e.g. a sweep
    over beta, where a larger KL weight buys a smaller KL with a worse reconstruction."""
    fig = Figure(figsize=(5, 4))
    ax = fig.subplots()
    kl = [p[2] for p in points]
    dist = [-p[1] for p in points]
    ax.plot(kl, dist, marker="o")
    for (label, _, _), x, y in zip(points, kl, dist):
        ax.annotate(str(label), (x, y), textcoords="offset points", xytext=(5, 5))
    ax.set_xlabel("rate: KL(q(z|x) || p(z)) (nats per example)")
    ax.set_ylabel("distortion: -E_q log p(x|z) (nats)")
    ax.set_title(title or "reconstruction / KL trade-off")
    ax.grid(alpha=0.3)
    return _save(fig, path)


@torch.no_grad()
def latent_sweep(models, path, n: int = 100, seed: int = 0, title: str | None = None) -> Path:
    """Samples (decoder means, z ~ p(z)) of several models side by side, one panel each:
    `models` = [(label, model), ...], e.g. latent sizes 2, 5, 10, 20 (Kingma & Welling
    fig. 5). Every model draws from the same seed."""
    panels = []
    for label, model in models:
        was = _eval(model)
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                x = model.sample(n)
        finally:
            model.train(was)
        panels.append((str(label), x, None))
    return save_panels(path, panels, title)


# ----------------------------------------------------------------------------- by name
def applies(kind: str, model) -> str | None:
    """None if figure `kind` applies to `model`, else the reason it does not."""
    if kind == "manifold":
        reason = _standard_normal_prior(model)
        if reason:
            return reason
        if model.latent_dim < 2:
            return "the manifold needs at least 2 latent dimensions"
    return None


def make(kind: str, model, dataset, path, history=None, *, n: int | None = None,
         dims=None, rate: float = 0.2, tsne: bool = True, seed: int = 0,
         label: int | None = None, per_class: int | None = None, temperature: float = 1.0,
         sampler=None, class_names=None) -> Path:
    """Draw figure `kind` (one of `KINDS`) of `model` with the test split of `dataset` into
    `path`. `per_class` (samples of a conditional model): that many samples of each class;
    `temperature` and `sampler` (a fitted `samplers.GMMSampler`): where the samples' codes
    come from, and for "latent" a sampler draws `mixture` (its samples over the test
    codes); `class_names` (default: the dataset's) label classes. Raises NotApplicable (with
    the reason) when the figure does not fit the model or what is given (e.g. curves
    without a training history)."""
    reason = applies(kind, model)
    if reason:
        raise NotApplicable(reason)
    test = None if dataset is None else dataset.test
    if kind in ("recon", "latent", "interpolate", "denoise") and test is None:
        raise NotApplicable(f"figure {kind!r} needs the test images, and the dataset is not available")
    if class_names is None and dataset is not None:
        class_names = getattr(dataset, "info", {}).get("classes")
    kw = {} if n is None else {"n": n}
    if kind == "samples":
        if per_class and not model.num_classes:
            raise NotApplicable("--per-class needs a conditional model (trained with conditional: true)")
        return samples(model, path, seed=seed, per_class=per_class, temperature=temperature,
                       sampler=sampler, class_names=class_names, **kw)
    if kind == "recon":
        return reconstructions(model, test, path, seed=seed, **kw)
    if kind == "manifold":
        return manifold(model, path, dims=dims, label=label, split=test, class_names=class_names, **kw)
    if kind == "latent" and sampler is not None:
        return mixture(model, test, sampler, path, seed=seed, class_names=class_names, **kw)
    if kind == "latent":
        return latent(model, test, path, tsne=tsne, seed=seed, class_names=class_names, **kw)
    if kind == "interpolate":
        return interpolate(model, test, path, seed=seed, **({} if n is None else {"pairs": n}))
    if kind == "denoise":
        return denoise(model, test, path, rate=rate, seed=seed, **kw)
    if kind == "curves":
        if not history:
            raise NotApplicable("no training history (metrics.jsonl) to plot")
        return curves(history, path, keys=("elbo", "kl"))
    raise ValueError(f"unknown figure {kind!r}; choose one of {', '.join(KINDS)} (or latent-sweep "
                     "for a sweep directory)")
