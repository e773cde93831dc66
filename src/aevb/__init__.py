"""aevb: variational autoencoders (Auto-Encoding Variational Bayes) for PyTorch.

Conventions: log-likelihoods are summed over pixels and averaged over examples, in nats
per example; the KL weight is `beta` (1 unless set).

Importing aevb changes nothing in the process (no environment variable, thread count,
allocator or torch.distributions setting): the names below are imported when first used,
and the speed settings of `aevb.runtime` apply only to aevb's own work.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"
_NAMES = {"VAE": ".models", "HVAE": ".models", "load": ".models", "Run": ".training", "train": ".training"}
_SUBMODULES = ("anomaly", "checkpoint", "cli", "config", "data", "distributed", "distributions",
               "evaluation", "imputation", "models", "nets", "objectives", "optim", "plots",
               "report", "runs", "runtime", "samplers", "serialization", "sweep", "training")
__all__ = ["VAE", "HVAE", "Run", "data", "distributions", "evaluation", "load", "models", "objectives", "train"]


def __getattr__(name: str):
    if name in _NAMES:
        return getattr(importlib.import_module(_NAMES[name], __name__), name)
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'aevb' has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *_NAMES, *_SUBMODULES})
