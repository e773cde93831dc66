"""Models: each combines networks, a latent family, a likelihood, a prior and an objective."""
from .autoencoder import Autoencoder
from .base import MODELS, Model, from_config, load
from .hvae import HVAE
from .vae import VAE

__all__ = ["MODELS", "Autoencoder", "HVAE", "Model", "VAE", "from_config", "load"]
