"""Evaluate a class-conditional `AlignTokDiTPipeline`: gFID, Inception Score, precision and recall of its samples.

    results = evaluate_generation(GenerationEvaluationConfig(pipeline="runs/dit_xl/pipeline"), output_dir="eval/xl")

The default protocol follows the one behind the paper's ImageNet 256x256 numbers in everything that is a property of
the *samples*: 50,000 samples, 250 Euler steps (LightningDiT's FID setting; fewer steps raise the FID), Inception
Score over 10 splits, improved precision and recall (k = 3) against 10,000 reference images. Its *measurement* is our
own by default: clean-fid's "clean" Inception features (`fid.py`), reference statistics computed here from the
ImageNet training set at 256x256 (centre crops), and class-balanced labels (50 per class).

Which numbers are comparable with which:

- **Designed to be comparable with ADM's evaluator** (OpenAI guided-diffusion `evaluations/evaluator.py`, behind the
  ImageNet 256 gFIDs of ADM, DiT, SiT, LightningDiT / VA-VAE and the AlignTok paper's 1.90 / 1.37):
  `inception_mode="legacy_tensorflow"` + `reference=".../VIRTUAL_imagenet256_labeled.npz"` (ADM's reference batch;
  its precomputed `mu` / `sigma` are used, as ADM's evaluator uses them) + `label_sampling="random"` (ADM's and
  LightningDiT's sampling scripts draw `torch.randint` labels) + `num_samples=50_000`. Why it should agree: ADM's
  evaluator feeds uint8 images at their own size into the TensorFlow Inception graph, which resizes inside, and takes
  its `pool_3` features; clean-fid's "legacy_tensorflow" mode does the same with the torchscript port of that graph,
  and clean-fid's README calls the mode equivalent to the official TensorFlow FID implementation (TTUR). **Not
  verified here**: there is no TensorFlow and no real Inception weights offline, so the agreement with ADM's evaluator
  on the same samples has not been measured, and no tolerance is claimed. For a number that goes into a table next
  to published ones, write the samples with `save_npz` and run ADM's evaluator on that file (LightningDiT's README
  asks the same of its own FID script). `results.json` records under `settings.protocol` whether a run used this
  combination and, if not, what differs.
- **Default ("ours")**: clean Inception + our statistics + balanced labels. Comparable only with other runs of this
  evaluation at the same settings (and with the tokenizer evaluation's rFIDs, which share the statistics cache), not
  with published tables: the antialiased resize and the reference statistics differ from ADM's.
- Mixing (clean features against ADM's TensorFlow `mu` / `sigma`) compares two preprocessings; it is allowed but
  warned about, and is comparable with neither.

Labels: `balanced` stays the default because it removes the label-count noise from the estimate (every class exactly
`num_samples / num_classes` times), which is what comparing our own runs needs; published numbers use `random` labels,
so the ADM-comparable combination above uses `random`. Both are a pure function of `seed` and the sample index.

How it runs:

- The sample plan (one class label and one noise seed per sample) is a pure function of (seed, num_samples,
  label_sampling, num_classes): [`make_sample_plan`]. Sample `i` starts from noise drawn on the CPU from its own
  generator seeded with `noise_seeds[i]`, so every sample is the same whatever the number of processes, the chunk
  each falls in or the batch size.
- The plan is cut into chunks of `samples_per_chunk`; chunk `k` goes to process `k % num_processes`
  ([`chunks_for_process`]). A process writes one file per chunk, `<scale dir>/features-00012.npz` (FID features,
  classifier logits, labels, sample indices, noise seeds and a fingerprint of every setting that changes them),
  atomically (temporary file, then rename). Nothing holds more than one batch of images.
- `resume=True` skips chunks whose file exists with the same fingerprint (and refuses one with another fingerprint),
  so a killed run continues where it stopped, and a finished run can be re-scored against another reference without
  generating anything.
- The main process reads all chunk files of a guidance scale in plan order and computes the metrics. In CFG-sweep
  mode every scale gets its own directory (`cfg-1.5/`) and the same plan (the same labels and noise), and the scale
  with the lowest gFID is reported as the best.

- With `save_npz`, each chunk also writes its 8-bit samples (`<scale dir>/images-00012.npz`, with the same
  fingerprint); after generation the main process streams them, in plan order, into one `.npz` laid out as ADM's
  `scripts/image_sample.py` writes it: `arr_0` uint8 `(N, H, W, 3)` in sample order and `arr_1` the int64 class labels
  (ADM's evaluator reads `arr_0`). The pixels are those the FID features and the PNGs of `save_images` see. The chunk
  image files are as large as the npz; delete them once it is written (a later `--resume` with `save_npz` regenerates
  the chunks that lack them).

Outputs in `output_dir`: `results.json` (every sampling knob, the pipeline's configs, the reference, the feature
networks and whether each is a real metric, package versions, one row per guidance scale, warnings), `results.md`
(one row per scale, the best marked) and, with `save_images`, `cfg-<scale>/samples/*.png` and
`cfg-<scale>/samples_grid.png`.
"""

import hashlib
import inspect
import json
import logging
import os
import shutil
import time
import warnings
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from ..utils import atomic_path, format_metric, settings_fingerprint, to_jsonable, tokenizer_fingerprint
from .metrics.fid import (
    FEATURE_EXTRACTORS,
    FeatureStatistics,
    FIDFeatureExtractor,
    build_fid_feature_extractor,
    check_inception_mode,
    default_reference_statistics_dir,
    feature_dimension,
    fid_sample_count_warning,
    frechet_distance,
    inception_score,
    load_reference_statistics,
    precision_recall,
    quantize_to_uint8,
    reference_statistics_key,
    reference_statistics_path,
    save_reference_statistics,
)
from .report import package_versions, warnings_and_notes, write_results_files
from .streaming import EvenlySpacedSubset, build_evaluation_dataset, iterate_batches, shard_batches
from .sweep import (
    SAMPLES_DIR,
    SAMPLES_GRID_PNG,
    check_guidance_scales,
    chunks_for_process,
    guidance_scale_dir,
    mark_best_guidance_scale,
    save_sample_grid,
    sweep_settings,
    tf32_matmuls,
)


logger = logging.getLogger(__name__)

LABEL_SAMPLINGS = ("balanced", "random")
# Earlier name of "random" (whose labels were then drawn in one batch from a numpy generator, not per sample index).
_LABEL_SAMPLING_ALIASES = {"uniform": "random"}
# Where the statistics of a reference .npz come from: its stored mu/sigma when it has them (ADM's evaluator's rule),
# always the stored ones, or always its arr_0 images through the selected feature extractor.
REFERENCE_NPZ_STATISTICS = ("auto", "mu_sigma", "arr_0")
ADM_REFERENCE_BATCH_IMAGENET_256 = "VIRTUAL_imagenet256_labeled.npz"
PROTOCOL_NUM_SAMPLES = 50_000
SAMPLERS = ("euler", "heun")
# LightningDiT reports its FID with 250 Euler steps; previews in our training configs use 50.
PROTOCOL_NUM_INFERENCE_STEPS = 250
# ADM's reference batch (VIRTUAL_imagenet256_labeled.npz) holds 10,000 training images for precision / recall.
PROTOCOL_PRECISION_RECALL_REFERENCE_SAMPLES = 10_000
INCEPTION_SCORE_SPLITS = 10
RESULTS_JSON = "results.json"
RESULTS_MARKDOWN = "results.md"
_CHUNK_FORMAT = "features-{:05d}.npz"
_IMAGES_FORMAT = "images-{:05d}.npz"
_STATE_VERSION = 1
_ALL_IMAGES = 2**62  # "every image of the split" for build_evaluation_dataset
# Seed of a generated reference (builtin:shapes): fixed, so the reference does not move with the sampling seed and its
# statistics are the tokenizer evaluation's (whose default seed is 0).
_REFERENCE_SEED = 0


@dataclass
class GenerationEvaluationConfig:
    """Settings of one generation evaluation; all of them are recorded in `results.json`.

    Args:
        pipeline (`str`): Directory of a saved [`AlignTokDiTPipeline`] (`train_dit.py` writes `<output_dir>/pipeline`)
            or a hub id of one.
        num_samples (`int`): Samples per guidance scale (default 50,000, the protocol).
        batch_size (`int`): Samples per pipeline call on each process (and images per batch of the reference pass).
        samples_per_chunk (`int`): Samples per chunk file, the unit of work, resume and process assignment.
        num_inference_steps (`int`): Scheduler steps (default 250: LightningDiT's FID setting).
        sampler (`str`): `"euler"` (`FlowMatchEulerDiscreteScheduler`, the paper's) or `"heun"`
            (`FlowMatchHeunDiscreteScheduler`, two transformer evaluations per step but the last), built from the
            pipeline's scheduler config.
        shift (`float`, *optional*): Timestep shift; `None` keeps the pipeline scheduler's own (possibly dynamic).
        guidance_scale (`float`): Classifier-free guidance scale on all latent channels (1.0: no guidance).
        cfg_sweep (`list[float]`, *optional*): Evaluate each of these scales instead of `guidance_scale` and report
            the one with the lowest gFID.
        guidance_interval (`(float, float)`): Noise levels `(low, high)`, `0 <= low <= high <= 1`, where guidance is
            on (see `AlignTokDiTPipeline.__call__`).
        guidance_channels (`int`, *optional*): Passed to the pipeline call as `guidance_channels` when given (the
            number of leading latent channels guidance applies to, where the pipeline supports it; LightningDiT's
            released `forward_with_cfg` guides the first 3); `None` (default) passes nothing and keeps the
            pipeline's own behaviour (all channels in this package). Recorded, with the effective value, in
            `results.json` and, when given, in the chunk fingerprint.
        seed (`int`): Seed of the sample plan (labels and noise).
        label_sampling (`str`): `"balanced"` (default: exactly `num_samples / num_classes` samples per class, in a
            seeded shuffled order; `num_samples` must be a multiple of the number of classes; lower variance, for
            comparing our own runs) or `"random"` (independent uniform labels, as ADM's, DiT's and LightningDiT's
            sampling scripts draw them with `torch.randint`: use it to compare with published numbers). Sample `i`'s
            label is a function of `(seed, i)` alone under `"random"` (so a 10K run's labels are the first 10K of a
            50K run's); under `"balanced"` of `(seed, num_samples, i)`. Neither depends on the process count.
            `"uniform"` is accepted as an old name of `"random"`.
        num_classes (`int`, *optional*): Expected number of classes; must equal the transformer's `num_classes`
            (a guard against evaluating the wrong model). Default: the transformer's.
        reference (`str`): An `.npz` in ADM's reference-batch format (`VIRTUAL_imagenet256_labeled.npz`): `mu` and
            `sigma` (2048-d Inception statistics) and / or `arr_0` (uint8 images `(N, H, W, 3)`, for precision / recall
            and, see `reference_npz_statistics`, for the statistics); or a data source for `build_evaluation_dataset`
            (hub id, local folder or shards, `builtin:shapes`). Default: ImageNet (`ILSVRC/imagenet-1k`).
        reference_npz_statistics (`str`): For an `.npz` reference: `"auto"` (default; its `mu` / `sigma` when it has
            them, as ADM's evaluator does, else the statistics of its `arr_0` images through the selected feature
            extractor), `"mu_sigma"` (require the stored ones) or `"arr_0"` (always compute them from the images: a
            reference consistent with `inception_mode` whatever network produced the stored ones; note that ADM's
            stored statistics cover the whole training set, its `arr_0` only 10,000 images).
        reference_split (`str`): Split of a data-source reference (default `train`, as ADM's ImageNet statistics).
        reference_num_samples (`int`, *optional*): Reference images for the statistics, evenly spaced over the
            split; `None` (default) uses them all (required for `builtin:shapes`).
        reference_resolution (`int`, *optional*): Centre-crop size of the reference images; default: the size of
            the generated images.
        precision_recall_reference_samples (`int`): Real images (evenly spaced over the reference) whose features
            precision / recall compare the samples with (default 10,000; 0 skips precision / recall).
        precision_recall_k (`int`): Neighbourhood size of the manifolds (3 in Kynkaanniemi et al.).
        feature_extractor (`str`): `"clean-fid-inception"` (the real metrics) or `"random-inception-standin"`
            (offline; its numbers are not FID / IS).
        inception_mode (`str`): clean-fid's preprocessing: `"clean"` (default; its antialiased PIL resize to 299) or
            `"legacy_tensorflow"` (images at their own size into the network, which resizes inside as the TensorFlow
            graph does: the mode designed to be comparable with ADM's evaluator; see the module docstring). Applies
            to the samples and to references computed from images; part of the cache key and the chunk fingerprint.
        fid_statistics_cache (`str`, *optional*): Directory of cached reference statistics, shared with the tokenizer
            evaluation (default `~/.cache/diffusers_aligntok/fid_reference_statistics`).
        save_images (`int`): Save the first N samples of each scale as PNGs and a grid.
        save_npz (`str`, *optional*): Also write every sample of each scale, in sample order, to this `.npz` as ADM's
            evaluator reads it (`arr_0` uint8 `(N, H, W, 3)`, `arr_1` int64 labels). In a CFG sweep each scale gets
            `<stem>-cfg-<scale>.npz` beside it. Costs `N * H * W * 3` bytes twice on disk (chunk image files, then the
            npz; 9.8 GB each for 50,000 256x256 samples).
        allow_tf32 (`bool`): Let CUDA matmuls and convolutions use TF32 while sampling (default True, as
            LightningDiT's sampling script does); weights and latents stay float32. No effect on the CPU.
        num_workers (`int`): Dataloader workers of the reference pass.
    """

    pipeline: str = ""
    num_samples: int = 50_000
    batch_size: int = 64
    samples_per_chunk: int = 1_000
    num_inference_steps: int = PROTOCOL_NUM_INFERENCE_STEPS
    sampler: str = "euler"
    shift: float | None = None
    guidance_scale: float = 1.0
    cfg_sweep: list[float] | None = None
    guidance_interval: tuple[float, float] = (0.0, 1.0)
    guidance_channels: int | None = None
    seed: int = 0
    label_sampling: str = "balanced"
    num_classes: int | None = None
    reference: str = "ILSVRC/imagenet-1k"
    reference_npz_statistics: str = "auto"
    reference_split: str = "train"
    reference_num_samples: int | None = None
    reference_resolution: int | None = None
    precision_recall_reference_samples: int = PROTOCOL_PRECISION_RECALL_REFERENCE_SAMPLES
    precision_recall_k: int = 3
    feature_extractor: str = "clean-fid-inception"
    inception_mode: str = "clean"
    fid_statistics_cache: str | None = None
    save_images: int = 0
    save_npz: str | None = None
    allow_tf32: bool = True
    num_workers: int = 4

    def __post_init__(self):
        for name in ("num_samples", "batch_size", "samples_per_chunk", "num_inference_steps", "precision_recall_k"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        for name in ("save_images", "precision_recall_reference_samples", "num_workers"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}.")
        if self.reference_num_samples is not None and self.reference_num_samples <= 0:
            raise ValueError(
                f"reference_num_samples must be positive or None (all images), got {self.reference_num_samples}."
            )
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {self.sampler!r}.")
        self.label_sampling = check_label_sampling(self.label_sampling)
        check_inception_mode(self.inception_mode)
        if self.reference_npz_statistics not in REFERENCE_NPZ_STATISTICS:
            raise ValueError(
                f"reference_npz_statistics must be one of {REFERENCE_NPZ_STATISTICS}, got "
                f"{self.reference_npz_statistics!r}: 'auto' uses an npz's mu/sigma when present (ADM's rule), "
                "'arr_0' computes them from its images."
            )
        if self.guidance_channels is not None and (
            not isinstance(self.guidance_channels, int)
            or isinstance(self.guidance_channels, bool)
            or self.guidance_channels <= 0
        ):
            raise ValueError(
                f"guidance_channels must be a positive integer (leading latent channels to guide) or None (the "
                f"pipeline's default), got {self.guidance_channels!r}."
            )
        if self.save_npz is not None:
            if not str(self.save_npz).endswith(".npz"):
                raise ValueError(
                    f"save_npz={self.save_npz!r} must name an .npz file (ADM's evaluator reads arr_0 from one), e.g. "
                    "eval/dit_xl/samples.npz."
                )
            self.save_npz = str(self.save_npz)
        if self.shift is not None and not (isinstance(self.shift, (int, float)) and self.shift > 0):
            raise ValueError(f"shift must be a positive number (1.0 means no shift) or None, got {self.shift!r}.")
        self.guidance_interval = check_guidance_interval(self.guidance_interval)
        self.cfg_sweep = check_guidance_scales(self.cfg_sweep, self.guidance_scale, minimum=0.0, example="1.0,1.5,2.0")
        if self.num_classes is not None and self.num_classes <= 0:
            raise ValueError(f"num_classes must be positive or None (the transformer's), got {self.num_classes}.")

    @property
    def guidance_scales(self) -> list[float]:
        return list(self.cfg_sweep) if self.cfg_sweep is not None else [float(self.guidance_scale)]


def check_label_sampling(label_sampling: str) -> str:
    """The canonical name of `label_sampling` (`"uniform"` -> `"random"`), or a ValueError naming the choices."""
    label_sampling = _LABEL_SAMPLING_ALIASES.get(label_sampling, label_sampling)
    if label_sampling not in LABEL_SAMPLINGS:
        raise ValueError(
            f"label_sampling must be one of {LABEL_SAMPLINGS}, got {label_sampling!r}: 'balanced' gives every class "
            "num_samples / num_classes samples, 'random' draws independent uniform labels as ADM / LightningDiT do."
        )
    return label_sampling


def check_guidance_interval(interval: Sequence[float]) -> tuple[float, float]:
    """`(low, high)` as floats, or a ValueError saying what a valid interval is."""
    if isinstance(interval, (str, bytes)) or not isinstance(interval, Sequence) or len(interval) != 2:
        raise ValueError(f"guidance_interval must be a pair (low, high), got {interval!r}.")
    low, high = (float(value) for value in interval)
    if not 0.0 <= low <= high <= 1.0:
        raise ValueError(
            f"guidance_interval=({low}, {high}) must satisfy 0 <= low <= high <= 1: noise levels sigma, 1 = pure "
            f"noise; guidance is on where low <= sigma <= high. Did you mean ({min(low, high)}, {max(low, high)})?"
        )
    return low, high


# ---------------------------------------------------------------------------------------------------------------------
# The sample plan
# ---------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SamplePlan:
    """Class label and noise seed of every sample: what is generated, independent of how it is distributed."""

    seed: int
    num_samples: int
    label_sampling: str
    num_classes: int
    labels: np.ndarray  # int64 (num_samples,)
    noise_seeds: np.ndarray  # int64 (num_samples,), each in [0, 2**63)

    def num_chunks(self, samples_per_chunk: int) -> int:
        return -(-self.num_samples // samples_per_chunk)

    def chunk_indices(self, chunk: int, samples_per_chunk: int) -> np.ndarray:
        if not 0 <= chunk < self.num_chunks(samples_per_chunk):
            raise IndexError(f"Chunk {chunk} is outside the plan's {self.num_chunks(samples_per_chunk)} chunks.")
        return np.arange(chunk * samples_per_chunk, min((chunk + 1) * samples_per_chunk, self.num_samples))

    def describe(self) -> dict[str, Any]:
        counts = np.bincount(self.labels, minlength=self.num_classes)
        return {
            "seed": self.seed,
            "num_samples": self.num_samples,
            "label_sampling": self.label_sampling,
            "num_classes": self.num_classes,
            "samples_per_class_min": int(counts.min()),
            "samples_per_class_max": int(counts.max()),
            "labels": _LABEL_RULES[self.label_sampling],
            "noise": "sample i starts from torch.randn on the CPU with a generator seeded by noise_seeds[i] = "
            "splitmix64(seed, i)",
        }


_LABEL_RULES = {
    "balanced": "every class num_samples / num_classes times, in an order shuffled by numpy's default_rng(seed)",
    "random": "labels[i] = splitmix64(seed, i, label stream) mod num_classes: independent uniform labels, a function "
    "of (seed, i) alone",
}


def make_sample_plan(seed: int, num_samples: int, label_sampling: str, num_classes: int) -> SamplePlan:
    """The labels and noise seeds of `num_samples` samples: a pure function of the arguments.

    `balanced`: every class exactly `num_samples / num_classes` times, in an order shuffled with `seed` (so any
    contiguous part of the plan, a chunk or an Inception-Score split, mixes the classes). `num_samples` must be a
    multiple of `num_classes`. `random`: independent uniform labels, sample `i`'s from [`random_labels`]`(seed, i)`.
    Noise seeds are `splitmix64(seed, index)`: sample `i` gets the same noise in every plan with this seed.
    Every process computes the whole plan, so no label or noise depends on the process or chunk a sample lands in.
    """
    label_sampling = check_label_sampling(label_sampling)
    if num_classes <= 0:
        raise ValueError(f"num_classes must be positive, got {num_classes}.")
    if num_samples <= 0:
        raise ValueError(f"num_samples must be positive, got {num_samples}.")
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(seed) >> 32 & 0xFFFFFFFF, 0x6C61626C])  # "labl"
    if label_sampling == "balanced":
        if num_samples % num_classes:
            lower = num_samples - num_samples % num_classes
            raise ValueError(
                f"Balanced label sampling needs num_samples to be a multiple of num_classes, but {num_samples} "
                f"samples over {num_classes} classes leaves {num_samples % num_classes} over. Use "
                f"{lower or num_classes} or {lower + num_classes} samples, or label_sampling='random'."
            )
        labels = rng.permutation(np.repeat(np.arange(num_classes, dtype=np.int64), num_samples // num_classes))
    else:
        labels = random_labels(seed, np.arange(num_samples), num_classes)
    return SamplePlan(
        int(seed),
        int(num_samples),
        label_sampling,
        int(num_classes),
        labels,
        _splitmix64_seeds(int(seed), num_samples),
    )


def random_labels(seed: int, indices: Sequence[int] | np.ndarray, num_classes: int) -> np.ndarray:
    """Class labels of samples `indices` under `label_sampling="random"`: int64 in `[0, num_classes)`.

    Label `i` is `splitmix64` of `(seed, i)` on a stream of its own (independent of the noise seeds) modulo
    `num_classes`: a pure function of `(seed, i)`, so any process, chunk or prefix of the plan gets the same labels.
    The modulo bias of a 63-bit hash is below `num_classes / 2**63` (1e-16 for 1,000 classes).
    """
    if num_classes <= 0:
        raise ValueError(f"num_classes must be positive, got {num_classes}.")
    hashes = _splitmix64_seeds(int(seed), np.asarray(indices, dtype=np.int64), stream=_LABEL_STREAM)
    return hashes % np.int64(num_classes)


_LABEL_STREAM = 0x6C61626C  # "labl": the labels' splitmix64 stream; stream 0 is the noise seeds'


def _splitmix64_seeds(seed: int, indices: int | np.ndarray, stream: int = 0) -> np.ndarray:
    """`splitmix64((seed * 2**32 + index) ^ (stream * golden)) >> 1` for each index (`indices` an int means
    `range(indices)`): well-mixed, prefix-stable 63-bit seeds; stream 0 is the noise seeds of every earlier plan."""
    index = np.arange(indices, dtype=np.uint64) if np.isscalar(indices) else np.asarray(indices).astype(np.uint64)
    with np.errstate(over="ignore"):
        state = np.uint64(seed & 0xFFFFFFFF) * np.uint64(2**32) + index
        state = state ^ (np.uint64(stream) * np.uint64(0xD1B54A32D192ED03))
        state = state + np.uint64(0x9E3779B97F4A7C15)
        state = (state ^ (state >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        state = (state ^ (state >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        state = state ^ (state >> np.uint64(31))
    return (state >> np.uint64(1)).astype(np.int64)


def chunk_path(scale_dir: str | os.PathLike, chunk: int) -> Path:
    return Path(scale_dir) / _CHUNK_FORMAT.format(chunk)


# ---------------------------------------------------------------------------------------------------------------------
# The pipeline
# ---------------------------------------------------------------------------------------------------------------------


def load_aligntok_dit_pipeline(path: str | os.PathLike):
    """A saved `AlignTokDiTPipeline`, or a ValueError naming what `path` holds instead."""
    from ..pipelines import AlignTokDiTPipeline

    local = Path(path).expanduser()
    if local.exists():
        index = local / "model_index.json"
        if not index.is_file():
            raise ValueError(
                f"{local} is not a saved diffusers pipeline (it has no model_index.json). Pass the directory written "
                "by AlignTokDiTPipeline.save_pretrained (train_dit.py writes <output_dir>/pipeline), not a model "
                "or checkpoint directory."
            )
        class_name = json.loads(index.read_text()).get("_class_name")
        if class_name != AlignTokDiTPipeline.__name__:
            raise ValueError(
                f"{local} holds a {class_name} (model_index.json), not an AlignTokDiTPipeline; generation evaluation "
                "samples the class-conditional LightningDiT pipeline of this package."
            )
    pipeline = AlignTokDiTPipeline.from_pretrained(str(local) if local.exists() else str(path))
    if not isinstance(pipeline, AlignTokDiTPipeline):
        raise ValueError(f"{path} loaded as a {type(pipeline).__name__}, not an AlignTokDiTPipeline.")
    return pipeline


def check_num_classes(pipeline, expected: int | None = None) -> int:
    """The transformer's `num_classes`, checked to be usable and, if given, equal to `expected`."""
    num_classes = getattr(pipeline.transformer.config, "num_classes", None)
    if not isinstance(num_classes, int) or num_classes <= 0:
        raise ValueError(
            f"The pipeline's transformer has num_classes={num_classes!r}; class-conditional evaluation needs a "
            "positive number of classes to sample labels from."
        )
    if expected is not None and expected != num_classes:
        raise ValueError(
            f"num_classes={expected} was requested but the pipeline's transformer has num_classes={num_classes} "
            f"(class ids 0..{num_classes - 1}); evaluate the right pipeline or drop --num_classes."
        )
    return num_classes


def build_sampling_scheduler(scheduler, sampler: str, shift: float | None):
    """The pipeline scheduler's config with the Euler or Heun flow-matching scheduler and, if given, a fixed shift."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FlowMatchHeunDiscreteScheduler

    classes = {"euler": FlowMatchEulerDiscreteScheduler, "heun": FlowMatchHeunDiscreteScheduler}
    if sampler not in classes:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}.")
    overrides = {} if shift is None else {"shift": float(shift), "use_dynamic_shifting": False}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Heun's config lacks some of Euler's keys; diffusers warns and ignores them
        return classes[sampler].from_config(dict(scheduler.config), **overrides)


def check_guidance_channels(pipeline, guidance_channels: int | None) -> int | str:
    """The guidance channels the pipeline will use: `guidance_channels` if given (checked to be accepted by the
    pipeline's `__call__` and at most the transformer's latent channels), else the call's own default, or `"all"`
    for a pipeline without the argument (this package's pipeline then guides every latent channel)."""
    parameters = inspect.signature(pipeline.__call__).parameters
    # Only a named parameter counts: a **kwargs catch-all might swallow the value without using it.
    accepts = "guidance_channels" in parameters
    if guidance_channels is None:
        default = parameters["guidance_channels"].default if "guidance_channels" in parameters else None
        return "all" if default in (None, inspect.Parameter.empty) else to_jsonable(default)
    if not accepts:
        raise ValueError(
            f"guidance_channels={guidance_channels} was given, but {type(pipeline).__name__}.__call__ takes no "
            "guidance_channels argument (it guides all latent channels); drop --guidance_channels, or update "
            "diffusers_aligntok to a version whose pipeline has it."
        )
    in_channels = getattr(pipeline.transformer.config, "in_channels", None)
    if isinstance(in_channels, int) and guidance_channels > in_channels:
        raise ValueError(
            f"guidance_channels={guidance_channels} exceeds the transformer's {in_channels} latent channels; give at "
            f"most {in_channels} (or None for the pipeline's default)."
        )
    return guidance_channels


def describe_pipeline(pipeline, path: str) -> dict[str, Any]:
    """The pipeline's path, component classes, the transformer and VAE configs that define a run, and fingerprints."""

    transformer, vae, scheduler = pipeline.transformer, pipeline.vae, pipeline.scheduler
    transformer_keys = (
        "sample_size",
        "patch_size",
        "in_channels",
        "hidden_size",
        "num_layers",
        "num_attention_heads",
        "num_classes",
        "qk_norm",
        "class_dropout_prob",
    )
    vae_keys = (
        "latent_channels",
        "block_out_channels",
        "scaling_factor",
        "shift_factor",
        "encoder_type",
        "force_upcast",
    )
    return {
        "path": str(path),
        "transformer": {
            "class": type(transformer).__name__,
            "config": {
                key: to_jsonable(transformer.config.get(key)) for key in transformer_keys if key in transformer.config
            },
            "num_parameters": sum(parameter.numel() for parameter in transformer.parameters()),
            "dtype": str(transformer.dtype).replace("torch.", ""),
            "fingerprint": tokenizer_fingerprint(transformer),
        },
        "vae": {
            "class": type(vae).__name__,
            "config": {key: to_jsonable(vae.config.get(key)) for key in vae_keys if key in vae.config},
            "latent_statistics_set": vae.config.get("latents_mean") is not None,
            "vae_scale_factor": pipeline.vae_scale_factor,
            "fingerprint": tokenizer_fingerprint(vae),
        },
        "scheduler": {"class": type(scheduler).__name__, "config": to_jsonable(dict(scheduler.config))},
    }


def generated_image_size(pipeline) -> tuple[int, int]:
    side = pipeline.transformer.config.sample_size * pipeline.vae_scale_factor
    return side, side


# ---------------------------------------------------------------------------------------------------------------------
# Feature networks: FID features and classifier logits from one resize
# ---------------------------------------------------------------------------------------------------------------------


class GenerationFeatureExtractor:
    """Images in `[-1, 1]` -> `(FID features, classifier logits)`, both from one clean-fid resize.

    Args:
        fid (`FIDFeatureExtractor`): The FID features (its resize, network and name are used).
        logits_network (`Callable`, *optional*): Maps the resized float `(B, 3, 299, 299)` images in `[0, 255]` to
            logits `(B, C)` for the Inception Score. `None`: the FID features stand in for logits and the score is
            labelled "not IS".
        logits_name (`str`): Recorded with the Inception Score.
    """

    def __init__(
        self, fid: FIDFeatureExtractor, logits_network: Callable | None = None, logits_name: str | None = None
    ):
        self.fid = fid
        self.logits_network = logits_network
        self.logits_name = logits_name or f"{fid.name} features used as logits"

    @property
    def name(self) -> str:
        return self.fid.name

    @property
    def is_real_metric(self) -> bool:
        return self.fid.is_real_metric

    @property
    def inception_score_is_real(self) -> bool:
        return self.logits_network is not None and self.fid.is_real_metric

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray | None]:
        batch = self.fid.resize_for_network(images).to(self.fid.device)
        features = self.fid.network(batch).detach().double().cpu().numpy().reshape(len(batch), -1)
        logits = None
        if self.logits_network is not None:
            logits = self.logits_network(batch).detach().double().cpu().numpy().reshape(len(batch), -1)
        return features, logits

    def describe(self) -> dict[str, Any]:
        return {
            **self.fid.describe(),
            "inception_score": {
                "logits": self.logits_name,
                "is_real_metric": self.inception_score_is_real,
            },
        }


class CleanFIDInceptionLogits:
    """Log-probabilities of the 1008-way output layer of clean-fid's torchscript Inception, without its bias.

    The torchscript network (`InceptionV3W.base`) returns softmax probabilities; `no_output_bias=True` drops the
    output layer's bias as the original TF implementation (and ADM's and StyleGAN's evaluators) do for the Inception
    Score. Its log is the logits up to a per-row constant, which the softmax inside `inception_score` removes. The
    base network resizes its input itself: in mode "clean" the input is already 299x299 (a no-op), in mode
    "legacy_tensorflow" it is the image at its own size, resized exactly as for the FID features.
    """

    def __init__(self, inception):
        self.inception = inception

    def __call__(self, images_299: torch.Tensor) -> torch.Tensor:
        probabilities = self.inception.base(images_299, no_output_bias=True).double()
        if probabilities.shape[1] != 1008 or not torch.allclose(
            probabilities.sum(dim=1), torch.ones_like(probabilities[:, 0]), atol=1e-3
        ):
            raise RuntimeError(
                f"clean-fid's Inception returned {tuple(probabilities.shape)} outputs that are not 1008-way "
                "probabilities; this clean-fid / torchscript version differs from the one this code expects."
            )
        return probabilities.clamp_min(1e-30).log()


def build_generation_feature_extractor(
    name: str = "clean-fid-inception", device: str | torch.device = "cpu", inception_mode: str = "clean"
) -> GenerationFeatureExtractor:
    """`"clean-fid-inception"`: clean-fid's Inception for the FID features (2048-d pool) and for the IS logits
    (downloads `inception-2015-12-05.pt` to /tmp on first use). `"random-inception-standin"`: the offline stand-in,
    whose features also stand in for the logits; none of its numbers is FID or IS.

    `inception_mode` is clean-fid's preprocessing (`"clean"` or `"legacy_tensorflow"`, see `fid.py`); the network is
    built as `cleanfid.features.build_feature_extractor(mode=inception_mode)` builds it (`resize_inside` only in
    `"legacy_tensorflow"`)."""
    device = torch.device(device)
    check_inception_mode(inception_mode)
    if name == "clean-fid-inception":
        try:
            from cleanfid.inception_torchscript import InceptionV3W

            inception = InceptionV3W("/tmp", download=True, resize_inside=inception_mode == "legacy_tensorflow")
            inception = inception.to(device).eval()
        except OSError as error:  # urllib errors are OSErrors
            raise RuntimeError(
                "Could not load clean-fid's Inception network (it downloads inception-2015-12-05.pt to /tmp on first "
                "use; no network?). Copy that file to /tmp on this machine, or use "
                "feature_extractor='random-inception-standin' for offline smoke runs (its numbers are not FID)."
            ) from error
        fid = FIDFeatureExtractor(
            inception, name=name, is_real_metric=True, device=device, inception_mode=inception_mode
        )
        return GenerationFeatureExtractor(
            fid,
            CleanFIDInceptionLogits(inception),
            "clean-fid Inception (inception-2015-12-05), 1008-way output layer without bias",
        )
    if name not in FEATURE_EXTRACTORS:
        raise ValueError(f"Unknown feature extractor {name!r}; choose one of {FEATURE_EXTRACTORS}.")
    return GenerationFeatureExtractor(build_fid_feature_extractor(name, device=device, inception_mode=inception_mode))


def as_generation_feature_extractor(extractor) -> GenerationFeatureExtractor:
    """Accepts a `GenerationFeatureExtractor` or a plain `FIDFeatureExtractor` (its features then stand in for logits)."""
    if isinstance(extractor, GenerationFeatureExtractor):
        return extractor
    if isinstance(extractor, FIDFeatureExtractor):
        return GenerationFeatureExtractor(extractor)
    raise TypeError(f"Expected a GenerationFeatureExtractor or FIDFeatureExtractor, got {type(extractor).__name__}.")


# ---------------------------------------------------------------------------------------------------------------------
# Reference: statistics (mu, sigma) and, for precision / recall, real feature vectors
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class Reference:
    mean: np.ndarray
    covariance: np.ndarray
    precision_recall_features: np.ndarray | None
    description: dict[str, Any] = field(default_factory=dict)


def load_reference(
    config: GenerationEvaluationConfig,
    extractor: GenerationFeatureExtractor,
    accelerator,
    image_size: tuple[int, int],
    notes: list[str],
    warnings_list: list[str],
    num_classes: int | None = None,
) -> Reference:
    """The reference of `config.reference`: an `.npz` file in ADM's reference-batch format, else a data source
    (statistics cached on disk)."""
    if config.reference.endswith(".npz"):
        return load_reference_npz(
            config.reference,
            extractor,
            config.precision_recall_reference_samples,
            config.batch_size,
            notes,
            warnings_list,
            statistics=config.reference_npz_statistics,
            image_size=image_size,
        )
    return reference_from_data(config, extractor, accelerator, image_size, notes, warnings_list, num_classes)


def load_reference_npz(
    path: str | os.PathLike,
    extractor: GenerationFeatureExtractor,
    precision_recall_samples: int,
    batch_size: int,
    notes: list[str],
    warnings_list: list[str],
    statistics: str = "auto",
    image_size: tuple[int, int] | None = None,
) -> Reference:
    """Reference statistics (and precision / recall features) from an `.npz` in ADM's reference-batch format.

    The file holds `mu` `(D,)` and `sigma` `(D, D)`, the statistics of the reference features (ADM's
    `VIRTUAL_imagenet256_labeled.npz`: 2048-d TensorFlow-Inception `pool_3` statistics over the whole ImageNet training
    set; clean-fid's and this package's statistics files use the same keys), and / or `arr_0`, uint8 images
    `(N, H, W, 3)` (ADM's: 10,000 training images). With `statistics="auto"` the stored `mu` / `sigma` are used when
    present, as ADM's evaluator does, else the statistics of every `arr_0` image through `extractor` (in its
    inception mode); `"mu_sigma"` and `"arr_0"` force one source. Precision / recall use the features of
    `precision_recall_samples` evenly spaced `arr_0` images (skipped with a note without images). `arr_0` is streamed
    from the zip member a batch at a time, and one pass serves both.
    """
    path = Path(path).expanduser()
    if statistics not in REFERENCE_NPZ_STATISTICS:
        raise ValueError(f"statistics must be one of {REFERENCE_NPZ_STATISTICS}, got {statistics!r}.")
    if not path.is_file():
        raise FileNotFoundError(
            f"Reference file {path} does not exist. For ADM-comparable ImageNet 256 numbers it is ADM's reference "
            f"batch {ADM_REFERENCE_BATCH_IMAGENET_256} (OpenAI guided-diffusion's evaluations); or pass a data "
            "source (image folder, hub id) as the reference."
        )
    try:
        with np.load(path) as stored:
            keys = list(stored.keys())
            mean = stored["mu"].astype(np.float64) if "mu" in keys else None
            covariance = stored["sigma"].astype(np.float64) if "sigma" in keys else None
            stored_key = str(stored["key"]) if "key" in keys else None
            stored_count = int(stored["count"]) if "count" in keys else None
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise ValueError(f"{path} is not a readable .npz file ({error}); download or write it again.") from error
    has_images = "arr_0" in keys
    if ("mu" in keys) != ("sigma" in keys):
        raise ValueError(
            f"{path} has {'mu' if 'mu' in keys else 'sigma'} but not {'sigma' if 'mu' in keys else 'mu'} (arrays "
            f"{keys}); reference statistics need both the mean 'mu' (D,) and the covariance 'sigma' (D, D)."
        )
    has_statistics = mean is not None
    if not has_statistics and not has_images:
        raise ValueError(
            f"{path} has the arrays {keys}, but a reference .npz needs 'mu' (mean, (D,)) and 'sigma' (covariance, "
            "(D, D)) of the reference features, or 'arr_0' (uint8 reference images (N, H, W, 3)) to compute them "
            f"from, as ADM's {ADM_REFERENCE_BATCH_IMAGENET_256} holds both. Write one with np.savez(path, mu=..., "
            "sigma=...) or np.savez(path, arr_0=images), or pass a data source (image folder, hub id) as the reference."
        )
    if statistics == "mu_sigma" and not has_statistics:
        raise ValueError(
            f"reference_npz_statistics='mu_sigma' but {path} has no mu/sigma (arrays {keys}); use 'auto' or 'arr_0' "
            "to compute the statistics from its arr_0 images."
        )
    if statistics == "arr_0" and not has_images:
        raise ValueError(
            f"reference_npz_statistics='arr_0' but {path} has no arr_0 images (arrays {keys}); use 'auto' or "
            "'mu_sigma' to use its stored statistics."
        )
    source = "mu_sigma" if statistics == "mu_sigma" or (statistics == "auto" and has_statistics) else "arr_0"
    feature_dim = feature_dimension(extractor.fid)
    mode = extractor.fid.inception_mode
    description: dict[str, Any] = {
        "kind": "npz",
        "format": "ADM reference batch (mu/sigma and/or arr_0 images)",
        "path": str(path),
        "file_name": path.name,
        "file_bytes": path.stat().st_size,
        "arrays": keys,
        "statistics_requested": statistics,
        "statistics_source": source,
        "statistics_num_images": None,
        "arr_0_shape": None,
        "precision_recall": None,
    }

    if source == "mu_sigma":
        _check_npz_statistics(path, mean, covariance, feature_dim, extractor.name)
        if stored_key is not None:  # written by save_reference_statistics: its key says which network and mode
            key = json.loads(stored_key)
            stored_mode = key.get("inception_mode", "clean")  # keys from before the mode existed are "clean" ones
            if key.get("feature_extractor") not in (None, extractor.name) or stored_mode != mode:
                raise ValueError(
                    f"{path} holds statistics of {key.get('feature_extractor')!r} features in inception_mode "
                    f"{stored_mode!r}, but the samples are measured with {extractor.name!r} in {mode!r}; evaluate with "
                    "the same feature extractor and inception_mode, or pass the data source the file was made from."
                )
            description.update(written_by="diffusers_aligntok", stored_key=key, statistics_num_images=stored_count)
        elif extractor.is_real_metric and mode == "clean":
            warnings_list.append(
                f"{path.name}: its mu/sigma were not written by this package. If they come from ADM's evaluator "
                f"({ADM_REFERENCE_BATCH_IMAGENET_256}), they are statistics of TensorFlow-Inception features of images "
                "the network resized itself, while the samples are measured with clean-fid's 'clean' resize: this "
                "gFID mixes two preprocessings and is comparable with neither ADM's numbers nor ours. Use "
                "inception_mode='legacy_tensorflow' (ADM's preprocessing) or reference_npz_statistics='arr_0' "
                "(statistics of its images through this extractor)."
            )
        elif extractor.is_real_metric:
            notes.append(
                f"{path.name}: its stored mu/sigma are used as ADM's evaluator uses them, against samples measured in "
                "clean-fid's legacy_tensorflow mode (designed to reproduce ADM's TensorFlow preprocessing; the "
                "agreement has not been measured here)."
            )

    images_needed = source == "arr_0" or (precision_recall_samples > 0 and has_images)
    if has_images:
        shape = _npz_image_array_shape(path)
        description["arr_0_shape"] = list(shape)
        if images_needed and image_size is not None and tuple(shape[1:3]) != tuple(image_size):
            warnings_list.append(
                f"{path.name}: its arr_0 images are {shape[1]}x{shape[2]} but the samples are {image_size[0]}x"
                f"{image_size[1]}; a reference batch should match the sample resolution "
                f"({ADM_REFERENCE_BATCH_IMAGENET_256} for 256x256)."
            )
        if source == "arr_0":
            if shape[0] < 2:
                raise ValueError(
                    f"{path}: arr_0 holds {shape[0]} image(s); reference statistics need at least 2 (ADM's reference "
                    "batch holds 10,000)."
                )
            if shape[0] <= feature_dim:
                warnings_list.append(
                    f"{path.name}: statistics of {shape[0]} arr_0 images of {feature_dim}-d features: the covariance "
                    "is rank-deficient and the FID against it biased; ADM's reference batch holds 10,000 images."
                )
            if has_statistics:
                notes.append(
                    f"{path.name}: its stored mu/sigma are ignored (reference_npz_statistics='arr_0'); ADM's stored "
                    f"statistics cover the whole training set, these only its {shape[0]} arr_0 images."
                )

    if precision_recall_samples == 0:
        notes.append("Precision / recall skipped: precision_recall_reference_samples=0.")
    elif not has_images:
        notes.append(
            f"Precision / recall skipped: {path.name} holds only mu/sigma; it needs real feature vectors. Pass an npz "
            "with reference images in 'arr_0' (ADM's format) or a data source as --reference."
        )
    features = None
    if images_needed:
        accumulated = FeatureStatistics(feature_dim) if source == "arr_0" else None
        features, count, total = _npz_image_features(
            path, extractor, precision_recall_samples, batch_size, accumulated
        )
        if accumulated is not None:
            mean, covariance = accumulated.mean, accumulated.covariance
            description["statistics_num_images"] = accumulated.count
        if features is not None:
            description["precision_recall"] = {
                "source": "arr_0",
                "num_samples": count,
                "of": total,
                "selection": "evenly spaced",
            }
    # Identifies the statistics actually used (a file's name says little: ADM's batch is often renamed or re-saved).
    digest = hashlib.sha256(np.ascontiguousarray(mean, dtype=np.float64).tobytes())
    digest.update(np.ascontiguousarray(covariance, dtype=np.float64).tobytes())
    description["statistics_sha256"] = digest.hexdigest()[:16]
    return Reference(mean, covariance, features, description)


def _check_npz_statistics(
    path: Path, mean: np.ndarray, covariance: np.ndarray, feature_dim: int, extractor_name: str
) -> None:
    if mean.shape != (feature_dim,) or covariance.shape != (feature_dim, feature_dim):
        raise ValueError(
            f"{path} holds {mean.shape[0] if mean.ndim == 1 else mean.shape}-d statistics (mu {mean.shape}, sigma "
            f"{covariance.shape}), but the feature extractor {extractor_name!r} gives {feature_dim}-d features; the "
            "reference must come from the same network (ADM's and clean-fid's Inception statistics are 2048-d, the "
            "offline stand-in's 32-d). Use feature_extractor='clean-fid-inception' with an ADM reference batch, or "
            "compute the reference from images: reference_npz_statistics='arr_0' for an npz with arr_0, or a data "
            "source."
        )
    if not (np.isfinite(mean).all() and np.isfinite(covariance).all()):
        raise ValueError(f"{path} holds NaN or inf in mu/sigma; the file is damaged, download or compute it again.")


def _npz_image_array_shape(path: Path) -> tuple[int, ...]:
    """The shape of `arr_0`, read from its npy header (ADM's streaming reader's way), checked to be uint8 NHWC RGB."""
    with zipfile.ZipFile(path) as archive, archive.open("arr_0.npy") as member:
        shape, fortran_order, dtype = _read_npy_header(member)
    if len(shape) != 4 or shape[-1] != 3 or dtype != np.uint8 or fortran_order:
        raise ValueError(
            f"{path}: arr_0 must hold uint8 RGB images (N, H, W, 3) in C order, as ADM's reference batches do, got "
            f"{dtype} {tuple(shape)}{' (Fortran order)' if fortran_order else ''}. Convert it with "
            "np.savez(path, arr_0=np.ascontiguousarray(images_nhwc_0_255.astype(np.uint8)))."
        )
    return tuple(int(side) for side in shape)


def _read_npy_header(member) -> tuple[tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(member)
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    return read_header(member)


def _npz_image_features(
    path: Path, extractor, num_samples: int, batch_size: int, statistics: FeatureStatistics | None = None
) -> tuple[np.ndarray | None, int, int]:
    """Features of `num_samples` evenly spaced images of `arr_0` (None if 0), read a batch at a time from the zip
    member; with `statistics`, every image's features are also accumulated into it (one pass for both)."""
    shape = _npz_image_array_shape(path)
    total = shape[0]
    count = min(num_samples, total)
    wanted = {index * total // count for index in range(count)} if count else set()
    image_bytes = int(np.prod(shape[1:]))

    def to_images(pixels: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(pixels)).permute(0, 3, 1, 2).float() / 127.5 - 1

    features, pending, position = [], [], 0
    with zipfile.ZipFile(path) as archive, archive.open("arr_0.npy") as member:
        _read_npy_header(member)
        while position < total:
            rows = min(batch_size, total - position)
            block = np.frombuffer(_read_exactly(member, rows * image_bytes, path), dtype=np.uint8)
            block = block.reshape(rows, *shape[1:])
            keep = [row for row in range(rows) if position + row in wanted]
            position += rows
            if statistics is not None:
                block_features = extractor.fid(to_images(block))
                statistics.update(block_features)
                if keep:
                    features.append(block_features[keep].astype(np.float32))
                continue
            # Only the precision / recall rows: collect them across blocks so the network sees full batches.
            pending.extend(block[row] for row in keep)
            if len(pending) >= batch_size or (position >= total and pending):
                features.append(extractor.fid(to_images(np.stack(pending))).astype(np.float32))
                pending = []
    return (np.concatenate(features) if features else None), count, total


def _read_exactly(stream, size: int, path: Path | None = None) -> bytes:
    data = bytearray()
    while len(data) < size:
        piece = stream.read(size - len(data))
        if not piece:
            raise ValueError(
                f"{path or 'The npz'}: arr_0 ends early; the file is truncated, download or write it again."
            )
        data.extend(piece)
    return bytes(data)


def reference_from_data(
    config: GenerationEvaluationConfig,
    extractor: GenerationFeatureExtractor,
    accelerator,
    image_size: tuple[int, int],
    notes: list[str],
    warnings_list: list[str],
    num_classes: int | None = None,
) -> Reference:
    """Reference statistics of a data source (centre crops), from the cache shared with the tokenizer evaluation or
    computed here (sharded over processes), plus the features of evenly spaced images for precision / recall."""
    from accelerate.utils import gather_object

    if config.reference.startswith("builtin:") and config.reference_num_samples is None:
        raise ValueError(f"{config.reference} is generated: give reference_num_samples (how many images).")
    resolution = config.reference_resolution or image_size[0]
    height, width = (resolution, resolution)
    if (height, width) != tuple(image_size):
        warnings_list.append(
            f"The reference images are {height}x{width} but the samples are {image_size[0]}x{image_size[1]}."
        )
    with accelerator.main_process_first():
        dataset = build_evaluation_dataset(
            config.reference,
            config.reference_split,
            (height, width),
            config.reference_num_samples or _ALL_IMAGES,
            seed=_REFERENCE_SEED,
        )
    total = len(dataset)
    description_text = getattr(dataset, "source_description", config.reference)
    data_classes = getattr(dataset, "num_classes", None)
    if num_classes is not None and data_classes is not None and data_classes != num_classes:
        warnings_list.append(
            f"The reference data has {data_classes} classes but the transformer has num_classes={num_classes}."
        )
    if config.reference_num_samples is not None and total < config.reference_num_samples:
        warnings_list.append(
            f"{config.reference} has only {total} images; the reference uses {total}, not "
            f"{config.reference_num_samples}."
        )
    # The tokenizer evaluation's cache key: both evaluations share statistics of the same images.
    key = reference_statistics_key(
        config.reference,
        config.reference_split,
        (height, width),
        total,
        extractor.name,
        data_description=description_text,
        seed=_REFERENCE_SEED,
        inception_mode=extractor.fid.inception_mode,
    )
    cache_dir = (
        Path(config.fid_statistics_cache) if config.fid_statistics_cache else default_reference_statistics_dir()
    )
    statistics_path = reference_statistics_path(cache_dir, key)
    statistics = load_reference_statistics(statistics_path, key)
    precision_recall_count = min(config.precision_recall_reference_samples, total)
    features_key = {**key, "precision_recall_samples": precision_recall_count, "selection": "evenly spaced"}
    features_path = statistics_path.with_name(f"{statistics_path.stem}_precision-recall-{precision_recall_count}.npz")
    features = _load_cached_features(features_path, features_key) if precision_recall_count else None
    cached = statistics is not None and (features is not None or not precision_recall_count)

    if not cached:
        positions = [index * total // precision_recall_count for index in range(precision_recall_count)]
        # Statistics missing: one pass over every image, keeping the precision / recall rows on the way. Only the
        # features missing: a pass over those rows alone.
        source = dataset if statistics is None else EvenlySpacedSubset(dataset, precision_recall_count)
        wanted = set(positions) if statistics is None else None
        batches = shard_batches(accelerator, len(source), config.batch_size)
        partial = FeatureStatistics(feature_dimension(extractor.fid)) if statistics is None else None
        kept_indices, kept_features = [], []
        progress = tqdm(total=len(batches), desc="reference features", disable=not accelerator.is_local_main_process)
        for _, batch in iterate_batches(source, batches, config.batch_size, len(source), config.num_workers):
            batch_features = extractor.fid(batch["pixel_values"])
            if partial is not None:
                partial.update(batch_features)
            rows = [row for row, index in enumerate(batch["index"].tolist()) if wanted is None or index in wanted]
            kept_indices.extend(batch["index"][rows].tolist())
            kept_features.append(batch_features[rows].astype(np.float32))
            progress.update(1)
        progress.close()
        gathered = gather_object(
            [
                {
                    "statistics": partial.state_dict() if partial is not None else None,
                    "indices": kept_indices,
                    "features": np.concatenate(kept_features) if kept_features else None,
                }
            ]
        )
        if statistics is None:
            statistics = FeatureStatistics.from_state_dict(gathered[0]["statistics"])
            for part in gathered[1:]:
                statistics.merge(FeatureStatistics.from_state_dict(part["statistics"]))
        if precision_recall_count:
            indices = np.concatenate([np.asarray(part["indices"], dtype=np.int64) for part in gathered])
            stacked = np.concatenate([part["features"] for part in gathered if part["features"] is not None])
            features = stacked[np.argsort(indices, kind="stable")]
        if accelerator.is_main_process:
            save_reference_statistics(statistics_path, statistics, key)
            if precision_recall_count:
                _save_cached_features(features_path, features, features_key)
        accelerator.wait_for_everyone()
    if not precision_recall_count:
        notes.append("Precision / recall skipped: precision_recall_reference_samples=0.")
    description = {
        "kind": "data",
        "source": config.reference,
        "split": config.reference_split,
        "resolution": [height, width],
        "crop": "center",
        "num_samples": total,
        "data_description": description_text,
        "statistics_source": "computed here from the data",
        "inception_mode": extractor.fid.inception_mode,
        "statistics_path": str(statistics_path),
        "cached": cached,
        "precision_recall": {
            "num_samples": precision_recall_count,
            "selection": "evenly spaced",
            "path": str(features_path),
        }
        if precision_recall_count
        else None,
    }
    return Reference(statistics.mean, statistics.covariance, features, description)


def _save_cached_features(path: Path, features: np.ndarray, key: dict[str, Any]) -> None:
    with atomic_path(path) as temporary, open(temporary, "wb") as handle:
        np.savez(handle, features=features, key=json.dumps(key, sort_keys=True, default=str))


def _load_cached_features(path: Path, key: dict[str, Any]) -> np.ndarray | None:
    if not path.is_file():
        return None
    with np.load(path) as stored:
        if json.loads(str(stored["key"])) != json.loads(json.dumps(key, sort_keys=True, default=str)):
            raise ValueError(f"{path} holds reference features for other settings; delete it or use another cache.")
        return stored["features"]


# ---------------------------------------------------------------------------------------------------------------------
# Generating chunks
# ---------------------------------------------------------------------------------------------------------------------


def initial_noise(noise_seeds: Sequence[int], latent_shape: Sequence[int]) -> torch.Tensor:
    """`(len(noise_seeds), *latent_shape)` standard normal noise, each sample from its own seeded CPU generator."""
    return torch.stack(
        [torch.randn(tuple(latent_shape), generator=torch.Generator().manual_seed(int(seed))) for seed in noise_seeds]
    )


def generate_chunk(
    pipeline,
    plan: SamplePlan,
    chunk: int,
    samples_per_chunk: int,
    batch_size: int,
    guidance_scale: float,
    guidance_interval: tuple[float, float],
    num_inference_steps: int,
    extractor: GenerationFeatureExtractor,
    save_images_below: int = 0,
    image_dir: Path | None = None,
    guidance_channels: int | None = None,
    keep_images: bool = False,
) -> dict[str, np.ndarray]:
    """Generates chunk `chunk` of `plan` in batches of `batch_size` and returns its arrays (features, logits, ...).

    Samples with index `< save_images_below` are also written to `image_dir` as `<index>_class<label>.png`.
    `guidance_channels` is passed to the pipeline only when given. With `keep_images`, the arrays also hold
    `"images"`: the uint8 `(n, H, W, 3)` pixels the features were computed from (ADM's layout).
    """
    indices = plan.chunk_indices(chunk, samples_per_chunk)
    config = pipeline.transformer.config
    latent_shape = (config.in_channels, config.sample_size, config.sample_size)
    # Only when set: pipelines without the argument keep working, and None keeps the pipeline's own default.
    extra = {} if guidance_channels is None else {"guidance_channels": guidance_channels}
    features, logits, pixels = [], [], []
    for start in range(0, len(indices), batch_size):
        batch = indices[start : start + batch_size]
        labels = torch.from_numpy(plan.labels[batch])
        images = pipeline(
            class_labels=labels,
            guidance_scale=guidance_scale,
            guidance_interval=guidance_interval,
            num_inference_steps=num_inference_steps,
            latents=initial_noise(plan.noise_seeds[batch], latent_shape),
            output_type="pt",
            **extra,
        ).images
        images = images.float() * 2 - 1  # the pipeline's [0, 1] -> the [-1, 1] the feature extractor quantises
        if not torch.isfinite(images).all():
            raise FloatingPointError(
                f"The pipeline produced NaN/inf images for samples {int(batch[0])}..{int(batch[-1])}; check the "
                "transformer checkpoint (a diverged run) and the VAE's dtype (float16 decoders overflow)."
            )
        batch_features, batch_logits = extractor(images)
        features.append(batch_features.astype(np.float32))
        if batch_logits is not None:
            logits.append(batch_logits.astype(np.float32))
        if image_dir is not None and save_images_below:
            _save_pngs(images, batch, plan.labels[batch], save_images_below, image_dir)
        if keep_images:
            pixels.append(quantize_to_uint8(images).permute(0, 2, 3, 1).cpu().numpy())
    arrays = {
        "features": np.concatenate(features),
        "labels": plan.labels[indices],
        "sample_indices": indices.astype(np.int64),
        "noise_seeds": plan.noise_seeds[indices],
    }
    if logits:
        arrays["logits"] = np.concatenate(logits)
    if keep_images:
        arrays["images"] = np.ascontiguousarray(np.concatenate(pixels))
    return arrays


def _save_pngs(images: torch.Tensor, indices: np.ndarray, labels: np.ndarray, below: int, image_dir: Path) -> None:
    pixels = quantize_to_uint8(images).permute(0, 2, 3, 1).cpu().numpy()
    for row, index in enumerate(indices.tolist()):
        if index < below:
            image_dir.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels[row]).save(image_dir / f"{index:06d}_class{int(labels[row]):04d}.png")


def write_chunk(path: Path, arrays: dict[str, np.ndarray], fingerprint: str) -> Path:
    """Writes a chunk file atomically: a kill mid-write leaves no file that resume would take for a finished chunk."""
    with atomic_path(path) as temporary, open(temporary, "wb") as handle:
        np.savez(handle, fingerprint=np.array(fingerprint), state_version=np.array(_STATE_VERSION), **arrays)
    return path


def images_chunk_path(scale_dir: str | os.PathLike, chunk: int) -> Path:
    return Path(scale_dir) / _IMAGES_FORMAT.format(chunk)


def write_images_chunk(path: Path, images: np.ndarray, sample_indices: np.ndarray, fingerprint: str) -> Path:
    """Writes a chunk's uint8 samples (for `save_npz`) atomically, with the chunk's fingerprint and sample indices."""
    with atomic_path(path) as temporary, open(temporary, "wb") as handle:
        np.savez(
            handle,
            images=images,
            sample_indices=sample_indices.astype(np.int64),
            fingerprint=np.array(fingerprint),
            state_version=np.array(_STATE_VERSION),
        )
    return path


def read_chunk_fingerprint(path: Path) -> str | None:
    try:
        with np.load(path) as stored:
            return str(stored["fingerprint"]) if "fingerprint" in stored else None
    except (OSError, ValueError, zipfile.BadZipFile):
        return None  # unreadable: generate it again


def generate_chunks(
    pipeline,
    plan: SamplePlan,
    chunks: Sequence[int],
    scale_dir: Path,
    fingerprint: str,
    config: GenerationEvaluationConfig,
    guidance_scale: float,
    extractor: GenerationFeatureExtractor,
    resume: bool,
    stop_after: int | None = None,
    show_progress: bool = True,
) -> tuple[list[int], bool]:
    """Generates the `chunks` of this process into `scale_dir`; returns (chunks generated now, stopped early).

    With `resume`, a chunk whose file exists with the same `fingerprint` is skipped and one with another fingerprint
    raises; without it every chunk is generated again. `stop_after` stops after that many new chunks (tests of resume).
    """
    keep_images = config.save_npz is not None
    todo = []
    for chunk in chunks:
        path = chunk_path(scale_dir, chunk)
        if resume and path.is_file():
            stored = read_chunk_fingerprint(path)
            # A chunk from a run without save_npz has no images: generate it again (the same samples) to get them.
            images_ready = (
                not keep_images or read_chunk_fingerprint(images_chunk_path(scale_dir, chunk)) == fingerprint
            )
            if stored == fingerprint and images_ready:
                continue
            if stored == fingerprint:
                todo.append(chunk)
                continue
            if stored is not None:
                raise ValueError(
                    f"{path} was generated with other settings (pipeline, steps, sampler, shift, guidance, guidance "
                    "channels, seed, label sampling, sample count, chunk size, TF32, feature extractor or inception "
                    "mode); rerun with the same settings, use another output_dir, or drop --resume to generate "
                    "everything again."
                )
        todo.append(chunk)
    generated = []
    progress = tqdm(
        total=len(chunks),
        initial=len(chunks) - len(todo),
        desc=f"generate (cfg {guidance_scale:g})",
        disable=not show_progress,
    )
    for chunk in todo:
        arrays = generate_chunk(
            pipeline,
            plan,
            chunk,
            config.samples_per_chunk,
            config.batch_size,
            guidance_scale,
            config.guidance_interval,
            config.num_inference_steps,
            extractor,
            save_images_below=config.save_images,
            image_dir=scale_dir / SAMPLES_DIR,
            guidance_channels=config.guidance_channels,
            keep_images=keep_images,
        )
        images = arrays.pop("images", None)
        if images is not None:
            # Images first: a kill between the two writes leaves a chunk that resume regenerates, never a finished
            # feature chunk whose images are missing or stale.
            write_images_chunk(images_chunk_path(scale_dir, chunk), images, arrays["sample_indices"], fingerprint)
        write_chunk(chunk_path(scale_dir, chunk), arrays, fingerprint)
        generated.append(chunk)
        progress.update(1)
        if stop_after is not None and len(generated) >= stop_after:
            progress.close()
            return generated, True
    progress.close()
    return generated, False


def generation_fingerprint(
    config: GenerationEvaluationConfig,
    guidance_scale: float,
    pipeline_description: dict,
    scheduler_config: dict,
    extractor_name: str,
    image_size: tuple[int, int],
    inception_mode: str = "clean",
) -> str:
    """A hash of every setting that changes the contents of a chunk file (not the batch size, the process count or
    `save_npz`, which only adds the images beside it)."""
    settings = {
        "pipeline": {name: pipeline_description[name]["fingerprint"] for name in ("transformer", "vae")},
        "scheduler": to_jsonable(scheduler_config),
        "num_inference_steps": config.num_inference_steps,
        "guidance_scale": guidance_scale,
        "guidance_interval": list(config.guidance_interval),
        "seed": config.seed,
        "label_sampling": config.label_sampling,
        "num_samples": config.num_samples,
        "samples_per_chunk": config.samples_per_chunk,
        "allow_tf32": config.allow_tf32,
        "feature_extractor": extractor_name,
        "image_size": list(image_size),
        "state_version": _STATE_VERSION,
    }
    # Settings added later enter only away from their defaults, so chunk files written before they existed keep
    # their fingerprint and stay resumable.
    if inception_mode != "clean":
        settings["inception_mode"] = inception_mode
    if config.guidance_channels is not None:
        settings["guidance_channels"] = config.guidance_channels
    return settings_fingerprint(settings)


# ---------------------------------------------------------------------------------------------------------------------
# The samples as ADM's evaluator reads them
# ---------------------------------------------------------------------------------------------------------------------


def sample_npz_path(save_npz: str | os.PathLike, guidance_scale: float, sweep: bool) -> Path:
    """`save_npz` itself, or in a CFG sweep `<stem>-cfg-<scale>.npz` beside it (one sample batch per scale)."""
    path = Path(save_npz).expanduser()
    return path.with_name(f"{path.stem}-cfg-{guidance_scale:g}{path.suffix}") if sweep else path


def write_adm_sample_npz(
    path: str | os.PathLike, scale_dir: Path, plan: SamplePlan, samples_per_chunk: int, fingerprint: str | None = None
) -> dict[str, Any]:
    """Streams the chunk image files of `scale_dir`, in plan order, into one `.npz` as ADM's evaluator reads it.

    The layout is that of ADM's `scripts/image_sample.py` (`np.savez(path, arr, label_arr)`): `arr_0` uint8
    `(N, H, W, 3)`, sample `i` at row `i` whichever process generated it, and `arr_1` the int64 class labels.
    LightningDiT's `tools/save_npz.py` writes `arr_0` alone; ADM's evaluator reads only `arr_0`, so both work. The
    pixels are `round((x + 1) * 127.5)` of the decoded `x` in `[-1, 1]`, as diffusers' postprocess and LightningDiT's
    `decode_to_images` (`clamp(127.5 x + 128)` then truncation) give them; ADM's own sampler truncates
    `(x + 1) * 127.5`, at most one level lower. Written
    like `np.savez` (stored, not compressed; zip64 for files over 4 GB), one chunk at a time, to a temporary name
    renamed at the end. Returns a description for `results.json`.
    """
    path = Path(path).expanduser()
    num_chunks = plan.num_chunks(samples_per_chunk)
    shape = None
    with atomic_path(path) as temporary:
        with zipfile.ZipFile(temporary, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
            with archive.open("arr_0.npy", "w", force_zip64=True) as member:
                for chunk in range(num_chunks):
                    images = _read_images_chunk(
                        images_chunk_path(scale_dir, chunk), plan, chunk, samples_per_chunk, fingerprint
                    )
                    if shape is None:
                        shape = (plan.num_samples, *images.shape[1:])
                        header = {
                            "descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)),
                            "fortran_order": False,
                            "shape": shape,
                        }
                        # np.save's own header (version 1.0 suffices for any 4-d shape), then the rows as they come.
                        np.lib.format.write_array_header_1_0(member, header)
                    elif images.shape[1:] != shape[1:]:
                        raise ValueError(
                            f"{images_chunk_path(scale_dir, chunk)} holds {images.shape[1:]} images, "
                            f"the earlier chunks {shape[1:]}; the chunk files are from different runs."
                        )
                    member.write(memoryview(images).cast("B"))
            with archive.open("arr_1.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, plan.labels.astype(np.int64), allow_pickle=False)
    return {
        "path": str(path),
        "arrays": {
            "arr_0": {"dtype": "uint8", "shape": list(shape)},
            "arr_1": {"dtype": "int64", "shape": [plan.num_samples], "content": "labels"},
        },
        "order": "sample index (the plan's order, independent of the process count)",
        "bytes": path.stat().st_size,
        "reader": f"ADM evaluator: python evaluations/evaluator.py <reference batch> {path.name}",
    }


def _read_images_chunk(
    path: Path, plan: SamplePlan, chunk: int, samples_per_chunk: int, fingerprint: str | None
) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: the samples of chunk {chunk} were generated without save_npz (or deleted); rerun "
            "with --resume and save_npz to regenerate just those chunks."
        )
    with np.load(path) as stored:
        expected = plan.chunk_indices(chunk, samples_per_chunk)
        if not np.array_equal(stored["sample_indices"], expected):
            raise ValueError(f"{path} does not hold samples {expected[0]}..{expected[-1]} of this plan; it is stale.")
        if fingerprint is not None and str(stored["fingerprint"]) != fingerprint:
            raise ValueError(f"{path} was generated with other settings than this run; rerun without --resume.")
        images = np.ascontiguousarray(stored["images"])
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[0] != len(expected) or images.shape[-1] != 3:
        raise ValueError(f"{path} holds {images.dtype} {images.shape}, not uint8 ({len(expected)}, H, W, 3) images.")
    return images


# ---------------------------------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------------------------------


def iterate_chunks(
    scale_dir: Path, plan: SamplePlan, samples_per_chunk: int, fingerprint: str | None = None
) -> Iterator[dict[str, np.ndarray]]:
    """The chunk files of `scale_dir` in plan order, each checked against the plan (and `fingerprint`)."""
    for chunk in range(plan.num_chunks(samples_per_chunk)):
        path = chunk_path(scale_dir, chunk)
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: a process did not finish its chunks; rerun with --resume.")
        with np.load(path) as stored:
            arrays = {name: stored[name] for name in stored.files}
        expected = plan.chunk_indices(chunk, samples_per_chunk)
        if not np.array_equal(arrays["sample_indices"], expected) or not np.array_equal(
            arrays["labels"], plan.labels[expected]
        ):
            raise ValueError(f"{path} does not hold samples {expected[0]}..{expected[-1]} of this plan; it is stale.")
        if fingerprint is not None and str(arrays["fingerprint"]) != fingerprint:
            raise ValueError(f"{path} was generated with other settings than this run; rerun without --resume.")
        yield arrays


def compute_generation_metrics(
    scale_dir: Path,
    plan: SamplePlan,
    samples_per_chunk: int,
    reference: Reference,
    fingerprint: str | None = None,
    precision_recall_k: int = 3,
    inception_score_splits: int = INCEPTION_SCORE_SPLITS,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """gFID, Inception Score and precision / recall of the chunk files of `scale_dir` against `reference`.

    The FID statistics stream over the chunks; IS needs the logits of every sample (50,000 x 1008 float32, 200 MB)
    and precision / recall the features of every sample (50,000 x 2048, 400 MB in float32), never images.
    """
    statistics, logits, features, notes = None, [], [], []
    has_logits = None
    for arrays in iterate_chunks(scale_dir, plan, samples_per_chunk, fingerprint):
        if statistics is None:
            statistics = FeatureStatistics(arrays["features"].shape[1])
            has_logits = "logits" in arrays
        statistics.update(arrays["features"])
        logits.append(arrays["logits"] if has_logits else arrays["features"])
        if reference.precision_recall_features is not None:
            features.append(arrays["features"])
    if statistics.feature_dim != reference.mean.shape[0]:
        raise ValueError(
            f"The samples have {statistics.feature_dim}-d features but the reference {reference.mean.shape[0]}-d ones."
        )
    gfid = frechet_distance(reference.mean, reference.covariance, statistics.mean, statistics.covariance)
    splits = min(inception_score_splits, statistics.count)
    is_mean, is_std = inception_score(np.concatenate(logits), num_splits=splits)
    metrics: dict[str, Any] = {
        "gfid": gfid,
        "inception_score": {"mean": is_mean, "std": is_std, "num_splits": splits},
        "precision": None,
        "recall": None,
        "num_samples": statistics.count,
    }
    if reference.precision_recall_features is not None:
        real = reference.precision_recall_features
        fake = np.concatenate(features)
        if precision_recall_k < min(len(real), len(fake)):
            result = precision_recall(real, fake, k=precision_recall_k, device=device)
            metrics.update(precision=result["precision"], recall=result["recall"])
            metrics["precision_recall"] = {"k": precision_recall_k, "num_real": len(real), "num_fake": len(fake)}
        else:
            notes.append(
                f"Precision / recall skipped: k={precision_recall_k} needs more than {precision_recall_k} "
                f"real and generated samples (have {len(real)} and {len(fake)})."
            )
    metrics["notes"] = notes
    return metrics


# ---------------------------------------------------------------------------------------------------------------------
# The evaluation
# ---------------------------------------------------------------------------------------------------------------------


MetricsFunction = Callable[..., dict[str, Any]]


def evaluate_generation(
    config: GenerationEvaluationConfig,
    output_dir: str | os.PathLike,
    resume: bool = False,
    pipeline=None,
    feature_extractor: GenerationFeatureExtractor | FIDFeatureExtractor | None = None,
    accelerator=None,
    metrics_function: MetricsFunction | None = None,
    _stop_after_chunks: int | None = None,
) -> dict[str, Any] | None:
    """Runs the evaluation of the module docstring; returns the results on the main process (None elsewhere).

    `pipeline` and `feature_extractor` replace what `config` would load (tests inject tiny ones; `config.pipeline` is
    then only recorded). `metrics_function(guidance_scale=..., scale_dir=..., plan=..., reference=..., **kwargs)`
    replaces [`compute_generation_metrics`] (tests of the sweep). `_stop_after_chunks` stops each process after that
    many new chunks, as a kill would (tests of resume); it returns None.
    """
    from accelerate import Accelerator
    from accelerate.utils import gather_object

    started = time.perf_counter()
    accelerator = accelerator or Accelerator()
    device = accelerator.device
    output_dir = Path(output_dir)
    warnings_list: list[str] = []
    notes: list[str] = []

    # ---- pipeline, sampler and plan: cheap checks before any sample or reference feature ----
    pipeline = pipeline if pipeline is not None else load_aligntok_dit_pipeline(config.pipeline)
    num_classes = check_num_classes(pipeline, config.num_classes)
    plan = make_sample_plan(config.seed, config.num_samples, config.label_sampling, num_classes)
    pipeline.scheduler = build_sampling_scheduler(pipeline.scheduler, config.sampler, config.shift)
    pipeline.to(device)
    pipeline.set_progress_bar_config(disable=True)
    image_size = generated_image_size(pipeline)
    pipeline_description = describe_pipeline(pipeline, config.pipeline)
    scheduler_config = dict(pipeline.scheduler.config)

    guidance_channels_effective = check_guidance_channels(pipeline, config.guidance_channels)

    extractor = as_generation_feature_extractor(
        feature_extractor
        if feature_extractor is not None
        else build_generation_feature_extractor(config.feature_extractor, device, config.inception_mode)
    )
    if extractor.fid.inception_mode != config.inception_mode:
        raise ValueError(
            f"The feature extractor passed in preprocesses in inception_mode {extractor.fid.inception_mode!r}, but the "
            f"config asks for {config.inception_mode!r}; build it with inception_mode={config.inception_mode!r} or "
            "set the config's inception_mode to match."
        )
    if not extractor.is_real_metric:
        warnings_list.append(f"gFID uses {extractor.name!r}, a stand-in network: its values are not FID.")
    if not extractor.inception_score_is_real:
        warnings_list.append(
            f"The Inception Score takes its logits from {extractor.logits_name!r}: its values are not IS."
        )
    fid_warning = fid_sample_count_warning(config.num_samples)
    if fid_warning:
        warnings_list.append(fid_warning)

    # ---- the reference first: a bad one fails before hours of sampling ----
    reference = load_reference(config, extractor, accelerator, image_size, notes, warnings_list, num_classes)
    if config.save_npz is not None and accelerator.is_main_process:
        # Also before sampling: an unwritable destination must not surface only after the last chunk.
        for guidance_scale in config.guidance_scales:
            destination = sample_npz_path(config.save_npz, guidance_scale, config.cfg_sweep is not None)
            if destination.is_dir():
                raise ValueError(
                    f"save_npz={config.save_npz!r} is a directory; give a file name such as "
                    f"{destination / 'samples.npz'}."
                )
            destination.parent.mkdir(parents=True, exist_ok=True)

    # ---- generate every guidance scale, then score them (other processes need not wait for the scoring) ----
    metrics_function = metrics_function or _default_metrics_function
    num_chunks = plan.num_chunks(config.samples_per_chunk)
    my_chunks = chunks_for_process(num_chunks, accelerator.process_index, accelerator.num_processes)
    generated_per_scale = {}
    for guidance_scale in config.guidance_scales:
        scale_dir = guidance_scale_dir(output_dir, guidance_scale)
        fingerprint = generation_fingerprint(
            config,
            guidance_scale,
            pipeline_description,
            scheduler_config,
            extractor.name,
            image_size,
            extractor.fid.inception_mode,
        )
        if accelerator.is_main_process:
            scale_dir.mkdir(parents=True, exist_ok=True)
            if not resume:
                _remove_chunks(scale_dir)
        accelerator.wait_for_everyone()
        with tf32_matmuls(config.allow_tf32):
            generated, stopped = generate_chunks(
                pipeline,
                plan,
                my_chunks,
                scale_dir,
                fingerprint,
                config,
                guidance_scale,
                extractor,
                resume,
                stop_after=_stop_after_chunks,
                show_progress=accelerator.is_local_main_process,
            )
        if stopped:
            return None
        # Also the barrier: every chunk of this scale is on disk after it.
        generated_per_scale[guidance_scale] = (fingerprint, int(sum(gather_object([len(generated)]))))
    if not accelerator.is_main_process:
        return None

    rows = []
    for guidance_scale, (fingerprint, generated_count) in generated_per_scale.items():
        scale_dir = guidance_scale_dir(output_dir, guidance_scale)
        metrics = metrics_function(
            guidance_scale=guidance_scale,
            scale_dir=scale_dir,
            plan=plan,
            reference=reference,
            fingerprint=fingerprint,
            samples_per_chunk=config.samples_per_chunk,
            precision_recall_k=config.precision_recall_k,
            device=device,
        )
        for note in metrics.pop("notes", []):
            if note not in notes:
                notes.append(note)
        sample_npz = None
        if config.save_npz is not None:
            destination = sample_npz_path(config.save_npz, guidance_scale, config.cfg_sweep is not None)
            sample_npz = write_adm_sample_npz(destination, scale_dir, plan, config.samples_per_chunk, fingerprint)
        row = {
            "guidance_scale": guidance_scale,
            "guidance_interval": list(config.guidance_interval),
            **metrics,
            "directory": str(scale_dir),
            "fingerprint": fingerprint,
            "chunks": num_chunks,
            "chunks_generated_this_run": generated_count,
            "sample_npz": sample_npz,
        }
        if config.save_images:
            row["samples_grid"] = save_sample_grid(scale_dir, config.save_images, notes)
        rows.append(row)
        logger.info(f"guidance scale {guidance_scale:g}: gFID {row.get('gfid')}")

    best = mark_best_guidance_scale(rows)
    for warning in warnings_list:
        warnings.warn(warning, UserWarning, stacklevel=2)
    shift_effective = None if scheduler_config.get("use_dynamic_shifting") else scheduler_config.get("shift")
    results = {
        "settings": {
            **to_jsonable(asdict(config)),
            **sweep_settings(config.cfg_sweep, config.guidance_scale, config.guidance_scales),
            "guidance_channels_effective": guidance_channels_effective,
            "shift_effective": shift_effective,
            "shift_source": "config" if config.shift is not None else "pipeline scheduler",
            # LightningDiT's timestep_shift s is a diffusers shift of 1 / s (DESIGN.md, sampling conventions).
            "timestep_shift_lightningdit": 1.0 / shift_effective if shift_effective else None,
            "dynamic_shifting": bool(scheduler_config.get("use_dynamic_shifting", False)),
            "scheduler_class": type(pipeline.scheduler).__name__,
            "transformer_evaluations_per_sample": _transformer_evaluations(pipeline, config.num_inference_steps),
            "image_size": list(image_size),
            "num_processes": accelerator.num_processes,
            "num_chunks": num_chunks,
            "sample_plan": plan.describe(),
            "inception_mode_effective": extractor.fid.inception_mode,
            "protocol": describe_protocol(config, extractor, reference),
        },
        "pipeline": pipeline_description,
        "feature_extractor": extractor.describe(),
        "reference": reference.description,
        "versions": package_versions(),
        "metrics": _headline(best if best is not None else rows[0]),
        "best_guidance_scale": best["guidance_scale"] if best is not None else None,
        "rows": rows,
        "warnings": warnings_list,
        "notes": notes,
        "wall_time_seconds": time.perf_counter() - started,
    }
    write_generation_results(output_dir, results)
    return results


def _default_metrics_function(
    guidance_scale, scale_dir, plan, reference, fingerprint, samples_per_chunk, precision_recall_k, device
) -> dict[str, Any]:
    return compute_generation_metrics(
        scale_dir,
        plan,
        samples_per_chunk,
        reference,
        fingerprint,
        precision_recall_k=precision_recall_k,
        device=device,
    )


def describe_protocol(
    config: GenerationEvaluationConfig, extractor: GenerationFeatureExtractor, reference: Reference
) -> dict[str, Any]:
    """Whether this run used the combination designed to be comparable with ADM's evaluator, and what differs if not.

    The combination (see the module docstring): the real Inception, `inception_mode="legacy_tensorflow"`, an `.npz`
    reference whose stored `mu` / `sigma` are used and that this package did not write (ADM's
    `VIRTUAL_imagenet256_labeled.npz` for ImageNet 256; the file's identity is recorded, not checked), random labels
    and 50,000 samples. Whether such a run reproduces ADM's evaluator's number has not been measured here.
    """
    description = reference.description
    conditions = {
        "real Inception network (feature_extractor='clean-fid-inception')": extractor.is_real_metric,
        "inception_mode='legacy_tensorflow'": extractor.fid.inception_mode == "legacy_tensorflow",
        f"reference: the stored mu/sigma of an ADM reference batch ({ADM_REFERENCE_BATCH_IMAGENET_256} for ImageNet "
        "256)": description.get("kind") == "npz"
        and description.get("statistics_source") == "mu_sigma"
        and description.get("written_by") is None,
        "label_sampling='random'": config.label_sampling == "random",
        f"num_samples={PROTOCOL_NUM_SAMPLES}": config.num_samples == PROTOCOL_NUM_SAMPLES,
    }
    unmet = [condition for condition, met in conditions.items() if not met]
    return {
        "adm_comparable": not unmet,
        "unmet": unmet,
        "reference_file": description.get("file_name") or description.get("source"),
        "statement": (
            "Designed to be comparable with ADM's evaluator (clean-fid's legacy_tensorflow mode, ADM's reference "
            "statistics, random labels, 50K samples); the agreement has not been measured here. For published tables, "
            "run ADM's evaluations/evaluator.py on the save_npz file."
            if not unmet
            else "Not the ADM-comparable combination: compare only with runs of this evaluation at the same settings."
        ),
    }


def _headline(row: dict[str, Any]) -> dict[str, Any]:
    return {
        key: row.get(key)
        for key in ("guidance_scale", "gfid", "inception_score", "precision", "recall", "num_samples")
    }


def _remove_chunks(scale_dir: Path) -> None:
    existing = sorted(scale_dir.glob("features-*.npz")) + sorted(scale_dir.glob("images-*.npz"))
    if existing:
        logger.warning(
            f"Starting over in {scale_dir}: removing {len(existing)} chunk files and their sample PNGs "
            "(pass --resume to keep them)."
        )
        for path in existing:
            path.unlink()
    shutil.rmtree(scale_dir / SAMPLES_DIR, ignore_errors=True)
    (scale_dir / SAMPLES_GRID_PNG).unlink(missing_ok=True)


def _transformer_evaluations(pipeline, num_inference_steps: int) -> int | None:
    """Transformer calls per sample (without CFG's doubled batch): the scheduler's timestep count."""
    try:
        config = pipeline.transformer.config
        num_tokens = (config.sample_size // config.patch_size) ** 2
        return len(pipeline._set_timesteps(num_inference_steps, num_tokens, torch.device("cpu")))
    except (ValueError, TypeError, AttributeError):  # only a record; sampling itself reports scheduler problems
        return None


# ---------------------------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------------------------


def generation_markdown(results: dict[str, Any]) -> str:
    """One row per guidance scale (the best in bold with a check mark), then the settings and caveats."""
    settings = results["settings"]
    extractor = results["feature_extractor"]
    fid_label = "gFID" if extractor["is_real_metric"] else "gFID (stand-in, NOT FID)"
    is_label = "IS" if extractor["inception_score"]["is_real_metric"] else "IS (stand-in, NOT IS)"
    lines = [
        f"| CFG scale | interval | {fid_label} | {is_label} | precision | recall | best |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in results["rows"]:
        score = row.get("inception_score") or {}
        cells = [
            f"{row['guidance_scale']:g}",
            f"[{row['guidance_interval'][0]:g}, {row['guidance_interval'][1]:g}]",
            format_metric(row.get("gfid"), 2),
            f"{format_metric(score.get('mean'), 2)} ± {format_metric(score.get('std'), 2)}" if score else "-",
            format_metric(row.get("precision"), 3),
            format_metric(row.get("recall"), 3),
        ]
        if row.get("best"):
            cells = [f"**{cell}**" for cell in cells] + ["✓"]
        else:
            cells.append("")
        lines.append("| " + " | ".join(cells) + " |")
    reference = results["reference"]
    if reference.get("kind") == "npz":
        source = (
            "its stored mu/sigma"
            if reference.get("statistics_source") == "mu_sigma"
            else f"statistics of its {reference.get('statistics_num_images')} arr_0 images"
        )
        reference_text = f"{reference.get('path')} ({source})"
    else:
        reference_text = (
            f"{reference.get('data_description')}, {reference.get('resolution')[0]}x"
            f"{reference.get('resolution')[1]} centre crops, {reference.get('num_samples')} images"
        )
    shift = settings["shift_effective"] if not settings["dynamic_shifting"] else "dynamic"
    protocol = settings.get("protocol") or {}
    lines += [
        "",
        (
            f"{settings['num_samples']} samples per scale ({settings['label_sampling']} labels over "
            f"{settings['sample_plan']['num_classes']} classes, seed {settings['seed']}), {settings['image_size'][0]}x"
            f"{settings['image_size'][1]}; {settings['sampler']} ({settings['scheduler_class']}), "
            f"{settings['num_inference_steps']} steps, shift {shift} ({settings.get('shift_source')}), guidance "
            f"channels {settings.get('guidance_channels_effective')}; pipeline {results['pipeline']['path']}."
        ),
        f"Features: {extractor['name']}, inception_mode {extractor.get('inception_mode')}; "
        f"reference: {reference_text}.",
        (
            f"ADM-comparable combination: {'yes' if protocol.get('adm_comparable') else 'no'}"
            + (
                f" (differs in: {'; '.join(protocol['unmet'])})"
                if protocol.get("unmet")
                else " (designed to be; not measured against ADM's evaluator here)"
            )
            + "."
        ),
    ]
    for row in results["rows"]:
        if row.get("sample_npz"):
            shape = "x".join(str(side) for side in row["sample_npz"]["arrays"]["arr_0"]["shape"])
            lines.append(
                f"Samples for ADM's evaluator (cfg {row['guidance_scale']:g}): {row['sample_npz']['path']} "
                f"(arr_0 uint8 {shape})."
            )
    return "\n".join(lines + warnings_and_notes(results)) + "\n"


def write_generation_results(output_dir: str | os.PathLike, results: dict[str, Any]) -> tuple[Path, Path]:
    """Writes `results.json` and `results.md` atomically and returns their paths."""
    return write_results_files(output_dir, results, generation_markdown(results))
