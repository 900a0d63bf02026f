"""Evaluate several tokenizers side by side on the same images: rFID, PSNR, SSIM, LPIPS, linear probe, CKNNA.

    results = evaluate_tokenizers(TokenizerEvaluationConfig(tokenizers=["runs/x/stage3/model", "flux-vae-random"]),
                                  output_dir="eval/x")

The default protocol is the published one: ImageNet validation (50,000 images, `ILSVRC/imagenet-1k`, split
`validation`), 256x256 centre crops, rFID with clean-fid's Inception between the reconstructions and the originals,
PSNR/SSIM/LPIPS averaged over all images (see `reconstruction_metrics.py`), the linear probe of `linear_probe.py` and
CKNNA of `alignment.py` on 1,024 images spread evenly over the set.

How it runs:

- Streaming: one batch of images at a time; per tokenizer it keeps only running sums (FID mean/covariance sums, metric
  sums) and the pooled latent of each image (`latent_channels` floats, for the probe and CKNNA). No image set is ever
  held in memory.
- Sharded: each accelerate process takes a contiguous share of the batches (`accelerator.split_between_processes`);
  at the end the partial states are gathered (`gather_object`) and merged exactly on the main process.
- Resumable: every `save_every_batches` batches each process writes its partial state to
  `<output_dir>/partial_state/rank<r>_of_<w>.pt` (atomically). `resume=True` continues from there if the settings
  match (same tokenizers, data, sample count, batch size, metrics and number of processes), else raises.
- Reference statistics of the original images are cached on disk, keyed by data source, split, resolution, crop,
  count and feature extractor, and reused by later runs (`fid_statistics_cache`). The key names a local folder by its
  path and image count, not its content: after changing the images in place, delete the cached file.

Outputs in `output_dir`: `results.json` (every setting, package versions, tokenizer configs, metrics, warnings),
`results.md` (a short table) and `reconstructions.png` (originals and each tokenizer's reconstructions, PSNR in the
labels).
"""

import logging
import math
import os
import shutil
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data.builtin_shapes import normalize_resolution
from ..models import AlignedAutoencoderKL
from ..utils import settings_fingerprint, to_jsonable
from .metrics.alignment import AlignTokEncoderFeatures, FoundationEncoderFeatures, cknna
from .metrics.fid import (
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
from .metrics.linear_probe import LinearProbeConfig, latent_probe_features, linear_probe
from .metrics.reconstruction import ReconstructionMetricSums, check_matching_pair, quantize_reconstructions
from .report import RECONSTRUCTIONS_PNG, package_versions, save_side_by_side, write_results
from .streaming import atomic_torch_save, build_evaluation_dataset, iterate_batches, shard_batches
from .tokenizer_adapters import DiffusersAutoencoderAdapter, check_resolution_for_all, load_tokenizer


logger = logging.getLogger(__name__)

PARTIAL_STATE_DIR = "partial_state"
_STATE_VERSION = 1


@dataclass
class TokenizerEvaluationConfig:
    """Settings of one evaluation; all of them are recorded in `results.json`.

    Args:
        tokenizers (`list[str]`): Tokenizer paths / hub ids / `"flux-vae-random"` (see `load_tokenizer`).
        data (`str`): Image source (`ImageDatasetConfig.source`): a hub id, a local image folder or shards,
            `builtin:shapes`. Default: ImageNet (`ILSVRC/imagenet-1k`).
        split (`str`, *optional*): Split of `data`. `None` (default) means `validation` for hub data sets (the
            50,000 ImageNet-val images) and `train` for local folders, globs and files, which is how `datasets`
            names a plain image folder (pass `validation` for a local folder with a `val/` sub-folder).
        resolution (`int` or `(height, width)`): Centre-crop size (default 256).
        num_samples (`int`): Images to evaluate, the first ones of the split (default 50,000: all of ImageNet-val).
        batch_size, num_workers: Batching and dataloader workers per process.
        feature_extractor (`str`): `"clean-fid-inception"` (rFID) or `"random-inception-standin"` (offline, not FID).
        perceptual (`str` or `None`): `"lpips-vgg"`, `"lpips-vgg-random-trunk"` (offline, not LPIPS) or None (off).
        perceptual_trunk_weights_path (`str`, *optional*): Local torchvision VGG16 weights for offline real LPIPS.
        fid_statistics_cache (`str`, *optional*): Directory of cached reference statistics (default
            `~/.cache/diffusers_aligntok/fid_reference_statistics`).
        quantize_reconstructions (`bool`): Round reconstructions to 8 bits before every metric (default True, as
            the published numbers come from saved PNGs).
        linear_probe (`bool`), linear_probe_pooling (`str`), linear_probe_seed (`int`): See `linear_probe.py`.
        reference_encoder (`str`): For CKNNA: `"auto"` (the first AlignTok tokenizer's own encoder; skipped with a
            note if there is none), `"none"`, or a transformers checkpoint (hub id or directory) of a foundation
            encoder, e.g. `facebook/dinov2-large`.
        cknna_num_samples (`int`), cknna_topk (`int`): CKNNA on `cknna_num_samples` images spread evenly over the
            set (image folders are sorted by class), with k neighbours.
        num_visualization_images (`int`): Images in `reconstructions.png`.
        save_every_batches (`int`): How often (in batches per process) the partial state is saved.
        dtype (`str`): Tokenizer compute dtype, `"float32"` or `"bfloat16"` (float16 VAEs can overflow to NaN).
        seed (`int`): Seed of `builtin:shapes` (other sources are read in order; nothing else is random).
        image_column, label_column: Column names for hub / parquet sources (default: auto-detected).
    """

    tokenizers: list[str] = field(default_factory=list)
    data: str = "ILSVRC/imagenet-1k"
    split: str | None = None
    resolution: int | tuple[int, int] = 256
    num_samples: int = 50_000
    batch_size: int = 32
    num_workers: int = 4
    feature_extractor: str = "clean-fid-inception"
    perceptual: str | None = "lpips-vgg"
    perceptual_trunk_weights_path: str | None = None
    fid_statistics_cache: str | None = None
    quantize_reconstructions: bool = True
    linear_probe: bool = True
    linear_probe_pooling: str = "mean"
    linear_probe_seed: int = 0
    reference_encoder: str = "auto"
    cknna_num_samples: int = 1024
    cknna_topk: int = 10
    num_visualization_images: int = 8
    save_every_batches: int = 50
    dtype: str = "float32"
    seed: int = 0
    image_column: str | None = None
    label_column: str | None = None

    def __post_init__(self):
        normalize_resolution(self.resolution)
        for name in ("num_samples", "batch_size", "save_every_batches"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}.")
        if self.num_workers < 0 or self.cknna_num_samples < 0 or self.num_visualization_images < 0:
            raise ValueError("num_workers, cknna_num_samples and num_visualization_images must be >= 0.")
        if self.dtype not in ("float32", "bfloat16"):
            raise ValueError(
                f"dtype must be 'float32' or 'bfloat16', got {self.dtype!r} (float16 VAE decoders can overflow to NaN)."
            )
        LinearProbeConfig(pooling=self.linear_probe_pooling, seed=self.linear_probe_seed)  # validates the pooling
        if self.split is None:
            self.split = default_split(self.data)


def default_split(source: str) -> str:
    """`validation` for a hub data set, `train` for a local folder / glob / file (a plain folder's only split)."""
    if source.startswith("builtin:"):
        return "train"
    expanded = os.path.expanduser(source)
    is_local = (
        os.path.exists(expanded)
        or any(character in source for character in "*?[")
        or source.startswith((".", "/", "~"))
    )
    return "train" if is_local else "validation"


def evaluate_tokenizers(
    config: TokenizerEvaluationConfig,
    output_dir: str | Path,
    resume: bool = False,
    adapters: list[DiffusersAutoencoderAdapter] | None = None,
    feature_extractor: FIDFeatureExtractor | None = None,
    perceptual_network: torch.nn.Module | None = None,
    reference_encoder: Any | None = None,
    accelerator=None,
    _stop_after_batches: int | None = None,
) -> dict[str, Any] | None:
    """Runs the evaluation of the module docstring and returns the results (on the main process; None elsewhere).

    `adapters`, `feature_extractor`, `perceptual_network` and `reference_encoder` replace what `config` would build
    (tests inject small local networks this way; they are recorded under their own names).
    `_stop_after_batches` stops each process after that many new batches, having saved its state (tests of resume).
    """
    from accelerate import Accelerator
    from accelerate.utils import gather_object

    started = time.perf_counter()
    accelerator = accelerator or Accelerator()
    device = accelerator.device
    output_dir = Path(output_dir)
    height, width = normalize_resolution(config.resolution)
    warnings_list: list[str] = []
    notes: list[str] = []

    def warn(message: str) -> None:  # recorded in the results, and shown once (by the main process)
        warnings_list.append(message)
        if accelerator.is_main_process:
            warnings.warn(message, UserWarning, stacklevel=3)

    # ---- tokenizers first: a resolution they cannot take fails before any data is read ----
    dtype = getattr(torch, config.dtype)
    if adapters is None:
        if not config.tokenizers:
            raise ValueError("No tokenizers to evaluate; pass at least one path, hub id or 'flux-vae-random'.")
        adapters = [load_tokenizer(name, device=device, dtype=dtype) for name in config.tokenizers]
    else:
        adapters = [adapter.to(device) if hasattr(adapter, "to") else adapter for adapter in adapters]
    _make_names_unique(adapters)
    check_resolution_for_all(adapters, height, width)

    # ---- data ----
    with accelerator.main_process_first():
        dataset = build_evaluation_dataset(
            config.data,
            config.split,
            config.resolution,
            config.num_samples,
            seed=config.seed,
            image_column=config.image_column,
            label_column=config.label_column,
        )
    num_samples = len(dataset)
    description = getattr(dataset, "source_description", config.data)
    if num_samples < config.num_samples:
        warn(f"{config.data} has only {num_samples} images; evaluated {num_samples}, not {config.num_samples}.")
    fid_warning = fid_sample_count_warning(num_samples)
    if fid_warning:
        warn(fid_warning)

    # ---- metric networks ----
    feature_extractor = feature_extractor or build_fid_feature_extractor(config.feature_extractor, device=device)
    if not feature_extractor.is_real_metric:
        warn(f"rFID uses {feature_extractor.name!r}, a stand-in network: its values are not FID.")
    if perceptual_network is None and config.perceptual is not None:
        from ..losses import build_perceptual_network

        # Seeded, so the random-trunk stand-in is the same network in every run (and on every rank).
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            perceptual_network = build_perceptual_network(config.perceptual, config.perceptual_trunk_weights_path)
    if perceptual_network is not None:
        perceptual_network = perceptual_network.to(device)
        if not getattr(perceptual_network, "is_real_metric", True):
            warn(f"LPIPS uses {perceptual_network.name!r}, a random VGG trunk: its values are not LPIPS.")
    for adapter in adapters:
        if getattr(adapter, "random_weights", False):
            warn(f"{adapter.name} has random weights: its numbers only exercise the evaluation.")
    if reference_encoder is None:
        reference_encoder, reference_note = _resolve_reference_encoder(config.reference_encoder, adapters, device)
        if reference_note:
            notes.append(reference_note)
    # CKNNA's images and the shown ones are spread evenly over the set: image folders are sorted by class.
    cknna_indices = _evenly_spaced(
        min(config.cknna_num_samples, num_samples) if reference_encoder is not None else 0, num_samples
    )
    shown_indices = _evenly_spaced(min(config.num_visualization_images, num_samples), num_samples)

    # ---- reference statistics: cached, else computed alongside ----
    cache_key = reference_statistics_key(
        config.data,
        config.split,
        (height, width),
        num_samples,
        feature_extractor.name,
        data_description=description,
        seed=config.seed,
        inception_mode=getattr(feature_extractor, "inception_mode", "clean"),
    )
    cache_dir = (
        Path(config.fid_statistics_cache) if config.fid_statistics_cache else default_reference_statistics_dir()
    )
    cache_path = reference_statistics_path(cache_dir, cache_key)
    cached_reference = load_reference_statistics(cache_path, cache_key)

    # ---- this process's batches and its partial state ----
    my_batches = shard_batches(accelerator, num_samples, config.batch_size)
    fingerprint = _settings_fingerprint(
        config,
        adapters,
        feature_extractor,
        perceptual_network,
        reference_encoder,
        num_samples,
        accelerator.num_processes,
    )
    state_path = output_dir / PARTIAL_STATE_DIR / f"rank{accelerator.process_index}_of_{accelerator.num_processes}.pt"
    state = _load_or_start_state(state_path, resume, fingerprint, adapters, feature_extractor, cached_reference)
    if state["reference_fid"] is None and cached_reference is None:
        raise ValueError(
            f"The run being resumed used cached reference statistics at {cache_path}, which are gone; restart "
            "without --resume."
        )
    probe_config = LinearProbeConfig(pooling=config.linear_probe_pooling, seed=config.linear_probe_seed)
    remaining = my_batches[state["processed_batches"] :]
    progress = tqdm(
        total=len(my_batches),
        initial=state["processed_batches"],
        desc="evaluate tokenizers",
        disable=not accelerator.is_local_main_process,
    )

    new_batches = 0
    for _, batch in iterate_batches(dataset, remaining, config.batch_size, num_samples, config.num_workers):
        _process_batch(
            batch,
            state,
            adapters,
            feature_extractor,
            perceptual_network,
            reference_encoder,
            config,
            cknna_indices,
            shown_indices,
            probe_config,
            device,
        )
        state["processed_batches"] += 1
        new_batches += 1
        progress.update(1)
        if state["processed_batches"] % config.save_every_batches == 0 or new_batches == _stop_after_batches:
            atomic_torch_save(_to_tensors(state), state_path)
        if new_batches == _stop_after_batches:
            progress.close()
            return None
    progress.close()
    atomic_torch_save(_to_tensors(state), state_path)

    # ---- gather and merge ----
    states = gather_object([_to_tensors(state)])
    results = None
    if accelerator.is_main_process:
        merged = _merge_states(states, adapters)
        if merged["reference_fid"] is None:
            reference = cached_reference
            reference_info = {"path": str(cache_path), "cached": True}
        else:
            reference = merged["reference_fid"]
            save_reference_statistics(cache_path, reference, cache_key)
            reference_info = {"path": str(cache_path), "cached": False}
        upscaled, skipped = merged["num_upscaled"], merged["num_skipped"]
        if upscaled:
            warn(
                f"{upscaled} of {num_samples} images were smaller than {height}x{width} and were upscaled before the "
                "centre crop; reconstructing upscaled (blurry) images is easier than real detail."
            )
        if skipped:
            warn(f"{skipped} unreadable images were skipped (their neighbours were used instead).")
        tokenizer_results = []
        for index, adapter in enumerate(adapters):
            tokenizer_results.append(
                _final_metrics(
                    index, adapter, merged, reference, config, probe_config, height, width, cknna_indices, notes
                )
            )
        results = {
            "settings": {
                **to_jsonable(asdict(config)),
                "resolution": [height, width],
                "crop": "center",
                "num_samples": num_samples,
                "num_samples_requested": config.num_samples,
                "data_description": description,
                "num_processes": accelerator.num_processes,
            },
            "versions": package_versions(),
            "feature_extractor": feature_extractor.describe(),
            "reference_statistics": reference_info,
            "perceptual": {
                "name": getattr(perceptual_network, "name", type(perceptual_network).__name__),
                "is_real_metric": getattr(perceptual_network, "is_real_metric", True),
                "built_with_seed": 0 if config.perceptual is not None else None,
            }
            if perceptual_network is not None
            else None,
            "reference_encoder": reference_encoder.describe() if reference_encoder is not None else None,
            "linear_probe_protocol": probe_config.describe(),
            "tokenizers": tokenizer_results,
            "warnings": warnings_list,
            "notes": notes,
            "wall_time_seconds": time.perf_counter() - started,
        }
        write_results(output_dir, results)
        if merged["visualization_originals"] is not None:
            rows = [
                (adapter.name, merged["visualization"][index], tokenizer_results[index]["metrics"]["psnr"])
                for index, adapter in enumerate(adapters)
            ]
            save_side_by_side(
                merged["visualization_originals"],
                rows,
                output_dir / RECONSTRUCTIONS_PNG,
                caption=f"Top: originals ({description}, {height}x{width}). Below: reconstructions; "
                f"label = mean PSNR over {num_samples} images, under each image its own PSNR.",
            )
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        shutil.rmtree(output_dir / PARTIAL_STATE_DIR, ignore_errors=True)  # the results supersede it
    return results


# ---------------------------------------------------------------------------------------------------------------------
# One batch
# ---------------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def _process_batch(
    batch,
    state,
    adapters,
    feature_extractor,
    perceptual_network,
    reference_encoder,
    config,
    cknna_indices,
    shown_indices,
    probe_config,
    device,
) -> None:
    images = batch["pixel_values"].to(device)
    indices = batch["index"].long()
    state["indices"].append(indices.clone())
    state["labels"].append(batch["label"].long().clone())
    state["num_upscaled"] += int(batch["upscaled"].sum())
    state["num_skipped"] += int(batch["num_skipped"].sum())
    if state["reference_fid"] is not None:
        state["reference_fid"].update(feature_extractor(images))
    cknna_rows = torch.isin(indices, cknna_indices)
    if cknna_rows.any():
        state["reference_features"].append(reference_encoder(images[cknna_rows.to(images.device)]).float().cpu())
    visualization_rows = torch.isin(indices, shown_indices)
    if visualization_rows.any():
        state["visualization_indices"].append(indices[visualization_rows].clone())
        state["visualization_originals"].append(images[visualization_rows.to(images.device)].cpu())

    for index, adapter in enumerate(adapters):
        entry = state["tokenizers"][index]
        latents = adapter.encode(images)
        reconstructions = adapter.decode(latents).to(images.device)
        check_matching_pair(images, reconstructions)
        if not torch.isfinite(reconstructions).all():
            raise FloatingPointError(
                f"{adapter.name} produced NaN/inf reconstructions (images {int(indices[0])}..{int(indices[-1])}); in "
                "half precision this is a known VAE overflow: evaluate in float32."
            )
        reconstructions = (
            quantize_reconstructions(reconstructions)
            if config.quantize_reconstructions
            else reconstructions.float().clamp(-1, 1)
        )
        entry["metric_sums"].update(images, reconstructions, perceptual_network)
        entry["fid"].update(feature_extractor(reconstructions))
        pooled = latents.float().mean(dim=(2, 3)).cpu()
        entry["pooled_latents"].append(pooled)
        if probe_config.pooling != "mean":
            entry["probe_features"].append(latent_probe_features(latents, probe_config.pooling))
        if entry["latent_shape"] is None:
            entry["latent_shape"] = list(latents.shape[1:])
        if visualization_rows.any():
            entry["visualization"].append(reconstructions[visualization_rows.to(images.device)].cpu())


# ---------------------------------------------------------------------------------------------------------------------
# State: start, resume, save, merge
# ---------------------------------------------------------------------------------------------------------------------


def _new_state(adapters, feature_dim: int, use_cached_reference: bool) -> dict[str, Any]:
    return {
        "version": _STATE_VERSION,
        "processed_batches": 0,
        "reference_fid": None if use_cached_reference else FeatureStatistics(feature_dim),
        "indices": [],
        "labels": [],
        "reference_features": [],
        "visualization_indices": [],
        "visualization_originals": [],
        "num_upscaled": 0,
        "num_skipped": 0,
        "tokenizers": [
            {
                "fid": FeatureStatistics(feature_dim),
                "metric_sums": ReconstructionMetricSums(),
                "pooled_latents": [],
                "probe_features": [],
                "visualization": [],
                "latent_shape": None,
            }
            for _ in adapters
        ],
    }


def _load_or_start_state(
    state_path: Path, resume: bool, fingerprint: str, adapters, feature_extractor, cached_reference
):
    if state_path.is_file() and resume:
        stored = torch.load(state_path, map_location="cpu", weights_only=True)
        if stored.get("fingerprint") != fingerprint:
            raise ValueError(
                f"{state_path} was written by an evaluation with other settings (tokenizers, data, sample count, batch "
                "size, metrics or number of processes); rerun with the same settings, or without --resume to start over."
            )
        logger.info(f"Resuming from {state_path}: {stored['processed_batches']} batches done on this process.")
        return _state_from_tensors(stored)
    if resume:
        logger.info(f"--resume given but {state_path} does not exist; starting from the beginning.")
    elif state_path.is_file():
        logger.info(f"Ignoring the partial state in {state_path.parent} (no --resume); starting over.")
    state = _new_state(adapters, feature_dimension(feature_extractor), cached_reference is not None)
    state["fingerprint"] = fingerprint
    return state


def _to_tensors(state: dict[str, Any]) -> dict[str, Any]:
    """The state as plain containers of tensors and numbers, loadable with `torch.load(weights_only=True)`."""

    def convert(value):
        if isinstance(value, (FeatureStatistics, ReconstructionMetricSums)):
            return {"__kind__": type(value).__name__, **convert(value.state_dict())}
        if isinstance(value, np.ndarray):
            return torch.from_numpy(value)
        if isinstance(value, dict):
            return {key: convert(item) for key, item in value.items()}
        if isinstance(value, list):
            return [convert(item) for item in value]
        return value

    return convert(state)


def _state_from_tensors(stored: dict[str, Any]) -> dict[str, Any]:
    def convert(value):
        if isinstance(value, dict) and "__kind__" in value:
            kind = value.pop("__kind__")
            if kind == "FeatureStatistics":
                return FeatureStatistics.from_state_dict(value)
            return ReconstructionMetricSums.from_state_dict(value)
        if isinstance(value, dict):
            return {key: convert(item) for key, item in value.items()}
        if isinstance(value, list):
            return [convert(item) for item in value]
        return value

    return convert(stored)


def _merge_states(stored_states: list[dict[str, Any]], adapters) -> dict[str, Any]:
    states = [_state_from_tensors(stored) for stored in stored_states]
    indices = torch.cat([index for state in states for index in state["indices"]])
    order = torch.argsort(indices)
    if not torch.equal(indices[order], torch.arange(len(indices))):
        raise RuntimeError("The gathered batches do not cover each image exactly once; this is a bug.")

    def cat_sorted(parts: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(parts)[order]

    reference = None
    if states[0]["reference_fid"] is not None:
        reference = states[0]["reference_fid"]
        for state in states[1:]:
            reference.merge(state["reference_fid"])
    visualization_indices = [index for state in states for index in state["visualization_indices"]]
    visualization_order = torch.argsort(torch.cat(visualization_indices)) if visualization_indices else None
    merged = {
        "labels": cat_sorted([label for state in states for label in state["labels"]]),
        "reference_fid": reference,
        # Reference features are kept for CKNNA's images only; they come in index order within each process, and
        # processes hold contiguous index ranges, so concatenation keeps the order.
        "reference_features": torch.cat([f for state in states for f in state["reference_features"]])
        if any(state["reference_features"] for state in states)
        else None,
        "visualization_originals": torch.cat([v for state in states for v in state["visualization_originals"]])[
            visualization_order
        ]
        if visualization_indices
        else None,
        "num_upscaled": sum(state["num_upscaled"] for state in states),
        "num_skipped": sum(state["num_skipped"] for state in states),
        "tokenizers": [],
        "visualization": [],
    }
    for index in range(len(adapters)):
        entries = [state["tokenizers"][index] for state in states]
        fid, sums = entries[0]["fid"], entries[0]["metric_sums"]
        for entry in entries[1:]:
            fid.merge(entry["fid"])
            sums.merge(entry["metric_sums"])
        probe_parts = [part for entry in entries for part in entry["probe_features"]]
        merged["tokenizers"].append(
            {
                "fid": fid,
                "metric_sums": sums,
                "pooled_latents": cat_sorted([part for entry in entries for part in entry["pooled_latents"]]),
                "probe_features": cat_sorted(probe_parts) if probe_parts else None,
                "latent_shape": next(entry["latent_shape"] for entry in entries if entry["latent_shape"] is not None),
            }
        )
        if visualization_indices:
            merged["visualization"].append(
                torch.cat([v for entry in entries for v in entry["visualization"]])[visualization_order]
            )
    return merged


# ---------------------------------------------------------------------------------------------------------------------
# Final numbers
# ---------------------------------------------------------------------------------------------------------------------


def _final_metrics(
    index, adapter, merged, reference, config, probe_config, height, width, cknna_indices, notes
) -> dict[str, Any]:
    entry = merged["tokenizers"][index]
    metrics: dict[str, Any] = {"latent_shape": entry["latent_shape"], **entry["metric_sums"].means()}
    metrics["rfid"] = fid_from_statistics(reference, entry["fid"])
    labels = merged["labels"]
    metrics["linear_probe"] = None
    if config.linear_probe:
        if (labels >= 0).sum() == 0 or len(torch.unique(labels[labels >= 0])) < 2:
            notes.append(f"Linear probe skipped for {adapter.name}: the data has fewer than 2 labelled classes.")
        else:
            features = entry["probe_features"] if entry["probe_features"] is not None else entry["pooled_latents"]
            try:
                metrics["linear_probe"] = linear_probe(features, labels, probe_config)
            except ValueError as error:
                notes.append(f"Linear probe skipped for {adapter.name}: {error}")
    metrics["cknna"] = None
    if merged["reference_features"] is not None:
        if len(cknna_indices) > config.cknna_topk + 3:
            metrics["cknna"] = cknna(
                entry["pooled_latents"][cknna_indices], merged["reference_features"], config.cknna_topk
            )
            metrics["cknna_num_samples"] = len(cknna_indices)
        elif index == 0:
            notes.append(f"CKNNA skipped: {len(cknna_indices)} samples are too few for k={config.cknna_topk}.")
    latent_values = math.prod(entry["latent_shape"])
    metrics["compression"] = {"pixels_per_latent_value": 3 * height * width / latent_values}
    return {
        "tokenizer": adapter.describe()
        if hasattr(adapter, "describe")
        else {
            "name": adapter.name,
            "spatial_factor": adapter.spatial_factor,
            "latent_channels": adapter.latent_channels,
        },
        "metrics": metrics,
    }


def _evenly_spaced(count: int, total: int) -> torch.Tensor:
    """`count` indices spread evenly over `range(total)` (all of them when `count == total`)."""
    return torch.tensor(sorted({index * total // count for index in range(count)}), dtype=torch.long)


def _resolve_reference_encoder(spec: str, adapters, device):
    if spec == "none":
        return None, "CKNNA skipped: reference_encoder='none'."
    if spec == "auto":
        for adapter in adapters:
            model = getattr(adapter, "model", None)
            if isinstance(model, AlignedAutoencoderKL):
                return AlignTokEncoderFeatures(model, name=f"encoder of {adapter.name}"), None
        return None, (
            "CKNNA skipped: no AlignTok tokenizer among the evaluated ones to take the foundation encoder from; pass "
            "--reference_encoder (e.g. facebook/dinov2-large)."
        )
    reference = FoundationEncoderFeatures.from_pretrained(spec)
    reference.encoder.to(device)
    return reference, None


def _settings_fingerprint(
    config, adapters, feature_extractor, perceptual_network, reference_encoder, num_samples, num_processes
) -> str:
    described = []
    for adapter in adapters:
        description = adapter.describe() if hasattr(adapter, "describe") else {"name": adapter.name}
        described.append({key: description.get(key) for key in ("name", "class_name", "source", "config", "dtype")})
    settings = {
        "config": {
            key: value
            for key, value in to_jsonable(asdict(config)).items()
            if key not in ("num_workers", "save_every_batches", "fid_statistics_cache")
        },
        "num_samples": num_samples,
        "num_processes": num_processes,
        "tokenizers": described,
        "feature_extractor": feature_extractor.name,
        "perceptual": getattr(perceptual_network, "name", None),
        "reference_encoder": reference_encoder.name if reference_encoder is not None else None,
        "state_version": _STATE_VERSION,
    }
    return settings_fingerprint(settings, length=None)


def _make_names_unique(adapters) -> None:
    seen: dict[str, int] = {}
    for adapter in adapters:
        count = seen.get(adapter.name, 0)
        seen[adapter.name] = count + 1
        if count:
            adapter.name = f"{adapter.name} #{count + 1}"
