"""Sweeps: train one run per value of a config key and show their samples side by side.

    aevb sweep CONFIG --key latent_dim --values 2,5,10,20 --out runs/sweep   # generic
    aevb sweep CONFIG --latent 2,5,10,20 --out runs/sweep                    # a shortcut

Each value gets its own run directory DIR/<key>-<value> (a normal run: `aevb eval`,
`aevb plot`, `aevb report` work on it); DIR/sweep.json lists them, and DIR/samples.png shows
samples of every model side by side (Kingma & Welling fig. 5 for the latent size). A run
that is already complete is reused, an interrupted one resumed, so that re-running a sweep
only trains what is missing.

A shortcut flag is one entry of `SHORTCUTS` (flag name -> config key).
"""
from __future__ import annotations

import json
from pathlib import Path

from . import config as config_mod

#: command-line shortcuts: `aevb sweep --<name> V1,V2,...` sweeps config key SHORTCUTS[name]
SHORTCUTS = {"latent": "latent_dim", "beta": "beta"}


def parse_values(key: str, text: str) -> list:
    """The values of `key` in a comma-separated list ("2,5,10,20"), each checked and
    converted as the config does; list-valued keys (hidden) are separated by ";"
    ("400,400;200,200")."""
    if key not in config_mod.FIELDS:
        config_mod.coerce(key, None)  # raises ConfigError naming the close matches
    sep = ";" if ";" in text or config_mod._types(key) == (list,) else ","
    items = [t.strip() for t in text.split(sep) if t.strip()]
    if not items:
        raise config_mod.ConfigError(f"sweep over {key!r}: no values given")
    return [config_mod.coerce(key, t) for t in items]


def _label(value) -> str:
    return "-".join(map(str, value)) if isinstance(value, list) else f"{value:g}" \
        if isinstance(value, float) else str(value)


def run_dir(out, key: str, value) -> Path:
    """Where the run of `key` = `value` lives: OUT/<key>-<value>."""
    return Path(out) / f"{key}-{_label(value)}"


def _complete(d: Path, epochs: int) -> bool:
    from .runs import read_history
    h = read_history(d)
    return (d / "checkpoint.safetensors").exists() and bool(h) and h[-1].get("epoch") == epochs


def sweep(config, key: str, values, out, overrides: dict | None = None, progress: bool = True,
          overwrite: bool = False, figure: bool = True, log=print) -> dict:
    """Train one run per value of config key `key` (the rest from the YAML file `config`,
    or defaults, and `overrides`), into OUT/<key>-<value>; write OUT/sweep.json and, if
    `figure`, each run's report.html and OUT/samples.png (`plots.latent_sweep`). Returns
    the sweep.json content; if a signal stopped a run, returns early with "stopped" (the
    signal's name): calling it again resumes that run and goes on."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None and k != key}
    runs = []
    for value in values:
        d = run_dir(out, key, value)
        cfg = config_mod.make_config(config, **overrides, **{key: value}, out=str(d))
        if not overwrite and _complete(d, cfg.epochs):
            log(f"{key} = {_label(value)}: complete in {d}, reused")
        else:
            resume = not overwrite and (d / "checkpoint.safetensors").exists()
            log(f"{key} = {_label(value)}: {'resuming' if resume else 'training'} in {d}")
            from .runs import train_config  # imports torch: not at import (aevb --help)
            run, ds = train_config(cfg, progress=progress, overwrite=overwrite, resume=resume)
            if run.stopped:  # a signal: its run saved a checkpoint; the same call goes on
                return {"key": key, "values": list(values), "runs": runs, "stopped": run.stopped}
            if figure:  # each run gets its report, as after `aevb train`
                from .report import write_report
                write_report(d, model=run.model, dataset=ds, fast=True)
        runs.append({"value": value, "dir": d.name})
    info = {"key": key, "values": list(values), "runs": runs}
    (out / "sweep.json").write_text(json.dumps(info, indent=2) + "\n")
    if figure:
        plot_sweep(out)
    return info


def load_sweep(out) -> tuple[str, list[tuple[object, Path]]]:
    """(key, [(value, run directory), ...]) of a sweep directory."""
    from .serialization import CheckpointError
    path = Path(out) / "sweep.json"
    if not path.exists():
        raise CheckpointError(f"{out}: no sweep.json here; expected a directory written by aevb sweep")
    info = json.loads(path.read_text())
    return info["key"], [(r["value"], Path(out) / r["dir"]) for r in info["runs"]]


def plot_sweep(out, path=None, n: int = 100, seed: int = 0) -> Path:
    """Samples of every run of sweep directory `out` side by side -> OUT/samples.png, and
    the runs' final test reconstruction term against their KL -> OUT/tradeoff.png."""
    from . import plots
    from .models import load
    key, runs = load_sweep(out)
    from .runs import read_history
    last = [(v, (read_history(d) or [{}])[-1]) for v, d in runs]
    points = [(f"{key}={_label(v)}", r["test_rec"], r["test_kl"]) for v, r in last
              if "test_rec" in r and "test_kl" in r]
    if points:
        plots.tradeoff(points, Path(out) / "tradeoff.png", title=f"reconstruction / KL over {key}")
    def label(v):
        return f"{v}-D latent space" if key == "latent_dim" else f"{key} = {_label(v)}"
    models = [(label(v), load(d)) for v, d in runs]
    return plots.latent_sweep(models, path or Path(out) / "samples.png", n=n, seed=seed,
                              title=f"samples from the prior, sweep over {key}")
