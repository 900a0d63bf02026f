from .autoencoder_aligned_kl import AlignedAutoencoderKL, DeterministicLatentDistribution
from .foundation_encoders import FOUNDATION_ENCODERS
from .presets import PRESETS, AlignTokPreset, get_preset
from .transformer_lightning_dit import DIT_PRESETS, LightningDiTTransformer2DModel


__all__ = [
    "AlignedAutoencoderKL",
    "AlignTokPreset",
    "DeterministicLatentDistribution",
    "DIT_PRESETS",
    "FOUNDATION_ENCODERS",
    "LightningDiTTransformer2DModel",
    "PRESETS",
    "get_preset",
]
