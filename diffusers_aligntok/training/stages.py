"""What each AlignTok stage trains, and from what it starts (paper, Sec. 3 / DESIGN.md).

| stage | starts from | trained | frozen | extra loss |
|---|---|---|---|---|
| 1 latent alignment | pretrained foundation encoder | adapter + decoder | encoder | - |
| 2 perceptual alignment | stage-1 model | encoder + adapter + decoder | stage-1 encoder + adapter (target) | w_sp * L_sp |
| 3 decoder refinement | stage-2 model | decoder | encoder + adapter | - |
"""

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from ..models import AlignedAutoencoderKL, get_preset
from .config import StageConfig


logger = logging.getLogger(__name__)


@dataclass
class StageModels:
    tokenizer: AlignedAutoencoderKL
    # Frozen copy of the previous stage's encoder + adapter whose latents L_sp pulls towards (stage 2 only).
    semantic_target: AlignedAutoencoderKL | None
    # Optimizer parameter groups of the tokenizer (the encoder may have its own learning rate).
    parameter_groups: list[dict]
    frozen_modules: list[torch.nn.Module]


def stage_output_dir(output_dir: str | Path, stage: int) -> Path:
    return Path(output_dir) / f"stage{stage}"


def stage_model_dir(output_dir: str | Path, stage: int) -> Path:
    return stage_output_dir(output_dir, stage) / "model"


def resolve_init_dir(config: StageConfig, stage: int, output_dir: str | Path) -> Path:
    """The directory of the model a stage-2 or stage-3 run starts from; fails before training if it is missing."""
    init_dir = Path(config.model.init_from) if config.model.init_from else stage_model_dir(output_dir, stage - 1)
    if not (init_dir / "config.json").is_file():
        raise FileNotFoundError(
            f"Stage {stage} starts from the stage-{stage - 1} model, but {init_dir} holds no saved AlignedAutoencoderKL "
            f"(no config.json). Run stage {stage - 1} first (`--stage {stage - 1}` with the same --output_dir), or set "
            "model.init_from to a directory written by AlignedAutoencoderKL.save_pretrained."
        )
    return init_dir


def build_stage_models(config: StageConfig, stage: int, output_dir: str | Path) -> StageModels:
    if stage == 1:
        tokenizer = _build_stage1_tokenizer(config)
    else:
        tokenizer = AlignedAutoencoderKL.from_pretrained(resolve_init_dir(config, stage, output_dir))
        # A config override (e.g. latent_noise_std) only touches fields that do not change the weights' shapes.
        for key, value in config.model.overrides.items():
            if key in ("latent_noise_std", "sample_size", "scaling_factor", "shift_factor", "force_upcast"):
                tokenizer.register_to_config(**{key: value})

    semantic_target = None
    optimizer, training = config.optimizer, config.training
    if stage == 1:
        frozen = [tokenizer.encoder]
        groups = [{"params": [*tokenizer.adapter.parameters(), *tokenizer.decoder.parameters()]}]
    elif stage == 2:
        semantic_target = AlignedAutoencoderKL.from_pretrained(resolve_init_dir(config, stage, output_dir))
        del semantic_target.decoder  # only encoder + adapter give the L_sp target; saves the decoder's memory
        semantic_target.requires_grad_(False).eval()
        frozen = []
        encoder_parameters = _encoder_parameters_for_stage2(tokenizer, training.encoder_lora_rank)
        groups = [
            {"params": encoder_parameters, "lr": optimizer.encoder_learning_rate or optimizer.learning_rate},
            {"params": [*tokenizer.adapter.parameters(), *tokenizer.decoder.parameters()]},
        ]
    elif stage == 3:
        frozen = [tokenizer.encoder, tokenizer.adapter]  # the latent space stays bit-for-bit the same
        groups = [{"params": list(tokenizer.decoder.parameters())}]
    else:
        raise ValueError(f"stage must be 1, 2 or 3, got {stage}.")
    for module in frozen:
        module.requires_grad_(False).eval()
    if training.gradient_checkpointing:
        tokenizer.enable_gradient_checkpointing()
    return StageModels(tokenizer, semantic_target, groups, frozen)


def _build_stage1_tokenizer(config: StageConfig) -> AlignedAutoencoderKL:
    preset = get_preset(config.model.preset)
    model_kwargs = {**preset.config, **config.model.overrides}
    if config.model.foundation_encoder is None:
        logger.warning("model.foundation_encoder is null: stage 1 starts from a RANDOM encoder (tests only).")
        return AlignedAutoencoderKL(**model_kwargs)
    # The checkpoint defines the encoder architecture; the preset's encoder_config must agree with it.
    return AlignedAutoencoderKL.from_foundation_encoder(config.model.foundation_encoder, **model_kwargs)


def _encoder_parameters_for_stage2(tokenizer: AlignedAutoencoderKL, lora_rank: int | None) -> list[torch.nn.Parameter]:
    if lora_rank is None:
        # Mask tokens serve only masked pretraining and never get a gradient here; DDP requires every trained
        # parameter to get one (DINOv2 with registers always has one).
        for name, parameter in tokenizer.encoder.named_parameters():
            if name.endswith("mask_token"):
                parameter.requires_grad_(False)
        return [parameter for parameter in tokenizer.encoder.parameters() if parameter.requires_grad]
    # The paper found LoRA worse than full fine-tuning; offered for memory-bound setups.
    from peft import LoraConfig

    tokenizer.encoder.requires_grad_(False)
    tokenizer.add_adapter(
        LoraConfig(r=lora_rank, lora_alpha=lora_rank, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]),
        adapter_name="encoder_lora",
    )
    # peft marks only LoRA weights trainable across the whole model; adapter and decoder still train in full.
    tokenizer.adapter.requires_grad_(True)
    tokenizer.decoder.requires_grad_(True)
    return [p for name, p in tokenizer.encoder.named_parameters() if "lora_" in name]


def export_tokenizer(tokenizer: AlignedAutoencoderKL) -> AlignedAutoencoderKL:
    """A plain `AlignedAutoencoderKL` for saving: LoRA (if any) merged into the encoder weights."""
    if getattr(tokenizer, "_hf_peft_config_loaded", False):
        import copy

        tokenizer = copy.deepcopy(tokenizer)
        tokenizer.fuse_lora(adapter_names=["encoder_lora"])
        tokenizer.unload_lora()
    return tokenizer
