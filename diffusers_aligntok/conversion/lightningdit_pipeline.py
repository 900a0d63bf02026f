"""An [`AlignTokDiTPipeline`] around a converted LightningDiT checkpoint, with LightningDiT's latent statistics.

LightningDiT trains on latents normalised per channel, `z_norm = (z - mean) / std * latent_multiplier`, with `mean`
and `std` from the `latents_stats.pt` that its `datasets/img_latent_dataset.py` writes next to the cached latents
(`{"mean": (1, C, 1, 1), "std": (1, C, 1, 1)}`, over 10,000 random training latents) and `latent_multiplier` from the
training config (`data.latent_multiplier`, 1.0 in the published configs). Its `inference.py` undoes that before
decoding: `z = z_norm * std / latent_multiplier + mean`. [`AlignTokDiTPipeline`] decodes with
`z_norm * latents_std / scaling_factor + latents_mean` from the VAE's config, so the statistics go into
`latents_mean` / `latents_std` and the multiplier into `scaling_factor` (with `shift_factor = 0`).
"""

import os
from typing import Any

import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from diffusers.utils import logging

from ..pipelines.pipeline_aligntok_dit import AlignTokDiTPipeline
from .checkpoints import load_tensor_checkpoint
from .lightningdit_transformer import LightningDiTArchitecture, convert_lightningdit_checkpoint


logger = logging.get_logger(__name__)

# LightningDiT's `data.latent_multiplier` in its published configs (train.py's fallback, 0.18215, is SD-VAE's).
DEFAULT_LATENT_MULTIPLIER = 1.0


def load_lightningdit_latent_stats(
    latents_stats_path: str | os.PathLike, num_channels: int
) -> tuple[list[float], list[float]]:
    """Per-channel `(mean, std)` from LightningDiT's `latents_stats.pt`, checked against `num_channels`."""
    stats = load_tensor_checkpoint(latents_stats_path)
    path = os.fspath(latents_stats_path)
    if not isinstance(stats, dict) or not {"mean", "std"} <= set(stats):
        found = sorted(map(str, stats)) if isinstance(stats, dict) else type(stats).__name__
        raise ValueError(
            f"{path!r} is not a LightningDiT latents_stats.pt: expected a dict with 'mean' and 'std' tensors of shape "
            f"(1, channels, 1, 1), found {found}."
        )
    values = {}
    for name in ("mean", "std"):
        tensor = stats[name]
        if not torch.is_tensor(tensor) or tensor.numel() != num_channels or tensor.squeeze().ndim > 1:
            shape = tuple(tensor.shape) if torch.is_tensor(tensor) else type(tensor).__name__
            raise ValueError(
                f"The {name!r} of {path!r} has shape {shape}, but the VAE and the transformer have {num_channels} "
                f"latent channels (expected (1, {num_channels}, 1, 1)). Use the latents_stats.pt of the latents this "
                "LightningDiT was trained on."
            )
        values[name] = tensor.detach().double().reshape(-1)
        if not torch.isfinite(values[name]).all():
            raise ValueError(f"The {name!r} of {path!r} contains NaN or inf.")
    if (values["std"] <= 0).any():
        channel = int((values["std"] <= 0).nonzero()[0])
        value = values["std"][channel].item()
        raise ValueError(f"The 'std' of {path!r} is {value} for channel {channel}; it must be > 0.")
    return values["mean"].tolist(), values["std"].tolist()


def lightningdit_scheduler(timestep_shift: float = 0.3) -> FlowMatchEulerDiscreteScheduler:
    """Euler flow-matching scheduler with LightningDiT's `sample.timestep_shift` (0 = none) as diffusers' shift.

    LightningDiT shifts its time `t` (0 = noise) to `s t / (1 + (s - 1) t)`; in `sigma = 1 - t` that is diffusers'
    `shift * sigma / (1 + (shift - 1) * sigma)` with `shift = 1 / s`.
    """
    if not isinstance(timestep_shift, (int, float)) or isinstance(timestep_shift, bool) or timestep_shift < 0:
        raise ValueError(
            f"timestep_shift={timestep_shift!r} must be a number >= 0 (LightningDiT's sample.timestep_shift: 0.3 in "
            "its published configs, 0 for no shift)."
        )
    return FlowMatchEulerDiscreteScheduler(shift=1.0 / timestep_shift if timestep_shift > 0 else 1.0)


def convert_lightningdit_pipeline(
    checkpoint_path: str | os.PathLike,
    vae: Any,
    latents_stats_path: str | os.PathLike | None = None,
    model_type: str | LightningDiTArchitecture = "LightningDiT-XL/1",
    use_qknorm: bool = False,
    timestep_shift: float = 0.3,
    latent_multiplier: float | None = None,
    num_classes: int = 1000,
    input_size: int = 16,
) -> AlignTokDiTPipeline:
    r"""
    An [`AlignTokDiTPipeline`] that samples from a LightningDiT checkpoint.

    Args:
        checkpoint_path (`str` or `os.PathLike`): The LightningDiT checkpoint (see [`convert_lightningdit_checkpoint`]).
        vae ([`AlignedAutoencoderKL`], [`~diffusers.AutoencoderKL`] or a VAE with the same interface):
            The tokenizer whose latents the LightningDiT was trained on; its `latent_channels` are the transformer's
            `in_channels`. With `latents_stats_path`, its config is updated **in place** (`latents_mean`,
            `latents_std`, `scaling_factor`, `shift_factor`) so that the pipeline denormalises as LightningDiT does.
        latents_stats_path (`str` or `os.PathLike`, *optional*):
            LightningDiT's `latents_stats.pt` (`{"mean", "std"}`, each `(1, C, 1, 1)`). Without it the VAE's own
            normalisation is kept (for a tokenizer whose config already holds the statistics the DiT was trained with).
        model_type (`str` or [`LightningDiTArchitecture`], defaults to `"LightningDiT-XL/1"`):
            The training config's `model.model_type`, or `"auto"`.
        use_qknorm (`bool`, defaults to `False`): The config's `model.use_qknorm`.
        timestep_shift (`float`, defaults to 0.3):
            The config's `sample.timestep_shift` (0.3 published, 0 = none); the scheduler's shift is its inverse.
        latent_multiplier (`float`, *optional*):
            The config's `data.latent_multiplier`; with `latents_stats_path` it defaults to 1.0 (the published value)
            and becomes the VAE's `scaling_factor`.
        num_classes (`int`, defaults to 1000): The config's `data.num_classes`.
        input_size (`int`, defaults to 16): The latent side, `data.image_size / vae.downsample_ratio`.
    """
    latent_channels = getattr(getattr(vae, "config", None), "latent_channels", None)
    if not isinstance(latent_channels, int) or not hasattr(vae, "decode"):
        raise TypeError(
            f"vae must be an AutoencoderKL-like model with `decode` and a config with `latent_channels`, got "
            f"{type(vae).__name__}."
        )
    if latents_stats_path is None and latent_multiplier is not None:
        raise ValueError(
            f"latent_multiplier={latent_multiplier} is used only with latents_stats_path (it becomes the VAE's "
            "scaling_factor next to the statistics); pass the latents_stats.pt too, or leave latent_multiplier unset."
        )
    scheduler = lightningdit_scheduler(timestep_shift)
    try:
        transformer = convert_lightningdit_checkpoint(
            checkpoint_path,
            model_type,
            use_qknorm=use_qknorm,
            in_channels=latent_channels,
            num_classes=num_classes,
            input_size=input_size,
        )
    except ValueError as error:
        if "fit no LightningDiT model type" not in str(error):
            raise
        raise ValueError(
            f"{error}\n(in_channels is the VAE's latent_channels={latent_channels}: use the tokenizer whose latents "
            "the LightningDiT was trained on.)"
        ) from error
    if latents_stats_path is not None:
        latent_multiplier = DEFAULT_LATENT_MULTIPLIER if latent_multiplier is None else latent_multiplier
        is_number = isinstance(latent_multiplier, (int, float)) and not isinstance(latent_multiplier, bool)
        if not is_number or latent_multiplier <= 0:
            raise ValueError(f"latent_multiplier={latent_multiplier!r} must be a positive number (1.0 published).")
        mean, std = load_lightningdit_latent_stats(latents_stats_path, latent_channels)
        vae.register_to_config(
            latents_mean=mean, latents_std=std, scaling_factor=float(latent_multiplier), shift_factor=0.0
        )
    elif getattr(vae.config, "latents_mean", None) is None:
        logger.warning(
            "No latents_stats_path and the VAE has no latents_mean/latents_std: the pipeline will decode the DiT's "
            "normalised latents with the VAE's scaling_factor/shift_factor only. LightningDiT trains on per-channel "
            "normalised latents; pass its latents_stats.pt."
        )
    return AlignTokDiTPipeline(transformer=transformer, vae=vae, scheduler=scheduler)
