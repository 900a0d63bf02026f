"""Images/s the training data pipelines deliver, with their recipes' DataLoader settings, against the steps they feed.

Nothing is downloaded: a temporary folder of JPEG (80%) and PNG (20%) images is generated first with PIL (random
sizes with the short side 1-1.6x the training resolution and aspect ratios from 1:1 to 16:9, like ImageNet / LAION
photos; smooth colour fields plus noise, so the files compress like photos rather than like flat colour), and the
caches are written in their real formats through the cache modules' own `write_shard` / `write_metadata`.

| pipeline | data set and loader (as its training loop builds them) | recipe config |
|---|---|---|
| `tokenizer_images` | `data.build_image_dataset` on an ImageNet-layout folder (decode, cover-resize, centre crop, flip), shuffled `DataLoader`, `drop_last` | `imagenet_f16d32.yaml` |
| `dit_latents` | `CachedLatentDataset` over a synthetic f16d32 latent cache (32x16x16 fp32, with flipped copies, shards of 2048) | `dit_xl_imagenet_64ep.yaml` |
| `t2i_buckets` | `data.build_text_image_dataset` on an image + caption folder, aspect buckets (`make_buckets`), `BucketBatchSampler`, `collate_text_image_batch` (pixels and captions; the VAE and T5 encodes come after) | `t2i_2b_{256,512}_aligntok.yaml` |
| `t2i_cache` | `CachedTextImageDataset` over a synthetic cache (latent means, 256 x 4096 bf16 T5 embeddings, CLIP pooled), `collate_cached_batch` | same |

Each pipeline runs with its recipe's `dataloader_num_workers` and per-GPU batch size, and in-process (0 workers: the
rate of one core, the number to multiply by the cores a GPU host has). The small data sets are repeated (item `i` is
item `i % n` decoded again), so a run lasts long enough for a steady state: the workers start together and deliver
in waves of `workers` batches, so "steady" images/s is taken over two whole waves after the first; "overall" includes
the workers' start-up. Caches are read right after
being written, so from the page cache: a real 1.28M-image latent cache (~84 GB with flips) may come from disk.

Each row is compared with the images/s of the step it feeds, from `training_speed.json` in the output directory when
present (run `benchmarks/training_speed.py` first): a pipeline slower than its step would starve it. Because CPU steps
are slow, the table also gives an H200 estimate: the step's counted FLOPs per image at an assumed 40% MFU of the
989.4 TFLOP/s bf16 peak, and how many cores of this CPU the pipeline would need to keep up with that.

Usage:
    python benchmarks/data_speed.py --quick          # ~20 s: 256 only, fewer images, recipe workers only
    python benchmarks/data_speed.py                  # 256 and 512, recipe workers and in-process, ~1 min on 2 idle cores
Writes `<output_dir>/data_speed.{json,md}` (default `benchmarks/results/`).
"""

import argparse
import json
import math
import os
import tempfile
import time
from pathlib import Path


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from benchmark_utils import machine_description, write_results  # noqa: E402
from PIL import Image  # noqa: E402


ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "training" / "configs"
PIPELINES = ("tokenizer_images", "dit_latents", "t2i_buckets", "t2i_cache")
ASPECT_RATIOS = ((1, 1), (4, 3), (3, 4), (3, 2), (2, 3), (16, 9), (5, 4))
H200_BF16_PEAK_TFLOPS, ASSUMED_MFU = 989.4, 0.40
T5_TOKENS, T5_WIDTH, CLIP_WIDTH = 256, 4096, 768


class RepeatedDataset(torch.utils.data.Dataset):
    """`times` passes over a map-style data set; every item is loaded (decoded, augmented) again on each pass."""

    def __init__(self, base, times: int):
        self.base, self.times = base, max(1, times)

    def __len__(self) -> int:
        return len(self.base) * self.times

    def __getitem__(self, index: int):
        return self.base[int(index) % len(self.base)]


# ---------------------------------------------------------------------------------------------------------------
# Synthetic data on disk
# ---------------------------------------------------------------------------------------------------------------


def photo_like(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """A smooth random colour field with noise: compresses like a photograph (not like a flat or white-noise one)."""
    coarse = rng.uniform(0, 255, size=(4, 4, 3)).astype(np.float32)
    field = np.asarray(Image.fromarray(coarse.astype(np.uint8)).resize((width, height), Image.Resampling.BICUBIC))
    noisy = field.astype(np.float32) + rng.normal(0, 12, size=(height, width, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def write_image_folders(root: Path, resolution: int, count: int, seed: int = 0) -> dict:
    """`count` images as an ImageNet-layout folder (`classes/<class>/`) and as an image + caption folder (`captions/`)."""
    rng = np.random.default_rng(seed + resolution)
    classes, captions = root / "classes", root / "captions"
    total_bytes, sizes = 0, []
    for index in range(count):
        ratio_w, ratio_h = ASPECT_RATIOS[index % len(ASPECT_RATIOS)]
        if rng.random() < 0.5:
            ratio_w, ratio_h = ratio_h, ratio_w
        short = int(resolution * rng.uniform(1.0, 1.6))
        scale = short / min(ratio_w, ratio_h)
        width, height = round(ratio_w * scale), round(ratio_h * scale)
        image = photo_like(rng, width, height)
        suffix = ".png" if index % 5 == 4 else ".jpg"
        class_dir = classes / f"class_{index % 10:02d}"
        class_dir.mkdir(parents=True, exist_ok=True)
        path = class_dir / f"image_{index:04d}{suffix}"
        image.save(path, quality=90) if suffix == ".jpg" else image.save(path)
        captions.mkdir(parents=True, exist_ok=True)
        caption_path = captions / path.name
        try:
            os.link(path, caption_path)
        except OSError:
            caption_path.write_bytes(path.read_bytes())
        caption_path.with_suffix(".txt").write_text(f"a photograph of a colourful pattern number {index}")
        total_bytes += path.stat().st_size
        sizes.append((width, height))
    return {
        "count": count,
        "mean_file_kib": round(total_bytes / count / 1024, 1),
        "mean_size": [round(float(np.mean([s[0] for s in sizes]))), round(float(np.mean([s[1] for s in sizes])))],
        "png_fraction": 0.2,
    }


def write_latent_cache(cache_dir: Path, num_samples: int, shard_size: int = 2048) -> dict:
    from diffusers_aligntok.training.dit.latent_cache import write_metadata, write_shard

    cache_dir.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(0)
    shape = (32, 16, 16)  # AlignTok f16d32 at 256
    for shard in range(-(-num_samples // shard_size)):
        rows = min(shard_size, num_samples - shard * shard_size)
        write_shard(
            cache_dir,
            shard,
            {
                "latents": torch.randn(rows, *shape, generator=generator),
                "latents_flipped": torch.randn(rows, *shape, generator=generator),
                "labels": torch.randint(0, 1000, (rows,), generator=generator),
            },
        )
    write_metadata(
        cache_dir,
        {
            "tokenizer": {"path": "synthetic", "class_name": "AlignedAutoencoderKL", "fingerprint": "synthetic"},
            "latent_statistics": {"mean": [0.0] * 32, "std": [1.0] * 32, "scaling_factor": 1.0, "source": "synthetic"},
            "latent_shape": list(shape),
            "num_samples": num_samples,
            "num_classes": 1000,
            "shard_size": shard_size,
            "flipped": True,
            "dtype": "float32",
            "data": {"source": "synthetic benchmark cache"},
        },
    )
    return {"num_samples": num_samples, "latent_shape": list(shape), "bytes_per_item": 2 * 4 * math.prod(shape)}


def write_t2i_cache(cache_dir: Path, num_items: int, resolution: int, shard_size: int = 64) -> dict:
    from safetensors.torch import save_file

    from diffusers_aligntok.training.dit.latent_cache import write_metadata, write_shard
    from diffusers_aligntok.training.t2i_cache import EMPTY_CAPTION_FILE

    cache_dir.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(0)
    latent = (32, resolution // 16, resolution // 16)  # the AlignTok arm (the FLUX arm's 16 x h/8 x w/8 is as big)
    for shard in range(-(-num_items // shard_size)):
        tensors = {}
        for index in range(shard * shard_size, min(num_items, (shard + 1) * shard_size)):
            tensors[f"{index}.latent_mean"] = torch.randn(*latent, generator=generator)
            # Under bf16 training the text encoders run in bf16, so the cache holds bf16 embeddings.
            tensors[f"{index}.prompt_embeds"] = torch.randn(T5_TOKENS, T5_WIDTH, generator=generator).bfloat16()
            tensors[f"{index}.pooled_prompt_embeds"] = torch.randn(CLIP_WIDTH, generator=generator).bfloat16()
        write_shard(cache_dir, shard, tensors)
    save_file(
        {
            "prompt_embeds": torch.zeros(T5_TOKENS, T5_WIDTH, dtype=torch.bfloat16),
            "pooled_prompt_embeds": torch.zeros(CLIP_WIDTH, dtype=torch.bfloat16),
        },
        str(cache_dir / EMPTY_CAPTION_FILE),
    )
    write_metadata(
        cache_dir, {"complete": True, "shard_size": shard_size, "bucket_of": [0] * num_items, "synthetic": True}
    )
    return {"num_items": num_items, "bytes_per_item": 4 * math.prod(latent) + 2 * (T5_TOKENS * T5_WIDTH + CLIP_WIDTH)}


# ---------------------------------------------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------------------------------------------


def batch_size_of(batch) -> int:
    for value in batch.values():
        if torch.is_tensor(value):
            return int(value.shape[0])
    raise ValueError("batch without tensors")


def measure(make_loader, workers: int, batch_size: int, time_cap: float, waves: int = 2) -> dict:
    """Images/s of a fresh DataLoader: overall (with the workers' start-up) and steady.

    The workers start together, so batches first arrive in waves of `workers`; the steady rate is taken over whole
    waves, from the first batch of the second wave to the first batch `waves` waves later (in-process: after the
    first batch), which stays right once the waves blur. Stops there, or `time_cap` seconds after the first batch.
    """
    loader = make_loader(workers)
    wave = max(1, workers)
    start_index, end_index = wave, wave * (1 + waves)
    started = time.perf_counter()
    arrivals, images = [], []
    iterator = iter(loader)
    try:
        for batch in iterator:
            arrivals.append(time.perf_counter() - started)
            images.append(batch_size_of(batch))
            if len(arrivals) > end_index or arrivals[-1] - arrivals[0] > time_cap:
                break
    finally:
        del iterator  # shuts the workers down
    last = start_index + (len(arrivals) - 1 - start_index) // wave * wave  # whole waves only
    steady = None
    if last > start_index:
        steady = sum(images[start_index + 1 : last + 1]) / (arrivals[last] - arrivals[start_index])
    return {
        "workers": workers,
        "batch_size": batch_size,
        "batches": len(arrivals),
        "images": sum(images),
        "first_batch_s": round(arrivals[0], 3),
        "wall_s": round(arrivals[-1], 3),
        "overall_images_per_s": sum(images) / arrivals[-1],
        "steady_images_per_s": steady,
        "steady_window_batches": max(0, last - start_index),
    }


def loader_factory(dataset, batch_size: int, seed: int, sampler_bucket_of=None, collate_fn=None):
    """DataLoaders built as the training loops build them (shuffled + drop_last, or a bucket batch sampler)."""
    from diffusers_aligntok.data import BucketBatchSampler

    def make(workers: int):
        generator = torch.Generator().manual_seed(seed)
        if sampler_bucket_of is not None:
            sampler = BucketBatchSampler(sampler_bucket_of, batch_size, seed=seed)
            return torch.utils.data.DataLoader(
                dataset, batch_sampler=sampler, collate_fn=collate_fn, num_workers=workers, generator=generator
            )
        return torch.utils.data.DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=True,
            num_workers=workers,
            drop_last=True,
            persistent_workers=False,
            collate_fn=collate_fn,
            generator=generator,
        )

    return make


def repeats_for(length: int, batch_size: int, workers: int, waves: int = 2) -> int:
    return max(1, math.ceil((max(1, workers) * (1 + waves) + 2) * batch_size / length))


# ---------------------------------------------------------------------------------------------------------------
# Pipelines
# ---------------------------------------------------------------------------------------------------------------


def pipeline_tokenizer_images(args, work: Path, resolution: int):
    from diffusers_aligntok.data import ImageDatasetConfig, build_image_dataset
    from diffusers_aligntok.training.config import load_stage_config

    config = load_stage_config(CONFIGS / "imagenet_f16d32.yaml", 2)
    data = config.data
    dataset = build_image_dataset(
        ImageDatasetConfig(
            source=str(work / f"images_{resolution}" / "classes"),
            resolution=resolution,
            center_crop=data.center_crop,
            random_flip=data.random_flip,
            cache_dir=str(work / "datasets_cache"),
        )
    )
    batch = args.batch_size or (8 if args.quick else config.training.train_batch_size)
    setting = (
        f"ImageNet-layout folder, {len(dataset)} images (JPEG/PNG), decode + cover-resize + "
        f"{'centre' if data.center_crop else 'random'} crop {resolution} + flip"
    )
    return dataset, batch, data.dataloader_num_workers, None, None, setting


def pipeline_dit_latents(args, work: Path, resolution: int):
    from diffusers_aligntok.training.dit.latent_cache import CachedLatentDataset
    from diffusers_aligntok.training.dit_config import load_dit_config

    config = load_dit_config(CONFIGS / "dit_xl_imagenet_64ep.yaml")
    cache_dir = work / "latent_cache"
    if not cache_dir.is_dir():
        write_latent_cache(cache_dir, 1024 if args.quick else 4096)
    dataset = CachedLatentDataset(cache_dir, random_flip=config.data.random_flip, seed=0)
    batch = args.batch_size or (32 if args.quick else config.training.train_batch_size)
    setting = f"latent cache, {len(dataset)} x 32x16x16 fp32 (+ flipped copies), random flip"
    return dataset, batch, config.data.dataloader_num_workers, None, None, setting


def _t2i_config(resolution: int):
    from diffusers_aligntok.training.t2i_config import load_t2i_config

    name = "t2i_2b_512_aligntok.yaml" if resolution >= 512 else "t2i_2b_256_aligntok.yaml"
    return name, load_t2i_config(CONFIGS / name, {"data.resolution": resolution})


def pipeline_t2i_buckets(args, work: Path, resolution: int):
    from diffusers_aligntok.data import build_text_image_dataset, collate_text_image_batch, make_buckets

    name, config = _t2i_config(resolution)
    data = config.data
    data.source = str(work / f"images_{resolution}" / "captions")
    buckets = make_buckets(data.resolution, data.aspect_ratios, config.model.pixels_per_token)
    dataset = build_text_image_dataset(data, buckets)
    batch = args.batch_size or (4 if args.quick else config.training.train_batch_size)
    setting = (
        f"image + caption folder, {len(dataset)} pairs in {len(buckets)} bucket(s) of {name} "
        f"({', '.join(str(b) for b in buckets[:3])}{', ...' if len(buckets) > 3 else ''}), resize + centre crop"
    )
    return dataset, batch, data.dataloader_num_workers, dataset.bucket_of, collate_text_image_batch, setting


def pipeline_t2i_cache(args, work: Path, resolution: int):
    from diffusers_aligntok.training.t2i_cache import CachedTextImageDataset, collate_cached_batch

    name, config = _t2i_config(resolution)
    cache_dir = work / f"t2i_cache_{resolution}"
    if not cache_dir.is_dir():
        write_t2i_cache(cache_dir, 64 if args.quick else 128, resolution)
    dataset = CachedTextImageDataset(cache_dir)
    batch = args.batch_size or (4 if args.quick else config.training.train_batch_size)
    setting = (
        f"t2i cache ({name}), {len(dataset)} items: 32x{resolution // 16}x{resolution // 16} latent + "
        f"{T5_TOKENS}x{T5_WIDTH} bf16 T5 + {CLIP_WIDTH} pooled"
    )
    return dataset, batch, config.data.dataloader_num_workers, dataset.bucket_of, collate_cached_batch, setting


BUILDERS = {
    "tokenizer_images": pipeline_tokenizer_images,
    "dit_latents": pipeline_dit_latents,
    "t2i_buckets": pipeline_t2i_buckets,
    "t2i_cache": pipeline_t2i_cache,
}
# Which training_speed.py rows each pipeline feeds (at the same resolution; the DiT steps run at 256).
CONSUMERS = {
    "tokenizer_images": ("tokenizer_stage2",),
    "dit_latents": ("dit_B", "dit_XL"),
    "t2i_buckets": ("t2i_aligntok", "t2i_flux_vae"),
    "t2i_cache": ("t2i_aligntok", "t2i_flux_vae"),
}


def load_steps(output_dir: Path) -> tuple[list[dict], str | None]:
    path = output_dir / "training_speed.json"
    if not path.is_file():
        return [], None
    results = json.loads(path.read_text())
    rows = [row for row in results.get("rows", []) if row.get("status") == "ok"]
    machine = results.get("machine", {})
    where = machine.get("gpu") or f"CPU, {machine.get('torch_threads')} threads"
    label = f"{path.name} ({machine.get('date')}, {where}{', QUICK tiny presets' if machine.get('quick') else ''})"
    return rows, label


def comparisons(row: dict, steps: list[dict], per_core: float | None) -> list[dict]:
    out = []
    for step in steps:
        if step["model"] not in CONSUMERS[row["pipeline"]]:
            continue
        if row["pipeline"] != "dit_latents" and step.get("resolution") != row["resolution"]:
            continue
        flops = step.get("flops_per_step_full_depth", step["flops_per_step"]) / step["batch_size"]
        h200 = ASSUMED_MFU * H200_BF16_PEAK_TFLOPS * 1e12 / flops
        data = row["recipe_workers"]["steady_images_per_s"] or row["recipe_workers"]["overall_images_per_s"]
        ratio = data / step["images_per_s"]
        out.append(
            {
                "step": step["model"],
                "step_resolution": step.get("resolution"),
                "step_images_per_s": step["images_per_s"],
                "data_over_step": ratio,
                "starves": ratio < 1,
                "h200_step_images_per_s_estimate": h200,
                "cores_needed_for_h200_estimate": h200 / per_core if per_core else None,
            }
        )
    return out


def run(args) -> dict:
    torch.set_num_threads(1)  # the loader's own work; workers are single-threaded as in training
    out = Path(args.output_dir)
    steps, steps_source = load_steps(out)
    rows = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="data_speed_") as temporary:
        work = Path(temporary)
        images = {}
        needs_images = {"tokenizer_images", "t2i_buckets"} & set(args.pipelines)
        for resolution in args.resolutions if needs_images else []:
            t0 = time.monotonic()
            images[resolution] = write_image_folders(work / f"images_{resolution}", resolution, args.num_images)
            images[resolution]["write_s"] = round(time.monotonic() - t0, 1)
            print(f"wrote {args.num_images} images at {resolution}: {images[resolution]}", flush=True)
        for name in args.pipelines:
            for resolution in [256] if name == "dit_latents" else args.resolutions:
                print(f"\n## {name} {resolution}", flush=True)
                row = {"pipeline": name, "resolution": resolution, "status": "ok"}
                try:
                    t0 = time.monotonic()
                    dataset, batch, recipe_workers, bucket_of, collate, setting = BUILDERS[name](
                        args, work, resolution
                    )
                    row.update(setting=setting, batch_size=batch, setup_s=round(time.monotonic() - t0, 1))
                    worker_counts = [args.num_workers if args.num_workers is not None else recipe_workers]
                    if not args.quick and 0 not in worker_counts:
                        worker_counts.append(0)
                    for workers in worker_counts:
                        times = repeats_for(len(dataset), batch, workers)
                        repeated = RepeatedDataset(dataset, times)
                        repeated_buckets = list(bucket_of) * times if bucket_of is not None else None
                        make = loader_factory(repeated, batch, 0, repeated_buckets, collate)
                        result = measure(make, workers, batch, args.time_cap)
                        key = "recipe_workers" if workers == worker_counts[0] else "in_process"
                        row[key] = result
                        print(
                            f"  {setting}\n  {workers} workers, batch {batch}: steady "
                            f"{result['steady_images_per_s'] or float('nan'):.1f} img/s, overall "
                            f"{result['overall_images_per_s']:.1f} img/s ({result['batches']} batches, first after "
                            f"{result['first_batch_s']}s)",
                            flush=True,
                        )
                    single = row.get("in_process") or (row["recipe_workers"] if worker_counts[0] == 0 else None)
                    per_core = (single["steady_images_per_s"] or single["overall_images_per_s"]) if single else None
                    row["images_per_s_per_core"] = per_core
                    row["comparisons"] = comparisons(row, steps, per_core)
                except Exception as error:  # noqa: BLE001 - one pipeline failing must not lose the others
                    import traceback

                    traceback.print_exc()
                    row["status"] = f"error: {type(error).__name__}: {error}"
                rows.append(row)
    return {
        "machine": machine_description(
            torch.device("cpu"), load_average_at_start=args.load_average_at_start, quick=args.quick
        ),
        "images": {str(k): v for k, v in images.items()},
        "steps_source": steps_source,
        "assumed_h200": {"bf16_peak_tflops": H200_BF16_PEAK_TFLOPS, "mfu": ASSUMED_MFU},
        "wall_s": round(time.monotonic() - started, 1),
        "rows": rows,
    }


def _fmt(value) -> str:
    if value is None:
        return "-"
    return f"{value:.3g}" if value < 1000 else f"{value:,.0f}"


def markdown(results: dict) -> str:
    machine = results["machine"]
    lines = [
        "# Data pipeline speed" + (" (--quick: fewer images, smaller batches)" if machine["quick"] else ""),
        "",
        f"{machine['date']}; `{machine['command']}`; CPU {machine['cpu']}, {machine['cpu_count']} cores, load "
        f"average at start {', '.join(map(str, machine['load_average_at_start']))}; torch {machine['torch']}. "
        "Synthetic images: "
        + "; ".join(
            f"{res}: {v['count']} files, mean {v['mean_size'][0]}x{v['mean_size'][1]}, {v['mean_file_kib']} KiB"
            for res, v in results["images"].items()
        )
        + ". Steady = over whole waves of batches after the first wave (see the script's docstring).",
        "",
        "| pipeline | setting | px | batch | recipe workers | img/s steady | img/s overall | first batch s | "
        "in-process (1 core) img/s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in results["rows"]:
        if row["status"] != "ok":
            lines.append(f"| {row['pipeline']} | - | {row['resolution']} | | | | | | {row['status']} |")
            continue
        recipe = row["recipe_workers"]
        single = row.get("in_process")
        lines.append(
            f"| {row['pipeline']} | {row['setting']} | {row['resolution']} | {row['batch_size']} | {recipe['workers']} | "
            f"{_fmt(recipe['steady_images_per_s'])} | {_fmt(recipe['overall_images_per_s'])} | "
            f"{recipe['first_batch_s']} | "
            f"{_fmt((single['steady_images_per_s'] or single['overall_images_per_s']) if single else None)} |"
        )
    lines += ["", "## Would the data starve the step?", ""]
    if not results["steps_source"]:
        lines.append("No `training_speed.json` in the output directory: run `benchmarks/training_speed.py` first.")
    else:
        lines += [
            f"Step rates from {results['steps_source']}. H200 estimate: the step's counted FLOPs per image at "
            f"{100 * ASSUMED_MFU:.0f}% of {H200_BF16_PEAK_TFLOPS} TFLOP/s (an assumption, not a measurement); cores "
            "needed = that rate / the in-process (one-core) rate of this CPU.",
            "",
            "| pipeline | px | feeds | step img/s (measured) | data img/s (recipe workers) | data / step | "
            "starves here? | H200 step img/s (estimate) | cores to feed it |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for row in results["rows"]:
            for c in row.get("comparisons", []):
                recipe = row["recipe_workers"]
                lines.append(
                    f"| {row['pipeline']} | {row['resolution']} | {c['step']} ({c['step_resolution']}) | "
                    f"{_fmt(c['step_images_per_s'])} | "
                    f"{_fmt(recipe['steady_images_per_s'] or recipe['overall_images_per_s'])} | "
                    f"{_fmt(c['data_over_step'])} | {'YES' if c['starves'] else 'no'} | "
                    f"{_fmt(c['h200_step_images_per_s_estimate'])} | {_fmt(c['cores_needed_for_h200_estimate'])} |"
                )
        lines += [
            "",
            "`t2i_buckets` feeds the VAE + T5 encodes before the transformer step (not timed here, so the data rate "
            "needed is the step's); with `data.cache_dir` set, `t2i_cache` feeds the step directly.",
        ]
    return "\n".join(lines) + "\n"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="256 only, fewer images, recipe workers only (~20 s)")
    parser.add_argument("--pipelines", nargs="+", choices=PIPELINES, default=list(PIPELINES))
    parser.add_argument("--resolutions", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--num_images", type=int, default=200, help="synthetic images per resolution")
    parser.add_argument("--batch_size", type=int, default=None, help="default: each recipe's per-GPU batch")
    parser.add_argument("--num_workers", type=int, default=None, help="default: each recipe's dataloader workers")
    parser.add_argument("--time_cap", type=float, default=None, help="seconds per measurement after the first batch")
    parser.add_argument("--output_dir", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    if args.quick:
        args.resolutions = [256]
        args.num_images = min(args.num_images, 48)
    args.time_cap = args.time_cap or (3.0 if args.quick else 30.0)
    args.load_average_at_start = [round(x, 2) for x in os.getloadavg()]
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    results = run(args)
    write_results(args.output_dir, "data_speed", results, markdown(results))
    return results


if __name__ == "__main__":
    main()
