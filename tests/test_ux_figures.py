"""Figures a new user looks at first: titles inside the image, square grids, the manifold of
the most active dims, per-class rows labelled, temperature, and the autoencoder's mixture."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.image as mpimg  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from aevb import cli, data, plots, samplers, train  # noqa: E402
from aevb.models import VAE, Autoencoder  # noqa: E402


@pytest.fixture(scope="module")
def digits():
    return data.load("digits", binarize="dynamic")


@pytest.fixture
def captured(monkeypatch):
    """Every call of plots.save_panels: (panels, suptitle), the figure still drawn."""
    calls = []
    real = plots.save_panels

    def spy(path, panels, suptitle=None):
        calls.append(([(*p, None) if len(p) == 3 else tuple(p) for p in panels], suptitle))
        return real(path, panels, suptitle)
    monkeypatch.setattr(plots, "save_panels", spy)
    return calls


def _top_rows_blank(path, rows: int = 3) -> tuple[bool, bool]:
    """(the first `rows` pixel rows are background, something is drawn within the top 40)."""
    img = mpimg.imread(str(path))[..., :3].mean(2)
    return bool((img[:rows] > 0.97).all()), bool((img[rows:40] < 0.5).any())


@pytest.mark.parametrize("figure", ["samples", "recon", "denoise", "conditional"])
def test_titles_are_not_cut_at_the_top(digits, tmp_path, figure):
    torch.manual_seed(0)
    model = VAE.mlp(digits.shape, latent_dim=2, hidden=(16,), num_classes=10 if figure == "conditional" else 0)
    kind = "samples" if figure == "conditional" else figure
    out = plots.make(kind, model.eval(), digits, tmp_path / f"{figure}.png", n=16)
    blank, drawn = _top_rows_blank(out)
    assert blank and drawn  # a margin above the title, and the title there


def test_title_extent_lies_inside_the_saved_figure(monkeypatch, tmp_path):
    """The renderer's extent of every text (titles, suptitle, row labels) lies inside the
    region that is saved, at least 5 pixels from its edges, and the PNG is that region."""
    seen, boxes = [], []
    real_save = plots._save

    def check(fig, path):
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        fig.tight_layout()
        canvas = FigureCanvasAgg(fig)
        canvas.draw()
        r = canvas.get_renderer()
        box = fig.get_tightbbox(r).padded(0.1)  # inches: what bbox_inches="tight", pad 0.1 saves
        boxes.append((box.height * 100, box.width * 100))  # pixels at dpi 100
        texts = [t for ax in fig.axes for t in (ax.title, *ax.get_yticklabels())] + \
            ([fig._suptitle] if fig._suptitle else [])
        for t in texts:
            if t.get_text():
                e = t.get_window_extent(r).transformed(fig.dpi_scale_trans.inverted())
                seen.append(t.get_text())
                assert box.x0 + 0.05 <= e.x0 and e.x1 <= box.x1 - 0.05, t
                assert box.y0 + 0.05 <= e.y0 and e.y1 <= box.y1 - 0.05, t
        return real_save(fig, path)
    monkeypatch.setattr(plots, "_save", check)
    images = torch.rand(20, 1, 8, 8)
    plots.save_panels(tmp_path / "p.png", [("decoder means E[x|z]", images, 5, list("abcd")),
                                           ("most probable values", images.round(), 5, list("abcd"))],
                      "z ~ p(z), temperature 0.5")
    assert {"decoder means E[x|z]", "most probable values", "z ~ p(z), temperature 0.5", "a", "d"} <= set(seen)
    height, width = mpimg.imread(str(tmp_path / "p.png")).shape[:2]
    assert abs(height - boxes[0][0]) <= 3 and abs(width - boxes[0][1]) <= 3  # rounding


@pytest.mark.parametrize("n, columns", [(32, 8), (64, 8), (100, 10), (18, 6), (36, 6), (12, 4),
                                        (7, 3), (2, 2), (1, 1)])
def test_grids_are_square_ish_and_not_ragged_where_possible(n, columns):
    assert plots.grid_columns(n) == columns
    g = plots.image_grid(torch.zeros(n, 1, 4, 4), pad=1)
    rows = -(-n // columns)
    assert g.shape == (rows * 5 + 1, columns * 5 + 1)
    if n % columns == 0:  # every cell holds an image: its top-left pixel is black
        assert all(g[1 + 5 * r, 1 + 5 * c] == 0 for r in range(rows) for c in range(columns))


def test_cli_sample_32_is_a_full_8_by_4_grid(tmp_path, monkeypatch):
    out = tmp_path / "run"
    assert cli.main(["train", "--epochs", "1", "--hidden", "8", "--latent", "2", "--out", str(out),
                     "--quiet", "--no-figures"]) == 0
    shapes = []
    real = plots.image_grid
    monkeypatch.setattr(plots, "image_grid", lambda im, nrow=None, pad=1: shapes.append(
        real(im, nrow, pad).shape) or real(im, nrow, pad))
    assert cli.main(["sample", str(out), "-n", "32", "-o", str(tmp_path / "s.png")]) == 0
    assert shapes == [(4 * 9 + 1, 8 * 9 + 1)]  # 8x8 digits, 1-pixel gaps: 4 rows of 8


def _with_units(digits):
    """A VAE whose posterior mean moves only in latent units 4 (most) and 1 (less): the
    others are inactive (variance 0 over the data)."""
    torch.manual_seed(0)
    model = VAE.mlp(digits.shape, latent_dim=6, hidden=(16,)).eval()

    def embed(x, y=None):
        z = torch.zeros(len(x), 6)
        m = x.flatten(1).mean(1)
        z[:, 4], z[:, 1] = 3 * m, m
        return z
    model.embed = embed
    return model


def test_manifold_varies_the_two_most_active_dims_and_says_so(digits, tmp_path, captured):
    model = _with_units(digits)
    assert plots.most_active_dims(model, digits.test) == (4, 1)
    plots.make("manifold", model, digits, tmp_path / "m.png", n=5)
    (title, _, _, _), = captured[-1][0]
    assert title == "learned manifold over dims 4 (across) and 1 (down), the two most active; others 0"
    plots.make("manifold", model, digits, tmp_path / "m2.png", n=5, dims=(0, 2))  # asked for: as asked
    assert captured[-1][0][0][0] == "learned manifold over dims 0 (across) and 2 (down); others 0"


def test_cli_manifold_default_dims(digits, tmp_path, monkeypatch, captured):
    out = tmp_path / "run"
    assert cli.main(["train", "--epochs", "1", "--hidden", "8", "--latent", "5", "--out", str(out),
                     "--quiet", "--no-figures"]) == 0
    assert cli.main(["plot", str(out), "manifold", "-n", "4"]) == 0
    assert "the two most active" in captured[-1][0][0][0]


def _cvae(digits):
    torch.manual_seed(0)
    return VAE.mlp(digits.shape, latent_dim=2, hidden=(16,), num_classes=10).eval()


def test_per_class_samples_are_rows_labelled_by_class(digits, tmp_path, captured):
    model = _cvae(digits)
    decoded = []
    real_decode = model.decode
    model.decode = lambda z, y=None: decoded.append(y) or real_decode(z, y)
    names = [f"class-{c}" for c in range(10)]
    plots.make("samples", model, None, tmp_path / "s.png", per_class=3, class_names=names)
    panels, suptitle = captured[-1]
    assert torch.equal(decoded[-1], torch.arange(10).repeat_interleave(3))  # class-major
    assert [(p[2], p[3]) for p in panels] == [(3, names)] * len(panels)     # 3 per row, rows named
    assert suptitle == "z ~ p(z)"


def test_cli_sample_and_plot_per_class_agree(tmp_path, captured):
    out = tmp_path / "cvae"
    assert cli.main(["train", "--conditional", "--epochs", "1", "--hidden", "8", "--latent", "2",
                     "--out", str(out), "--quiet", "--no-figures"]) == 0
    assert cli.main(["sample", str(out), "--per-class", "4", "-o", str(tmp_path / "a.png")]) == 0
    assert cli.main(["plot", str(out), "samples", "--per-class", "4", "-o", str(tmp_path / "b.png")]) == 0
    a, b = captured[-2][0], captured[-1][0]
    assert [(p[0], p[2], p[3]) for p in a] == [(p[0], p[2], p[3]) for p in b]
    assert a[0][2] == 4 and a[0][3] == [str(c) for c in range(10)] and len(a[0][1]) == 40
    assert torch.equal(a[0][1], b[0][1])  # the same seed: the same images


def test_temperature_scales_the_prior(digits):
    model = VAE.mlp(digits.shape, latent_dim=3, hidden=(8,)).eval()
    torch.manual_seed(5)
    z1 = model.sample_latents(4000)
    torch.manual_seed(5)
    z_half = model.sample_latents(4000, temperature=0.5)
    assert torch.allclose(z_half, 0.5 * z1)  # z = T eps for the standard normal prior
    assert abs(z_half.std().item() - 0.5) < 0.03
    torch.manual_seed(5)
    cold = model.sample(8, temperature=0.5)
    torch.manual_seed(5)
    assert torch.allclose(cold, model.decode(0.5 * model.sample_latents(8)).mean)
    binary = VAE.mlp(digits.shape, latent_dim=4, hidden=(8,), latent_family="bernoulli")
    assert set(binary.sample_latents(10).unique().tolist()) <= {0.0, 1.0}
    with pytest.raises(ValueError, match="temperature"):
        binary.sample(4, temperature=0.5)


def test_temperature_of_the_autoencoder_and_the_mixture(digits):
    torch.manual_seed(0)
    ae = Autoencoder(digits.shape, latent_dim=2, hidden=(16,))
    train(ae, digits, epochs=2, progress=False, tensorboard=False)
    d = ae.code_distribution()
    torch.manual_seed(1)
    z = ae.sample_latents(20000, temperature=0.5)
    assert torch.allclose(z.mean(0), d.mean, atol=0.05 * d.stddev.max().item())
    assert torch.allclose(z.std(0), 0.5 * d.stddev, rtol=0.05)
    gmm = samplers.GMMSampler.fit(ae, digits.train, 3)
    g = torch.Generator().manual_seed(2)
    full = gmm.sample_codes(5, g)
    g = torch.Generator().manual_seed(2)
    half = gmm.sample_codes(5, g, temperature=0.5)
    k = torch.multinomial(gmm.weights, 5, replacement=True, generator=torch.Generator().manual_seed(2))
    assert torch.allclose(half - gmm.means[k], 0.5 * (full - gmm.means[k]))


def test_cli_temperature(tmp_path, captured, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", "--epochs", "1", "--hidden", "8", "--latent", "2", "--out", str(out),
                     "--quiet", "--no-figures"]) == 0
    assert cli.main(["sample", str(out), "--temperature", "0.5", "-o", str(tmp_path / "s.png")]) == 0
    assert cli.main(["plot", str(out), "samples", "--temperature", "0.5", "-n", "9"]) == 0
    assert captured[-1][1] == "z ~ p(z), temperature 0.5"
    with pytest.raises(SystemExit):
        cli.main(["sample", str(out), "--temperature", "0"])
    assert "expected a positive number" in capsys.readouterr().err


def test_autoencoder_samples_and_mixture_figures(digits, tmp_path, captured):
    out = tmp_path / "ae"
    assert cli.main(["train", "--model", "autoencoder", "--epochs", "2", "--hidden", "16", "--latent", "2",
                     "--out", str(out), "--quiet", "--no-figures"]) == 0
    assert cli.main(["plot", str(out), "samples", "-n", "16"]) == 0
    assert "p(z)" not in captured[-1][1] and "Gaussian fitted to the training codes" in captured[-1][1]
    assert cli.main(["sample", str(out), "--gmm", "4", "-n", "16", "-o", str(tmp_path / "g.png")]) == 0
    panels, suptitle = captured[-1]
    assert suptitle == "z from a 4-component Gaussian mixture fitted to the training codes"
    assert [p[0] for p in panels] == ["decoder means E[x|z]", "most probable values"]
    assert set(panels[1][1].unique().tolist()) <= {0.0, 1.0}
    assert cli.main(["plot", str(out), "samples", "--gmm", "4", "-n", "16", "--overwrite"]) == 0
    assert captured[-1][1] == suptitle
    figs = []
    real = plots._save
    plots._save = lambda fig, path: figs.append(fig) or real(fig, path)
    try:
        assert cli.main(["plot", str(out), "latent", "--gmm", "4", "-n", "200"]) == 0
    finally:
        plots._save = real
    left, right = figs[-1].axes[:2]
    assert left.get_title() == "codes of 200 images"
    assert right.get_title() == "200 samples of the 4-component mixture"
    grey, red = right.collections[:2]
    assert len(grey.get_offsets()) == len(red.get_offsets()) == 200
    plt.close("all")


def test_class_names_label_the_latent_legend(tmp_path):
    ds = data.load("digits")
    torch.manual_seed(0)
    model = VAE.mlp(ds.shape, latent_dim=2, hidden=(8,)).eval()
    names = [f"n{c}" for c in range(10)]
    figs = []
    real = plots._save
    plots._save = lambda fig, path: figs.append(fig) or real(fig, path)
    try:
        plots.latent(model, ds.test, tmp_path / "l.png", class_names=names)
    finally:
        plots._save = real
    legend = figs[-1].axes[0].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == names
    plt.close("all")
