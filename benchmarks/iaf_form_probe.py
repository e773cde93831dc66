"""A diagnostic, not a product path: quality.py's aevb IAF entry (300 s, the held-out
selection, K=5000 on 5,000 images) with pythae's flow form patched into aevb's classes for
this process only: affine steps z * exp(s) + m (log-det sum s), ReLU between the MADE's
layers, and PyTorch's default initialization of its output layer (aevb's flow is the gated
form with ELU and a zero-initialized output). It tells the flow's form apart from aevb's
training in the IAF pair's gap (benchmarks/README.md, "Seeds").

    python benchmarks/iaf_form_probe.py SEED

The form should become a real option of `posterior: iaf` (a config key) if it holds up;
until then this script is how the numbers in the README were made."""
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality  # noqa: E402
from aevb.distributions import iaf  # noqa: E402
from aevb.nets import made  # noqa: E402


def made_forward(self, z, context=None):
    a = self.hidden[0](z)
    for layer in self.hidden[1:]:
        a = layer(F.relu(a))
    return self.out(F.relu(a)).chunk(2, dim=-1)
made.MADE.forward = made_forward
_init = made.MADE.__init__
def made_init(self, *a, **kw):
    _init(self, *a, **kw)
    self.out.reset_parameters()  # default init, not zero
made.MADE.__init__ = made_init

def flow(self, z):
    log_det = torch.zeros(z.shape[:-1], dtype=z.dtype, device=z.device)
    for step in self.steps:
        m, s = step(z, self.context)
        z = z * s.exp() + m
        log_det = log_det + s.sum(-1)
    return z, log_det
iaf.IAFNormal.flow = flow

seed = int(sys.argv[1])
spec = {"settings": {"posterior": "iaf"}, "budget": 300.0, "k": 5000, "eval_n": 5000, "components": 50, "flow_steps": 2,
        "rows": 2000, "validation": 1000, "seed": seed, "memory_gb": 0, "data_dir": str(quality.DATA_DIR), "pythae_python": "", "probe": 0}
r = quality.w_aevb(spec)
print(json.dumps({k: r[k] for k in ("log_px", "log_px_stderr", "elbo", "epochs", "best_epoch", "active_units")}))
