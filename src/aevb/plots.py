"""Figures, written as PNG files with matplotlib (no display needed)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402


def image_grid(images: torch.Tensor, nrow: int | None = None, pad: int = 1) -> np.ndarray:
    """(N, C, H, W) images in [0, 1] -> one (rows*H, cols*W[, 3]) array with `pad` pixel gaps."""
    images = images.detach().float().clamp(0, 1).cpu()
    n, c, h, w = images.shape
    nrow = nrow or int(np.ceil(np.sqrt(n)))
    ncol = int(np.ceil(n / nrow))
    grid = torch.ones(c, ncol * (h + pad) + pad, nrow * (w + pad) + pad)
    for i in range(n):
        r, q = divmod(i, nrow)
        grid[:, pad + r * (h + pad): pad + r * (h + pad) + h, pad + q * (w + pad): pad + q * (w + pad) + w] = images[i]
    return grid[0].numpy() if c == 1 else grid.permute(1, 2, 0).numpy()


def save_grid(path, images: torch.Tensor, nrow: int | None = None, title: str | None = None) -> Path:
    """Save a grid of images as a PNG (grayscale for one channel)."""
    grid = image_grid(images, nrow)
    fig, ax = plt.subplots(figsize=(max(3, grid.shape[1] / 40), max(3, grid.shape[0] / 40) + (0.4 if title else 0)))
    ax.imshow(grid, cmap="gray" if grid.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
    ax.axis("off")
    if title:
        ax.set_title(title)
    return _save(fig, path)


def curves(history: list[dict], path, keys=("elbo",)) -> Path:
    """Train and test values per epoch (ELBO in nats per example by default)."""
    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 3.5), squeeze=False)
    epochs = [r["epoch"] for r in history]
    for ax, key in zip(axes[0], keys):
        for split in ("train", "test"):
            vals = [r.get(f"{split}_{key}") for r in history]
            if any(v is not None for v in vals):
                ax.plot(epochs, vals, marker="." if len(epochs) < 30 else None, label=split)
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"{key} (nats per example)")
        ax.grid(alpha=0.3)
        ax.legend()
    return _save(fig, path)


def samples(model, path, n: int = 64) -> Path:
    """A grid of decoder means for z drawn from the prior."""
    return save_grid(path, model.sample(n), title="samples from the prior (decoder means)")


def reconstructions(model, split, path, n: int = 32) -> Path:
    """Test images (odd rows) above their reconstructions (even rows)."""
    x = split.x[:n]
    y = None if split.y is None else split.y[:n]
    rec = model.reconstruct(x, y)
    cols = min(8, n)
    rows = [t for i in range(0, n, cols) for t in (x[i:i + cols], rec[i:i + cols])]
    return save_grid(path, torch.cat(rows), nrow=cols, title="test images / reconstructions")


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
