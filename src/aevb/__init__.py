"""aevb: variational autoencoders (Auto-Encoding Variational Bayes) for PyTorch.

Conventions: log-likelihoods are summed over pixels and averaged over examples, in nats
per example; the KL weight is `beta` (1 unless set).

The submodules and `VAE`, `load`, `Run`, `train` are imported on first use (PEP 562), so
that `import aevb` (and the `aevb` command's start) does not import torch: a Ctrl-C while
torch loads then reaches the command's handler instead of ending in a traceback.
"""
import importlib
import os
import sys

try:
    from . import runtime

    runtime.thread_default()  # before torch is imported: see aevb.runtime
    runtime.malloc_default()
    runtime.set_threads(os.environ.get("AEVB_THREADS", "auto"), source="AEVB_THREADS")
except (KeyboardInterrupt, ValueError) as _e:  # Ctrl-C, or a bad AEVB_THREADS
    if sys.argv[:1] == ["-m"] or os.path.basename(sys.argv[0] if sys.argv else "") == "aevb":
        # the `aevb` command is starting: one line, as for any other failure (a library raises)
        interrupted = isinstance(_e, KeyboardInterrupt)
        sys.stderr.write("aevb: interrupted\n" if interrupted else f"aevb: error: {_e}\n")
        raise SystemExit(130 if interrupted else 2) from None
    raise

__version__ = "0.1.0"
__all__ = ["VAE", "Run", "data", "distributions", "evaluation", "load", "models", "objectives", "train"]

_ATTRIBUTES = {"VAE": "models", "load": "models", "Run": "training", "train": "training"}


def __getattr__(name: str):
    if name in _ATTRIBUTES:
        return getattr(importlib.import_module(f".{_ATTRIBUTES[name]}", __name__), name)
    if not name.startswith("_"):
        try:
            return importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{name}":
                raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
