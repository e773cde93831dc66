"""Training checkpoints: one safetensors file with everything needed to resume a run
exactly (model weights, optimizer state, the RNG state of every rank) and, as JSON
metadata, the model config and the trainer's state. Written atomically; refused with a
one-line `CheckpointError` naming the file when damaged, so that resuming never fails
half-way or continues from NaN weights. Checkpoints of earlier aevb versions load: their
model configs are upgraded (`aevb.models.base.upgrade_config`) before they are compared."""
from __future__ import annotations

import math
from pathlib import Path

import torch

from . import distributed
from .models.base import load_state, upgrade_config
from .nets import linear
from .serialization import CheckpointError, load_tensors, save_tensors


class TrainingError(RuntimeError):
    """Training cannot start or go on; the message says why and what to do."""


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


def save_checkpoint(path: Path, model, opt, trainer_state: dict, rng_states=None, best: dict | None = None,
                    average: dict | None = None) -> None:
    """Everything needed to resume, in one safetensors file written atomically. `rng_states`:
    one RNG state per rank (default: this process's CPU RNG); `best`: the weights of the
    best epoch (`train(keep_best=True)`), kept as "best.*"; `average`: the averaged
    parameters (`train(ema=)`), "ema.*". `aevb.models.load` loads best.*, else ema.*, else model.*."""
    if not all(torch.isfinite(p).all() for p in model.parameters()):
        raise TrainingError("refusing to write a checkpoint with non-finite weights; "
                            f"the last good one is kept at {path}")
    opt_tensors, opt_meta = _optimizer_tensors(opt)
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    tensors.update(opt_tensors)
    tensors.update({f"best.{k}": v for k, v in (best or {}).items()})
    tensors.update({f"ema.{k}": v for k, v in (average or {}).items()})
    for i, st in enumerate(rng_states or [torch.get_rng_state()]):
        tensors[f"rng.{i}"] = st
    meta = {"model_config": model.full_config(), "trainer": trainer_state, "optimizer": opt_meta}
    try:
        save_tensors(path, tensors, meta)
    except OSError as e:  # disk full, quota, I/O error: atomic_write kept the previous file
        raise TrainingError(f"cannot write checkpoint {path} ({e.strerror or e}); the previous "
                            "checkpoint is kept; free some space and continue with --resume") from None


def load_checkpoint(path: Path, model, opt, ctx: distributed.Context | None = None) -> dict:
    """Restore `model`, `opt` and this rank's RNG from checkpoint `path`; returns the
    trainer state (epoch, step, sums, history, ...; "best_weights" and "average_weights" if
    it holds them)."""
    ctx = ctx or distributed.Context()
    tensors, meta = load_tensors(path)
    if "trainer" not in meta:
        raise CheckpointError(f"{path}: not a training checkpoint written by aevb")
    if upgrade_config(meta.get("model_config")) != model.full_config():
        raise CheckpointError(f"{path}: checkpoint was made for model {meta.get('model_config')}, "
                              f"not for {model.full_config()}; use the same config to resume")
    check_checkpoint(path, tensors, meta, opt)  # a damaged file -> CheckpointError
    load_state(model, {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, path)
    _restore_optimizer(opt, tensors, meta["optimizer"])
    states = [tensors[k] for k in sorted((k for k in tensors if k.startswith("rng.")),
                                         key=lambda k: int(k.split(".")[1]))]
    distributed.set_rng_state(states[ctx.rank % len(states)], ctx)
    best = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")}
    average = {k[4:]: v for k, v in tensors.items() if k.startswith("ema.")}
    return {**meta["trainer"], **({"best_weights": best} if best else {}),
            **({"average_weights": average} if average else {})}


# ----------------------------------------------------------------------------- damage checks
def _damaged(path, why: str):
    raise CheckpointError(f"{path}: damaged checkpoint ({why}); restore a good copy or "
                          "start again with --overwrite")


def check_checkpoint(path, tensors: dict, meta: dict, opt) -> None:
    """Refuse, with a `CheckpointError` naming the file, a checkpoint whose trainer state,
    optimizer state or RNG state is malformed or non-finite (a damaged file that still parses
    as safetensors)."""
    trainer, optim = meta.get("trainer"), meta.get("optimizer")
    if not isinstance(trainer, dict) or not isinstance(optim, dict):
        _damaged(path, "no trainer or optimizer state")
    _check_trainer(path, trainer)
    params = [p for g in opt.param_groups for p in g["params"]]
    _check_optimizer(path, tensors, optim, opt, params)
    _check_tensors(path, tensors, params)


def _check_trainer(path, trainer: dict) -> None:
    def count(v):
        return isinstance(v, int) and not isinstance(v, bool) and v >= 0

    for k in ("epoch", "step", "global_step", "skipped"):
        if not count(trainer.get(k)):
            _damaged(path, f"trainer state {k!r} is {trainer.get(k)!r}")
    sums, history = trainer.get("sums"), trainer.get("history")
    if not isinstance(sums, dict) or not all(isinstance(v, (int, float)) for v in sums.values()):
        _damaged(path, "trainer state 'sums' is not a dict of numbers")
    if not isinstance(history, list) or not all(isinstance(r, dict) for r in history):
        _damaged(path, "trainer state 'history' is not a list of records")
    if not linear.are_choices(trainer.get("kernels", {})):  # absent before 2026-12-01
        _damaged(path, "trainer state 'kernels' is not a dict of ROWSxINxOUT: true/false")


def _check_optimizer(path, tensors: dict, optim: dict, opt, params: list) -> None:
    groups, scalars = optim.get("param_groups"), optim.get("scalars")
    if not (isinstance(groups, list) and len(groups) == len(opt.param_groups) and all(
            isinstance(g, dict) and set(g) == set(o) and isinstance(g["params"], list)
            and len(g["params"]) == len(o["params"]) for g, o in zip(groups, opt.param_groups))):
        _damaged(path, "optimizer parameter groups do not match this optimizer")
    if not all(isinstance(g["lr"], (int, float)) and 0 < g["lr"] < math.inf for g in groups):
        _damaged(path, "optimizer learning rate is not a positive number")
    if not isinstance(scalars, dict) or not all(
            k.split(".", 1)[0].isdigit() and "." in k and int(k.split(".", 1)[0]) < len(params)
            for k in scalars):
        _damaged(path, "optimizer scalars are malformed")
    keys: dict[str, set] = {}  # parameter id -> the names of its optimizer state
    for k in [k[6:] for k in tensors if k.startswith("optim.")] + list(scalars):
        keys.setdefault(k.split(".", 1)[0], set()).add(k.split(".", 1)[-1])
    if len({frozenset(v) for v in keys.values()}) > 1 or len(keys) not in (0, len(params)):
        _damaged(path, "optimizer state is incomplete")


def _check_tensors(path, tensors: dict, params: list) -> None:
    rng = [k for k in tensors if k.startswith("rng.")]
    if not rng or not (rng == ["rng.torch"] or all(k[4:].isdigit() for k in rng)):
        _damaged(path, "no RNG state")
    n_rng = torch.get_rng_state().numel()
    for key, v in tensors.items():
        if key.startswith("rng.") and (v.dtype != torch.uint8 or v.ndim != 1 or v.numel() < n_rng):
            _damaged(path, f"{key} is not an RNG state")
        if key.startswith("optim."):
            parts = key.split(".", 2)
            if len(parts) != 3 or not parts[1].isdigit() or int(parts[1]) >= len(params) or (
                    v.ndim and v.shape != params[int(parts[1])].shape):
                _damaged(path, f"{key} does not fit this model's parameters")
        if (key.startswith(("optim.", "model.", "best.", "ema.")) and v.is_floating_point()
                and not bool(torch.isfinite(v).all())):
            _damaged(path, f"{key} holds non-finite values")
