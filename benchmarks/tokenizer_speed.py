"""Tokenizer speed and memory: AlignTok against the FLUX, SD, VA-VAE, RAE and DC-AE autoencoders.

Encode, decode and round-trip (encode + decode of the same repeat) time per image and peak memory, per resolution,
batch size and dtype, for `AlignedAutoencoderKL` (the DINOv2-L and DINOv2-B presets) and for diffusers' own
autoencoders in their published configurations. Every model is built from its config with random weights (no
download; cost does not depend on the weights).

Protocol:
- Within one setting (resolution, batch, dtype, tiling) all models are timed round-robin: each repeat runs every
  model once, the starting model rotating, so load from other processes slows all alike. Figures are medians over
  the repeats after `--warmup` rounds; each row carries its ratio to the FLUX VAE of the same repeat (the median of
  the per-repeat ratios, with their min-max), the number to compare across machines.
- bf16 means the model weights and inputs are cast to bfloat16 (`model.to(torch.bfloat16)`, as
  `from_pretrained(..., torch_dtype=torch.bfloat16)` does), not autocast. On a CPU without native bf16 (AVX2 only;
  `cpu_capability` in the results) torch emulates bf16 and its convolutions take a slow path: bf16 is then much
  slower than fp32 there, and the bf16 rows measure that emulation, not bf16 hardware.
- Peak memory is what a call adds over what was resident just before it. CPU: the process's resident-set high-water
  mark (`VmHWM`) is reset through `/proc/self/clear_refs` after `gc.collect()` and `malloc_trim(0)`, and the peak is
  `VmHWM` after the call minus `VmRSS` before it (Linux only; torch's CPU tensors are invisible to tracemalloc). CUDA:
  `torch.cuda.max_memory_allocated()` after `reset_peak_memory_stats()`, minus the memory allocated before. Per
  call, i.e. for the whole batch.
- Tiling: at resolutions >= `--tiled_from` (1024) the models that tile run tiled with `--tile_size` (256) tiles and
  a quarter overlap (AutoencoderKL and AlignTok: their own tiling with the tile size set; DC-AE: `enable_tiling` with
  stride 3/4 of the tile). diffusers' `AutoencoderRAE` does not tile and runs untiled (the row says so). FLUX's own
  default tile is 1024, i.e. no tiling at 1024: the common tile size makes the rows comparable.
- A separate check decodes the same latents tiled and untiled at `--tiling_check_resolution` (1024), fp32: time,
  peak memory ratio and mean absolute difference. With random weights this measures how much the architecture
  depends on context outside a tile (AlignTok decodes its attention stem whole, so what remains is the upsampling
  path's convolutions and GroupNorm statistics), not a trained model.

- Parameters: every `diffusers_aligntok.PRESETS` entry and every peer, split into encoder, adapter (AlignTok's
  per-token MLP), decoder and the rest (quant convs), built on the meta device (the real constructor, no memory).
- `--model PATH` adds a saved `AlignedAutoencoderKL` (`saved`, trained weights) to the run, and to the tiling check:
  its tiled-vs-untiled difference is a trained decoder's seam error, where the random presets only bound the worst
  case. `--variants` adds `<name>+<variant>` rows for each AlignTok model and the FLUX VAE, timed in the same rounds:
  `compile` (`torch.compile` of the encoder and the decoder, in place, as `training.compile` does; the first call of
  each shape compiles, so the warm-up round's time, `first_call_s` in the JSON, is the compile cost), `slicing`
  (diffusers' `enable_slicing`: one image at a time) and `channels_last` (the model's memory format).

The default grid is pruned to fit about 8 minutes on 2 CPU cores: all models at 256x256, batch 1, fp32; the core
models (AlignTok L and B, FLUX VAE) at 256 bf16, at 256 batch 8, at 512 and (tiled) at 1024; batch > 1 only at the
smallest resolution; at 512 and 1024 one repeat and, at 1024, no warm-up. Settings run in priority order and one
estimated to end after `--time_budget_s` (`estimated_seconds`: the round trips measured at the smallest resolution,
scaled) is recorded as skipped. `--full_grid --time_budget_s 0` runs every model at every
resolution x batch x dtype with all repeats (hours on a CPU, minutes on a GPU).

Usage:
    python benchmarks/tokenizer_speed.py                    # default grid, ~8 minutes on 2 cores
    python benchmarks/tokenizer_speed.py --quick            # 256, batch 1, fp32 + bf16, 2 models, ~1-2 minutes
    python benchmarks/tokenizer_speed.py --device cuda --full_grid --time_budget_s 0
    python benchmarks/tokenizer_speed.py --models aligntok-dinov2-large flux-vae --resolutions 512 --dtypes fp32
    python benchmarks/tokenizer_speed.py --model runs/demo/stage3/model --models saved --resolutions 128 \
        --dtypes fp32 --tile_size 32 --tiling_check_resolution 128      # a trained model's speed and tiling seams
    python benchmarks/tokenizer_speed.py --quick --variants compile   # torch.compile before/after
    python benchmarks/tokenizer_speed.py --tiling_check_only --time_budget_s 0   # the tiled vs untiled check alone
"""

import argparse
import ctypes
import dataclasses
import gc
import json
import math
import os
import re
import statistics
import sys
import time
from collections.abc import Callable

import torch
from benchmark_utils import machine_description, markdown_table, sync
from diffusers import AutoencoderDC, AutoencoderKL, AutoencoderRAE
from diffusers.image_processor import VaeImageProcessor

import diffusers_aligntok
from diffusers_aligntok import PRESETS, AlignedAutoencoderKL
from diffusers_aligntok.data.synthetic_image import synthetic_test_image
from diffusers_aligntok.evaluation.tokenizer_adapters import FLUX_VAE_CONFIG  # FLUX.1-dev vae/config.json


REFERENCE = "flux-vae"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}

# stabilityai/sd-vae-ft-mse config.json.
SD_VAE_CONFIG = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (128, 256, 512, 512),
    "layers_per_block": 2,
    "act_fn": "silu",
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": 256,
    "scaling_factor": 0.18215,
}

# LightningDiT's VA-VAE f16d32 (tokenizer/configs/vavae_f16d32.yaml) is an LDM conv VAE: ch 128, ch_mult
# (1, 1, 2, 2, 4), 2 res blocks, attention at 16x16 (the lowest level), z 32 with quant convs. Expressed as a diffusers
# AutoencoderKL with 5 blocks: block_out_channels (128, 128, 256, 256, 512), attention in the last down block and the
# first up block (plus the mid block, as LDM), latent_channels 32. Same layer shapes, so the same cost.
VA_VAE_CONFIG = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4 + ("AttnDownEncoderBlock2D",),
    "up_block_types": ("AttnUpDecoderBlock2D",) + ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (128, 128, 256, 256, 512),
    "layers_per_block": 2,
    "act_fn": "silu",
    "latent_channels": 32,
    "norm_num_groups": 32,
    "sample_size": 256,
    "scaling_factor": 1.0,
}

# mit-han-lab/dc-ae-f32c32-in-1.0-diffusers, from diffusers' scripts/convert_dcae_to_diffusers.py
# (`get_ae_config("dc-ae-f32c32-in-1.0")`); up/downsampling are AutoencoderDC's defaults (pixel (un)shuffle).
DC_AE_F32C32_CONFIG = {
    "latent_channels": 32,
    "encoder_block_types": ("ResBlock",) * 3 + ("EfficientViTBlock",) * 3,
    "decoder_block_types": ("ResBlock",) * 3 + ("EfficientViTBlock",) * 3,
    "encoder_block_out_channels": (128, 256, 512, 512, 1024, 1024),
    "decoder_block_out_channels": (128, 256, 512, 512, 1024, 1024),
    "encoder_layers_per_block": (0, 4, 8, 2, 2, 2),
    "decoder_layers_per_block": (0, 5, 10, 2, 2, 2),
    "encoder_qkv_multiscales": ((),) * 6,
    "decoder_qkv_multiscales": ((),) * 6,
    "decoder_norm_types": ("batch_norm",) * 3 + ("rms_norm",) * 3,
    "decoder_act_fns": ("relu",) * 3 + ("silu",) * 3,
    "scaling_factor": 0.3189,
}


def rae_dinov2_base_config(resolution: int) -> dict:
    """nyu-visionx/RAE-dinov2-wReg-base-ViTXL-n08: DINOv2-B/14 with registers, ViT-XL decoder (1152 wide, 28 layers).

    diffusers' AutoencoderRAE is fixed-resolution (its encoder resizes every input to `encoder_input_size` and its
    decoder's position embeddings fix the output size), so each resolution gets its own model with a
    resolution/16 x resolution/16 token grid, as the released 512 model (`-i512`, encoder input 448) does. It builds
    its `Dinov2WithRegistersModel` from config: nothing downloads.
    """
    return {
        "encoder_type": "dinov2",
        "encoder_hidden_size": 768,
        "encoder_patch_size": 14,
        "encoder_num_hidden_layers": 12,
        "decoder_hidden_size": 1152,
        "decoder_num_hidden_layers": 28,
        "decoder_num_attention_heads": 16,
        "decoder_intermediate_size": 4096,
        "patch_size": 16,
        "encoder_input_size": resolution // 16 * 14,
    }


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    label: str
    build: Callable[[int], torch.nn.Module]  # resolution -> model (only RAE depends on it)
    per_resolution: bool = False
    note: str = ""


MODELS: dict[str, ModelSpec] = {
    "aligntok-dinov2-large": ModelSpec(
        "AlignTok DINOv2-L f16d32", lambda _: AlignedAutoencoderKL.from_preset("aligntok-dinov2-large-f16d32")
    ),
    "aligntok-dinov2-base": ModelSpec(
        "AlignTok DINOv2-B f16d32", lambda _: AlignedAutoencoderKL.from_preset("aligntok-dinov2-base-f16d32")
    ),
    "flux-vae": ModelSpec("FLUX.1 VAE f8c16", lambda _: AutoencoderKL(**FLUX_VAE_CONFIG)),
    "sd-vae": ModelSpec("SD VAE (ft-mse) f8c4", lambda _: AutoencoderKL(**SD_VAE_CONFIG)),
    "va-vae-f16d32": ModelSpec("VA-VAE f16d32 (as AutoencoderKL)", lambda _: AutoencoderKL(**VA_VAE_CONFIG)),
    "rae-dinov2-base": ModelSpec(
        "RAE DINOv2-B + ViT-XL f16c768",
        lambda resolution: AutoencoderRAE(**rae_dinov2_base_config(resolution)),
        per_resolution=True,
        note="no tiling in diffusers' AutoencoderRAE; one model per resolution (fixed-size position embeddings)",
    ),
    "dc-ae-f32c32": ModelSpec("DC-AE f32c32 (in-1.0)", lambda _: AutoencoderDC(**DC_AE_F32C32_CONFIG)),
    "tiny": ModelSpec("tiny AlignTok preset (tests only, not a real tokenizer)", lambda _: _tiny()),
}
CORE_MODELS = ["aligntok-dinov2-large", "aligntok-dinov2-base", REFERENCE]
DEFAULT_MODELS = [name for name in MODELS if name != "tiny"]


def _tiny():
    return AlignedAutoencoderKL.from_preset("tiny")


SAVED = "saved"  # the `--model` checkpoint


def _compiled(model: torch.nn.Module) -> torch.nn.Module:
    # In place, as `training.compile` does: parameter names and the model's own encode/decode code stay unchanged.
    model.encoder.compile()
    model.decoder.compile()
    return model


def _sliced(model: torch.nn.Module) -> torch.nn.Module:
    model.enable_slicing()  # diffusers' batch slicing: encode and decode one image at a time
    return model


def _channels_last(model: torch.nn.Module) -> torch.nn.Module:
    # The 4-D (conv) weights; inputs are converted by the first conv.
    return model.to(memory_format=torch.channels_last)


# `--variants`: each adds a `<model>+<variant>` row, built the same way and then changed as named.
VARIANTS: dict[str, Callable[[torch.nn.Module], torch.nn.Module]] = {
    "compile": _compiled,
    "slicing": _sliced,
    "channels_last": _channels_last,
}


def base_model(name: str) -> str:
    return name.split("+")[0]


def register_models(args) -> None:
    """Adds `saved` (`--model`) and the `+<variant>` rows (`--variants`) to `MODELS`."""
    if args.model:
        path = args.model
        MODELS[SAVED] = ModelSpec(
            f"saved AlignedAutoencoderKL ({path})", lambda _: AlignedAutoencoderKL.from_pretrained(path)
        )
    bases = [name for name in args.models if is_aligntok(name) or name in ("tiny", REFERENCE)]
    for variant in args.variants:
        for name in bases:
            spec, change = MODELS[name], VARIANTS[variant]
            MODELS[f"{name}+{variant}"] = ModelSpec(
                f"{spec.label} ({variant})",
                lambda resolution, build=spec.build, change=change: change(build(resolution)),
                per_resolution=spec.per_resolution,
            )
            args.models.append(f"{name}+{variant}")


def is_aligntok(name: str) -> bool:
    return base_model(name).startswith(("aligntok", SAVED))


@dataclasses.dataclass(frozen=True)
class Setting:
    resolution: int
    batch: int
    dtype: str
    tiled: bool
    models: tuple[str, ...]
    repeats: int
    warmup: int


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--quick", action="store_true", help="256, batch 1, fp32 + bf16, AlignTok-L vs FLUX, 2 repeats, no tiling.")
    add("--device", default="cpu", help="cpu (default) or cuda.")
    add("--resolutions", type=int, nargs="+", default=[256, 512, 1024])
    add("--batch_sizes", type=int, nargs="+", default=[1, 8])
    add("--dtypes", nargs="+", choices=sorted(DTYPES), default=["fp32", "bf16"])
    add(
        "--models",
        nargs="+",
        choices=sorted([*MODELS, SAVED]),
        default=None,
        help=f"Default: {DEFAULT_MODELS}; with --model: {SAVED} and {REFERENCE}.",
    )
    add(
        "--model", default=None, help=f"A saved AlignedAutoencoderKL directory, timed and tiling-checked as `{SAVED}`."
    )
    add(
        "--variants",
        nargs="+",
        choices=sorted(VARIANTS),
        default=[],
        help="Also time each AlignTok model and the FLUX VAE changed as named, as `<model>+<variant>` rows: compile "
        "(torch.compile of encoder and decoder, in place), slicing (enable_slicing), channels_last (memory format).",
    )
    add("--repeats", type=int, default=3, help="Timed rounds per setting after the warm-up (median reported).")
    add("--warmup", type=int, default=1, help="Untimed rounds per setting.")
    add("--threads", type=int, default=2, help="torch.set_num_threads (CPU).")
    add("--full_grid", action="store_true", help="Every model at every resolution x batch x dtype, all repeats.")
    add("--tile_size", type=int, default=256, help="Tile size in pixels for every model that tiles.")
    add("--tiled_from", type=int, default=1024, help="Resolutions from this one up run tiled.")
    add("--tiling_check_resolution", type=int, default=1024, help="Tiled vs untiled decode check; 0 to skip.")
    add(
        "--tiling_check_models",
        nargs="+",
        choices=sorted([*MODELS, SAVED]),
        default=None,
        help=f"Default: aligntok-dinov2-large; with --model: {SAVED}.",
    )
    add(
        "--tiling_check_only",
        action="store_true",
        help="Run only the tiled vs untiled decode check (and the parameter counts), no timing grid.",
    )
    add(
        "--time_budget_s",
        type=float,
        default=480.0,
        help="Work estimated (from the first setting's times) to end later is skipped; 0: no limit.",
    )
    add(
        "--force_bf16",
        action="store_true",
        help="Run bf16 on a CPU without native bf16 too (emulated: 3-25x slower than fp32, far past the budget).",
    )
    add("--output_dir", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    add("--output_name", default="tokenizer_speed")
    args = parser.parse_args(argv)
    if args.quick:
        args.resolutions, args.batch_sizes, args.dtypes = [256], [1], ["fp32", "bf16"]
        args.models = args.models or [SAVED if args.model else "aligntok-dinov2-large", REFERENCE]
        args.repeats, args.tiling_check_resolution = min(args.repeats, 2), 0
        if args.output_name == "tokenizer_speed":
            args.output_name = "tokenizer_speed_quick"
    if (SAVED in (args.models or []) or SAVED in (args.tiling_check_models or [])) and not args.model:
        parser.error(f"`{SAVED}` is the model given with --model PATH; pass --model.")
    default_models = [SAVED, REFERENCE] if args.model else DEFAULT_MODELS
    args.models = list(args.models or default_models)
    args.tiling_check_models = args.tiling_check_models or [SAVED if args.model else "aligntok-dinov2-large"]
    if REFERENCE not in args.models:  # every ratio needs the reference measured in the same rounds
        args.models.append(REFERENCE)
    args.device = torch.device(args.device)
    return args


def plan_settings(args) -> list[Setting]:
    """The settings to run, in priority order (the time budget cuts from the end)."""
    smallest = min(args.resolutions)
    settings = []
    for dtype in args.dtypes:
        for resolution in sorted(args.resolutions):
            for batch in sorted(args.batch_sizes):
                tiled = resolution >= args.tiled_from
                if args.full_grid:
                    settings.append(Setting(resolution, batch, dtype, tiled, tuple(args.models), args.repeats, 1))
                    continue
                if batch > 1 and resolution != smallest:
                    continue  # batch > 1 only at the smallest resolution
                if dtype != "fp32" and (resolution != smallest or batch > 1):
                    continue  # bf16 (emulated and slow on AVX2 CPUs) only at the smallest resolution, batch 1
                first = dtype == args.dtypes[0] and resolution == smallest and batch == min(args.batch_sizes)
                core = CORE_MODELS + ["tiny", SAVED]
                models = args.models if first else [name for name in args.models if base_model(name) in core]
                large = resolution > smallest or batch > 1
                repeats = 1 if large and args.device.type == "cpu" else args.repeats
                warmup = 0 if resolution >= 1024 and args.device.type == "cpu" else args.warmup
                settings.append(Setting(resolution, batch, dtype, tiled, tuple(models), repeats, warmup))

    # Priority: smallest resolution batch 1 (all dtypes), then the tiled large resolution (the decode target), then
    # the rest by cost.
    def priority(setting):
        return (
            setting.batch > 1 or setting.resolution != smallest,
            setting.resolution < args.tiled_from,
            setting.batch,
        )

    return sorted(settings, key=priority)


# ----------------------------------------------------------------------------------------------------------------
# Peak memory
# ----------------------------------------------------------------------------------------------------------------

_LIBC = ctypes.CDLL("libc.so.6") if sys.platform.startswith("linux") else None


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as file:
        return int(re.search(rf"^{field}:\s+(\d+) kB", file.read(), re.MULTILINE).group(1))


def cpu_peak_supported() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as file:
            file.write("5")
        return True
    except OSError:
        return False


class PeakMemory:
    """Context manager: `.mib` is the peak memory the block added over what was resident (allocated) before it."""

    def __init__(self, device: torch.device, cpu_supported: bool):
        self.device, self.cpu_supported, self.mib = device, cpu_supported, None

    def __enter__(self):
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.before = torch.cuda.memory_allocated(self.device)
        elif self.cpu_supported:
            if _LIBC is not None:
                _LIBC.malloc_trim(0)  # hand freed heap pages back, so the next call's growth shows in the RSS
            self.before = _status_kib("VmRSS") * 1024
            with open("/proc/self/clear_refs", "w") as file:
                file.write("5")  # resets VmHWM to the current RSS
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.mib = (torch.cuda.max_memory_allocated(self.device) - self.before) / 2**20
        elif self.cpu_supported:
            self.mib = max(_status_kib("VmHWM") * 1024 - self.before, 0) / 2**20
        return False


# ----------------------------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------------------------


def spatial_factor(model) -> int:
    if isinstance(model, AutoencoderRAE):
        return model.config.patch_size
    if isinstance(model, AutoencoderDC):
        return model.spatial_compression_ratio
    return 2 ** (len(model.config.block_out_channels) - 1)


def set_tiling(model, enabled: bool, tile_size: int) -> bool:
    """Turns tiling on or off with `tile_size`-pixel tiles and a quarter overlap; False if the model cannot tile."""
    if isinstance(model, AutoencoderRAE):
        return False
    if isinstance(model, AutoencoderDC):
        if enabled:
            stride = tile_size * 3 // 4
            model.enable_tiling(tile_size, tile_size, stride, stride)
        else:
            model.disable_tiling()
        return enabled
    if enabled:
        model.enable_tiling()
    else:
        model.disable_tiling()
    model.tile_sample_min_size = tile_size
    model.tile_latent_min_size = tile_size // spatial_factor(model)
    model.tile_overlap_factor = 0.25
    return enabled


def encode(model, images):
    output = model.encode(images)
    return output.latent_dist.mode() if hasattr(output, "latent_dist") else output.latent


def decode(model, latents):
    return model.decode(latents).sample


class ModelCache:
    """Builds each model once (RAE once per resolution) and keeps it on the device in the dtype last asked for."""

    def __init__(self, device):
        self.device, self.models, self.build_seconds = device, {}, {}

    def get(self, name: str, resolution: int, dtype: torch.dtype):
        spec = MODELS[name]
        key = (name, resolution if spec.per_resolution else None)
        if key not in self.models:
            for old in [k for k in self.models if k[0] == name]:  # one RAE at a time: they are 2 GB each
                del self.models[old]
            gc.collect()
            torch.manual_seed(0)
            start = time.perf_counter()
            with torch.device(self.device):  # initialise on the device (fast on a GPU)
                model = spec.build(resolution).eval().requires_grad_(False)
            self.build_seconds[name] = time.perf_counter() - start
            self.models[key] = model
        model = self.models[key]
        if next(model.parameters()).dtype != dtype:
            # Random weights: rounding them through bf16 and back changes nothing that is measured.
            model.to(dtype)
        return model

    def drop_unused(self, keep: set[str]):
        for key in [k for k in self.models if k[0] not in keep]:
            del self.models[key]
        gc.collect()


def images_for(resolution: int, batch: int, device, dtype) -> torch.Tensor:
    image = VaeImageProcessor().preprocess(synthetic_test_image(resolution, resolution))
    return image.repeat(batch, 1, 1, 1).to(device, dtype)


# ----------------------------------------------------------------------------------------------------------------
# Measurements
# ----------------------------------------------------------------------------------------------------------------


def measure_setting(setting: Setting, cache: ModelCache, args, cpu_peak: bool, deadline: float) -> list[dict]:
    """Times every model of `setting` round-robin; stops after a round that ends past `deadline` (one timed round
    at least), so `repeats` in the row is what was run."""
    dtype = DTYPES[setting.dtype]
    images = images_for(setting.resolution, setting.batch, args.device, dtype)
    models = {name: cache.get(name, setting.resolution, dtype) for name in setting.models}
    tiled = {name: set_tiling(model, setting.tiled, args.tile_size) for name, model in models.items()}
    names = list(models)
    runs = {name: {key: [] for key in ("encode", "decode", "encode_peak_mib", "decode_peak_mib")} for name in names}
    latent_shapes, first_call = {}, {}
    for round_index in range(setting.warmup + setting.repeats):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:  # round-robin, the first model rotating
            model = models[name]
            with PeakMemory(args.device, cpu_peak) as encode_peak:
                start = time.perf_counter()
                latents = encode(model, images)
                sync(args.device)
                encode_seconds = time.perf_counter() - start
            with PeakMemory(args.device, cpu_peak) as decode_peak:
                start = time.perf_counter()
                decoded = decode(model, latents)
                sync(args.device)
                decode_seconds = time.perf_counter() - start
            if not torch.isfinite(decoded).all():
                print(f"  warning: {name} produced non-finite output", flush=True)
            latent_shapes[name] = "x".join(str(size) for size in latents.shape[1:])
            if round_index == 0:
                first_call[name] = (encode_seconds, decode_seconds)  # includes torch.compile for `+compile` rows
            if round_index >= setting.warmup:
                runs[name]["encode"].append(encode_seconds)
                runs[name]["decode"].append(decode_seconds)
                runs[name]["encode_peak_mib"].append(encode_peak.mib)
                runs[name]["decode_peak_mib"].append(decode_peak.mib)
            del latents, decoded
        print(f"  round {round_index + 1}/{setting.warmup + setting.repeats} done", flush=True)
        if round_index >= setting.warmup and time.monotonic() > deadline:
            break
    setting = dataclasses.replace(setting, repeats=len(runs[REFERENCE]["encode"]))
    for name in names:
        runs[name]["roundtrip"] = [e + d for e, d in zip(runs[name]["encode"], runs[name]["decode"])]
    for model in models.values():
        set_tiling(model, False, args.tile_size)

    rows = []
    for name in names:
        row = {
            "model": name,
            "label": MODELS[name].label,
            "resolution": setting.resolution,
            "batch": setting.batch,
            "dtype": setting.dtype,
            "tiled": "yes" if tiled[name] else ("no (cannot tile)" if setting.tiled else "no"),
            "latent": latent_shapes[name],
            "repeats": setting.repeats,
            "warmup": setting.warmup,
            "runs": runs[name],
            "first_call_s": {"encode": first_call[name][0], "decode": first_call[name][1]},
        }
        for key in ("encode", "decode", "roundtrip"):
            row[f"{key}_s_per_image"] = statistics.median(runs[name][key]) / setting.batch
            ratios = [ours / ref for ours, ref in zip(runs[name][key], runs[REFERENCE][key])]
            row[f"{key}_ratio"] = statistics.median(ratios)
            row[f"{key}_ratio_min"], row[f"{key}_ratio_max"] = min(ratios), max(ratios)
        for key in ("encode_peak_mib", "decode_peak_mib"):
            values = [value for value in runs[name][key] if value is not None]
            row[key] = statistics.median(values) if values else None
        rows.append(row)
    return rows


def tiling_check(cache: ModelCache, args, cpu_peak: bool) -> list[dict]:
    """Decodes the same latents untiled and tiled (fp32, batch 1): time, peak memory and mean abs difference."""
    resolution, rows = args.tiling_check_resolution, []
    images = images_for(resolution, 1, args.device, torch.float32)
    for name in args.tiling_check_models:
        model = cache.get(name, resolution, torch.float32)
        if not set_tiling(model, False, args.tile_size) and isinstance(model, AutoencoderRAE):
            rows.append({"model": name, "status": "skipped: the model cannot tile"})
            continue
        latents = encode(model, images)
        set_tiling(model, True, args.tile_size)
        tiled_latents = encode(model, images)  # the encoder's tiling error; the decode comparison uses `latents`
        set_tiling(model, False, args.tile_size)
        outputs = {}
        for mode in ("untiled", "tiled"):
            set_tiling(model, mode == "tiled", args.tile_size)
            with PeakMemory(args.device, cpu_peak) as peak:
                start = time.perf_counter()
                outputs[mode] = decode(model, latents)
                sync(args.device)
                seconds = time.perf_counter() - start
            outputs[f"{mode}_seconds"], outputs[f"{mode}_peak_mib"] = seconds, peak.mib
            print(f"  {name} {mode} decode at {resolution}: {seconds:.1f}s, peak {peak.mib} MiB", flush=True)
        set_tiling(model, False, args.tile_size)
        difference = (outputs["tiled"] - outputs["untiled"]).abs()
        whole_decoder_difference = None
        if isinstance(model, AlignedAutoencoderKL):  # the yardstick: the same decoder tiled as AutoencoderKL tiles
            reference = whole_decoder_tiling_reference(model)
            set_tiling(reference, True, args.tile_size)
            whole_decoder_difference = (decode(reference, latents) - outputs["untiled"]).abs().mean().item()
            del reference
        ratio = (
            outputs["tiled_peak_mib"] / outputs["untiled_peak_mib"]
            if outputs["tiled_peak_mib"] and outputs["untiled_peak_mib"]
            else None
        )
        rows.append(
            {
                "model": name,
                "status": "ok",
                "resolution": resolution,
                "tile_size": args.tile_size,
                "untiled_seconds": outputs["untiled_seconds"],
                "tiled_seconds": outputs["tiled_seconds"],
                "untiled_peak_mib": outputs["untiled_peak_mib"],
                "tiled_peak_mib": outputs["tiled_peak_mib"],
                "peak_ratio": ratio,
                "mean_abs_diff": difference.mean().item(),
                "max_abs_diff": difference.max().item(),
                "whole_decoder_tiling_mean_abs_diff": whole_decoder_difference,
                "decoded_std": outputs["untiled"].std().item(),
                "encode_mean_abs_diff": (tiled_latents - latents).abs().mean().item(),
                "latent_std": latents.std().item(),
                "peak_target_met": ratio is not None and ratio <= 0.25,
                "mae_target_met": difference.mean().item() <= 1e-2,
            }
        )
        del outputs, latents, tiled_latents
    return rows


def whole_decoder_tiling_reference(model: AlignedAutoencoderKL) -> AutoencoderKL:
    """diffusers' `AutoencoderKL` carrying `model`'s decoder, whose tiling tiles the whole decoder, attention included.

    AlignTok's tiled decode keeps its attention stem whole; this shows what that buys on the same weights.
    """
    config = model.config
    reference = AutoencoderKL(
        latent_channels=config.latent_channels,
        out_channels=config.out_channels,
        down_block_types=("DownEncoderBlock2D",) * len(config.block_out_channels),
        up_block_types=tuple(config.up_block_types),
        block_out_channels=tuple(config.block_out_channels),
        layers_per_block=config.layers_per_block,
        act_fn=config.act_fn,
        norm_num_groups=config.norm_num_groups,
        mid_block_add_attention=config.mid_block_add_attention,
        use_quant_conv=False,
        use_post_quant_conv=False,
    )
    reference.decoder.load_state_dict(model.decoder.state_dict())
    return reference.to(model.device).eval()  # the tiling check runs in float32, as AutoencoderKL is built


def estimated_seconds(kind: str, setting: Setting | None, models: list[str], timing_rows: list[dict], args):
    """Wall time of a task, scaled from the round trips measured so far at the smallest resolution, batch 1.

    Cost grows with pixels times batch, and tiling adds the overlap's area: 5x5 tiles of 256 cover 1280x1280 pixels
    for a 1024 image. The tiling check is two encodes and three decodes, two of them tiled (ours and the
    whole-decoder reference), counted as three round trips, two tiled. None when a model has no
    measurement yet (the first setting always runs).
    """
    if kind == "tiling_check":
        resolution, batch, tiled, rounds, dtype = args.tiling_check_resolution, 1, True, 1, "fp32"
    else:
        resolution, batch, tiled, dtype = setting.resolution, setting.batch, setting.tiled, setting.dtype
        rounds = setting.warmup + setting.repeats
    measured = {}  # model -> (resolution, round trip per image) of its first untiled batch-1 row: the smallest
    for row in timing_rows:
        if row["batch"] == 1 and row["dtype"] == dtype and row["tiled"] == "no":
            measured.setdefault(row["model"], (row["resolution"], row["roundtrip_s_per_image"]))
    if any(name not in measured for name in models):
        return None
    tiled_area = 1.0
    if tiled and resolution > args.tile_size:
        stride = args.tile_size * 3 // 4  # a quarter overlap, as every model here tiles
        tiles_per_side = math.ceil((resolution - args.tile_size) / stride) + 1
        tiled_area = (tiles_per_side * args.tile_size / resolution) ** 2
    per_round = 0.0
    for name in models:
        measured_resolution, roundtrip = measured[name]
        per_image = roundtrip * (resolution / measured_resolution) ** 2
        per_round += per_image * batch * ((1.0 + 2 * tiled_area) if kind == "tiling_check" else tiled_area)
    return per_round * rounds


def _count(module: torch.nn.Module | None) -> int:
    return sum(parameter.numel() for parameter in module.parameters()) if module is not None else 0


def parameter_counts(models: list[str]) -> list[dict]:
    """Every AlignTok preset and every peer in `models`, built on the meta device (no memory, no init time)."""
    builders = {f"preset {name}": (lambda name=name: AlignedAutoencoderKL.from_preset(name)) for name in PRESETS}
    for name in models:
        if not is_aligntok(name) and name != "tiny" and name == base_model(name):
            builders[name] = lambda name=name: MODELS[name].build(256)
    rows = []
    for name, build in builders.items():
        with torch.device("meta"):
            model = build()
        parts = {part: _count(getattr(model, part, None)) for part in ("encoder", "adapter", "decoder")}
        total = _count(model)
        rows.append({"model": name, **parts, "other": total - sum(parts.values()), "total": total})
        del model
    return rows


def issue_targets(timing_rows: list[dict], tiling_rows: list[dict]) -> list[dict]:
    """Issue 16's CPU targets for each AlignTok preset measured, from this run's rows (batch 1)."""
    targets = []
    checks = [
        ("encode at 256 fp32 <= 0.6x FLUX", "encode", 256, "fp32", 0.6),
        ("encode at 256 bf16 <= 0.6x FLUX", "encode", 256, "bf16", 0.6),
        ("decode at 256 fp32 <= 0.4x FLUX", "decode", 256, "fp32", 0.4),
        ("decode at 1024 fp32 (tiled) <= 0.4x FLUX", "decode", 1024, "fp32", 0.4),
    ]
    for name in [name for name in MODELS if is_aligntok(name)]:
        for label, key, resolution, dtype, limit in checks:
            row = next(
                (
                    r
                    for r in timing_rows
                    if r["model"] == name and r["resolution"] == resolution and r["dtype"] == dtype and r["batch"] == 1
                ),
                None,
            )
            if row is None:
                continue
            value = row[f"{key}_ratio"]
            targets.append(
                {
                    "target": label,
                    "model": name,
                    "measured": f"{value:.3g}x ({row[f'{key}_ratio_min']:.3g}-{row[f'{key}_ratio_max']:.3g})",
                    "met": "yes" if value <= limit else "no",
                }
            )
    for row in tiling_rows:
        if row.get("status") != "ok" or not is_aligntok(row["model"]):
            continue
        weights = "trained weights" if row["model"] == SAVED else "random weights"
        ratio = row["peak_ratio"]
        targets.append(
            {
                "target": f"tiled {row['resolution']} decode peak <= 1/4 of untiled",
                "model": row["model"],
                "measured": f"{ratio:.3g}" if ratio is not None else "n/a",
                "met": "yes" if row["peak_target_met"] else "no",
            }
        )
        targets.append(
            {
                "target": f"tiled {row['resolution']} decode MAE <= 1e-2 ({weights})",
                "model": row["model"],
                "measured": f"{row['mean_abs_diff']:.3g}",
                "met": "yes" if row["mae_target_met"] else "no",
            }
        )
    return targets


# ----------------------------------------------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------------------------------------------


def timing_table(rows: list[dict]) -> str:
    display = []
    for row in rows:
        shown = dict(row)
        for key in ("encode", "decode", "roundtrip"):
            spread = f"{row[f'{key}_ratio_min']:.3g}-{row[f'{key}_ratio_max']:.3g}" if row["repeats"] > 1 else "1 run"
            shown[f"{key}_vs"] = f"{row[f'{key}_ratio']:.3g} ({spread})"
        shown["setting"] = f"{row['resolution']} b{row['batch']} {row['dtype']}"
        display.append(shown)
    return markdown_table(
        display,
        {
            "setting": "setting",
            "model": "model",
            "tiled": "tiled",
            "latent": "latent",
            "encode_s_per_image": "encode s/img",
            "encode_vs": "enc / FLUX (min-max)",
            "decode_s_per_image": "decode s/img",
            "decode_vs": "dec / FLUX (min-max)",
            "roundtrip_s_per_image": "round trip s/img",
            "roundtrip_vs": "rt / FLUX (min-max)",
            "encode_peak_mib": "enc peak MiB",
            "decode_peak_mib": "dec peak MiB",
        },
    )


def environment(args) -> dict:
    if args.device.type == "cuda":
        memory_method = "torch.cuda.max_memory_allocated after reset_peak_memory_stats, minus allocated before"
    else:
        memory_method = (
            "VmHWM after the call minus VmRSS before it; VmHWM reset via /proc/self/clear_refs after gc.collect() "
            "and malloc_trim(0)"
        )
    return machine_description(
        args.device,
        diffusers_aligntok=diffusers_aligntok.__version__,
        mkldnn_bf16_supported=bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()),
        bf16_method="model and inputs cast to torch.bfloat16 (model.to), no autocast",
        memory_method=memory_method,
        tile_size=args.tile_size,
        tiled_from=args.tiled_from,
        full_grid=args.full_grid,
        quick=args.quick,
    )


def write_results(results: dict, args):
    os.makedirs(args.output_dir, exist_ok=True)
    json_path = os.path.join(args.output_dir, f"{args.output_name}.json")
    with open(json_path, "w") as file:
        json.dump(results, file, indent=2)
    env = results["environment"]
    parts = [
        f"# Tokenizer speed and memory\n\n{env['date']}, `{env['command']}`, torch {env['torch']}, diffusers "
        f"{env['diffusers']}, transformers {env['transformers']}, {env.get('gpu') or env['cpu']} "
        f"({env['device']}, {env['torch_threads']} threads, CPU capability {env['torch_cpu_capability']}, mkldnn bf16 "
        f"{'supported' if env['mkldnn_bf16_supported'] else 'not supported'}), load average at start "
        f"{env['load_average_at_start'][0]}, wall time {results.get('wall_seconds', 0):.0f} s.\n\n"
        "Random weights (cost does not depend on them). Times per image; the ratio is to the FLUX VAE in the same "
        "round-robin rounds (median of per-repeat ratios, min-max over repeats). Peak memory is per call (whole "
        f"batch), over what was resident before: {env['memory_method']}. bf16: {env['bf16_method']}. Tiled rows use "
        f"{env['tile_size']}-pixel tiles with a quarter overlap. Latent: channels x height x width.",
        "## Encode / decode / round trip\n\n" + timing_table(results["timing"]),
    ]
    if results.get("tiling_check"):
        ok = [row for row in results["tiling_check"] if row.get("status") == "ok"]
        parts.append(
            f"## Tiled vs untiled decode at {args.tiling_check_resolution} (fp32, batch 1, same latents)\n\n"
            + markdown_table(
                ok,
                {
                    "model": "model",
                    "untiled_seconds": "untiled s",
                    "tiled_seconds": "tiled s",
                    "untiled_peak_mib": "untiled peak MiB",
                    "tiled_peak_mib": "tiled peak MiB",
                    "peak_ratio": "peak tiled / untiled",
                    "mean_abs_diff": "mean abs diff",
                    "max_abs_diff": "max abs diff",
                    "whole_decoder_tiling_mean_abs_diff": "mean abs diff, whole decoder tiled (AutoencoderKL)",
                    "decoded_std": "decoded std",
                    "encode_mean_abs_diff": "latent mean abs diff (tiled encode)",
                    "latent_std": "latent std",
                },
            )
            + "\n\nWith random weights the difference measures the architecture's dependence on out-of-tile "
            "context (the upsampling path's convolutions and GroupNorm statistics see only their tile, while the "
            "attention stem decodes the whole latent; the ViT encoder sees only its tile), not a trained model's "
            f"seams; `{SAVED}` (`--model`) is a trained model."
        )
    if results.get("parameters"):
        columns = {key: key for key in ("model", "encoder", "adapter", "decoder", "other", "total")}
        parts.append("## Parameters\n\n" + markdown_table(results["parameters"], columns))
    if results.get("targets"):
        parts.append(
            "## Issue 16 CPU targets (batch 1)\n\n"
            + markdown_table(results["targets"], {k: k for k in ("target", "model", "measured", "met")})
        )
    if results.get("skipped"):
        parts.append("## Skipped\n\n" + "\n".join(f"- {line}" for line in results["skipped"]))
    notes = [f"- `{name}`: {MODELS[name].note}" for name in results["models"] if MODELS[name].note]
    notes += ["- build time (s): " + ", ".join(f"{k} {v:.1f}" for k, v in results["build_seconds"].items())]
    parts.append("## Notes\n\n" + "\n".join(notes))
    with open(os.path.join(args.output_dir, f"{args.output_name}.md"), "w") as file:
        file.write("\n\n".join(parts) + "\n")
    print(f"Wrote {json_path} and {args.output_name}.md", flush=True)


def bf16_slowdown_probe() -> float:
    """bf16 / fp32 time of one 128-channel 3x3 conv at 64x64 on this CPU: the cost of emulated bf16."""
    conv, x = torch.nn.Conv2d(128, 128, 3, padding=1), torch.randn(1, 128, 64, 64)
    seconds = {}
    for dtype in (torch.float32, torch.bfloat16):
        conv, x = conv.to(dtype), x.to(dtype)
        conv(x)
        start = time.perf_counter()
        conv(x)
        seconds[dtype] = time.perf_counter() - start
    return seconds[torch.bfloat16] / seconds[torch.float32]


def main(argv=None):
    args = parse_args(argv)
    register_models(args)
    if args.device.type == "cpu":
        torch.set_num_threads(args.threads)
    start = time.monotonic()
    deadline = start + args.time_budget_s if args.time_budget_s else math.inf
    cpu_peak = args.device.type == "cpu" and cpu_peak_supported()
    results = {"environment": environment(args), "models": args.models, "timing": [], "skipped": []}
    if args.device.type == "cpu" and not cpu_peak:
        results["skipped"].append("peak memory: /proc/self/clear_refs not writable (Linux only), columns are n/a")
    settings = [] if args.tiling_check_only else plan_settings(args)
    native_bf16 = args.device.type == "cuda" or results["environment"]["mkldnn_bf16_supported"]
    if "bf16" in args.dtypes and not native_bf16 and not args.force_bf16:
        with torch.no_grad():
            slowdown = bf16_slowdown_probe()
        results["environment"]["bf16_conv_slowdown_probe"] = slowdown
        skipped = [setting for setting in settings if setting.dtype == "bf16"]
        settings = [setting for setting in settings if setting.dtype != "bf16"]
        results["skipped"] += [
            f"{s.resolution} batch {s.batch} bf16: this CPU has no native bf16 "
            f"(capability {results['environment']['torch_cpu_capability']}, mkldnn bf16 unsupported); emulated bf16 runs a "
            f"3x3 conv {slowdown:.0f}x slower than fp32 here, so bf16 rows would take far past the budget and time "
            "the emulation; `--force_bf16` runs them anyway"
            for s in skipped
        ]
    # The tiled-vs-untiled check runs right after the tiled settings, before the less important rest.
    tasks = [("setting", setting) for setting in settings]
    if args.tiling_check_resolution:
        position = max((i + 1 for i, (_, s) in enumerate(tasks) if s.tiled), default=min(1, len(tasks)))
        tasks.insert(position, ("tiling_check", None))
    cache = ModelCache(args.device)
    with torch.no_grad():
        for index, (kind, setting) in enumerate(tasks):
            if kind == "tiling_check":
                label, models = f"tiled vs untiled decode at {args.tiling_check_resolution}", args.tiling_check_models
            else:
                label = (
                    f"{setting.resolution} batch {setting.batch} {setting.dtype}{' tiled' if setting.tiled else ''}"
                )
                models = list(setting.models)
            elapsed = time.monotonic() - start
            estimate = estimated_seconds(kind, setting, models, results["timing"], args)
            if time.monotonic() + (estimate or 0.0) > deadline:
                budget = f"time budget spent ({elapsed:.0f}s > {args.time_budget_s:.0f}s)"
                if time.monotonic() <= deadline:
                    budget = f"estimated {estimate:.0f}s would end past the {args.time_budget_s:.0f}s budget"
                results["skipped"].append(f"{label} ({', '.join(models)}): {budget}")
                continue
            print(f"[{elapsed:.0f}s] {index + 1}/{len(tasks)} {label}: {', '.join(models)}", flush=True)
            cache.drop_unused(set(models))
            if kind == "tiling_check":
                results["tiling_check"] = tiling_check(cache, args, cpu_peak)
            else:
                results["timing"].extend(measure_setting(setting, cache, args, cpu_peak, deadline))
    results["parameters"] = parameter_counts(args.models)
    results["targets"] = issue_targets(results["timing"], results.get("tiling_check", []))
    results["build_seconds"] = cache.build_seconds
    results["wall_seconds"] = time.monotonic() - start
    results["environment"]["load_average_at_end"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    order = {name: index for index, name in enumerate(MODELS)}
    results["timing"].sort(
        key=lambda r: (r["dtype"] != "fp32", r["resolution"], r["batch"], order[base_model(r["model"])], r["model"])
    )
    print("\n" + timing_table(results["timing"]), flush=True)
    write_results(results, args)
    return results


if __name__ == "__main__":
    main()
