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
import types
import typing
import warnings
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
    dataset: str = "digits"           # a registered name (aevb datasets), folder:PATH or npz:PATH
    data_dir: str | None = None       # read the dataset's files from this folder instead of downloading
    binarize: str = "auto"            # Bernoulli draws of the pixels; auto: dynamic for the digit datasets, none for others
    limit: int | None = None          # keep N images of each split (a fixed random choice)
    classes: list[int | str] | None = None  # keep only these labels or class names (e.g. 0,1,2 or cat,dog)
    image_size: int | None = None     # folder datasets: resize to this size; unset: 64
    channels: int | None = None       # folder datasets: 1 (grayscale) or 3 (RGB); unset: 3
    # model
    model: str = "vae"                # a VAE, a deterministic autoencoder, a two-stochastic-layer VAE (hvae), or one added by models.register
    net: str = "mlp"                  # encoder and decoder networks (the decoder mirrors the encoder)
    hidden: list[int] = field(default_factory=lambda: [400, 400])  # hidden layer sizes (conv: channels)
    latent_dim: int = 20              # size of the latent code z
    inner_latent_dim: int = 100       # model hvae: size of its lower stochastic layer z1 (latent_dim is its top layer z2)
    inner_hidden: list[int] = field(default_factory=lambda: [100, 100])  # model hvae: hidden sizes of the z1 <-> z2 MLPs
    activation: str = "relu"          # the networks' nonlinearity
    likelihood: str = "auto"          # p(x|z); auto: bernoulli for binarized data, logistic for intensities
    sigma: float | str = 1.0          # gaussian likelihood: fixed std, or learned
    beta: float = 1.0                 # KL weight
    kl: str = "analytic"              # KL term computed in closed form, or by sampling (mc)
    conditional: bool = False         # condition encoder and decoder on the label (CVAE)
    latent_family: str = "gaussian"   # gaussian (reparameterized) or bernoulli (binary codes)
    prior: str | None = None          # p(z), a name in aevb.distributions.PRIORS; unset: the latent family's (standard normal, Bernoulli(1/2))
    prior_components: int = 10        # components of a mixture prior (mog) or pseudo-inputs (vamp)
    estimator: str = "reinforce"      # bernoulli latent: score function (reinforce) or straight-through gumbel
    baseline: str = "learned"         # reinforce: none, mean (moving average) or learned (+ an MLP of x)
    gumbel_temperature: float = 0.5   # estimator gumbel: temperature of the straight-through relaxation
    objective: str = "elbo"           # training objective: the ELBO or the importance-weighted bound (iwae)
    iwae_k: int = 5                   # objective iwae: samples per example
    posterior: str = "diagonal"       # q(z|x): a diagonal Gaussian, or one followed by an inverse autoregressive flow (iaf; latent_family gaussian)
    flow_steps: int = 2               # posterior iaf: flow steps (MADEs), the order of the units reversed between steps
    flow_hidden: list[int] = field(default_factory=lambda: [128, 128])  # posterior iaf: hidden layer sizes of each MADE
    flow_context: bool = False        # posterior iaf: the encoder also gives a context h, an input of every MADE (Kingma et al.; slower to train in short runs)
    flow_form: str = "affine"         # posterior iaf: each step z' = exp(s) z + m (affine) or sigmoid(s) z + (1 - sigmoid(s)) m (gated, the paper's stable form; ~2 nats worse on MNIST)
    # training
    epochs: int = 20                  # passes over the training images
    batch_size: int = 100             # images per step (the global batch under torchrun)
    lr: float = 1e-3                  # learning rate
    lr_schedule: str = "constant"     # constant, or cosine: decays lr to 0 over the epochs
    optimizer: str = "adam"           # the optimizer (adam and adamw fused)
    seed: int = 0                     # seeds weights, batch order and sampling noise
    clip_grad: float | None = None    # max gradient norm
    warmup_epochs: float = 0.0        # linear KL warm-up from 0 to beta
    noise: float = 0.0                # salt-and-pepper rate on inputs (denoising VAE)
    out: str | None = None            # run directory (default runs/<name>)
    device: str = "auto"              # auto (CUDA if present) | cpu | cuda | cuda:N
    precision: str = "fp32"           # fp32, or bf16 / fp16 autocast (fp16 with loss scaling, for GPUs)
    compile: bool = False             # torch.compile the training step (pays off in long runs; see docs)
    time_limit: float | None = None   # seconds of training: stop after the step that crosses it (checkpoint saved; --resume continues)
    validation: int = 0               # training images held out to choose the best epoch by (0: none)
    keep_best: bool = False           # with validation: the run's model is its best epoch's, not its last
    patience: int | None = None       # with validation: stop after this many epochs without a better validation bound
    ema: float | None = None          # decay of a moving average of the weights (e.g. 0.999) that evaluation and the saved model use; null: the last weights
    threads: int | str | None = None  # CPU threads: auto (follow the load) | N (fixed); default: AEVB_THREADS or auto

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


FIELDS = {f.name: f for f in dataclasses.fields(Config)}

#: the values a key takes, for `aevb train --help` (kept equal to the registries of the
#: modules that use them, tests/test_ux_messages.py; listed here so that help needs no torch)
CHOICES = {
    "binarize": ("auto", "none", "static", "dynamic"),
    "model": ("vae", "autoencoder", "hvae"),
    "net": ("mlp", "conv", "resconv", "resconv_spatial"),
    "activation": ("relu", "tanh", "elu", "gelu", "softplus", "leaky_relu", "sigmoid", "gated"),
    "likelihood": ("auto", "bernoulli", "gaussian", "logistic", "logistic_rgb", "continuous_bernoulli"),
    "kl": ("analytic", "mc"),
    "latent_family": ("gaussian", "bernoulli"),
    "prior": ("standard_normal", "bernoulli_half", "mog", "vamp"),
    "estimator": ("reinforce", "gumbel"),
    "baseline": ("none", "mean", "learned"),
    "objective": ("elbo", "iwae"),
    "posterior": ("diagonal", "iaf"),
    "flow_form": ("affine", "gated"),
    "lr_schedule": ("constant", "cosine"),
    "optimizer": ("adam", "adamw", "rmsprop", "adagrad", "sgd"),
    "precision": ("fp32", "bf16", "fp16"),
}
#: binarize "auto": these datasets (grey digits and garments) are binarized afresh each epoch,
#: all others (colour photos, folder:PATH, npz:PATH) are kept as intensities
BINARIZED_BY_DEFAULT = ("digits", "mnist", "mnist-offline", "fashion-mnist")


def help_texts() -> dict[str, str]:
    """Each key's help for `aevb train --help`: its comment in `Config`, its choices and its
    default, e.g. "size of the latent code z (default: 20)"."""
    comments = {}
    for line in inspect.getsource(Config).splitlines():
        head, sep, comment = line.partition("#")
        name = head.split(":", 1)[0].strip()
        if sep and name in FIELDS:
            comments[name] = comment.strip()
    out = {}
    for name, f in FIELDS.items():
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        extra = ([f"one of {', '.join(CHOICES[name])}"] if name in CHOICES else []) + \
            ([] if default is None else [f"default: {default}"])
        text = comments.get(name, "") + (f" ({'; '.join(extra)})" if extra else "")
        out[name] = text.strip().replace("%", "%%")  # argparse formats help with %
    return out


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
            return _convert(t, value, key)
        except (TypeError, ValueError):
            continue
    names = " or ".join("null" if t is type(None) else t.__name__ for t in allowed)
    raise ConfigError(f"config key {key!r}: expected {names}, got {short(value)}")


_BOOLS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


def _convert(t, value, key: str | None = None):
    """`value` as type `t`, or TypeError / ValueError; a list's items as the types that
    `key`'s annotation gives them (list[int] by default). A string list is "400,400",
    "400 400" or YAML's "[400, 400]"."""
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
        items = _list_items(value) if isinstance(value, str) else value
        if isinstance(items, (list, tuple)):
            return [_item(v, _item_types(key)) for v in items]
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


def _list_items(text: str):
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    items = (t.strip().strip("'\"") for t in text.split("," if "," in text else None))
    return [t for t in items if t]


def _item_types(key: str | None) -> tuple:
    tp = typing.get_type_hints(Config).get(key) if key else None
    lists = [a for a in (tp, *typing.get_args(tp)) if typing.get_origin(a) is list]
    return _types(typing.get_args(lists[0])[0]) if lists else (int,)


def _item(value, types_: tuple):
    for t in types_:
        try:
            return _convert(t, value)
        except (TypeError, ValueError):
            continue
    raise ValueError(value)


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
    cfg.auto = _resolve(cfg)
    _check(cfg)
    return cfg


class ConfigWarning(UserWarning):
    """A config that runs but is probably not what was meant; the message says why."""


def _resolve(cfg: Config) -> tuple[str, ...]:
    """Fix what a run's config.json must say for the run to mean the same later and from any
    folder: relative paths (data_dir, folder:PATH, npz:PATH) made absolute, and binarize /
    likelihood "auto" decided (`BINARIZED_BY_DEFAULT`; bernoulli for binarized pixels, the
    discretized logistic for intensities). Returns the keys that were "auto"."""
    if cfg.data_dir and "\0" not in cfg.data_dir:  # a NUL byte: refused by _check_values
        cfg.data_dir = str(Path(cfg.data_dir).expanduser().resolve())
    kind, sep, where = cfg.dataset.partition(":")
    if sep and kind in ("folder", "npz") and where and "\0" not in where:
        cfg.dataset = f"{kind}:{Path(where).expanduser().resolve()}"
    auto = tuple(k for k in ("binarize", "likelihood") if getattr(cfg, k) == "auto")
    if cfg.binarize == "auto":
        cfg.binarize = "dynamic" if cfg.dataset in BINARIZED_BY_DEFAULT else "none"
    if cfg.likelihood == "auto":
        cfg.likelihood = "bernoulli" if cfg.binarize != "none" else "logistic"
    return auto


def advise(cfg: Config) -> None:
    """Warn (`ConfigWarning`) about a config that trains but measures something else than
    meant; called when a run starts (`train_config`)."""
    sigma = cfg.sigma
    if cfg.likelihood == "gaussian" and isinstance(sigma, (int, float)) and not isinstance(sigma, bool) \
            and sigma > (2 * math.pi) ** -0.5:
        best = -math.log(sigma) - 0.5 * math.log(2 * math.pi)
        warnings.warn(
            f"likelihood gaussian with a fixed sigma of {sigma:g} on pixels in [0, 1]: even a perfect "
            f"reconstruction scores {best:.2f} nats per pixel, worse than a uniform distribution "
            "over 256 levels (above 8 bits/dim); use sigma: learned, a smaller sigma (e.g. 0.1) or "
            "likelihood: logistic", ConfigWarning, stacklevel=2)


def _check(cfg: Config) -> None:
    ranges = {"epochs": (cfg.epochs >= 0, "0 or more"), "batch_size": (cfg.batch_size >= 1, "1 or more"),
              "lr": (0 < cfg.lr < math.inf, "a positive number"), "latent_dim": (cfg.latent_dim >= 1, "1 or more"),
              "beta": (cfg.beta >= 0, "0 or more"), "noise": (0 <= cfg.noise <= 1, "between 0 and 1"),
              "warmup_epochs": (cfg.warmup_epochs >= 0, "0 or more"),
              "time_limit": (cfg.time_limit is None or 0 < cfg.time_limit < math.inf, "a positive number of seconds (or null)"),
              "validation": (cfg.validation >= 0, "0 or more training images"),
              "patience": (cfg.patience is None or cfg.patience >= 1, "1 or more epochs (or null)"),
              "ema": (cfg.ema is None or 0 < cfg.ema < 1, "a decay between 0 and 1, e.g. 0.999 (or null)"),
              "seed": (0 <= cfg.seed <= MAX_SEED, f"0 to {MAX_SEED}"),
              "limit": (cfg.limit is None or cfg.limit >= 1, "1 or more (or null for all images)"),
              "classes": (cfg.classes is None or (len(cfg.classes) > 0 and all(
                  isinstance(c, str) or c >= 0 for c in cfg.classes)),
                          "a non-empty list of labels >= 0 (or null for all)")}
    for key, (ok, expected) in ranges.items():
        if not ok:
            raise ConfigError(f"config key {key!r} has an invalid value {short(getattr(cfg, key))}; "
                              f"expected {expected}")
    if (cfg.keep_best or cfg.patience) and not cfg.validation:
        raise ConfigError("keep_best and patience choose epochs by held-out images: set validation too "
                          "(e.g. --validation 1000)")
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
    _check_values(cfg)


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

