"""The `aevb` command: it parses arguments and calls the library, nothing more.

    aevb train [CONFIG.yaml] [--flag value ...]    train; flags override the YAML file
    aevb sample RUN -n 64 -o samples.png           draw from a trained model
    aevb datasets                                  list the registered datasets
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import config as config_mod

COMMANDS = {}


def command(name: str, help: str):
    """Register `fn(args)` as subcommand `name`; its parser is built by `fn.arguments(parser)`."""
    def deco(fn):
        COMMANDS[name] = (fn, help)
        return fn
    return deco


# ----------------------------------------------------------------------------- train
def _train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", help="YAML file of config keys (see configs/)")
    for name, f in config_mod.FIELDS.items():
        flag = "--" + name.replace("_", "-")
        extra = ["--latent"] if name == "latent_dim" else []
        if config_mod._types(name) == (bool,):
            p.add_argument(flag, dest=name, default=None, action=argparse.BooleanOptionalAction)
        else:
            p.add_argument(flag, *extra, dest=name, default=None, metavar=name.upper(),
                           help=f"(default: {_default(f)})")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-figures", action="store_true", help="skip figures at the end")


def _default(f):
    import dataclasses
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


@command("train", "train a model (YAML config and/or flags)")
def cmd_train(args) -> int:
    from .training import train
    overrides = {k: getattr(args, k) for k in config_mod.FIELDS}
    source = args.config
    if source is None and args.resume and args.out:  # resuming needs only --out
        source = Path(args.out) / "config.json"
    cfg = config_mod.make_config(source, **overrides)
    name = Path(args.config).stem if args.config else \
        f"{cfg.dataset.replace(':', '-').replace('/', '-')}-{cfg.model}-z{cfg.latent_dim}"
    cfg.out = cfg.out or str(Path("runs") / name)
    ds = config_mod.load_dataset(cfg)
    model = config_mod.build_model(cfg, ds)
    run = train(model, ds, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr,
                optimizer=cfg.optimizer, seed=cfg.seed, clip_grad=cfg.clip_grad,
                warmup_epochs=cfg.warmup_epochs, noise=cfg.noise, out=cfg.out,
                resume=args.resume, overwrite=args.overwrite, config=cfg.to_dict(),
                progress=not args.no_progress, device=cfg.device, precision=cfg.precision)
    if run.stopped:
        print(f"stopped by signal; checkpoint saved. Continue with: aevb train --resume --out {cfg.out}")
        return 130
    if not args.no_figures:
        _figures(run, ds)
    last = run.last
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in last.items()}))
    print(f"run directory: {run.dir}")
    return 0


def _figures(run, ds) -> None:
    from . import plots
    plots.curves(run.history, run.dir / "elbo.png")
    plots.samples(run.model, run.dir / "samples.png")
    plots.reconstructions(run.model, ds.test, run.dir / "reconstructions.png")


# ----------------------------------------------------------------------------- sample
def _sample_arguments(p):
    p.add_argument("run", help="run directory or checkpoint")
    p.add_argument("-n", type=int, default=64, help="number of samples")
    p.add_argument("-o", "--output", default="samples.png", help="PNG file")
    p.add_argument("--seed", type=int, default=0)


@command("sample", "draw samples from a trained model into a PNG grid")
def cmd_sample(args) -> int:
    import torch

    from . import plots
    from .models import load
    torch.manual_seed(args.seed)
    model = load(args.run)
    print(plots.save_grid(args.output, model.sample(args.n)))
    return 0


# ----------------------------------------------------------------------------- datasets
@command("datasets", "list the registered datasets")
def cmd_datasets(args) -> int:
    from .data import DATASETS
    for name, spec in sorted(DATASETS.items()):
        print(f"{name:16s} {spec.description}")
    return 0


ARGUMENTS = {"train": _train_arguments, "sample": _sample_arguments}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="aevb", description="Variational autoencoders: train, evaluate, show.")
    sub = p.add_subparsers(dest="command", required=True)
    for name, (fn, help) in COMMANDS.items():
        sp = sub.add_parser(name, help=help, description=help)
        ARGUMENTS.get(name, lambda _: None)(sp)
    return p


def main(argv=None) -> int:
    from .data import DataError
    from .serialization import CheckpointError
    from .training import TrainingError
    args = parser().parse_args(argv)
    try:
        return COMMANDS[args.command][0](args)
    except (config_mod.ConfigError, DataError, CheckpointError, TrainingError) as e:
        print(f"aevb {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
