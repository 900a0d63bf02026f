"""Training-step time (forward, backward, optimiser, EMA) and images/s of the project's real training steps.

Each model runs the step its training loop runs, built from its recipe config in `training/configs/` (random weights,
random inputs, nothing downloaded); only the models' and optimisers' construction is written out here, following
the loops:

| row | config | step |
|---|---|---|
| `tokenizer_stage2` | `imagenet_f16d32.yaml`, stage 2 (`load_stage_config`, `build_stage_models`) | `training.step.tokenizer_training_step`: DINOv2-L encoder + adapter + decoder, L1 + LPIPS (the offline random-trunk stand-in `lpips-vgg-random-trunk`: same VGG16 cost, not a metric) + adaptive GAN, L_sp against the frozen stage-1 encoder + adapter, then the PatchGAN discriminator's update; EMA |
| `dit_B`, `dit_XL` | `dit_xl_imagenet_64ep.yaml` with `model.preset` B / XL (`dit_loop.build_transformer`) | `flow_matching.flow_matching_loss` + `step.backward_and_step` on a 16x16x32 latent (256 px); EMA |
| `t2i_aligntok`, `t2i_flux_vae` | `t2i_2b_{256,512}_{aligntok,flux_vae}.yaml` (`t2i_components.build_transformer`) | `t2i_loop.drop_captions` + `flux_flow_matching_loss` + `backward_and_step` on cached conditioning (random latents of the arm's VAE shape, 256 T5-XXL tokens of 4096 and a CLIP-L pooled 768); EMA |

The split: `accelerator.backward` calls are "backward"; `clip_grad_norm_`, the optimisers' `step` / `zero_grad` and
the LR scheduler's `step` are "optimiser"; `EMAModel.step` is "EMA"; everything else in the step is "forward" (for
the tokenizer that includes the losses, the discriminator's forwards, the frozen L_sp target's encode and the
adaptive GAN weight's two `autograd.grad` calls to the decoder's last layer). The calls are timed by wrapping those
methods on the step's own objects (with a device synchronisation around each on CUDA); the step code is untouched.

FLOPs: the first warm-up step runs under `torch.utils.flop_counter.FlopCounterMode` (as `benchmarks/gpu/check.py`),
so every matmul, convolution and attention of forward + backward is counted; on CUDA the achieved rate is compared to
the device's dense bf16 peak (`BF16_PEAK_TFLOPS` of check.py) as model FLOPs utilisation (MFU).

The 2B text-to-image transformer with fp32 AdamW and EMA needs ~20 bytes per parameter (~40 GB) before activations.
Where that does not fit in memory (`--t2i_depth auto`, the default: any machine under ~48 GiB free, such as the
24 GiB development CPU), a depth proxy is timed instead: the same widths with 1 double-stream + 2 single-stream
blocks, and the full model's times are extrapolated: forward and backward scaled by the ratio of counted forward FLOPs
(full / proxy, both traced on the meta device), optimiser and EMA by the ratio of parameter counts. Those rows say
"extrapolated". `--t2i_depth full` forces the real depth.

On CPU the real presets are slow; the defaults (batch 1, 1 warm-up + 2 timed steps, t2i at 256 only) finish in about
5 minutes on 2 cores. `--resolutions 256 512` adds the 512 t2i rows. Gradient checkpointing is off unless
`--gradient_checkpointing` (the recipes turn it on for the tokenizer's stage 2 and the 2B model to fit their GPU batch;
it adds about one forward to the backward).

Usage:
    python benchmarks/training_speed.py --quick               # tiny presets, ~30 s: checks the code paths
    python benchmarks/training_speed.py                       # the real presets, ~5 min on 2 CPU cores
    python benchmarks/training_speed.py --device cuda --batch_size 16 --steps 10 --resolutions 256 512
Writes `<output_dir>/training_speed.{json,md}` (default `benchmarks/results/`).
"""

import argparse
import contextlib
import ctypes
import gc
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import benchmark_utils  # noqa: E402
import torch  # noqa: E402
from benchmark_utils import available_memory_bytes, cpu_has_fast_bf16, sync  # noqa: E402

from diffusers_aligntok.training.trainer import build_adamw, build_ema  # noqa: E402


ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "training" / "configs"
MODELS = ("tokenizer_stage2", "dit_B", "dit_XL", "t2i_aligntok", "t2i_flux_vae")
T5_XXL_WIDTH, CLIP_L_WIDTH, T5_TOKENS = 4096, 768, 256
# Bytes per trained parameter: fp32 weight + gradient + two AdamW moments + the EMA copy.
BYTES_PER_TRAINED_PARAMETER = 4 + 4 + 8 + 4
# Depth of the 2B model's proxy when the real one does not fit (same widths).
T2I_PROXY_DEPTH = {"num_layers": 1, "num_single_layers": 2}


def _load_gpu_check():
    """`benchmarks/gpu/check.py`, for its bf16 peak table and FLOP counter (one place for both)."""
    spec = importlib.util.spec_from_file_location("aligntok_gpu_check", ROOT / "benchmarks" / "gpu" / "check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GPU_CHECK = _load_gpu_check()
BF16_PEAK_TFLOPS, count_flops = GPU_CHECK.BF16_PEAK_TFLOPS, GPU_CHECK.count_flops


# ---------------------------------------------------------------------------------------------------------------
# Machine, memory, timing
# ---------------------------------------------------------------------------------------------------------------


def machine_description(args) -> dict:
    name = torch.cuda.get_device_properties(args.device).name if args.device.type == "cuda" else ""
    peak = next((value for key, value in BF16_PEAK_TFLOPS.items() if key in name), None) if name else None
    return benchmark_utils.machine_description(args.device, dtype=args.dtype, quick=args.quick, bf16_peak_tflops=peak)


class PhaseTimer:
    """Wall time of chosen method calls inside a step, summed per phase; the step's remainder is its forward."""

    def __init__(self, device: torch.device):
        self.device = device
        self.totals: dict[str, float] = defaultdict(float)

    def wrap(self, owner, method: str, phase: str) -> None:
        original = getattr(owner, method)

        def timed(*args, **kwargs):
            sync(self.device)
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                sync(self.device)
                self.totals[phase] += time.perf_counter() - start

        setattr(owner, method, timed)  # an instance attribute: the class and other instances are untouched

    def reset(self) -> None:
        self.totals = defaultdict(float)


def time_steps(step, timer: PhaseTimer, device: torch.device, warmup: int, steps: int) -> tuple[int, list[dict]]:
    """Runs `warmup` steps (the first under FlopCounterMode) and `steps` timed ones; returns (FLOPs, per-step times)."""
    started = time.perf_counter()
    flops = count_flops(step)
    print(f"  warm-up step 1 (FLOP-counted): {time.perf_counter() - started:.2f}s", flush=True)
    for _ in range(warmup - 1):
        step()
    sync(device)
    per_step = []
    for _ in range(steps):
        timer.reset()
        sync(device)
        start = time.perf_counter()
        step()
        sync(device)
        total = time.perf_counter() - start
        phases = {name: timer.totals.get(name, 0.0) for name in ("backward", "optimizer", "ema")}
        per_step.append({"forward": total - sum(phases.values()), **phases, "total": total})
        print(f"  timed step {len(per_step)}: {total:.2f}s", flush=True)
    return flops, per_step


def mean_phases(per_step: list[dict]) -> dict:
    return {key: statistics.fmean(s[key] for s in per_step) for key in per_step[0]}


def wrap_step_objects(timer: PhaseTimer, accelerator, optimizers, schedulers, ema) -> None:
    timer.wrap(accelerator, "backward", "backward")
    timer.wrap(accelerator, "clip_grad_norm_", "optimizer")
    for optimizer in optimizers:
        timer.wrap(optimizer, "step", "optimizer")
        timer.wrap(optimizer, "zero_grad", "optimizer")
    for scheduler in schedulers:
        timer.wrap(scheduler, "step", "optimizer")
    if ema is not None:
        timer.wrap(ema, "step", "ema")


def unwrap_accelerator(accelerator) -> None:
    """Drops the timing wrappers from the shared Accelerator and releases the prepared models it references."""
    for method in ("backward", "clip_grad_norm_"):
        accelerator.__dict__.pop(method, None)
    accelerator.free_memory()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    with contextlib.suppress(OSError, AttributeError):
        # glibc keeps freed heap memory in the process; hand it back so the next model's memory check sees it.
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def parameter_count(module: torch.nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def check_memory(name: str, needed_bytes: int, device: torch.device) -> None:
    available = available_memory_bytes(device)
    if needed_bytes > 0.85 * available:
        raise MemoryError(
            f"{name} needs about {needed_bytes / 2**30:.1f} GiB (weights, gradients, AdamW moments, EMA) but only "
            f"{available / 2**30:.1f} GiB is available; skipped rather than risk the OOM killer. Free memory, or use "
            "--quick / a smaller --batch_size."
        )


def ema_for(model: torch.nn.Module, decay: float | None, device):
    """The trainer's EMA (`build_ema`), on `device`; None without EMA."""
    if decay is None:
        return None
    ema = build_ema(model, decay)
    ema.to(device)
    return ema


# ---------------------------------------------------------------------------------------------------------------
# The models
# ---------------------------------------------------------------------------------------------------------------


def setup_tokenizer_stage2(args, accelerator, work_dir: Path) -> dict:
    from diffusers.optimization import get_scheduler

    from diffusers_aligntok import AlignedAutoencoderKL
    from diffusers_aligntok.losses import PatchGANDiscriminator, ReconstructionLoss, build_perceptual_network
    from diffusers_aligntok.training.config import load_stage_config
    from diffusers_aligntok.training.stages import build_stage_models
    from diffusers_aligntok.training.step import (
        TokenizerReconstruction,
        TokenizerTrainingComponents,
        tokenizer_training_step,
    )

    device, batch = args.device, args.batch_size
    preset = "tiny" if args.quick else "aligntok-dinov2-large-f16d32"
    resolution = 32 if args.quick else 256
    init_dir = work_dir / "stage1_model"
    overrides = {
        "model.preset": preset,
        "model.foundation_encoder": None,  # no download: the stage-1 model below has a random encoder
        "model.init_from": str(init_dir),
        "data.resolution": resolution,
        "loss.perceptual_network": "lpips-vgg-random-trunk",  # offline stand-in with the real VGG16's cost
        "training.train_batch_size": batch,
        "training.mixed_precision": args.mixed_precision,
        "training.gradient_checkpointing": args.gradient_checkpointing,
    }
    if args.quick:  # a tiny discriminator to go with the tiny tokenizer
        overrides["loss.discriminator.base_channels"] = 8
    config = load_stage_config(CONFIGS / "imagenet_f16d32.yaml", 2, overrides)
    torch.manual_seed(0)
    stage1 = AlignedAutoencoderKL.from_preset(preset)
    total_parameters = parameter_count(stage1)
    encoder_adapter = total_parameters - parameter_count(stage1.decoder)
    check_memory(
        "tokenizer stage 2",
        total_parameters * BYTES_PER_TRAINED_PARAMETER + encoder_adapter * 4 + batch * 2**30,
        device,
    )
    stage1.save_pretrained(init_dir)  # stage 2 starts from a saved stage-1 model, as in the recipe
    del stage1
    models = build_stage_models(config, 2, work_dir)
    tokenizer, loss_config, optimizer_config = models.tokenizer, config.loss, config.optimizer
    discriminator = PatchGANDiscriminator(**asdict(loss_config.discriminator))
    reconstruction_loss = ReconstructionLoss(
        perceptual_network=build_perceptual_network(loss_config.perceptual_network),
        l1_weight=loss_config.l1_weight,
        perceptual_weight=loss_config.perceptual_weight,
        gan_weight=loss_config.gan_weight,
        gan_start_step=loss_config.gan_start_step,
        adaptive_weight_max=loss_config.adaptive_weight_max,
    )
    # As training/loop.py builds them (the discriminator with torch's default weight decay).
    tokenizer_optimizer = build_adamw(models.parameter_groups, optimizer_config)
    discriminator_optimizer = build_adamw(
        discriminator.parameters(),
        optimizer_config,
        learning_rate=optimizer_config.discriminator_learning_rate,
        weight_decay=0.01,
    )
    scheduler = get_scheduler(
        optimizer_config.lr_scheduler,
        optimizer=tokenizer_optimizer,
        num_warmup_steps=optimizer_config.lr_warmup_steps,
        num_training_steps=config.training.max_train_steps,
    )
    module, tokenizer_optimizer, scheduler = accelerator.prepare(
        TokenizerReconstruction(tokenizer), tokenizer_optimizer, scheduler
    )
    discriminator, discriminator_optimizer = accelerator.prepare(discriminator, discriminator_optimizer)
    reconstruction_loss.to(accelerator.device)
    models.semantic_target.to(accelerator.device)
    raw_tokenizer = accelerator.unwrap_model(module).tokenizer
    ema = ema_for(raw_tokenizer, config.training.ema_decay, accelerator.device)
    components = TokenizerTrainingComponents(
        accelerator=accelerator,
        reconstruction_module=module,
        discriminator=discriminator,
        reconstruction_loss=reconstruction_loss,
        tokenizer_optimizer=tokenizer_optimizer,
        tokenizer_lr_scheduler=scheduler,
        discriminator_optimizer=discriminator_optimizer,
        semantic_target=models.semantic_target,
        semantic_preservation_weight=loss_config.semantic_preservation_weight,
        semantic_preservation_kind=loss_config.semantic_preservation_kind,
        max_grad_norm=optimizer_config.max_grad_norm,
    )
    module.train()
    images = torch.rand(batch, 3, resolution, resolution, device=accelerator.device) * 2 - 1
    counter = {"step": 0}

    def step():
        tokenizer_training_step(components, images, counter["step"])
        if ema is not None:
            ema.step(raw_tokenizer.parameters())
        counter["step"] += 1

    trained = parameter_count(raw_tokenizer, trainable_only=True) + parameter_count(discriminator)
    return {
        "step": step,
        "objects": ([tokenizer_optimizer, discriminator_optimizer], [scheduler], ema),
        "setting": (
            f"{preset}, stage 2 of imagenet_f16d32.yaml: L1 + LPIPS (random trunk) + GAN (w {loss_config.gan_weight}) "
            f"+ w_sp {loss_config.semantic_preservation_weight} L_sp; discriminator update; EMA "
            f"{config.training.ema_decay}"
        ),
        "resolution": resolution,
        "parameters_trained": trained,
        "parameters_total": parameter_count(raw_tokenizer)
        + parameter_count(discriminator)
        + parameter_count(models.semantic_target)
        + parameter_count(reconstruction_loss),
    }


def setup_dit(args, accelerator, size: str) -> dict:
    from diffusers.optimization import get_scheduler

    from diffusers_aligntok.training.distributed import GlobalBatch
    from diffusers_aligntok.training.dit_config import load_dit_config
    from diffusers_aligntok.training.dit_loop import build_transformer
    from diffusers_aligntok.training.flow_matching import flow_matching_loss
    from diffusers_aligntok.training.step import backward_and_step, raise_if_not_finite

    device, batch = args.device, args.batch_size
    preset = "tiny" if args.quick else size
    config = load_dit_config(
        CONFIGS / "dit_xl_imagenet_64ep.yaml",
        {
            "model.preset": preset,
            "training.train_batch_size": batch,
            "training.mixed_precision": args.mixed_precision,
            "training.gradient_checkpointing": args.gradient_checkpointing,
        },
    )
    # What build_transformer reads from a latent cache: the AlignTok f16d32 latent of a 256 image (tiny: f4d8 of 32).
    cache = SimpleNamespace(latent_shape=(8, 8, 8), num_classes=10) if args.quick else None
    cache = cache or SimpleNamespace(latent_shape=(32, 16, 16), num_classes=1000)
    torch.manual_seed(0)
    with torch.device("meta"):
        parameters = parameter_count(build_transformer(config, cache))
    check_memory(f"DiT-{preset}", parameters * BYTES_PER_TRAINED_PARAMETER + batch * 2**28, device)
    with torch.device(device):  # initialise on the device (a 675M model initialises slowly on the CPU)
        transformer = build_transformer(config, cache)
    if config.training.gradient_checkpointing:
        transformer.enable_gradient_checkpointing()
    optimizer_config = config.optimizer
    optimizer = build_adamw(transformer.parameters(), optimizer_config)
    scheduler = get_scheduler(optimizer_config.lr_scheduler, optimizer=optimizer)
    transformer, optimizer, scheduler = accelerator.prepare(transformer, optimizer, scheduler)
    raw = accelerator.unwrap_model(transformer)
    ema = ema_for(raw, config.training.ema_decay, accelerator.device)
    transformer.train()
    global_batch = GlobalBatch.of(accelerator)
    latents = torch.randn(batch, *cache.latent_shape, device=accelerator.device)
    labels = torch.randint(0, cache.num_classes, (batch,), device=accelerator.device)
    counter = {"step": 0}

    def step():
        with accelerator.accumulate(transformer):
            loss, logs = flow_matching_loss(transformer, latents, labels, config.flow, global_batch, counter["step"])
            raise_if_not_finite(accelerator, logs, counter["step"])
            backward_and_step(
                accelerator, transformer, loss, logs, optimizer, scheduler, optimizer_config.max_grad_norm
            )
        if ema is not None:
            ema.step(raw.parameters())
        counter["step"] += 1

    channels, height, width = cache.latent_shape
    return {
        "step": step,
        "objects": ([optimizer], [scheduler], ema),
        "setting": (
            f"LightningDiT-{preset}/1 on {height}x{width}x{channels} latents ({height * width} tokens), "
            f"flow matching (+ cosine {config.flow.velocity_cosine_weight}), AdamW, EMA {config.training.ema_decay}"
        ),
        "resolution": 32 if args.quick else 256,
        "parameters_trained": parameter_count(raw, trainable_only=True),
        "parameters_total": parameter_count(raw),
    }


def _t2i_vae_on_meta(arm: str):
    from diffusers import AutoencoderKL

    from diffusers_aligntok import AlignedAutoencoderKL
    from diffusers_aligntok.standins import FLUX_VAE_CONFIG

    with torch.device("meta"):
        if arm == "aligntok":
            return AlignedAutoencoderKL.from_preset("aligntok-dinov2-large-f16d32")
        return AutoencoderKL(**FLUX_VAE_CONFIG)


def _t2i_forward_flops_on_meta(config, vae, resolution, text_tokens, text_width, pooled_width) -> tuple[int, int]:
    """(forward FLOPs per image, parameters) of the configured transformer at one square resolution, on meta."""
    from diffusers_aligntok.pipelines import latent_image_ids
    from diffusers_aligntok.training.t2i_components import build_transformer

    with torch.device("meta"):
        transformer = build_transformer(config, vae, text_width, pooled_width)
        tokens = (resolution // config.model.pixels_per_token) ** 2
        inputs = {
            "hidden_states": torch.randn(1, tokens, transformer.config.in_channels),
            "encoder_hidden_states": torch.randn(1, text_tokens, text_width),
            "pooled_projections": torch.randn(1, pooled_width),
            "timestep": torch.rand(1),
            "img_ids": latent_image_ids(1, tokens),
            "txt_ids": torch.zeros(text_tokens, 3),
        }
    return count_flops(lambda: transformer(**inputs, return_dict=False)), parameter_count(transformer)


def setup_t2i(args, accelerator, arm: str, resolution: int) -> dict:
    from diffusers.optimization import get_scheduler

    from diffusers_aligntok.training.distributed import GlobalBatch
    from diffusers_aligntok.training.step import backward_and_step, raise_if_not_finite
    from diffusers_aligntok.training.t2i_components import (
        build_transformer,
        check_transformer_fits,
        patch_size_for,
    )
    from diffusers_aligntok.training.t2i_config import load_t2i_config
    from diffusers_aligntok.training.t2i_loop import drop_captions, flux_flow_matching_loss

    device, batch = args.device, args.batch_size
    config_resolution = 512 if resolution >= 512 else 256
    overrides = {
        "model.init_transformer_from": None,  # the 512 recipe continues from a 256 run; random weights here
        "data.resolution": resolution,
        "training.train_batch_size": batch,
        "training.mixed_precision": args.mixed_precision,
        "training.gradient_checkpointing": args.gradient_checkpointing,
    }
    text_tokens, text_width, pooled_width = T5_TOKENS, T5_XXL_WIDTH, CLIP_L_WIDTH
    if args.quick:
        overrides["model.transformer_preset"] = "tiny"
        text_tokens, text_width, pooled_width = 32, 64, 32
    config_path = CONFIGS / f"t2i_2b_{config_resolution}_{arm}.yaml"
    config = load_t2i_config(config_path, overrides)
    vae = _t2i_vae_on_meta(arm)
    patch = patch_size_for(vae, config.model.pixels_per_token)
    full_flops, full_parameters = _t2i_forward_flops_on_meta(
        config, vae, resolution, text_tokens, text_width, pooled_width
    )
    needed = full_parameters * BYTES_PER_TRAINED_PARAMETER + batch * 2**30
    fits = needed < 0.85 * available_memory_bytes(device)
    proxy = args.t2i_depth == "proxy" or (args.t2i_depth == "auto" and not fits and not args.quick)
    scale = None
    if proxy:
        config.model.transformer_overrides = {**config.model.transformer_overrides, **T2I_PROXY_DEPTH}
        proxy_flops, proxy_parameters = _t2i_forward_flops_on_meta(
            config, vae, resolution, text_tokens, text_width, pooled_width
        )
        scale = {"flops": full_flops / proxy_flops, "parameters": full_parameters / proxy_parameters}
        check_memory(f"t2i {arm} proxy", proxy_parameters * BYTES_PER_TRAINED_PARAMETER + batch * 2**30, device)
    else:
        check_memory(f"t2i {arm}", needed, device)
    torch.manual_seed(0)
    with torch.device(device):
        transformer = build_transformer(config, vae, text_width, pooled_width)
    check_transformer_fits(transformer, vae, patch)
    if config.training.gradient_checkpointing:
        transformer.enable_gradient_checkpointing()
    transformer.train()
    optimizer_config = config.optimizer
    optimizer = build_adamw(transformer.parameters(), optimizer_config)
    scheduler = get_scheduler(
        optimizer_config.lr_scheduler, optimizer=optimizer, num_warmup_steps=optimizer_config.lr_warmup_steps
    )
    transformer, optimizer, scheduler = accelerator.prepare(transformer, optimizer, scheduler)
    raw = accelerator.unwrap_model(transformer)
    ema = ema_for(raw, config.training.ema_decay, accelerator.device)
    weight_dtype = torch.bfloat16 if accelerator.mixed_precision == "bf16" else torch.float32
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    channels, side = vae.config.latent_channels, resolution // factor
    dev = accelerator.device
    latents = torch.randn(batch, channels, side, side, device=dev)  # normalised latents (std 1), as the loss sees
    prompt_embeds = torch.randn(batch, text_tokens, text_width, device=dev, dtype=weight_dtype)
    pooled = torch.randn(batch, pooled_width, device=dev, dtype=weight_dtype)
    empty_embeds, empty_pooled = torch.zeros_like(prompt_embeds[0]), torch.zeros_like(pooled[0])
    global_batch = GlobalBatch.of(accelerator)
    counter = {"step": 0}

    def step():
        with accelerator.accumulate(transformer):
            embeds, pooled_embeds = drop_captions(
                prompt_embeds, pooled, empty_embeds, empty_pooled, config.data.caption_dropout_prob, global_batch
            )
            loss, logs = flux_flow_matching_loss(
                transformer, latents, embeds, pooled_embeds, patch, config.flow, global_batch
            )
            raise_if_not_finite(accelerator, logs, counter["step"])
            backward_and_step(
                accelerator, transformer, loss, logs, optimizer, scheduler, optimizer_config.max_grad_norm
            )
        if ema is not None:
            ema.step(raw.parameters())
        counter["step"] += 1

    tokens = (resolution // config.model.pixels_per_token) ** 2
    preset = config.model.transformer_preset
    depth = f"{raw.config.num_layers} double + {raw.config.num_single_layers} single blocks"
    return {
        "step": step,
        "objects": ([optimizer], [scheduler], ema),
        "setting": (
            f"FLUX {preset} ({'PROXY ' if proxy else ''}{depth}), {config_path.name}: {channels}x{side}x{side} latent, "
            f"patch {patch}, {tokens} image + {text_tokens} text tokens, AdamW, EMA {config.training.ema_decay}"
        ),
        "resolution": resolution,
        "parameters_trained": parameter_count(raw, trainable_only=True),
        "parameters_total": parameter_count(raw),
        "full_parameters": full_parameters,
        "full_forward_flops_per_image": full_flops,
        "extrapolation": scale,
    }


# ---------------------------------------------------------------------------------------------------------------
# Running and reporting
# ---------------------------------------------------------------------------------------------------------------


def run_model(name: str, setup, args, accelerator, peak) -> dict:
    print(f"\n## {name} ({available_memory_bytes(args.device) / 2**30:.1f} GiB available)", flush=True)
    started = time.monotonic()
    row = {"model": name, "batch_size": args.batch_size, "dtype": args.dtype, "status": "ok"}
    row["memory_available_gib_before"] = round(available_memory_bytes(args.device) / 2**30, 1)
    row["load_average_before"] = [round(x, 2) for x in os.getloadavg()]
    timer = PhaseTimer(args.device)
    try:
        built = setup()
        optimizers, schedulers, ema = built.pop("objects")
        wrap_step_objects(timer, accelerator, optimizers, schedulers, ema)
        step = built.pop("step")
        row.update(built)
        row["setup_s"] = round(time.monotonic() - started, 1)
        print(f"  built in {row['setup_s']}s", flush=True)
        flops, per_step = time_steps(step, timer, args.device, args.warmup, args.steps)
        times = mean_phases(per_step)
        row.update(
            flops_per_step=flops,
            steps_timed=len(per_step),
            warmup_steps=args.warmup,
            per_step=[{k: round(v, 4) for k, v in s.items()} for s in per_step],
            measured={f"{k}_s": v for k, v in times.items()},
        )
        scale = row.get("extrapolation")
        if scale:  # the proxy's times, scaled to the full depth
            times = {
                "forward": times["forward"] * scale["flops"],
                "backward": times["backward"] * scale["flops"],
                "optimizer": times["optimizer"] * scale["parameters"],
                "ema": times["ema"] * scale["parameters"],
            }
            times["total"] = sum(times.values())
            flops = flops * scale["flops"]
            row["flops_per_step_full_depth"] = flops
        row.update({f"{k}_s": v for k, v in times.items()})
        row["images_per_s"] = args.batch_size / times["total"]
        row["achieved_tflops"] = flops / times["total"] / 1e12
        row["mfu"] = row["achieved_tflops"] / peak if peak else None
        if args.device.type == "cuda":
            row["peak_memory_gib"] = torch.cuda.max_memory_allocated(args.device) / 2**30
            torch.cuda.reset_peak_memory_stats(args.device)
        print(
            f"  {row['setting']}\n  step {times['total']:.3f}s (fwd {times['forward']:.3f}, bwd {times['backward']:.3f},"
            f" opt {times['optimizer']:.3f}, ema {times['ema']:.3f}) -> {row['images_per_s']:.4g} img/s, "
            f"{row['achieved_tflops']:.4g} TFLOP/s{' (extrapolated)' if scale else ''}",
            flush=True,
        )
    except Exception as error:  # one model failing (or not fitting) must not lose the others
        if not isinstance(error, MemoryError):
            traceback.print_exc()
        row["status"] = f"{'skipped' if isinstance(error, MemoryError) else 'error'}: {type(error).__name__}: {error}"
        print(f"  {row['status']}", flush=True)
    finally:
        unwrap_accelerator(accelerator)
    row["wall_s"] = round(time.monotonic() - started, 1)
    return row


def _fmt(value, digits=3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def markdown(results: dict) -> str:
    machine = results["machine"]
    device = machine["gpu"] or (
        f"CPU {machine['cpu']} ({machine['torch_threads']} threads, torch CPU capability "
        f"{machine['torch_cpu_capability']}, bf16 instructions: {machine['cpu_bf16_instructions']})"
    )
    lines = [
        "# Training-step speed" + (" (--quick: TINY presets, code-path check only)" if machine["quick"] else ""),
        "",
        f"{machine['date']}; `{machine['command']}`; {device}; torch {machine['torch']}, diffusers "
        f"{machine['diffusers']}, accelerate {machine['accelerate']}; {machine['dtype']}"
        f"{' autocast' if machine['dtype'] == 'bf16' else ''}; load average at start "
        f"{', '.join(map(str, machine['load_average_at_start']))} on {machine['cpu_count']} cores, "
        f"{machine['memory_available_gib_at_start']} GiB free; bf16 peak "
        f"{machine['bf16_peak_tflops'] or '- (CPU: no MFU)'} TFLOP/s. Random weights; times are the mean of "
        f"{results['steps']} timed steps after {results['warmup']} warm-up (the first FLOP-counted).",
        "",
        "| model | setting | px | batch | forward s | backward s | optimiser s | EMA s | step s | img/s | "
        "TFLOP / step | TFLOP/s | MFU | status |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in results["rows"]:
        if not row["status"].startswith("ok"):
            lines.append(
                f"| {row['model']} | {row.get('setting', '-')} | {row.get('resolution', '-')} | {row['batch_size']} |"
                f" | | | | | | | | | {row['status'].replace('|', '/')} |"
            )
            continue
        flops = row.get("flops_per_step_full_depth", row["flops_per_step"])
        status = "extrapolated from the proxy (full depth)" if row.get("extrapolation") else "measured"
        mfu = "-" if row["mfu"] is None else f"{100 * row['mfu']:.1f}%"
        lines.append(
            f"| {row['model']} | {row['setting'].replace('|', '/')} | {row['resolution']} | {row['batch_size']} | "
            f"{_fmt(row['forward_s'])} | {_fmt(row['backward_s'])} | {_fmt(row['optimizer_s'])} | "
            f"{_fmt(row['ema_s'])} | {_fmt(row['total_s'])} | {_fmt(row['images_per_s'])} | {_fmt(flops / 1e12)} | "
            f"{_fmt(row['achieved_tflops'])} | {mfu} | "
            f"{status} |"
        )
    proxies = [row for row in results["rows"] if row.get("extrapolation") and row["status"] == "ok"]
    if proxies:
        lines += [
            "",
            "Proxy rows (the 2B model's fp32 weights + gradients + AdamW + EMA do not fit this machine's memory): "
            "measured with 1 double + 2 single blocks at the 2B model's widths, then forward/backward scaled by the "
            "counted forward-FLOP ratio and optimiser/EMA by the parameter ratio:",
            "",
            "| model | px | proxy params | full params | FLOP ratio | measured proxy step s (fwd / bwd / opt / EMA) |",
            "|---|---|---|---|---|---|",
        ]
        for row in proxies:
            m = row["measured"]
            lines.append(
                f"| {row['model']} | {row['resolution']} | {row['parameters_total']:,} | {row['full_parameters']:,} | "
                f"{row['extrapolation']['flops']:.2f} | {m['total_s']:.3f} ({m['forward_s']:.3f} / "
                f"{m['backward_s']:.3f} / {m['optimizer_s']:.3f} / {m['ema_s']:.3f}) |"
            )
    lines += [
        "",
        "Forward = the step minus its backward, optimiser (clip, step, zero_grad, LR scheduler) and EMA calls; for "
        "the tokenizer it holds the losses, the discriminator's forwards, the frozen L_sp target's encode and the "
        "adaptive GAN weight's autograd.grad calls. T2I rows start from cached latents and text embeddings (the "
        "VAE and T5 encodes are not in the step; see `t2i_model_cost.md` for the VAE's FLOPs).",
    ]
    return "\n".join(lines) + "\n"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny presets at tiny sizes (labelled), ~30 s")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--dtype",
        choices=["auto", "fp32", "bf16"],
        default="auto",
        help="bf16 = bf16 autocast as the recipes; auto = bf16 on CUDA, fp32 on a CPU without AVX512-BF16/AMX",
    )
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--resolutions", type=int, nargs="+", default=[256], help="of the t2i rows (256, 512)")
    parser.add_argument("--batch_size", type=int, default=1)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per model")
    parser.add_argument("--warmup", type=int, default=1, help="warm-up steps (>= 1; the first counts FLOPs)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--gradient_checkpointing", action="store_true")
    parser.add_argument(
        "--t2i_depth",
        choices=["auto", "full", "proxy"],
        default="auto",
        help="2B model: real depth, the 3-block proxy + extrapolation, or the proxy only when it does not fit",
    )
    parser.add_argument(
        "--isolate",
        choices=["auto", "yes", "no"],
        default="auto",
        help="time each model in its own process (auto: except with --quick)",
    )
    parser.add_argument("--row_out", default=None, help=argparse.SUPPRESS)  # internal: a child's result file
    parser.add_argument("--output_dir", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    if args.warmup < 1 or args.steps < 1:
        parser.error("--warmup and --steps must be at least 1 (the first warm-up step is the FLOP-counted one).")
    args.device = torch.device(args.device)
    if args.device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but torch.cuda.is_available() is False.")
    if args.dtype == "auto":
        args.dtype = "bf16" if args.device.type == "cuda" or cpu_has_fast_bf16() else "fp32"
    args.mixed_precision = "bf16" if args.dtype == "bf16" else "no"
    if args.quick:
        args.resolutions = [64]
    return args


@contextlib.contextmanager
def _reset_accelerator_state_after():
    from accelerate.state import AcceleratorState

    try:
        yield
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)


def run_tasks_here(args, tasks, peak) -> list[dict]:
    from accelerate import Accelerator

    accelerator = Accelerator(mixed_precision=args.mixed_precision, cpu=args.device.type == "cpu")
    rows = []
    # accelerate's state is process-wide: reset it after, so that a caller in this process (a test, a notebook)
    # can build an Accelerator with another precision.
    with tempfile.TemporaryDirectory(prefix="training_speed_") as work, _reset_accelerator_state_after():
        for name, resolution in tasks:
            if name == "tokenizer_stage2":
                setup = lambda: setup_tokenizer_stage2(args, accelerator, Path(work))  # noqa: E731
            elif name.startswith("dit_"):
                setup = lambda: setup_dit(args, accelerator, name.split("_", 1)[1])  # noqa: E731
            else:
                setup = lambda: setup_t2i(args, accelerator, name.split("_", 1)[1], resolution)  # noqa: E731
            rows.append(run_model(name, setup, args, accelerator, peak))
            for path in Path(work).rglob("*.safetensors"):
                path.unlink()
    return rows


def run_task_in_subprocess(args, name: str, resolution: int | None) -> dict:
    """One model in a fresh process, so that each starts with all of the machine's memory (a process keeps much of
    what a 300M-parameter model freed, and the next model's memory check would skip it)."""
    with tempfile.TemporaryDirectory(prefix="training_speed_row_") as directory:
        row_path = Path(directory) / "row.json"
        command = [sys.executable, str(Path(__file__).resolve()), "--device", str(args.device), "--dtype", args.dtype]
        command += ["--batch_size", str(args.batch_size), "--steps", str(args.steps), "--warmup", str(args.warmup)]
        command += ["--threads", str(args.threads), "--t2i_depth", args.t2i_depth, "--models", name]
        command += ["--resolutions", str(resolution or 256), "--isolate", "no", "--row_out", str(row_path)]
        command += ["--quick"] if args.quick else []
        command += ["--gradient_checkpointing"] if args.gradient_checkpointing else []
        completed = subprocess.run(command, check=False)
        if completed.returncode == 0 and row_path.is_file():
            return json.loads(row_path.read_text())
    status = f"error: the process timing it exited with {completed.returncode} (negative: killed by that signal)"
    return {"model": name, "resolution": resolution, "batch_size": args.batch_size, "status": status}


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    machine = machine_description(args)
    peak = machine["bf16_peak_tflops"] if args.dtype == "bf16" else None
    tasks = [
        (name, resolution)
        for name in args.models
        for resolution in (args.resolutions if name.startswith("t2i_") else [None])
    ]
    if args.row_out:  # a child of run_task_in_subprocess: one task, its row to a file
        (row,) = run_tasks_here(args, tasks[:1], peak)
        Path(args.row_out).write_text(json.dumps(row, default=str))
        return row
    started = time.monotonic()
    isolate = args.isolate == "yes" or (args.isolate == "auto" and not args.quick)
    if isolate:
        rows = [run_task_in_subprocess(args, name, resolution) for name, resolution in tasks]
    else:
        rows = run_tasks_here(args, tasks, peak)
    results = {
        "machine": machine,
        "warmup": args.warmup,
        "steps": args.steps,
        "wall_s": round(time.monotonic() - started, 1),
        "rows": rows,
    }
    benchmark_utils.write_results(args.output_dir, "training_speed", results, markdown(results))
    return results


if __name__ == "__main__":
    main()
