"""aevb: variational autoencoders (Auto-Encoding Variational Bayes) for PyTorch.

Conventions: log-likelihoods are summed over pixels and averaged over examples, in nats
per example; the KL weight is `beta` (1 unless set).
"""
import os

from . import runtime

runtime.thread_default()  # before torch is imported: see aevb.runtime
runtime.malloc_default()

from . import data, distributions, evaluation, models, objectives  # noqa: E402
from .models import VAE, load  # noqa: E402
from .training import Run, train  # noqa: E402

runtime.set_threads(os.environ.get("AEVB_THREADS", "auto"), source="AEVB_THREADS")

__version__ = "0.1.0"
__all__ = ["VAE", "Run", "data", "distributions", "evaluation", "load", "models", "objectives", "train"]
