"""What every model shares: a registry, a config dict, save / load of one directory."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..data import DataError
from ..serialization import CheckpointError, load_tensors, read_json, save_tensors, write_json

MODELS: dict[str, type["Model"]] = {}


def register(name: str):
    def deco(cls):
        cls.kind = name
        MODELS[name] = cls
        return cls
    return deco


class Model(nn.Module):
    """A model is built from a plain config dict (`from_config`) and saved as a directory
    holding `config.json` and `model.safetensors` (`save` / `aevb.load`).

    Subclasses implement `objective(x, y) -> {"loss": scalar, <metric>: per-example (N,)}`;
    the trainer minimizes "loss" and averages the other entries over the data.
    """

    kind = "model"
    config: dict

    @classmethod
    def from_config(cls, config: dict) -> "Model":
        raise NotImplementedError

    def objective(self, x, y=None) -> dict:
        raise NotImplementedError

    def forward(self, x, y=None, **kw) -> dict:
        """The objective, so that wrappers such as DistributedDataParallel see the computation."""
        return self.objective(x, y, **kw)

    def full_config(self) -> dict:
        return {"model": self.kind, **self.config}

    def save(self, directory) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_tensors(directory / "model.safetensors", self.state_dict(), self.full_config())
        write_json(directory / "config.json", self.full_config())
        return directory


def check_sizes(input_shape, latent_dim: int, hidden=()) -> tuple[int, int, int]:
    """The input shape as a (channels, height, width) tuple; a clear error for bad sizes."""
    input_shape = tuple(int(s) for s in input_shape)
    if len(input_shape) != 3 or min(input_shape) < 1:
        raise ValueError(f"input_shape must be (channels, height, width), got {input_shape}")
    if latent_dim < 1:
        raise ValueError(f"latent_dim must be >= 1, got {latent_dim}")
    if any(int(h) < 1 for h in hidden):
        raise ValueError(f"hidden sizes must be >= 1, got {list(hidden)}")
    return input_shape


def check_shape(model, x, what: str = "images") -> None:
    """A clear error when images `x` (N, C, H, W) are not the shape the model was built for."""
    if tuple(x.shape[1:]) != tuple(model.input_shape):
        raise DataError(f"{what} have shape {tuple(x.shape[1:])} but the model expects "
                        f"{tuple(model.input_shape)}")


def check_labels(model, y, what: str = "labels") -> None:
    """A clear error when labels `y` do not fit a conditional model (0 <= y < num_classes)."""
    k = getattr(model, "num_classes", 0)
    if k and y is not None and len(y) and (int(y.min()) < 0 or int(y.max()) >= k):
        raise DataError(f"{what} run from {int(y.min())} to {int(y.max())}, but the model knows "
                        f"classes 0..{k - 1} only; use images of those classes")


def from_config(config: dict) -> Model:
    """Build an (untrained) model from a config written by `Model.full_config`."""
    config = dict(config)
    kind = config.pop("model", None)
    if kind not in MODELS:
        raise CheckpointError(f"unknown model type {kind!r} in config; known: {sorted(MODELS)}")
    return MODELS[kind].from_config(config)


def load_state(model: nn.Module, state: dict, source, check_only: bool = False) -> None:
    """Load weights, refusing (with the file name) a checkpoint made for another architecture;
    `check_only`: only compare names and shapes."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"{source}: checkpoint does not fit this model (missing {missing[:3]}, unexpected "
            f"{unexpected[:3]}, wrong shape {wrong[:3]}); it was saved from another model")
    if not check_only:
        model.load_state_dict(state)


def load(path) -> Model:
    """Load a model: from a run directory (its latest checkpoint), a checkpoint file, or a
    directory written by `Model.save`. Weights are safetensors, so loading runs no code."""
    path = Path(path)
    if path.name == "model.safetensors" and path.is_file():  # the weights file of a saved model
        path = path.parent
    ckpt = path / "checkpoint.safetensors" if path.is_dir() else path
    # any other file is read as safetensors whatever its suffix, so that a pickle (.pt) is
    # refused with a clear message (and is never unpickled)
    if (ckpt.suffix == ".safetensors" or path.is_file()) and ckpt.name != "model.safetensors" and (
            ckpt.exists() or not (path / "config.json").exists()):
        tensors, meta = load_tensors(ckpt)
        if "model_config" not in meta:
            raise CheckpointError(f"{ckpt}: no model config in this checkpoint; not written by aevb")
        config = meta["model_config"]
        state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    elif (path / "config.json").exists():
        config = read_json(path / "config.json")
        if isinstance(config, dict) and "model_config" in config:  # a run's config.json
            raise CheckpointError(f"{path}: this run directory has no checkpoint.safetensors yet "
                                  "(the run stopped before its first epoch ended)")
        ckpt = path / "model.safetensors"
        state, _ = load_tensors(ckpt)
    else:
        raise CheckpointError(f"{path}: no checkpoint.safetensors or config.json here; expected a "
                              "run directory, a checkpoint file or a directory written by model.save()")
    if not isinstance(config, dict):
        raise CheckpointError(f"{ckpt}: damaged checkpoint (its model config is not a JSON object)")
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(f"{ckpt}: weights {', '.join(bad[:3])} hold NaN or infinite values (the "
                              "run diverged); train again with a lower learning rate, or use a good copy")
    return _build(config, state, ckpt).eval()


def _build(config: dict, state: dict, ckpt) -> Model:
    """The model of `config` with weights `state`. Built first on the meta device (nothing
    allocated), so that a config that does not fit the weights (say, a damaged file asking
    for billions of parameters) is refused before any memory is spent on it."""
    try:
        with torch.device("meta"):
            skeleton = from_config(config)
    except Exception:  # noqa: BLE001 - the real build below says what is wrong
        skeleton = None
    if skeleton is not None:
        load_state(skeleton, state, ckpt, check_only=True)
    try:  # a damaged or foreign config: unknown keys, bad values, impossible sizes
        model = from_config(config)
    except CheckpointError as e:  # an unknown model type, or weights of another model
        raise CheckpointError(e if str(e).startswith(str(ckpt)) else f"{ckpt}: {e}") from None
    except (TypeError, ValueError, KeyError, RuntimeError, AttributeError, IndexError,
            OverflowError, MemoryError) as e:
        raise CheckpointError(f"{ckpt}: its model config does not build a model "
                              f"({type(e).__name__}: {' '.join(str(e).split())[:200]})") from None
    load_state(model, state, ckpt)
    return model


def device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device
