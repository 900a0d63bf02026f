"""Config schema of `training/train_dit.py` (loaded strictly, like the tokenizer stages' config)."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import ConfigError, config_from_dict, read_yaml_config


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


@dataclass
class FlowMatchingConfig:
    # Training sigma density (diffusers' `compute_density_for_timestep_sampling`): "logit_normal" as LightningDiT.
    timestep_sampling: str = "logit_normal"
    logit_mean: float = 0.0
    logit_std: float = 1.0
    # Training-time timestep shift (1 = none).
    timestep_shift: float = 1.0
    # Weight of LightningDiT's velocity-direction cosine loss (0 disables it).
    velocity_cosine_weight: float = 0.0


@dataclass
class DiTOptimizerConfig:
    learning_rate: float = 2.0e-4
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    weight_decay: float = 0.0
    lr_scheduler: str = "constant"
    lr_warmup_steps: int = 0
    max_grad_norm: float = 1.0


@dataclass
class DiTTrainingConfig:
    train_batch_size: int = 128
    gradient_accumulation_steps: int = 1
    max_train_steps: int = 80000
    mixed_precision: str = "bf16"
    gradient_checkpointing: bool = False
    compile: bool = False
    seed: int = 0
    ema_decay: float | None = 0.9999
    checkpointing_steps: int = 5000
    checkpoints_total_limit: int | None = 3
    validation_steps: int = 5000
    log_every_steps: int = 50
    report_to: str = "tensorboard"


@dataclass
class DiTValidationConfig:
    # The tokenizer that decodes validation samples and goes into the saved pipeline; must be the cache's tokenizer.
    tokenizer: str | None = None
    class_labels: list = field(default_factory=lambda: [0, 1, 2, 3, 4, 5, 6, 7])
    num_inference_steps: int = 50
    guidance_scale: float = 1.0
    guidance_interval: list = field(default_factory=lambda: [0.0, 1.0])
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


def load_dit_config(path: str | Path) -> DiTConfig:
    config = config_from_dict(DiTConfig, read_yaml_config(path), Path(path).name)
    where = Path(path).name
    if not config.data.cache_dir:
        raise ConfigError(f"{where}: data.cache_dir is required (a directory written by training/cache_latents.py).")
    if config.training.mixed_precision not in ("no", "bf16"):
        raise ConfigError(f"{where}: training.mixed_precision must be 'no' or 'bf16' (fp16 overflows DiT training).")
    if config.optimizer.learning_rate <= 0 or config.training.max_train_steps <= 0:
        raise ConfigError(f"{where}: optimizer.learning_rate and training.max_train_steps must be positive.")
    if config.flow.timestep_shift <= 0:
        raise ConfigError(f"{where}: flow.timestep_shift must be positive, got {config.flow.timestep_shift}.")
    return config
