"""One place that opens a run: its config, its model, its dataset and its history.

    run = runs.open_run("runs/mnist")       # RunFiles: dir, config, model, history, eval
    ds = runs.run_dataset(run.config)       # the dataset its config names
    cfg = runs.run_config("runs/mnist")     # its Config (None for a bare checkpoint)
    x = runs.load_images(spec, cfg)         # a dataset name or an image file, prepared as the run's data
    model = runs.build_model(cfg, ds)       # a fresh model as a config describes it
    run, ds = runs.train_config(cfg)        # train the run a config describes

A model takes the config keys its class declares (`Model.settings`); training takes
`TRAIN_KEYS`; the data `DATA_KEYS`.
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import config as config_mod
from . import data
from .config import Config, ConfigError
from .data import EVAL_BINARIZE_SEED, DataError, Split, subset, transforms
from .data.images import is_image_file, read_image_file
from .models import MODELS, load
from .serialization import CheckpointError, parse_json, read_file, read_json
from .training import train

#: config keys passed to `aevb.train`
TRAIN_KEYS = ("epochs", "batch_size", "lr", "lr_schedule", "optimizer", "seed", "clip_grad", "warmup_epochs", "noise",
              "device", "precision", "threads", "compile", "time_limit",
              "validation", "keep_best", "patience", "ema")
#: config keys that choose the data
DATA_KEYS = ("dataset", "data_dir", "binarize", "limit", "classes", "image_size", "channels")


@dataclass
class RunFiles:
    """What a run directory holds: its config (config.json), the model of its checkpoint,
    the per-epoch metrics (metrics.jsonl) and the evaluation (eval.json, or None)."""

    dir: Path
    config: dict
    model: object = None
    history: list[dict] = field(default_factory=list)
    eval: dict | None = None

    @property
    def name(self) -> str:
        return self.dir.resolve().name


def read_history(run_dir) -> list[dict]:
    """The records of metrics.jsonl (one per epoch); [] if there are none. Damaged lines (a
    run killed while writing, an edited file) are skipped: a record is a JSON object with a
    positive integer "epoch", and only its numeric entries are kept."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    out = []
    for line in read_file(path, limit=64 << 20).decode("utf-8", "replace").splitlines():
        try:
            r = parse_json(line, path)
        except CheckpointError:
            continue
        if isinstance(r.get("epoch"), int) and not isinstance(r["epoch"], bool) and r["epoch"] >= 1:
            out.append({k: v for k, v in r.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
    return out


def open_run(run_dir, load_model: bool = True) -> RunFiles:
    """The contents of run directory `run_dir` (see `RunFiles`)."""
    d = Path(run_dir)
    if not d.is_dir():
        raise CheckpointError(f"{d}: no such run directory")
    config = read_json(d / "config.json") if os.path.lexists(d / "config.json") else {}
    model = load(d) if load_model else None
    ev = None
    if os.path.lexists(d / "eval.json"):
        try:
            ev = read_json(d / "eval.json")
        except CheckpointError as e:
            raise CheckpointError(f"{e}; run aevb eval {d} --overwrite to write it again") from None
    return RunFiles(d, config, model, read_history(d), ev)


def run_config(run) -> Config | None:
    """The Config of a run directory (its config.json), or None for a bare checkpoint or a
    directory written by Model.save (a model config, not a run's)."""
    path = Path(run)
    f = path / "config.json" if path.is_dir() else path.parent / "config.json"
    if not f.exists():
        return None
    try:
        return config_mod.make_config(f)
    except ConfigError:
        return None


def load_dataset(cfg: Config, progress: bool = True):
    """The dataset a config names (`progress`: a bar while a folder's images are read)."""
    kw = {k: getattr(cfg, k) for k in ("image_size", "channels") if getattr(cfg, k) is not None}
    try:
        return data.load(cfg.dataset, binarize=cfg.binarize, data_dir=cfg.data_dir, limit=cfg.limit,
                         classes=cfg.classes, progress=progress, **kw)
    except DataError:
        raise
    except ValueError as e:  # a setting the dataset does not take (e.g. image_size for digits)
        raise ConfigError(str(e)) from None


def run_dataset(config: dict, data_dir: str | None = None):
    """The dataset named by a run's config dict (with its binarization, data_dir, limit and
    classes); `data_dir` overrides where the files are."""
    values = {k: v for k, v in config.items() if k in config_mod.FIELDS}
    if data_dir:
        values["data_dir"] = str(data_dir)
    return load_dataset(config_mod.make_config(None, **values))


def load_images(spec: str, cfg: Config | None = None, split: str = "test", data_dir=None,
                limit: int | None = None, classes=None) -> Split:
    """Images named by `spec`: a file (`aevb.data.images`) or a registered dataset name (its
    `split`; all its classes, not the run's `classes`, unless `classes` is given).
    Binarized as the run's data was (`cfg.binarize`; once, with the fixed evaluation seed)."""
    binarize = cfg.binarize if cfg is not None else "none"
    once = torch.Generator().manual_seed(EVAL_BINARIZE_SEED)
    if is_image_file(spec):
        images = subset(Split(*read_image_file(spec, split)), limit)
        return Split(transforms.binarize(images.x, once), images.y) if binarize != "none" else images
    if split not in ("train", "test"):
        raise DataError(f"split must be 'train' or 'test', got {split!r}")
    base = cfg if cfg is not None else Config()
    same = cfg is not None and spec == cfg.dataset
    c = dataclasses.replace(base, dataset=spec, binarize=binarize, limit=limit, classes=classes,
                            data_dir=data_dir or (base.data_dir if same else None))
    s = getattr(load_dataset(c), split)
    if split == "train" and binarize == "dynamic":  # the train split is kept gray for dynamic draws
        s = Split(transforms.binarize(s.x, once), s.y)
    return s


def run_images(cfg: Config, split: str = "train") -> Split:
    """The run's own images: its dataset's `split`, only its `classes`, binarized as above."""
    return load_images(cfg.dataset, cfg, split, classes=cfg.classes)


def build_model(cfg: Config, dataset):
    """A fresh model for `dataset` as the config describes it (seeded by cfg.seed): the
    model class's declared `settings` from the config, the input shape and classes from
    the data."""
    if cfg.model not in MODELS:
        raise ConfigError(f"config key 'model': unknown model {cfg.model!r}; choose one of {sorted(MODELS)}")
    if cfg.conditional and not dataset.num_classes:
        raise ConfigError(f"conditional: true needs labels, and dataset {cfg.dataset!r} has none")
    cls = MODELS[cfg.model]
    if cfg.posterior != "diagonal" and "posterior" not in cls.settings:
        raise ConfigError(f"posterior {cfg.posterior!r}: model {cfg.model!r} has no posterior to choose; use "
                          f"model {' or '.join(k for k, c in MODELS.items() if 'posterior' in c.settings)}")
    kw = dict(input_shape=dataset.shape, num_classes=dataset.num_classes if cfg.conditional else 0,
              **{k: getattr(cfg, k) for k in cls.settings})
    _check_memory(cls, kw)
    torch.manual_seed(cfg.seed)
    try:
        return cls(**kw)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    except (RuntimeError, MemoryError) as e:  # sizes too large to allocate, or impossible
        raise ConfigError(f"cannot build the model this config describes ({' '.join(str(e).split())})") from None


def train_config(cfg: Config, progress: bool = True, overwrite: bool = False, resume: bool = False):
    """Train the run a config describes (dataset, model, trainer settings) -> (Run, dataset)."""
    config_mod.advise(cfg)
    ds = load_dataset(cfg, progress=progress is not False)
    model = build_model(cfg, ds)
    return train(model, ds, out=cfg.out, resume=resume, overwrite=overwrite, config=cfg.to_dict(),
                 progress=progress, **{k: getattr(cfg, k) for k in TRAIN_KEYS}), ds


def _check_memory(cls, kw: dict) -> None:
    """Refuse a model whose weights, gradients and optimizer state (16 bytes per parameter)
    would not fit in the memory available now: counted on the meta device, where nothing is
    allocated, so that sizes such as hidden: [100000000] fail at once instead of swapping."""
    import torch
    available = _available_memory()
    if available and 16 * _size_bound(kw) < available // 2:
        return  # surely fits: spare the meta build (its first run imports torch._dynamo, ~1 s)
    try:
        with torch.device("meta"):
            n = sum(p.numel() for p in cls(**kw).parameters())
    except Exception:  # noqa: BLE001 - the real build reports what is wrong
        return
    if available and 16 * n > available:
        raise ConfigError(f"this model has {n:,} parameters and needs about {16 * n / 2**30:.1f} GiB "
                          f"for training, more than the {available / 2**30:.1f} GiB of memory available; "
                          "use smaller hidden or latent_dim")


def _size_bound(kw: dict) -> float:
    """A generous bound on the parameter count of a model from its settings: each of aevb's
    layers maps between two of the sizes (pixels, hidden units or channels, latent units,
    flow units) with a kernel of at most 4 x 4, no pair of sizes serves more than four
    layers (64 (sum of sizes)^2, per flow step), and a prior adds K components of at most
    pixels + 2 latent numbers. Infinite where a setting is not a plain size."""
    try:
        sizes = [math.prod(kw["input_shape"]), kw.get("latent_dim", 0), kw.get("num_classes", 0),
                 kw.get("inner_latent_dim", 0), *kw.get("hidden", ()), *kw.get("inner_hidden", ()),
                 *kw.get("flow_hidden", ())]
        steps = kw.get("flow_steps", 1) if kw.get("posterior") == "iaf" else 1
        return 64.0 * sum(sizes) ** 2 * max(1, steps) + kw.get("prior_components", 0) * (sizes[0] + 2 * sizes[1])
    except (TypeError, ValueError, KeyError):
        return math.inf


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
