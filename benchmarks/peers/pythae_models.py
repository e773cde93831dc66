"""pythae 0.1.2's VAE, IWAE, VAMP and VAE_IAF with aevb's MLP (784-400-400-20, ReLU,
Bernoulli decoder), and their trained weights as aevb models, so that aevb's own estimators
(`aevb.evaluation.evaluate`: importance-sampled log p(x), test ELBO, active units) score them.

Runs in pythae's virtual environment (benchmarks/README.md) with aevb importable
(PYTHONPATH=src). Used by benchmarks/quality.py and tests/test_bench_quality.py.

- VAE, IWAE: the weights are copied into an `aevb.VAE` of the same architecture (pythae's
  two encoder heads, mean and log-variance, stacked into aevb's one head in that order;
  the decoder's last layer gives Bernoulli logits, pythae's sigmoid is aevb's likelihood).
- VAMP: the same, with `prior="vamp"` and the pseudo-inputs copied: pythae's are
  hardtanh(Linear(I_C)) = hardtanh(W^T + b), aevb's hardtanh(u), so u = W^T + b.
- VAE_IAF: aevb has no flow posterior of pythae's shape, so `IAFAdapter`, an aevb VAE whose
  `encode` returns `FlowPosterior`: z0 ~ N(mu, diag(var)), z = pythae's flow.inverse(z0),
  log q(z|x) = log N(z0; mu, var) - log|det dz/dz0| (pythae's own convention, its
  loss_function), remembered for the samples it drew (the flow is not inverted).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.distributions import Distribution, Normal, constraints

KINDS = ("VAE", "IWAE", "VAMP", "VAE_IAF")


def build(kind: str, latent_dim: int = 20, hidden: int = 400, *, iwae_k: int = 5,
          components: int = 50, flow_steps: int = 2):
    """A pythae model of `kind` with the custom encoder / decoder (BCE reconstruction); the
    IAF's MADEs have 2 hidden layers of 128 units (aevb's `flow_hidden` default; pythae's
    default is 3)."""
    from pythae import models
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseEncoder

    class Encoder(BaseEncoder):
        def __init__(self):
            BaseEncoder.__init__(self)
            self.net = nn.Sequential(nn.Linear(784, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
            self.embedding = nn.Linear(hidden, latent_dim)
            self.log_var = nn.Linear(hidden, latent_dim)

        def forward(self, x):
            h = self.net(x.reshape(x.shape[0], -1))
            return ModelOutput(embedding=self.embedding(h), log_covariance=self.log_var(h))

    class Decoder(BaseDecoder):
        def __init__(self):
            BaseDecoder.__init__(self)
            self.net = nn.Sequential(nn.Linear(latent_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden),
                                     nn.ReLU(), nn.Linear(hidden, 784), nn.Sigmoid())

        def forward(self, z):
            return ModelOutput(reconstruction=self.net(z).reshape(-1, 1, 28, 28))

    common = dict(input_dim=(1, 28, 28), latent_dim=latent_dim, reconstruction_loss="bce")
    config = {"VAE": lambda: models.VAEConfig(**common),
              "IWAE": lambda: models.IWAEConfig(**common, number_samples=iwae_k),
              "VAMP": lambda: models.VAMPConfig(**common, number_components=components),
              "VAE_IAF": lambda: models.VAE_IAF_Config(**common, n_made_blocks=flow_steps,
                                                             n_hidden_in_made=2, hidden_size=128)}[kind]()
    return getattr(models, kind)(model_config=config, encoder=Encoder(), decoder=Decoder())


def _copy_nets(src, dst) -> None:
    """pythae encoder / decoder weights into an aevb VAE's MLP (same layer order)."""
    enc, dec = dst.encoder.net, dst.decoder.net
    pe, pd = src.encoder, src.decoder.net
    with torch.no_grad():
        for d, s in ((enc[0], pe.net[0]), (enc[2], pe.net[2]), (dec[0], pd[0]), (dec[2], pd[2]), (dec[4], pd[4])):
            d.weight.copy_(s.weight)
            d.bias.copy_(s.bias)
        enc[4].weight.copy_(torch.cat([pe.embedding.weight, pe.log_var.weight]))
        enc[4].bias.copy_(torch.cat([pe.embedding.bias, pe.log_var.bias]))


def as_aevb(model, kind: str):
    """The trained pythae `model` as an aevb model in eval mode (see the module docstring)."""
    from aevb import VAE
    latent_dim = model.model_config.latent_dim
    if kind == "VAE_IAF":
        m = IAFAdapter(model.iaf_flow, latent_dim)
    elif kind == "VAMP":
        m = VAE((1, 28, 28), latent_dim, hidden=(400, 400), prior="vamp",
                prior_components=model.number_components)
        lin = model.pseudo_inputs[0]
        with torch.no_grad():
            m.prior.pseudo_inputs.copy_((lin.weight.T + lin.bias).reshape(m.prior.pseudo_inputs.shape))
    else:
        m = VAE((1, 28, 28), latent_dim, hidden=(400, 400))
    _copy_nets(model, m)
    if kind == "IWAE":
        m.config.update(objective="iwae", iwae_k=model.n_samples)  # what it was trained with (not used here)
    return m.eval()


class FlowPosterior(Distribution):
    """q(z|x) of pythae's VAE_IAF: z = flow.inverse(z0), z0 ~ N(mu, diag(exp(logvar)));
    `log_prob` is known at the samples this object drew (the last call of `rsample`)."""

    arg_constraints = {}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, mu, logvar, flow):
        self.base, self.flow = Normal(mu, (0.5 * logvar).exp(), validate_args=False), flow
        self._z = self._log_q = None
        super().__init__(mu.shape[:-1], mu.shape[-1:], validate_args=False)

    def rsample(self, sample_shape=torch.Size()):
        z0 = self.base.rsample(sample_shape)
        d = z0.shape[-1]
        out = self.flow.inverse(z0.reshape(-1, d))
        z = out.out.reshape(z0.shape)
        self._z = z
        self._log_q = self.base.log_prob(z0).sum(-1) - out.log_abs_det_jac.reshape(z0.shape[:-1])
        return z

    def sample(self, sample_shape=torch.Size()):
        with torch.no_grad():
            return self.rsample(sample_shape)

    def log_prob(self, z):
        if z is not self._z:
            raise NotImplementedError("FlowPosterior.log_prob is known only at its own last samples")
        return self._log_q

    @property
    def mean(self):
        """E_q[z] by Monte Carlo (256 samples): the flow has no closed-form mean."""
        return self.sample((256,)).mean(0)


def _iaf_adapter_class():
    from aevb import VAE

    class IAFAdapter(VAE):
        """An aevb VAE (784-400-400-20, standard normal prior) whose posterior is pythae's
        IAF flow on top of the encoder's diagonal Gaussian; KL by Monte Carlo."""

        def __init__(self, flow, latent_dim: int):
            super().__init__((1, 28, 28), latent_dim, hidden=(400, 400), kl="mc")
            self.flow = flow

        def encode(self, x, y=None):
            mu, logvar = self.encoder(x, None).chunk(2, dim=-1)
            return FlowPosterior(mu, logvar, self.flow)

    return IAFAdapter


def IAFAdapter(flow, latent_dim: int):  # noqa: N802 - a class made on first use (aevb imported late)
    return _iaf_adapter_class()(flow, latent_dim)


@torch.no_grad()
def own_loss(model, x: torch.Tensor, batch_size: int = 100, seed: int = 0) -> torch.Tensor:
    """pythae's own loss (its `forward(...).loss`, a batch mean: for VAE, VAMP and VAE_IAF
    the negative one-sample ELBO) on each batch of `batch_size` images of x (1: per image),
    in eval mode, noise from `seed`; a float64 tensor of the batch means."""
    from pythae.data.datasets import DatasetOutput
    model.eval()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torch.tensor([float(model(DatasetOutput(data=x[i:i + batch_size])).loss)
                             for i in range(0, len(x), batch_size)], dtype=torch.float64)
