"""`FluxPipeline` with a configurable latent patch size, for FLUX-architecture transformers on AlignTok latents.

The stock `FluxPipeline` always packs latents into 2x2 patches (`in_channels = 4 x latent channels`). On the FLUX VAE
(f8) that gives one token per 16x16 pixels. On an f16 AlignTok latent the same packing gives one token per 32x32
pixels: a quarter of the tokens, so a different (and much cheaper) model than the FLUX-VAE arm it is compared with.
Our text-to-image recipe therefore keeps *16 pixels per token* for every VAE: patch 2 on f8 latents, patch 1 on f16
latents (exactly as the ImageNet DiT puts patch 1 on AlignTok's 16x16x32 latent).

Patch 2 needs nothing new: the stock `FluxPipeline` runs it, with `AlignedAutoencoderKL` as its `vae`. Patch 1 is the one
thing the stock pipeline cannot express, so [`AlignTokFluxPipeline`] overrides only the packing: the patch size is
read from the two models' configs (`transformer.config.in_channels / vae.config.latent_channels = patch**2`), and
everything else (prompt encoding, true CFG, the resolution-dependent timestep shift, decoding with `scaling_factor` and
`shift_factor`) is `FluxPipeline`'s own code. With a patch-2 transformer it behaves exactly like `FluxPipeline`.

The module-level helpers ([`pack_latents`], [`unpack_latents`], [`latent_image_ids`]) are what training uses, so
training and sampling cannot disagree on the token layout.
"""

import math

import torch
from diffusers import FluxPipeline
from diffusers.utils import logging
from diffusers.utils.torch_utils import randn_tensor


logger = logging.get_logger(__name__)


def pack_latents(latents: torch.Tensor, patch_size: int) -> torch.Tensor:
    """`(B, C, H, W)` latents -> `(B, (H/p)(W/p), C p p)` tokens, row-major; `FluxPipeline._pack_latents` for p = 2."""
    batch, channels, height, width = latents.shape
    if height % patch_size or width % patch_size:
        raise ValueError(f"Latent size {height}x{width} is not divisible by the latent patch size {patch_size}.")
    latents = latents.view(batch, channels, height // patch_size, patch_size, width // patch_size, patch_size)
    latents = latents.permute(0, 2, 4, 1, 3, 5)
    return latents.reshape(batch, (height // patch_size) * (width // patch_size), channels * patch_size**2)


def unpack_latents(tokens: torch.Tensor, height: int, width: int, patch_size: int) -> torch.Tensor:
    """Inverse of [`pack_latents`]: tokens -> `(B, C, height, width)` latents (`height`, `width` in latent pixels)."""
    batch, _, packed_channels = tokens.shape
    channels = packed_channels // patch_size**2
    latents = tokens.view(batch, height // patch_size, width // patch_size, channels, patch_size, patch_size)
    latents = latents.permute(0, 3, 1, 4, 2, 5)
    return latents.reshape(batch, channels, height, width)


def latent_image_ids(token_rows: int, token_columns: int, device=None, dtype=None) -> torch.Tensor:
    """FLUX's `(rows * columns, 3)` positional ids of the image tokens: `(0, row, column)`, row-major."""
    return FluxPipeline._prepare_latent_image_ids(1, token_rows, token_columns, device, dtype)


def latent_patch_size(transformer_in_channels: int, vae_latent_channels: int) -> int:
    """The packing `p` with `in_channels = latent_channels * p**2`; a clear error when the two models do not fit."""
    ratio = transformer_in_channels / vae_latent_channels
    patch_size = round(math.sqrt(ratio))
    if patch_size < 1 or patch_size**2 * vae_latent_channels != transformer_in_channels:
        raise ValueError(
            f"The transformer's in_channels ({transformer_in_channels}) is not latent_channels x patch_size**2 for the "
            f"VAE's {vae_latent_channels} latent channels. A FLUX transformer for this VAE needs in_channels = "
            f"{vae_latent_channels} (patch 1) or {4 * vae_latent_channels} (patch 2, the stock FluxPipeline's packing)."
        )
    return patch_size


class AlignTokFluxPipeline(FluxPipeline):
    r"""
    [`~diffusers.FluxPipeline`] whose latent packing follows the transformer: patch `p` with
    `transformer.config.in_channels == vae.config.latent_channels * p**2` (1 for f16 AlignTok latents at FLUX's token
    density; 2 reproduces `FluxPipeline` exactly). Same components, arguments and outputs as `FluxPipeline`; image
    sides must be multiples of `vae_scale_factor * p`.
    """

    @property
    def latent_patch_size(self) -> int:
        return latent_patch_size(self.transformer.config.in_channels, self.vae.config.latent_channels)

    def prepare_latents(self, batch_size, num_channels_latents, height, width, dtype, device, generator, latents=None):
        # `num_channels_latents` comes from FluxPipeline as in_channels // 4; the VAE's own count is the right one.
        patch = self.latent_patch_size
        height, width = self._latent_size(height, width)
        ids = latent_image_ids(height // patch, width // patch, device, dtype)
        if latents is not None:
            return latents.to(device=device, dtype=dtype), ids
        if isinstance(generator, list) and len(generator) != batch_size:
            raise ValueError(f"Got {len(generator)} generators for an effective batch size of {batch_size}.")
        shape = (batch_size, self.vae.config.latent_channels, height, width)
        noise = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        return pack_latents(noise, patch), ids

    def _unpack_latents(self, latents, height, width, vae_scale_factor):
        # FluxPipeline calls this as `self._unpack_latents(latents, height, width, self.vae_scale_factor)`.
        return unpack_latents(latents, *self._latent_size(height, width), self.latent_patch_size)

    def _latent_size(self, height: int, width: int) -> tuple[int, int]:
        """Latent height and width for an image size, rounded down to whole tokens (as FluxPipeline rounds)."""
        patch = self.latent_patch_size
        step = self.vae_scale_factor * patch
        return patch * (int(height) // step), patch * (int(width) // step)

    def check_inputs(self, prompt, prompt_2, height, width, *args, **kwargs):
        # FluxPipeline's own check warns unless sides divide by vae_scale_factor * 2, which is wrong for patch 1;
        # warn with the real step (like FluxPipeline, sizes are then rounded down) and let it check everything else.
        step = self.vae_scale_factor * self.latent_patch_size
        if height % step or width % step:
            logger.warning(
                f"height and width should be multiples of {step} (VAE factor {self.vae_scale_factor} x latent patch "
                f"{self.latent_patch_size}), got {height}x{width}; the image is rounded down to whole tokens."
            )
        whole = self.vae_scale_factor * 2
        return super().check_inputs(prompt, prompt_2, whole, whole, *args, **kwargs)
