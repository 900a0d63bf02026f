"""The training loop of one AlignTok stage, read top to bottom: setup, resume, steps, checkpoints, final export."""

import copy
import json
import math
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from tqdm.auto import tqdm

from ..data import ImageDatasetConfig, build_image_dataset
from ..losses import PatchGANDiscriminator, ReconstructionLoss, build_perceptual_network
from ..models import AlignedAutoencoderKL
from .checkpointing import check_resume_compatible, resolve_resume_checkpoint, save_checkpoint
from .config import ConfigError, StageConfig, config_to_dict
from .discriminator_handoff import load_discriminator_state, resolve_discriminator_init, save_discriminator_state
from .io_utils import (
    build_accelerator,
    flatten_for_trackers,
    save_pretrained_atomically,
    to_jsonable,
    write_training_config,
)
from .stages import build_stage_models, export_tokenizer, stage_model_dir, stage_output_dir
from .step import TokenizerReconstruction, TokenizerTrainingComponents, tokenizer_training_step
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
    accelerator = build_accelerator(training, stage_dir)

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
    tokenizer_optimizer = torch.optim.AdamW(
        models.parameter_groups,
        lr=optimizer_config.learning_rate,
        betas=(optimizer_config.adam_beta1, optimizer_config.adam_beta2),
        weight_decay=optimizer_config.weight_decay,
    )
    discriminator_optimizer = (
        torch.optim.AdamW(
            discriminator.parameters(),
            lr=optimizer_config.discriminator_learning_rate,
            betas=(optimizer_config.adam_beta1, optimizer_config.adam_beta2),
        )
        if discriminator is not None
        else None
    )
    # The prepared scheduler steps once per process per optimiser step, hence the scaling (as in diffusers examples).
    lr_scheduler = get_scheduler(
        optimizer_config.lr_scheduler,
        optimizer=tokenizer_optimizer,
        num_warmup_steps=optimizer_config.lr_warmup_steps * accelerator.num_processes,
        num_training_steps=training.max_train_steps * accelerator.num_processes,
    )
    ema = (
        EMAModel(
            tokenizer.parameters(),
            decay=training.ema_decay,
            model_cls=AlignedAutoencoderKL,
            model_config=tokenizer.config,
        )
        if training.ema_decay is not None
        else None
    )
    if ema is not None:
        accelerator.register_for_checkpointing(ema)
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
    if ema is not None:
        ema.to(accelerator.device)
    raw_tokenizer: AlignedAutoencoderKL = accelerator.unwrap_model(reconstruction_module).tokenizer
    if training.compile:
        # In-place compile keeps parameter names, so checkpoints and save_pretrained are unaffected.
        raw_tokenizer.encoder.compile()
        raw_tokenizer.decoder.compile()

    # ---- resume ----
    checkpoints_dir = stage_dir / "checkpoints"
    global_step = 0
    resume_path = resolve_resume_checkpoint(checkpoints_dir, resume_from_checkpoint)
    model_config = to_jsonable(dict(raw_tokenizer.config))
    training_state = {"stage": stage, "model_config": model_config}
    synchronized_models = {"tokenizer": reconstruction_module}
    if discriminator is not None:
        synchronized_models["discriminator"] = discriminator
    if resume_path is not None:
        state = check_resume_compatible(resume_path, training_state)
        accelerator.load_state(str(resume_path))
        global_step = state["global_step"]
        logger.info(f"Resumed stage {stage} from {resume_path} at step {global_step}")

    num_update_steps_per_epoch = max(1, len(dataloader) // training.gradient_accumulation_steps)
    first_epoch = global_step // num_update_steps_per_epoch
    batches_to_skip = (global_step % num_update_steps_per_epoch) * training.gradient_accumulation_steps
    num_epochs = math.ceil(training.max_train_steps / num_update_steps_per_epoch)

    if accelerator.is_main_process:
        accelerator.init_trackers(f"aligntok_stage{stage}", config=flatten_for_trackers(config_to_dict(config)))
        write_training_config(stage_dir, {"stage": stage, **config_to_dict(config)}, run_record, accelerator)
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
    last_logs: dict[str, float] = {}
    first_logs: dict[str, float] = {}
    # Reconstruction quality before this run's first step: the baseline the stage's metrics are compared with.
    psnr_at_start = (
        float(psnr(validation_images, reconstruct(raw_tokenizer, validation_images)).mean())
        if accelerator.is_main_process
        else None
    )
    images_per_step = training.train_batch_size * accelerator.num_processes * training.gradient_accumulation_steps
    progress = tqdm(
        total=training.max_train_steps,
        initial=global_step,
        desc=f"stage {stage}",
        disable=not accelerator.is_local_main_process,
    )
    step_started = time.perf_counter()

    # ---- train ----
    reconstruction_module.train()
    for module in models.frozen_modules:
        module.eval()  # frozen parts keep eval-mode behaviour (no dropout / drop-path)
    for epoch in range(first_epoch, num_epochs):
        if global_step >= training.max_train_steps:
            break
        dataloader.set_epoch(epoch)
        dataset.set_epoch(epoch)
        batches = (
            accelerator.skip_first_batches(dataloader, batches_to_skip)
            if epoch == first_epoch and batches_to_skip
            else dataloader
        )
        for batch in batches:
            logs = tokenizer_training_step(components, batch["pixel_values"], global_step)
            num_skipped_images += batch["num_skipped"].sum().to(num_skipped_images.device)
            if not accelerator.sync_gradients:
                continue
            if ema is not None:
                ema.step(raw_tokenizer.parameters())
            global_step += 1
            progress.update(1)

            if global_step % training.log_every_steps == 0 or global_step == training.max_train_steps:
                elapsed = time.perf_counter() - step_started
                step_started = time.perf_counter()
                last_logs = {name: float(value) for name, value in logs.items()}
                last_logs["lr"] = lr_scheduler.get_last_lr()[0]
                last_logs["throughput/images_per_second"] = (
                    images_per_step * training.log_every_steps / max(elapsed, 1e-9)
                )
                last_logs["data/skipped_corrupt_images"] = float(accelerator.reduce(num_skipped_images.clone(), "sum"))
                accelerator.log(last_logs, step=global_step)
                first_logs = first_logs or dict(last_logs)
                progress.set_postfix(
                    loss=f"{last_logs['loss/total']:.4f}", img_s=f"{last_logs['throughput/images_per_second']:.1f}"
                )
            if global_step % training.checkpointing_steps == 0 or global_step == training.max_train_steps:
                save_checkpoint(
                    accelerator,
                    checkpoints_dir,
                    global_step,
                    training_state,
                    training.checkpoints_total_limit,
                    synchronized_models=synchronized_models,
                )
            if global_step % training.validation_steps == 0 or global_step == training.max_train_steps:
                if accelerator.is_main_process:
                    last_logs["validation/psnr"] = _validate(
                        accelerator, raw_tokenizer, ema, validation_images, stage_dir, global_step
                    )
                accelerator.wait_for_everyone()
            if global_step >= training.max_train_steps:
                break
    progress.close()

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
            num_updates=previous_updates + _discriminator_updates(reconstruction_loss, global_step),
        )
    metrics: dict[str, Any] = {}
    if accelerator.is_main_process:
        final_tokenizer = _final_tokenizer(raw_tokenizer, ema)
        images = validation_images
        reconstructions = reconstruct(final_tokenizer, images)
        metrics = {
            "stage": stage,
            "global_step": global_step,
            "validation_psnr_at_start": psnr_at_start,
            "validation_psnr": float(psnr(images, reconstructions).mean()),
            # Losses of the first logged step (computed before its update) and of the last one.
            "first_losses": {k: v for k, v in first_logs.items() if k.startswith(("loss/", "gan/"))},
            "final_losses": {k: v for k, v in last_logs.items() if k.startswith(("loss/", "gan/"))},
            "skipped_corrupt_images": total_skipped,
            "num_processes": accelerator.num_processes,
            # What accelerate actually trained with (the effective training.mixed_precision).
            "mixed_precision": accelerator.mixed_precision,
            "data_source": getattr(dataset, "source_description", config.data.source),
        }
        save_reconstruction_grid(images, reconstructions, stage_dir / "reconstructions.png")
        save_pretrained_atomically(final_tokenizer, stage_model_dir(output_dir, stage))
        with open(stage_dir / "metrics.json", "w", encoding="utf-8") as handle:
            json.dump(metrics, handle, indent=2)
        if total_skipped:
            logger.warning(
                f"Stage {stage}: skipped {total_skipped} corrupt or unreadable images (see warnings above)."
            )
    accelerator.wait_for_everyone()
    for tracker in accelerator.trackers:
        tracker.finish()
    return metrics


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


def _validate(accelerator, tokenizer, ema, images, stage_dir: Path, global_step: int) -> float:
    if ema is not None:
        ema.store(tokenizer.parameters())
        ema.copy_to(tokenizer.parameters())
    reconstructions = reconstruct(tokenizer, images)
    if ema is not None:
        ema.restore(tokenizer.parameters())
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


def _final_tokenizer(tokenizer: AlignedAutoencoderKL, ema: EMAModel | None) -> AlignedAutoencoderKL:
    final = copy.deepcopy(tokenizer)
    if ema is not None:
        ema.copy_to(final.parameters())
    final = export_tokenizer(final)
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
