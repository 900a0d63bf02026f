"""Vision foundation encoders that AlignTok can align, built from transformers configs.

Everything that differs between encoder families lives in the small `FOUNDATION_ENCODERS` table: which
transformers classes build the model, how many non-patch tokens to drop, whether the position embeddings must be
asked to interpolate, and the input normalisation the encoder was pretrained with. `AlignedAutoencoderKL` only ever
calls `build_foundation_encoder` and `encode_patch_tokens`.
"""

import logging
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
from transformers import (
    Dinov2Config,
    Dinov2Model,
    Dinov2WithRegistersConfig,
    Dinov2WithRegistersModel,
    PretrainedConfig,
    SiglipVisionConfig,
    SiglipVisionModel,
    ViTMAEConfig,
    ViTMAEModel,
)


logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# SigLIP (and SigLIP 2) were pretrained on images scaled to [-1, 1].
SIGLIP_MEAN = (0.5, 0.5, 0.5)
SIGLIP_STD = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class FoundationEncoderSpec:
    """How to build and run one family of transformers vision encoders."""

    config_class: type[PretrainedConfig]
    model_class: type[nn.Module]
    # The transformers `model_type` strings whose checkpoints hold this family (for `from_foundation_encoder` checks).
    model_types: tuple[str, ...]
    # Pixel mean/std the encoder was pretrained with, applied to [0, 1] images.
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]
    # Keyword arguments for the transformers forward that make the position embeddings follow the input size.
    forward_kwargs: tuple[tuple[str, Any], ...] = ()
    # Config keys forced for every model of the family (parts AlignTok never uses, so they never hold dead weights).
    forced_config: tuple[tuple[str, Any], ...] = ()

    def num_prefix_tokens(self, config: PretrainedConfig) -> int:
        """CLS and register tokens that come before the row-major patch tokens."""
        if self.model_class is SiglipVisionModel:
            return 0  # SigLIP has no CLS token; pooling happens in a separate head.
        return 1 + int(getattr(config, "num_register_tokens", 0))


FOUNDATION_ENCODERS: dict[str, FoundationEncoderSpec] = {
    "dinov2": FoundationEncoderSpec(
        config_class=Dinov2Config,
        model_class=Dinov2Model,
        model_types=("dinov2",),
        image_mean=IMAGENET_MEAN,
        image_std=IMAGENET_STD,
        # DINOv2's mask token only serves iBOT-style masked training; without it stage 2 has no unused parameters.
        forced_config=(("use_mask_token", False),),
    ),
    "dinov2_with_registers": FoundationEncoderSpec(
        config_class=Dinov2WithRegistersConfig,
        model_class=Dinov2WithRegistersModel,
        model_types=("dinov2_with_registers",),
        image_mean=IMAGENET_MEAN,
        image_std=IMAGENET_STD,
    ),
    "siglip2": FoundationEncoderSpec(
        # The fixed-resolution SigLIP 2 checkpoints (e.g. google/siglip2-large-patch16-256) use the SigLIP
        # architecture; only the vision tower is kept.
        config_class=SiglipVisionConfig,
        model_class=SiglipVisionModel,
        model_types=("siglip_vision_model",),
        image_mean=SIGLIP_MEAN,
        image_std=SIGLIP_STD,
        forward_kwargs=(("interpolate_pos_encoding", True),),
        forced_config=(("vision_use_head", False),),
    ),
    "mae": FoundationEncoderSpec(
        config_class=ViTMAEConfig,
        model_class=ViTMAEModel,
        model_types=("vit_mae",),
        image_mean=IMAGENET_MEAN,
        image_std=IMAGENET_STD,
        forward_kwargs=(("interpolate_pos_encoding", True),),
        # MAE masks 75% of the patches during pretraining; a tokenizer must see all of them.
        forced_config=(("mask_ratio", 0.0),),
    ),
}

# Keys of a transformers config that say nothing about the architecture and would make saved configs noisy.
_NON_ARCHITECTURE_CONFIG_KEYS = {
    "_name_or_path",
    "architectures",
    "dtype",
    "torch_dtype",
    "model_type",
    "transformers_version",
    "id2label",
    "label2id",
    "stage_names",
    "out_features",
    "out_indices",
    "output_attentions",
    "output_hidden_states",
    "return_dict",
}


def get_foundation_encoder_spec(encoder_type: str) -> FoundationEncoderSpec:
    if encoder_type not in FOUNDATION_ENCODERS:
        raise ValueError(
            f"Unknown encoder_type {encoder_type!r}. Choose one of {sorted(FOUNDATION_ENCODERS)}; other transformers "
            "vision models need an entry in diffusers_aligntok.models.foundation_encoders.FOUNDATION_ENCODERS."
        )
    return FOUNDATION_ENCODERS[encoder_type]


def architecture_config_dict(config: PretrainedConfig) -> dict[str, Any]:
    """The architecture-defining keys of a transformers config, as JSON-serialisable values."""
    return {k: v for k, v in config.to_diff_dict().items() if k not in _NON_ARCHITECTURE_CONFIG_KEYS}


def unknown_encoder_config_keys(encoder_type: str, encoder_config: dict[str, Any]) -> list[str]:
    """Keys of `encoder_config` that the family's transformers config class does not define."""
    spec = get_foundation_encoder_spec(encoder_type)
    return sorted(set(encoder_config) - set(spec.config_class().to_dict()))


def check_encoder_config_keys(encoder_type: str, encoder_config: dict[str, Any]) -> None:
    """Refuses keys the config class does not know: in a config someone wrote, they are typos or the wrong family."""
    unknown = unknown_encoder_config_keys(encoder_type, encoder_config)
    if unknown:
        config_class = get_foundation_encoder_spec(encoder_type).config_class
        raise ValueError(
            f"encoder_config has keys {unknown} that {config_class.__name__} (encoder_type {encoder_type!r}) does not "
            "know. Check the spelling or the encoder_type."
        )


def build_encoder_config(encoder_type: str, encoder_config: dict[str, Any]) -> PretrainedConfig:
    spec = get_foundation_encoder_spec(encoder_type)
    check_encoder_config_keys(encoder_type, encoder_config)
    return spec.config_class(**{**encoder_config, **dict(spec.forced_config)})


def build_foundation_encoder(encoder_type: str, encoder_config: dict[str, Any]) -> nn.Module:
    """Builds a randomly initialised encoder from its config; nothing is downloaded."""
    spec = get_foundation_encoder_spec(encoder_type)
    return spec.model_class(build_encoder_config(encoder_type, encoder_config))


def encode_patch_tokens(encoder_type: str, encoder: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    """Runs `encoder` on normalised pixels and returns the patch tokens, `(batch, num_patches, hidden_size)`.

    CLS and register tokens are dropped; the patches come in row-major order of the patch grid.
    """
    spec = FOUNDATION_ENCODERS[encoder_type]
    kwargs = dict(spec.forward_kwargs)
    if encoder_type == "mae":
        # ViTMAE shuffles patches by `noise` before masking; increasing noise keeps the original order.
        num_patches = (pixel_values.shape[-2] // encoder.config.patch_size) * (
            pixel_values.shape[-1] // encoder.config.patch_size
        )
        kwargs["noise"] = torch.arange(num_patches, device=pixel_values.device, dtype=torch.float32).expand(
            pixel_values.shape[0], -1
        )
    hidden_states = encoder(pixel_values=pixel_values, **kwargs).last_hidden_state
    return hidden_states[:, spec.num_prefix_tokens(encoder.config) :]


def load_pretrained_foundation_encoder(
    encoder_type: str, pretrained_model_name_or_path: str, **from_pretrained_kwargs
) -> tuple[nn.Module, dict[str, Any]]:
    """Loads a pretrained transformers encoder (hub id or local directory) and its architecture config dict.

    Full vision-language checkpoints (a SigLIP 2 model with its text tower) are accepted; only the vision tower is
    kept. A checkpoint of another family raises a `ValueError` that names both.

    The returned config dict holds only keys the family's config class defines. A checkpoint's `config.json` often
    carries more (fine-tuned or converted checkpoints add e.g. `intermediate_size` to a DINOv2): transformers keeps
    them as attributes that its model never reads, so they do not shape the architecture and are dropped (logged).
    The caller loads the weights strictly into a model built from the returned dict, so a key that did matter
    would surface as a shape mismatch there.
    """
    from transformers import AutoConfig

    spec = get_foundation_encoder_spec(encoder_type)
    config = AutoConfig.from_pretrained(pretrained_model_name_or_path, **from_pretrained_kwargs)
    checkpoint_type = config.model_type
    if getattr(config, "vision_config", None) is not None:
        config = config.vision_config  # a vision-language checkpoint: keep the vision tower
    if config.model_type not in spec.model_types:
        matching = [name for name, other in FOUNDATION_ENCODERS.items() if config.model_type in other.model_types]
        hint = f"pass encoder_type={matching[0]!r}" if matching else "use a checkpoint of a supported family"
        raise ValueError(
            f"{pretrained_model_name_or_path!r} holds a {checkpoint_type!r} model, but encoder_type is "
            f"{encoder_type!r}, which loads {list(spec.model_types)} checkpoints; {hint}."
        )
    for key, value in spec.forced_config:
        setattr(config, key, value)
    encoder = spec.model_class.from_pretrained(pretrained_model_name_or_path, config=config, **from_pretrained_kwargs)
    architecture = architecture_config_dict(config)
    ignored = unknown_encoder_config_keys(encoder_type, architecture)
    if ignored:
        logger.info(
            f"{pretrained_model_name_or_path!r}: config keys {ignored} are not {spec.config_class.__name__} fields "
            "(the model does not use them); leaving them out of the tokenizer's encoder_config."
        )
    return encoder, {key: value for key, value in architecture.items() if key not in ignored}
