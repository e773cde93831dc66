"""aevb: variational autoencoders (Auto-Encoding Variational Bayes) for PyTorch.

Conventions: log-likelihoods are summed over pixels and averaged over examples, in nats
per example; the KL weight is `beta` (1 unless set).
"""
import os

# Idle OpenMP threads spin by default; with another busy process on a small machine that
# makes every small matmul many times slower (pytorch #3146, #80777). Passive waiting
# costs nothing measurable when the machine is quiet. Set OMP_WAIT_POLICY to override;
# it must be set before torch is first imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from . import data, distributions, evaluation, models, objectives  # noqa: E402
from .models import VAE, load  # noqa: E402
from .training import Run, train  # noqa: E402

__version__ = "0.1.0"
__all__ = ["VAE", "Run", "data", "distributions", "evaluation", "load", "models", "objectives", "train"]
