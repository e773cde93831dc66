"""The optimizers and numeric precisions training can use (config keys `optimizer`,
`precision`), kept apart from the loop so that the config can check a name without
importing training."""
from __future__ import annotations

import torch

PRECISIONS = ("fp32", "bf16", "fp16")
OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "rmsprop": torch.optim.RMSprop,
              "adagrad": torch.optim.Adagrad, "sgd": torch.optim.SGD}


def make_optimizer(name: str, params, lr: float) -> torch.optim.Optimizer:
    """Adam / AdamW use the fused kernel (one pass over the parameters per step; measured
    faster on CPU, benchmarks/README.md), the others the multi-tensor (foreach) one."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {sorted(OPTIMIZERS)}")
    kw = {"fused": True} if name in ("adam", "adamw") else {"foreach": True}
    return OPTIMIZERS[name](params, lr=lr, **kw)
