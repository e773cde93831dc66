"""The model interface every model declares, a registry, and save / load of one directory."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from ..data import DataError
from ..objectives import LogWeights, log_px_estimate, log_weight_terms
from ..serialization import CheckpointError, load_tensors, read_json, save_tensors, write_json

MODELS: dict[str, type["Model"]] = {}


def register(name: str):
    def deco(cls):
        cls.kind = name
        MODELS[name] = cls
        return cls
    return deco


class Model(nn.Module):
    """A latent-variable model of images x (N, C, H, W) with codes z (N, latent_dim).

    Declared by every model (other parts of aevb use these and nothing else):
    - `input_shape` (C, H, W), `latent_dim`, `num_classes` (0, or the K labels a conditional
      model takes as `y`), `likelihood` (the family of p(x|z)), `beta` (the KL weight of
      the loss, 1 unless set), `kl_method` ("analytic" / "mc"; None without a KL term);
    - `encode(x, y) -> q(z|x)` and `decode(z, y) -> p(x|z)`, torch Distributions with one
      event per example; `decode` takes z of any leading shape (..., latent_dim);
    - `prior`: p(z) as a module (it may hold parameters): `model.prior()` is the
      distribution. `None` for a model without one (a deterministic autoencoder), which
      then has no density: `has_density` is False, and the ELBO and log p(x) do not apply;
    - `objective(x, y, target=None, beta=None) -> {"loss": scalar, <term>: (N,)}`: the
      trainer minimizes "loss" and averages the other terms (nats per example); `beta`
      (default: the model's) weighs the KL term of the loss only; `target` is the image
      scored when x is a corrupted copy (denoising). The model is never changed by it
      beyond its running statistics;
    - `sample_latents(n, temperature)`, `sample(n, y, temperature=1)`, `reconstruct(x, y)`,
      `embed(x, y)`;
    - `log_weight_terms(x, k, y, target, rsample=, rows=)`: the importance weights of K
      samples from q over all the model's stochastic layers (the IWAE objective and log p(x)
      use these), and `latent_layers`, their number (1, or 2 for `HVAE`: then `encode`,
      `decode` and `prior` are those of the top layer alone, see `HVAE`).
    Built from a plain config dict (`from_config`, the keys of `settings`) and saved as a
    directory holding `config.json` and `model.safetensors` (`save` / `aevb.load`).
    """

    kind = "model"
    #: config keys a model takes (besides input_shape and num_classes, which the data give)
    settings: tuple[str, ...] = ()
    beta = 1.0
    kl_method: str | None = None
    #: stochastic layers: 1 when encode/decode/prior are the whole model (z ~ q(z|x), p(x|z) p(z))
    latent_layers = 1
    #: whether training may replay this class's step as a CUDA graph (`aevb.graphed`): its
    #: objective keeps no Python state between steps and reads no value back to the host
    capturable = False
    config: dict

    def __init__(self, input_shape, latent_dim: int, num_classes: int = 0, hidden=()):
        super().__init__()
        self.input_shape = check_sizes(input_shape, latent_dim, hidden)
        self.latent_dim, self.num_classes = latent_dim, num_classes
        self.prior = None  # a model with a prior sets a module here

    # -- configs
    @classmethod
    def upgrade_config(cls, config: dict) -> dict:
        """`config` as this version writes it (keys renamed or added since older versions)."""
        return dict(config)

    @classmethod
    def from_config(cls, config: dict) -> "Model":
        return cls(**cls.upgrade_config(config))

    def full_config(self) -> dict:
        return {"model": self.kind, **self.config}

    # -- the declared parts
    @property
    def has_density(self) -> bool:
        """Whether the model defines p(x) = integral of p(x|z) p(z) dz with a posterior
        q(z|x) that has a density: its ELBO and importance-sampled log p(x) exist."""
        return self.prior is not None

    def encode(self, x: Tensor, y: Tensor | None = None) -> Distribution:
        raise NotImplementedError

    def decode(self, z: Tensor, y: Tensor | None = None) -> Distribution:
        """p(x|z) over whole images, batch shape z.shape[:-1]. This default runs
        `self.decoder` (z, with the one-hot label of a conditional model appended, to
        per-pixel parameters) on rows of z and gives its output to `self.likelihood`."""
        c = self.condition(y)
        h = z if c is None else torch.cat([z, c], -1)
        out = self.decoder(h.reshape(-1, h.shape[-1]))
        return self.likelihood(out.view(*h.shape[:-1], *out.shape[1:]), 3)

    def objective(self, x: Tensor, y: Tensor | None = None, target: Tensor | None = None,
                  beta: float | None = None) -> dict:
        raise NotImplementedError

    def log_weight_terms(self, x: Tensor, k: int, y: Tensor | None = None, target: Tensor | None = None,
                         *, rsample: bool = False, rows: int | None = None) -> LogWeights:
        """(log p(x|z_k), log p(z_k), log q(z_k|x)), each (N, K), for K samples z_k ~ q(z|x)
        (`aevb.objectives.log_weight_terms`: one stochastic layer, encode / decode / prior)."""
        return log_weight_terms(self, x, k, y, target, rsample=rsample, rows=rows)

    def forward(self, x, y=None, **kw) -> dict:
        """The objective, so that wrappers such as DistributedDataParallel see the computation."""
        return self.objective(x, y, **kw)

    def fused_step(self):
        """A function step(x, target=None, beta=None, on_grad=None) computing the terms of
        `objective` and writing the loss's gradients into the parameters' `.grad` (replacing
        them, as zero_grad and backward would) without autograd (`aevb.fused`), where this
        model has one; None (the default) where it trains through `objective` and backward."""
        return None

    def graph_capturable(self) -> bool:
        """`capturable` as the class that declares it says, unless a subclass below that class
        changes `objective`, `forward`, `encode` or `decode` (a replayed graph would skip the
        Python of the new method)."""
        owner = next(c for c in type(self).__mro__ if "capturable" in c.__dict__)
        return bool(owner.capturable) and all(getattr(type(self), name) is getattr(owner, name)
                                              for name in ("objective", "forward", "encode", "decode"))

    def latent_distribution(self) -> Distribution:
        """The distribution `sample` draws codes from: the prior p(z) (an autoencoder: a
        Gaussian fitted to its training codes)."""
        return self.prior()

    @torch.no_grad()
    def sample_latents(self, n: int, temperature: float = 1.0) -> Tensor:
        """n codes (n, latent_dim) from `latent_distribution`, its spread around its mean
        scaled by `temperature` T: z = mean + T (z' - mean); for the standard normal prior
        z = T eps. Binary codes have no spread to scale (T must be 1)."""
        d = self.latent_distribution()
        z = d.sample((n,))
        if temperature == 1:
            return z
        if not temperature > 0:
            raise ValueError(f"temperature must be a positive number, got {temperature!r}")
        if d.support.is_discrete:
            raise ValueError("temperature applies to continuous latents, not to binary codes")
        return d.mean + temperature * (z - d.mean)

    @torch.no_grad()
    def sample(self, n: int, y: Tensor | int | None = None, mean: bool = True,
               temperature: float = 1.0) -> Tensor:
        """n images from p(z) p(x|z): decoder means (default) or random draws.

        A conditional model takes labels `y`: a tensor of n labels, or one int for all; when
        none are given it cycles through the classes (0, 1, ..., K-1, 0, ...). `temperature`
        T scales the spread of the codes (`sample_latents`)."""
        y = self.class_labels(n, y)
        p = self.decode(self.sample_latents(n, temperature), y)
        return p.mean if mean else p.sample()

    @torch.no_grad()
    def reconstruct(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """Decoder mean at the posterior mean: E[x | z = E_q z]."""
        return self.decode(self.encode(x, y).mean, y).mean

    @torch.no_grad()
    def embed(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """The code of each image: the posterior mean E_q[z] (N, latent_dim); for binary
        codes the probabilities q(z_j = 1 | x)."""
        return self.encode(x, y).mean

    def log_likelihood(self, x: Tensor, y: Tensor | None = None, samples: int = 5000, **kw) -> Tensor:
        """Importance-sampled estimate of log p(x) per example (N,), in nats, with K =
        `samples` (`aevb.objectives.log_px_estimate`; keywords rows, batch_size, seed; the
        numbers of `aevb.evaluation.importance_sampling`). Only for a model with a density."""
        if not self.has_density:
            raise ValueError(f"a {self.kind} model has no density p(x): no log-likelihood")
        check_shape(self, x)
        return log_px_estimate(self, x, y, samples, **kw)["log_px"].to(x.dtype)

    # -- conditioning on labels
    def condition(self, y: Tensor | None) -> Tensor | None:
        """The one-hot labels (..., num_classes) a conditional model's networks see; None for
        a model that is not conditional."""
        if not self.num_classes:
            return None
        if y is None:
            raise ValueError("this is a conditional model: pass the labels y")
        return nn.functional.one_hot(y, self.num_classes).to(torch.get_default_dtype())

    def class_labels(self, n: int, y=None) -> Tensor | None:
        """n labels for a conditional model: `y` (a tensor of n, or one int for all), else
        0, 1, ..., K-1, 0, ... (checked); None for a model that is not conditional."""
        if not self.num_classes:
            if y is not None:
                raise ValueError("labels y given, but this model is not conditional")
            return None
        device = device_of(self)
        if y is None:
            return torch.arange(n, device=device) % self.num_classes
        y = torch.as_tensor(y, device=device).long()
        if y.dim() == 0:
            y = y.expand(n)
        if y.shape != (n,):
            raise ValueError(f"need {n} labels, got shape {tuple(y.shape)}")
        if (y < 0).any() or (y >= self.num_classes).any():
            raise ValueError(f"labels must be in 0..{self.num_classes - 1}")
        return y

    def save(self, directory) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_tensors(directory / "model.safetensors", self.state_dict(), self.full_config())
        write_json(directory / "config.json", self.full_config())
        return directory


def check_choice(key: str, value, allowed) -> None:
    """A ValueError naming `key` and the allowed values unless `value` is one of them."""
    if value not in allowed:
        raise ValueError(f"{key} must be one of {', '.join(allowed)}; got {value!r}")


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


def upgrade_config(config):
    """A model config (`Model.full_config`) of any aevb version as this version writes it;
    anything that is not a known model's config is returned as it is."""
    if not isinstance(config, dict) or not isinstance(config.get("model"), str) \
            or config["model"] not in MODELS:
        return config
    return {"model": config["model"], **MODELS[config["model"]].upgrade_config(
        {k: v for k, v in config.items() if k != "model"})}


def check_labels(model, y, what: str = "labels") -> None:
    """A clear error when labels `y` do not fit a conditional model (0 <= y < num_classes)."""
    k = model.num_classes
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


def _read_checkpoint(path: Path) -> tuple[dict, dict, Path]:
    """(model config, weights, the file read) of a run directory, checkpoint or saved model."""
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
        # a run trained with keep_best holds the best epoch's weights beside the last ones; one
        # trained with ema the averaged parameters (its buffers are the last weights')
        prefixes = ("best.",) if any(k.startswith("best.") for k in tensors) else ("model.", "ema.")
        state = {k.split(".", 1)[1]: v for p in prefixes for k, v in tensors.items() if k.startswith(p)}
        return meta["model_config"], state, ckpt
    if (path / "config.json").exists():
        config = read_json(path / "config.json")
        if isinstance(config, dict) and "model_config" in config:  # a run's config.json
            raise CheckpointError(f"{path}: this run directory has no checkpoint.safetensors yet "
                                  "(the run stopped before its first epoch ended)")
        ckpt = path / "model.safetensors"
        return config, load_tensors(ckpt)[0], ckpt
    raise CheckpointError(f"{path}: no checkpoint.safetensors or config.json here; expected a "
                          "run directory, a checkpoint file or a directory written by model.save()")


def load(path) -> Model:
    """Load a model: from a run directory (its latest checkpoint: the last epoch's weights,
    the best epoch's for a run trained with `keep_best`, the averaged ones for a run trained
    with `ema`), a checkpoint file, or a
    directory written by `Model.save`. Weights are safetensors, so loading runs no code.
    Checkpoints of earlier versions load too (their configs are upgraded, `upgrade_config`)."""
    config, state, ckpt = _read_checkpoint(Path(path))
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
