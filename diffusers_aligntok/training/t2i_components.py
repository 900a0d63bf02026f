"""The frozen parts of text-to-image training (VAE, FLUX text encoders) and the FLUX transformer built to fit them."""

import logging
from pathlib import Path
from typing import Any

import torch
from diffusers import FluxPipeline, FluxTransformer2DModel
from diffusers.utils import logging as diffusers_logging

from ..models import AlignedAutoencoderKL
from ..pipelines.pipeline_aligntok_flux import latent_patch_size
from .t2i_config import FLUX_TRANSFORMER_PRESETS, T2IConfig


logger = logging.getLogger(__name__)

CLIP_MAX_LENGTH = 77  # FluxPipeline pads and truncates CLIP prompts to 77 tokens
# `model.text_encoders` value for tiny random CLIP + T5 encoders built offline (tests and CPU smoke runs; they carry
# no meaning, so nothing trained with them can follow a prompt).
TINY_RANDOM_TEXT_ENCODERS = "tiny-random"


def load_vae(path: str, subfolder: str | None = None) -> torch.nn.Module:
    """An `AlignedAutoencoderKL` or any diffusers `AutoencoderKL`-like VAE, frozen, in eval mode.

    The class is read from the saved config's `_class_name`, so `--vae` takes our tokenizer or the FLUX VAE
    (`black-forest-labs/FLUX.1-dev` with `vae_subfolder: vae`) alike. A VAE without a float `shift_factor` is refused:
    FluxPipeline decodes with `latents / scaling_factor + shift_factor`.
    """
    import diffusers

    if Path(path).is_dir() and subfolder is None and (Path(path) / "vae" / "config.json").is_file():
        subfolder = "vae"  # a saved pipeline: its VAE

    config = FluxTransformer2DModel.load_config(path, subfolder=subfolder)
    class_name = config.get("_class_name")
    if class_name == AlignedAutoencoderKL.__name__:
        vae_class = AlignedAutoencoderKL
    elif class_name and class_name.startswith("Autoencoder") and hasattr(diffusers, class_name):
        vae_class = getattr(diffusers, class_name)
    else:
        raise ValueError(
            f"{path} (subfolder {subfolder!r}) holds a {class_name!r}, not a VAE. Pass an AlignedAutoencoderKL "
            "directory or a diffusers AutoencoderKL (for the FLUX VAE: black-forest-labs/FLUX.1-dev with subfolder 'vae')."
        )
    vae = vae_class.from_pretrained(path, subfolder=subfolder).eval().requires_grad_(False)
    if not isinstance(vae.config.get("shift_factor"), (int, float)) or not isinstance(
        vae.config.get("scaling_factor"), (int, float)
    ):
        raise ValueError(
            f"The VAE at {path} has scaling_factor={vae.config.get('scaling_factor')!r} and shift_factor="
            f"{vae.config.get('shift_factor')!r}; FluxPipeline needs both as floats. For an AlignTok tokenizer run "
            "`python training/compute_latent_statistics.py --tokenizer PATH --normalization global --write`."
        )
    return vae


def vae_scale_factor(vae: torch.nn.Module) -> int:
    return 2 ** (len(vae.config.block_out_channels) - 1)


def patch_size_for(vae: torch.nn.Module, pixels_per_token: int) -> int:
    """The latent patch that makes one token cover `pixels_per_token` pixels on a side with this VAE."""
    factor = vae_scale_factor(vae)
    if pixels_per_token % factor:
        raise ValueError(
            f"model.pixels_per_token={pixels_per_token} is not a multiple of the VAE's downsampling factor {factor}."
        )
    return pixels_per_token // factor


def normalize_latents(vae: torch.nn.Module, latents: torch.Tensor) -> torch.Tensor:
    """The latent FluxPipeline denoises: `(z - shift_factor) * scaling_factor` (its decode applies the inverse)."""
    return (latents - vae.config.shift_factor) * vae.config.scaling_factor


class FluxTextEncoders:
    """FLUX's frozen text conditioning: CLIP-L's pooled output and T5's per-token states, via `FluxPipeline.encode_prompt`.

    Encoding goes through diffusers' own `encode_prompt`, so training sees exactly what `FluxPipeline` feeds the
    transformer at inference. `count_truncated` says how many captions each tokenizer cuts.
    """

    def __init__(
        self,
        path: str,
        max_sequence_length: int,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ):
        from transformers import AutoTokenizer, CLIPTextModel, CLIPTokenizer, T5EncoderModel

        self.path = path
        self.max_sequence_length = max_sequence_length
        if path == TINY_RANDOM_TEXT_ENCODERS:
            from .. import standins

            self.tokenizer, self.tokenizer_2 = (
                standins.build_tiny_clip_tokenizer(),
                standins.build_tiny_t5_tokenizer(),
            )
            self.text_encoder = standins.build_tiny_clip_text_encoder().to(dtype)
            self.text_encoder_2 = standins.build_tiny_t5_encoder().to(dtype)
        else:
            self.tokenizer = CLIPTokenizer.from_pretrained(path, subfolder="tokenizer")
            self.tokenizer_2 = AutoTokenizer.from_pretrained(path, subfolder="tokenizer_2")
            self.text_encoder = CLIPTextModel.from_pretrained(path, subfolder="text_encoder", torch_dtype=dtype)
            self.text_encoder_2 = T5EncoderModel.from_pretrained(path, subfolder="text_encoder_2", torch_dtype=dtype)
        for encoder in (self.text_encoder, self.text_encoder_2):
            encoder.requires_grad_(False).eval().to(device)
        self._pipeline = FluxPipeline(
            scheduler=None,
            vae=None,
            transformer=None,
            text_encoder=self.text_encoder,
            tokenizer=self.tokenizer,
            text_encoder_2=self.text_encoder_2,
            tokenizer_2=self.tokenizer_2,
        )

    @property
    def joint_attention_dim(self) -> int:
        return self.text_encoder_2.config.d_model

    @property
    def pooled_projection_dim(self) -> int:
        return self.text_encoder.config.hidden_size

    @torch.no_grad()
    def encode(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """`(prompt_embeds (B, L, D), pooled_prompt_embeds (B, P))` for a list of captions."""
        # FluxPipeline warns about every truncated prompt; training counts them instead (`count_truncated`).
        flux_logger = diffusers_logging.get_logger("diffusers.pipelines.flux.pipeline_flux")
        level = flux_logger.level
        flux_logger.setLevel(logging.ERROR)
        try:
            prompt_embeds, pooled, _ = self._pipeline.encode_prompt(
                prompt=list(captions),
                prompt_2=None,
                device=self.text_encoder.device,
                max_sequence_length=self.max_sequence_length,
            )
        finally:
            flux_logger.setLevel(level)
        return prompt_embeds, pooled

    def count_truncated(self, captions: list[str]) -> dict[str, int]:
        clip = self.tokenizer(list(captions), truncation=False).input_ids
        t5 = self.tokenizer_2(list(captions), truncation=False).input_ids
        return {
            "clip": sum(len(ids) > CLIP_MAX_LENGTH for ids in clip),
            "t5": sum(len(ids) > self.max_sequence_length for ids in t5),
        }

    def describe(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "clip": self.text_encoder.config.name_or_path or type(self.text_encoder).__name__,
            "t5": self.text_encoder_2.config.name_or_path or type(self.text_encoder_2).__name__,
            "max_sequence_length": self.max_sequence_length,
            "joint_attention_dim": self.joint_attention_dim,
            "pooled_projection_dim": self.pooled_projection_dim,
        }


def transformer_kwargs(
    config: T2IConfig, latent_channels: int, patch_size: int, joint_attention_dim: int, pooled_projection_dim: int
) -> dict:
    """FluxTransformer2DModel arguments: the preset, the config's overrides, and the widths that follow the VAE and
    the text encoders."""
    return {
        **FLUX_TRANSFORMER_PRESETS[config.model.transformer_preset],
        **config.model.transformer_overrides,
        "patch_size": 1,  # packing is done outside the model (pipeline_aligntok_flux.pack_latents), as in FLUX
        "in_channels": latent_channels * patch_size**2,
        "joint_attention_dim": joint_attention_dim,
        "pooled_projection_dim": pooled_projection_dim,
    }


def build_transformer(
    config: T2IConfig, vae: torch.nn.Module, joint_attention_dim: int, pooled_projection_dim: int
) -> FluxTransformer2DModel:
    """The FLUX transformer for this VAE and these text encoders (or the one in `model.init_transformer_from`)."""
    patch = patch_size_for(vae, config.model.pixels_per_token)
    kwargs = transformer_kwargs(config, vae.config.latent_channels, patch, joint_attention_dim, pooled_projection_dim)
    if config.model.init_transformer_from:
        transformer = FluxTransformer2DModel.from_pretrained(config.model.init_transformer_from)
        check_transformer_fits(transformer, vae, patch)
        return transformer
    return FluxTransformer2DModel(**kwargs)


def check_transformer_fits(
    transformer: FluxTransformer2DModel, vae: torch.nn.Module, expected_patch: int | None = None
) -> int:
    """Refuses a transformer whose `in_channels` does not fit the VAE's latent channels (before any training)."""
    patch = latent_patch_size(transformer.config.in_channels, vae.config.latent_channels)
    if expected_patch is not None and patch != expected_patch:
        raise ValueError(
            f"The transformer takes latent patch {patch} (in_channels {transformer.config.in_channels}) but "
            f"model.pixels_per_token asks for patch {expected_patch} with this VAE."
        )
    return patch
