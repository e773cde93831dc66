"""The one place where `aevb.quality` reads run directories (through `aevb.runs`)."""
from __future__ import annotations

import os

from . import samples as samples_mod


def _runs():
    from .. import runs
    return runs


def open_run(path, load_model: bool = True):
    """The run directory's files: .dir, .config, .model, .history, .eval."""
    return _runs().open_run(path, load_model=load_model)


def intensity_dataset(config: dict, data_dir=None):
    """The run's dataset (its classes, limit, data_dir) as intensities: binarize "none"."""
    return _runs().run_dataset({**config, "binarize": "none"}, data_dir)


def evaluate_run(run, data_dir=None, *, inception_n=None, domain_n=None, weights=None,
                 seed: int = 0) -> dict:
    """`samples.evaluate_samples` for a run (a path or what `open_run` returned): the run's
    model samples, its dataset's test images, its reconstructions."""
    run = open_run(run) if isinstance(run, (str, os.PathLike)) else run
    ds = intensity_dataset(run.config, data_dir)
    device = next(run.model.parameters()).device
    return samples_mod.evaluate_samples(run.model, ds, inception_n=inception_n, domain_n=domain_n,
                                        weights=weights, seed=seed, model=run.model, device=device)


def training_seconds(history: list[dict]) -> float | None:
    """Training time from metrics.jsonl: "seconds" counts from the start of each session of
    a run (it restarts after --resume), so the sessions' last values are added up."""
    total, last = 0.0, None
    for rec in history:
        s = rec.get("seconds")
        if s is None:
            continue
        if last is not None and s < last:
            total += last
        last = s
    return None if last is None else total + last


def n_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())
