"""Measure a tokenizer's latent statistics over a data set and (with --write) store them in its config.json.

    accelerate launch training/compute_latent_statistics.py --model runs/imagenet_f16d32/stage3/model \
        --data ILSVRC/imagenet-1k --split train --num_samples 50000 --write

Prints per-channel `latents_mean` / `latents_std` and the global `shift_factor` (mean) and `scaling_factor`
(1 / std) that FLUX-style pipelines use. `--write` updates the model's `config.json` in place (weights untouched) with
one normalisation, chosen by `--normalization`:

- `per-channel` (default): `latents_mean`, `latents_std`, `scaling_factor=1.0`, `shift_factor=0.0`;
  `vae.normalize_latents` then gives zero-mean, unit-std channels (what the class-conditional DiT trains on).
- `global`: `shift_factor`, `scaling_factor`, and no per-channel statistics; what `FluxPipeline` / SD3 apply.

See `diffusers_aligntok/evaluation/latent_statistics.py` for why one config cannot hold both.
"""

import argparse
import json
import logging
from pathlib import Path

import torch

from .latent_statistics import (
    LATENT_NORMALIZATIONS,
    compute_latent_statistics,
    latent_normalization_config,
    write_latent_statistics,
)
from .streaming import build_evaluation_dataset
from .tokenizer_adapters import load_tokenizer


logger = logging.getLogger("compute_latent_statistics")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="Tokenizer directory (or hub id without --write).")
    parser.add_argument("--data", default="builtin:shapes", help="Image folder, shards, hub id or builtin:shapes.")
    parser.add_argument("--split", default="train")
    parser.add_argument(
        "--resolution", type=int, default=None, help="Centre-crop size (default: the model's sample_size)."
    )
    parser.add_argument("--num_samples", type=int, default=10_000)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--num_workers", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0, help="Seed of builtin:shapes.")
    parser.add_argument("--write", action="store_true", help="Update the model's config.json in place.")
    parser.add_argument("--normalization", default="per-channel", choices=LATENT_NORMALIZATIONS)
    parser.add_argument("--output_json", default=None, help="Also write the statistics to this JSON file.")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    from accelerate import Accelerator

    args = parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    accelerator = Accelerator()
    adapter = load_tokenizer(args.model, device=accelerator.device)
    resolution = args.resolution or int(getattr(adapter.model.config, "sample_size", 256) or 256)
    if isinstance(resolution, (list, tuple)):
        resolution = int(resolution[0])
    adapter.check_image_size(resolution, resolution)
    with accelerator.main_process_first():
        dataset = build_evaluation_dataset(args.data, args.split, resolution, args.num_samples, seed=args.seed)
    with torch.no_grad():
        statistics = compute_latent_statistics(
            adapter, dataset, batch_size=args.batch_size, num_workers=args.num_workers, accelerator=accelerator
        )
    summary = {
        "model": args.model,
        "data": {
            "source": args.data,
            "split": args.split,
            "resolution": resolution,
            "crop": "center",
            "description": getattr(dataset, "source_description", args.data),
        },
        "statistics": statistics.to_dict(),
        "written": None,
    }
    if accelerator.is_main_process:
        values = summary["statistics"]
        print(
            f"Latent statistics of {adapter.name} over {values['num_images']} images ({summary['data']['description']}):"
        )
        print(f"  latents_mean   = {[round(value, 6) for value in values['latents_mean']]}")
        print(f"  latents_std    = {[round(value, 6) for value in values['latents_std']]}")
        print(f"  shift_factor   = {values['shift_factor']:.6f}   (global mean; FLUX-style pipelines subtract it)")
        print(f"  scaling_factor = {values['scaling_factor']:.6f}   (1 / global std {values['global_std']:.6f})")
        if args.write:
            summary["written"] = {
                "normalization": args.normalization,
                "fields": write_latent_statistics(args.model, statistics, args.normalization),
            }
            print(f"Wrote {args.normalization} normalisation to {args.model}: {summary['written']['fields']}")
            if args.normalization == "per-channel":
                print(
                    "  FLUX/SD3 pipelines read only shift_factor/scaling_factor (now 0.0/1.0): for a FluxPipeline, "
                    "rerun with --normalization global."
                )
        else:
            print(
                f"Not written (pass --write). --normalization {args.normalization} would write: "
                f"{latent_normalization_config(statistics, args.normalization)}"
            )
        if args.output_json:
            Path(args.output_json).write_text(json.dumps(summary, indent=2) + "\n")
    accelerator.wait_for_everyone()
    return summary
