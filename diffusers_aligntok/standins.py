"""Named offline stand-ins: small, random networks that take the place of ones this machine cannot download.

Tests, the demo and offline smoke runs need an Inception network (FID), a CLIP model (CLIP score), an LPIPS trunk, the
FLUX VAE and FLUX's text encoders, none of which can be downloaded here. Each stand-in below runs the *exact code path*
of the real network with seeded random weights; **none of them is a real metric network**, and every result computed
with one is labelled as such (`is_real_metric=False`, "stand-in, NOT FID" in tables). [`STANDINS`] lists them by the
name configs and command lines use:

| name | replaces | where the name is accepted |
|---|---|---|
| `random-inception-standin` | clean-fid's Inception (FID, IS, precision/recall) | `feature_extractor` of the evaluations |
| `random-clip-standin` | `openai/clip-vit-large-patch14` (CLIP score) | `clip_model` of the text-to-image evaluation |
| `lpips-vgg-random-trunk` | LPIPS with its ImageNet VGG16 trunk | `loss.perceptual_network`, `perceptual` |
| `flux-vae-random` | the FLUX.1 VAE (`black-forest-labs/FLUX.1-dev`, `vae`) | tokenizer lists of the evaluations |
| `tiny-random` | FLUX.1's CLIP-L and T5-XXL text encoders | `text_encoders` of the text-to-image recipe |

Builders seed their own generator (`seed`, default 0), so two calls give identical weights and cached statistics stay
valid across runs.
"""

import math
import os
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from diffusers import FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
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
    "CLIP_STANDIN_CONFIG_KEY",
    "FLUX_VAE_CONFIG",
    "STANDINS",
    "StandIn",
    "RandomInceptionStandIn",
    "build_random_clip_standin",
    "build_random_flux_vae",
    "build_tiny_clip_text_encoder",
    "build_tiny_clip_tokenizer",
    "build_tiny_flow_match_scheduler",
    "build_tiny_flux_transformer",
    "build_tiny_t5_encoder",
    "build_tiny_t5_tokenizer",
    "check_standin_name",
    "save_random_clip_standin",
    "tiny_flux_components",
]


@dataclass(frozen=True)
class StandIn:
    """One named offline stand-in.

    Attributes:
        name (`str`): The name configs and command lines use.
        replaces (`str`): The real network it stands in for.
        purpose (`str`): What runs with it (always "the code path", never the real number).
    """

    name: str
    replaces: str
    purpose: str
    is_real_metric: bool = False


STANDINS: dict[str, StandIn] = {
    standin.name: standin
    for standin in (
        StandIn("random-inception-standin", "clean-fid's Inception-v3", "FID / IS / precision-recall code path"),
        StandIn("random-clip-standin", "openai/clip-vit-large-patch14", "CLIP-score code path"),
        StandIn("lpips-vgg-random-trunk", "LPIPS (VGG16 trunk with ImageNet weights)", "perceptual-loss code path"),
        StandIn("flux-vae-random", "the FLUX.1 VAE", "tokenizer comparison code path (costs, shapes)"),
        StandIn("tiny-random", "FLUX.1's CLIP-L and T5-XXL text encoders", "text-to-image training code path"),
    )
}


def check_standin_name(name: str) -> StandIn:
    """The [`StandIn`] called `name`, or a ValueError listing the names that exist."""
    if name not in STANDINS:
        raise ValueError(f"Unknown offline stand-in {name!r}; the stand-ins are {sorted(STANDINS)}.")
    return STANDINS[name]


# ---------------------------------------------------------------------------------------------------------------------
# Text encoders (FLUX's CLIP-L + T5) and the tiny Flux transformer: offline text-to-image runs
# ---------------------------------------------------------------------------------------------------------------------

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


def tiny_flux_components(vae: AlignedAutoencoderKL | None = None, seed: int = 0) -> dict:
    """Constructor arguments of `FluxPipeline` / `FluxImg2ImgPipeline`: tiny CLIP + T5, Flux transformer, `vae`."""
    vae = _tiny_vae(seed) if vae is None else vae
    return {
        "scheduler": build_tiny_flow_match_scheduler(),
        "vae": vae,
        "text_encoder": build_tiny_clip_text_encoder(seed=seed),
        "tokenizer": build_tiny_clip_tokenizer(),
        "text_encoder_2": build_tiny_t5_encoder(seed=seed),
        "tokenizer_2": build_tiny_t5_tokenizer(),
        "transformer": build_tiny_flux_transformer(vae.config.latent_channels, seed=seed),
    }


# ---------------------------------------------------------------------------------------------------------------------
# Metric networks: Inception (FID) and CLIP (CLIP score)
# ---------------------------------------------------------------------------------------------------------------------

# clean-fid resizes to Inception's input size.
_INCEPTION_SIZE = (299, 299)
# Saved in the config of a stand-in CLIP model, so a saved stand-in is still reported as "not a CLIP score".
CLIP_STANDIN_CONFIG_KEY = "aligntok_random_standin"


class RandomInceptionStandIn(nn.Module):
    """An offline stand-in for clean-fid's Inception: a seeded random 3-layer CNN, `(B, 3, 299, 299)` in `[0, 255]`
    -> `(B, feature_dim)`.

    Its numbers are *not* FID. It exists so tests and offline demos run the exact FID code path (quantisation,
    clean-fid resize, streaming statistics, caching) without the Inception download. The weights depend only on
    `seed`, so cached reference statistics stay valid across runs. `feature_dim` defaults to 32 so that a few dozen
    samples already give a full-rank covariance.
    """

    def __init__(self, feature_dim: int = 32, seed: int = 0, resize_inside: bool = False):
        super().__init__()
        # In clean-fid's legacy_tensorflow mode the real network receives images at their own size and resizes them
        # itself; the stand-in does the same (bilinearly) so that mode's code path runs offline too.
        self.resize_inside = resize_inside
        generator = torch.Generator().manual_seed(seed)
        self.layers = nn.Sequential(
            nn.Conv2d(3, 16, kernel_size=7, stride=4, padding=3),
            nn.ReLU(),
            nn.Conv2d(16, 32, kernel_size=5, stride=4, padding=2),
            nn.ReLU(),
            nn.Conv2d(32, feature_dim, kernel_size=3, stride=2, padding=1),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        with torch.no_grad():
            for parameter in self.parameters():
                # Kaiming-uniform-like scale from the fan-in, drawn from the seeded generator.
                fan_in = parameter[0].numel() if parameter.ndim > 1 else parameter.shape[0]
                bound = 1.0 / math.sqrt(fan_in)
                parameter.copy_((torch.rand(parameter.shape, generator=generator) * 2 - 1) * bound * math.sqrt(6))
        self.requires_grad_(False)
        self.eval()

    def forward(self, images_0_255: torch.Tensor) -> torch.Tensor:
        if self.resize_inside and tuple(images_0_255.shape[-2:]) != _INCEPTION_SIZE:
            images_0_255 = nn.functional.interpolate(
                images_0_255, size=_INCEPTION_SIZE, mode="bilinear", align_corners=False
            )
        return self.layers((images_0_255 - 128.0) / 128.0)


def build_random_clip_standin(seed: int = 0):
    """A tiny random `CLIPModel` (2+2 layers, 32 wide, 32x32 images) with an offline character tokenizer and a
    `CLIPImageProcessor`: `(model, tokenizer, image_processor)`. Its "CLIP score" only exercises the code path."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    tokenizer = build_tiny_clip_tokenizer()
    special = tokenizer.get_vocab()
    config = CLIPConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "max_position_embeddings": tokenizer.model_max_length,
            "bos_token_id": special["<|startoftext|>"],
            "eos_token_id": special["<|endoftext|>"],
            "pad_token_id": special["<|endoftext|>"],
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=16,
        **{CLIP_STANDIN_CONFIG_KEY: True},
    )
    torch.manual_seed(seed)
    model = CLIPModel(config).eval()
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return model, tokenizer, image_processor


def save_random_clip_standin(path: str | os.PathLike, seed: int = 0) -> Path:
    """Saves [`build_random_clip_standin`] as a `CLIPModel` + `CLIPProcessor` directory (marked as a stand-in)."""
    from transformers import CLIPProcessor

    model, tokenizer, image_processor = build_random_clip_standin(seed)
    path = Path(path)
    model.save_pretrained(path)
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(path)
    return path


# ---------------------------------------------------------------------------------------------------------------------
# The FLUX.1 VAE with random weights: offline tokenizer comparisons
# ---------------------------------------------------------------------------------------------------------------------

# The FLUX.1 VAE (black-forest-labs/FLUX.1-dev, subfolder "vae"): f8, 16 channels, no quant convs.
FLUX_VAE_CONFIG: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (128, 256, 512, 512),
    "layers_per_block": 2,
    "act_fn": "silu",
    "latent_channels": 16,
    "norm_num_groups": 32,
    "sample_size": 1024,
    "scaling_factor": 0.3611,
    "shift_factor": 0.1159,
    "force_upcast": True,
    "use_quant_conv": False,
    "use_post_quant_conv": False,
    "mid_block_add_attention": True,
}


def build_random_flux_vae(seed: int = 0) -> nn.Module:
    """An `AutoencoderKL` in the FLUX.1 VAE configuration ([`FLUX_VAE_CONFIG`]) with random weights (seeded).

    For offline comparisons of shapes, costs and the evaluation path only: its reconstructions are noise.
    """
    from diffusers import AutoencoderKL

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AutoencoderKL(**FLUX_VAE_CONFIG).eval()


def _tiny_vae(seed: int) -> AlignedAutoencoderKL:
    torch.manual_seed(seed)
    return AlignedAutoencoderKL.from_preset("tiny").eval()
