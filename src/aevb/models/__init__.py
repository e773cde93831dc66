"""Models: each combines networks, a latent family, a likelihood, a prior and an objective."""
from .base import MODELS, Model, from_config, load
from .vae import VAE

__all__ = ["MODELS", "Model", "VAE", "from_config", "load"]
