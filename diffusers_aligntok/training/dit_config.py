"""Config schema of `training/train_dit.py` (loaded strictly, like the tokenizer stages' config)."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import (
    ConfigError,
    OptimizerConfig,
    TrainingConfig,
    apply_dotted_overrides,
    config_from_dict,
    read_yaml_config,
)


@dataclass
class DiTModelConfig:
    # "B", "L", "XL" (LightningDiT sizes) or "tiny"; in_channels and sample_size come from the latent cache.
    preset: str = "XL"
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class LatentDataConfig:
    cache_dir: str = ""
    # Use the cached horizontally flipped latent with probability 0.5.
    random_flip: bool = True
    dataloader_num_workers: int = 4


TIMESTEP_SAMPLING_CHOICES = ("logit_normal", "uniform", "mode")


@dataclass
class FlowMatchingConfig:
    # Training sigma density (diffusers' `compute_density_for_timestep_sampling`): "logit_normal" as LightningDiT.
    timestep_sampling: str = "logit_normal"
    logit_mean: float = 0.0
    logit_std: float = 1.0
    # From this many optimiser steps on, sigmas are uniform instead of logit-normal (LightningDiT's 800-epoch run
    # turned `use_lognorm` off at 600K steps); None keeps `timestep_sampling` throughout.
    logit_normal_until_step: int | None = None
    # Training-time timestep shift (1 = none).
    timestep_shift: float = 1.0
    # Weight of LightningDiT's velocity-direction cosine loss, per latent position over channels (0 disables it).
    velocity_cosine_weight: float = 0.0


@dataclass
class DiTOptimizerConfig(OptimizerConfig):
    # The shared AdamW fields with the paper's DiT values (lr 2e-4, beta2 0.95, constant schedule).
    learning_rate: float = 2.0e-4
    adam_beta2: float = 0.95


@dataclass
class DiTTrainingConfig(TrainingConfig):
    # The shared fields with ImageNet DiT defaults (global batch 1024 = 8 x 128, 80K steps = 64 epochs).
    train_batch_size: int = 128
    max_train_steps: int = 80000
    ema_decay: float | None = 0.9999
    checkpointing_steps: int = 5000
    validation_steps: int = 5000
    log_every_steps: int = 50


@dataclass
class DiTValidationConfig:
    """Sampling of the validation grids, and the shift of the saved pipeline's scheduler (diffusers' conventions).

    LightningDiT's `sample` settings map as: `num_sampling_steps: N` -> `num_inference_steps: N - 1` (its grid has N
    points), `cfg_scale` -> `guidance_scale`, `cfg_interval_start: s` -> `guidance_interval: [0.0, 1 - s]`,
    `timestep_shift: s` -> `sampling_shift: 1 / s`, and its 3-channel `forward_with_cfg` -> `guidance_channels: 3`.
    """

    # The tokenizer that decodes validation samples and goes into the saved pipeline; must be the cache's tokenizer.
    tokenizer: str | None = None
    class_labels: list = field(default_factory=lambda: [0, 1, 2, 3, 4, 5, 6, 7])
    # Euler steps (model evaluations) of `AlignTokDiTPipeline`.
    num_inference_steps: int = 50
    guidance_scale: float = 1.0
    # Noise levels [low, high] (sigma, 1 = noise) where guidance is on.
    guidance_interval: list = field(default_factory=lambda: [0.0, 1.0])
    # Guide only the first k latent channels; None guides all of them (the standard form, our default).
    guidance_channels: int | None = None
    # The `shift` of the saved pipeline's FlowMatchEulerDiscreteScheduler (1 = none).
    sampling_shift: float = 1.0
    seed: int = 0


@dataclass
class DiTConfig:
    model: DiTModelConfig = field(default_factory=DiTModelConfig)
    data: LatentDataConfig = field(default_factory=LatentDataConfig)
    flow: FlowMatchingConfig = field(default_factory=FlowMatchingConfig)
    optimizer: DiTOptimizerConfig = field(default_factory=DiTOptimizerConfig)
    training: DiTTrainingConfig = field(default_factory=DiTTrainingConfig)
    validation: DiTValidationConfig = field(default_factory=DiTValidationConfig)


def load_dit_config(path: str | Path, overrides: dict[str, Any] | None = None) -> DiTConfig:
    """Reads and validates a DiT config; `overrides` (`{"training.seed": 1}`) replace single keys first, in order."""
    where = Path(path).name
    config = config_from_dict(DiTConfig, apply_dotted_overrides(read_yaml_config(path), overrides or {}, where), where)
    if not config.data.cache_dir:
        raise ConfigError(f"{where}: data.cache_dir is required (a directory written by training/cache_latents.py).")
    if config.training.mixed_precision not in ("no", "bf16"):
        raise ConfigError(f"{where}: training.mixed_precision must be 'no' or 'bf16' (fp16 overflows DiT training).")
    if config.optimizer.learning_rate <= 0 or config.training.max_train_steps <= 0:
        raise ConfigError(f"{where}: optimizer.learning_rate and training.max_train_steps must be positive.")
    flow, validation = config.flow, config.validation
    if flow.timestep_shift <= 0:
        raise ConfigError(f"{where}: flow.timestep_shift must be positive, got {flow.timestep_shift}.")
    if flow.timestep_sampling not in TIMESTEP_SAMPLING_CHOICES:
        raise ConfigError(
            f"{where}: flow.timestep_sampling must be one of {list(TIMESTEP_SAMPLING_CHOICES)}, got "
            f"{flow.timestep_sampling!r}."
        )
    if flow.logit_normal_until_step is not None and (
        flow.logit_normal_until_step < 0 or flow.timestep_sampling != "logit_normal"
    ):
        raise ConfigError(
            f"{where}: flow.logit_normal_until_step={flow.logit_normal_until_step} needs a step >= 0 and "
            f"flow.timestep_sampling: logit_normal (got {flow.timestep_sampling!r}); set it to null otherwise."
        )
    if validation.sampling_shift <= 0:
        raise ConfigError(f"{where}: validation.sampling_shift must be positive, got {validation.sampling_shift}.")
    if validation.num_inference_steps < 1:
        raise ConfigError(
            f"{where}: validation.num_inference_steps must be at least 1, got {validation.num_inference_steps}."
        )
    interval = validation.guidance_interval
    numbers = len(interval) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in interval)
    if not numbers or not 0 <= interval[0] <= interval[1] <= 1:
        raise ConfigError(
            f"{where}: validation.guidance_interval must be [low, high] with 0 <= low <= high <= 1 (noise levels "
            f"sigma; LightningDiT's cfg_interval_start s is [0.0, 1 - s]), got {interval}."
        )
    if validation.guidance_channels is not None and validation.guidance_channels < 1:
        raise ConfigError(
            f"{where}: validation.guidance_channels must be null (all channels) or at least 1, got "
            f"{validation.guidance_channels}."
        )
    return config
