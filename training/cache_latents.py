#!/usr/bin/env python
"""Encode a data set once into a latent cache for DiT training (with horizontally flipped copies).

    accelerate launch training/cache_latents.py --tokenizer runs/imagenet_f16d32/stage3/model \
        --data ILSVRC/imagenet-1k --resolution 256 --output_dir cache/imagenet256_aligntok

Each process encodes its share of the shards; existing shards are skipped, so a killed run resumes by re-running the
same command. The metadata records the tokenizer (path, config, weight fingerprint) and the latent statistics used to
normalise latents in training: the tokenizer config's `latents_mean`/`latents_std` when set, else measured here.
"""

import argparse
import logging
import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a source checkout without installing

import torch  # noqa: E402
from accelerate import Accelerator  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from diffusers_aligntok import AlignedAutoencoderKL  # noqa: E402
from diffusers_aligntok.data import ImageDatasetConfig, build_image_dataset  # noqa: E402
from diffusers_aligntok.training.latent_cache import (  # noqa: E402
    per_channel_statistics,
    shard_path,
    tokenizer_fingerprint,
    write_metadata,
    write_shard,
)


logger = logging.getLogger("cache_latents")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizer", required=True, help="AlignedAutoencoderKL directory or hub id.")
    parser.add_argument("--data", default="builtin:shapes", help="Data source (see ImageDatasetConfig.source).")
    parser.add_argument("--split", default="train")
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--num_builtin_samples", type=int, default=2048)
    parser.add_argument("--max_samples", type=int, default=None)
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--shard_size", type=int, default=4096, help="Items per shard file.")
    parser.add_argument("--no_flip", action="store_true", help="Do not also cache horizontally flipped latents.")
    parser.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "bfloat16", "float16"],
        help="Storage dtype of the latents (bfloat16 halves the disk; DiT training runs in bf16).",
    )
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


@torch.no_grad()
def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    accelerator = Accelerator()
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    with accelerator.main_process_first():
        dataset = build_image_dataset(
            ImageDatasetConfig(
                source=args.data,
                split=args.split,
                resolution=args.resolution,
                center_crop=True,
                random_flip=False,
                max_samples=args.max_samples,
                num_builtin_samples=args.num_builtin_samples,
                seed=args.seed,
            )
        )
    if getattr(dataset, "num_classes", None) is None:
        raise ValueError(f"{args.data} has no class labels; class-conditional DiT training needs them.")
    tokenizer = AlignedAutoencoderKL.from_pretrained(args.tokenizer).to(accelerator.device).eval()
    storage_dtype = getattr(torch, args.dtype)

    num_shards = -(-len(dataset) // args.shard_size)
    my_shards = [k for k in range(num_shards) if k % accelerator.num_processes == accelerator.process_index]
    todo = [k for k in my_shards if not shard_path(output_dir, k).is_file()]
    if len(todo) < len(my_shards):
        logger.info(
            f"Rank {accelerator.process_index}: {len(my_shards) - len(todo)} shards already cached; skipping them."
        )
    num_skipped = 0
    for shard_index in tqdm(todo, desc="shards", disable=not accelerator.is_local_main_process):
        indices = range(shard_index * args.shard_size, min((shard_index + 1) * args.shard_size, len(dataset)))
        latents, flipped, labels = [], [], []
        for start in range(0, len(indices), args.batch_size):
            items = [dataset[i] for i in indices[start : start + args.batch_size]]
            num_skipped += sum(item["num_skipped"] for item in items)
            images = torch.stack([item["pixel_values"] for item in items]).to(accelerator.device)
            latents.append(tokenizer.encode(images).latent_dist.mode().to("cpu", storage_dtype))
            if not args.no_flip:
                flipped.append(tokenizer.encode(images.flip(-1)).latent_dist.mode().to("cpu", storage_dtype))
            labels.extend(item["label"] for item in items)
        tensors = {"latents": torch.cat(latents), "labels": torch.tensor(labels, dtype=torch.int64)}
        if flipped:
            tensors["latents_flipped"] = torch.cat(flipped)
        write_shard(output_dir, shard_index, tensors)
    accelerator.wait_for_everyone()

    if accelerator.is_main_process:
        shards = [shard_path(output_dir, k) for k in range(num_shards)]
        config = tokenizer.config
        if config.latents_mean is not None:
            mean, std, source = list(config.latents_mean), list(config.latents_std), "tokenizer config"
        else:
            (mean, std), source = per_channel_statistics(shards), "measured over this cache"
        sample = dataset[0]["pixel_values"]
        factor = tokenizer.spatial_compression_ratio
        write_metadata(
            output_dir,
            {
                "tokenizer": {
                    "path": str(args.tokenizer),
                    "class_name": type(tokenizer).__name__,
                    "fingerprint": tokenizer_fingerprint(tokenizer),
                    "config": dict(config),
                },
                "latent_statistics": {"mean": mean, "std": std, "scaling_factor": 1.0, "source": source},
                "latent_shape": [config.latent_channels, sample.shape[-2] // factor, sample.shape[-1] // factor],
                "num_samples": len(dataset),
                "num_classes": dataset.num_classes,
                "shard_size": args.shard_size,
                "flipped": not args.no_flip,
                "dtype": args.dtype,
                "data": {
                    "source": args.data,
                    "split": args.split,
                    "resolution": args.resolution,
                    "center_crop": True,
                    "description": getattr(dataset, "source_description", args.data),
                },
                "skipped_corrupt_images": num_skipped,
            },
        )
        logger.info(f"Cached {len(dataset)} latents in {num_shards} shards under {output_dir} (statistics: {source}).")
    return output_dir


if __name__ == "__main__":
    main()
