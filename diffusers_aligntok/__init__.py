"""AlignTok image tokenizers for Hugging Face diffusers.

`import diffusers_aligntok` before loading a pipeline whose `model_index.json` names our classes: diffusers resolves
`["diffusers_aligntok", "AlignedAutoencoderKL"]` through this top-level namespace (which therefore exposes
`ModelMixin`), and records that short entry when saving only for libraries listed in its `LOADABLE_CLASSES` table, so
importing the package registers it there (otherwise the full module path would be recorded and break if a module
moved). Heavy optional dependencies (lpips, clean-fid, datasets) are imported only by the training and evaluation
modules that need them.
"""

from diffusers import ModelMixin
from diffusers.pipelines import pipeline_loading_utils


pipeline_loading_utils.LOADABLE_CLASSES.setdefault(
    "diffusers_aligntok", {"ModelMixin": ["save_pretrained", "from_pretrained"]}
)

from .models import (
    DIT_PRESETS,
    FOUNDATION_ENCODERS,
    PRESETS,
    AlignedAutoencoderKL,
    AlignTokPreset,
    DeterministicLatentDistribution,
    LightningDiTTransformer2DModel,
    get_preset,
)
from .pipelines import AlignTokDiTPipeline, AlignTokFluxPipeline


__version__ = "0.1.0.dev0"

__all__ = [
    "AlignedAutoencoderKL",
    "AlignTokDiTPipeline",
    "AlignTokFluxPipeline",
    "AlignTokPreset",
    "DeterministicLatentDistribution",
    "DIT_PRESETS",
    "FOUNDATION_ENCODERS",
    "LightningDiTTransformer2DModel",
    "ModelMixin",
    "PRESETS",
    "get_preset",
]
