"""Devices and many processes. Under `torchrun` (which sets RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR, MASTER_PORT) the trainer joins a process group: NCCL on CUDA, gloo on CPU.
Each rank trains on a disjoint shard of every global batch, gradients are averaged by
DistributedDataParallel, metrics are summed across ranks, and only rank 0 writes files."""
from __future__ import annotations

import atexit
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Context:
    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        """Whether this process writes files and prints (rank 0)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def pick_device(name: str | None = "auto", local_rank: int = 0) -> torch.device:
    """`auto`: CUDA if present (the local rank's GPU), else CPU; or an explicit torch device."""
    if name in (None, "auto"):
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    device = parse_device(name, trainable=True)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but no CUDA GPU is available; use --device cpu")
    if device.type == "cuda" and 0 < torch.cuda.device_count() <= (device.index or 0):
        raise ValueError(f"device {name!r} asked for, but there are {torch.cuda.device_count()} CUDA GPUs; "
                         "use --device cuda:0 or auto")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {name!r} asked for, but MPS (Apple GPU) is not available here; use --device cpu")
    return device


TRAINABLE = ("cpu", "cuda", "mps")  # device types aevb trains on (not meta, xla, ...)


def parse_device(name: str, trainable: bool = False) -> torch.device:
    """torch.device(name), or a ValueError that says what a device is named like; with
    `trainable`, only the device types in TRAINABLE."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        device = None
    if device is None or (trainable and device.type not in TRAINABLE):
        raise ValueError(f"unknown device {str(name)[:40]!r}; use auto, cpu, cuda, cuda:N or mps")
    return device


def setup(device: str | None = "auto") -> Context:
    """Join the process group when launched by torchrun; a plain single process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device, local)
    if world > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
        # leave the group before the interpreter tears down: a gloo group destroyed at
        # process exit can abort with "terminate called without an active exception"
        atexit.register(_leave)
    if dist.is_initialized():
        return Context(dist.get_rank(), dist.get_world_size(), dev)
    return Context(0, 1, dev)


def _leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_sum(values: dict, ctx: Context) -> dict:
    """Sum a dict of numbers over ranks (one collective)."""
    if not ctx.distributed or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64,
                     device=ctx.device if ctx.device.type == "cuda" else "cpu")
    dist.all_reduce(t)
    return dict(zip(keys, t.tolist()))


def rng_state(ctx: Context) -> torch.Tensor:
    """This process's RNG state: the CPU generator's, and the GPU's when training on one."""
    state = torch.get_rng_state()
    if ctx.device.type == "cuda":
        state = torch.cat([state, torch.cuda.get_rng_state(ctx.device)])
    return state


def set_rng_state(state: torch.Tensor, ctx: Context) -> None:
    n = torch.get_rng_state().numel()
    torch.set_rng_state(state[:n].clone())
    if ctx.device.type == "cuda" and state.numel() > n:
        torch.cuda.set_rng_state(state[n:].clone(), ctx.device)


def gather(t: torch.Tensor, ctx: Context) -> list[torch.Tensor]:
    """A same-shaped tensor from every rank (e.g. RNG states for a checkpoint), on every rank."""
    if not ctx.distributed:
        return [t]
    dev = ctx.device if ctx.device.type == "cuda" else torch.device("cpu")
    out = [torch.empty_like(t, device=dev) for _ in range(ctx.world_size)]
    dist.all_gather(out, t.to(dev))
    return [o.cpu() for o in out]


def any_rank(flag: bool, ctx: Context) -> bool:
    """True on every rank if `flag` is true on any rank (so that all stop at the same step)."""
    if not ctx.distributed:
        return flag
    t = torch.tensor([float(flag)], device=ctx.device if ctx.device.type == "cuda" else "cpu")
    dist.all_reduce(t)
    return bool(t.item() > 0)


def barrier(ctx: Context) -> None:
    if ctx.distributed:
        dist.barrier()
