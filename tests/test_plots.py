"""Figures: the manifold grid's values, and every figure drawn (a real, non-blank PNG) for
the models it applies to, refused with a reason for those it does not."""
from __future__ import annotations

import matplotlib.image as mpimg
import numpy as np
import pytest
import torch

from aevb import cli, data, plots, train
from aevb.distributions import LATENTS
from aevb.evaluation import NotApplicable
from aevb.models import VAE


def png(path) -> np.ndarray:
    img = mpimg.imread(str(path))
    assert img.ndim == 3 and img.shape[0] > 50 and img.shape[1] > 50
    assert img[..., :3].std() > 0.05, f"{path} looks blank"
    return img


@pytest.fixture(scope="module")
def digits():
    return data.load("digits", binarize="dynamic")


def trained(ds, epochs=2, **kw):
    torch.manual_seed(0)
    model = VAE.mlp(ds.shape, hidden=(32,), **kw)
    return train(model, ds, epochs=epochs, batch_size=100, progress=False)


@pytest.fixture(scope="module")
def run2(digits):
    return trained(digits, latent_dim=2)


def test_manifold_grid_is_the_inverse_normal_cdf_of_a_regular_grid():
    z = plots.manifold_grid(4, dims=(1, 2), latent_dim=3).view(4, 4, 3)
    v = torch.special.ndtri(torch.tensor([0.125, 0.375, 0.625, 0.875]))
    assert torch.allclose(z[0, :, 1], v)                   # across: dim 1 increases
    assert torch.allclose(z[:, 0, 2], v.flip(0))            # down: dim 2 decreases
    assert torch.all(z[..., 0] == 0)                        # the others stay at the prior mode
    assert torch.allclose(z[..., 1].sum(), torch.tensor(0.0), atol=1e-5)  # symmetric


def test_image_grid_places_images_in_rows():
    imgs = torch.stack([torch.full((1, 2, 2), v) for v in (0.0, 0.25, 0.5, 0.75, 1.0)])
    g = plots.image_grid(imgs, nrow=3, pad=1)
    assert g.shape == (2 * 3 + 1, 3 * 3 + 1)
    assert g[1, 1] == 0.0 and g[1, 4] == 0.25 and g[1, 7] == 0.5 and g[4, 1] == 0.75 and g[4, 4] == 1.0
    assert g[0, 0] == 1.0 and g[4, 7] == 1.0  # padding and the empty cell are white


@pytest.mark.parametrize("kind", plots.KINDS)
def test_every_figure_of_a_2d_vae(run2, digits, tmp_path, kind):
    out = plots.make(kind, run2.model, digits, tmp_path / f"{kind}.png", history=run2.history)
    png(out)


def test_samples_show_means_and_most_probable_values(run2, tmp_path):
    img = png(plots.samples(run2.model, tmp_path / "s.png", n=16))
    assert img.shape[1] > 1.6 * img.shape[0]  # two panels side by side
    # the most probable values of a Bernoulli likelihood are binary images
    p = run2.model.decode(torch.randn(4, 2))
    mode = run2.model.likelihood.mode(p)
    assert set(mode.unique().tolist()) <= {0.0, 1.0}


def test_larger_latent_uses_pca_and_tsne_and_chosen_manifold_dims(digits, tmp_path):
    torch.manual_seed(0)
    model = VAE.mlp(digits.shape, latent_dim=5, hidden=(32,)).eval()
    png(plots.latent(model, digits.test, tmp_path / "l.png", n=60, tsne=True))
    png(plots.manifold(model, tmp_path / "m.png", n=6, dims=(3, 4)))
    with pytest.raises(ValueError, match="dims"):
        plots.manifold(model, tmp_path / "bad.png", dims=(2, 2))


@pytest.mark.skipif("bernoulli" not in LATENTS, reason="no binary latent family in this version")
def test_binary_latents_get_a_histogram_and_no_manifold(digits, tmp_path):
    torch.manual_seed(0)
    model = VAE.mlp(digits.shape, latent_dim=8, hidden=(32,), latent_family="bernoulli").eval()
    png(plots.latent(model, digits.test, tmp_path / "h.png"))
    png(plots.samples(model, tmp_path / "s.png", n=16))
    assert "normal prior" in plots.applies("manifold", model)
    with pytest.raises(NotApplicable, match="bernoulli"):
        plots.make("manifold", model, digits, tmp_path / "m.png")


def test_conditional_model_figures(digits, tmp_path):
    torch.manual_seed(0)
    model = VAE.mlp(digits.shape, latent_dim=2, hidden=(32,), num_classes=10).eval()
    for kind in ("samples", "manifold", "recon", "interpolate", "denoise", "latent"):
        png(plots.make(kind, model, digits, tmp_path / f"{kind}.png", n=10, tsne=False))


def test_cli_samples_per_class_of_a_conditional_run(tmp_path, capsys):
    out = tmp_path / "cvae"
    assert cli.main(["train", "--dataset", "digits", "--conditional", "--epochs", "1", "--latent", "2",
                     "--hidden", "16", "--out", str(out), "--no-progress", "--no-figures"]) == 0
    assert cli.main(["plot", str(out), "samples", "--per-class", "3", "-o", str(tmp_path / "s.png")]) == 0
    img = png(tmp_path / "s.png")
    assert img.shape[0] > img.shape[1]                       # 10 class rows of 3 (as aevb sample)
    plain = tmp_path / "plain"
    assert cli.main(["train", "--dataset", "digits", "--epochs", "1", "--hidden", "16", "--out", str(plain),
                     "--no-progress", "--no-figures"]) == 0
    assert cli.main(["plot", str(plain), "samples", "--per-class", "3"]) == 2
    assert "conditional" in capsys.readouterr().err


def test_autoencoder_figures(digits, tmp_path):
    from aevb import models
    if not hasattr(models, "Autoencoder"):
        pytest.skip("no Autoencoder model in this version")
    ae = models.Autoencoder(input_shape=digits.shape, latent_dim=2, hidden=[32]).eval()
    for kind in ("samples", "recon", "latent", "interpolate", "denoise"):
        png(plots.make(kind, ae, digits, tmp_path / f"{kind}.png"))
    with pytest.raises(NotApplicable):
        plots.make("manifold", ae, digits, tmp_path / "m.png")


def test_latent_sweep_puts_models_side_by_side(digits, tmp_path):
    torch.manual_seed(0)
    models = [(f"{d}-D", VAE.mlp(digits.shape, latent_dim=d, hidden=(16,)).eval()) for d in (2, 5, 10)]
    img = png(plots.latent_sweep(models, tmp_path / "sweep.png", n=16, title="sweep"))
    assert img.shape[1] > 2 * img.shape[0]


def test_figures_that_need_data_or_history_say_so(run2, tmp_path):
    with pytest.raises(NotApplicable, match="test images"):
        plots.make("recon", run2.model, None, tmp_path / "r.png")
    with pytest.raises(NotApplicable, match="history"):
        plots.make("curves", run2.model, None, tmp_path / "c.png", history=[])


def test_cli_plot_writes_the_figure(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", "--dataset", "digits", "--epochs", "1", "--latent", "2", "--hidden", "16",
                     "--out", str(out), "--no-progress", "--no-figures"]) == 0
    assert cli.main(["plot", str(out), "manifold", "-n", "5", "-o", str(tmp_path / "m.png")]) == 0
    png(tmp_path / "m.png")
    assert cli.main(["plot", str(out), "latent", "--no-tsne"]) == 0
    png(out / "figures" / "latent.png")
    assert cli.main(["plot", str(out), "manifold", "--dims", "0,5"]) == 2
    assert "dims" in capsys.readouterr().err
