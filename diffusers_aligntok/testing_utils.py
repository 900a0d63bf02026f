"""Tiny, random, offline components for running stock diffusers pipelines with an `AlignedAutoencoderKL`.

Tests, examples and smoke checks use these builders to assemble a real `FluxPipeline`, `FluxImg2ImgPipeline`,
`StableDiffusion3Pipeline` (and img2img) or `StableDiffusionXLPipeline` in seconds on a CPU, without any download:
every model is built from a config with random weights and every tokenizer from an in-memory vocabulary. The images
they produce are noise; what they check is that shapes, dtypes, latent scaling and saving/loading line up.

    from diffusers import FluxPipeline
    from diffusers_aligntok.testing_utils import tiny_flux_components

    pipe = FluxPipeline(**tiny_flux_components())
    image = pipe("a photo of a cat", height=32, width=32, num_inference_steps=2, max_sequence_length=16).images[0]

Each `tiny_*_components` function returns the keyword arguments of the pipeline's constructor and accepts a `vae`
(default: `AlignedAutoencoderKL.from_preset("tiny")`, f=4 with 8 latent channels); the denoiser's channel count is
derived from `vae.config.latent_channels`, so any tokenizer configuration fits. Builders seed torch's global RNG
themselves (`seed`, default 0), so two calls give identical weights.
"""

import string

import numpy as np
import PIL.Image
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel, SD3Transformer2DModel
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    T5Config,
    T5EncoderModel,
    T5Tokenizer,
)

from .models import AlignedAutoencoderKL


__all__ = [
    "TINY_CLIP_HIDDEN_SIZE",
    "TINY_CLIP_MAX_LENGTH",
    "TINY_T5_D_MODEL",
    "build_tiny_clip_text_encoder",
    "build_tiny_clip_tokenizer",
    "build_tiny_flow_match_scheduler",
    "build_tiny_flux_transformer",
    "build_tiny_sd3_transformer",
    "build_tiny_t5_encoder",
    "build_tiny_t5_tokenizer",
    "build_tiny_vae",
    "synthetic_test_image",
    "tiny_flux_components",
    "tiny_sd3_components",
    "tiny_sdxl_components",
]

# Width of the tiny CLIP text encoders (also their projection width) and of the tiny T5 encoder.
TINY_CLIP_HIDDEN_SIZE = 32
TINY_T5_D_MODEL = 32
# CLIP's real context length; pipelines pad CLIP prompts to `tokenizer.model_max_length`.
TINY_CLIP_MAX_LENGTH = 77

# Lower-case letters and digits are enough for test prompts; anything else maps to the unknown token.
_TOKEN_ALPHABET = string.ascii_lowercase + string.digits
_CLIP_SPECIAL_TOKENS = ("<|startoftext|>", "<|endoftext|>")
_T5_SPECIAL_TOKENS = ("<pad>", "</s>", "<unk>")


def _tiny_clip_vocab() -> dict[str, int]:
    # Character-level byte-BPE without merges: every word splits into characters, the last one marked `</w>`.
    tokens = [*_CLIP_SPECIAL_TOKENS, *_TOKEN_ALPHABET, *(f"{char}</w>" for char in _TOKEN_ALPHABET)]
    return {token: index for index, token in enumerate(tokens)}


def build_tiny_clip_tokenizer(model_max_length: int = TINY_CLIP_MAX_LENGTH) -> CLIPTokenizer:
    """A character-level `CLIPTokenizer` (74 tokens: `<|startoftext|>`=0, `<|endoftext|>`=1, also used for padding)."""
    return CLIPTokenizer(vocab=_tiny_clip_vocab(), merges=[], model_max_length=model_max_length)


def build_tiny_t5_tokenizer(model_max_length: int = 512) -> T5Tokenizer:
    """A character-level Unigram `T5Tokenizer` (`<pad>`=0, `</s>`=1, `<unk>`=2), the class Flux and SD3 use."""
    pieces = [*_T5_SPECIAL_TOKENS, "▁", *_TOKEN_ALPHABET, *(f"▁{char}" for char in _TOKEN_ALPHABET)]
    vocab = [(piece, 0.0 if piece in _T5_SPECIAL_TOKENS else -1.0) for piece in pieces]
    return T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=model_max_length)


def build_tiny_clip_text_encoder(
    with_projection: bool = False, hidden_size: int = TINY_CLIP_HIDDEN_SIZE, seed: int = 0
) -> CLIPTextModel | CLIPTextModelWithProjection:
    """A 2-layer CLIP text encoder matching `build_tiny_clip_tokenizer` (projection width = `hidden_size`)."""
    vocab = _tiny_clip_vocab()
    config = CLIPTextConfig(
        vocab_size=len(vocab),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        projection_dim=hidden_size,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=TINY_CLIP_MAX_LENGTH,
        bos_token_id=vocab["<|startoftext|>"],
        eos_token_id=vocab["<|endoftext|>"],
        pad_token_id=vocab["<|endoftext|>"],
    )
    torch.manual_seed(seed)
    model_class = CLIPTextModelWithProjection if with_projection else CLIPTextModel
    return model_class(config).eval()


def build_tiny_t5_encoder(d_model: int = TINY_T5_D_MODEL, seed: int = 0) -> T5EncoderModel:
    """A 2-layer T5 encoder matching `build_tiny_t5_tokenizer`; its width is the denoiser's `joint_attention_dim`."""
    config = T5Config(
        vocab_size=len(build_tiny_t5_tokenizer()),
        d_model=d_model,
        d_kv=8,
        d_ff=2 * d_model,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    torch.manual_seed(seed)
    return T5EncoderModel(config).eval()


def build_tiny_flow_match_scheduler() -> FlowMatchEulerDiscreteScheduler:
    """The scheduler configuration of FLUX.1-dev (resolution-dependent timestep shift)."""
    return FlowMatchEulerDiscreteScheduler(
        shift=3.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    )


def build_tiny_vae(seed: int = 0, **config_overrides) -> AlignedAutoencoderKL:
    """`AlignedAutoencoderKL.from_preset("tiny", **config_overrides)` in eval mode, seeded."""
    torch.manual_seed(seed)
    return AlignedAutoencoderKL.from_preset("tiny", **config_overrides).eval()


def build_tiny_flux_transformer(
    latent_channels: int,
    joint_attention_dim: int = TINY_T5_D_MODEL,
    pooled_projection_dim: int = TINY_CLIP_HIDDEN_SIZE,
    guidance_embeds: bool = True,
    seed: int = 0,
    latent_patch_size: int = 2,
) -> FluxTransformer2DModel:
    """A 1 double-stream + 1 single-stream block Flux transformer for `latent_channels`-channel latents.

    FluxPipeline packs latents into 2x2 patches, so the transformer sees `4 * latent_channels` input channels;
    `latent_patch_size=1` builds one for `AlignTokFluxPipeline`'s unpacked tokens (`latent_channels` inputs).
    """
    torch.manual_seed(seed)
    return FluxTransformer2DModel(
        patch_size=1,
        in_channels=latent_patch_size**2 * latent_channels,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=joint_attention_dim,
        pooled_projection_dim=pooled_projection_dim,
        guidance_embeds=guidance_embeds,
        axes_dims_rope=(4, 4, 8),  # sums to attention_head_dim
    ).eval()


def build_tiny_sd3_transformer(
    latent_channels: int,
    joint_attention_dim: int = TINY_T5_D_MODEL,
    pooled_projection_dim: int = 2 * TINY_CLIP_HIDDEN_SIZE,
    seed: int = 0,
) -> SD3Transformer2DModel:
    """A 1-block SD3 MMDiT on unpacked `latent_channels`-channel latents (patch size 1).

    SD3 pools the two CLIP encoders' projections side by side, hence `pooled_projection_dim = 2 * CLIP width`.
    """
    torch.manual_seed(seed)
    return SD3Transformer2DModel(
        sample_size=32,
        patch_size=1,
        in_channels=latent_channels,
        out_channels=latent_channels,
        num_layers=1,
        attention_head_dim=8,
        num_attention_heads=4,
        caption_projection_dim=32,
        joint_attention_dim=joint_attention_dim,
        pooled_projection_dim=pooled_projection_dim,
    ).eval()


def tiny_flux_components(vae: AlignedAutoencoderKL | None = None, seed: int = 0) -> dict:
    """Constructor arguments of `FluxPipeline` / `FluxImg2ImgPipeline`: tiny CLIP + T5, Flux transformer, `vae`."""
    vae = build_tiny_vae(seed) if vae is None else vae
    return {
        "scheduler": build_tiny_flow_match_scheduler(),
        "vae": vae,
        "text_encoder": build_tiny_clip_text_encoder(seed=seed),
        "tokenizer": build_tiny_clip_tokenizer(),
        "text_encoder_2": build_tiny_t5_encoder(seed=seed),
        "tokenizer_2": build_tiny_t5_tokenizer(),
        "transformer": build_tiny_flux_transformer(vae.config.latent_channels, seed=seed),
    }


def tiny_sd3_components(vae: AlignedAutoencoderKL | None = None, seed: int = 0) -> dict:
    """Constructor arguments of `StableDiffusion3Pipeline` / `StableDiffusion3Img2ImgPipeline`.

    SD3 pads the concatenated CLIP hidden states (2 x 32) to the T5 width, so the T5 encoder here is 64 wide.
    """
    vae = build_tiny_vae(seed) if vae is None else vae
    t5_width = 2 * TINY_CLIP_HIDDEN_SIZE
    return {
        "scheduler": FlowMatchEulerDiscreteScheduler(shift=3.0),
        "vae": vae,
        "text_encoder": build_tiny_clip_text_encoder(with_projection=True, seed=seed),
        "tokenizer": build_tiny_clip_tokenizer(),
        "text_encoder_2": build_tiny_clip_text_encoder(with_projection=True, seed=seed + 1),
        "tokenizer_2": build_tiny_clip_tokenizer(),
        "text_encoder_3": build_tiny_t5_encoder(d_model=t5_width, seed=seed),
        "tokenizer_3": build_tiny_t5_tokenizer(),
        "transformer": build_tiny_sd3_transformer(vae.config.latent_channels, joint_attention_dim=t5_width, seed=seed),
    }


def tiny_sdxl_components(vae: AlignedAutoencoderKL | None = None, seed: int = 0) -> dict:
    """Constructor arguments of `StableDiffusionXLPipeline`, the family that honours `vae.config.force_upcast`.

    SDXL reads only `scaling_factor` (no `shift_factor`) and assumes 4 channels when `latents_mean`/`latents_std` are
    set, so use it with a VAE whose `shift_factor` is 0 and whose per-channel statistics are `None`.
    """
    from diffusers import EulerDiscreteScheduler, UNet2DConditionModel

    vae = build_tiny_vae(seed) if vae is None else vae
    addition_time_embed_dim = 8
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=16,
        in_channels=vae.config.latent_channels,
        out_channels=vae.config.latent_channels,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=addition_time_embed_dim,
        transformer_layers_per_block=(1, 1),
        # SDXL conditions on the pooled text_encoder_2 projection and 6 micro-conditioning numbers.
        projection_class_embeddings_input_dim=6 * addition_time_embed_dim + TINY_CLIP_HIDDEN_SIZE,
        cross_attention_dim=2 * TINY_CLIP_HIDDEN_SIZE,
        norm_num_groups=8,
    ).eval()
    return {
        "scheduler": EulerDiscreteScheduler(
            beta_start=0.00085,
            beta_end=0.012,
            beta_schedule="scaled_linear",
            timestep_spacing="leading",
            steps_offset=1,
        ),
        "vae": vae,
        "text_encoder": build_tiny_clip_text_encoder(seed=seed),
        "tokenizer": build_tiny_clip_tokenizer(),
        "text_encoder_2": build_tiny_clip_text_encoder(with_projection=True, seed=seed + 1),
        "tokenizer_2": build_tiny_clip_tokenizer(),
        "unet": unet,
    }


def synthetic_test_image(height: int = 256, width: int = 256) -> PIL.Image.Image:
    """A deterministic RGB test image with smooth gradients, sharp edges and fine stripes (no file, no download).

    Reconstruction demos and benchmarks use it when no image is given; its mix of flat, smooth and high-frequency
    regions makes tokenizer artefacts (blur, ringing, tile seams) visible.
    """
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    y, x = y / max(height - 1, 1), x / max(width - 1, 1)
    red = x
    green = y
    blue = 0.5 + 0.5 * np.sin(2 * np.pi * 12 * x * (1 - y))  # stripes whose frequency varies across the image
    image = np.stack([red, green, blue], axis=-1)
    disc = (x - 0.35) ** 2 + (y - 0.4) ** 2 < 0.18**2
    image[disc] = (0.95, 0.85, 0.1)
    square = (np.abs(x - 0.72) < 0.14) & (np.abs(y - 0.68) < 0.14)
    image[square] = (0.1, 0.2, 0.8)
    checker = ((np.floor(x * width / 8) + np.floor(y * height / 8)) % 2).astype(np.float32)
    bottom_band = y > 0.9
    image[bottom_band] = checker[bottom_band, None] * np.ones(3, dtype=np.float32)
    return PIL.Image.fromarray((image * 255).round().astype(np.uint8))
