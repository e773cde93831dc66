"""Priors p(z) as modules, chosen independently of the posterior family (config key `prior`;
default: the posterior family's `default_prior`). Adding one: a `Prior` subclass in its own
file and one entry in `PRIORS` (docs/architecture.md)."""
from __future__ import annotations

from .base import Prior
from .bernoulli_half import BernoulliHalf
from .mixture import MixtureOfGaussians
from .standard_normal import StandardNormal
from .vamp import VampPrior

PRIORS: dict[str, type[Prior]] = {"standard_normal": StandardNormal, "bernoulli_half": BernoulliHalf,
                                  "mog": MixtureOfGaussians, "vamp": VampPrior}


def build_prior(name: str, latent_dim: int, support: str | None = None, **settings) -> Prior:
    """The prior called `name` over `latent_dim` units, given those of `settings` it declares
    (`Prior.settings`); a ValueError if the name is unknown or its support is not `support`
    (the posterior family's)."""
    if name not in PRIORS:
        raise ValueError(f"unknown prior {name!r}; choose one of {sorted(PRIORS)}")
    cls = PRIORS[name]
    if support is not None and cls.support != support:
        raise ValueError(f"prior {name!r} is a distribution over {cls.support} vectors, but the "
                         f"posterior family gives {support} ones; choose a prior over {support} "
                         f"vectors ({', '.join(k for k, c in PRIORS.items() if c.support == support)})")
    return cls(latent_dim, **{k: v for k, v in settings.items() if k in cls.settings})


def prior_name(prior: Prior | None) -> str:
    """The registry name of a prior module ("none" for a model without a prior)."""
    if prior is None:
        return "none"
    return next((k for k, cls in PRIORS.items() if type(prior) is cls), type(prior).__name__)


__all__ = ["PRIORS", "BernoulliHalf", "Prior", "StandardNormal", "VampPrior", "build_prior", "prior_name"]
