"""The run config: one flat set of named, typed settings, from a YAML file and/or flags.

Every field is also a command-line flag of `aevb train` (`batch_size` -> `--batch-size`);
flags override the YAML file. Unknown keys and wrong types are refused with a message that
names the key and the expected type.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml


class ConfigError(ValueError):
    """A config key or value is wrong; the message names it and says what is expected."""


@dataclass
class Config:
    # data
    dataset: str = "digits"           # a registered name (aevb datasets) or folder:PATH
    data_dir: str | None = None       # read the dataset's files from here instead of downloading
    binarize: str = "dynamic"         # none | static | dynamic
    limit: int | None = None          # keep N images of each split (a fixed random choice)
    classes: list[int] | None = None  # keep only images with these labels (e.g. train on 0-8, score 9)
    image_size: int | None = None     # resize folder datasets to this size
    channels: int | None = None       # 1 or 3 for folder datasets
    # model
    model: str = "vae"
    net: str = "mlp"                  # mlp | conv
    hidden: list[int] = field(default_factory=lambda: [400, 400])
    latent_dim: int = 20
    activation: str = "relu"
    likelihood: str = "bernoulli"     # bernoulli | gaussian | ...
    sigma: float | str = 1.0          # Gaussian likelihood: fixed std or "learned"
    beta: float = 1.0                 # KL weight
    kl: str = "analytic"              # analytic | mc
    conditional: bool = False         # condition encoder and decoder on the label
    latent_family: str = "gaussian"   # gaussian | bernoulli (binary codes)
    prior: str | None = None          # a name in aevb.distributions.PRIORS; default: the latent family's
    prior_components: int = 10        # components of a mixture prior
    estimator: str = "reinforce"      # bernoulli latent: reinforce (score function) | gumbel
    baseline: str = "learned"         # reinforce: none | mean (moving average) | learned (+ MLP of x)
    gumbel_temperature: float = 0.5   # estimator gumbel: temperature of the straight-through relaxation
    objective: str = "elbo"           # elbo | iwae (importance-weighted bound as training objective)
    iwae_k: int = 5                   # objective iwae: samples per example
    # training
    epochs: int = 20
    batch_size: int = 100
    lr: float = 1e-3
    optimizer: str = "adam"           # adam | adamw | rmsprop | adagrad | sgd
    seed: int = 0
    clip_grad: float | None = None    # max gradient norm
    warmup_epochs: float = 0.0        # linear KL warm-up from 0 to beta
    noise: float = 0.0                # salt-and-pepper rate on inputs (denoising VAE)
    out: str | None = None            # run directory (default runs/<name>)
    device: str = "auto"              # auto (CUDA if present) | cpu | cuda | cuda:N
    precision: str = "fp32"           # fp32 | bf16 | fp16 (autocast; fp16 with loss scaling, for GPUs)
    threads: int | str | None = None  # CPU threads: auto (follow the load) | N (fixed); default: AEVB_THREADS or auto

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


FIELDS = {f.name: f for f in dataclasses.fields(Config)}


def _types(tp) -> tuple:
    """The runtime types allowed by an annotation such as `float | str | None`."""
    tp = typing.get_type_hints(Config)[tp] if isinstance(tp, str) else tp
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return tuple(t for a in typing.get_args(tp) for t in _types(a))
    if origin is list:
        return (list,)
    return (type(None),) if tp is type(None) else (tp,)


def coerce(key: str, value):
    """Check a value for `key`, converting it where that is unambiguous (a flag's "1e-3" to
    1e-3, 3 to 3.0, "400,400" to [400, 400])."""
    if key not in FIELDS:
        close = difflib.get_close_matches(key, FIELDS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown config key {key!r}{hint} (known keys: {', '.join(FIELDS)})")
    allowed = _types(key)
    for t in allowed:
        try:
            return _convert(t, value)
        except (TypeError, ValueError):
            continue
    names = " or ".join("null" if t is type(None) else t.__name__ for t in allowed)
    raise ConfigError(f"config key {key!r}: expected {names}, got {value!r}")


_BOOLS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


def _convert(t, value):
    """`value` as type `t`, or TypeError / ValueError."""
    if t is type(None):
        if value is None:
            return None
    elif t is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _BOOLS:
            return _BOOLS[value.lower()]
    elif isinstance(value, bool):
        pass  # never read True as 1
    elif t is list:
        items = value.replace(",", " ").split() if isinstance(value, str) else value
        if isinstance(items, (list, tuple)):
            return [_convert(int, v) for v in items]
    elif t is int:
        if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
            return int(value)
        if isinstance(value, str):
            return int(value)
    elif t is float:
        if isinstance(value, (int, float, str)):
            return float(value)
    elif isinstance(value, t):
        return value
    raise TypeError(value)


def load_yaml(path) -> dict:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None
    except OSError as e:  # a directory, no permission, ...
        raise ConfigError(f"config file {path}: cannot read it ({e.strerror})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not text (not UTF-8); expected YAML") from None
    except yaml.YAMLError as e:  # one line: where and what
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        what = getattr(e, "problem", None) or " ".join(str(e).split())
        raise ConfigError(f"config file {path} is not valid YAML ({where}{what})") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path}: expected a mapping of keys to values, got {type(raw).__name__}")
    return raw


def make_config(path=None, **overrides) -> Config:
    """Config from a YAML file (if given; a run's config.json works too) with `overrides`
    (None values ignored) on top."""
    values = load_yaml(path) if path else {}
    values.pop("model_config", None)  # written into a run's config.json, not a setting
    values.update({k: v for k, v in overrides.items() if v is not None})
    cfg = Config(**{k: coerce(k, v) for k, v in values.items()})
    _check(cfg)
    return cfg


def _check(cfg: Config) -> None:
    ranges = {"epochs": (cfg.epochs >= 0, "0 or more"), "batch_size": (cfg.batch_size >= 1, "1 or more"),
              "lr": (0 < cfg.lr < math.inf, "a positive number"), "latent_dim": (cfg.latent_dim >= 1, "1 or more"),
              "beta": (cfg.beta >= 0, "0 or more"), "noise": (0 <= cfg.noise <= 1, "between 0 and 1"),
              "warmup_epochs": (cfg.warmup_epochs >= 0, "0 or more")}
    for key, (ok, expected) in ranges.items():
        if not ok:
            raise ConfigError(f"config key {key!r} has an invalid value {getattr(cfg, key)!r}; "
                              f"expected {expected}")
    if cfg.binarize not in ("none", "static", "dynamic"):
        raise ConfigError(f"config key 'binarize': expected none, static or dynamic, got {cfg.binarize!r}")
    if cfg.clip_grad is not None and not cfg.clip_grad > 0:
        raise ConfigError(f"config key 'clip_grad' has an invalid value {cfg.clip_grad!r}; expected a "
                          "positive number or null")
    if not all(h >= 1 for h in cfg.hidden):
        raise ConfigError(f"config key 'hidden': layer sizes must be >= 1, got {cfg.hidden!r}")
    from . import distributed, runtime
    from .optim import OPTIMIZERS, PRECISIONS
    if cfg.precision not in PRECISIONS:
        raise ConfigError(f"config key 'precision': expected fp32, bf16 or fp16, got {cfg.precision!r}")
    try:
        if cfg.device != "auto":  # the name only: whether the device is here is checked when training
            distributed.parse_device(cfg.device)
    except ValueError as e:
        raise ConfigError(f"config key 'device': {e}") from None
    try:
        if cfg.threads is not None:
            runtime.parse_threads(cfg.threads, "config key 'threads'")
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if cfg.optimizer not in OPTIMIZERS:
        raise ConfigError(f"config key 'optimizer': unknown optimizer {cfg.optimizer!r}; choose one "
                          f"of {', '.join(OPTIMIZERS)}")
