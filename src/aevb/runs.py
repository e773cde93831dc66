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
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import config as config_mod
from . import data
from .config import Config, ConfigError
from .data import EVAL_BINARIZE_SEED, DataError, Split, subset, transforms
from .data.images import is_image_file, read_image_file
from .models import MODELS, load
from .serialization import CheckpointError, read_json
from .training import train

#: config keys passed to `aevb.train`
TRAIN_KEYS = ("epochs", "batch_size", "lr", "optimizer", "seed", "clip_grad", "warmup_epochs", "noise",
              "device", "precision", "threads")
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
    """The records of metrics.jsonl (one per epoch); [] if there are none. A damaged last
    line (a run killed while writing) is skipped."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def open_run(run_dir, load_model: bool = True) -> RunFiles:
    """The contents of run directory `run_dir` (see `RunFiles`)."""
    d = Path(run_dir)
    if not d.is_dir():
        raise CheckpointError(f"{d}: no such run directory")
    config = read_json(d / "config.json") if (d / "config.json").exists() else {}
    model = load(d) if load_model else None
    ev = json.loads((d / "eval.json").read_text()) if (d / "eval.json").exists() else None
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


def load_dataset(cfg: Config):
    """The dataset a config names."""
    kw = {k: getattr(cfg, k) for k in ("image_size", "channels") if getattr(cfg, k) is not None}
    try:
        return data.load(cfg.dataset, binarize=cfg.binarize, data_dir=cfg.data_dir, limit=cfg.limit,
                         classes=cfg.classes, **kw)
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
    torch.manual_seed(cfg.seed)
    try:
        return cls(input_shape=dataset.shape, num_classes=dataset.num_classes if cfg.conditional else 0,
                   **{k: getattr(cfg, k) for k in cls.settings})
    except ValueError as e:
        raise ConfigError(str(e)) from None
    except (RuntimeError, MemoryError) as e:  # sizes too large to allocate, or impossible
        raise ConfigError(f"cannot build the model this config describes ({' '.join(str(e).split())})") from None


def train_config(cfg: Config, progress: bool = True, overwrite: bool = False, resume: bool = False):
    """Train the run a config describes (dataset, model, trainer settings) -> (Run, dataset)."""
    config_mod.advise(cfg)
    ds = load_dataset(cfg)
    model = build_model(cfg, ds)
    return train(model, ds, out=cfg.out, resume=resume, overwrite=overwrite, config=cfg.to_dict(),
                 progress=progress, **{k: getattr(cfg, k) for k in TRAIN_KEYS}), ds
