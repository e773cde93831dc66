"""The run config: one flat set of named, typed settings, from a YAML file and/or flags.

Every field is also a command-line flag of `aevb train` (`batch_size` -> `--batch-size`);
flags override the YAML file. Unknown keys and wrong types are refused with a message that
names the key and the expected type.
"""
from __future__ import annotations

import dataclasses
import difflib
import inspect
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

from .serialization import MAX_DEPTH, not_regular, read_file, short

#: the largest seed (torch, numpy and the trainer's per-epoch seeds all take it)
MAX_SEED = 2**32 - 1
#: a config file is small: larger ones are refused before they are parsed
MAX_CONFIG_BYTES = 1 << 20
#: at most this many YAML nodes after aliases are expanded (an "alias bomb" is refused)
MAX_YAML_NODES = 100_000


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
    latent_family: str = "gaussian"   # gaussian | bernoulli (binary codes, prior Bernoulli(1/2))
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
        close = difflib.get_close_matches(key, FIELDS, n=1) if isinstance(key, str) and len(key) < 100 else []
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown config key {short(key)}{hint} (known keys: {', '.join(FIELDS)})")
    allowed = _types(key)
    for t in allowed:
        try:
            return _convert(t, value)
        except (TypeError, ValueError):
            continue
    names = " or ".join("null" if t is type(None) else t.__name__ for t in allowed)
    raise ConfigError(f"config key {key!r}: expected {names}, got {short(value)}")


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
    """The mapping of a YAML (or JSON) config file. Refused with a one-line ConfigError: a
    file that is missing, not a regular file (a FIFO would block), larger than 1 MiB, not
    UTF-8, not valid YAML, nested more than MAX_DEPTH levels, more than MAX_YAML_NODES
    values once aliases are expanded, or not a mapping with names as keys."""
    import yaml  # here, not at the top: the command line starts faster
    path = Path(path)
    if not_regular(path) == "file not found":
        raise ConfigError(f"config file {path} not found")
    try:
        text = read_file(path, ConfigError, MAX_CONFIG_BYTES).decode("utf-8")
    except ConfigError as e:
        raise ConfigError(f"config file {e}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not text (not UTF-8); expected YAML") from None
    try:
        raw = _safe_yaml(text, path)
    except yaml.YAMLError as e:  # one line: where and what
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        what = getattr(e, "problem", None) or " ".join(str(e).split())
        raise ConfigError(f"config file {path} is not valid YAML ({where}{short(what)[1:-1]})") from None
    except RecursionError:
        raise ConfigError(f"config file {path}: nested too deeply (at most {MAX_DEPTH} levels)") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path}: expected a mapping of keys to values, got {type(raw).__name__}")
    bad = [k for k in raw if not isinstance(k, str)]
    if bad:
        raise ConfigError(f"config file {path}: key {short(bad[0])} is not a name; keys are names "
                          "such as epochs or latent_dim")
    return raw


def _safe_yaml(text: str, path):
    """yaml.safe_load, refusing documents too deep or too large once aliases are expanded,
    before any Python object is built (so an alias bomb costs nothing)."""
    import yaml
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        stack, count = [(node, 1)], 0
        while stack:
            n, depth = stack.pop()
            count += 1
            if depth > MAX_DEPTH or count > MAX_YAML_NODES:
                raise ConfigError(f"config file {path}: nested more than {MAX_DEPTH} levels or more "
                                  f"than {MAX_YAML_NODES} values (aliases expanded); not a config")
            if isinstance(n, yaml.SequenceNode):
                stack.extend((c, depth + 1) for c in n.value)
            elif isinstance(n, yaml.MappingNode):
                stack.extend((c, depth + 1) for pair in n.value for c in pair)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def make_config(path=None, **overrides) -> Config:
    """Config from a YAML file (if given; a run's config.json works too) with `overrides`
    (None values ignored) on top."""
    values = load_yaml(path) if path else {}
    for key in ("model_config", "resumed"):  # written into a run's config.json, not settings
        values.pop(key, None)
    values.update({k: v for k, v in overrides.items() if v is not None})
    cfg = Config(**{k: coerce(k, v) for k, v in values.items()})
    _check(cfg)
    return cfg


def _check(cfg: Config) -> None:
    ranges = {"epochs": (cfg.epochs >= 0, "0 or more"), "batch_size": (cfg.batch_size >= 1, "1 or more"),
              "lr": (0 < cfg.lr < math.inf, "a positive number"), "latent_dim": (cfg.latent_dim >= 1, "1 or more"),
              "beta": (cfg.beta >= 0, "0 or more"), "noise": (0 <= cfg.noise <= 1, "between 0 and 1"),
              "warmup_epochs": (cfg.warmup_epochs >= 0, "0 or more"),
              "seed": (0 <= cfg.seed <= MAX_SEED, f"0 to {MAX_SEED}"),
              "limit": (cfg.limit is None or cfg.limit >= 1, "1 or more (or null for all images)"),
              "classes": (cfg.classes is None or (len(cfg.classes) > 0 and min(cfg.classes) >= 0),
                          "a non-empty list of labels >= 0 (or null for all)")}
    for key, (ok, expected) in ranges.items():
        if not ok:
            raise ConfigError(f"config key {key!r} has an invalid value {short(getattr(cfg, key))}; "
                              f"expected {expected}")
    _check_values(cfg)
    if cfg.binarize not in ("none", "static", "dynamic"):
        raise ConfigError(f"config key 'binarize': expected none, static or dynamic, got {cfg.binarize!r}")
    if cfg.clip_grad is not None and not cfg.clip_grad > 0:
        raise ConfigError(f"config key 'clip_grad' has an invalid value {cfg.clip_grad!r}; expected a "
                          "positive number or null")
    if not all(h >= 1 for h in cfg.hidden):
        raise ConfigError(f"config key 'hidden': layer sizes must be >= 1, got {cfg.hidden!r}")
    from . import distributed, runtime
    from .training import OPTIMIZERS, PRECISIONS
    if cfg.precision not in PRECISIONS:
        raise ConfigError(f"config key 'precision': expected fp32, bf16 or fp16, got {cfg.precision!r}")
    try:
        if cfg.device != "auto":  # the name only: whether the device is here is checked when training
            distributed.parse_device(cfg.device, trainable=True)
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


def _check_values(cfg: Config) -> None:
    """Numbers finite, integers of a sane size, text without NUL bytes, in every field."""
    for key, v in cfg.to_dict().items():
        for item in v if isinstance(v, list) else [v]:
            if isinstance(item, float) and not math.isfinite(item):
                raise ConfigError(f"config key {key!r} has a non-finite value {item!r}; expected a number")
            if isinstance(item, int) and abs(item) > 2**62:
                raise ConfigError(f"config key {key!r} has an invalid value {short(item)}; too large")
            if isinstance(item, str) and ("\0" in item or len(item) > 4096):
                raise ConfigError(f"config key {key!r} has an invalid value {short(item)}; expected "
                                  "a name or path without NUL bytes, at most 4096 characters")


def model_kwargs(cls, cfg: Config, **given) -> dict:
    """The constructor arguments of model class `cls` that the config provides."""
    params = inspect.signature(cls.__init__).parameters
    values = {**cfg.to_dict(), **given}
    return {k: values[k] for k in params if k in values and k != "self"}


def load_dataset(cfg: Config):
    """The dataset a config names."""
    from . import data
    kw = {k: getattr(cfg, k) for k in ("image_size", "channels") if getattr(cfg, k) is not None}
    try:
        return data.load(cfg.dataset, binarize=cfg.binarize, data_dir=cfg.data_dir, limit=cfg.limit,
                         classes=cfg.classes, **kw)
    except data.DataError:
        raise
    except ValueError as e:  # a setting the dataset does not take (e.g. image_size for digits)
        raise ConfigError(str(e)) from None


def build_model(cfg: Config, dataset):
    """A fresh model for `dataset` as the config describes it (seeded by cfg.seed)."""
    import torch

    from .models import MODELS
    if cfg.model not in MODELS:
        raise ConfigError(f"config key 'model': unknown model {cfg.model!r}; choose one of {sorted(MODELS)}")
    if cfg.conditional and not dataset.num_classes:
        raise ConfigError(f"conditional: true needs labels, and dataset {cfg.dataset!r} has none")
    cls = MODELS[cfg.model]
    kw = model_kwargs(cls, cfg, input_shape=dataset.shape,
                      num_classes=dataset.num_classes if cfg.conditional else 0)
    _check_memory(cls, kw)
    torch.manual_seed(cfg.seed)
    try:
        return cls(**kw)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    except (RuntimeError, MemoryError) as e:  # sizes too large to allocate, or impossible
        raise ConfigError(f"cannot build the model this config describes ({' '.join(str(e).split())})") from None


def _check_memory(cls, kw: dict) -> None:
    """Refuse a model whose weights, gradients and optimizer state (16 bytes per parameter)
    would not fit in the memory available now: counted on the meta device, where nothing is
    allocated, so that sizes such as hidden: [100000000] fail at once instead of swapping."""
    import torch
    try:
        with torch.device("meta"):
            n = sum(p.numel() for p in cls(**kw).parameters())
    except Exception:  # noqa: BLE001 - the real build reports what is wrong
        return
    available = _available_memory()
    if available and 16 * n > available:
        raise ConfigError(f"this model has {n:,} parameters and needs about {16 * n / 2**30:.1f} GiB "
                          f"for training, more than the {available / 2**30:.1f} GiB of memory available; "
                          "use smaller hidden or latent_dim")


def _available_memory() -> int | None:
    """Bytes of memory available (MemAvailable of /proc/meminfo, else the physical memory)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def train_config(cfg: Config, progress: bool = True, overwrite: bool = False, resume: bool = False):
    """Train the run a config describes (dataset, model, trainer settings) -> (Run, dataset)."""
    from .training import train
    ds = load_dataset(cfg)
    model = build_model(cfg, ds)
    params = {k for k, p in inspect.signature(train).parameters.items() if p.kind == p.KEYWORD_ONLY}
    kw = {k: v for k, v in cfg.to_dict().items() if k in params and k not in ("out", "config")}
    return train(model, ds, out=cfg.out, resume=resume, overwrite=overwrite, config=cfg.to_dict(),
                 progress=progress, **kw), ds
