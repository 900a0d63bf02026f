"""diffusers pipelines built on AlignTok tokenizers."""

import diffusers

from .pipeline_aligntok_dit import AlignTokDiTPipeline, classifier_free_guidance


# `DiffusionPipeline.from_pretrained` looks up model_index.json's `_class_name` in the `diffusers` namespace only.
# Expose our pipeline there (adding a name, never replacing one) so that, after `import diffusers_aligntok`, a saved
# AlignTok pipeline loads through `DiffusionPipeline.from_pretrained` like its components do.
if not hasattr(diffusers, AlignTokDiTPipeline.__name__):
    setattr(diffusers, AlignTokDiTPipeline.__name__, AlignTokDiTPipeline)


__all__ = ["AlignTokDiTPipeline", "classifier_free_guidance"]
