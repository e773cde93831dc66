"""aevb: variational autoencoders (Auto-Encoding Variational Bayes) for PyTorch.

Conventions: log-likelihoods are summed over pixels and averaged over examples, in nats
per example; the KL weight is `beta` (1 unless set).

The submodules and `VAE`, `load`, `train`, `Run` are imported on first use (PEP 562), so
that `import aevb` (and `aevb --help`) does not import torch: `aevb.report.write_report`,
`from aevb import VAE` and `import aevb.plots` all work as before.
"""
import importlib
import importlib.util
import os

from . import runtime

runtime.thread_default()  # before torch is imported: see aevb.runtime
runtime.malloc_default()
runtime.set_threads(os.environ.get("AEVB_THREADS", "auto"), source="AEVB_THREADS")

__version__ = "0.1.0"
__all__ = ["VAE", "Run", "data", "distributions", "evaluation", "load", "models", "objectives", "train"]

_NAMES = {"VAE": "models", "load": "models", "Run": "training", "train": "training"}


def __getattr__(name: str):
    """`aevb.VAE`, `aevb.train`, ... and any submodule (`aevb.report`), imported on first use."""
    if name in _NAMES:
        return getattr(importlib.import_module(f".{_NAMES[name]}", __name__), name)
    if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'aevb' has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *__all__})
