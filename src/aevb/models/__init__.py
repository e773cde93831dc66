"""Models: each combines networks, a latent family, a likelihood, a prior and an objective."""
from .autoencoder import Autoencoder
from .base import MODELS, Model, from_config, load
from .vae import VAE

__all__ = ["MODELS", "Autoencoder", "Model", "VAE", "from_config", "load"]
