"""The inverse autoregressive flow posterior (Kingma et al. 2016, "Improved variational
inference with inverse autoregressive flow").

The encoder gives a diagonal Gaussian q0(z|x) = N(mu, diag(sigma^2)) and, with `context`,
a context h; T steps then move a sample z_0 = mu + sigma eps, step t with a MADE
(`aevb.nets.made`, the context added to its first hidden layer) giving
[m_t, s_t] = MADE_t(z_{t-1}, h), in one of two forms (`FORMS`):

    affine:  z_t = exp(s_t) * z_{t-1} + m_t,                        log-det_t = sum_j s_tj
    gated:   z_t = sigmoid(s_t) * z_{t-1} + (1 - sigmoid(s_t)) * m_t,  log-det_t = sum_j log sigmoid(s_tj)

and log q(z_T|x) = log q0(z_0|x) - sum_t log-det_t, the log |det dz_T / dz_0| (each step's
Jacobian is triangular, its diagonal exp(s_t) or sigmoid(s_t)). The order of the units is
reversed from one step to the next. The gated form is the paper's "numerically stable"
one: a step can only shrink z towards m. The affine form (pythae's VAE_IAF, and the
paper's eq. 10 with sigma = exp(s)) can also stretch; at equal training time on MNIST it
reached ~2 nats more log p(x) over three seeds (benchmarks/README.md), so it is the default.
The MADEs start at zero output weights, m = 0 and s = the form's `start` (affine 0: the
identity; gated 2, Pyro's `sigmoid_bias`: the scaling z -> sigmoid(2) z), so an untrained
flow leaves q exactly a diagonal Gaussian.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Distribution, constraints

from ..nets.made import MADE
from .posteriors import DiagonalNormal, sample_with_log_prob


class AffineStep:
    """z' = exp(s) z + m; starts at s = 0, the identity."""
    start = 0.0

    @staticmethod
    def forward(z: Tensor, m: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
        return z * s.exp() + m, s.sum(-1)

    @staticmethod
    def inverse(z: Tensor, m: Tensor, s: Tensor) -> Tensor:
        return (z - m) * (-s).exp()


class GatedStep:
    """z' = sigmoid(s) z + (1 - sigmoid(s)) m; starts at s = 2: sigmoid(2) = 0.88 (Pyro's
    stable IAF uses the same)."""
    start = 2.0

    @staticmethod
    def forward(z: Tensor, m: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
        gate = torch.sigmoid(s)
        return gate * z + (1 - gate) * m, F.logsigmoid(s).sum(-1)

    @staticmethod
    def inverse(z: Tensor, m: Tensor, s: Tensor) -> Tensor:
        gate = torch.sigmoid(s)
        return (z - (1 - gate) * m) / gate


#: the step forms, by their config name (`flow_form`)
FORMS = {"affine": AffineStep, "gated": GatedStep}


class IAFNormal(Distribution):
    """q(z|x) of an inverse autoregressive flow: the base diagonal Gaussian `base`, then the
    `steps` (MADEs) with the context `context` (N, C), each step of the form `form` (a
    `FORMS` value). Event: one latent vector.

    - `rsample_and_log_prob(shape)`: a reparameterized sample and its log density, one pass
      through the steps (what the objectives use, through `sample_with_log_prob`);
    - `log_prob(z)` at any z: inverts the flow, D passes through each step's MADE (unit i
      of z_{t-1} needs units before i), exact but D times slower than the sample's density;
    - `mean`: NOT E_q[z], which has no closed form: the flow applied to the base mean with
      zero noise (z_0 = mu), a deterministic code (`embed`, `reconstruct` use it).
    KL(q || p) has no closed form: Monte Carlo (no KL is registered for this type)."""

    arg_constraints: dict = {}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, base: DiagonalNormal, context: Tensor | None, steps: nn.ModuleList,
                 form: type = AffineStep):
        self.base, self.context, self.steps, self.form = base, context, steps, form
        super().__init__(base.batch_shape, base.event_shape, validate_args=False)

    def flow(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """(z_T, log |det dz_T / dz_0|) for z_0 = `z` (..., D), the log-det per example."""
        log_det = torch.zeros(z.shape[:-1], dtype=z.dtype, device=z.device)
        for step in self.steps:
            z, step_log_det = self.form.forward(z, *step(z, self.context))
            log_det = log_det + step_log_det
        return z, log_det

    def rsample_and_log_prob(self, sample_shape=torch.Size()) -> tuple[Tensor, Tensor]:
        z0, log_q0 = sample_with_log_prob(self.base, sample_shape)
        z, log_det = self.flow(z0)
        return z, log_q0 - log_det

    def rsample(self, sample_shape=torch.Size()) -> Tensor:
        return self.rsample_and_log_prob(sample_shape)[0]

    def sample(self, sample_shape=torch.Size()) -> Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape)

    def invert(self, z: Tensor) -> Tensor:
        """z_0 with flow(z_0) = z: each step solved by D fixed-point sweeps
        z' <- form.inverse(z, MADE(z')), exact after D sweeps because the outputs of unit i
        depend only on the units before it (the first sweep fixes the first unit in the
        order, the second the next, ...)."""
        for step in reversed(self.steps):
            prev = z
            for _ in range(z.shape[-1]):
                prev = self.form.inverse(z, *step(prev, self.context))
            z = prev
        return z

    def log_prob(self, value: Tensor) -> Tensor:
        z0 = self.invert(value)
        return self.base.log_prob(z0) - self.flow(z0)[1]

    @property
    def mean(self) -> Tensor:
        return self.flow(self.base.base_dist.loc)[0]


@sample_with_log_prob.register
def _iaf_sample(q: IAFNormal, sample_shape=torch.Size(), reparameterized: bool = True):
    """One pass through the flow; only a plain sample whose log density must carry the
    score function's gradient (log q(z|x) differentiated at a fixed z) needs the inversion."""
    if reparameterized or not torch.is_grad_enabled():
        z, log_q = q.rsample_and_log_prob(sample_shape)
        return (z, log_q) if reparameterized else (z.detach(), log_q)
    z = q.sample(sample_shape)
    return z, q.log_prob(z)


class InverseAutoregressiveFlow(nn.Module):
    """The posterior family `posterior: iaf`: the encoder's output (N, 2 D + C) is read as
    mu, log sigma^2 (D each) and, with `context`, the context h (C = the MADEs' first hidden
    size; else C = 0), and `steps` MADE steps with hidden sizes `hidden` follow (module
    docstring), each step of the form `form` ("affine" or "gated"). Without a context each
    MADE sees z only: in 60 s of MNIST training (offline split, MLP 400-400-20, 2 steps)
    log p(x) was 3.1 nats better than with it
    (benchmarks/README.md), so the context is off by default. A module: the MADEs are the
    model's parameters. Declares what every family declares (`aevb.distributions.posteriors`),
    plus `context_dim` and `base`, q0 before the flow."""

    params_per_dim = 2
    reparameterized = True
    support = "real"
    default_prior = "standard_normal"

    def __init__(self, latent_dim: int, steps: int = 2, hidden=(128, 128), context: bool = False,
                 form: str = "affine"):
        super().__init__()
        if form not in FORMS:
            raise ValueError(f"flow_form must be one of {', '.join(FORMS)}, got {form!r}")
        self.form = FORMS[form]
        hidden = [int(h) for h in hidden]
        if not (isinstance(steps, int) and steps >= 1):
            raise ValueError(f"flow_steps must be an integer >= 1, got {steps!r}")
        if not hidden or min(hidden) < 1:
            raise ValueError(f"flow_hidden must be one or more layer sizes >= 1, got {hidden}")
        self.latent_dim, self.context_dim = latent_dim, hidden[0] if context else 0
        order = torch.arange(latent_dim)
        self.steps = nn.ModuleList(MADE(order if t % 2 == 0 else order.flip(0), hidden, self.context_dim,
                                        self.form.start) for t in range(steps))

    def base(self, out: Tensor) -> DiagonalNormal:
        mu, logvar = out[..., :2 * self.latent_dim].chunk(2, dim=-1)
        return DiagonalNormal(mu, logvar)

    def forward(self, out: Tensor) -> IAFNormal:
        return IAFNormal(self.base(out), out[..., 2 * self.latent_dim:] if self.context_dim else None, self.steps,
                         self.form)
