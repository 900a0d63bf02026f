"""AlignTok image tokenizers for Hugging Face diffusers.

`import diffusers_aligntok` before loading a pipeline whose `model_index.json` names `AlignedAutoencoderKL`:
diffusers resolves the `["diffusers_aligntok", "AlignedAutoencoderKL"]` entry through this top-level namespace, which
therefore also exposes `ModelMixin`. Heavy optional dependencies (lpips, clean-fid, datasets) are imported only by
the training and evaluation modules that need them.
"""

from diffusers import ModelMixin

from .models import (
    FOUNDATION_ENCODERS,
    PRESETS,
    AlignedAutoencoderKL,
    AlignTokPreset,
    DeterministicLatentDistribution,
    DIT_PRESETS,
    LightningDiTTransformer2DModel,
    get_preset,
)
from .pipelines import AlignTokDiTPipeline


__version__ = "0.1.0.dev0"

__all__ = [
    "AlignedAutoencoderKL",
    "AlignTokDiTPipeline",
    "AlignTokPreset",
    "DeterministicLatentDistribution",
    "DIT_PRESETS",
    "FOUNDATION_ENCODERS",
    "LightningDiTTransformer2DModel",
    "ModelMixin",
    "PRESETS",
    "get_preset",
]
