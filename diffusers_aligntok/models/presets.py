"""Named AlignTok configurations: the paper's tokenizers and a tiny one for tests.

Each preset is the keyword arguments of `AlignedAutoencoderKL` plus the hub id of the foundation encoder whose
pretrained weights stage 1 starts from. Build one with `AlignedAutoencoderKL.from_preset(name)` (random weights,
offline) or start training from it with `AlignedAutoencoderKL.from_foundation_encoder(preset.foundation_encoder,
**preset.config)`.
"""

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class AlignTokPreset:
    name: str
    description: str
    # Hub id of the pretrained transformers encoder; stage 1 loads its weights.
    foundation_encoder: str
    config: dict[str, Any] = field(default_factory=dict)


# DINOv2 sizes as in the released facebook/dinov2-* configs (patch 14, trained at 518, LayerScale 1e-5 init).
_DINOV2_LARGE = {
    "hidden_size": 1024,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "patch_size": 14,
    "image_size": 518,
    "layerscale_value": 1.0,
    "mlp_ratio": 4,
}
_DINOV2_BASE = {**_DINOV2_LARGE, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12}
# google/siglip2-large-patch16-256 vision tower: patch 16 matches f16 exactly, so no resizing happens.
_SIGLIP2_LARGE = {
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "patch_size": 16,
    "image_size": 256,
    "hidden_act": "gelu_pytorch_tanh",
    "layer_norm_eps": 1e-6,
}
# facebook/vit-mae-large encoder.
_MAE_LARGE = {
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "patch_size": 16,
    "image_size": 224,
}

PRESETS: dict[str, AlignTokPreset] = {
    preset.name: preset
    for preset in [
        AlignTokPreset(
            name="aligntok-dinov2-large-f16d32",
            description="The paper's main tokenizer: DINOv2-L/14, 16x16x32 latent for 256x256 images, ~42M decoder.",
            foundation_encoder="facebook/dinov2-large",
            config={"encoder_type": "dinov2", "encoder_config": _DINOV2_LARGE, "latent_channels": 32},
        ),
        AlignTokPreset(
            name="aligntok-dinov2-large-f16d64",
            description="The paper's 64-channel variant of the DINOv2-L tokenizer.",
            foundation_encoder="facebook/dinov2-large",
            config={"encoder_type": "dinov2", "encoder_config": _DINOV2_LARGE, "latent_channels": 64},
        ),
        AlignTokPreset(
            name="aligntok-dinov2-base-f16d32",
            description="DINOv2-B/14 encoder (86M) with the same adapter and decoder, for cheaper experiments.",
            foundation_encoder="facebook/dinov2-base",
            config={"encoder_type": "dinov2", "encoder_config": _DINOV2_BASE, "latent_channels": 32},
        ),
        AlignTokPreset(
            name="aligntok-siglip2-large-f16d32",
            description="SigLIP 2 large encoder, the paper's ablation (worse for generation than DINOv2).",
            foundation_encoder="google/siglip2-large-patch16-256",
            config={"encoder_type": "siglip2", "encoder_config": _SIGLIP2_LARGE, "latent_channels": 32},
        ),
        AlignTokPreset(
            name="aligntok-mae-large-f16d32",
            description="MAE ViT-L/16 encoder, the paper's ablation (worse for generation than DINOv2).",
            foundation_encoder="facebook/vit-mae-large",
            config={"encoder_type": "mae", "encoder_config": _MAE_LARGE, "latent_channels": 32},
        ),
        AlignTokPreset(
            name="tiny",
            description="A ~145K-parameter model for tests: f4, 8 latent channels, patch-3 DINOv2 (so the "
            "encoder input is resized, as with the real patch-14 encoder).",
            foundation_encoder="",
            config={
                "encoder_type": "dinov2",
                "encoder_config": {
                    "hidden_size": 32,
                    "num_hidden_layers": 2,
                    "num_attention_heads": 2,
                    "patch_size": 3,
                    "image_size": 24,
                    "mlp_ratio": 2,
                },
                "latent_channels": 8,
                "adapter_hidden_channels": 32,
                "up_block_types": ("AttnUpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"),
                "block_out_channels": (16, 16, 32),
                "layers_per_block": 1,
                "norm_num_groups": 8,
                "sample_size": 32,
            },
        ),
    ]
}


def get_preset(name: str) -> AlignTokPreset:
    if name not in PRESETS:
        raise ValueError(f"Unknown AlignTok preset {name!r}. Available presets: {sorted(PRESETS)}.")
    return PRESETS[name]
