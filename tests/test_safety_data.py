"""Bad data is refused at load time, naming the file, not trained on (issue 12, class 4).

Pixels outside [0, 1] (0-255 floats, negative, inf) and NaN in NPZ and IDX files; 16-bit
PNGs scaled, not clipped; --limit 0 / -5 and empty classes; a folder too small for a test
split; checkpoints with NaN weights used by sample / eval / report; a run that ends with a
non-finite test ELBO or skips most of its steps exits non-zero.
"""
from __future__ import annotations

import contextlib
import gzip
import io
import math
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from aevb import cli, data
from aevb.data import DataError
from aevb.data.readers import images_and_labels
from aevb.serialization import load_tensors, save_tensors

TRAIN = ["train", "--dataset", "digits", "--hidden", "8", "--latent", "2", "--epochs", "1",
         "--limit", "200", "--batch-size", "50", "--no-progress", "--no-figures"]


def run(*argv) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = cli.main([str(a) for a in argv])
    return rc, err.getvalue()


def one_line_error(rc, err, *words):
    assert rc == 2 and err.count("\n") == 1 and ": error: " in err and "Traceback" not in err, (rc, err)
    for w in words:
        assert str(w) in err, (w, err)


def idx(path: Path, x: np.ndarray, type_code: int) -> Path:
    """An IDX file of array `x` (big-endian), gzipped."""
    header = bytes([0, 0, type_code, x.ndim]) + b"".join(struct.pack(">I", n) for n in x.shape)
    path.write_bytes(gzip.compress(header + x.astype(x.dtype.newbyteorder(">")).tobytes()))
    return path


BAD_PIXELS = {"0-255 floats": np.full((6, 8, 8), 200.0), "negative": np.full((6, 8, 8), -0.5),
              "inf": np.where(np.eye(8)[None] > 0, np.inf, 0.5).repeat(6, 0),
              "nan": np.where(np.eye(8)[None] > 0, np.nan, 0.5).repeat(6, 0),
              "int 0-255": np.full((6, 8, 8), 255, np.int64)}


@pytest.mark.parametrize("kind", list(BAD_PIXELS))
def test_bad_pixels_in_npz_are_refused_naming_the_file(tmp_path, kind):
    x = BAD_PIXELS[kind]
    np.savez(tmp_path / "d.npz", x_train=x, x_test=np.zeros((4, 8, 8)))
    with pytest.raises(DataError, match=r"d\.npz:x_train: .*(NaN or infinite|must be in \[0, 1\])"):
        data.load(f"npz:{tmp_path / 'd.npz'}")
    rc, err = run(*TRAIN, "--dataset", f"npz:{tmp_path / 'd.npz'}", "--out", tmp_path / "r")
    one_line_error(rc, err, "d.npz:x_train")
    assert not (tmp_path / "r").exists()  # refused before any run directory exists


@pytest.mark.parametrize("kind", ["0-255 floats", "negative", "inf", "nan"])
def test_bad_pixels_in_idx_files_are_refused(tmp_path, kind):
    x = BAD_PIXELS[kind].astype(np.float32)
    f = idx(tmp_path / "t10k-images-idx3-ubyte.gz", x, 0x0D)
    idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(len(x), np.uint8), 0x08)
    run_dir = tmp_path / "run"
    assert run(*TRAIN, "--out", run_dir)[0] == 0
    rc, err = run("score", run_dir, f, "--samples", "2", "-o", tmp_path / "s.csv")
    one_line_error(rc, err, f.name)
    assert not (tmp_path / "s.csv").exists()


@settings(max_examples=80, deadline=None, database=None, derandomize=True)
@given(x=st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), min_size=64, max_size=64))
def test_any_float_pixels_are_accepted_only_in_the_unit_interval(x):
    a = np.array(x, np.float32).reshape(1, 8, 8)
    ok = bool(np.isfinite(a).all() and a.min() >= 0 and a.max() <= 1)
    try:
        images_and_labels(a, None, "f.npz:x")
        assert ok
    except DataError as e:
        assert not ok and str(e).startswith("f.npz:x: ")


def test_sixteen_bit_pngs_are_scaled_not_clipped(tmp_path):
    rng = np.random.default_rng(0)
    eight = rng.integers(0, 256, (6, 8, 8)).astype(np.uint8)
    for d, to_image in (("eight", lambda a: Image.fromarray(a)),
                        ("sixteen", lambda a: Image.fromarray(a.astype(np.uint16) * 257))):
        for i, a in enumerate(eight):
            (tmp_path / d / "c").mkdir(parents=True, exist_ok=True)
            to_image(a).save(tmp_path / d / "c" / f"{i}.png")
    assert Image.open(tmp_path / "sixteen" / "c" / "0.png").mode.startswith("I;16")
    a, b = (data.load(f"folder:{tmp_path / d}", image_size=8, channels=1, test_fraction=0.5)
            for d in ("eight", "sixteen"))
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.test.x, b.test.x)
    assert (b.train.x < 1).float().mean() > 0.9  # clipped 16-bit values would all be white


@pytest.mark.parametrize("flags,words", [(["--limit", "0"], ["'limit'"]), (["--limit", "-5"], ["'limit'"]),
                                         (["--classes", ""], ["'classes'"]), (["--classes", "42"], ["42"])])
def test_training_on_nothing_is_refused(tmp_path, flags, words):
    rc, err = run(*TRAIN, *flags, "--out", tmp_path / "r")
    one_line_error(rc, err, *words)
    assert not (tmp_path / "r").exists()


def test_a_folder_too_small_for_a_test_split_is_refused(tmp_path):
    (tmp_path / "one").mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "one" / "a.png")
    rc, err = run(*TRAIN[:2], f"folder:{tmp_path / 'one'}", *TRAIN[3:], "--image-size", "8", "--channels", "1",
                  "--out", tmp_path / "r")
    one_line_error(rc, err, "test split has no images", "at least 2")
    assert not (tmp_path / "r").exists()


def test_checkpoints_with_nan_weights_are_refused_by_every_reader(tmp_path):
    good = tmp_path / "good"
    assert run(*TRAIN, "--out", good)[0] == 0
    bad = tmp_path / "bad"
    shutil.copytree(good, bad)
    tensors, meta = load_tensors(bad / "checkpoint.safetensors")
    key = next(k for k in tensors if k.startswith("model.") and tensors[k].is_floating_point())
    tensors[key].view(-1)[0] = math.nan
    save_tensors(bad / "checkpoint.safetensors", tensors, meta)
    for argv in (["sample", bad, "-o", tmp_path / "s.png"], ["eval", bad, "--nll-samples", "0", "--no-progress"],
                 ["report", bad, "--fast"], ["plot", bad, "samples"], ["score", bad, "--samples", "2"],
                 ["impute", bad, "-n", "2"], ["train", "--resume", "--out", bad, "--epochs", "2"]):
        rc, err = run(*argv)
        one_line_error(rc, err, bad / "checkpoint.safetensors")
        assert "NaN" in err or "non-finite" in err, err
    assert sorted(p.name for p in bad.iterdir()) == sorted(p.name for p in good.iterdir())


def test_a_run_that_ends_with_a_non_finite_test_elbo_fails(tmp_path, monkeypatch):
    import aevb.training
    real = aevb.training.evaluate_epoch
    monkeypatch.setattr(aevb.training, "evaluate_epoch",
                        lambda *a, **k: {k2: math.nan for k2 in real(*a, **k)})
    rc, err = run(*TRAIN, "--out", tmp_path / "r")
    one_line_error(rc, err, "non-finite test_elbo", "not usable")
    assert (tmp_path / "r" / "checkpoint.safetensors").exists()  # kept, to look at


def test_a_run_that_skips_most_of_its_steps_fails(tmp_path, monkeypatch):
    from aevb.models.vae import VAE
    real, calls = VAE.objective, [0]

    def objective(self, x, y=None, **kw):
        out = real(self, x, y, **kw)
        calls[0] += 1
        if self.training and calls[0] % 4:  # 3 of every 4 training steps: a non-finite loss
            out["loss"] = out["loss"] * math.nan
        return out
    monkeypatch.setattr(VAE, "objective", objective)
    rc, err = run(*TRAIN, "--out", tmp_path / "r")
    one_line_error(rc, err, "of 4 training steps were skipped")
