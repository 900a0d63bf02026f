"""Converters from released checkpoints of other code bases into this package's diffusers models and pipelines.

- LightningDiT (hustvl/LightningDiT): [`convert_lightningdit_checkpoint`] -> `LightningDiTTransformer2DModel`,
  [`convert_lightningdit_pipeline`] -> `AlignTokDiTPipeline`, and the `aligntok-convert-lightningdit` command.

Checkpoints are read with `torch.load(weights_only=True)` ([`load_tensor_checkpoint`]): nothing but tensors and plain
containers is unpickled.
"""

from .checkpoints import load_tensor_checkpoint, select_state_dict, strip_key_prefixes
from .lightningdit_pipeline import (
    convert_lightningdit_pipeline,
    lightningdit_scheduler,
    load_lightningdit_latent_stats,
)
from .lightningdit_transformer import (
    LIGHTNINGDIT_MODEL_TYPES,
    LightningDiTArchitecture,
    LightningDiTVariant,
    convert_lightningdit_checkpoint,
    convert_lightningdit_state_dict,
    lightningdit_state_dict_shapes,
    lightningdit_transformer_config,
    match_lightningdit_architecture,
    resolve_lightningdit_model_type,
)


__all__ = [
    "LIGHTNINGDIT_MODEL_TYPES",
    "LightningDiTArchitecture",
    "LightningDiTVariant",
    "convert_lightningdit_checkpoint",
    "convert_lightningdit_pipeline",
    "convert_lightningdit_state_dict",
    "lightningdit_scheduler",
    "lightningdit_state_dict_shapes",
    "lightningdit_transformer_config",
    "load_lightningdit_latent_stats",
    "load_tensor_checkpoint",
    "match_lightningdit_architecture",
    "resolve_lightningdit_model_type",
    "select_state_dict",
    "strip_key_prefixes",
]
