"""Issue 15's race: log p(x) reached in the same training wall clock, aevb against pythae.

    python benchmarks/quality.py                      # the full run: 10 models x 300 s + evaluation
    python benchmarks/quality.py --budget 5 --eval-n 50 --k 20 --out /tmp/q   # a smoke test
    python benchmarks/quality.py --models aevb-vae,pythae-vae          # some of the models

Data: the offline MNIST split (../shared/data/mnist: fit on the 10,000 official test images,
evaluate on 5,000 official training images), binarized dynamically for training (aevb: a fresh
draw per use; pythae: `torch.bernoulli` per image in the dataset, as peers/pythae_peer.py),
the evaluation images binarized once with aevb's fixed seed.

Model selection (`--validation`, default 1000): both libraries hold out the same 1,000 of the
10,000 fitting images (`aevb.data.hold_out`: a fixed choice, binarized once), train on the
other 9,000, score the held-out ones after every epoch and keep the weights of the best epoch,
each with its own machinery: aevb `train(validation=, keep_best=True)` (the model's bound
on them, fixed noise), pythae its trainer's `eval_dataset` and best model (its loss on them).
Within the budget, not after it: the evaluations and copies count against each. A time-
limited run thus returns the best epoch seen, which guards against the overfitting that 10,000
images allow (aevb's plain VAE, 222 epochs in 150 s, was past its best test ELBO).
`--validation 0`: no selection, all 10,000 train, the last weights are scored.

Weight averaging (`--ema`, default 0.999): aevb's models keep a moving average of their
weights (`aevb.train(ema=)`, aevb.averaging), which their per-epoch validation, the best epoch
and the final score use; pythae has no such option, and its models are scored with their own
weights. `--ema 0` scores aevb's last (best-epoch) weights too. The decay was chosen on the
held-out images (benchmarks/README.md, issue 15's section), not on the evaluation images.

Each model trains in its own process for `--budget` seconds of wall clock (Adam, lr 1e-3,
batch 100; MLP 784-400-400-20, ReLU, Bernoulli decoder; the two-layer model has Burda et
al.'s 784-200-200-100-100-100-50 and a 100-epoch KL warm-up, chosen on held-out images
(benchmarks/heldout.py; with 10 epochs its top layer kept 3 of 50 units); the IAF
posteriors: 2 MADE steps of 128-128, no context, in both libraries; aevb's MoG-prior model, which pythae lacks, is aevb's bid for the best model:
gated hidden units (`activation: gated`) and the IWAE bound), stopping after the step that crosses the budget (aevb:
`aevb.train(time_limit=)`; pythae: a TrainingCallback that ends its loop), then is scored
by aevb's estimators, the same code for every model (`aevb.evaluation.evaluate`): log p(x)
by importance sampling with K = `--k` samples per image on `--eval-n` evaluation images, with
its standard error over images; the one-sample test ELBO; active units (Cov_x(E_q[z]) >
0.01). pythae's models are scored in pythae's environment with aevb on PYTHONPATH, their
weights turned into aevb models by peers/pythae_models.py (checked there against pythae's own
loss: `adapter_check` in each pythae result). aevb and pythae models alternate so that the
machine's drift hits both. A model whose config the installed aevb refuses (the two-layer
model before the hvae branch is merged) is skipped with the reason.

aevb.train evaluates its dataset's test split after every epoch; it is handed 100 of the
evaluation images for that (500 without validation), an extra cost pythae does not pay; aevb's
per-epoch evaluation is inside its budget.

Writes `--out`/quality.md (table, command, machine, date) and quality.json.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import result_files

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DATA_DIR = REPO.parent / "shared" / "data" / "mnist"
PYTHAE_PYTHON = os.environ.get("AEVB_PYTHAE_PYTHON", "/work/venvs/pythae/bin/python")
SPINCOUNT = "30000"  # aevb's spin default (what the aevb command sets), for every worker alike
EPOCH_TEST_IMAGES = {True: 100, False: 500}  # with / without a validation split

MLP = {"hidden": [400, 400], "latent_dim": 20}
#: (key, label, who, settings) in the interleaved order of a run
MODELS = [
    ("aevb-vae", "aevb VAE", "aevb", {}),
    ("pythae-vae", "pythae VAE", "pythae", {"kind": "VAE"}),
    ("aevb-iwae", "aevb IWAE (k=5)", "aevb", {"objective": "iwae", "iwae_k": 5}),
    ("pythae-iwae", "pythae IWAE (k=5)", "pythae", {"kind": "IWAE"}),
    ("aevb-vamp", "aevb VampPrior", "aevb", {"prior": "vamp"}),
    ("pythae-vamp", "pythae VAMP", "pythae", {"kind": "VAMP"}),
    ("aevb-iaf", "aevb IAF posterior", "aevb", {"posterior": "iaf"}),
    ("pythae-iaf", "pythae VAE_IAF", "pythae", {"kind": "VAE_IAF"}),
    ("aevb-mog", "aevb MoG prior (gated, IWAE k=5)", "aevb",
     {"prior": "mog", "activation": "gated", "objective": "iwae", "iwae_k": 5}),
    ("aevb-hvae", "aevb two-layer (IWAE k=5)", "aevb",
     {"model": "hvae", "objective": "iwae", "iwae_k": 5, "hidden": [200, 200], "latent_dim": 50,
      "inner_hidden": [100, 100], "inner_latent_dim": 100, "warmup_epochs": 100}),
]
#: the orderings the papers report: (better, worse, source)
ORDERINGS = [("aevb-vamp", "aevb-vae", "Tomczak & Welling 2018: VampPrior above the standard prior"),
             ("aevb-iwae", "aevb-vae", "Burda et al. 2015: IWAE (k=5) above the VAE"),
             ("aevb-hvae", "aevb-iwae", "Burda et al. 2015: two stochastic layers above one (both IWAE k=5)"),
             ("pythae-vamp", "pythae-vae", "VampPrior above the standard prior (pythae)"),
             ("pythae-iwae", "pythae-vae", "IWAE above the VAE (pythae)")]


# ============================================================================ workers
def _load(spec):
    from aevb import data
    return data.load("mnist-offline", binarize="dynamic", data_dir=spec["data_dir"], progress=False)


def _score(model, ds, spec) -> dict:
    from aevb.evaluation import evaluate
    r = evaluate(model, ds.test, nll_samples=spec["k"], limit=spec["eval_n"], rows=spec["rows"],
                 seed=0, binarized=True)
    keep = ("n", "log_px", "log_px_stderr", "nll_samples", "elbo", "elbo_stderr", "elbo_is", "gap",
            "ess", "active_units", "latent_dim", "kl_method")
    res = {**{k: r[k] for k in keep if k in r}, "eval_seconds": r["seconds"]}
    if spec.get("probe"):  # the speed of the full estimator (K=5000), on a few images
        from aevb.evaluation import importance_sampling
        x = ds.test.x[:spec["probe"]]
        importance_sampling(model, x[:1], samples=5000, rows=spec["rows"])  # warm-up
        t = time.perf_counter()
        importance_sampling(model, x, samples=5000, rows=spec["rows"])
        res["probe_seconds_per_image"] = (time.perf_counter() - t) / len(x)
    return res


def w_aevb(spec) -> dict:
    """Train an aevb model of `spec["settings"]` for the budget, then score it."""
    import dataclasses
    import torch
    from aevb import train
    from aevb.config import ConfigError, make_config
    from aevb.data import subset
    from aevb.runs import build_model
    ds = _load(spec)
    settings = {**MLP, **spec["settings"]}
    if settings.get("posterior") == "iaf":  # the MADEs as pythae's below: 2 hidden layers of 128
        settings.update(flow_steps=spec["flow_steps"], flow_hidden=[128, 128])
    try:
        cfg = make_config(dataset="mnist-offline", data_dir=spec["data_dir"], binarize="dynamic",
                          likelihood="bernoulli", prior_components=spec["components"], seed=spec["seed"], **settings)
        torch.manual_seed(spec["seed"])
        model = build_model(cfg, ds)
    except (ConfigError, ValueError, TypeError) as e:
        return {"skipped": f"this aevb refuses {settings}: {str(e).split(' (known keys')[0]}"}
    n_val, ema = spec["validation"], spec.get("ema") or None
    small = dataclasses.replace(ds, test=subset(ds.test, EPOCH_TEST_IMAGES[bool(n_val)]))
    run = train(model, small, epochs=10**6, batch_size=100, lr=1e-3, seed=spec["seed"], progress=False,
                tensorboard=False, time_limit=spec["budget"], warmup_epochs=cfg.warmup_epochs,
                validation=n_val, keep_best=bool(n_val), ema=ema)
    last = run.last
    steps = math.ceil((len(ds.train) - n_val) / 100)
    epochs = last["epoch"] - 1 + last["steps"] / steps if "steps" in last else last["epoch"]
    return {"epochs": epochs, "train_seconds": last["seconds"], "settings": settings, "ema": ema,
            "best_epoch": last.get("best_epoch"),
            "parameters": sum(p.numel() for p in model.parameters()), **_score(model, ds, spec)}


class _Budget(Exception):
    pass


def w_pythae(spec) -> dict:
    """Train pythae's model of `spec["settings"]["kind"]` for the budget (its TrainingPipeline,
    a callback ending it after the step that crosses the budget), then score it with aevb's
    estimators through peers/pythae_models.as_aevb."""
    import tempfile
    import torch
    sys.path.insert(0, str(HERE / "peers"))
    import pythae
    import pythae_models as pm
    from pythae.data.datasets import BaseDataset, DatasetOutput
    from pythae.pipelines import TrainingPipeline
    from pythae.trainers import BaseTrainerConfig
    from pythae.trainers.training_callbacks import TrainingCallback
    from aevb.data import hold_out
    ds = _load(spec)
    kind = spec["settings"]["kind"]

    class DynamicallyBinarized(BaseDataset):
        def __init__(self, images):
            super().__init__(images, torch.zeros(len(images)))

        def __getitem__(self, index):
            return DatasetOutput(data=torch.bernoulli(self.data[index]), labels=self.labels[index])

    class Clock(TrainingCallback):
        def __init__(self, budget):
            self.budget, self.t0, self.steps, self.seconds = budget, None, 0, 0.0
            self.epoch, self.best, self.best_epoch = 0, math.inf, None

        def on_log(self, training_config, logs, **kwargs):  # after each epoch: pythae's best-model rule
            self.epoch += 1
            if logs.get("eval_epoch_loss", math.inf) < self.best:
                self.best, self.best_epoch = logs["eval_epoch_loss"], self.epoch

        def on_train_begin(self, training_config, **kwargs):
            self.t0 = time.perf_counter()

        def on_train_step_end(self, training_config, **kwargs):  # after each optimizer step
            self.steps += 1
            self.seconds = time.perf_counter() - self.t0
            if self.seconds >= self.budget:
                raise _Budget

    torch.manual_seed(spec["seed"])
    model = pm.build(kind, iwae_k=5, components=spec["components"], flow_steps=spec["flow_steps"])
    clock, n_val = Clock(spec["budget"]), spec["validation"]
    fit, val = hold_out(ds, n_val) if n_val else (ds, None)  # the same images as aevb's
    with tempfile.TemporaryDirectory() as out:
        config = BaseTrainerConfig(output_dir=out, num_epochs=10**6, learning_rate=1e-3,
                                   per_device_train_batch_size=100, per_device_eval_batch_size=100,
                                   optimizer_cls="Adam", keep_best_on_train=not n_val, no_cuda=True, seed=spec["seed"])
        pipeline = TrainingPipeline(model=model, training_config=config)
        try:
            pipeline(train_data=DynamicallyBinarized(fit.train.x), callbacks=[clock],
                     eval_data=None if val is None else BaseDataset(val.x, torch.zeros(len(val))))
        except _Budget:
            pass
    # with validation: pythae's best epoch on the held-out images (its own copy, made when its
    # eval loss improves); without: the weights after the last step
    trained = getattr(pipeline.trainer, "_best_model", None) if n_val else None
    if trained is None:
        trained = pipeline.trainer.model
    aevb_model = pm.as_aevb(trained, kind)
    return {"epochs": clock.steps / math.ceil(len(fit.train) / 100), "train_seconds": clock.seconds,
            "pythae": pythae.__version__ if hasattr(pythae, "__version__") else "0.1.2",
            "best_epoch": clock.best_epoch,
            "parameters": sum(p.numel() for p in trained.parameters()),
            "adapter_check": adapter_check(trained, aevb_model, kind, ds), **_score(aevb_model, ds, spec)}


def adapter_check(trained, aevb_model, kind: str, ds) -> dict:
    """pythae's own loss against the adapter's one-sample ELBO on 1,000 evaluation images,
    paired by image (independent sampling noise; they agree within noise when the adapter is
    right). IWAE's
    loss is not an ELBO (its value is sum_k w~_k log w_k): its copy is checked as the VAE's."""
    if kind == "IWAE":
        return {"skipped": "pythae's IWAE loss is not a bound to compare"}
    sys.path.insert(0, str(HERE / "peers"))
    import pythae_models as pm
    from aevb.objectives import objective_terms
    x = ds.test.x[:1000]
    own = -pm.own_loss(trained, x, batch_size=1, seed=1)  # per image
    d = objective_terms(aevb_model, x, seed=2)["elbo"] - own  # paired by image: sampling noise only
    se = d.std().item() / math.sqrt(len(d))
    return {"images": len(x), "pythae_elbo": own.mean().item(), "adapter_minus_pythae": d.mean().item(),
            "stderr": se, "agree": abs(d.mean().item()) < 4 * se}


WORKERS = {"aevb": w_aevb, "pythae": w_pythae}


# ============================================================================ parent
def machine() -> dict:
    info = {"python": platform.python_version(), "platform": platform.platform()}
    try:
        info["lscpu"] = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as e:
        info["lscpu"] = f"(lscpu failed: {e})"
    try:
        info["commit"] = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                                        capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def _cap_memory(gb: float) -> None:
    """In the worker, before it starts: its address space capped at `gb` GiB, so that a worker
    that runs away (pythae's seed-1 VAE once reached 24 GB and the kernel's OOM killer) ends
    with a MemoryError and its traceback in the log instead of taking the machine down."""
    import resource
    if gb > 0:
        cap = int(gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))


def run_worker(who: str, spec: dict, log: Path) -> dict:
    py = sys.executable if who == "aevb" else spec["pythae_python"]
    if not Path(py).exists():
        return {"skipped": f"no python at {py}: create pythae's environment (benchmarks/README.md)"}
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")])))
    if "OMP_WAIT_POLICY" not in env and "GOMP_SPINCOUNT" not in env:
        env["GOMP_SPINCOUNT"] = SPINCOUNT
    t = time.time()
    with open(log, "a") as f:
        f.write(f"\n=== {who} {json.dumps(spec)}\n")
        f.flush()
        p = subprocess.run([py, "-X", "faulthandler", __file__, "--worker", who, "--spec", json.dumps(spec)],
                           env=env, stdout=subprocess.PIPE, stderr=f, text=True,
                           preexec_fn=lambda: _cap_memory(spec["memory_gb"]))
    lines = [x for x in p.stdout.splitlines() if x.startswith("{")]
    if p.returncode or not lines:
        return {"error": f"worker exited with {p.returncode}; see {log}"}
    return {**json.loads(lines[-1]), "wall_seconds": round(time.time() - t, 1)}


def load_text() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def projected_eval_seconds(r: dict) -> float | None:
    """The evaluation time this model would take at K=5000 on 5,000 images (log p(x) scales
    with images x K; the ELBO and active units with images)."""
    s = r.get("eval_seconds")
    if not s or not r.get("n"):
        return None
    log_px = r["probe_seconds_per_image"] * 5000 if "probe_seconds_per_image" in r else \
        s.get("log_px", 0) * (5000 * 5000) / (r["n"] * r["nll_samples"])
    return log_px + (s.get("elbo", 0) + s.get("active_units", 0)) * 5000 / r["n"]


def projection(results: dict, probe: int) -> str:
    """One line: the projected time of the default run (300 s per model, K=5000 on 5,000
    images), from this run's evaluation speed."""
    per = {k: projected_eval_seconds(r) for k, r in results.items() if projected_eval_seconds(r)}
    total = len(per) * 300 + sum(per.values())
    how = f" (K=5000 timed on {probe} images per model)" if probe else ""
    return (f"Projected for the default run (300 s each, K=5000 on 5,000 images) from this run's evaluation "
            f"speed{how}: {len(per)} models x 300 s + {sum(per.values()) / 60:.0f} min of evaluation = "
            f"{total / 3600:.1f} h (plus start-up); evaluation per model: "
            + ", ".join(f"{k} {v / 60:.0f} min" for k, v in per.items()) + ".")


PAIRS = [("aevb-vae", "pythae-vae"), ("aevb-iwae", "pythae-iwae"), ("aevb-vamp", "pythae-vamp"),
         ("aevb-iaf", "pythae-iaf")]


def _lp(results: dict, key: str):
    r = results.get(key, {})
    return (r["log_px"], r["log_px_stderr"]) if "log_px" in r else None


def verdicts(results: dict) -> list[str]:
    """The issue's targets and the papers' orderings, each as one line (a difference is
    called significant beyond 2 standard errors of the difference; the same images and an
    independent K-sample estimate for each model)."""
    def cmp(a, b):
        la, lb = _lp(results, a), _lp(results, b)
        if not la or not lb:
            return None
        d, se = la[0] - lb[0], math.hypot(la[1], lb[1])
        return d, se, "holds" if d > 2 * se else ("does not hold" if d < -2 * se else "within noise")
    lines = []
    for a, b in PAIRS:
        c = cmp(a, b)
        if c:
            lines.append(f"target {a} >= {b}: {c[0]:+.2f} ± {c[1]:.2f} nats -> "
                         f"{'met' if c[0] >= 0 else 'NOT met'} ({c[2]})")
    best = {w: max(((k, r["log_px"]) for k, r in results.items() if k.startswith(w) and "log_px" in r),
                   key=lambda t: t[1], default=None) for w in ("aevb", "pythae")}
    if best["aevb"] and best["pythae"]:
        d = best["aevb"][1] - best["pythae"][1]
        lines.append(f"target aevb's best ({best['aevb'][0]}) >= pythae's best ({best['pythae'][0]}) + 2 nats: "
                     f"{d:+.2f} nats -> {'met' if d >= 2 else 'NOT met'}")
    for a, b, source in ORDERINGS:
        c = cmp(a, b)
        if c:
            lines.append(f"ordering {source}: {a} - {b} = {c[0]:+.2f} ± {c[1]:.2f} nats -> {c[2]}")
    return lines


def table(results: dict, labels: dict) -> str:
    head = ("| model | log p(x) ± s.e. | test ELBO ± s.e. | epochs | s/epoch | active units | "
            "train s | eval s | parameters |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    rows = []
    for key, r in results.items():
        if "log_px" not in r:
            rows.append(f"| {labels[key]} | {r.get('skipped') or r.get('error')} | | | | | | | |")
            continue
        ev = sum(r["eval_seconds"].values())
        rows.append(f"| {labels[key]} | {r['log_px']:.2f} ± {r['log_px_stderr']:.2f} | "
                    f"{r['elbo']:.2f} ± {r['elbo_stderr']:.2f} | {r['epochs']:.1f}"
                    f"{' (best ' + str(r['best_epoch']) + ')' if r.get('best_epoch') else ''} | "
                    f"{r['train_seconds'] / max(r['epochs'], 1e-9):.2f} | {r['active_units']} / {r['latent_dim']} | "
                    f"{r['train_seconds']:.0f} | {ev:.0f} | {r['parameters']:,} |")
    return "\n".join([head, *rows])


def write_report(out: Path, args, argv, results: dict, info: dict, started: str, notes: list[str]) -> None:
    labels = {k: label for k, label, _, _ in MODELS}
    cmd = result_files.command("quality.py", argv)
    checks = {k: r["adapter_check"] for k, r in results.items() if "adapter_check" in r}
    md = [f"# Log p(x) at equal training wall clock: aevb and pythae ({started})", "",
          f"Budget {args.budget:g} s of training per model; log p(x) by importance sampling, K={args.k}, "
          f"on {args.eval_n} evaluation images (standard errors over images); nats per image; "
          "epochs reached within the budget (fractions: a last partial epoch; the best epoch on the "
          f"held-out images in brackets, whose weights are scored; aevb counts a last partial epoch as one). Model selection: "
          + (f"{args.validation} of the 10,000 fitting images held out, the best epoch's weights scored "
             "(both libraries)." if args.validation else "none; the last weights scored."), "",
          table(results, labels), "", "Targets and orderings:", "",
          *[f"- {v}" for v in verdicts(results)], "",
          "pythae adapter checks (pythae's own loss against the adapter's ELBO, 1 sample, same images):", "",
          *[f"- {k}: {json.dumps(v)}" for k, v in checks.items()], "", *notes, "",
          "Command (repository root):", "", "```bash", cmd.strip(), "```", "",
          f"Machine: {info.get('platform')}, python {info.get('python')}, commit {info.get('commit')}; "
          f"load average before / after: {info['load_before']:.2f} / {info['load_after']:.2f}", "",
          "```", info.get("lscpu", "").strip(), "```", ""]
    result_files.write(out / "quality.md", "\n".join(md), "quality.py")
    result_files.write(out / "quality.json", json.dumps({"command": cmd, "started": started, "args": vars(args),
                                                        "machine": info, "results": results,
                                                        "verdicts": verdicts(results)}, indent=1) + "\n", "quality.py")


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget", type=float, default=300.0, help="training seconds per model (300)")
    p.add_argument("--k", type=int, default=5000, help="importance samples per image (5000)")
    p.add_argument("--eval-n", type=int, default=5000, help="evaluation images (5000: all)")
    p.add_argument("--models", default=",".join(k for k, *_ in MODELS),
                   help="comma-separated keys, run in this order: " + ", ".join(k for k, *_ in MODELS))
    p.add_argument("--components", type=int, default=50,
                   help="mixture components (MoG) and pseudo-inputs (VampPrior), both libraries (50: pythae's default)")
    p.add_argument("--flow-steps", type=int, default=2, help="IAF steps, both libraries (2)")
    p.add_argument("--seed", type=int, default=0, help="training seed of every model (0): weights, batches, noise")
    p.add_argument("--validation", type=int, default=1000,
                   help="fitting images held out to keep each model's best epoch by, both libraries (1000; 0: none)")
    p.add_argument("--ema", type=float, default=0.999,
                   help="aevb's models: decay of the weight average that is evaluated (0.999; 0: the last "
                        "weights, as pythae); pythae has no weight averaging")
    p.add_argument("--rows", type=int, default=2000, help="latent vectors per decoder call in the estimator")
    p.add_argument("--probe", type=int, default=None,
                   help="also time K=5000 on this many images per model, for the projected time of a "
                        "full run (default: 10 when --k or --eval-n is below 5000, else 0)")
    p.add_argument("--memory-gb", type=float, default=12.0,
                   help="address-space cap of each worker in GiB (12; 0: none): a runaway worker fails, not the machine")
    p.add_argument("--data-dir", default=str(DATA_DIR))
    p.add_argument("--pythae-python", default=PYTHAE_PYTHON)
    p.add_argument("--out", default=str(HERE / "results"), help="folder for quality.md and quality.json")
    p.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    p.add_argument("--spec", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    if args.worker:
        print(json.dumps(WORKERS[args.worker](json.loads(args.spec))), flush=True)
        return 0
    chosen = args.models.split(",")
    unknown = [k for k in chosen if k not in {m[0] for m in MODELS}]
    if unknown:
        print(f"unknown model {unknown[0]!r}; choose from {', '.join(m[0] for m in MODELS)}", file=sys.stderr)
        return 2
    out = result_files.check_folder(args.out, ("quality.md", "quality.json", "quality.log"), "quality.py")
    log = out / "quality.log"
    if not log.exists():
        result_files.write(log, "# the workers' output, appended by python benchmarks/quality.py\n", "quality.py")
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    info = {**machine(), "load_before": load_text()}
    results, labels = {}, {}
    probe = args.probe if args.probe is not None else (10 if min(args.k, args.eval_n) < 5000 else 0)
    for key, label, who, settings in sorted((m for m in MODELS if m[0] in chosen), key=lambda m: chosen.index(m[0])):
        spec = {"settings": settings, "budget": args.budget, "k": args.k, "eval_n": args.eval_n,
                "components": args.components, "flow_steps": args.flow_steps, "rows": args.rows,
                "validation": args.validation, "seed": args.seed, "memory_gb": args.memory_gb, "ema": args.ema,
                "data_dir": args.data_dir, "pythae_python": args.pythae_python, "probe": probe}
        print(f"{label}: training {args.budget:g} s, then K={args.k} on {args.eval_n} images ...", flush=True)
        r = results[key] = run_worker(who, spec, log)
        labels[key] = label
        print("  " + (f"log p(x) {r['log_px']:.2f} ± {r['log_px_stderr']:.2f}, ELBO {r['elbo']:.2f}, "
                      f"{r['epochs']:.1f} epochs, {r['active_units']} active units, eval "
                      f"{sum(r['eval_seconds'].values()):.1f} s" if "log_px" in r
                      else (r.get("skipped") or r.get("error"))), flush=True)
    info["load_after"] = load_text()
    notes = [projection(results, probe)] if any(map(projected_eval_seconds, results.values())) else []
    notes.append(f"Weight averaging: aevb's models evaluate (and select epochs by) the moving average of their "
                 f"weights, `train(ema={args.ema:g})`; pythae has none." if args.ema else
                 "Weight averaging: off (--ema 0): every model is scored with its own weights.")
    print("\n" + table(results, labels) + "\n")
    for line in verdicts(results) + notes:
        print(line)
    write_report(out, args, argv, results, info, started, notes)
    print(f"\nwrote {out / 'quality.md'} and {out / 'quality.json'} (worker logs: {log})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
