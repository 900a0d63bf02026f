from .autoencoder_aligned_kl import AlignedAutoencoderKL, DeterministicLatentDistribution
from .foundation_encoders import FOUNDATION_ENCODERS
from .presets import PRESETS, AlignTokPreset, get_preset


__all__ = [
    "AlignedAutoencoderKL",
    "AlignTokPreset",
    "DeterministicLatentDistribution",
    "FOUNDATION_ENCODERS",
    "PRESETS",
    "get_preset",
]
