"""The explorer's one door into aevb: everything it needs from a run directory, read
through aevb's helpers here and nowhere else (re-point these few lines when the core moves).

It only reads: the model from the run's checkpoint, the run's config, and the test split of
the dataset the config names, with downloads turned off (a missing dataset is an error that
says to pass --data-dir). The rest of the explorer uses only the model's interface:
encode / embed / decode / sample / log_likelihood / latent_dim / num_classes / input_shape.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass
class RunData:
    """A run, as the explorer sees it. `x` (N, C, H, W) in [0, 1] and `y` (N,) or None are
    the test images; `binarized`: the run's images were binarized, so inputs are too.
    `prior`: "standard_normal" (z ~ N(0, I)), "other" (e.g. binary codes) or "none" (an
    autoencoder). `info`: a few config values shown on the page."""

    name: str
    model: torch.nn.Module
    x: Tensor
    y: Tensor | None
    binarized: bool
    prior: str
    class_names: list[str] | None = None
    info: dict = field(default_factory=dict)


INFO_KEYS = ("dataset", "model", "net", "hidden", "latent_dim", "latent_family", "likelihood",
             "conditional", "beta", "epochs")


def load_run(run_dir, data_dir=None) -> RunData:
    """Read run directory `run_dir` (model, config, test images). Raises aevb's own one-line
    errors (CheckpointError, ConfigError, DataError) when something is missing."""
    from .. import config as config_mod, data, runs
    run = runs.open_run(run_dir)
    if not run.config.get("dataset"):
        raise config_mod.ConfigError(f"{run_dir}: no config.json naming the run's dataset; "
                                     "aevb explore needs a run directory written by aevb train")
    values = {k: v for k, v in run.config.items() if k in config_mod.FIELDS}
    if data_dir:
        values["data_dir"] = str(data_dir)
    cfg = config_mod.make_config(None, **values)
    size = {k: getattr(cfg, k) for k in ("image_size", "channels") if getattr(cfg, k) is not None}
    try:  # as config.load_dataset, but never downloading: the explorer writes nothing
        ds = data.load(cfg.dataset, binarize=cfg.binarize, data_dir=cfg.data_dir, download=False,
                       limit=cfg.limit, classes=cfg.classes, progress=False, **size)
    except ValueError as e:
        raise config_mod.ConfigError(str(e)) from None
    model = run.model.eval()
    from ..models.base import check_shape
    check_shape(model, ds.test.x, f"the test images of {cfg.dataset}")
    names = ds.info.get("classes") if isinstance(ds.info, dict) else None
    return RunData(run.name, model, ds.test.x, ds.test.y, cfg.binarize != "none", prior_kind(model),
                   list(names) if names else None, {k: run.config.get(k) for k in INFO_KEYS})


def prior_kind(model) -> str:
    """"standard_normal" when the model's prior is N(0, I), "other" for another prior (binary
    codes), "none" for a model without one (an autoencoder)."""
    if model.prior is None:
        return "none"
    p = model.prior()
    base = p.base_dist if isinstance(p, torch.distributions.Independent) else p
    if isinstance(base, torch.distributions.Normal) and bool((base.loc == 0).all()) \
            and bool((base.scale == 1).all()):
        return "standard_normal"
    return "other"
