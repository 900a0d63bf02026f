"""diffusers pipelines built on AlignTok tokenizers."""

import diffusers

from .pipeline_aligntok_dit import AlignTokDiTPipeline, classifier_free_guidance
from .pipeline_aligntok_flux import (
    AlignTokFluxPipeline,
    latent_image_ids,
    latent_patch_size,
    pack_latents,
    unpack_latents,
)


# `DiffusionPipeline.from_pretrained` looks up model_index.json's `_class_name` in the `diffusers` namespace only.
# Expose our pipelines there (adding a name, never replacing one) so that, after `import diffusers_aligntok`, a saved
# AlignTok pipeline loads through `DiffusionPipeline.from_pretrained` like its components do.
for _pipeline_class in (AlignTokDiTPipeline, AlignTokFluxPipeline):
    if not hasattr(diffusers, _pipeline_class.__name__):
        setattr(diffusers, _pipeline_class.__name__, _pipeline_class)


__all__ = [
    "AlignTokDiTPipeline",
    "AlignTokFluxPipeline",
    "classifier_free_guidance",
    "latent_image_ids",
    "latent_patch_size",
    "pack_latents",
    "unpack_latents",
]
