"""Moved to `diffusers_aligntok.training.dit.latent_cache`; this name stays for the evaluation and benchmark imports."""

from .dit.latent_cache import *  # noqa: F403
from .dit.latent_cache import __all__  # noqa: F401
