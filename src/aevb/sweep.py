"""Sweeps: train one run per value of a config key and show their samples side by side.

    aevb sweep CONFIG --key latent_dim --values 2,5,10,20 --out runs/sweep   # generic
    aevb sweep CONFIG --latent 2,5,10,20 --out runs/sweep                    # a shortcut

Each value gets its own run directory DIR/<key>-<value> (a normal run: `aevb eval`,
`aevb plot`, `aevb report` work on it; the name is made safe by `rundir.safe_name` and must
stay inside DIR); DIR/sweep.json lists them, and DIR/samples.png shows samples of every
model side by side (Kingma & Welling fig. 5 for the latent size). DIR is a marked sweep
directory (`aevb.rundir`): a new or empty directory, or one holding a sweep over the same
key. A run that is already complete (and has the same settings) is reused, an interrupted
one resumed -- even one stopped during its first epoch -- so that the same command,
run again after an interruption at any moment, goes on where it stopped.

A shortcut flag is one entry of `SHORTCUTS` (flag name -> config key).
"""
from __future__ import annotations

from pathlib import Path

from . import config as config_mod
from . import rundir

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
    """Where the run of `key` = `value` lives: OUT/<key>-<value>, the name made safe
    (`rundir.safe_name`: no '/', '..', control characters; at most 80 characters) and
    refused unless it stays inside OUT."""
    return rundir.child(out, rundir.safe_name(f"{key}-{_label(value)}"))


def _complete(d: Path, cfg) -> bool:
    """Whether run `d` trained all `cfg.epochs`; a complete run with other settings is
    refused (RunDirError naming them) rather than reused."""
    from .runs import read_history
    if not rundir.is_run(d) or not (d / "checkpoint.safetensors").exists():
        return False
    h = read_history(d)
    if not (h and h[-1].get("epoch") == cfg.epochs):
        return False
    rundir.changes(d, cfg.to_dict())
    return True


def sweep(config, key: str, values, out, overrides: dict | None = None, progress: bool = True,
          overwrite: bool = False, figure: bool = True, log=print) -> dict:
    """Train one run per value of config key `key` (the rest from the YAML file `config`,
    or defaults, and `overrides`), into OUT/<key>-<value>; write OUT/sweep.json and, if
    `figure`, each run's report.html and OUT/samples.png (`plots.latent_sweep`). Returns
    the sweep.json content; if a signal stopped a run, returns early with "stopped" (the
    signal's name): calling it again resumes that run and goes on."""
    out = Path(out)
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None and k != key}
    if key == "out" or "out" in overrides:
        raise config_mod.ConfigError("a sweep sets each run's out itself (OUT/<key>-<value>); "
                                     "sweep another key, and name the sweep directory with --out")
    dirs = [run_dir(out, key, v) for v in values]  # every name and config checked first
    if len(set(dirs)) < len(dirs):
        raise config_mod.ConfigError(f"sweep over {key!r}: a value is given twice")
    cfgs = [config_mod.make_config(config, **overrides, **{key: v}, out=str(d)) for v, d in zip(values, dirs)]
    lock = rundir.prepare_sweep(out, key, overwrite)
    try:
        return _train_all(out, key, values, dirs, cfgs, progress, overwrite, figure, log)
    finally:
        lock.release()


def _train_all(out, key, values, dirs, cfgs, progress, overwrite, figure, log) -> dict:
    runs = []
    for value, d, cfg in zip(values, dirs, cfgs):
        if not overwrite and _complete(d, cfg):
            log(f"{key} = {_label(value)}: complete in {d}, reused")
            if figure and not (d / "report.html").exists():  # stopped before its report
                from .report import write_report
                write_report(d, fast=True, overwrite=True)
        else:
            resume = not overwrite and rundir.is_run(d)  # a marked run continues, however early it stopped
            log(f"{key} = {_label(value)}: {'resuming' if resume else 'training'} in {d}")
            from .runs import train_config  # imports torch: not at import (aevb --help)
            run, ds = train_config(cfg, progress=progress, overwrite=overwrite, resume=resume)
            if run.stopped:  # a signal: its run saved a checkpoint; the same call goes on
                return {"key": key, "values": list(values), "runs": runs, "stopped": run.stopped}
            if figure:  # each run gets its report, as after `aevb train`
                from .report import write_report
                write_report(d, model=run.model, dataset=ds, fast=True, overwrite=True)
        runs.append({"value": value, "dir": d.name})
    return _finish(out, {"key": key, "values": list(values), "runs": runs}, figure)


def _finish(out: Path, info: dict, figure: bool) -> dict:
    """Write the sweep's own files (replacing those of an earlier, interrupted call)."""
    from .serialization import write_json
    write_json(out / "sweep.json", info)  # the sweep's own file (named in its marker; the sweep holds its lock)
    if figure:
        plot_sweep(out, overwrite=True)
    return info


def load_sweep(out) -> tuple[str, list[tuple[object, Path]]]:
    """(key, [(value, run directory), ...]) of a sweep directory; a sweep.json that is not
    as aevb wrote it (missing fields, run folders outside the sweep) is refused."""
    from .serialization import CheckpointError, read_json
    path = Path(out) / "sweep.json"
    if not path.exists():
        raise CheckpointError(f"{out}: no sweep.json here; expected a directory written by aevb sweep")
    info = read_json(path)
    runs = info.get("runs")
    if not (isinstance(info.get("key"), str) and isinstance(runs, list) and runs and all(
            isinstance(r, dict) and "value" in r and isinstance(r.get("dir"), str) for r in runs)):
        raise CheckpointError(f"{path}: not a sweep.json written by aevb sweep (run it again)")
    try:
        return info["key"], [(r["value"], rundir.child(out, r["dir"])) for r in runs]
    except rundir.RunDirError as e:
        raise CheckpointError(f"{path}: {e}") from None


def plot_sweep(out, path=None, n: int = 100, seed: int = 0, overwrite: bool = False) -> Path:
    """Samples of every run of sweep directory `out` side by side -> OUT/samples.png, and
    the runs' final test reconstruction term against their KL -> OUT/tradeoff.png (existing
    files replaced only with `overwrite`, only aevb's: `rundir.output_file`; an existing
    tradeoff.png that may not be replaced is kept)."""
    from . import plots
    from .models import load
    key, runs = load_sweep(out)
    from .runs import read_history
    path = rundir.output_file(path or Path(out) / "samples.png", overwrite)
    last = [(v, (read_history(d) or [{}])[-1]) for v, d in runs]
    points = [(f"{key}={_label(v)}", r["test_rec"], r["test_kl"]) for v, r in last
              if "test_rec" in r and "test_kl" in r]
    tradeoff = Path(out) / "tradeoff.png"  # a side figure: kept as it is where it may not be replaced
    if points and (not tradeoff.exists() or (overwrite and rundir.owned(tradeoff))):
        plots.tradeoff(points, rundir.output_file(tradeoff, overwrite), title=f"reconstruction / KL over {key}")
    def label(v):
        return f"{v}-D latent space" if key == "latent_dim" else f"{key} = {_label(v)}"
    models = [(label(v), load(d)) for v, d in runs]
    return plots.latent_sweep(models, path, n=n, seed=seed,
                              title=f"samples from the prior, sweep over {key}")
