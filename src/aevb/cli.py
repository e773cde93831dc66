"""The `aevb` command: it parses arguments and calls the library, nothing more.

    aevb train [CONFIG.yaml] [--flag value ...]    train; flags override the YAML file
    aevb sample RUN -n 64 -o samples.png           draw from a trained model
    aevb datasets                                  list the registered datasets
"""
from __future__ import annotations

import argparse
import json
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


@command("train", "train a model (YAML config and/or flags)")
def cmd_train(args) -> int:
    overrides = {k: getattr(args, k) for k in config_mod.FIELDS}
    source = args.config
    if source is None and args.resume and args.out:  # resuming needs only --out
        source = Path(args.out) / "config.json"
    cfg = config_mod.make_config(source, **overrides)
    name = Path(args.config).stem if args.config else \
        f"{cfg.dataset.replace(':', '-').replace('/', '-')}-{cfg.model}-z{cfg.latent_dim}"
    cfg.out = cfg.out or str(Path("runs") / name)
    if not args.quiet:
        print(_data_line(cfg), flush=True)
    from .runs import train_config
    run, ds = train_config(cfg, progress=_progress_mode(args), overwrite=args.overwrite,
                           resume=args.resume)
    if run.stopped:
        print(f"stopped by {run.stopped}; checkpoint saved. Continue with: aevb train --resume --out {cfg.out}")
        return 128 + signal.Signals[run.stopped]  # the shell's convention: 130 SIGINT, 143 SIGTERM
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
    from . import report  # the HTML report (figures kept cheap: no t-SNE, no log p(x))
    print(f"report: {report.write_report(run.dir, model=run.model, dataset=ds, fast=True)}")


# ----------------------------------------------------------------------------- sample
def _sample_arguments(p):
    p.add_argument("run", help="run directory or checkpoint")
    p.add_argument("-n", type=_positive_int, default=64, help="number of samples")
    p.add_argument("-o", "--output", default="samples.png", help="PNG file")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--per-class", type=_positive_int, default=None, metavar="N",
                   help="conditional model: N samples of each class, one row per class")
    p.add_argument("--gmm", type=_positive_int, default=None, metavar="K",
                   help="draw codes from a K-component Gaussian mixture fitted to the codes of "
                        "the run's training images (saved in RUN/gmm-K.*) instead of the prior")
    _temperature_argument(p)


def _temperature_argument(p) -> None:
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


def _at_least(minimum: int, what: str):
    """An argparse type: an integer >= `minimum`, else a one-line error naming `what`."""
    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            n = minimum - 1
        if n < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return n
    return parse


_positive_int = _at_least(1, "a positive integer")
_count = _at_least(0, "a non-negative integer")


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
    if getattr(args, "per_class", None) or getattr(args, "gmm", None):
        return _sample_special(args, model)
    try:
        images = model.sample(args.n, temperature=args.temperature)
    except ValueError as e:  # a temperature for binary latents
        raise config_mod.ConfigError(f"--temperature: {e}") from None
    print(plots.save_grid(args.output, images))
    return 0


# ----------------------------------------------------------------------------- datasets
@command("datasets", "list the registered datasets")
def cmd_datasets(args) -> int:
    from .data import describe
    print(describe())
    return 0


# ----------------------------------------------------------------------------- models: sample extras, score, impute
def _sample_special(args, model) -> int:
    """`aevb sample --per-class N` (conditional models) and `--gmm K` (codes from a mixture):
    the figure of `aevb plot samples`, decoder means and most probable values, one row per
    class (labelled) for a conditional model."""
    from . import plots, runs
    from .data import class_names
    cfg = runs.run_config(args.run)
    sampler = _gmm(args.run, cfg, model, args.gmm, args.seed, save=True) if args.gmm else None
    if args.per_class and not model.num_classes:
        raise config_mod.ConfigError("--per-class needs a conditional model (trained with conditional: true)")
    try:
        print(plots.samples(model, args.output, args.n, args.seed, temperature=args.temperature,
                            sampler=sampler, per_class=args.per_class,
                            class_names=class_names(cfg.dataset) if cfg else None))
    except ValueError as e:
        raise config_mod.ConfigError(str(e)) from None
    return 0


def _gmm(run, cfg, model, k: int, seed: int, save: bool = False):
    """A K-component Gaussian mixture fitted to the codes of the run's training images
    (binarized as the run's were); saved as RUN/gmm-K.* with `save`."""
    from . import runs, samplers
    if cfg is None:
        raise config_mod.ConfigError(f"--gmm: {run} has no run config.json naming its dataset; "
                                     "pass a run directory")
    try:
        sampler = samplers.GMMSampler.fit(model, runs.run_images(cfg, "train"), k, seed=seed)
    except ValueError as e:  # more components than codes
        raise config_mod.ConfigError(f"--gmm: {e}") from None
    if save and Path(run).is_dir():
        print(sampler.save(Path(run) / f"gmm-{k}"))
    return sampler


def _images_arguments(p, default_out: str) -> None:
    p.add_argument("run", help="run directory or checkpoint")
    p.add_argument("images", nargs="?", default=None,
                   help="dataset name (aevb datasets) or image file (.npz, IDX); default: the run's dataset")
    p.add_argument("--split", default="test", help="split of a dataset: test (default) or train")
    p.add_argument("--data-dir", default=None, help="read the dataset's files from here")
    p.add_argument("--limit", type=_positive_int, default=None, help="use only N images (a fixed random choice)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--output", default=default_out)


def _run_images(args):
    from . import runs
    from .models import load
    from .models.base import check_shape
    model = load(args.run)
    cfg = runs.run_config(args.run)
    spec = args.images or (cfg.dataset if cfg else None)
    if spec is None:
        raise config_mod.ConfigError(f"{args.run} has no run config naming its dataset; pass IMAGES")
    split = runs.load_images(spec, cfg, args.split, args.data_dir, args.limit)
    check_shape(model, split.x, f"images of {spec}")
    return model, cfg, spec, split


def _score_arguments(p):
    _images_arguments(p, "scores.csv")
    p.add_argument("--samples", type=_positive_int, default=100,
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
    import numpy as np

    from . import anomaly, runs
    model, cfg, spec, split = _run_images(args)
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
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    np.savetxt(args.output, np.stack([np.arange(len(scores)), labels, scores.numpy()], 1),
               fmt=["%d", "%d", "%.4f"], delimiter=",", header="index,label,score", comments="")
    out["scores_file"] = args.output
    print(json.dumps(out))
    return 0


def _impute_arguments(p):
    _images_arguments(p, "impute.png")
    p.add_argument("--mask", default="top-half",
                   help="top-half | bottom-half | left-half | right-half | random:P | square:S")
    p.add_argument("-n", type=_positive_int, default=100, help="images to impute (default 100)")
    p.add_argument("--iterations", type=_positive_int, default=100)
    p.add_argument("--method", choices=["gibbs", "mh"], default="gibbs",
                   help="pseudo-Gibbs, or Metropolis-within-Gibbs")
    p.add_argument("--show", type=_positive_int, default=8, help="images in the figure")


@command("impute", "fill in missing pixels (pseudo-Gibbs or Metropolis-within-Gibbs), with a figure")
def cmd_impute(args) -> int:
    import torch

    from . import imputation, runs
    model, cfg, spec, split = _run_images(args)
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
    out["figure"] = str(imputation.imputation_figure(args.output, x[:k], mask[:k], res.filled[:k]))
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
    p.add_argument("--nll-samples", type=_count, default=5000, metavar="K",
                   help="importance samples per image for log p(x); 0 skips it (default: 5000)")
    p.add_argument("--limit", type=_positive_int, default=None, metavar="N",
                   help="N test images only (a fixed random subset: a test split may be sorted)")
    p.add_argument("--batch-size", type=_positive_int, default=1000, help="images per batch (ELBO, codes)")
    p.add_argument("--rows", type=_positive_int, default=None,
                   help="latent vectors per decoder call while importance sampling (default: 2000)")
    p.add_argument("--denoise", type=_rates, default=None, metavar="RATES",
                   help="also the denoising error at these salt-and-pepper rates, e.g. 0.1,0.2,0.3,0.5")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None, help="read the dataset's files from here")
    p.add_argument("-o", "--output", default=None, help="JSON file (default: RUN/eval.json)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


@command("eval", "test ELBO, importance-sampled log p(x), active units, denoising -> RUN/eval.json")
def cmd_eval(args) -> int:
    import datetime
    import time

    from tqdm.auto import tqdm

    from . import __version__, evaluation, runs
    from .data import eval_binarization
    run = runs.open_run(args.run)
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
    res["seconds"]["total"] = round(time.perf_counter() - t, 3)
    res = {"run": str(run.dir), "dataset": ds.name, "classes": run.config.get("classes"),
           "split": "test", "binarize": ds.binarize,
           "test_binarization": eval_binarization(ds.binarize), "aevb": __version__,
           "date": datetime.datetime.now().isoformat(timespec="seconds"), **res}
    out = Path(args.output) if args.output else run.dir / "eval.json"
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(evaluation.format_table(res))
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
    p.add_argument("-o", "--output", default=None, help="PNG file (default: RUN/figures/KIND.png)")
    p.add_argument("-n", type=_positive_int, default=None,
                   help="how many images (samples, recon, denoise), points (latent), grid size "
                        "(manifold) or pairs (interpolate)")
    p.add_argument("--dims", type=_dims, default=None,
                   help="manifold: the two latent dims that vary (default: the two most active "
                        "over the test images)")
    p.add_argument("--rate", type=float, default=0.2, help="denoise: salt-and-pepper rate")
    p.add_argument("--label", type=int, default=None, help="manifold of a conditional model: the class")
    p.add_argument("--per-class", type=_positive_int, default=None, metavar="N",
                   help="samples of a conditional model: N per class, one row per class")
    p.add_argument("--gmm", type=_positive_int, default=None, metavar="K",
                   help="samples: codes from a K-component Gaussian mixture fitted to the codes of "
                        "the training images; latent: that mixture's samples over the codes")
    _temperature_argument(p)
    p.add_argument("--no-tsne", action="store_true", help="latent: PCA only (t-SNE takes seconds)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None, help="read the dataset's files from here")


@command("plot", "draw one figure of a trained model into a PNG")
def cmd_plot(args) -> int:
    from . import plots, runs
    from .evaluation import NotApplicable
    if args.kind == "latent-sweep":
        from .sweep import plot_sweep
        print(plot_sweep(args.run, args.output, **({} if args.n is None else {"n": args.n}), seed=args.seed))
        return 0
    run = runs.open_run(args.run)
    ds = None
    if args.kind in ("recon", "latent", "interpolate", "denoise") or (
            args.kind == "manifold" and args.dims is None and "dataset" in run.config):
        ds = runs.run_dataset(run.config, args.data_dir)  # manifold: its most active dims
    out = Path(args.output) if args.output else run.dir / "figures" / f"{args.kind}.png"
    try:
        print(plots.make(args.kind, run.model, ds, out, history=run.history, n=args.n, dims=args.dims,
                         rate=args.rate, tsne=not args.no_tsne, seed=args.seed, label=args.label,
                         per_class=args.per_class, temperature=args.temperature,
                         sampler=_plot_gmm(args, run.model), class_names=_class_names(run.config)))
    except (NotApplicable, ValueError) as e:
        print(f"aevb plot: {args.kind}: {e}", file=sys.stderr)
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
    p.add_argument("-o", "--output", default=None, help="HTML file (default: RUN/report.html)")
    p.add_argument("--no-tsne", action="store_true", help="latent space by PCA only (faster)")
    p.add_argument("--fast", action="store_true", help="cheap figures (as at the end of training)")
    p.add_argument("--data-dir", default=None, help="read the dataset's files from here")


@command("report", "one self-contained HTML page with the run's config, numbers and figures")
def cmd_report(args) -> int:
    from . import report
    print(report.write_report(args.run, out=args.output, fast=args.fast,
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
    p.add_argument("--overwrite", action="store_true", help="retrain runs that are already complete")
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


ARGUMENTS.update({"eval": _eval_arguments, "plot": _plot_arguments, "report": _report_arguments,
                  "sweep": _sweep_arguments})


# ----------------------------------------------------------------------------- explore
def _explore_arguments(p):
    p.add_argument("run", help="run directory (written by aevb train)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=_count, default=8000, help="port (default: 8000; 0 picks a free one)")
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


def parser() -> argparse.ArgumentParser:
    """The `aevb` argument parser; building it imports no torch (help stays fast)."""
    from . import __version__
    p = argparse.ArgumentParser(prog="aevb", description="Variational autoencoders: train, evaluate, show.")
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


def _user_errors() -> tuple:
    """The errors a user fixes (one line, exit 2); imported only when one is raised."""
    from .checkpoint import TrainingError
    from .data import DataError
    from .serialization import CheckpointError
    return config_mod.ConfigError, DataError, CheckpointError, TrainingError


def _tuned():
    """`runtime.tuned()`, a bad AEVB_THREADS refused as a config error."""
    import os

    from . import runtime
    try:
        runtime.parse_threads(os.environ.get("AEVB_THREADS", "auto"), "AEVB_THREADS")
    except ValueError as e:
        raise config_mod.ConfigError(str(e)) from None
    return runtime.tuned()


def main(argv=None) -> int:
    """Run one command; aevb's thread settings apply for its duration (`runtime.tuned`).
    Every error the user can fix is one line on stderr and exit status 2."""
    import warnings
    p = parser()
    args, extras = p.parse_known_args(argv)
    if extras:
        _unknown(p, args.command, extras)
    with warnings.catch_warnings():
        warnings.showwarning = lambda message, category, *a, **k: print(
            f"aevb {args.command}: warning: {' '.join(str(message).split())}", file=sys.stderr)
        return _run(args)


def _run(args) -> int:
    try:
        with _tuned():
            return COMMANDS[args.command][0](args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        print(f"aevb {args.command}: error: out of memory; use a smaller model or batch size",
              file=sys.stderr)
        return 2
    except _user_errors() as e:
        print(f"aevb {args.command}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except OSError as e:  # a file the user named cannot be read or written: one line, no traceback
        where = f": {e.filename}" if e.filename else ""
        print(f"aevb {args.command}: error: {e.strerror or e}{where}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
