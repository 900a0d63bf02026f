"""The training loop of one AlignTok stage, read top to bottom: setup, resume, steps, checkpoints, final export."""

import copy
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger

from ..data import ImageDatasetConfig, build_image_dataset
from ..losses import PatchGANDiscriminator, ReconstructionLoss, build_perceptual_network
from ..models import AlignedAutoencoderKL
from ..utils import to_jsonable
from .config import ConfigError, StageConfig, config_to_dict
from .discriminator_handoff import load_discriminator_state, resolve_discriminator_init, save_discriminator_state
from .io_utils import save_pretrained_atomically
from .stages import build_stage_models, export_tokenizer, stage_model_dir, stage_output_dir
from .step import TokenizerReconstruction, TokenizerTrainingComponents, loggable_values, tokenizer_training_step
from .trainer import Trainer
from .validation import log_validation_images, psnr, reconstruct, save_reconstruction_grid


logger = get_logger(__name__)


def run_stage(
    config: StageConfig,
    stage: int,
    output_dir: str | Path,
    resume_from_checkpoint: str | None = None,
    run_record: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Trains one stage and writes `<output_dir>/stage<k>/model` (diffusers format) plus its config and metrics.

    `run_record` (what the command line decided: overrides, where the mixed precision came from) is written into
    `training_config.json` beside the config.

    Also writes `<output_dir>/stage<k>/discriminator/` (weights and optimiser state) when the stage trains a GAN, for
    the next stage to carry on (`loss.discriminator_init_from`). It does not call `accelerator.end_training()`: that
    destroys the process group, which the next stage of the same command still needs; the caller ends it once
    (`train_stage.py` does, after the last stage).
    """
    training, optimizer_config, loss_config = config.training, config.optimizer, config.loss
    stage_dir = stage_output_dir(output_dir, stage)
    trainer = Trainer(training, stage_dir, name=f"stage {stage}")
    accelerator = trainer.accelerator

    # ---- data (fails early on an empty or unreadable source, before models are built) ----
    with accelerator.main_process_first():  # one rank fills the datasets cache, the others read it
        dataset = build_image_dataset(_dataset_config(config, validation=False))
        validation_images = _validation_images(config)

    # ---- models, losses, optimisers ----
    models = build_stage_models(config, stage, output_dir)
    tokenizer = models.tokenizer
    _check_resolution_fits(config, tokenizer)
    discriminator = PatchGANDiscriminator(**asdict(loss_config.discriminator)) if loss_config.gan_weight > 0 else None
    # Where the discriminator starts: the previous stage's (weights now, optimiser state after `prepare`) or fresh.
    discriminator_init_dir = (
        resolve_discriminator_init(config, stage, output_dir) if discriminator is not None else None
    )
    carried_discriminator = (
        load_discriminator_state(discriminator_init_dir, loss_config.discriminator)
        if discriminator_init_dir is not None
        else None
    )
    if carried_discriminator is not None:
        discriminator.load_state_dict(carried_discriminator.weights)
    perceptual_network = build_perceptual_network(
        loss_config.perceptual_network if loss_config.perceptual_weight > 0 else None,
        trunk_weights_path=loss_config.perceptual_trunk_weights_path,
    )
    reconstruction_loss = ReconstructionLoss(
        perceptual_network=perceptual_network,
        l1_weight=loss_config.l1_weight,
        perceptual_weight=loss_config.perceptual_weight,
        gan_weight=loss_config.gan_weight,
        gan_start_step=loss_config.gan_start_step,
        adaptive_weight_max=loss_config.adaptive_weight_max,
    )
    tokenizer_optimizer = trainer.adamw(models.parameter_groups, optimizer_config)
    discriminator_optimizer = (
        # The discriminator has always trained with torch's AdamW default weight decay (0.01), not the tokenizer's.
        trainer.adamw(
            discriminator.parameters(),
            optimizer_config,
            learning_rate=optimizer_config.discriminator_learning_rate,
            weight_decay=0.01,
        )
        if discriminator is not None
        else None
    )
    lr_scheduler = trainer.lr_scheduler(tokenizer_optimizer, optimizer_config)
    _register_checkpoint_hooks(accelerator)

    dataloader = torch.utils.data.DataLoader(
        dataset,
        batch_size=training.train_batch_size,
        shuffle=True,
        num_workers=config.data.dataloader_num_workers,
        drop_last=True,
        persistent_workers=False,  # workers must see `dataset.set_epoch` (augmentations depend on the epoch)
        # Its own generator, so creating an iterator (also the one a resume creates mid-epoch) never draws from the
        # global RNG that the random crops and flips use: with in-process loading a resume replays them exactly.
        generator=torch.Generator().manual_seed(training.seed),
    )
    # The training forward is the prepared wrapper's: DDP/FSDP/DeepSpeed see every forward that carries gradients.
    prepared = accelerator.prepare(TokenizerReconstruction(tokenizer), tokenizer_optimizer, dataloader, lr_scheduler)
    reconstruction_module, tokenizer_optimizer, dataloader, lr_scheduler = prepared
    if discriminator is not None:
        discriminator, discriminator_optimizer = accelerator.prepare(discriminator, discriminator_optimizer)
        if carried_discriminator is not None:
            carried_discriminator.load_optimizer_state(accelerator, discriminator_optimizer)
            logger.info(
                f"Stage {stage}: discriminator carried over from {discriminator_init_dir} "
                f"({carried_discriminator.num_updates} updates so far)"
            )
    reconstruction_loss.to(accelerator.device)
    if models.semantic_target is not None:
        models.semantic_target.to(accelerator.device)
    raw_tokenizer: AlignedAutoencoderKL = accelerator.unwrap_model(reconstruction_module).tokenizer
    trainer.track_ema(raw_tokenizer)
    if training.compile:
        # In-place compile keeps parameter names, so checkpoints and save_pretrained are unaffected.
        raw_tokenizer.encoder.compile()
        raw_tokenizer.decoder.compile()

    # ---- resume ----
    trainer.resume(
        resume_from_checkpoint,
        training_state={"stage": stage, "model_config": to_jsonable(dict(raw_tokenizer.config))},
    )
    synchronized_models = {"tokenizer": reconstruction_module}
    if discriminator is not None:
        synchronized_models["discriminator"] = discriminator
    components = TokenizerTrainingComponents(
        accelerator=accelerator,
        reconstruction_module=reconstruction_module,
        discriminator=discriminator,
        reconstruction_loss=reconstruction_loss,
        tokenizer_optimizer=tokenizer_optimizer,
        tokenizer_lr_scheduler=lr_scheduler,
        discriminator_optimizer=discriminator_optimizer,
        semantic_target=models.semantic_target,
        semantic_preservation_weight=loss_config.semantic_preservation_weight if stage == 2 else 0.0,
        semantic_preservation_kind=loss_config.semantic_preservation_kind,
        max_grad_norm=optimizer_config.max_grad_norm,
    )
    num_skipped_images = torch.zeros((), device=accelerator.device)
    # Reconstruction quality before this run's first step: the baseline the stage's metrics are compared with.
    psnr_at_start = (
        float(psnr(validation_images, reconstruct(raw_tokenizer, validation_images)).mean())
        if accelerator.is_main_process
        else None
    )
    trainer.start_run(f"aligntok_stage{stage}", {"stage": stage, **config_to_dict(config)}, run_record)

    # ---- train ----
    reconstruction_module.train()
    for module in models.frozen_modules:
        module.eval()  # frozen parts keep eval-mode behaviour (no dropout / drop-path)
    for batch in trainer.micro_batches(dataloader, epoch_hooks=[dataset.set_epoch]):
        # The generator and the discriminator update, both under `accelerator.accumulate` (`step.py`).
        logs = tokenizer_training_step(components, batch["pixel_values"], trainer.global_step)
        num_skipped_images += batch["num_skipped"].sum().to(num_skipped_images.device)
        if not accelerator.sync_gradients:
            continue
        trainer.finish_optimizer_step()
        if trainer.due(training.log_every_steps):
            extra = {
                "throughput/images_per_second": trainer.images_per_step * trainer.steps_per_second,
                # A collective: every rank logs at the same steps.
                "data/skipped_corrupt_images": float(accelerator.reduce(num_skipped_images.clone(), "sum")),
            }
            trainer.log(loggable_values(logs, lr_scheduler, **extra))
        if trainer.due(training.checkpointing_steps):
            trainer.save_checkpoint(synchronized_models=synchronized_models)
        if trainer.due(training.validation_steps):
            if accelerator.is_main_process:
                with trainer.ema_weights(raw_tokenizer):
                    _validate(accelerator, raw_tokenizer, validation_images, stage_dir, trainer.global_step)
            accelerator.wait_for_everyone()

    # ---- export ----
    total_skipped = int(accelerator.reduce(num_skipped_images.clone(), "sum"))
    if discriminator is not None:
        previous_updates = carried_discriminator.num_updates if carried_discriminator is not None else 0
        save_discriminator_state(
            accelerator,
            discriminator,
            discriminator_optimizer,
            stage_dir / "discriminator",
            loss_config.discriminator,
            num_updates=previous_updates + _discriminator_updates(reconstruction_loss, trainer.global_step),
        )
    metrics: dict[str, Any] = {}
    if accelerator.is_main_process:
        with trainer.ema_weights(raw_tokenizer):
            final_tokenizer = _exported_copy(raw_tokenizer)
        images = validation_images
        reconstructions = reconstruct(final_tokenizer, images)
        first_logs, last_logs = (trainer.logged[0], trainer.logged[-1]) if trainer.logged else ({}, {})
        save_reconstruction_grid(images, reconstructions, stage_dir / "reconstructions.png")
        save_pretrained_atomically(final_tokenizer, stage_model_dir(output_dir, stage))
        metrics = trainer.write_metrics(
            stage_dir,
            {
                "stage": stage,
                "validation_psnr_at_start": psnr_at_start,
                "validation_psnr": float(psnr(images, reconstructions).mean()),
                # Losses of the first logged step (computed before its update) and of the last one.
                "first_losses": _losses(first_logs),
                "final_losses": _losses(last_logs),
                "skipped_corrupt_images": total_skipped,
                "data_source": getattr(dataset, "source_description", config.data.source),
            },
        )
        if total_skipped:
            logger.warning(
                f"Stage {stage}: skipped {total_skipped} corrupt or unreadable images (see warnings above)."
            )
    # The next stage of this command still needs the process group.
    trainer.finish(end_process_group=False)
    return metrics


def _losses(logged: dict[str, float]) -> dict[str, float]:
    """The loss and GAN terms of one logged step."""
    return {name: value for name, value in logged.items() if name.startswith(("loss/", "gan/"))}


def _discriminator_updates(reconstruction_loss: ReconstructionLoss, global_step: int) -> int:
    """Discriminator updates made in this stage's steps `[0, global_step)` (it trains from `gan_start_step` on)."""
    return max(0, global_step - reconstruction_loss.gan_start_step)


def _check_resolution_fits(config: StageConfig, tokenizer: AlignedAutoencoderKL) -> None:
    factor = tokenizer.spatial_compression_ratio
    resolution = config.data.resolution
    if resolution % factor:
        lower = max(factor, resolution // factor * factor)
        raise ConfigError(
            f"data.resolution {resolution} is not a multiple of {factor}, the spatial factor of the tokenizer "
            f"(2 ** (len(block_out_channels) - 1) = {factor} for preset {config.model.preset!r}); set data.resolution "
            f"to {lower} or {lower + factor}."
        )


def _dataset_config(config: StageConfig, validation: bool) -> ImageDatasetConfig:
    data = config.data
    return ImageDatasetConfig(
        source=data.source,
        split=data.split,
        resolution=data.resolution,
        center_crop=True if validation else data.center_crop,
        random_flip=False if validation else data.random_flip,
        image_column=data.image_column,
        label_column=data.label_column,
        max_samples=data.num_validation_images if validation else data.max_samples,
        num_builtin_samples=data.num_builtin_samples,
        # Built-in data is generated from the seed: another seed gives held-out validation images. Other sources
        # validate on the first images of the split.
        seed=config.training.seed + (1_000_003 if validation else 0),
    )


def _validation_images(config: StageConfig) -> torch.Tensor:
    dataset = build_image_dataset(_dataset_config(config, validation=True))
    count = min(config.data.num_validation_images, len(dataset))
    return torch.stack([dataset[index]["pixel_values"] for index in range(count)])


def _validate(accelerator, tokenizer, images, stage_dir: Path, global_step: int) -> float:
    """Reconstruction PSNR and grid of the validation images with `tokenizer`'s current weights, sent to trackers."""
    reconstructions = reconstruct(tokenizer, images)
    value = float(psnr(images, reconstructions).mean())
    grid = save_reconstruction_grid(images, reconstructions, stage_dir / "validation" / f"step-{global_step:07d}.png")
    accelerator.log({"validation/psnr": value}, step=global_step)
    log_validation_images(
        accelerator,
        "validation/reconstructions",
        grid,
        global_step,
        caption=f"originals above reconstructions, PSNR {value:.2f} dB",
    )
    return value


def _exported_copy(tokenizer: AlignedAutoencoderKL) -> AlignedAutoencoderKL:
    """A copy of `tokenizer` as it is saved: LoRA merged, no gradient checkpointing, eval mode."""
    final = export_tokenizer(copy.deepcopy(tokenizer))
    if final.is_gradient_checkpointing:
        final.disable_gradient_checkpointing()
    return final.eval()


def _register_checkpoint_hooks(accelerator: Accelerator) -> None:
    """Checkpoints hold the tokenizer in diffusers format (`tokenizer/`), so any checkpoint is a usable model.

    With encoder LoRA the saved `tokenizer/` has the LoRA merged, so accelerate also keeps the raw (unmerged) weights
    and resumes from those.
    """

    def save_model_hook(models, weights, output_dir):
        if not accelerator.is_main_process:
            return
        for index in reversed(range(len(models))):
            model = accelerator.unwrap_model(models[index])
            if isinstance(model, TokenizerReconstruction):
                export_tokenizer(model.tokenizer).save_pretrained(os.path.join(output_dir, "tokenizer"))
                if not _has_lora(model.tokenizer):
                    weights.pop(index)

    def load_model_hook(models, input_dir):
        for index in reversed(range(len(models))):
            model = accelerator.unwrap_model(models[index])
            if isinstance(model, TokenizerReconstruction) and not _has_lora(model.tokenizer):
                loaded = AlignedAutoencoderKL.from_pretrained(os.path.join(input_dir, "tokenizer"))
                model.tokenizer.load_state_dict(loaded.state_dict())
                models.pop(index)

    accelerator.register_save_state_pre_hook(save_model_hook)
    accelerator.register_load_state_pre_hook(load_model_hook)


def _has_lora(model: AlignedAutoencoderKL) -> bool:
    return getattr(model, "_hf_peft_config_loaded", False)
