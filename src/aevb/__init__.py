"""aevb: variational autoencoders (Auto-Encoding Variational Bayes) for PyTorch.

Conventions: log-likelihoods are summed over pixels and averaged over examples, in nats
per example; the KL weight is `beta` (1 unless set).
"""
import os

# Thread default. Idle OpenMP threads of PyTorch's libgomp spin for ~300,000 iterations
# before sleeping; when another process is busy on a small machine this makes every small
# kernel many times slower (pytorch #3146, #80777), and OMP_WAIT_POLICY=ACTIVE is worse
# still. Fully passive threads (OMP_WAIT_POLICY=PASSIVE) are robust but pay a wake-up on
# every kernel. A short spin is the best of both in our measurements (benchmarks/README.md,
# "Threads"). It only takes effect if set before torch is first imported, and any value the
# user set for OMP_WAIT_POLICY or GOMP_SPINCOUNT wins.
if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
    os.environ["GOMP_SPINCOUNT"] = "1000"

from . import data, distributions, evaluation, models, objectives  # noqa: E402
from .models import VAE, load  # noqa: E402
from .training import Run, train  # noqa: E402

__version__ = "0.1.0"
__all__ = ["VAE", "Run", "data", "distributions", "evaluation", "load", "models", "objectives", "train"]
