"""Uses of a trained density model: anomaly scores and ROC-AUC (aevb.anomaly), imputation of
missing pixels (aevb.imputation), reading image files (aevb.runs.load_images), and the
`aevb score / impute / sample` commands."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import aevb
from aevb import anomaly, data, imputation, train
from aevb.cli import main
from aevb.evaluation import log_likelihood
from aevb.models import Autoencoder, VAE
from aevb.runs import load_images



@pytest.fixture(scope="module")
def digits():
    return data.load("digits", binarize="none")  # gray levels: the imputation error is on them


@pytest.fixture(scope="module")
def vae(digits):
    torch.manual_seed(0)
    model = VAE(digits.shape, 4, hidden=[64])
    train(model, digits, epochs=25, lr=3e-3, progress=False, tensorboard=False)
    return model


# ----------------------------------------------------------------------------- masks
@pytest.mark.parametrize("spec,fraction", [("top-half", 0.5), ("bottom-half", 0.5), ("left-half", 0.5),
                                           ("right-half", 0.5), ("square:4", 16 / 64), ("square:8", 1.0)])
def test_masks(spec, fraction):
    m = imputation.make_mask(spec, (1, 8, 8), 3)
    assert m.shape == (3, 1, 8, 8) and m.dtype == torch.bool
    assert m.float().mean().item() == pytest.approx(fraction)
    if spec == "top-half":
        assert m[:, :, :4].all() and not m[:, :, 4:].any()
    if spec == "square:4":
        assert m[:, :, 2:6, 2:6].all()


def test_random_mask_and_errors():
    m = imputation.make_mask("random:0.3", (3, 32, 32), 50, torch.Generator().manual_seed(0))
    assert abs(m.float().mean().item() - 0.3) < 0.01
    assert torch.equal(m[:, 0], m[:, 2])  # a pixel is missing in all its channels
    for bad in ("random:1.5", "square:0", "square:x", "diagonal"):
        with pytest.raises(ValueError):
            imputation.make_mask(bad, (1, 8, 8))


# ----------------------------------------------------------------------------- imputation
@pytest.mark.parametrize("method", ["gibbs", "mh"])
def test_imputation_beats_the_mean_image(digits, vae, method):
    x = digits.test.x[:100]
    mask = imputation.make_mask("top-half", x.shape[1:], len(x))
    res = imputation.impute(vae, x, mask, iterations=40, method=method)
    assert torch.equal(res.filled[~mask], x[~mask]) and torch.equal(res.last[~mask], x[~mask])
    err = imputation.missing_error(res.filled, x, mask).mean()
    mean_image = digits.train.x.mean(0, keepdim=True).expand_as(x)
    naive = imputation.missing_error(torch.where(mask, mean_image, x), x, mask).mean()
    assert err < 0.85 * naive, (float(err), float(naive))
    if method == "mh":
        assert 0 < res.acceptance <= 1
    else:
        assert res.acceptance is None


def test_imputation_with_an_autoencoder_and_a_figure(digits, tmp_path):
    torch.manual_seed(0)
    ae = Autoencoder(digits.shape, 4, hidden=[32])
    x = digits.test.x[:6]
    mask = imputation.make_mask("square:4", x.shape[1:], len(x))
    res = imputation.impute(ae, x, mask, iterations=5)
    assert torch.equal(res.filled[~mask], x[~mask])
    path = imputation.imputation_figure(tmp_path / "imp.png", x, mask, res.filled)
    assert path.exists()


def test_missing_error():
    x = torch.zeros(2, 1, 2, 2)
    filled = torch.ones(2, 1, 2, 2)
    mask = torch.zeros(2, 1, 2, 2, dtype=torch.bool)
    mask[:, :, 0, 0] = True
    assert torch.equal(imputation.missing_error(filled, x, mask), torch.ones(2))


# ----------------------------------------------------------------------------- anomaly scores
def test_scores_are_negative_log_likelihoods(digits, vae):
    x = digits.test.x[:20]
    s = anomaly.anomaly_scores(vae, x, samples=50)
    assert torch.allclose(s, -log_likelihood(vae, x, samples=50, batch_size=100))


def test_conditional_model_is_scored_by_its_marginal(digits):
    torch.manual_seed(0)
    cvae = VAE(digits.shape, 3, hidden=[16], num_classes=10)
    x = digits.test.x[:5]
    s = anomaly.anomaly_scores(cvae, x, samples=20)
    per_class = torch.stack([log_likelihood(cvae, x, torch.full((5,), c), samples=20, batch_size=100)
                             for c in range(10)])
    assert torch.allclose(s, -(torch.logsumexp(per_class, 0) - math.log(10)), atol=1e-4)


def test_autoencoder_is_scored_by_reconstruction(digits):
    torch.manual_seed(0)
    ae = Autoencoder(digits.shape, 4, hidden=[16])
    x = digits.test.x[:5]
    assert torch.allclose(anomaly.anomaly_scores(ae, x), -ae.decode(ae.encode(x).mean).log_prob(x))


def test_roc_auc():
    assert anomaly.roc_auc(torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0])) == 1.0
    assert anomaly.roc_auc(torch.tensor([3.0, 4.0]), torch.tensor([1.0, 2.0])) == 0.0
    res = anomaly.held_out_classes_auc(torch.tensor([1.0, 5.0, 2.0, 6.0]), torch.tensor([0, 9, 1, 9]), [9])
    assert res["auc"] == 1.0 and res["n_anomalous"] == 2 and res["n_normal"] == 2
    with pytest.raises(ValueError):
        anomaly.held_out_classes_auc(torch.ones(3), torch.tensor([1, 1, 1]), [9])


def test_pixel_background_is_a_distribution():
    bg = anomaly.PixelBackground.fit(torch.tensor([[[[0.0]]], [[[1.0]]], [[[1.0]]]]))
    assert bg.binary
    both = bg.log_prob(torch.tensor([[[[0.0]]], [[[1.0]]]])).exp()
    assert torch.allclose(both, torch.tensor([1 / 3, 2 / 3]))
    gray = anomaly.PixelBackground.fit(torch.rand(50, 1, 2, 1))
    assert not gray.binary
    levels = torch.arange(256.0) / 255
    x = torch.stack([levels, torch.zeros(256)], 1).view(256, 1, 2, 1)   # pixel 2 fixed
    # summed over pixel 1's levels, p(x) leaves p(pixel 2 = 0)
    assert abs(float(gray.log_prob(x).exp().sum() / gray.table[0, 1, 0, 0].exp()) - 1) < 1e-5


def test_likelihood_ratio_scores(digits, vae):
    x = digits.test.x[:10]
    s = anomaly.anomaly_scores(vae, x, samples=5)
    bg = anomaly.PixelBackground.fit(digits.train.x)
    assert torch.allclose(anomaly.likelihood_ratio_scores(s, x, bg), s + bg.log_prob(x))


def test_inverted_digits_are_anomalous(digits, vae):
    x = digits.test.x[:150]
    normal = anomaly.anomaly_scores(vae, x[:75], samples=20)
    inverted = anomaly.anomaly_scores(vae, 1 - x[75:], samples=20)
    assert anomaly.roc_auc(normal, inverted) > 0.95


def test_keep_classes(digits):
    s = data.keep_classes(digits.test, [9], exclude=True)
    assert len(s) > 0 and not (s.y == 9).any()
    assert (data.keep_classes(digits.test, [3, 4]).y >= 3).all()


def test_load_only_some_classes(digits):
    ds = data.load("digits", classes=[0, 1, 2, 3, 4, 5, 6, 7, 8], limit=300)
    for part, full in (("train", digits.train), ("test", digits.test)):
        split = getattr(ds, part)
        assert len(split) == 300 and 0 < int(split.y.max()) <= 8  # labels keep their values
        kept = full[full.y != 9]
        i = torch.nonzero((kept.x.flatten(1)[:, None] == split.x.flatten(1)[None]).all(-1))[:, 0]
        assert len(i.unique()) == 300  # the images are the dataset's own, each kept once
    assert ds.num_classes == 10
    with pytest.raises(data.DataError, match=r"classes \[12\] have no images .*labels: 0, 1, 2"):
        data.load("digits", classes=[3, 12])
    with pytest.raises(ValueError, match="integer labels"):
        data.load("digits", classes="9")  # not the classes '9' (a character)
    assert set(data.load("digits", classes=9).test.y.tolist()) == {9}


def test_classes_of_an_unlabelled_dataset_are_refused(tmp_path):
    x = np.zeros((4, 8, 8), dtype=np.uint8)
    np.savez(tmp_path / "u.npz", x_train=x, x_test=x)
    assert data.load(f"npz:{tmp_path / 'u.npz'}").train.y is None
    with pytest.raises(data.DataError, match="has no labels, so 'classes' cannot select"):
        data.load(f"npz:{tmp_path / 'u.npz'}", classes=[1])


# ----------------------------------------------------------------------------- image files
def write_idx(path, arr: np.ndarray):
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    path.write_bytes(header + arr.astype(np.uint8).tobytes())


def test_load_images_from_files(tmp_path):
    imgs = (np.random.default_rng(0).random((7, 8, 8)) * 255).astype(np.uint8)
    np.savez(tmp_path / "a.npz", x_test=imgs, y_test=np.arange(7))
    s = load_images(str(tmp_path / "a.npz"))
    assert s.x.shape == (7, 1, 8, 8) and s.x.max() <= 1 and torch.equal(s.y, torch.arange(7))
    write_idx(tmp_path / "t-images-idx3-ubyte", imgs)
    write_idx(tmp_path / "t-labels-idx1-ubyte", np.arange(7))
    s2 = load_images(str(tmp_path / "t-images-idx3-ubyte"), limit=5)
    # a fixed random choice of 5, kept in order (labels here are the image indices)
    assert len(s2.y) == 5 and torch.equal(s2.y, s2.y.sort().values) and torch.allclose(s2.x, s.x[s2.y])
    assert torch.equal(load_images(str(tmp_path / "t-images-idx3-ubyte"), limit=5).y, s2.y)
    cfg = type("Cfg", (), {"binarize": "dynamic"})()
    b = load_images(str(tmp_path / "a.npz"), cfg)
    assert set(b.x.unique().tolist()) <= {0.0, 1.0}
    with pytest.raises(data.DataError):
        load_images(str(tmp_path / "missing.npz"))


def test_shape_mismatch_is_refused(vae, digits):
    for estimate in (lambda x: anomaly.anomaly_scores(vae, x), lambda x: vae.log_likelihood(x, samples=3),
                     lambda x: aevb.evaluation.elbo_terms(vae, data.Split(x))):
        with pytest.raises(data.DataError, match=r"have shape \(1, 28, 28\) but the model expects \(1, 8, 8\)"):
            estimate(torch.rand(2, 1, 28, 28))


@pytest.mark.parametrize("cls,kw,words", [
    (VAE, dict(hidden=(-1,)), "hidden sizes must be >= 1, got [-1]"),
    (VAE, dict(net="conv", hidden=(0,)), "hidden sizes must be >= 1"),
    (Autoencoder, dict(hidden=(0,)), "hidden sizes must be >= 1"),
    (VAE, dict(input_shape=(1, 0, 8)), "input_shape must be (channels, height, width)"),
])
def test_bad_sizes_are_refused_when_building(cls, kw, words):
    kw = {"input_shape": (1, 8, 8), "latent_dim": 2, **kw}
    with pytest.raises(ValueError) as e:
        cls(**kw)
    assert words in str(e.value)


# ----------------------------------------------------------------------------- commands
@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    common = ["--dataset", "digits", "--hidden", "32", "--latent-dim", "4", "--epochs", "2",
              "--no-progress", "--no-figures"]
    assert main(["train", *common, "--out", str(root / "vae")]) == 0
    assert main(["train", *common, "--conditional", "--out", str(root / "cvae")]) == 0
    assert main(["train", *common, "--model", "autoencoder", "--out", str(root / "ae")]) == 0
    assert main(["train", *common, "--classes", "0,1,2,3,4,5,6,7,8", "--out", str(root / "no9")]) == 0
    return root


def last_json(capsys):
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_score_command(runs, tmp_path, capsys):
    out = tmp_path / "scores.csv"
    assert main(["score", str(runs / "vae"), "--anomaly-classes", "9", "--samples", "10",
                 "-o", str(out)]) == 0
    res = last_json(capsys)
    assert 0 <= res["auc"] <= 1 and res["n_anomalous"] > 0 and res["samples"] == 10
    rows = np.loadtxt(out, delimiter=",", skiprows=1)
    assert rows.shape == (res["n"], 3)
    # another set of images: AUC against the run's own test split
    imgs = 1 - data.load("digits", binarize="static").test.x[:50, 0].numpy()
    np.savez(tmp_path / "inv.npz", x=(imgs * 255).astype(np.uint8))
    assert main(["score", str(runs / "vae"), str(tmp_path / "inv.npz"), "--samples", "10",
                 "-o", str(tmp_path / "s2.csv")]) == 0
    res = last_json(capsys)
    assert res["reference"] == "digits" and res["auc"] > 0.5
    assert main(["score", str(runs / "ae"), "--samples", "5", "-o", str(tmp_path / "s3.csv")]) == 0
    assert "enc(x)" in last_json(capsys)["score"]
    assert main(["score", str(runs / "vae"), "--anomaly-classes", "9", "--samples", "5", "--ratio",
                 "-o", str(tmp_path / "s4.csv")]) == 0
    res = last_json(capsys)
    assert "p_background" in res["score"] and 0 <= res["auc"] <= 1


def test_held_out_class_workflow(runs, tmp_path, capsys):
    """Train without the 9s (config key `classes`), then score every test image: the 9s are
    the anomalies, and the run's own test ELBO was measured without them."""
    test = data.load("digits").test
    assert json.loads((runs / "no9" / "config.json").read_text())["classes"] == list(range(9))
    assert main(["score", str(runs / "no9"), "--anomaly-classes", "9", "--samples", "5", "--ratio",
                 "-o", str(tmp_path / "s.csv")]) == 0
    res = last_json(capsys)
    assert res["n"] == len(test) and res["n_anomalous"] == int((test.y == 9).sum()) > 0
    assert main(["eval", str(runs / "no9"), "--nll-samples", "0", "--no-progress"]) == 0
    res = json.loads((runs / "no9" / "eval.json").read_text())
    assert res["n"] == int((test.y != 9).sum()) and res["classes"] == list(range(9))


def test_impute_command(runs, tmp_path, capsys):
    fig = tmp_path / "imp.png"
    assert main(["impute", str(runs / "vae"), "--mask", "square:4", "-n", "20", "--iterations", "10",
                 "--method", "mh", "-o", str(fig)]) == 0
    res = last_json(capsys)
    assert fig.exists() and res["n"] == 20 and 0 <= res["mse_missing"] <= 1
    assert "mse_missing_mean_image" in res and "acceptance" in res
    assert main(["impute", str(runs / "cvae"), "--mask", "left-half", "-n", "10", "--iterations", "5",
                 "-o", str(tmp_path / "imp2.png")]) == 0
    assert main(["impute", str(runs / "vae"), "--mask", "nonsense", "-o", str(tmp_path / "imp3.png")]) == 2


def test_sample_command_per_class_and_gmm(runs, tmp_path, capsys):
    assert main(["sample", str(runs / "cvae"), "--per-class", "3", "-o", str(tmp_path / "pc.png")]) == 0
    assert (tmp_path / "pc.png").exists()
    assert main(["sample", str(runs / "vae"), "--per-class", "3", "-o", str(tmp_path / "x.png")]) == 2
    assert main(["sample", str(runs / "ae"), "--gmm", "5", "-n", "16", "-o", str(tmp_path / "g.png")]) == 0
    assert (tmp_path / "g.png").exists() and (runs / "ae" / "gmm-5.safetensors").exists()
    assert (runs / "ae" / "gmm-5.json").exists()
    assert main(["sample", str(runs / "cvae"), "--gmm", "3", "--per-class", "2",
                 "-o", str(tmp_path / "cg.png")]) == 0
