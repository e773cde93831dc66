"""Defaults a new user meets: paths stored resolved, no binarization of photos, class names,
a warning for a Gaussian likelihood that cannot beat a uniform one."""
import json
import math
import warnings

import numpy as np
import pytest
from PIL import Image

from aevb import config as config_mod
from aevb import data
from aevb.cli import main


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AEVB_DATA", str(tmp_path / "cache"))


@pytest.fixture
def photos(tmp_path):
    """folder/{cat,dog,frog}/*.png: 8 small colour images of each class."""
    rng = np.random.default_rng(0)
    root = tmp_path / "photos"
    for c, name in enumerate(("cat", "dog", "frog")):
        (root / name).mkdir(parents=True)
        for i in range(8):
            a = rng.integers(0, 256, (10, 10, 3), dtype=np.uint8)
            a[..., c] = 200 + i
            Image.fromarray(a).save(root / name / f"{i}.png")
    return root


def test_relative_paths_are_stored_resolved(tmp_path, monkeypatch, capsys):
    """A run made with relative paths evaluates from any other folder."""
    work = tmp_path / "work"
    (work / "data").mkdir(parents=True)
    rng = np.random.default_rng(0)
    np.savez(work / "data" / "d.npz", x_train=rng.integers(0, 2, (60, 6, 6), dtype=np.uint8) * 255,
             x_test=rng.integers(0, 2, (20, 6, 6), dtype=np.uint8) * 255)
    monkeypatch.chdir(work)
    cfg = config_mod.make_config(None, data_dir="data/../data", dataset="npz:data/d.npz")
    assert cfg.data_dir == str(work / "data") and cfg.dataset == f"npz:{work / 'data' / 'd.npz'}"
    assert main(["train", "--dataset", "npz:data/d.npz", "--binarize", "static", "--hidden", "8",
                 "--latent-dim", "2", "--epochs", "1", "--out", "runs/r", "--quiet", "--no-figures"]) == 0
    saved = json.loads((work / "runs" / "r" / "config.json").read_text())
    assert saved["dataset"] == f"npz:{work / 'data' / 'd.npz'}"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["eval", str(work / "runs" / "r"), "--nll-samples", "10", "--no-progress"]) == 0
    assert json.loads((work / "runs" / "r" / "eval.json").read_text())["n"] == 20


def test_mnist_offline_says_where_it_looks():
    text = data.describe()
    line = next(x for x in text.splitlines() if x.startswith("mnist-offline"))
    assert "--data-dir" in line and "$AEVB_DATA/mnist-offline" in line
    assert "../shared/data/mnist" not in line  # a folder it never looks in


@pytest.mark.parametrize("dataset, binarize, likelihood", [
    ("digits", "dynamic", "bernoulli"), ("mnist", "dynamic", "bernoulli"),
    ("fashion-mnist", "dynamic", "bernoulli"), ("cifar10", "none", "logistic"),
    ("folder:x", "none", "logistic"), ("npz:x.npz", "none", "logistic")])
def test_binarize_and_likelihood_defaults_follow_the_data(dataset, binarize, likelihood):
    cfg = config_mod.make_config(None, dataset=dataset)
    assert (cfg.binarize, cfg.likelihood) == (binarize, likelihood)
    assert cfg.auto == ("binarize", "likelihood")
    set_ = config_mod.make_config(None, dataset=dataset, binarize="static", likelihood="gaussian",
                                  sigma="learned")
    assert (set_.binarize, set_.likelihood, set_.auto) == ("static", "gaussian", ())
    assert config_mod.make_config(None, dataset=dataset, binarize="none").likelihood == "logistic"


def test_a_photo_folder_trains_on_intensities_and_says_so(photos, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--dataset", f"folder:{photos}", "--image-size", "8", "--hidden", "8",
                 "--latent-dim", "2", "--epochs", "1", "--out", str(out), "--no-figures"]) == 0
    printed = capsys.readouterr().out
    assert "binarize none (auto" in printed and "likelihood logistic (auto" in printed
    saved = json.loads((out / "config.json").read_text())
    assert saved["binarize"] == "none" and saved["likelihood"] == "logistic"
    ds = data.load(saved["dataset"], binarize=saved["binarize"], image_size=8)
    assert len(np.unique(ds.train.x.numpy())) > 2  # grey levels, not black and white


def test_classes_by_name(photos, tmp_path, capsys):
    ds = data.load(f"folder:{photos}", classes=["dog", "frog"], image_size=8, test_fraction=0.25)
    assert set(ds.train.y.tolist()) == {1, 2} and ds.info["classes"] == ["cat", "dog", "frog"]
    assert data.class_names(f"folder:{photos}") == ["cat", "dog", "frog"]
    assert data.class_names("fashion-mnist")[9] == "Ankle boot" and data.class_names("cifar10")[3] == "cat"
    assert data.class_names("mnist") is None
    out = tmp_path / "run"
    assert main(["train", "--dataset", f"folder:{photos}", "--classes", "cat", "--image-size", "8",
                 "--hidden", "8", "--latent-dim", "2", "--epochs", "1", "--out", str(out), "--quiet",
                 "--no-figures"]) == 0
    assert json.loads((out / "config.json").read_text())["classes"] == ["cat"]
    assert main(["train", "--dataset", f"folder:{photos}", "--classes", "caat", "--image-size", "8",
                 "--epochs", "1", "--out", str(tmp_path / "r2"), "--quiet", "--no-figures"]) == 2
    err = capsys.readouterr().err
    assert "no class 'caat'" in err and "did you mean 'cat'?" in err and "cat, dog, frog" in err
    with pytest.raises(data.DataError, match="no class names"):
        data.load("digits", classes=["three"])


def test_gaussian_sigma_one_warns(tmp_path, capsys):
    with pytest.warns(config_mod.ConfigWarning, match=r"-0\.92 nats per pixel.*8 bits/dim"):
        config_mod.advise(config_mod.make_config(None, likelihood="gaussian"))
    # the warning's claim: a perfect reconstruction under N(x; x, 1) is worse than uniform
    bits = 8 + (math.log(1.0) + 0.5 * math.log(2 * math.pi)) / math.log(2)
    assert bits > 8
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for sigma in ("learned", 0.1, 0.39):
            config_mod.advise(config_mod.make_config(None, likelihood="gaussian", sigma=sigma))
        config_mod.advise(config_mod.make_config(None))
    assert main(["train", "--likelihood", "gaussian", "--binarize", "none", "--hidden", "8",
                 "--latent-dim", "2", "--epochs", "1", "--out", str(tmp_path / "g"), "--quiet",
                 "--no-figures"]) == 0
    err = capsys.readouterr().err
    assert "aevb train: warning: likelihood gaussian with a fixed sigma of 1" in err
    assert len(err.strip().splitlines()) == 1  # one line, no source location
