"""Config schema of `training/train_t2i.py` (loaded strictly, like the other training configs).

The transformer is diffusers' own `FluxTransformer2DModel`. Its input width is not configured: it follows the VAE,
`in_channels = latent_channels * latent_patch_size**2`, with the patch chosen so that one token covers
`model.pixels_per_token` pixels on a side (16: patch 1 on f16 AlignTok latents, patch 2 on the f8 FLUX VAE). Both arms
of the paper's comparison therefore see the same number of image tokens per image, and differ only in the VAE.
Likewise `joint_attention_dim` and `pooled_projection_dim` come from the text encoders.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data.aspect_buckets import parse_aspect_ratio
from ..data.text_image_datasets import TextImageDatasetConfig
from .config import ConfigError, apply_dotted_overrides, config_from_dict, read_yaml_config
from .dit_config import DiTOptimizerConfig, DiTTrainingConfig


# FluxTransformer2DModel sizes. "flux-2b": FLUX.1's blocks at hidden 2048 (16 heads x 128), 7 double-stream + 14
# single-stream blocks, about 2.0B parameters. "tiny": for tests and the CPU recipe.
FLUX_TRANSFORMER_PRESETS: dict[str, dict[str, Any]] = {
    "flux-2b": {
        "num_layers": 7,
        "num_single_layers": 14,
        "attention_head_dim": 128,
        "num_attention_heads": 16,
        "axes_dims_rope": [16, 56, 56],  # FLUX.1's RoPE split of the 128-d head
        "guidance_embeds": False,  # trained with real CFG (caption dropout), not distilled guidance
    },
    "tiny": {
        "num_layers": 1,
        "num_single_layers": 1,
        "attention_head_dim": 16,
        "num_attention_heads": 2,
        "axes_dims_rope": [4, 6, 6],
        "guidance_embeds": False,
    },
}


@dataclass
class T2IModelConfig:
    # A name from FLUX_TRANSFORMER_PRESETS, and any FluxTransformer2DModel argument over it (not in_channels,
    # joint_attention_dim or pooled_projection_dim, which follow the VAE and the text encoders).
    transformer_preset: str = "flux-2b"
    transformer_overrides: dict[str, Any] = field(default_factory=dict)
    # The VAE: an AlignedAutoencoderKL or any diffusers AutoencoderKL (hub id or directory; `--vae` overrides it).
    vae: str | None = None
    vae_subfolder: str | None = None
    # Frozen text encoders as in FLUX: a hub id or directory with tokenizer/, text_encoder/ (CLIP-L, pooled) and
    # tokenizer_2/, text_encoder_2/ (T5-XXL, per token), e.g. a FLUX.1 repository.
    text_encoders: str = "black-forest-labs/FLUX.1-dev"
    max_sequence_length: int = 256
    # Image pixels per token side; the latent patch is pixels_per_token / VAE downsampling factor.
    pixels_per_token: int = 16
    # Continue from a saved transformer (diffusers format), e.g. the 256 model when training at 512.
    init_transformer_from: str | None = None


@dataclass
class T2IDataConfig(TextImageDatasetConfig):
    # Where pairs come from (source, split, image_column, caption_column, max_samples, num_builtin_samples,
    # max_upscale, seed): see diffusers_aligntok.data.TextImageDatasetConfig. Bucket area is resolution**2, one
    # bucket per aspect ratio ("width:height").
    resolution: int = 256
    aspect_ratios: list = field(default_factory=lambda: ["1:1"])
    # Probability of training a sample with the empty caption (what CFG's unconditional branch sees).
    caption_dropout_prob: float = 0.1
    # Precomputed latents and text embeddings (written on first use, resumable); None encodes every batch.
    cache_dir: str | None = None
    dataloader_num_workers: int = 4


@dataclass
class T2IFlowConfig:
    timestep_sampling: str = "logit_normal"
    logit_mean: float = 0.0
    logit_std: float = 1.0
    # FLUX's resolution-dependent shift: mu grows linearly with the image token count between these two points, and
    # sigmas are shifted by exp(mu). The saved pipeline's scheduler uses the same values at sampling time.
    resolution_dependent_shift: bool = True
    base_shift: float = 0.5
    max_shift: float = 1.15
    base_image_seq_len: int = 256
    max_image_seq_len: int = 4096


@dataclass
class T2IOptimizerConfig(DiTOptimizerConfig):
    # The class-conditional DiT's AdamW fields (beta2 0.95 as the paper's DiT), with text-to-image defaults.
    learning_rate: float = 1.0e-4
    lr_scheduler: str = "constant_with_warmup"
    lr_warmup_steps: int = 1000


@dataclass
class T2ITrainingConfig(DiTTrainingConfig):
    # The class-conditional DiT's fields, with text-to-image defaults.
    train_batch_size: int = 16
    max_train_steps: int = 100000
    gradient_checkpointing: bool = True
    allow_tf32: bool = True


@dataclass
class T2IValidationConfig:
    # Prompt i is drawn at bucket i % len(buckets), so the grid covers every aspect ratio.
    prompts: list = field(default_factory=lambda: ["a photo of a cat", "a red car parked on a street"])
    num_inference_steps: int = 28
    # Real classifier-free guidance (FluxPipeline's true_cfg_scale with the empty negative prompt).
    guidance_scale: float = 4.0
    seed: int = 0


@dataclass
class T2IConfig:
    model: T2IModelConfig = field(default_factory=T2IModelConfig)
    data: T2IDataConfig = field(default_factory=T2IDataConfig)
    flow: T2IFlowConfig = field(default_factory=T2IFlowConfig)
    optimizer: T2IOptimizerConfig = field(default_factory=T2IOptimizerConfig)
    training: T2ITrainingConfig = field(default_factory=T2ITrainingConfig)
    validation: T2IValidationConfig = field(default_factory=T2IValidationConfig)


def load_t2i_config(path: str | Path, overrides: dict[str, Any] | None = None) -> T2IConfig:
    """Reads and validates a text-to-image config; `overrides` (`{"model.vae": ...}`) replace single keys first."""
    where = Path(path).name
    config = config_from_dict(T2IConfig, apply_dotted_overrides(read_yaml_config(path), overrides or {}, where), where)
    _check_values(config, where)
    return config


def _check_values(config: T2IConfig, where: str) -> None:
    model, data, training = config.model, config.data, config.training
    if model.transformer_preset not in FLUX_TRANSFORMER_PRESETS:
        raise ConfigError(
            f"{where}: model.transformer_preset must be one of {sorted(FLUX_TRANSFORMER_PRESETS)}, got {model.transformer_preset!r}."
        )
    derived = {"in_channels", "out_channels", "joint_attention_dim", "pooled_projection_dim"} & set(
        model.transformer_overrides
    )
    if derived:
        raise ConfigError(
            f"{where}: model.transformer_overrides sets {sorted(derived)}, which follow the VAE and the text encoders; remove them."
        )
    if not model.vae:
        raise ConfigError(f"{where}: model.vae is required (or pass --vae): an AlignedAutoencoderKL or AutoencoderKL.")
    checks = [
        (
            training.mixed_precision in ("no", "bf16"),
            "training.mixed_precision must be 'no' or 'bf16' (fp16 overflows MMDiT training)",
        ),
        (
            training.train_batch_size > 0 and training.max_train_steps > 0,
            "training.train_batch_size and max_train_steps must be positive",
        ),
        (training.gradient_accumulation_steps > 0, "training.gradient_accumulation_steps must be positive"),
        (
            training.checkpointing_steps > 0 and training.validation_steps > 0,
            "training.checkpointing_steps and validation_steps must be positive",
        ),
        (training.ema_decay is None or 0 < training.ema_decay < 1, "training.ema_decay must be in (0, 1) or null"),
        (config.optimizer.learning_rate > 0, "optimizer.learning_rate must be positive"),
        (0 <= data.caption_dropout_prob < 1, "data.caption_dropout_prob must be in [0, 1)"),
        (data.max_upscale >= 1, "data.max_upscale must be >= 1 (1: never upscale)"),
        (data.aspect_ratios, "data.aspect_ratios must list at least one 'width:height'"),
        (0 < model.max_sequence_length <= 512, "model.max_sequence_length must be in 1..512 (T5's limit in FLUX)"),
        (
            data.resolution > 0 and data.resolution % model.pixels_per_token == 0,
            f"data.resolution must be a positive multiple of model.pixels_per_token ({model.pixels_per_token})",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(f"{where}: {message}.")
    for ratio in data.aspect_ratios:
        try:
            parse_aspect_ratio(ratio)
        except ValueError as error:
            raise ConfigError(f"{where}: data.aspect_ratios: {error}") from None
