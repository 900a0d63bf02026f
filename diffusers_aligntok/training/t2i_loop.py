"""Text-to-image training of a FLUX-architecture transformer on a frozen VAE's latents (the loop of `train_t2i.py`).

Flow matching as FLUX: `x_sigma = (1 - sigma) x0 + sigma noise`, velocity target `noise - x0`, logit-normal sigmas
shifted by FLUX's resolution-dependent `mu` (more image tokens -> noisier training), the transformer called exactly as
`FluxPipeline` calls it (packed tokens, `timestep = sigma`, RoPE ids, CLIP pooled + T5 states), so the saved pipeline
samples what was trained.

Every random tensor of a step (the posterior sample of a stochastic VAE, caption dropout, noise, sigmas) is drawn for
the whole data-parallel global batch and sliced to this rank (`distributed.GlobalBatch`), so N ranks at batch b train
what one process at N * b does.
"""

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from accelerate.logging import get_logger
from accelerate.utils import set_seed
from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
from diffusers.pipelines.flux.pipeline_flux import calculate_shift
from diffusers.training_utils import compute_density_for_timestep_sampling

from ..data.aspect_buckets import make_buckets
from ..data.text_image_datasets import BucketBatchSampler, build_text_image_dataset, collate_text_image_batch
from ..pipelines.pipeline_aligntok_flux import AlignTokFluxPipeline, latent_image_ids, pack_latents, unpack_latents
from ..utils import to_jsonable, tokenizer_fingerprint
from .config import config_to_dict
from .distributed import SINGLE_PROCESS, GlobalBatch
from .io_utils import save_pretrained_atomically
from .step import backward_and_step, loggable_values, raise_if_not_finite
from .t2i_cache import CachedTextImageDataset, build_t2i_cache, collate_cached_batch
from .t2i_components import (
    FluxTextEncoders,
    build_transformer,
    check_transformer_fits,
    load_vae,
    normalize_latents,
    patch_size_for,
)
from .t2i_config import T2IConfig, T2IFlowConfig
from .trainer import Trainer
from .validation import image_grid, log_validation_images, save_grid


logger = get_logger(__name__)

# Normalised latents with a std outside this range mean the VAE's scaling_factor/shift_factor were never measured.
_LATENT_STD_RANGE = (0.5, 2.0)


def sample_flux_sigmas(
    config: T2IFlowConfig, batch_size: int, image_seq_len: int, device, global_batch: GlobalBatch = SINGLE_PROCESS
) -> torch.Tensor:
    """Training sigmas: logit-normal, then FLUX's exponential shift with `mu` interpolated from the token count.

    `batch_size` is this rank's batch; the draw is made for the global batch and this rank's rows are kept.
    """
    sigmas = global_batch.draw(
        lambda size: compute_density_for_timestep_sampling(
            weighting_scheme=config.timestep_sampling,
            batch_size=size,
            logit_mean=config.logit_mean,
            logit_std=config.logit_std,
            mode_scale=1.29,
        ),
        batch_size,
    ).to(device)
    if config.resolution_dependent_shift:
        mu = calculate_shift(
            image_seq_len, config.base_image_seq_len, config.max_image_seq_len, config.base_shift, config.max_shift
        )
        sigmas = math.exp(mu) / (math.exp(mu) + (1 / sigmas.clamp_min(1e-6) - 1))
    return sigmas


def flux_flow_matching_loss(
    transformer: torch.nn.Module,
    latents: torch.Tensor,
    prompt_embeds: torch.Tensor,
    pooled_prompt_embeds: torch.Tensor,
    patch_size: int,
    config: T2IFlowConfig,
    global_batch: GlobalBatch = SINGLE_PROCESS,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Velocity MSE of the FLUX transformer on normalised `(B, C, h, w)` latents, in float32.

    Noise and sigmas are this rank's rows (`global_batch`) of draws made for the step's global batch.
    """
    batch, _, height, width = latents.shape
    rows, columns = height // patch_size, width // patch_size
    # Not randn_like: it follows the memory layout (VAE outputs can be channels-last), so the same latents would get
    # different noise depending on where they came from (the cache or a live encode).
    noise = global_batch.randn(latents.shape, device=latents.device, dtype=latents.dtype)
    sigmas = sample_flux_sigmas(config, batch, rows * columns, latents.device, global_batch)
    noisy = (1 - sigmas.view(-1, 1, 1, 1)) * latents + sigmas.view(-1, 1, 1, 1) * noise
    prediction = transformer(
        hidden_states=pack_latents(noisy, patch_size),
        timestep=sigmas,  # FluxPipeline passes t / 1000 = sigma
        guidance=None,
        pooled_projections=pooled_prompt_embeds,
        encoder_hidden_states=prompt_embeds,
        txt_ids=torch.zeros(prompt_embeds.shape[1], 3, device=latents.device, dtype=latents.dtype),
        img_ids=latent_image_ids(rows, columns, latents.device, latents.dtype),
        return_dict=False,
    )[0]
    prediction = unpack_latents(prediction, height, width, patch_size).float()
    mse = F.mse_loss(prediction, (noise - latents).float())
    return mse, {"loss/velocity_mse": mse.detach(), "loss/total": mse.detach()}


def drop_captions(
    prompt_embeds,
    pooled,
    empty_prompt_embeds,
    empty_pooled,
    probability: float,
    global_batch: GlobalBatch = SINGLE_PROCESS,
):
    """Caption dropout for CFG: each sample's conditioning becomes the empty caption's with `probability`.

    The mask is this rank's rows (`global_batch`) of a draw for the step's global batch.
    """
    if probability <= 0:
        return prompt_embeds, pooled
    drop = global_batch.rand((prompt_embeds.shape[0],), device=prompt_embeds.device) < probability
    prompt_embeds = torch.where(drop.view(-1, 1, 1), empty_prompt_embeds.to(prompt_embeds), prompt_embeds)
    pooled = torch.where(drop.view(-1, 1), empty_pooled.to(pooled), pooled)
    return prompt_embeds, pooled


def build_scheduler(config: T2IFlowConfig) -> FlowMatchEulerDiscreteScheduler:
    """The sampling scheduler with the training's shift settings (saved with the pipeline)."""
    return FlowMatchEulerDiscreteScheduler(
        shift=1.0,
        use_dynamic_shifting=config.resolution_dependent_shift,
        base_shift=config.base_shift,
        max_shift=config.max_shift,
        base_image_seq_len=config.base_image_seq_len,
        max_image_seq_len=config.max_image_seq_len,
    )


def run_t2i_training(
    config: T2IConfig,
    output_dir: str | Path,
    resume_from_checkpoint: str | None = None,
    run_record: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Trains the transformer and writes `transformer/`, `pipeline/`, metrics, validation grids and checkpoints.

    `run_record` (what the command line decided) goes into `training_config.json` beside the config.
    """
    training, model_config, data_config = config.training, config.model, config.data
    output_dir = Path(output_dir)
    trainer = Trainer(training, output_dir, name="T2I")
    accelerator = trainer.accelerator
    if training.allow_tf32 and torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
    weight_dtype = torch.bfloat16 if accelerator.mixed_precision == "bf16" else torch.float32

    # ---- frozen models, the transformer that fits them, the data: everything that can be wrong fails here ----
    vae = load_vae(model_config.vae, model_config.vae_subfolder).to(accelerator.device)
    patch = patch_size_for(vae, model_config.pixels_per_token)
    text_encoders = FluxTextEncoders(
        model_config.text_encoders, model_config.max_sequence_length, accelerator.device, weight_dtype
    )
    transformer = build_transformer(
        config, vae, text_encoders.joint_attention_dim, text_encoders.pooled_projection_dim
    )
    check_transformer_fits(transformer, vae, patch)
    buckets = make_buckets(data_config.resolution, data_config.aspect_ratios, model_config.pixels_per_token)
    dataset = build_text_image_dataset(data_config, buckets)
    logger.info(
        f"{dataset.source_description}: {len(dataset)} usable pairs in buckets {dataset.bucket_counts()}; skipped {dataset.skipped}"
    )
    vae_fingerprint = tokenizer_fingerprint(vae)  # hashes every weight: once, for the cache and the checkpoints
    if data_config.cache_dir:
        build_t2i_cache(
            data_config.cache_dir,
            dataset,
            vae,
            model_config.vae,
            text_encoders,
            accelerator,
            batch_size=training.train_batch_size,
            vae_fingerprint=vae_fingerprint,
        )
        train_data = CachedTextImageDataset(data_config.cache_dir)
        empty_embeds, empty_pooled = train_data.empty_prompt_embeds, train_data.empty_pooled_prompt_embeds
        collate = collate_cached_batch
    else:
        train_data, collate = dataset, collate_text_image_batch
        empty_embeds, empty_pooled = (tensor[0] for tensor in text_encoders.encode([""]))
    sampler = BucketBatchSampler(
        dataset.bucket_of,
        training.train_batch_size,
        seed=training.seed,
        num_replicas=accelerator.num_processes,
        rank=accelerator.process_index,
    )
    dataloader = torch.utils.data.DataLoader(
        train_data,
        batch_sampler=sampler,
        collate_fn=collate,
        num_workers=data_config.dataloader_num_workers,
        generator=torch.Generator().manual_seed(training.seed),  # iterator creation must not draw from the global RNG
    )

    if training.gradient_checkpointing:
        transformer.enable_gradient_checkpointing()
    transformer.train()
    optimizer = trainer.adamw(transformer.parameters(), config.optimizer)
    lr_scheduler = trainer.lr_scheduler(optimizer, config.optimizer)
    transformer, optimizer, lr_scheduler = accelerator.prepare(transformer, optimizer, lr_scheduler)
    raw_transformer: FluxTransformer2DModel = accelerator.unwrap_model(transformer)
    trainer.track_ema(raw_transformer)  # after `prepare`: under FSDP each rank's shadow weights are its own shards
    if training.compile:
        raw_transformer.compile()
    set_seed(training.seed)  # the noise / timestep / dropout stream starts from the seed whatever setup consumed
    trainer.resume(
        resume_from_checkpoint,
        training_state={
            "model_config": to_jsonable(dict(raw_transformer.config)),
            "vae_fingerprint": vae_fingerprint,
            "data": {
                "source": dataset.source_description,
                "buckets": [str(b) for b in buckets],
                "num_items": len(dataset),
            },
            "num_processes": accelerator.num_processes,
        },
    )
    trainer.start_run("aligntok_t2i", config_to_dict(config), run_record)
    counters = {"skipped_unreadable": 0, "truncated_clip": 0, "truncated_t5": 0}
    latent_std: float | None = None
    # Every draw of a micro-batch is made for its global micro-batch of N * b and sliced to this rank (distributed.py).
    global_batch = GlobalBatch.of(accelerator)

    # ---- train ----
    for batch in _micro_batches(trainer, sampler, dataloader):
        with accelerator.accumulate(transformer):
            latents, prompt_embeds, pooled = _conditioning(
                batch, vae, text_encoders, accelerator.device, weight_dtype, counters, global_batch
            )
            if latent_std is None:
                latent_std = _check_latent_scale(latents, vae)
            prompt_embeds, pooled = drop_captions(
                prompt_embeds, pooled, empty_embeds, empty_pooled, data_config.caption_dropout_prob, global_batch
            )
            loss, logs = flux_flow_matching_loss(
                transformer, latents, prompt_embeds, pooled, patch, config.flow, global_batch
            )
            raise_if_not_finite(accelerator, logs, trainer.global_step)
            backward_and_step(
                accelerator, transformer, loss, logs, optimizer, lr_scheduler, config.optimizer.max_grad_norm
            )
        if not accelerator.sync_gradients:
            continue
        trainer.finish_optimizer_step()
        if trainer.due(training.log_every_steps):
            extra = {
                "throughput/steps_per_second": trainer.steps_per_second,
                **{f"data/{name}": float(count) for name, count in counters.items()},
            }
            trainer.log(loggable_values(logs, lr_scheduler, **extra))
        if trainer.due(training.checkpointing_steps):
            trainer.save_checkpoint(synchronized_models={"transformer": transformer})
        if trainer.due(training.validation_steps):
            with trainer.ema_weights(raw_transformer):
                _save_validation_grid(
                    _pipeline(raw_transformer, vae, text_encoders, config),
                    config,
                    buckets,
                    accelerator,
                    output_dir / "validation" / f"step-{trainer.global_step:07d}.png",
                    trainer.global_step,
                )

    # ---- export: the EMA transformer in diffusers format, and the whole pipeline ----
    with trainer.ema_weights(raw_transformer):
        state_dict = accelerator.get_state_dict(transformer)
    metrics: dict[str, Any] = {}
    if accelerator.is_main_process:
        final = FluxTransformer2DModel.from_config(raw_transformer.config)
        final.load_state_dict(state_dict)
        final = final.eval()
        save_pretrained_atomically(final, output_dir / "transformer")
        save_pretrained_atomically(_pipeline(final, vae, text_encoders, config), output_dir / "pipeline")
        metrics = trainer.write_metrics(
            output_dir,
            {
                "loss_curve": trainer.logged,
                "num_parameters": sum(p.numel() for p in final.parameters()),
                "latent_patch_size": patch,
                "image_tokens_per_bucket": {
                    str(b): (b.width // model_config.pixels_per_token) * (b.height // model_config.pixels_per_token)
                    for b in buckets
                },
                "bucket_counts": dataset.bucket_counts(),
                "skipped_at_scan": dataset.skipped,
                "counters_this_run": counters,
                "normalised_latent_std_first_batch": latent_std,
            },
        )
    trainer.finish()
    return metrics


def _micro_batches(
    trainer: Trainer, sampler: BucketBatchSampler, dataloader: torch.utils.data.DataLoader
) -> Iterator[dict[str, Any]]:
    """The micro-batches from the trainer's step to the last one. Not `Trainer.micro_batches`: the bucket sampler
    resumes mid-epoch itself (`set_epoch(epoch, start_batch)`), and each epoch yields whole optimiser steps only, as
    leftover micro-batches would leak into the next epoch's accumulation and break the step -> batch arithmetic a
    resume relies on."""
    accumulation = trainer.training.gradient_accumulation_steps
    steps_per_epoch = max(1, len(sampler) // accumulation)
    while not trainer.done:
        epoch, step_in_epoch = divmod(trainer.global_step, steps_per_epoch)
        start_batch = step_in_epoch * accumulation
        sampler.set_epoch(epoch, start_batch=start_batch)
        batches_left = steps_per_epoch * accumulation - start_batch
        for batch_index, batch in enumerate(dataloader):
            if batch_index >= batches_left:
                break
            yield batch
            if trainer.done:
                return


def _conditioning(
    batch, vae, text_encoders, device, weight_dtype, counters, global_batch: GlobalBatch = SINGLE_PROCESS
):
    """Normalised latents and text embeddings of a batch, from the cache or encoded now with the frozen models.

    A stochastic VAE's posterior sample uses noise cut from a global-batch draw (`global_batch`).
    """
    if "latent_mean" in batch:
        latents = batch["latent_mean"].to(device)
        if "latent_std" in batch:
            noise = global_batch.randn(latents.shape, device=latents.device, dtype=latents.dtype)
            latents = latents + batch["latent_std"].to(device) * noise
        prompt_embeds, pooled = batch["prompt_embeds"].to(device), batch["pooled_prompt_embeds"].to(device)
    else:
        with torch.no_grad():
            latents = _sample_posterior(
                vae.encode(batch["pixel_values"].to(device, vae.dtype)).latent_dist, global_batch
            )
            prompt_embeds, pooled = text_encoders.encode(batch["caption"])
        truncated = text_encoders.count_truncated(batch["caption"])
        counters["truncated_clip"] += truncated["clip"]
        counters["truncated_t5"] += truncated["t5"]
        counters["skipped_unreadable"] += int(batch["num_skipped"])
    return normalize_latents(vae, latents.float()), prompt_embeds.to(weight_dtype), pooled.to(weight_dtype)


def _sample_posterior(distribution, global_batch: GlobalBatch) -> torch.Tensor:
    """`distribution.sample()` with its noise cut from a global-batch draw: `mean + std * noise` for diffusers'
    `DiagonalGaussianDistribution` (drawn as its `sample` draws it, so one process gets the same numbers); any other
    posterior (AlignTok's deterministic one draws nothing) samples itself."""
    if type(distribution).sample is not DiagonalGaussianDistribution.sample:
        return distribution.sample()
    parameters = distribution.parameters
    noise = global_batch.randn(distribution.mean.shape, device=parameters.device, dtype=parameters.dtype)
    return distribution.mean + distribution.std * noise


def _check_latent_scale(latents: torch.Tensor, vae) -> float:
    std = float(latents.std())
    low, high = _LATENT_STD_RANGE
    if not low <= std <= high:
        logger.warning(
            f"Normalised latents have std {std:.3f} (scaling_factor {vae.config.scaling_factor}, shift_factor "
            f"{vae.config.shift_factor}); flow matching expects about 1. For an AlignTok tokenizer run `python "
            "training/compute_latent_statistics.py --tokenizer PATH --normalization global --write`.",
            main_process_only=True,
        )
    return std


def _pipeline(transformer, vae, text_encoders, config: T2IConfig) -> FluxPipeline:
    """`FluxPipeline` for patch-2 packing (the stock pipeline runs it as is), else `AlignTokFluxPipeline`."""
    pipeline_class = (
        FluxPipeline if transformer.config.in_channels == 4 * vae.config.latent_channels else AlignTokFluxPipeline
    )
    return pipeline_class(
        scheduler=build_scheduler(config.flow),
        vae=vae,
        transformer=transformer,
        text_encoder=text_encoders.text_encoder,
        tokenizer=text_encoders.tokenizer,
        text_encoder_2=text_encoders.text_encoder_2,
        tokenizer_2=text_encoders.tokenizer_2,
    )


@torch.no_grad()
def _save_validation_grid(pipeline, config: T2IConfig, buckets, accelerator, path: Path, global_step: int) -> None:
    """Every validation prompt at bucket `i % len(buckets)`; all ranks sample (FSDP needs every shard), rank 0 saves
    the grid and sends it to the trackers."""
    validation = config.validation
    was_training = pipeline.transformer.training
    pipeline.transformer.eval()
    guidance = (
        {"true_cfg_scale": validation.guidance_scale, "negative_prompt": ""} if validation.guidance_scale > 1 else {}
    )
    rows = []
    for index, prompt in enumerate(validation.prompts):
        bucket = buckets[index % len(buckets)]
        with accelerator.autocast():
            image = pipeline(
                prompt=prompt,
                height=bucket.height,
                width=bucket.width,
                num_inference_steps=validation.num_inference_steps,
                max_sequence_length=config.model.max_sequence_length,
                generator=torch.Generator().manual_seed(validation.seed + index),
                output_type="pt",
                **guidance,
            ).images
        rows.append(image.float() * 2 - 1)
    pipeline.transformer.train(was_training)
    if accelerator.is_main_process:
        # Buckets differ in size: pad each image to the largest so they share a grid row.
        height, width = max(r.shape[-2] for r in rows), max(r.shape[-1] for r in rows)
        padded = [F.pad(r, (0, width - r.shape[-1], 0, height - r.shape[-2]), value=1.0) for r in rows]
        grid = save_grid(image_grid([torch.cat(padded)]), path)
        log_validation_images(
            accelerator, "validation/samples", grid, global_step, caption=" | ".join(validation.prompts)
        )
