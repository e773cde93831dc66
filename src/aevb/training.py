"""The training loop, in small functions:

    train(model, dataset, ...)        check the arguments; then, with aevb's thread settings
      start(...)                      device, optimizer, DDP, precision, run directory, resume
      fit(loop, dataset, callbacks)   epochs until `epochs` or a signal:
        run_epoch(loop, dataset)        one pass over the training batches, `step` on each
          step(loop, x, y)                one optimizer step (skipped if non-finite)
        evaluate_epoch(loop, test)      the test split's mean objective terms
        validate(loop)                  the same on the held-out images; the best epoch so far
                                        (both with the averaged weights, `ema`)
        end_epoch(loop, record, ...)    metrics.jsonl, checkpoint, TensorBoard, callbacks

`train` minimizes `model.objective(x, y)["loss"]` over mini-batches sliced from an in-memory
tensor. KL warm-up is a schedule of `beta` passed to the objective (`kl_warmup`; the model
is never changed), input noise a transform of the batch (`aevb.data.transforms.noisy_inputs`).
Reproducible: batch order of epoch e comes from a generator seeded with (seed, e), and the
global RNG (reparameterization noise, dynamic binarization) is saved in every checkpoint
(`aevb.checkpoint`), so a resumed run continues exactly.

Run directory:
  config.json               the resolved run config (data, model, training)
  checkpoint.safetensors    model weights, optimizer state, RNG state; model config and
                            trainer state as JSON metadata (with `ema`, also the averaged
                            weights, "ema.*"; with `keep_best`, the weights of the best epoch,
                            "best.*"). Written atomically every epoch.
  metrics.jsonl             one JSON line per epoch (nats per example)
  tb/                       TensorBoard events
  .aevb-run, .aevb-lock     the marker and lock of aevb.rundir (what aevb may replace or delete)
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import signal
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from . import diagnostics, distributed, graphed, rundir, runtime
from .averaging import WeightAverage, check_decay
from .checkpoint import TrainingError, load_checkpoint, save_checkpoint
from .data import hold_out
from .data.transforms import noisy_inputs
from .nets import linear
from .objectives import objective_terms
from .optim import OPTIMIZERS, PRECISIONS, LeanAdam, make_optimizer
from .progress import Reporter
from .serialization import atomic_write

#: `Run.stopped` (and a history record's "stopped") when `time_limit` ended training
TIME_LIMIT = "time_limit"
#: `Run.stopped` when `patience` epochs passed without a better validation objective
EARLY_STOPPING = "early_stopping"
__all__ = ["OPTIMIZERS", "PRECISIONS", "Run", "TrainingError", "kl_warmup", "make_optimizer", "train"]


@dataclass
class Run:
    """The outcome of `train`: the trained model, its run directory and per-epoch metrics."""

    model: nn.Module
    dir: Path | None
    history: list[dict] = field(default_factory=list)
    stopped: str | None = None  # "SIGINT" / "SIGTERM" if a signal ended it early, "time_limit", "early_stopping"
    lock: object = field(default=None, repr=False)  # the run directory's lock, held while this Run lives

    @property
    def last(self) -> dict:
        return self.history[-1] if self.history else {}


@dataclass
class Options:
    """The settings of one `train` call (see its docstring)."""

    epochs: int = 10
    batch_size: int = 100
    lr: float = 1e-3
    optimizer: str = "adam"
    seed: int = 0
    clip_grad: float | None = None
    warmup_epochs: float = 0.0
    noise: float = 0.0
    eval_batch_size: int = 1000
    max_skips: int = 100
    precision: str = "fp32"
    compile: bool = False
    time_limit: float | None = None
    lr_schedule: str = "constant"
    validation: int = 0
    keep_best: bool = False
    patience: int | None = None
    ema: float | None = None


@dataclass
class Loop:
    """What one training run holds while it runs. `state` is what a checkpoint keeps of the
    trainer (epoch, step, global_step, skipped, sums of the epoch so far, seed)."""

    model: nn.Module
    net: nn.Module  # the model, or its DistributedDataParallel wrapper
    parameters: list
    opt: torch.optim.Optimizer
    ctx: distributed.Context
    options: Options
    run: Run
    state: dict
    steps_per_epoch: int
    beta: Callable[[int], float | None]
    lr_factor: Callable[[int], float] | None
    transform: Callable
    autocast: torch.autocast
    scaler: torch.amp.GradScaler
    sums: "_Sums" = None
    consecutive: int = 0
    writer: object = None
    bar: object = None
    grad_norm: object = None
    stop: object = None
    t0: float = 0.0
    val: object = None  # the held-out Split (`validation`), or None
    best: dict | None = None  # `keep_best`: the weights of the best epoch so far
    fused: Callable | None = None  # the model's `fused_step`, where it has one and it applies
    graphed: graphed.GraphedStep | None = None  # the step without host synchronization (CUDA graphs)
    average: WeightAverage | None = None  # `ema`: the moving average of the weights


def kl_warmup(beta: float | None, warmup_steps: float) -> Callable[[int], float | None]:
    """The KL weight of global step t (0-based): beta * min(1, (t + 1) / warmup_steps), a
    linear warm-up from 0 to the model's `beta` (KL annealing); with no warm-up (0 steps)
    None at every step, that is, the model's own beta."""
    if not warmup_steps or beta is None:
        return lambda t: None
    return lambda t: beta * min(1.0, (t + 1) / warmup_steps)


#: how the learning rate moves over a run (`lr_schedule`)
LR_SCHEDULES = ("constant", "cosine")


def lr_factor(schedule: str, total_steps: int) -> Callable[[int], float] | None:
    """The factor on the learning rate at global step t (0-based): None for "constant" (the
    optimizer's lr is left alone); "cosine": (1 + cos(pi t / T)) / 2 over the run's T steps,
    from 1 at the first step to near 0 at the last (Loshchilov & Hutter 2017, no restarts)."""
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"unknown lr_schedule {schedule!r}; choose one of {', '.join(LR_SCHEDULES)}")
    if schedule == "constant":
        return None
    return lambda t: 0.5 * (1.0 + math.cos(math.pi * min(t, total_steps) / max(total_steps, 1)))


# ----------------------------------------------------------------------------- train
def train(model, dataset, *, epochs: int = 10, batch_size: int = 100, lr: float = 1e-3,
          optimizer: str = "adam", seed: int = 0, clip_grad: float | None = None,
          warmup_epochs: float = 0.0, noise: float = 0.0, out=None, resume: bool = False,
          overwrite: bool = False, config: dict | None = None, progress: bool | str = True,
          tensorboard: bool = True, eval_batch_size: int = 1000, max_skips: int = 100,
          device: str | None = "auto", precision: str = "fp32", threads: int | str | None = None,
          tuning: bool = True, compile: bool = False, callbacks=(), time_limit: float | None = None,
          lr_schedule: str = "constant", validation: int = 0, keep_best: bool = False,
          patience: int | None = None, ema: float | None = None) -> Run:
    """Train `model` on `dataset` by minimizing its objective; returns a `Run`.

    - `batch_size` is the global batch: under torchrun each of W ranks takes batch_size / W
      images of it, and gradients are averaged (DistributedDataParallel).
    - `warmup_epochs`: the KL weight passed to the objective rises linearly from 0 to the
      model's beta over that many epochs (KL annealing); 0 disables it.
    - `lr_schedule`: "constant", or "cosine": lr decays to 0 over the `epochs`, by step (a
      resumed run continues it exactly; one that `time_limit` ends stops part-way down).
    - `noise`: salt-and-pepper rate applied to training inputs while the clean image stays
      the target (denoising VAE); 0 disables it.
    - Non-finite loss or gradients: the step is skipped; every 10 in a row halve the lr;
      more than `max_skips` stop training with an error, keeping the last good checkpoint.
    - `out`: run directory (metrics, checkpoints); None trains in memory only. `device`:
      "auto" (CUDA if present), "cpu", "cuda:1", ...; `precision`: fp32, or bf16 / fp16
      autocast, weights kept in fp32 (fp16 with loss scaling, for GPUs).
    - `threads`: "auto" (follows the machine's load) or a count, while training; None:
      AEVB_THREADS, else auto. `tuning=False` (AEVB_NO_TUNING=1): `aevb.runtime.tuned` is off.
    - `compile`: forward and backward through torch.compile (after ~15-25 s), equal to the
      eager step up to the random numbers; as fast as the MLP VAE's fused step, which it replaces.
    - `callbacks`: functions called as cb(run, record) after each epoch (on rank 0).
    - `time_limit`: seconds of wall clock for this call (evaluations included): training stops
      after the step that crosses it, with a checkpoint; `run.stopped` and the last record's
      "stopped" say "time_limit" (a partial epoch's record has "steps"); `resume` continues.
    - `validation`: hold out that many training images (`aevb.data.hold_out`) and record
      their mean terms ("val_elbo", ...) and the best epoch so far ("best_epoch", `validate`)
      after every epoch. `keep_best`: the model returned (and the one a run directory loads)
      is the best epoch's; the checkpoint keeps the last weights too, for `resume`.
      `patience`: stop ("early_stopping") after that many epochs without a better one.
    - `ema`: evaluate, select by and return a moving average of the weights with this decay
      (e.g. 0.999; `aevb.averaging`), kept beside the last weights in the checkpoint.
    - `progress`: True (a bar on a terminal, else lines), "lines", "both", False (`aevb.progress`).
    """
    options = Options(epochs, batch_size, lr, optimizer, seed, clip_grad, warmup_epochs, noise,
                      eval_batch_size, max_skips, precision, compile, time_limit, lr_schedule,
                      validation, keep_best, patience, ema)
    _check(model, dataset, options)
    dataset, val = hold_out(dataset, validation) if validation else (dataset, None)
    with runtime.tuned(threads, enabled=tuning):
        loop = start(model, dataset, options, device, out=out, resume=resume, overwrite=overwrite,
                     config=config, progress=progress, tensorboard=tensorboard)
        loop.val = val
        try:
            fit(loop, dataset, callbacks)
            _final_weights(loop)
        finally:
            loop.bar.close()
            if loop.writer is not None:
                loop.writer.close()
    model.eval()
    return loop.run


def _final_weights(loop: Loop) -> None:
    """The model's weights after training: the best epoch's (`keep_best`), else the averaged
    ones (`ema`), else the last."""
    if loop.best is not None:
        loop.model.load_state_dict(loop.best)
    elif loop.average is not None:
        loop.average.set_model()


def _check(model, dataset, o: Options) -> None:
    if o.epochs < 0 or o.batch_size < 1 or not 0 < o.lr < math.inf:
        raise ValueError(f"need epochs >= 0, batch_size >= 1, lr > 0; got {o.epochs}, {o.batch_size}, {o.lr}")
    if o.clip_grad is not None and not o.clip_grad > 0:  # a negative norm would flip the gradients
        raise ValueError(f"clip_grad must be a positive number or None, got {o.clip_grad}")
    if tuple(model.input_shape) != tuple(dataset.shape):
        raise TrainingError(f"model expects images of shape {tuple(model.input_shape)} but dataset "
                            f"{dataset.name!r} has {tuple(dataset.shape)}")
    if o.precision not in PRECISIONS:
        raise ValueError(f"precision must be fp32, bf16 or fp16, got {o.precision!r}")
    lr_factor(o.lr_schedule, 1)  # an unknown name is refused before anything starts
    if o.time_limit is not None and not 0 < o.time_limit < math.inf:
        raise ValueError(f"time_limit must be a positive number of seconds or None, got {o.time_limit}")
    if o.patience is not None and (isinstance(o.patience, bool) or not isinstance(o.patience, int) or o.patience < 1):
        raise ValueError(f"patience must be a positive number of epochs or None, got {o.patience!r}")
    if o.ema is not None:
        check_decay(o.ema)  # a bad decay is refused before anything starts
    if (o.keep_best or o.patience) and not o.validation:
        raise ValueError("keep_best and patience choose epochs by a validation split: set validation "
                         "(a number of training images to hold out), e.g. validation=1000")


def start(model, dataset, o: Options, device, *, out, resume: bool, overwrite: bool,
          config: dict | None, progress: bool | str, tensorboard: bool) -> Loop:
    """Everything a run needs before its first step: the device (joining the process group
    under torchrun), optimizer, DDP wrapper, autocast and loss scaler, the seed, the run
    directory (resuming from its checkpoint), TensorBoard and the progress bar."""
    try:
        ctx = distributed.setup(device)
    except ValueError as e:  # an unknown device, or CUDA asked for where there is none
        raise TrainingError(str(e)) from None
    if o.batch_size % ctx.world_size:
        raise TrainingError(f"batch size {o.batch_size} must be divisible by the number of processes "
                            f"({ctx.world_size})")
    model.to(ctx.device)
    net = model
    if ctx.distributed:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
    if o.compile:  # the eager model stays `loop.model` (evaluation, checkpoints)
        net = torch.compile(net)
    half = torch.float16 if o.precision == "fp16" else torch.bfloat16
    steps = math.ceil(len(dataset.train) / o.batch_size)
    parameters = list(model.parameters())
    loop = Loop(model=model, net=net, parameters=parameters, opt=make_optimizer(o.optimizer, parameters, o.lr),
                ctx=ctx, options=o, run=Run(model, None), steps_per_epoch=steps,
                state={"epoch": 0, "step": 0, "global_step": 0, "skipped": 0, "sums": {}, "seed": o.seed},
                beta=kl_warmup(model.beta, o.warmup_epochs * steps),
                lr_factor=lr_factor(o.lr_schedule, o.epochs * steps), transform=noisy_inputs(o.noise),
                autocast=torch.autocast(ctx.device.type, dtype=half, enabled=o.precision != "fp32"),
                scaler=torch.amp.GradScaler(ctx.device.type, enabled=o.precision == "fp16"))
    if o.precision == "fp32" and not ctx.distributed and not o.compile:
        loop.fused = model.fused_step()
    if o.ema is not None:
        loop.average = WeightAverage(model, o.ema)
    torch.manual_seed(o.seed + ctx.rank)
    if out is not None:
        open_run_dir(loop, out, resume, overwrite, {"device": device, **(config or {})})
    loop.writer = _tensorboard(loop.run.dir, tensorboard and ctx.main)
    loop.bar = Reporter(progress if ctx.main else False, total=o.epochs * steps,
                        initial=loop.state["epoch"] * steps + loop.state["step"], epochs=o.epochs)
    return loop


def open_run_dir(loop: Loop, out, resume: bool, overwrite: bool, config: dict) -> None:
    """The run directory `out`, made ready by `aevb.rundir.prepare` (ownership, lock,
    config.json, the resume rules; rank 0); on resume the checkpoint and history are
    loaded into `loop`."""
    model, ctx, run = loop.model, loop.ctx, loop.run
    settings = {k: v for k, v in dataclasses.asdict(loop.options).items() if k in rundir.TRAINER_KEYS}
    run.dir, run.lock = rundir.prepare(out, {**settings, **config}, model,
                                       resume=resume, overwrite=overwrite, ctx=ctx)
    if resume and (run.dir / "checkpoint.safetensors").exists():
        loop.state = load_checkpoint(run.dir / "checkpoint.safetensors", model, loop.opt, ctx)
        run.history = [r for r in loop.state.pop("history") if "steps" not in r]  # a time limit's partial epoch goes
        loop.best = loop.state.pop("best_weights", None)
        average = loop.state.pop("average_weights", None)
        if loop.average is not None:  # ema is a setting of the run: a resumed run has the same
            loop.average.load(average or {}, run.dir / "checkpoint.safetensors")
        linear.restore_choices(loop.state.pop("kernels", {}))  # the kernels it started with
        if ctx.main:
            _rewrite_metrics(run.dir, run.history)


# ----------------------------------------------------------------------------- the loop
def fit(loop: Loop, dataset, callbacks=()) -> None:
    """Train epoch after epoch until `epochs` are done or a signal (SIGINT / SIGTERM) asks to
    stop: then a checkpoint is saved and `run.stopped` names the signal."""
    o, ctx = loop.options, loop.ctx
    test = dataset.test[ctx.rank::ctx.world_size]
    dataset = _resident(dataset, ctx.device)
    loop.t0 = time.perf_counter()
    # gradients that change after autograd stores them (DDP averages them, fp16 unscales
    # them) are normed after backward; all others as they are stored
    early = not ctx.distributed and o.precision != "fp16"
    with _StopFlag() as loop.stop, _GradNorm(loop.parameters, early) as loop.grad_norm:
        loop.graphed = _graphed_step(loop)
        while loop.state["epoch"] < o.epochs:
            if _patience_spent(loop, loop.state["epoch"]):  # a resumed run that had stopped early
                loop.run.stopped = EARLY_STOPPING
                return
            if not run_epoch(loop, dataset):  # a signal or the time limit, mid-epoch: checkpoint and stop
                loop.state["sums"] = loop.sums.as_dict()
                if loop.stop.raised == TIME_LIMIT:
                    _partial_record(loop, test)
                checkpoint(loop)
                loop.run.stopped = _stop_name(loop.stop.raised)
                return
            with _averaged(loop):
                record = {"epoch": loop.state["epoch"] + 1, **_train_means(loop), **evaluate_epoch(loop, test),
                          **validate(loop)}
            if _patience_spent(loop, record["epoch"]):  # the run is done, whatever else happened
                record["stopped"] = EARLY_STOPPING
            elif loop.stop.raised == TIME_LIMIT:  # crossed on the epoch's last step
                record["stopped"] = TIME_LIMIT
            end_epoch(loop, record, callbacks)
            if record.get("stopped") == EARLY_STOPPING:
                loop.run.stopped = EARLY_STOPPING
                return
            if loop.stop.raised is not None:
                loop.run.stopped = _stop_name(loop.stop.raised)
                return


def run_epoch(loop: Loop, dataset) -> bool:
    """One pass over the training batches (the rest of it, when resuming mid-epoch); False
    if a signal or the time limit stopped it before its end."""
    o, ctx, state = loop.options, loop.ctx, loop.state
    loop.model.train()
    g = torch.Generator().manual_seed(o.seed * 1_000_003 + state["epoch"])
    loop.sums = _Sums(state["sums"], ctx.device)
    for x, y in dataset.batches(o.batch_size // ctx.world_size, g, start=state["step"],
                                rank=ctx.rank, world_size=ctx.world_size):
        step(loop, x, y)
        if loop.average is not None:
            loop.average.update(state["global_step"])
        state["step"] += 1
        state["global_step"] += 1
        loop.bar.update(1)
        late = o.time_limit is not None and distributed.any_rank(time.perf_counter() - loop.t0 >= o.time_limit, ctx)
        if late or distributed.any_rank(loop.stop.raised is not None, ctx):
            loop.stop.raised = TIME_LIMIT if late else (loop.stop.raised or signal.SIGTERM)  # alike on all ranks
            break
    _flush_graphed(loop)
    return not (loop.stop.raised is not None and state["step"] < loop.steps_per_epoch)


def _averaged(loop: Loop):
    """A block in which the model holds its averaged weights (`ema`), else its own."""
    return loop.average.swapped() if loop.average is not None else contextlib.nullcontext()


def _stop_name(raised) -> str:
    return raised if raised == TIME_LIMIT else signal.Signals(raised).name


def _partial_record(loop: Loop, test) -> None:
    """The history record of an epoch that the time limit cut short: the means of its steps
    so far, the test terms, "steps" done and "stopped"; the trainer state stays mid-epoch."""
    state = loop.state
    with _averaged(loop):
        record = {"epoch": state["epoch"] + 1, "steps": state["step"], **_train_means(loop),
                  **evaluate_epoch(loop, test), **validate(loop), "seconds": round(time.perf_counter() - loop.t0, 3),
                  "skipped_steps": state["skipped"], "stopped": TIME_LIMIT}
    loop.run.history.append(record)
    if loop.run.dir is not None and loop.ctx.main:
        _rewrite_metrics(loop.run.dir, loop.run.history)


def step(loop: Loop, x: torch.Tensor, y: torch.Tensor | None) -> bool:
    """One optimizer step on batch (x, y); False if it was skipped (non-finite loss or
    gradients), which counts towards the divergence guard."""
    ctx = loop.ctx
    if ctx.device.type == "cpu":
        runtime.adapt_threads()
    x = x.to(ctx.device, non_blocking=True)
    y = None if y is None else y.to(ctx.device, non_blocking=True)
    x, target = loop.transform(x)
    beta = loop.beta(loop.state["global_step"])
    if loop.lr_factor is not None:  # halvings by the divergence guard (lr_scale) stay
        lr = loop.options.lr * loop.state.get("lr_scale", 1.0) * loop.lr_factor(loop.state["global_step"])
        for group in loop.opt.param_groups:
            group["lr"] = lr
    if loop.graphed is not None:
        if loop.graphed.fits(x, y, target, beta) and loop.graphed(x, y, target, beta):  # no host synchronization
            if loop.graphed.due():
                _flush_graphed(loop)
            return True
        _flush_graphed(loop)  # the host's counters up to date before an eager step
    taken = _eager_step(loop, x, y, target, beta)
    if loop.graphed is not None:
        loop.graphed.consecutive.fill_(loop.consecutive)
    return taken


def _eager_step(loop: Loop, x, y, target, beta) -> bool:
    """The step with its checks on the host (`step`)."""
    kw = {k: v for k, v in (("target", target), ("beta", beta)) if v is not None}
    if loop.fused is not None:  # the terms, with the gradients written into .grad (aevb.fused)
        terms = loop.fused(x, **kw, on_grad=loop.grad_norm.record if loop.grad_norm.early else None)
    else:
        loop.opt.zero_grad()  # to None: backward then hands its gradient tensors over, no copy
        with loop.autocast:
            terms = loop.net(x, y, **kw)
    loss = terms.pop("loss")
    finite_loss = math.isfinite(loss.item())
    if not (finite_loss and _backward(loop, loss)):
        _skipped(loop, unscaled=finite_loss)
        return False
    loop.scaler.step(loop.opt)
    loop.scaler.update()
    loop.consecutive = 0
    loop.sums.add(terms, x.shape[0])
    return True


def _graphed_step(loop: Loop) -> graphed.GraphedStep | None:
    """The step without host synchronization (`aevb.graphed`) where it applies: CUDA with
    AEVB_GRAPH=1 (or AEVB_GRAPH=eager, any device), fp32 or bf16, Adam or AdamW, outside torchrun and compile; captured
    only for a model that declares it `graph_capturable`. It takes the fused step only
    without KL warm-up (the fused step takes beta as a number)."""
    how, o, ctx = graphed.mode(loop.ctx.device), loop.options, loop.ctx
    if not how or ctx.distributed or o.compile or o.precision == "fp16" or not isinstance(loop.opt, LeanAdam):
        return None
    if how == "graph" and not loop.model.graph_capturable():
        return None
    half = torch.bfloat16 if o.precision == "bf16" else None
    return graphed.GraphedStep(
        loop.net, loop.opt, loop.grad_norm, fused=loop.fused if loop.beta(0) is None else None, clip=o.clip_grad,
        autocast=torch.autocast(ctx.device.type, dtype=half, enabled=half is not None, cache_enabled=False),
        capture=how == "graph")


def _flush_graphed(loop: Loop) -> None:
    """Fold the graphed step's device counters into the epoch's sums, the skip count and the
    divergence guard (one synchronization)."""
    got = loop.graphed.flush() if loop.graphed is not None else None
    if not got:
        return
    loop.sums.add_sums(got["sums"], got["n"])
    loop.consecutive = got["consecutive"]
    if got["skipped"]:
        loop.state["skipped"] += got["skipped"]
        _guard(loop.state["skipped"], got["consecutive"], got["halvings"], loop.options.max_skips,
               loop.opt, loop.state, loop.run.dir)


def _resident(dataset, device: torch.device):
    """`dataset` with its training images on `device` where it is a GPU with room for them
    (under a quarter of its free memory): batches are then cut and binarized there, with no
    copy from the host per step."""
    x, y = dataset.train.x, dataset.train.y
    if device.type != "cuda" or x.device == device or 4 * x.numel() * x.element_size() > torch.cuda.mem_get_info(device)[0]:
        return dataset
    return dataclasses.replace(dataset, train=dataclasses.replace(
        dataset.train, x=x.to(device), y=None if y is None else y.to(device)))


def _backward(loop: Loop, loss: torch.Tensor) -> bool:
    """Backward (unless the fused step made the gradients), unscaling and clipping; whether
    the gradient norm is finite."""
    if loop.fused is None:
        loop.scaler.scale(loss).backward()
    loop.scaler.unscale_(loop.opt)
    norm = loop.grad_norm()
    if loop.options.clip_grad:
        nn.utils.clip_grads_with_norm_(loop.parameters, loop.options.clip_grad, norm)
    return math.isfinite(norm.item())


def _skipped(loop: Loop, unscaled: bool) -> None:
    """Count a skipped step; fp16's loss scale shrinks only where unscale_ ran (its inf
    checks exist only then)."""
    if loop.options.precision == "fp16" and unscaled:
        loop.scaler.update()
    loop.state["skipped"] += 1
    loop.consecutive += 1
    _guard(loop.state["skipped"], loop.consecutive, int(loop.consecutive % 10 == 0), loop.options.max_skips,
           loop.opt, loop.state, loop.run.dir)


def _train_means(loop: Loop) -> dict:
    totals = distributed.all_sum(loop.sums.as_dict(), loop.ctx)
    n = totals.pop("n", 1.0)
    return {f"train_{k}": v / n for k, v in totals.items()}


def evaluate_epoch(loop: Loop, test, prefix: str = "test") -> dict:
    """The mean over the test split of each per-example objective term ("test_elbo", ...):
    each rank evaluates its share, with the sampling noise of `seed` (the global RNG is left
    as it was), and the sums are combined over ranks."""
    terms = objective_terms(loop.model, test.x, test.y, loop.options.eval_batch_size, loop.options.seed)
    means = {k: v.mean().item() for k, v in terms.items()}
    sums = distributed.all_sum({k: v * len(test) for k, v in means.items()} | {"n": len(test)}, loop.ctx)
    n = sums.pop("n")
    return {f"{prefix}_{k}": v / n for k, v in sums.items()}


def validate(loop: Loop) -> dict:
    """The held-out images' mean terms ("val_elbo", ...; {} without `validation`) and
    "best_epoch": the epoch whose bound on them (the IWAE bound if the model trains on it,
    else the ELBO; an autoencoder's log-likelihood) is the highest so far, its weights kept
    in `loop.best` with `keep_best`."""
    if loop.val is None:
        return {}
    ctx, state = loop.ctx, loop.state
    terms = evaluate_epoch(loop, loop.val[ctx.rank::ctx.world_size], prefix="val")
    value = next(terms[f"val_{k}"] for k in ("iwae", "elbo", "rec") if f"val_{k}" in terms)
    if state.get("best") is None or value > state["best"]["value"]:
        state["best"] = {"epoch": state["epoch"] + 1, "value": value}
        if loop.options.keep_best:
            loop.best = {k: v.detach().clone() for k, v in loop.model.state_dict().items()}
    return {**terms, "best_epoch": state["best"]["epoch"]}


def _patience_spent(loop: Loop, epochs_done: int) -> bool:
    best = loop.state.get("best")
    return bool(loop.options.patience and best and epochs_done - best["epoch"] >= loop.options.patience)


def end_epoch(loop: Loop, record: dict, callbacks=()) -> None:
    """Close an epoch: its record in the history and metrics.jsonl, a checkpoint, TensorBoard
    scalars and the callbacks (rank 0)."""
    run, state = loop.run, loop.state
    record["seconds"] = round(time.perf_counter() - loop.t0, 3)
    record["skipped_steps"] = state["skipped"]
    before = run.history[-1].get("skipped_steps", 0) if run.history else 0
    if loop.ctx.main:
        for problem in diagnostics.problems(record, before, steps=loop.steps_per_epoch):
            warnings.warn(problem, diagnostics.DivergenceWarning, stacklevel=2)
    run.history.append(record)
    state.update(epoch=state["epoch"] + 1, step=0, sums={})
    loop.bar.epoch(record)
    if run.dir is not None and loop.ctx.main:
        _rewrite_metrics(run.dir, run.history)  # atomically: a kill leaves the old or the new file
    checkpoint(loop)
    if loop.writer is not None:
        for k, v in record.items():
            if k != "epoch":
                loop.writer.add_scalar(k.replace("_", "/", 1), v, record["epoch"])
        loop.writer.flush()
    if loop.ctx.main:
        for cb in callbacks:
            cb(run, record)


def checkpoint(loop: Loop) -> None:
    """Save the run's checkpoint (rank 0 writes; every rank gives its RNG state)."""
    rng = distributed.gather(distributed.rng_state(loop.ctx), loop.ctx)  # collective: every rank
    if loop.run.dir is not None and loop.ctx.main:
        save_checkpoint(loop.run.dir / "checkpoint.safetensors", loop.model, loop.opt,
                        {**loop.state, "history": loop.run.history, "kernels": linear.choices()},
                        rng, best=loop.best, average=loop.average.state() if loop.average is not None else None)


class _Sums:
    """The sums over the epoch's examples of each per-example term, and their count "n".

    Plain: for each term, sums[k] += v.sum() (two kernels per term and step). Here the terms
    are stacked and summed at once into one vector (three kernels per step, however many
    terms); tests/test_step_fast_paths.py checks the epoch means against the plain computation."""

    def __init__(self, start: dict, device):
        self.device, self.n = device, start.get("n", 0)
        self.keys = tuple(k for k in start if k != "n")
        self.total = torch.tensor([float(start[k]) for k in self.keys], device=device) if self.keys else None

    def add(self, terms: dict, n: int) -> None:
        if self.keys[:len(terms)] != tuple(terms):  # the first step (or other terms): re-key, keeping the sums
            old = self.as_dict()
            self.keys = tuple(terms) + tuple(k for k in old if k not in terms and k != "n")
            self.total = torch.tensor([float(old.get(k, 0.0)) for k in self.keys], device=self.device)
        values = torch.stack([v.detach().float() for v in terms.values()])
        if len(self.keys) == len(terms):
            self.total += values.sum(1)
        else:
            self.total[:len(terms)] += values.sum(1)
        self.n += n

    def add_sums(self, sums: dict, n: int) -> None:
        """Add sums already taken (a dict of numbers over `n` examples: the graphed step's)."""
        merged = {k: v for k, v in self.as_dict().items() if k != "n"}
        for k, v in sums.items():
            merged[k] = merged.get(k, 0.0) + v
        self.keys = tuple(merged)
        self.total = torch.tensor(list(merged.values()), device=self.device) if merged else None
        self.n += n

    def as_dict(self) -> dict:
        out = {} if self.total is None else dict(zip(self.keys, self.total.tolist()))
        return out | ({"n": self.n} if self.n else {})


class _GradNorm:
    """The norm of all gradients, sqrt(sum_p |g_p|^2), for clipping and the non-finite check.

    With `early`, each |g_p| is taken the moment g_p is stored, while it is still in cache
    (`record`: a hook that autograd calls, and the fused step too): 3% faster per training
    step than a pass over all gradients after backward through autograd, 8% with the fused
    step (MLP VAE, batch 100; benchmarks/README.md). The hooks are removed on exit."""

    def __init__(self, parameters: list, early: bool):
        self.parameters, self.early, self.norms, self.hooks = parameters, early, {}, []
        self.index = {p: i for i, p in enumerate(parameters)}

    def record(self, p: torch.Tensor) -> None:
        self.norms[self.index[p]] = torch.linalg.vector_norm(p.grad)

    def clear(self) -> None:
        """Forget the norms recorded so far (of a step that did not complete)."""
        self.norms.clear()

    def __enter__(self):
        if self.early:
            self.hooks = [p.register_post_accumulate_grad_hook(self.record) for p in self.parameters]
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
        if runtime.interrupted:  # a Ctrl-C of the command that an import swallowed
            self.raised = signal.SIGINT
        return self

    def _handle(self, signum, frame):
        if self.raised is not None:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self.raised = signum

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def _guard(skipped: int, consecutive: int, halvings: int, max_skips: int, opt, state: dict, run_dir) -> None:
    """After skipped (non-finite) steps: stop past `max_skips` in all, halve the learning
    rate `halvings` times (the loop asks for one every 10 consecutive skips; kept in the
    trainer state's "lr_scale" too, for a schedule)."""
    epoch = state["epoch"]
    if skipped > max_skips:
        raise TrainingError(
            f"training diverged: {skipped} steps with non-finite loss or gradients (epoch "
            f"{epoch + 1}); lower the learning rate or set clip_grad"
            + (f"; the last good checkpoint is kept in {run_dir}" if run_dir else ""))
    if halvings > 0:
        state["lr_scale"] = state.get("lr_scale", 1.0) * 0.5 ** halvings
        for group in opt.param_groups:
            group["lr"] *= 0.5 ** halvings
        warnings.warn(f"{consecutive} non-finite steps in a row; learning rate halved to "
                      f"{opt.param_groups[0]['lr']:g}")


def _rewrite_metrics(directory: Path, history: list[dict]) -> None:
    """metrics.jsonl holds exactly `history`, written atomically (after every epoch, and on
    resume the epochs of the checkpoint: a kill between writing the metrics and the
    checkpoint would otherwise repeat an epoch)."""
    text = "".join(json.dumps(r) + "\n" for r in history)
    atomic_write(directory / "metrics.jsonl", text.encode())  # a kill leaves old or new


def _tensorboard(directory, enabled: bool):
    if directory is None or not enabled:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        warnings.warn("tensorboard is not installed; metrics go to metrics.jsonl only")
        return None
    return SummaryWriter(str(Path(directory) / "tb"))
