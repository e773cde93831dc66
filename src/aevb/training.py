"""The training loop: optimizer, progress bar, metrics, checkpoints, resume.

One call, `train(model, dataset, ...)`, minimizes `model.objective(x, y)["loss"]` over
mini-batches sliced from an in-memory tensor. Reproducible: batch order of epoch e comes
from a generator seeded with (seed, e), and the global RNG (reparameterization noise,
dynamic binarization) is saved in every checkpoint, so a resumed run continues exactly.

Run directory:
  config.json               the resolved run config (data, model, training)
  checkpoint.safetensors    model weights, optimizer state, RNG state; model config and
                            trainer state as JSON metadata. Written atomically every epoch.
  metrics.jsonl             one JSON line per epoch (nats per example)
  tb/                       TensorBoard events
  .aevb-run, .aevb-lock     the marker and lock of aevb.rundir (what aevb may replace or delete)
"""
from __future__ import annotations

import json
import math
import signal
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from . import data as data_mod
from . import distributed, rundir, runtime
from .evaluation import elbo_terms
from .models.base import load_state
from .serialization import CheckpointError, atomic_write, load_tensors, save_tensors

PRECISIONS = ("fp32", "bf16", "fp16")
OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "rmsprop": torch.optim.RMSprop,
              "adagrad": torch.optim.Adagrad, "sgd": torch.optim.SGD}


class TrainingError(RuntimeError):
    """Training cannot start or go on; the message says why and what to do."""


@dataclass
class Run:
    """The outcome of `train`: the trained model, its run directory and per-epoch metrics."""

    model: nn.Module
    dir: Path | None
    history: list[dict] = field(default_factory=list)
    stopped: str | None = None  # "SIGINT" / "SIGTERM" if a signal ended it early
    lock: object = field(default=None, repr=False)  # the run directory's lock, held while this Run lives

    @property
    def last(self) -> dict:
        return self.history[-1] if self.history else {}


def make_optimizer(name: str, params, lr: float) -> torch.optim.Optimizer:
    """Adam / AdamW use the fused kernel (one pass over the parameters per step; measured
    faster on CPU, benchmarks/README.md), the others the multi-tensor (foreach) one."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {sorted(OPTIMIZERS)}")
    kw = {"fused": True} if name in ("adam", "adamw") else {"foreach": True}
    return OPTIMIZERS[name](params, lr=lr, **kw)


# ----------------------------------------------------------------------------- checkpoints
def _optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict, dict]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"optim.{pid}.{k}"] = v
            else:
                scalars[f"{pid}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _restore_optimizer(opt, tensors: dict, meta: dict) -> None:
    state: dict = {}
    for key, v in tensors.items():
        if key.startswith("optim."):
            _, pid, k = key.split(".", 2)
            state.setdefault(int(pid), {})[k] = v
    for key, v in meta["scalars"].items():
        pid, k = key.split(".", 1)
        state.setdefault(int(pid), {})[k] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_checkpoint(path: Path, model, opt, trainer_state: dict, rng_states=None) -> None:
    """Everything needed to resume, in one safetensors file written atomically. `rng_states`:
    one RNG state per rank (default: this process's CPU RNG)."""
    if not all(torch.isfinite(p).all() for p in model.parameters()):
        raise TrainingError("refusing to write a checkpoint with non-finite weights; "
                            f"the last good one is kept at {path}")
    opt_tensors, opt_meta = _optimizer_tensors(opt)
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    tensors.update(opt_tensors)
    for i, st in enumerate(rng_states or [torch.get_rng_state()]):
        tensors[f"rng.{i}"] = st
    meta = {"model_config": model.full_config(), "trainer": trainer_state, "optimizer": opt_meta}
    try:
        save_tensors(path, tensors, meta)
    except OSError as e:  # disk full, quota, I/O error: atomic_write kept the previous file
        raise TrainingError(f"cannot write checkpoint {path} ({e.strerror or e}); the previous "
                            "checkpoint is kept; free some space and continue with --resume") from None


def load_checkpoint(path: Path, model, opt, ctx: distributed.Context | None = None) -> dict:
    ctx = ctx or distributed.Context()
    tensors, meta = load_tensors(path)
    if "trainer" not in meta:
        raise CheckpointError(f"{path}: not a training checkpoint written by aevb")
    if meta.get("model_config") != model.full_config():
        raise CheckpointError(f"{path}: checkpoint was made for model {meta.get('model_config')}, "
                              f"not for {model.full_config()}; use the same config to resume")
    _check_checkpoint(path, tensors, meta, opt)  # reliability: damaged file -> CheckpointError
    load_state(model, {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, path)
    _restore_optimizer(opt, tensors, meta["optimizer"])
    states = [tensors[k] for k in sorted((k for k in tensors if k.startswith("rng.")),
                                         key=lambda k: int(k.split(".")[1]))]
    distributed.set_rng_state(states[ctx.rank % len(states)], ctx)
    return meta["trainer"]


def _check_checkpoint(path, tensors: dict, meta: dict, opt) -> None:
    """Refuse, with a `CheckpointError` naming the file, a checkpoint whose trainer state,
    optimizer state or RNG state is malformed or non-finite (a damaged file that still parses
    as safetensors), so that resuming never fails half-way or continues from NaN weights."""
    def bad(why):
        raise CheckpointError(f"{path}: damaged checkpoint ({why}); restore a good copy or "
                              "start again with --overwrite")

    def count(v):
        return isinstance(v, int) and not isinstance(v, bool) and v >= 0

    trainer, optim = meta.get("trainer"), meta.get("optimizer")
    if not isinstance(trainer, dict) or not isinstance(optim, dict):
        bad("no trainer or optimizer state")
    for k in ("epoch", "step", "global_step", "skipped"):
        if not count(trainer.get(k)):
            bad(f"trainer state {k!r} is {trainer.get(k)!r}")
    sums, history = trainer.get("sums"), trainer.get("history")
    if not isinstance(sums, dict) or not all(isinstance(v, (int, float)) for v in sums.values()):
        bad("trainer state 'sums' is not a dict of numbers")
    if not isinstance(history, list) or not all(isinstance(r, dict) for r in history):
        bad("trainer state 'history' is not a list of records")
    groups, scalars = optim.get("param_groups"), optim.get("scalars")
    if not (isinstance(groups, list) and len(groups) == len(opt.param_groups) and all(
            isinstance(g, dict) and set(g) == set(o) and isinstance(g["params"], list)
            and len(g["params"]) == len(o["params"]) for g, o in zip(groups, opt.param_groups))):
        bad("optimizer parameter groups do not match this optimizer")
    if not all(isinstance(g["lr"], (int, float)) and 0 < g["lr"] < math.inf for g in groups):
        bad("optimizer learning rate is not a positive number")
    params = [p for g in opt.param_groups for p in g["params"]]
    if not isinstance(scalars, dict) or not all(
            k.split(".", 1)[0].isdigit() and "." in k and int(k.split(".", 1)[0]) < len(params)
            for k in scalars):
        bad("optimizer scalars are malformed")
    keys: dict[str, set] = {}  # parameter id -> the names of its optimizer state
    for k in [k[6:] for k in tensors if k.startswith("optim.")] + list(scalars):
        keys.setdefault(k.split(".", 1)[0], set()).add(k.split(".", 1)[-1])
    if len({frozenset(v) for v in keys.values()}) > 1 or len(keys) not in (0, len(params)):
        bad("optimizer state is incomplete")
    rng = [k for k in tensors if k.startswith("rng.")]
    if not rng or not (rng == ["rng.torch"] or all(k[4:].isdigit() for k in rng)):
        bad("no RNG state")
    n_rng = torch.get_rng_state().numel()
    for key, v in tensors.items():
        if key.startswith("rng.") and (v.dtype != torch.uint8 or v.ndim != 1 or v.numel() < n_rng):
            bad(f"{key} is not an RNG state")
        if key.startswith("optim."):
            parts = key.split(".", 2)
            if len(parts) != 3 or not parts[1].isdigit() or int(parts[1]) >= len(params) or (
                    v.ndim and v.shape != params[int(parts[1])].shape):
                bad(f"{key} does not fit this model's parameters")
        if (key.startswith(("optim.", "model.")) and v.is_floating_point()
                and not bool(torch.isfinite(v).all())):
            bad(f"{key} holds non-finite values")


class _GradNorm:
    """The norm of all gradients, sqrt(sum_p |g_p|^2), for clipping and the non-finite check.

    With `early`, a hook takes each |g_p| the moment autograd stores g_p, while it is still
    in cache: 3% faster per training step than a pass over all gradients after backward
    (MLP VAE, batch 100; benchmarks/README.md). The hooks are removed on exit."""

    def __init__(self, parameters: list, early: bool):
        self.parameters, self.early, self.norms, self.hooks = parameters, early, {}, []

    def __enter__(self):
        if self.early:
            for i, p in enumerate(self.parameters):
                self.hooks.append(p.register_post_accumulate_grad_hook(
                    lambda p, i=i: self.norms.__setitem__(i, torch.linalg.vector_norm(p.grad))))
        return self

    def __exit__(self, *exc):
        for h in self.hooks:
            h.remove()

    def __call__(self) -> torch.Tensor:
        """The norm of the gradients of the last backward (in parameter order, as
        nn.utils.get_total_norm)."""
        if not self.early:
            return nn.utils.get_total_norm([p.grad for p in self.parameters if p.grad is not None])
        norms = [self.norms[i] for i in sorted(self.norms)]
        self.norms.clear()
        return torch.linalg.vector_norm(torch.stack(norms)) if norms else torch.zeros(())


class _StopFlag:
    """Turns SIGINT / SIGTERM into a flag checked between steps, so that the loop can save a
    checkpoint and return instead of dying mid-write."""

    def __init__(self):
        self.raised: int | None = None
        self._old = {}

    def __enter__(self):
        try:
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        except ValueError:  # not the main thread: signals stay as they are
            pass
        return self

    def _handle(self, signum, frame):
        if self.raised is not None:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self.raised = signum

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


# ----------------------------------------------------------------------------- the loop
def train(model, dataset, *, epochs: int = 10, batch_size: int = 100, lr: float = 1e-3,
          optimizer: str = "adam", seed: int = 0, clip_grad: float | None = None,
          warmup_epochs: float = 0.0, noise: float = 0.0, out=None, resume: bool = False,
          overwrite: bool = False, config: dict | None = None, progress: bool = True,
          tensorboard: bool = True, eval_batch_size: int = 1000, max_skips: int = 100,
          device: str | None = "auto", precision: str = "fp32", threads: int | str | None = None,
          callbacks=()) -> Run:
    """Train `model` on `dataset` by minimizing its objective; returns a `Run`.

    - `batch_size` is the global batch: under torchrun each of W ranks takes batch_size / W
      images of it, and gradients are averaged (DistributedDataParallel).
    - `warmup_epochs`: the KL weight rises linearly from 0 to the model's beta over that many
      epochs (KL annealing); 0 disables it.
    - `noise`: salt-and-pepper rate applied to training inputs while the clean image stays
      the target (denoising VAE); 0 disables it.
    - Non-finite loss or gradients: the step is skipped and counted; every 10 consecutive
      skips halve the learning rate; more than `max_skips` stops training with an error,
      keeping the last good checkpoint.
    - `out`: run directory (metrics, checkpoints); None trains in memory only.
    - `device`: "auto" (CUDA if present), "cpu", "cuda:1", ...; `precision`: fp32, or bf16 /
      fp16 autocast, weights kept in fp32 (fp16 with loss scaling; meant for GPUs, it also
      runs on a CPU, where bf16 is the usual half precision).
    - `threads`: "auto" (on CPU, the thread count follows the machine's load) or a fixed
      count, for this process from now on (`aevb.runtime.set_threads`); None keeps the
      process's setting (AEVB_THREADS, default auto).
    - `callbacks`: functions called as cb(run, record) after each epoch (on rank 0).
    """
    if epochs < 0 or batch_size < 1 or not 0 < lr < math.inf:
        raise ValueError(f"need epochs >= 0, batch_size >= 1, lr > 0; got {epochs}, {batch_size}, {lr}")
    if clip_grad is not None and not clip_grad > 0:  # a negative norm would flip the gradients
        raise ValueError(f"clip_grad must be a positive number or None, got {clip_grad}")
    if tuple(model.input_shape) != tuple(dataset.shape):
        raise TrainingError(f"model expects images of shape {tuple(model.input_shape)} but dataset "
                            f"{dataset.name!r} has {tuple(dataset.shape)}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be fp32, bf16 or fp16, got {precision!r}")
    if threads is not None:
        runtime.set_threads(threads)
    try:
        ctx = distributed.setup(device)
    except ValueError as e:  # an unknown device, or CUDA asked for where there is none
        raise TrainingError(str(e)) from None
    if batch_size % ctx.world_size:
        raise TrainingError(f"batch size {batch_size} must be divisible by the number of processes "
                            f"({ctx.world_size})")
    model.to(ctx.device)
    parameters = list(model.parameters())
    opt = make_optimizer(optimizer, parameters, lr)
    net = model
    if ctx.distributed:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
    autocast = torch.autocast(ctx.device.type, dtype=torch.float16 if precision == "fp16" else torch.bfloat16,
                              enabled=precision != "fp32")
    scaler = torch.amp.GradScaler(ctx.device.type, enabled=precision == "fp16")
    run = Run(model, None)
    state = {"epoch": 0, "step": 0, "global_step": 0, "skipped": 0, "sums": {}, "seed": seed}
    target_beta = getattr(model, "beta", None)
    torch.manual_seed(seed + ctx.rank)
    if out is not None:  # the run directory: aevb.rundir (ownership, lock, config.json, resume rules)
        settings = {k: v for k, v in locals().items() if k in rundir.TRAINER_KEYS}
        run.dir, run.lock = rundir.prepare(out, {**settings, **(config or {})}, model,
                                           resume=resume, overwrite=overwrite, ctx=ctx)
        if resume and (run.dir / "checkpoint.safetensors").exists():
            state = load_checkpoint(run.dir / "checkpoint.safetensors", model, opt, ctx)
            run.history = state.pop("history")
            if ctx.main:
                _rewrite_metrics(run.dir, run.history)
    writer = _tensorboard(run.dir, tensorboard and ctx.main)
    steps_per_epoch = math.ceil(len(dataset.train) / batch_size)
    bar = _progress(progress and ctx.main, total=epochs * steps_per_epoch,
                    initial=state["epoch"] * steps_per_epoch + state["step"])
    test = dataset.test[ctx.rank::ctx.world_size]
    t0 = time.perf_counter()
    consecutive = 0

    def checkpoint():
        rng = distributed.gather(distributed.rng_state(ctx), ctx)  # collective: every rank
        if run.dir is not None and ctx.main:
            save_checkpoint(run.dir / "checkpoint.safetensors", model, opt,
                            {**state, "history": run.history}, rng)

    # gradients that change after autograd stores them (DDP averages them, fp16 unscales
    # them) are normed after backward; all others as they are stored
    early = not ctx.distributed and precision != "fp16"
    with _StopFlag() as stop, _GradNorm(parameters, early) as grad_norm:
        while state["epoch"] < epochs:
            epoch = state["epoch"]
            model.train()
            g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
            sums = {k: torch.tensor(v, device=ctx.device) for k, v in state["sums"].items()}
            for x, y in dataset.batches(batch_size // ctx.world_size, g, start=state["step"],
                                        rank=ctx.rank, world_size=ctx.world_size):
                if ctx.device.type == "cpu":
                    runtime.adapt_threads()
                x = x.to(ctx.device, non_blocking=True)
                y = None if y is None else y.to(ctx.device, non_blocking=True)
                if warmup_epochs > 0 and target_beta is not None:
                    model.beta = target_beta * min(1.0, (state["global_step"] + 1) /
                                                   (warmup_epochs * steps_per_epoch))
                kw = {}
                if noise > 0:
                    x, kw["target"] = data_mod.salt_and_pepper(x.cpu(), noise).to(ctx.device), x
                with autocast:
                    terms = net(x, y, **kw)
                loss = terms.pop("loss")
                opt.zero_grad()  # to None: backward then hands its gradient tensors over, no copy
                ok = math.isfinite(loss.item())
                if ok:
                    scaler.scale(loss).backward()
                    scaler.unscale_(opt)
                    norm = grad_norm()
                    if clip_grad:
                        nn.utils.clip_grads_with_norm_(parameters, clip_grad, norm)
                    ok = math.isfinite(norm.item())
                if ok:
                    scaler.step(opt)
                    scaler.update()
                    consecutive = 0
                    for k, v in terms.items():
                        sums[k] = sums.get(k, 0) + v.detach().float().sum()
                    sums["n"] = sums.get("n", 0) + x.shape[0]
                else:
                    if precision == "fp16" and math.isfinite(loss.item()):  # unscale_ ran: inf checks
                        scaler.update()
                    state["skipped"] += 1
                    consecutive += 1
                    _guard(state["skipped"], consecutive, max_skips, opt, epoch, run.dir)
                state["step"] += 1
                state["global_step"] += 1
                bar.update(1)
                if distributed.any_rank(stop.raised is not None, ctx):
                    stop.raised = stop.raised or signal.SIGTERM
                    break
            if stop.raised is not None and state["step"] < steps_per_epoch:
                state["sums"] = {k: float(v) for k, v in sums.items()}
                checkpoint()
                run.stopped = signal.Signals(stop.raised).name
                break
            totals = distributed.all_sum({k: float(v) for k, v in sums.items()}, ctx)
            n = totals.pop("n", 1.0)
            record = {"epoch": epoch + 1, **{f"train_{k}": v / n for k, v in totals.items()}}
            test_means = elbo_terms(model, test, eval_batch_size, seed)
            test_sums = distributed.all_sum({k: v * len(test) for k, v in test_means.items()}
                                            | {"n": len(test)}, ctx)
            n_test = test_sums.pop("n")
            record.update({f"test_{k}": v / n_test for k, v in test_sums.items()})
            record["seconds"] = round(time.perf_counter() - t0, 3)
            record["skipped_steps"] = state["skipped"]
            run.history.append(record)
            state.update(epoch=epoch + 1, step=0, sums={})
            bar.set_postfix_str(_postfix(record))
            if run.dir is not None and ctx.main:
                _rewrite_metrics(run.dir, run.history)  # atomically: a kill leaves the old or the new file
            checkpoint()
            if writer is not None:
                for k, v in record.items():
                    if k != "epoch":
                        writer.add_scalar(k.replace("_", "/", 1), v, record["epoch"])
                writer.flush()
            if ctx.main:
                for cb in callbacks:
                    cb(run, record)
            if stop.raised is not None:
                run.stopped = signal.Signals(stop.raised).name
                break
    bar.close()
    if writer is not None:
        writer.close()
    if target_beta is not None:
        model.beta = target_beta
    model.eval()
    return run


def _guard(skipped: int, consecutive: int, max_skips: int, opt, epoch: int, run_dir) -> None:
    """After a skipped (non-finite) step: stop past `max_skips`, halve the learning rate
    every 10 consecutive skips."""
    if skipped > max_skips:
        raise TrainingError(
            f"training diverged: {skipped} steps with non-finite loss or gradients (epoch "
            f"{epoch + 1}); lower the learning rate or set clip_grad"
            + (f"; the last good checkpoint is kept in {run_dir}" if run_dir else ""))
    if consecutive % 10 == 0:
        for group in opt.param_groups:
            group["lr"] *= 0.5
        warnings.warn(f"{consecutive} non-finite steps in a row; learning rate halved to "
                      f"{opt.param_groups[0]['lr']:g}")


def _postfix(record: dict) -> str:
    keys = [k for k in ("train_elbo", "test_elbo", "train_loss") if k in record]
    return f"epoch {record['epoch']} " + " ".join(f"{k}={record[k]:.2f}" for k in keys)


def _rewrite_metrics(directory: Path, history: list[dict]) -> None:
    """metrics.jsonl holds exactly `history`, written atomically (after every epoch, and on
    resume the epochs of the checkpoint: a kill between writing the metrics and the
    checkpoint would otherwise repeat an epoch)."""
    text = "".join(json.dumps(r) + "\n" for r in history)
    atomic_write(directory / "metrics.jsonl", text.encode())  # a kill leaves old or new


def _progress(enabled: bool, total: int, initial: int):
    from tqdm.auto import tqdm
    return tqdm(total=total, initial=initial, disable=not enabled, unit="step", dynamic_ncols=True,
                mininterval=0.5)


def _tensorboard(directory, enabled: bool):
    if directory is None or not enabled:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        warnings.warn("tensorboard is not installed; metrics go to metrics.jsonl only")
        return None
    return SummaryWriter(str(Path(directory) / "tb"))
