"""Test-only builders: tiny, random, offline pipelines for running stock diffusers pipelines with our VAE.

The offline stand-ins the library itself uses (tiny text encoders, the tiny Flux transformer, random metric networks)
live in `diffusers_aligntok.standins`; this module adds what only the tests need (SD3 and SDXL components, a seeded
tiny VAE) and re-exports the stand-ins so a test imports everything tiny from one place. Each `tiny_*_components`
function returns the keyword arguments of the pipeline's constructor and accepts a `vae` (default:
`AlignedAutoencoderKL.from_preset("tiny")`, f=4 with 8 latent channels); the denoiser's channel count is derived from
`vae.config.latent_channels`. Builders seed torch's global RNG themselves (`seed`, default 0).
"""

import importlib.util
import sys
from pathlib import Path

import torch
from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel

from diffusers_aligntok import AlignedAutoencoderKL
from diffusers_aligntok.data.synthetic_image import synthetic_test_image  # noqa: F401  (re-exported)
from diffusers_aligntok.standins import (  # noqa: F401  (re-exported)
    TINY_CLIP_HIDDEN_SIZE,
    TINY_CLIP_MAX_LENGTH,
    TINY_T5_D_MODEL,
    build_tiny_clip_text_encoder,
    build_tiny_clip_tokenizer,
    build_tiny_flow_match_scheduler,
    build_tiny_flux_transformer,
    build_tiny_t5_encoder,
    build_tiny_t5_tokenizer,
    tiny_flux_components,
)


REPO_ROOT = Path(__file__).resolve().parents[1]


def load_script(relative_path: str):
    """Imports a script of the repository (`"benchmarks/tokenizer_speed.py"`, `"training/evaluate_tokenizer.py"`)
    as a module, with its folder first on `sys.path` as when it is run (the benchmarks import `benchmark_utils`)."""
    path = REPO_ROOT / relative_path
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_tiny_vae(seed: int = 0, **config_overrides) -> AlignedAutoencoderKL:
    """`AlignedAutoencoderKL.from_preset("tiny", **config_overrides)` in eval mode, seeded."""
    torch.manual_seed(seed)
    return AlignedAutoencoderKL.from_preset("tiny", **config_overrides).eval()


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
