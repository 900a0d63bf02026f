"""Evaluate a text-to-image pipeline: gFID against a reference image folder, CLIP score, and a GenEval export.

    results = evaluate_text_to_image(
        TextToImageEvaluationConfig(pipeline="runs/t2i/pipeline", prompts="coco6k_captions.txt",
                                    reference_dir="coco6k_images", guidance_scale=4.0),
        output_dir="eval/t2i",
    )

The pipeline is any saved `DiffusionPipeline` whose `__call__` takes `prompt`, `height`, `width`,
`num_inference_steps`, `generator` and `output_type`: a stock `FluxPipeline` (with `AlignedAutoencoderKL` or the
FLUX VAE as its `vae`), our `AlignTokFluxPipeline`, or another diffusers text-to-image pipeline. It is loaded with
`DiffusionPipeline.from_pretrained` after this package is imported (which registers our classes).

Default protocol (behind the paper's text-to-image comparison, "COCO-6K" gFID and GenEval; the paper does not spell
out every detail, so each choice below is recorded in `results.json`):

- Prompts: a user-given file of captions, one sample per caption (COCO-6K: 6,000 COCO val captions, one per image).
  Formats: `.txt` (one prompt per line), `.jsonl` (one JSON object per line), `.json` (a list of strings or objects,
  or COCO's `captions_*.json` with an `annotations` list) and `.csv` (a header row); the caption is the `caption`,
  `prompt` or `text` field (or `prompt_field`). Empty prompts are skipped and counted.
- Sampling: 256x256, 50 Euler steps of the pipeline's own flow-matching scheduler (the paper gives no step count; 50
  is what FLUX.1-dev's model card and GenEval's generation scripts use, while FluxPipeline's default of 28 trades
  quality for speed and too few steps raise the FID), true classifier-free guidance with an empty negative prompt when
  `guidance_scale > 1` (our models have `guidance_embeds=False`), float32 on the CPU and bfloat16 on CUDA.
- Noise: image `k` of prompt `i` starts from a CPU generator seeded with
  `SeedSequence(entropy=seed, spawn_key=(stream, i, k))`: the same image whatever the number of processes, the batch
  size, the number of prompts or of images per prompt.
- gFID: clean-fid's Inception features (see `fid.py`) of the 8-bit PNGs against every image under `reference_dir`,
  each resized to cover the generated size (bicubic) and centre-cropped to it; for COCO-6K the reference is the
  6,000 COCO val images whose captions were sampled. Reference statistics are cached with the other evaluations'.
- CLIP score (Hessel et al., 2021; torchmetrics' `CLIPScore`): `100 * max(cos(image embedding, text embedding), 0)`
  averaged over all samples, with `openai/clip-vit-large-patch14`; images go through its `CLIPImageProcessor` (resize
  the short side to 224, centre crop), prompts longer than CLIP's 77 tokens are truncated and counted.
- GenEval (Ghosh et al., 2023): with `geneval_metadata` (GenEval's `evaluation_metadata.jsonl`) the samples are also
  written in the layout GenEval's own generation script writes, `<dir>/<index:05d>/metadata.jsonl` and
  `<dir>/<index:05d>/samples/<k:05d>.png` (4 images per prompt by default), for `evaluation/evaluate_images.py` of the
  GenEval repository. GenEval itself is not run here: it needs mmdetection and its Mask2Former weights.

How it runs (like `generation.py`): the COCO and GenEval samples form one plan; it is cut into chunks of
`samples_per_chunk` and chunk `c` goes to process `c % num_processes`. Every sample is a PNG written atomically
(temporary name, then `os.replace`); `resume=True` keeps the PNGs of an earlier run with the same settings and
generates only the missing ones. The scoring reads the PNGs back (so resumed and fresh runs score the same bytes),
sharded over processes. With a CFG sweep every scale gets its own directory `cfg-<scale>/` and the same noise.

Outputs in `output_dir`: `results.json` (every knob, the pipeline's configs, prompt-file hash and counts, metrics and
whether each is a real metric, package versions, warnings), `results.md`, `prompts.jsonl` (file name, prompt and seed
of every sample), `cfg-<scale>/samples/<prompt:06d>-<image:03d>.png`, `cfg-<scale>/samples_grid.png` and
`cfg-<scale>/geneval/`.
"""

import hashlib
import inspect
import json
import logging
import math
import os
import shutil
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from ..data.image_datasets import IMAGE_FILE_EXTENSIONS, ImageTransform, decode_image
from ..standins import save_random_clip_standin  # noqa: F401  (re-exported)
from ..utils import atomic_path, format_metric, settings_fingerprint, to_jsonable, tokenizer_fingerprint
from .metrics.clip_score import (
    DEFAULT_CLIP_MODEL,
    CLIPScorer,
    build_clip_scorer,
    count_truncated_prompts,
)
from .metrics.fid import (
    FEATURE_EXTRACTORS,
    FeatureStatistics,
    FIDFeatureExtractor,
    build_fid_feature_extractor,
    default_reference_statistics_dir,
    feature_dimension,
    fid_from_statistics,
    fid_sample_count_warning,
    load_reference_statistics,
    reference_statistics_key,
    reference_statistics_path,
    save_reference_statistics,
)
from .prompts import PromptSet, load_geneval_metadata, load_prompts
from .report import package_versions, warnings_and_notes, write_results_files
from .streaming import shard_batches
from .sweep import (
    SAMPLES_DIR,
    check_guidance_scales,
    chunks_for_process,
    guidance_scale_dir,
    mark_best_guidance_scale,
    save_sample_grid,
    sweep_settings,
    tf32_matmuls,
)


logger = logging.getLogger(__name__)

# COCO-6K: 6,000 captions of COCO val images, one sample each (the paper's text-to-image gFID).
COCO_6K_NUM_PROMPTS = 6_000
# FLUX.1-dev's documented sampling steps; see the module docstring.
DEFAULT_NUM_INFERENCE_STEPS = 50
GENEVAL_IMAGES_PER_PROMPT = 4
DTYPES = ("auto", "float32", "bfloat16", "float16")
GENEVAL_DIR = "geneval"
PROMPTS_JSONL = "prompts.jsonl"
SETTINGS_JSON = "settings.json"
_REQUIRED_CALL_ARGUMENTS = ("prompt", "height", "width", "num_inference_steps", "generator", "output_type")
# Noise streams: COCO prompt i and GenEval prompt i must not share their noise.
_PROMPTS_STREAM, _GENEVAL_STREAM = 0, 1
_STATE_VERSION = 1


@dataclass
class TextToImageEvaluationConfig:
    """Settings of one text-to-image evaluation; all of them are recorded in `results.json`.

    Args:
        pipeline (`str`): Directory of a saved text-to-image `DiffusionPipeline` (e.g. `FluxPipeline` or
            `AlignTokFluxPipeline`), or a hub id of one.
        prompts (`str`, *optional*): Prompt file (`.txt`, `.jsonl`, `.json`, `.csv`; see [`load_prompts`]) for gFID
            and CLIP score. At least one of `prompts` and `geneval_metadata` is needed.
        prompt_field (`str`, *optional*): Field holding the prompt in `.jsonl` / `.json` / `.csv` files; default: the
            first of `caption`, `prompt`, `text` present.
        max_prompts (`int`, *optional*): Use only the first N prompts (quick runs).
        images_per_prompt (`int`): Samples per prompt (default 1, as COCO-6K).
        height, width (`int`): Generated image size (default 256x256); both must be multiples of the pipeline's
            token size (FluxPipeline: 2 x the VAE factor).
        num_inference_steps (`int`): Scheduler steps (default 50).
        guidance_scale (`float`): Classifier-free guidance scale (1.0: none). FLUX pipelines get it as
            `true_cfg_scale` with `negative_prompt`; pipelines without `true_cfg_scale` whose denoiser has no guidance
            embedding (SD3, SDXL) as `guidance_scale`.
        cfg_sweep (`list[float]`, *optional*): Evaluate each of these scales instead of `guidance_scale`; the lowest
            gFID is reported as the best.
        negative_prompt (`str`): The unconditional prompt of CFG (default `""`, the one our models drop captions to).
        embedded_guidance_scale (`float`, *optional*): Distilled guidance for a transformer with `guidance_embeds=True`
            (FLUX.1-dev: 3.5), passed as FluxPipeline's `guidance_scale`; default: the pipeline's own default.
        max_sequence_length (`int`, *optional*): T5 tokens of a FLUX prompt; default: the pipeline's (512).
        seed (`int`): Seed of every sample's noise.
        batch_size (`int`): Samples per pipeline call per process (and images per scoring batch).
        samples_per_chunk (`int`): Samples per chunk: the unit of process assignment.
        dtype (`str`): `auto` (bfloat16 on CUDA, float32 otherwise), `float32`, `bfloat16` or `float16`.
        allow_tf32 (`bool`): TF32 matmuls on CUDA while sampling (no effect on the CPU).
        reference_dir (`str`, *optional*): Folder of reference images for gFID (searched recursively); `None` skips
            gFID.
        feature_extractor (`str`): `clean-fid-inception` (real FID) or `random-inception-standin` (offline; not FID).
        fid_statistics_cache (`str`, *optional*): Directory of cached reference statistics (default
            `~/.cache/diffusers_aligntok/fid_reference_statistics`, shared with the other evaluations).
        clip_model (`str`, *optional*): CLIP for the CLIP score: a hub id or local directory with a `CLIPModel`, its
            tokenizer and image processor (default `openai/clip-vit-large-patch14`), `random-clip-standin` (offline;
            not a CLIP score), or `None` / `"none"` to skip the CLIP score.
        geneval_metadata (`str`, *optional*): GenEval's `evaluation_metadata.jsonl`; its prompts are also sampled and
            written in GenEval's layout under `cfg-<scale>/geneval/`.
        geneval_images_per_prompt (`int`): Samples per GenEval prompt (default 4, GenEval's).
        save_grid (`int`): Put the first N samples of each scale in `samples_grid.png` (0: no grid).
        num_workers (`int`): Dataloader workers reading reference images.
    """

    pipeline: str = ""
    prompts: str | None = None
    prompt_field: str | None = None
    max_prompts: int | None = None
    images_per_prompt: int = 1
    height: int = 256
    width: int = 256
    num_inference_steps: int = DEFAULT_NUM_INFERENCE_STEPS
    guidance_scale: float = 1.0
    cfg_sweep: list[float] | None = None
    negative_prompt: str = ""
    embedded_guidance_scale: float | None = None
    max_sequence_length: int | None = None
    seed: int = 0
    batch_size: int = 8
    samples_per_chunk: int = 64
    dtype: str = "auto"
    allow_tf32: bool = True
    reference_dir: str | None = None
    feature_extractor: str = "clean-fid-inception"
    fid_statistics_cache: str | None = None
    clip_model: str | None = DEFAULT_CLIP_MODEL
    geneval_metadata: str | None = None
    geneval_images_per_prompt: int = GENEVAL_IMAGES_PER_PROMPT
    save_grid: int = 16
    num_workers: int = 2

    def __post_init__(self):
        for name in (
            "images_per_prompt",
            "height",
            "width",
            "num_inference_steps",
            "batch_size",
            "samples_per_chunk",
            "geneval_images_per_prompt",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        for name in ("save_grid", "num_workers"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}.")
        if self.max_prompts is not None and self.max_prompts <= 0:
            raise ValueError(f"max_prompts must be positive or None (all prompts), got {self.max_prompts}.")
        if self.max_sequence_length is not None and self.max_sequence_length <= 0:
            raise ValueError(f"max_sequence_length must be positive or None, got {self.max_sequence_length}.")
        if not self.prompts and not self.geneval_metadata:
            raise ValueError(
                "Nothing to evaluate: give a prompt file (prompts=...) and/or GenEval's metadata file "
                "(geneval_metadata=...)."
            )
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {self.dtype!r}.")
        if self.feature_extractor not in FEATURE_EXTRACTORS:
            raise ValueError(f"feature_extractor must be one of {FEATURE_EXTRACTORS}, got {self.feature_extractor!r}.")
        if isinstance(self.clip_model, str) and self.clip_model.lower() == "none":
            self.clip_model = None
        # 1.0 means no guidance: FluxPipeline's true CFG only applies scales above 1.
        self.cfg_sweep = check_guidance_scales(self.cfg_sweep, self.guidance_scale, minimum=1.0, example="1.0,3.0,5.0")
        if self.embedded_guidance_scale is not None and not self.embedded_guidance_scale >= 0:
            raise ValueError(f"embedded_guidance_scale must be >= 0 or None, got {self.embedded_guidance_scale}.")

    @property
    def guidance_scales(self) -> list[float]:
        return list(self.cfg_sweep) if self.cfg_sweep is not None else [float(self.guidance_scale)]


# ---------------------------------------------------------------------------------------------------------------------
# The sample plan
# ---------------------------------------------------------------------------------------------------------------------


def noise_seed(seed: int, stream: int, prompt_index: int, image_index: int) -> int:
    """The 63-bit seed of image `image_index` of prompt `prompt_index`: independent of every count and of the process.

    A 2-D key needs more than `generation.py`'s prefix-stable 1-D seeds: numpy's `SeedSequence` hashes
    `(seed, stream, prompt, image)` with a documented, version-stable algorithm.
    """
    sequence = np.random.SeedSequence(entropy=int(seed), spawn_key=(int(stream), int(prompt_index), int(image_index)))
    return int(sequence.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


@dataclass(frozen=True)
class Sample:
    """One image to generate: its prompt, noise seed and path relative to the guidance-scale directory."""

    prompt: str
    seed: int
    relative_path: str
    kind: str  # "prompts" (scored) or "geneval" (exported)
    prompt_index: int
    image_index: int


def make_text_to_image_plan(
    prompts: PromptSet | None,
    images_per_prompt: int,
    seed: int,
    geneval: PromptSet | None = None,
    geneval_images_per_prompt: int = 4,
) -> list[Sample]:
    """Every sample of a run: the prompt set's (prompt-major) and then GenEval's, as a pure function of the inputs."""
    plan = []
    if prompts is not None:
        for prompt_index, prompt in enumerate(prompts.prompts):
            for image_index in range(images_per_prompt):
                plan.append(
                    Sample(
                        prompt,
                        noise_seed(seed, _PROMPTS_STREAM, prompt_index, image_index),
                        f"{SAMPLES_DIR}/{prompt_index:06d}-{image_index:03d}.png",
                        "prompts",
                        prompt_index,
                        image_index,
                    )
                )
    if geneval is not None:
        for prompt_index, prompt in enumerate(geneval.prompts):
            for image_index in range(geneval_images_per_prompt):
                # GenEval's generation script names them <index:0>5>/samples/<count:05>.png.
                plan.append(
                    Sample(
                        prompt,
                        noise_seed(seed, _GENEVAL_STREAM, prompt_index, image_index),
                        f"{GENEVAL_DIR}/{prompt_index:05d}/samples/{image_index:05d}.png",
                        "geneval",
                        prompt_index,
                        image_index,
                    )
                )
    return plan


def plan_chunks(num_samples: int, samples_per_chunk: int) -> list[range]:
    return [
        range(start, min(start + samples_per_chunk, num_samples)) for start in range(0, num_samples, samples_per_chunk)
    ]


# ---------------------------------------------------------------------------------------------------------------------
# The pipeline
# ---------------------------------------------------------------------------------------------------------------------


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, name)


def load_text_to_image_pipeline(path: str | os.PathLike, torch_dtype: torch.dtype = torch.float32):
    """A saved text-to-image pipeline (any `DiffusionPipeline` class, ours registered), checked to take the
    arguments this evaluation passes."""
    import diffusers

    import diffusers_aligntok  # noqa: F401  (registers AlignedAutoencoderKL and our pipelines for model_index.json)

    local = Path(path).expanduser()
    if local.exists():
        if not (local / "model_index.json").is_file():
            raise ValueError(
                f"{local} is not a saved diffusers pipeline (it has no model_index.json). Pass the directory written by "
                "pipeline.save_pretrained (train_t2i.py writes <output_dir>/pipeline), not a model or checkpoint "
                "directory."
            )
        source = str(local)
    else:
        source = str(path)
    try:
        pipeline = diffusers.DiffusionPipeline.from_pretrained(source, dtype=torch_dtype)
    except OSError as error:
        raise OSError(
            f"Could not load the pipeline {source!r}: {error}. Give a local directory with model_index.json, "
            "or a hub id with network access (HF_HUB_OFFLINE is "
            f"{os.environ.get('HF_HUB_OFFLINE', 'unset')})."
        ) from error
    check_pipeline_arguments(pipeline)
    return pipeline


def _call_parameters(pipeline) -> tuple[dict[str, inspect.Parameter], bool]:
    parameters = inspect.signature(pipeline.__call__).parameters
    accepts_any = any(parameter.kind is inspect.Parameter.VAR_KEYWORD for parameter in parameters.values())
    return dict(parameters), accepts_any


def check_pipeline_arguments(pipeline) -> None:
    parameters, accepts_any = _call_parameters(pipeline)
    missing = [name for name in _REQUIRED_CALL_ARGUMENTS if name not in parameters and not accepts_any]
    if missing:
        raise ValueError(
            f"{type(pipeline).__name__}.__call__ does not take {missing}; text-to-image evaluation needs a pipeline "
            f"called as pipe(prompt=..., height=..., width=..., num_inference_steps=..., generator=[...], "
            "output_type='np') (FluxPipeline, AlignTokFluxPipeline, StableDiffusion3Pipeline, ...)."
        )


def required_image_multiple(pipeline) -> int:
    """The number image sides must be a multiple of: the VAE factor times the latent patch of the denoiser.

    `AlignTokFluxPipeline` says its patch (`latent_patch_size`); the stock `FluxPipeline` packs 2x2 (and silently
    rounds other sizes down, hence this check); others use the transformer's `patch_size` when they have one.
    """
    from diffusers import FluxPipeline

    patch = getattr(pipeline, "latent_patch_size", None)
    if patch is None:
        if isinstance(pipeline, FluxPipeline):
            patch = 2
        else:
            denoiser = getattr(pipeline, "transformer", None)
            patch = getattr(getattr(denoiser, "config", None), "patch_size", None) or 1
    return int(getattr(pipeline, "vae_scale_factor", 1)) * int(patch)


def check_image_size(pipeline, height: int, width: int) -> int:
    multiple = required_image_multiple(pipeline)
    if height % multiple or width % multiple:

        def nearest(side: int) -> int:
            return max(multiple, round(side / multiple) * multiple)

        raise ValueError(
            f"height x width = {height}x{width} is not a multiple of {multiple} for this {type(pipeline).__name__} "
            f"(VAE factor {getattr(pipeline, 'vae_scale_factor', '?')} x latent patch "
            f"{multiple // max(1, int(getattr(pipeline, 'vae_scale_factor', 1)))}); the pipeline would change the size. "
            f"Use e.g. {nearest(height)}x{nearest(width)}."
        )
    return multiple


@dataclass
class CallSettings:
    """The keyword arguments every pipeline call gets for one guidance scale, and how guidance reached the model."""

    kwargs: dict[str, Any]
    cfg_argument: str | None  # "true_cfg_scale", "guidance_scale" or None (no CFG)
    negative_prompt: str | None
    embedded_guidance_scale: float | None
    max_sequence_length: int | None

    def describe(self) -> dict[str, Any]:
        return {
            "call_kwargs": to_jsonable(self.kwargs),
            "cfg_argument": self.cfg_argument,
            "negative_prompt": self.negative_prompt,
            "embedded_guidance_scale": self.embedded_guidance_scale,
            "max_sequence_length": self.max_sequence_length,
        }


def pipeline_call_settings(pipeline, config: TextToImageEvaluationConfig, guidance_scale: float) -> CallSettings:
    """Decides from the pipeline's `__call__` signature and its denoiser's config how to pass the guidance knobs.

    - `true_cfg_scale` in the signature (FluxPipeline): real CFG as `true_cfg_scale` with `negative_prompt` (FLUX only
      runs the unconditional branch when a negative prompt is given and the scale is > 1).
    - else `guidance_scale` with a denoiser without guidance embedding (SD3, SDXL): that is their CFG scale.
    - `guidance_scale` with `guidance_embeds=True` (FLUX.1-dev): distilled guidance, `embedded_guidance_scale`.
    """
    parameters, _ = _call_parameters(pipeline)
    denoiser = getattr(pipeline, "transformer", None) or getattr(pipeline, "unet", None)
    guidance_embeds = bool(getattr(getattr(denoiser, "config", None), "guidance_embeds", False))
    kwargs: dict[str, Any] = {
        "height": config.height,
        "width": config.width,
        "num_inference_steps": config.num_inference_steps,
        "output_type": "np",
    }
    cfg_argument, negative_prompt = None, None
    if "true_cfg_scale" in parameters:
        kwargs["true_cfg_scale"] = guidance_scale
        cfg_argument = "true_cfg_scale" if guidance_scale > 1 else None
    elif "guidance_scale" in parameters and not guidance_embeds:
        kwargs["guidance_scale"] = guidance_scale
        cfg_argument = "guidance_scale" if guidance_scale > 1 else None
    elif guidance_scale > 1:
        raise ValueError(
            f"guidance_scale={guidance_scale} needs classifier-free guidance, but {type(pipeline).__name__}.__call__ "
            "has no true_cfg_scale and its guidance_scale drives a guidance embedding; use guidance_scale 1.0 and "
            "embedded_guidance_scale."
        )
    if cfg_argument is not None:
        if "negative_prompt" not in parameters:
            raise ValueError(f"{type(pipeline).__name__}.__call__ takes no negative_prompt, which CFG needs here.")
        negative_prompt = config.negative_prompt
    embedded = None
    if guidance_embeds and "guidance_scale" in parameters:
        default = parameters["guidance_scale"].default
        embedded = float(config.embedded_guidance_scale if config.embedded_guidance_scale is not None else default)
        kwargs["guidance_scale"] = embedded
    elif config.embedded_guidance_scale is not None:
        raise ValueError(
            f"embedded_guidance_scale={config.embedded_guidance_scale} was given, but this pipeline's denoiser has no "
            "guidance embedding (guidance_embeds=False): our text-to-image models use real CFG, guidance_scale."
        )
    max_sequence_length = None
    if "max_sequence_length" in parameters:
        if config.max_sequence_length is not None:
            kwargs["max_sequence_length"] = config.max_sequence_length
        max_sequence_length = config.max_sequence_length or parameters["max_sequence_length"].default
    elif config.max_sequence_length is not None:
        raise ValueError(
            f"max_sequence_length={config.max_sequence_length} was given, but "
            f"{type(pipeline).__name__}.__call__ does not take it."
        )
    return CallSettings(kwargs, cfg_argument, negative_prompt, embedded, max_sequence_length)


def describe_text_to_image_pipeline(pipeline, path: str) -> dict[str, Any]:
    """Path, class, every component's class, the full denoiser, VAE and scheduler configs, weight fingerprints."""

    description: dict[str, Any] = {"path": str(path), "class": type(pipeline).__name__, "components": {}}
    for name, component in pipeline.components.items():
        if component is None:
            continue
        entry: dict[str, Any] = {"class": type(component).__name__}
        if isinstance(component, torch.nn.Module):
            entry["num_parameters"] = sum(parameter.numel() for parameter in component.parameters())
            first = next(component.parameters(), None)
            entry["dtype"] = str(first.dtype).replace("torch.", "") if first is not None else None
            entry["name_or_path"] = getattr(getattr(component, "config", None), "_name_or_path", None)
        description["components"][name] = entry
    for name in ("transformer", "unet", "vae"):
        component = getattr(pipeline, name, None)
        if component is None:
            continue
        description[name] = {
            "class": type(component).__name__,
            "config": {
                key: to_jsonable(value) for key, value in dict(component.config).items() if not key.startswith("_")
            },
            "num_parameters": description["components"][name]["num_parameters"],
            # Text encoders are frozen and come with the pipeline; the trained models are what runs differ in.
            "fingerprint": tokenizer_fingerprint(component),
        }
    description["vae_scale_factor"] = getattr(pipeline, "vae_scale_factor", None)
    description["latent_patch_size"] = getattr(pipeline, "latent_patch_size", None)
    description["scheduler"] = {
        "class": type(pipeline.scheduler).__name__,
        "config": to_jsonable(dict(pipeline.scheduler.config)),
    }
    return description


# ---------------------------------------------------------------------------------------------------------------------
# Generation
# ---------------------------------------------------------------------------------------------------------------------


def write_png_atomically(image: np.ndarray, path: Path) -> None:
    """A uint8 `(H, W, 3)` image as a PNG; a kill mid-write leaves a temporary file, never a truncated PNG."""
    with atomic_path(path) as temporary:
        Image.fromarray(image).save(temporary, format="PNG")


def to_uint8(images: np.ndarray) -> np.ndarray:
    """diffusers' `numpy_to_pil` rule for `[0, 1]` float images."""
    return (np.clip(images, 0, 1) * 255).round().astype(np.uint8)


def generate_samples(
    pipeline,
    samples: Sequence[Sample],
    scale_dir: Path,
    call: CallSettings,
    batch_size: int,
    resume: bool,
    show_progress: bool = True,
    description: str = "generate",
) -> tuple[int, int]:
    """Generates `samples` into `scale_dir` in batches; returns (generated now, kept from an earlier run).

    Each sample's noise comes from its own CPU generator (`randn_tensor` draws per generator when given a list), so an
    image depends only on its prompt and seed, not on its batch.
    """
    todo = [sample for sample in samples if not (resume and (scale_dir / sample.relative_path).is_file())]
    kept = len(samples) - len(todo)
    progress = tqdm(total=len(samples), initial=kept, desc=description, disable=not show_progress)
    for start in range(0, len(todo), batch_size):
        batch = todo[start : start + batch_size]
        kwargs = dict(call.kwargs)
        if call.negative_prompt is not None:
            kwargs["negative_prompt"] = [call.negative_prompt] * len(batch)
        images = pipeline(
            prompt=[sample.prompt for sample in batch],
            generator=[torch.Generator("cpu").manual_seed(sample.seed) for sample in batch],
            **kwargs,
        ).images
        images = np.asarray(images, dtype=np.float32)
        if images.ndim != 4 or images.shape[0] != len(batch):
            raise RuntimeError(f"The pipeline returned images of shape {images.shape} for {len(batch)} prompts.")
        if images.shape[1:3] != (call.kwargs["height"], call.kwargs["width"]):
            raise RuntimeError(
                f"The pipeline returned {images.shape[1]}x{images.shape[2]} images for height x width = "
                f"{call.kwargs['height']}x{call.kwargs['width']}; it changed the size, so its samples cannot be compared "
                "with the reference. Use a size the pipeline keeps."
            )
        if not np.isfinite(images).all():
            raise FloatingPointError(
                f"The pipeline produced NaN/inf images for {batch[0].relative_path}..{batch[-1].relative_path}; check "
                "the transformer checkpoint (a diverged run) and the dtype (float16 VAEs overflow: use float32 or "
                "bfloat16)."
            )
        for sample, image in zip(batch, to_uint8(images), strict=True):
            write_png_atomically(image, scale_dir / sample.relative_path)
        progress.update(len(batch))
    progress.close()
    return len(todo), kept


def text_to_image_fingerprint(
    config: TextToImageEvaluationConfig,
    guidance_scale: float,
    pipeline_description: dict,
    call: CallSettings,
    dtype: torch.dtype,
    plan: Sequence[Sample],
) -> str:
    """A hash of everything that changes a sample's pixels (not the batch size or the number of processes)."""
    settings = {
        "pipeline": {
            name: pipeline_description[name]["fingerprint"]
            for name in ("transformer", "unet", "vae")
            if name in pipeline_description
        },
        "pipeline_class": pipeline_description["class"],
        "scheduler": pipeline_description["scheduler"],
        "call": call.describe(),
        "guidance_scale": guidance_scale,
        "dtype": str(dtype),
        "allow_tf32": config.allow_tf32,
        "plan": hashlib.sha256(
            "\n".join(f"{s.relative_path}\t{s.seed}\t{s.prompt}" for s in plan).encode()
        ).hexdigest(),
        "state_version": _STATE_VERSION,
    }
    return settings_fingerprint(settings)


def check_resumable(scale_dir: Path, fingerprint: str) -> None:
    """Raises if `scale_dir` holds samples of a run with other settings (every process checks, so all of them stop)."""
    settings_path = scale_dir / SETTINGS_JSON
    if settings_path.is_file() and json.loads(settings_path.read_text()).get("fingerprint") != fingerprint:
        raise ValueError(
            f"{scale_dir} holds samples generated with other settings (pipeline weights, prompts, seed, size, steps, "
            "guidance, dtype, ...). Rerun with the same settings, use another output_dir, or drop --resume to "
            "generate everything again."
        )


def prepare_scale_dir(scale_dir: Path, fingerprint: str, resume: bool) -> None:
    """Clears an earlier run's samples unless resuming (checked by [`check_resumable`]); records this run's settings."""
    settings_path = scale_dir / SETTINGS_JSON
    if not resume:
        existing = [scale_dir / SAMPLES_DIR, scale_dir / GENEVAL_DIR]
        if any(path.exists() for path in existing):
            logger.warning(f"Starting over in {scale_dir}: removing earlier samples (pass --resume to keep them).")
        for path in existing:
            shutil.rmtree(path, ignore_errors=True)
    scale_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(settings_path) as temporary:
        temporary.write_text(json.dumps({"fingerprint": fingerprint}) + "\n")


def write_geneval_metadata(geneval_dir: Path, geneval: PromptSet) -> None:
    """`<index:05d>/metadata.jsonl` per GenEval prompt: its line of the metadata file, as GenEval's script writes it."""
    for index, record in enumerate(geneval.records):
        with atomic_path(geneval_dir / f"{index:05d}" / "metadata.jsonl") as temporary:
            temporary.write_text(json.dumps(record) + "\n")


def write_prompt_index(output_dir: Path, plan: Sequence[Sample]) -> Path:
    path = output_dir / PROMPTS_JSONL
    with atomic_path(path) as temporary, open(temporary, "w") as handle:
        handle.writelines(
            json.dumps(
                {
                    "file": sample.relative_path,
                    "kind": sample.kind,
                    "prompt_index": sample.prompt_index,
                    "image_index": sample.image_index,
                    "seed": sample.seed,
                    "prompt": sample.prompt,
                }
            )
            + "\n"
            for sample in plan
        )
    return path


# ---------------------------------------------------------------------------------------------------------------------
# Reference images
# ---------------------------------------------------------------------------------------------------------------------


def list_reference_images(reference_dir: str | os.PathLike) -> list[Path]:
    """Every image file under `reference_dir` (recursively, hidden entries skipped), sorted by relative path.

    A plain file listing rather than `datasets`' image folder, which would read folder names as labels or splits
    (a `val2014/` folder is a "validation" split to it).
    """
    root = Path(reference_dir).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(
            f"reference_dir {root} is not a directory; give the folder of reference images "
            "(COCO-6K: the COCO val images whose captions are the prompts)."
        )
    files = []
    for directory, subdirectories, names in os.walk(root):
        subdirectories[:] = sorted(name for name in subdirectories if not name.startswith("."))
        files.extend(
            Path(directory) / name
            for name in names
            if not name.startswith(".") and name.lower().endswith(IMAGE_FILE_EXTENSIONS)
        )
    if not files:
        raise ValueError(
            f"reference_dir {root} holds no images ({', '.join(IMAGE_FILE_EXTENSIONS)}); put the reference "
            "images there, or leave reference_dir out to skip gFID."
        )
    return sorted(files, key=lambda path: path.relative_to(root).as_posix())


class _ReferenceImages(torch.utils.data.Dataset):
    """Reference files -> `(pixels in [-1, 1], readable)`; an unreadable file gives `readable=False` (skipped)."""

    def __init__(self, files: Sequence[Path], height: int, width: int):
        self.files = list(files)
        self.transform = ImageTransform((height, width), center_crop=True, random_flip=False)
        self.height, self.width = height, width

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        try:
            pixels, _ = self.transform(decode_image(self.files[index]))
            return pixels, True
        except Exception as error:  # noqa: BLE001  (PIL raises OSError, SyntaxError, struct.error, ... on bad data)
            logger.warning(f"Skipping unreadable reference image {self.files[index]}: {type(error).__name__}: {error}")
            return torch.zeros(3, self.height, self.width), False


def reference_statistics(
    reference_dir: str,
    files: Sequence[Path],
    height: int,
    width: int,
    extractor: FIDFeatureExtractor,
    accelerator,
    batch_size: int,
    num_workers: int,
    cache_dir: str | None,
) -> tuple[FeatureStatistics, dict[str, Any]]:
    """FID statistics of the reference images (centre crops at the generated size), cached on disk, sharded over
    processes."""
    from accelerate.utils import gather_object

    root = Path(reference_dir).expanduser().resolve()
    listing = hashlib.sha256()
    for path in files:
        listing.update(f"{path.relative_to(root).as_posix()}\t{path.stat().st_size}\n".encode())
    key = reference_statistics_key(
        str(root),
        "files",
        (height, width),
        len(files),
        extractor.name,
        files_sha256=listing.hexdigest()[:16],
        inception_mode=getattr(extractor, "inception_mode", "clean"),
    )
    cache_dir = Path(cache_dir) if cache_dir else default_reference_statistics_dir()
    path = reference_statistics_path(cache_dir, key)
    statistics = load_reference_statistics(path, key)
    cached = statistics is not None
    num_unreadable = None
    if statistics is None:
        dataset = _ReferenceImages(files, height, width)
        batch_ids = shard_batches(accelerator, len(files), batch_size)
        partial = FeatureStatistics(feature_dimension(extractor))
        unreadable = 0
        if batch_ids:
            sampler = [list(range(b * batch_size, min((b + 1) * batch_size, len(files)))) for b in batch_ids]
            loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=num_workers)
            for pixels, readable in tqdm(
                loader, desc="reference features", disable=not accelerator.is_local_main_process
            ):
                unreadable += int((~readable).sum())
                if readable.any():
                    partial.update(extractor(pixels[readable]))
        gathered = gather_object([{"statistics": partial.state_dict(), "unreadable": unreadable}])
        statistics = FeatureStatistics(partial.feature_dim)
        for part in gathered:
            statistics.merge(FeatureStatistics.from_state_dict(part["statistics"]))
        num_unreadable = sum(part["unreadable"] for part in gathered)
        if statistics.count < 2:
            raise ValueError(
                f"reference_dir {reference_dir}: only {statistics.count} of {len(files)} images could be "
                "read; FID needs at least 2."
            )
        if accelerator.is_main_process:
            save_reference_statistics(path, statistics, key)
        accelerator.wait_for_everyone()
    description = {
        "kind": "image_folder",
        "path": str(root),
        "num_files": len(files),
        "num_images": statistics.count,
        "num_unreadable_skipped": num_unreadable,
        "resolution": [height, width],
        "preprocessing": "RGB, bicubic resize to cover height x width, centre crop",
        "statistics_path": str(path),
        "cached": cached,
    }
    return statistics, description


# ---------------------------------------------------------------------------------------------------------------------
# Scoring the samples
# ---------------------------------------------------------------------------------------------------------------------


def score_samples(
    samples: Sequence[Sample],
    scale_dir: Path,
    accelerator,
    batch_size: int,
    extractor: FIDFeatureExtractor | None,
    clip_scorer: CLIPScorer | None,
) -> dict[str, Any]:
    """FID statistics and CLIP scores of the saved PNGs, sharded over processes; the merged result on every process."""
    from accelerate.utils import gather_object

    statistics = FeatureStatistics(feature_dimension(extractor)) if extractor is not None else None
    clip_sum = clip_square_sum = 0.0
    for batch_id in shard_batches(accelerator, len(samples), batch_size):
        batch = samples[batch_id * batch_size : (batch_id + 1) * batch_size]
        images = []
        for sample in batch:
            path = scale_dir / sample.relative_path
            if not path.is_file():
                raise FileNotFoundError(
                    f"{path} is missing: a process did not finish its samples; rerun with --resume."
                )
            with Image.open(path) as image:
                images.append(image.convert("RGB"))
        if statistics is not None:
            pixels = torch.from_numpy(np.stack([np.asarray(image) for image in images])).permute(0, 3, 1, 2)
            statistics.update(extractor(pixels.float() / 127.5 - 1))
        if clip_scorer is not None:
            scores = clip_scorer(images, [sample.prompt for sample in batch])
            clip_sum += float(scores.sum())
            clip_square_sum += float((scores**2).sum())
    parts = gather_object(
        [
            {
                "statistics": statistics.state_dict() if statistics is not None else None,
                "clip_sum": clip_sum,
                "clip_square_sum": clip_square_sum,
            }
        ]
    )
    merged = None
    if extractor is not None:
        merged = FeatureStatistics(statistics.feature_dim)
        for part in parts:
            merged.merge(FeatureStatistics.from_state_dict(part["statistics"]))
    count = len(samples)
    result: dict[str, Any] = {"statistics": merged, "clip_score": None, "clip_score_std": None}
    if clip_scorer is not None and count:
        mean = sum(part["clip_sum"] for part in parts) / count
        variance = max(sum(part["clip_square_sum"] for part in parts) / count - mean**2, 0.0)
        result.update(clip_score=mean, clip_score_std=math.sqrt(variance))
    return result


# ---------------------------------------------------------------------------------------------------------------------
# The evaluation
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class _Inputs:
    prompts: PromptSet | None
    geneval: PromptSet | None
    plan: list[Sample] = field(default_factory=list)


def evaluate_text_to_image(
    config: TextToImageEvaluationConfig,
    output_dir: str | os.PathLike,
    resume: bool = False,
    pipeline=None,
    feature_extractor: FIDFeatureExtractor | None = None,
    clip_scorer: CLIPScorer | None = None,
    accelerator=None,
) -> dict[str, Any] | None:
    """Runs the evaluation of the module docstring; returns the results on the main process (None elsewhere).

    `pipeline`, `feature_extractor` and `clip_scorer` replace what `config` would load (`config.pipeline` and
    `config.clip_model` are then only recorded).
    """
    from accelerate import Accelerator
    from accelerate.utils import gather_object

    started = time.perf_counter()
    accelerator = accelerator or Accelerator()
    device = accelerator.device
    output_dir = Path(output_dir)
    warnings_list: list[str] = []
    notes: list[str] = []

    # ---- inputs first: a bad prompt file or reference folder fails before any model is loaded, a bad size or guidance
    # setting before any sample ----
    inputs = _Inputs(
        load_prompts(config.prompts, config.prompt_field, config.max_prompts) if config.prompts else None,
        load_geneval_metadata(config.geneval_metadata) if config.geneval_metadata else None,
    )
    reference_files = list_reference_images(config.reference_dir) if config.reference_dir else None
    if inputs.prompts is None and config.reference_dir:
        raise ValueError("reference_dir is set but there is no prompt file: gFID scores the samples of --prompts.")
    if inputs.prompts is not None and inputs.prompts.num_empty_skipped:
        warnings_list.append(f"{inputs.prompts.path}: {inputs.prompts.num_empty_skipped} empty prompts were skipped.")
    inputs.plan = make_text_to_image_plan(
        inputs.prompts, config.images_per_prompt, config.seed, inputs.geneval, config.geneval_images_per_prompt
    )
    scored = [sample for sample in inputs.plan if sample.kind == "prompts"]

    dtype = resolve_dtype(config.dtype, device)
    pipeline = pipeline if pipeline is not None else load_text_to_image_pipeline(config.pipeline, dtype)
    check_pipeline_arguments(pipeline)
    multiple = check_image_size(pipeline, config.height, config.width)
    calls = {scale: pipeline_call_settings(pipeline, config, scale) for scale in config.guidance_scales}
    pipeline_description = describe_text_to_image_pipeline(pipeline, config.pipeline)
    pipeline.to(device)
    pipeline.set_progress_bar_config(disable=True)

    # ---- metric networks and the reference, before hours of sampling ----
    extractor = None
    reference, reference_description = None, None
    if reference_files is not None:
        extractor = feature_extractor or build_fid_feature_extractor(config.feature_extractor, device)
        if not extractor.is_real_metric:
            warnings_list.append(f"gFID uses {extractor.name!r}, a stand-in network: its values are not FID.")
        reference, reference_description = reference_statistics(
            config.reference_dir,
            reference_files,
            config.height,
            config.width,
            extractor,
            accelerator,
            config.batch_size,
            config.num_workers,
            config.fid_statistics_cache,
        )
        if reference.count < len(scored):
            warnings_list.append(
                f"reference_dir has {reference.count} readable images for {len(scored)} samples; FID compares the two "
                "sets' statistics, and the smaller reference biases it. Use at least as many reference images "
                "(COCO-6K: the 6,000 images of the captions)."
            )
        fid_warning = fid_sample_count_warning(
            min(reference.count, len(scored)), minimum=COCO_6K_NUM_PROMPTS, protocol_num_samples=COCO_6K_NUM_PROMPTS
        )
        if fid_warning:
            warnings_list.append(fid_warning)
    elif inputs.prompts is not None:
        notes.append("gFID skipped: no reference_dir.")
    clip = None
    if inputs.prompts is not None and (clip_scorer is not None or config.clip_model):
        clip = clip_scorer or build_clip_scorer(config.clip_model, device)
        if not clip.is_real_metric:
            warnings_list.append(
                f"The CLIP score uses {clip.name!r}, a random stand-in model: its values are not a CLIP score."
            )
        elif clip.name != DEFAULT_CLIP_MODEL:
            notes.append(
                f"CLIP score with {clip.name}; numbers are comparable only with the same CLIP model "
                f"(the default protocol uses {DEFAULT_CLIP_MODEL})."
            )
    elif inputs.prompts is not None:
        notes.append("CLIP score skipped: clip_model is none.")

    truncation = _truncation_counts(pipeline, inputs.prompts, clip, calls[config.guidance_scales[0]])
    for name, count in truncation.items():
        if count:
            notes.append(f"{count} prompts are longer than {name} and were truncated.")

    # ---- generate every guidance scale (the same plan and noise), then score them ----
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        write_prompt_index(output_dir, inputs.plan)
    chunks = plan_chunks(len(inputs.plan), config.samples_per_chunk)
    my_samples = [
        inputs.plan[index]
        for chunk in chunks_for_process(len(chunks), accelerator.process_index, accelerator.num_processes)
        for index in chunks[chunk]
    ]
    rows = []
    for guidance_scale in config.guidance_scales:
        scale_dir = guidance_scale_dir(output_dir, guidance_scale)
        fingerprint = text_to_image_fingerprint(
            config, guidance_scale, pipeline_description, calls[guidance_scale], dtype, inputs.plan
        )
        if resume:
            check_resumable(scale_dir, fingerprint)
        accelerator.wait_for_everyone()  # every process has read the old settings before the main one rewrites them
        if accelerator.is_main_process:
            prepare_scale_dir(scale_dir, fingerprint, resume)
            if inputs.geneval is not None:
                write_geneval_metadata(scale_dir / GENEVAL_DIR, inputs.geneval)
        accelerator.wait_for_everyone()
        with tf32_matmuls(config.allow_tf32):
            generated, kept = generate_samples(
                pipeline,
                my_samples,
                scale_dir,
                calls[guidance_scale],
                config.batch_size,
                resume,
                show_progress=accelerator.is_local_main_process,
                description=f"generate (cfg {guidance_scale:g})",
            )
        counts = gather_object([(generated, kept)])  # also the barrier: every PNG of this scale is on disk after it
        row: dict[str, Any] = {
            "guidance_scale": guidance_scale,
            **calls[guidance_scale].describe(),
            "directory": str(scale_dir),
            "fingerprint": fingerprint,
            "samples_generated_this_run": sum(c[0] for c in counts),
            "samples_kept_from_earlier_run": sum(c[1] for c in counts),
            "gfid": None,
            "clip_score": None,
            "clip_score_std": None,
            "num_samples": len(scored),
        }
        if scored:
            scores = score_samples(scored, scale_dir, accelerator, config.batch_size, extractor, clip)
            if reference is not None:
                row["gfid"] = fid_from_statistics(reference, scores["statistics"])
            row.update(clip_score=scores["clip_score"], clip_score_std=scores["clip_score_std"])
        if inputs.geneval is not None:
            row["geneval_dir"] = str(scale_dir / GENEVAL_DIR)
        if accelerator.is_main_process and config.save_grid and scored:
            row["samples_grid"] = save_sample_grid(scale_dir, min(config.save_grid, len(scored)), notes)
        rows.append(row)
        logger.info(f"guidance scale {guidance_scale:g}: gFID {row['gfid']}, CLIP score {row['clip_score']}")
    if not accelerator.is_main_process:
        return None

    best = mark_best_guidance_scale(rows)
    if inputs.geneval is not None:
        notes.append(
            "GenEval samples are exported, not scored (GenEval needs mmdetection and its Mask2Former weights). In a "
            "GenEval checkout: python evaluation/evaluate_images.py <geneval_dir> --outfile <geneval_dir>/results.jsonl "
            "--model-path <detector dir>; then python evaluation/summary_scores.py <geneval_dir>/results.jsonl."
        )
    for warning in warnings_list:
        warnings.warn(warning, UserWarning, stacklevel=2)
    headline = best if best is not None else rows[0]
    results = {
        "settings": {
            **to_jsonable(asdict(config)),
            **sweep_settings(config.cfg_sweep, config.guidance_scale, config.guidance_scales),
            "dtype_effective": str(dtype).replace("torch.", ""),
            "image_size": [config.height, config.width],
            "image_size_multiple": multiple,
            "num_processes": accelerator.num_processes,
            "num_samples": len(inputs.plan),
            "num_scored_samples": len(scored),
            "num_chunks": len(chunks),
            "noise": "image k of prompt i: torch.randn on a CPU generator seeded with "
            "SeedSequence(entropy=seed, spawn_key=(stream, i, k)).generate_state(1, uint64) >> 1; stream 0 = "
            "prompts, 1 = GenEval",
        },
        "prompts": {**inputs.prompts.describe(), "truncated": truncation} if inputs.prompts is not None else None,
        "geneval": {
            **inputs.geneval.describe(),
            "images_per_prompt": config.geneval_images_per_prompt,
            "layout": "<geneval_dir>/<index:05d>/metadata.jsonl, <geneval_dir>/<index:05d>/samples/<k:05d>.png",
            "scored": False,
        }
        if inputs.geneval is not None
        else None,
        "pipeline": pipeline_description,
        "feature_extractor": extractor.describe() if extractor is not None else None,
        "reference": reference_description,
        "clip": clip.describe() if clip is not None else None,
        "versions": package_versions(),
        "metrics": {
            "guidance_scale": headline["guidance_scale"],
            "gfid": headline["gfid"],
            "gfid_is_real_metric": extractor.is_real_metric if extractor is not None else None,
            "clip_score": headline["clip_score"],
            "clip_score_is_real_metric": clip.is_real_metric if clip is not None else None,
            "num_samples": len(scored),
        },
        "best_guidance_scale": best["guidance_scale"] if best is not None else None,
        "rows": rows,
        "warnings": warnings_list,
        "notes": notes,
        "wall_time_seconds": time.perf_counter() - started,
    }
    write_text_to_image_results(output_dir, results)
    return results


def _truncation_counts(
    pipeline, prompts: PromptSet | None, clip: CLIPScorer | None, call: CallSettings
) -> dict[str, int]:
    """Prompts cut by each text encoder of the pipeline (FLUX: CLIP-L at 77 tokens, T5 at max_sequence_length) and by
    the CLIP-score model."""
    if prompts is None:
        return {}
    counts = {}
    for name in ("tokenizer", "tokenizer_2", "tokenizer_3"):
        tokenizer = getattr(pipeline, name, None)
        if tokenizer is None:
            continue
        # FLUX and SD3 cut their T5 prompt at max_sequence_length, their CLIP prompts at the tokenizer's length.
        is_t5 = "T5" in type(tokenizer).__name__
        limit = call.max_sequence_length if is_t5 and call.max_sequence_length else tokenizer.model_max_length
        counts[f"pipeline {name} ({type(tokenizer).__name__}, {limit} tokens)"] = count_truncated_prompts(
            tokenizer, prompts.prompts, limit
        )
    if clip is not None:
        counts[f"CLIP-score text encoder ({clip.max_length} tokens)"] = clip.count_truncated(prompts.prompts)
    return counts


# ---------------------------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------------------------


def text_to_image_markdown(results: dict[str, Any]) -> str:
    """One row per guidance scale (the best in bold), then the protocol and caveats."""
    settings, metrics = results["settings"], results["metrics"]
    fid_label = "gFID" if metrics["gfid_is_real_metric"] in (True, None) else "gFID (stand-in, NOT FID)"
    clip_label = (
        "CLIP score" if metrics["clip_score_is_real_metric"] in (True, None) else "CLIP score (stand-in, NOT CLIP)"
    )
    lines = [f"| CFG scale | {fid_label} | {clip_label} | samples | best |", "|---|---|---|---|---|"]
    for row in results["rows"]:
        cells = [
            f"{row['guidance_scale']:g}",
            format_metric(row.get("gfid"), 2),
            format_metric(row.get("clip_score"), 2)
            + (f" ± {row['clip_score_std']:.2f}" if row.get("clip_score_std") is not None else ""),
            str(row["num_samples"]),
        ]
        cells = [f"**{cell}**" for cell in cells] + ["✓"] if row.get("best") else cells + [""]
        lines.append("| " + " | ".join(cells) + " |")
    prompts = results.get("prompts")
    reference = results.get("reference")
    pipeline = results["pipeline"]
    lines += [
        "",
        (
            f"Pipeline {pipeline['path']} ({pipeline['class']}, VAE {pipeline.get('vae', {}).get('class')}); "
            f"{settings['image_size'][0]}x{settings['image_size'][1]}, {settings['num_inference_steps']} steps, "
            f"{settings['dtype_effective']}, seed {settings['seed']}."
        ),
    ]
    if prompts is not None:
        lines.append(
            f"Prompts: {prompts['path']} ({prompts['num_prompts']} prompts x {settings['images_per_prompt']} "
            f"images, {prompts['num_empty_skipped']} empty skipped, sha256 {prompts['sha256'][:12]})."
        )
    if reference is not None:
        lines.append(
            f"Reference: {reference['num_images']} images of {reference['path']}, centre crops; features "
            f"{results['feature_extractor']['name']}."
        )
    if results.get("clip") is not None:
        lines.append(f"CLIP: {results['clip']['name']}.")
    if results.get("geneval") is not None:
        lines.append(
            f"GenEval export: {results['geneval']['num_prompts']} prompts x "
            f"{results['geneval']['images_per_prompt']} images per scale in cfg-<scale>/geneval (not scored)."
        )
    return "\n".join(lines + warnings_and_notes(results)) + "\n"


def write_text_to_image_results(output_dir: str | os.PathLike, results: dict[str, Any]) -> tuple[Path, Path]:
    """Writes `results.json` and `results.md` atomically and returns their paths."""
    return write_results_files(output_dir, results, text_to_image_markdown(results))
