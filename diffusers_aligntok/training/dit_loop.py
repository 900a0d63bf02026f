"""Class-conditional DiT training on cached latents, read top to bottom (the loop of `training/train_dit.py`)."""

import copy
import json
import math
import time
from pathlib import Path
from typing import Any

import torch
from accelerate.logging import get_logger
from accelerate.utils import set_seed
from diffusers import FlowMatchEulerDiscreteScheduler
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from PIL import Image
from tqdm.auto import tqdm

from ..models import AlignedAutoencoderKL, LightningDiTTransformer2DModel
from .checkpointing import check_resume_compatible, resolve_resume_checkpoint, save_checkpoint
from .config import config_to_dict
from .distributed import GlobalBatch
from .dit_config import DiTConfig
from .flow_matching import flow_matching_loss
from .io_utils import (
    build_accelerator,
    flatten_for_trackers,
    save_pretrained_atomically,
    to_jsonable,
    write_training_config,
)
from .latent_cache import CachedLatentDataset, tokenizer_fingerprint
from .step import backward_and_step, loggable_values, raise_if_not_finite
from .validation import image_grid, log_validation_images, save_grid


logger = get_logger(__name__)


def build_transformer(config: DiTConfig, dataset: CachedLatentDataset) -> LightningDiTTransformer2DModel:
    """The DiT for this cache: channels and grid size come from the cached latents, not from the config."""
    channels, height, width = dataset.latent_shape
    overrides = {**config.model.overrides, "in_channels": channels, "sample_size": max(height, width)}
    if dataset.num_classes is not None:
        overrides.setdefault("num_classes", dataset.num_classes)
    return LightningDiTTransformer2DModel.from_preset(config.model.preset, **overrides)


def load_validation_tokenizer(config: DiTConfig, dataset: CachedLatentDataset) -> AlignedAutoencoderKL | None:
    """The tokenizer that decodes samples; refused (naming both) if it is not the one that built the cache."""
    if config.validation.tokenizer is None:
        return None
    tokenizer = AlignedAutoencoderKL.from_pretrained(config.validation.tokenizer).eval()
    cached = dataset.metadata["tokenizer"]
    fingerprint = tokenizer_fingerprint(tokenizer)
    if fingerprint != cached["fingerprint"]:
        raise ValueError(
            f"The latent cache {dataset.cache_dir} was built with tokenizer {cached['path']} (fingerprint "
            f"{cached['fingerprint']}), but validation.tokenizer is {config.validation.tokenizer} (fingerprint "
            f"{fingerprint}). Use the cache's tokenizer, or rebuild the cache with cache_latents.py."
        )
    # Samples are normalised with the cache's statistics; the saved pipeline must undo exactly those.
    stats = dataset.metadata["latent_statistics"]
    tokenizer.register_to_config(
        latents_mean=stats["mean"], latents_std=stats["std"], scaling_factor=stats["scaling_factor"]
    )
    return tokenizer


def check_guidance_channels(config: DiTConfig, transformer: LightningDiTTransformer2DModel) -> None:
    """Refuses `validation.guidance_channels` beyond the cache's latent channels before any step, not at the first
    validation grid."""
    channels, guided = transformer.config.in_channels, config.validation.guidance_channels
    if guided is not None and guided > channels:
        raise ValueError(
            f"validation.guidance_channels={guided} but the latent cache has {channels} channels; use null (all "
            f"channels) or a value in [1, {channels}]."
        )


def run_dit_training(
    config: DiTConfig,
    output_dir: str | Path,
    resume_from_checkpoint: str | None = None,
    run_record: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Trains the DiT and writes `transformer/`, `pipeline/` (with a validation tokenizer), metrics and checkpoints.

    `run_record` (what the command line decided) goes into `training_config.json` beside the config.
    """
    training, optimizer_config = config.training, config.optimizer
    output_dir = Path(output_dir)
    accelerator = build_accelerator(training, output_dir)

    # ---- data and models (a mismatched tokenizer fails here, before any step) ----
    dataset = CachedLatentDataset(config.data.cache_dir, random_flip=config.data.random_flip, seed=training.seed)
    # Built right after set_seed, so its initialisation does not depend on whether a tokenizer is loaded.
    transformer = build_transformer(config, dataset)
    check_guidance_channels(config, transformer)
    tokenizer = load_validation_tokenizer(config, dataset)
    if training.gradient_checkpointing:
        transformer.enable_gradient_checkpointing()
    optimizer = torch.optim.AdamW(
        transformer.parameters(),
        lr=optimizer_config.learning_rate,
        betas=(optimizer_config.adam_beta1, optimizer_config.adam_beta2),
        weight_decay=optimizer_config.weight_decay,
    )
    lr_scheduler = get_scheduler(
        optimizer_config.lr_scheduler,
        optimizer=optimizer,
        num_warmup_steps=optimizer_config.lr_warmup_steps * accelerator.num_processes,
        num_training_steps=training.max_train_steps * accelerator.num_processes,
    )
    ema = (
        EMAModel(
            transformer.parameters(),
            decay=training.ema_decay,
            model_cls=LightningDiTTransformer2DModel,
            model_config=transformer.config,
        )
        if training.ema_decay is not None
        else None
    )
    if ema is not None:
        accelerator.register_for_checkpointing(ema)
    dataloader = torch.utils.data.DataLoader(
        dataset,
        batch_size=training.train_batch_size,
        shuffle=True,
        num_workers=config.data.dataloader_num_workers,
        drop_last=True,
        generator=torch.Generator().manual_seed(training.seed),  # keeps the global RNG out of iterator creation
    )
    transformer, optimizer, dataloader, lr_scheduler = accelerator.prepare(
        transformer, optimizer, dataloader, lr_scheduler
    )
    raw_transformer: LightningDiTTransformer2DModel = accelerator.unwrap_model(transformer)
    if ema is not None:
        ema.to(accelerator.device)
    if training.compile:
        raw_transformer.compile()

    # The training stream of noise, timesteps and label dropout starts from the seed, whatever setup consumed
    # (loading a validation tokenizer draws random numbers); a resume then restores the RNG state of its checkpoint.
    set_seed(training.seed)

    # ---- resume ----
    checkpoints_dir = output_dir / "checkpoints"
    training_state = {
        "model_config": to_jsonable(dict(raw_transformer.config)),
        "latent_cache_tokenizer": dataset.metadata["tokenizer"]["fingerprint"],
    }
    global_step = 0
    resume_path = resolve_resume_checkpoint(checkpoints_dir, resume_from_checkpoint)
    if resume_path is not None:
        global_step = check_resume_compatible(resume_path, training_state)["global_step"]
        accelerator.load_state(str(resume_path))
        logger.info(f"Resumed DiT training from {resume_path} at step {global_step}")
    steps_per_epoch = max(1, len(dataloader) // training.gradient_accumulation_steps)
    first_epoch = global_step // steps_per_epoch
    batches_to_skip = (global_step % steps_per_epoch) * training.gradient_accumulation_steps
    num_epochs = math.ceil(training.max_train_steps / steps_per_epoch)

    if accelerator.is_main_process:
        write_training_config(output_dir, config_to_dict(config), run_record, accelerator)
        accelerator.init_trackers("aligntok_dit", config=flatten_for_trackers(config_to_dict(config)))
    loss_curve: list[dict[str, float]] = []
    progress = tqdm(
        total=training.max_train_steps, initial=global_step, desc="DiT", disable=not accelerator.is_local_main_process
    )
    images_per_step = training.train_batch_size * accelerator.num_processes * training.gradient_accumulation_steps
    # Noise, sigmas and label dropout are drawn per global (micro-)batch and sliced to this rank, so N ranks at
    # batch b train exactly what one process at N * b does (see `distributed.py`).
    global_batch = GlobalBatch.of(accelerator)
    step_started = time.perf_counter()

    # ---- train ----
    transformer.train()
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
            with accelerator.accumulate(transformer):
                # `global_step` (optimiser steps done) switches the sigma density at flow.logit_normal_until_step.
                loss, logs = flow_matching_loss(
                    transformer, batch["latents"], batch["label"], config.flow, global_batch, global_step
                )
                raise_if_not_finite(accelerator, logs, global_step)
                backward_and_step(
                    accelerator, transformer, loss, logs, optimizer, lr_scheduler, optimizer_config.max_grad_norm
                )
            if not accelerator.sync_gradients:
                continue
            if ema is not None:
                ema.step(raw_transformer.parameters())
            global_step += 1
            progress.update(1)
            if global_step % training.log_every_steps == 0 or global_step == training.max_train_steps:
                elapsed, step_started = time.perf_counter() - step_started, time.perf_counter()
                values = loggable_values(
                    logs,
                    lr_scheduler,
                    **{
                        "throughput/images_per_second": images_per_step * training.log_every_steps / max(elapsed, 1e-9)
                    },
                )
                accelerator.log(values, step=global_step)
                loss_curve.append({"step": global_step, **values})
                progress.set_postfix(loss=f"{values['loss/total']:.4f}")
            if global_step % training.checkpointing_steps == 0 or global_step == training.max_train_steps:
                save_checkpoint(
                    accelerator,
                    checkpoints_dir,
                    global_step,
                    training_state,
                    training.checkpoints_total_limit,
                    synchronized_models={"transformer": transformer},
                )
            if (
                tokenizer is not None
                and accelerator.is_main_process
                and (global_step % training.validation_steps == 0 or global_step == training.max_train_steps)
            ):
                pipeline = _pipeline(_ema_copy(raw_transformer, ema), tokenizer, config)
                grid = _save_sample_grid(pipeline, config, output_dir / "validation" / f"step-{global_step:07d}.png")
                log_validation_images(
                    accelerator,
                    "validation/samples",
                    grid,
                    global_step,
                    caption=f"class labels {list(config.validation.class_labels)}",
                )
            if global_step >= training.max_train_steps:
                break
    progress.close()

    # ---- export: the EMA transformer, and the whole pipeline when the tokenizer is known ----
    metrics: dict[str, Any] = {}
    if accelerator.is_main_process:
        final_transformer = _ema_copy(raw_transformer, ema)
        save_pretrained_atomically(final_transformer, output_dir / "transformer")
        if tokenizer is not None:
            pipeline = _pipeline(final_transformer, tokenizer, config)
            save_pretrained_atomically(pipeline, output_dir / "pipeline")
            _save_sample_grid(pipeline, config, output_dir / "samples.png")
        metrics = {
            "global_step": global_step,
            "loss_curve": loss_curve,
            "num_parameters": sum(p.numel() for p in final_transformer.parameters()),
            "latent_cache": str(config.data.cache_dir),
            "num_processes": accelerator.num_processes,
            "mixed_precision": accelerator.mixed_precision,
        }
        (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return metrics


def _ema_copy(transformer: LightningDiTTransformer2DModel, ema: EMAModel | None) -> LightningDiTTransformer2DModel:
    final = copy.deepcopy(transformer)
    if ema is not None:
        ema.copy_to(final.parameters())
    if final.is_gradient_checkpointing:
        final.disable_gradient_checkpointing()
    return final.eval()


def _pipeline(transformer, tokenizer, config: DiTConfig):
    from ..pipelines import AlignTokDiTPipeline

    # The saved pipeline samples with the config's shift (LightningDiT's timestep_shift 0.3 is shift 1 / 0.3 here).
    scheduler = FlowMatchEulerDiscreteScheduler(shift=config.validation.sampling_shift)
    return AlignTokDiTPipeline(transformer=transformer.float(), vae=tokenizer, scheduler=scheduler)


@torch.no_grad()
def _save_sample_grid(pipeline, config: DiTConfig, path: Path) -> Image.Image:
    """One row of validation samples (one per `validation.class_labels`), saved at `path` and returned."""
    validation = config.validation
    images = pipeline(
        class_labels=list(validation.class_labels),
        guidance_scale=validation.guidance_scale,
        guidance_interval=tuple(validation.guidance_interval),
        guidance_channels=validation.guidance_channels,
        num_inference_steps=validation.num_inference_steps,
        generator=torch.Generator().manual_seed(validation.seed),
        output_type="pt",
    ).images
    return save_grid(image_grid([images * 2 - 1]), path)
