"""`aligntok-evaluate-tokenizer` (also `training/evaluate_tokenizer.py`): evaluate one or more image tokenizers side by side: rFID, PSNR, SSIM, LPIPS, linear probe, CKNNA.

The published protocol (ImageNet-val, 50,000 images, 256x256 centre crops, clean-fid Inception, LPIPS-VGG):

    accelerate launch training/evaluate_tokenizer.py \
        --tokenizers runs/aligntok-imagenet-f16d32/stage3/model black-forest-labs/FLUX.1-dev \
        --output_dir eval/aligntok-vs-flux

Offline smoke run on a folder of images, with clearly named random stand-ins for the feature networks:

    python training/evaluate_tokenizer.py --tokenizers runs/tiny/stage3/model flux-vae-random \
        --data images/ --resolution 32 --num_samples 64 --output_dir eval/tiny \
        --feature_extractor random-inception-standin --perceptual lpips-vgg-random-trunk

Writes `results.json` (every setting, versions, tokenizer configs, metrics, warnings), `results.md` (a short table) and
`reconstructions.png` to `--output_dir`. A killed run continues with `--resume` (same settings). Tokenizers: a
`save_pretrained` directory, a diffusers pipeline directory or hub id (its `vae/`), or `flux-vae-random`.
"""

import argparse
import logging
from pathlib import Path

from ..losses import PERCEPTUAL_NETWORKS
from .metrics.fid import FEATURE_EXTRACTORS
from .metrics.linear_probe import LINEAR_PROBE_POOLINGS
from .tokenizer import TokenizerEvaluationConfig, evaluate_tokenizers


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = TokenizerEvaluationConfig()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--tokenizers", nargs="+", required=True, help="Tokenizer directories / hub ids / flux-vae-random."
    )
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--data", default=defaults.data, help="Image folder, shards, hub id or builtin:shapes.")
    parser.add_argument(
        "--split", default=None, help="Default: validation for hub data sets, train for local folders."
    )
    parser.add_argument("--resolution", type=int, default=defaults.resolution, help="Centre-crop size.")
    parser.add_argument("--num_samples", type=int, default=defaults.num_samples)
    parser.add_argument("--batch_size", type=int, default=defaults.batch_size)
    parser.add_argument("--num_workers", type=int, default=defaults.num_workers)
    parser.add_argument("--feature_extractor", default=defaults.feature_extractor, choices=FEATURE_EXTRACTORS)
    parser.add_argument("--perceptual", default=defaults.perceptual, choices=[*PERCEPTUAL_NETWORKS, "none"])
    parser.add_argument(
        "--perceptual_trunk_weights_path", default=None, help="Local torchvision VGG16 weights (offline LPIPS)."
    )
    parser.add_argument("--fid_statistics_cache", default=None, help="Directory of cached reference FID statistics.")
    parser.add_argument("--no_quantize", action="store_true", help="Do not round reconstructions to 8 bits.")
    parser.add_argument("--no_linear_probe", action="store_true")
    parser.add_argument("--linear_probe_pooling", default=defaults.linear_probe_pooling, choices=LINEAR_PROBE_POOLINGS)
    parser.add_argument(
        "--reference_encoder",
        default=defaults.reference_encoder,
        help="For CKNNA: 'auto' (the first AlignTok tokenizer's encoder), 'none', or a transformers checkpoint.",
    )
    parser.add_argument("--cknna_num_samples", type=int, default=defaults.cknna_num_samples)
    parser.add_argument("--cknna_topk", type=int, default=defaults.cknna_topk)
    parser.add_argument("--num_visualization_images", type=int, default=defaults.num_visualization_images)
    parser.add_argument("--save_every_batches", type=int, default=defaults.save_every_batches)
    parser.add_argument("--dtype", default=defaults.dtype, choices=["float32", "bfloat16"])
    parser.add_argument("--seed", type=int, default=defaults.seed, help="Seed of builtin:shapes.")
    parser.add_argument("--image_column", default=None)
    parser.add_argument("--label_column", default=None)
    parser.add_argument("--resume", action="store_true", help="Continue a killed run from <output_dir>/partial_state.")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict | None:
    args = parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    config = TokenizerEvaluationConfig(
        tokenizers=args.tokenizers,
        data=args.data,
        split=args.split,
        resolution=args.resolution,
        num_samples=args.num_samples,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        feature_extractor=args.feature_extractor,
        perceptual=None if args.perceptual == "none" else args.perceptual,
        perceptual_trunk_weights_path=args.perceptual_trunk_weights_path,
        fid_statistics_cache=args.fid_statistics_cache,
        quantize_reconstructions=not args.no_quantize,
        linear_probe=not args.no_linear_probe,
        linear_probe_pooling=args.linear_probe_pooling,
        reference_encoder=args.reference_encoder,
        cknna_num_samples=args.cknna_num_samples,
        cknna_topk=args.cknna_topk,
        num_visualization_images=args.num_visualization_images,
        save_every_batches=args.save_every_batches,
        dtype=args.dtype,
        seed=args.seed,
        image_column=args.image_column,
        label_column=args.label_column,
    )
    results = evaluate_tokenizers(config, args.output_dir, resume=args.resume)
    if results is not None:
        print((Path(args.output_dir) / "results.md").read_text())
    return results
