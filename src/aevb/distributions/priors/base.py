"""What every prior shares: p(z) as an `nn.Module`, so that it can hold parameters (learned
priors) and follows the model's device and dtype."""
from __future__ import annotations

from torch import nn
from torch.distributions import Distribution


class Prior(nn.Module):
    """p(z) over latent vectors of `latent_dim` units. Calling the module, `prior()`, gives a
    `torch.distributions.Distribution` whose event is one latent vector (`log_prob` is one
    number per example, in nats; `sample((n,))` is (n, latent_dim)).

    A subclass declares:
    - `support`: "real" (z in R^D) or "binary" (z in {0, 1}^D); it must be the posterior
      family's (`aevb.distributions.posteriors`);
    - `settings`: the keyword settings its constructor takes beside `latent_dim`, among those
      a model offers (the VAE: "components", "input_shape", and "encode", its x -> q(z|x),
      for a prior built from the posterior such as a VampPrior); `build_prior` passes only
      the declared ones.
    KL(q(z|x) || p(z)) is analytic when torch.distributions has a closed form registered for
    the pair of types, else estimated by Monte Carlo (`aevb.objectives.kl_method`).
    """

    support = "real"
    settings: tuple[str, ...] = ()

    def __init__(self, latent_dim: int):
        super().__init__()
        self.latent_dim = latent_dim

    def forward(self) -> Distribution:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"latent_dim={self.latent_dim}"
