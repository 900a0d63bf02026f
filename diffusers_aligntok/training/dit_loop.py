"""Class-conditional DiT training on cached latents, read top to bottom (the loop of `training/train_dit.py`)."""

import copy
from pathlib import Path
from typing import Any

import torch
from accelerate.logging import get_logger
from accelerate.utils import set_seed
from diffusers import FlowMatchEulerDiscreteScheduler
from PIL import Image

from ..models import AlignedAutoencoderKL, LightningDiTTransformer2DModel
from ..utils import to_jsonable, tokenizer_fingerprint
from .config import config_to_dict
from .distributed import GlobalBatch
from .dit.latent_cache import CachedLatentDataset
from .dit_config import DiTConfig
from .flow_matching import flow_matching_loss
from .io_utils import save_pretrained_atomically
from .step import backward_and_step, loggable_values, raise_if_not_finite
from .trainer import Trainer
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
    training = config.training
    output_dir = Path(output_dir)
    trainer = Trainer(training, output_dir, name="DiT")
    accelerator = trainer.accelerator

    # ---- data and models (a mismatched tokenizer fails here, before any step) ----
    dataset = CachedLatentDataset(config.data.cache_dir, random_flip=config.data.random_flip, seed=training.seed)
    # Built right after the trainer seeds, so its initialisation does not depend on whether a tokenizer is loaded.
    transformer = build_transformer(config, dataset)
    check_guidance_channels(config, transformer)
    tokenizer = load_validation_tokenizer(config, dataset)
    if training.gradient_checkpointing:
        transformer.enable_gradient_checkpointing()
    optimizer = trainer.adamw(transformer.parameters(), config.optimizer)
    lr_scheduler = trainer.lr_scheduler(optimizer, config.optimizer)
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
    trainer.track_ema(raw_transformer)
    if training.compile:
        raw_transformer.compile()

    # The training stream of noise, timesteps and label dropout starts from the seed, whatever setup consumed
    # (loading a validation tokenizer draws random numbers); a resume then restores the RNG state of its checkpoint.
    set_seed(training.seed)
    trainer.resume(
        resume_from_checkpoint,
        training_state={
            "model_config": to_jsonable(dict(raw_transformer.config)),
            "latent_cache_tokenizer": dataset.metadata["tokenizer"]["fingerprint"],
        },
    )
    trainer.start_run("aligntok_dit", config_to_dict(config), run_record)
    # Noise, sigmas and label dropout are drawn per global (micro-)batch and sliced to this rank, so N ranks at
    # batch b train exactly what one process at N * b does (see `distributed.py`).
    global_batch = GlobalBatch.of(accelerator)

    # ---- train ----
    transformer.train()
    for batch in trainer.micro_batches(dataloader, epoch_hooks=[dataset.set_epoch]):
        with accelerator.accumulate(transformer):
            # `global_step` (optimiser steps done) switches the sigma density at flow.logit_normal_until_step.
            loss, logs = flow_matching_loss(
                transformer, batch["latents"], batch["label"], config.flow, global_batch, trainer.global_step
            )
            raise_if_not_finite(accelerator, logs, trainer.global_step)
            backward_and_step(
                accelerator, transformer, loss, logs, optimizer, lr_scheduler, config.optimizer.max_grad_norm
            )
        if not accelerator.sync_gradients:
            continue
        trainer.finish_optimizer_step()
        if trainer.due(training.log_every_steps):
            throughput = trainer.images_per_step * trainer.steps_per_second
            trainer.log(loggable_values(logs, lr_scheduler, **{"throughput/images_per_second": throughput}))
        if trainer.due(training.checkpointing_steps):
            trainer.save_checkpoint(synchronized_models={"transformer": transformer})
        if tokenizer is not None and accelerator.is_main_process and trainer.due(training.validation_steps):
            pipeline = _pipeline(_sampling_copy(trainer, raw_transformer), tokenizer, config)
            path = output_dir / "validation" / f"step-{trainer.global_step:07d}.png"
            grid = _save_sample_grid(pipeline, config, path)
            caption = f"class labels {list(config.validation.class_labels)}"
            log_validation_images(accelerator, "validation/samples", grid, trainer.global_step, caption=caption)

    # ---- export: the EMA transformer, and the whole pipeline when the tokenizer is known ----
    metrics: dict[str, Any] = {}
    if accelerator.is_main_process:
        final_transformer = _sampling_copy(trainer, raw_transformer)
        save_pretrained_atomically(final_transformer, output_dir / "transformer")
        if tokenizer is not None:
            pipeline = _pipeline(final_transformer, tokenizer, config)
            save_pretrained_atomically(pipeline, output_dir / "pipeline")
            _save_sample_grid(pipeline, config, output_dir / "samples.png")
        metrics = trainer.write_metrics(
            output_dir,
            {
                "loss_curve": trainer.logged,
                "num_parameters": sum(p.numel() for p in final_transformer.parameters()),
                "latent_cache": str(config.data.cache_dir),
            },
        )
    trainer.finish()
    return metrics


def _sampling_copy(trainer: Trainer, transformer: LightningDiTTransformer2DModel) -> LightningDiTTransformer2DModel:
    """A copy of `transformer` with the EMA weights, in eval mode and without gradient checkpointing, for sampling
    and export; the training model is left as it was."""
    with trainer.ema_weights(transformer):
        final = copy.deepcopy(transformer)
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
