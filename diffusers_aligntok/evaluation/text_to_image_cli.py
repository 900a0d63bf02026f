"""Evaluate a text-to-image pipeline: gFID against a reference image folder, CLIP score, GenEval export.

The paper's COCO-6K protocol (6,000 COCO val captions, one 256x256 sample each, gFID against those 6,000 COCO images
with clean-fid's Inception, CLIP score with openai/clip-vit-large-patch14), on every GPU accelerate gives it, with
real classifier-free guidance (our models have guidance_embeds=False):

    accelerate launch training/evaluate_t2i.py --pipeline runs/t2i_aligntok/pipeline \
        --prompts coco6k/captions.txt --reference_dir coco6k/images --guidance_scale 4.0 \
        --output_dir eval/t2i_aligntok_cfg4

A guidance-scale sweep (every scale on the same prompts and noise; the lowest gFID is marked) plus GenEval's prompts
written in GenEval's layout (score them with GenEval's evaluation/evaluate_images.py; not run here, it needs
mmdetection):

    accelerate launch training/evaluate_t2i.py --pipeline runs/t2i_aligntok/pipeline \
        --prompts coco6k/captions.txt --reference_dir coco6k/images --cfg_sweep 1.0,3.0,4.0,5.0 \
        --geneval_metadata geneval/prompts/evaluation_metadata.jsonl --output_dir eval/t2i_aligntok_sweep

Offline smoke run with the clearly named stand-ins (their numbers are not FID or CLIP scores):

    python training/evaluate_t2i.py --pipeline runs/tiny_t2i/pipeline --prompts prompts.txt --height 32 --width 48 \
        --num_inference_steps 4 --reference_dir images/ --feature_extractor random-inception-standin \
        --clip_model random-clip-standin --output_dir eval/tiny_t2i

Writes `results.json` (every knob, pipeline and VAE configs, prompt-file hash and counts, metrics with
`is_real_metric` flags, versions), `results.md`, `prompts.jsonl` and per scale `cfg-<scale>/samples/*.png`. A killed
run continues with `--resume` (same settings, any number of processes): finished PNGs are kept.
"""

import argparse
import logging
from pathlib import Path

from .metrics.clip_score import DEFAULT_CLIP_MODEL, RANDOM_CLIP_STANDIN
from .metrics.fid import FEATURE_EXTRACTORS
from .text_to_image import (
    DTYPES,
    TextToImageEvaluationConfig,
    evaluate_text_to_image,
)


def _scales(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError as error:
        raise argparse.ArgumentTypeError(
            f"--cfg_sweep takes comma-separated numbers like 1.0,3.0,5.0, got {text!r}."
        ) from error


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = TextToImageEvaluationConfig(prompts="-")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", required=True, help="Saved text-to-image pipeline directory (or hub id).")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument(
        "--prompts",
        default=None,
        help="Prompt file for gFID / CLIP score: .txt (one per line), .jsonl, .json or .csv with a "
        "caption/prompt/text field.",
    )
    parser.add_argument(
        "--prompt_field", default=None, help="Field holding the prompt (default: caption, prompt, text)."
    )
    parser.add_argument("--max_prompts", type=int, default=None, help="Use only the first N prompts.")
    parser.add_argument("--images_per_prompt", type=int, default=defaults.images_per_prompt)
    parser.add_argument("--height", type=int, default=defaults.height)
    parser.add_argument("--width", type=int, default=defaults.width)
    parser.add_argument(
        "--num_inference_steps",
        type=int,
        default=defaults.num_inference_steps,
        help="Default 50 (FLUX.1-dev's documented setting; fewer steps raise the FID).",
    )
    guidance = parser.add_mutually_exclusive_group()
    guidance.add_argument(
        "--guidance_scale",
        type=float,
        default=defaults.guidance_scale,
        help="Real classifier-free guidance scale with --negative_prompt (1.0: none).",
    )
    guidance.add_argument(
        "--cfg_sweep",
        type=_scales,
        default=None,
        help="Comma-separated CFG scales to evaluate in turn; the lowest gFID is reported as best.",
    )
    parser.add_argument(
        "--negative_prompt",
        default=defaults.negative_prompt,
        help="Unconditional prompt of CFG (default: empty, as captions are dropped in training).",
    )
    parser.add_argument(
        "--embedded_guidance_scale",
        type=float,
        default=None,
        help="Distilled guidance of a transformer with guidance_embeds=True (FLUX.1-dev); default: the pipeline's.",
    )
    parser.add_argument(
        "--max_sequence_length", type=int, default=None, help="T5 tokens per prompt (FLUX); default: the pipeline's."
    )
    parser.add_argument("--seed", type=int, default=defaults.seed, help="Seed of every sample's noise.")
    parser.add_argument(
        "--batch_size", type=int, default=defaults.batch_size, help="Samples per pipeline call per process."
    )
    parser.add_argument(
        "--samples_per_chunk",
        type=int,
        default=defaults.samples_per_chunk,
        help="Samples per unit of process assignment.",
    )
    parser.add_argument(
        "--dtype",
        default=defaults.dtype,
        choices=DTYPES,
        help="Pipeline dtype; auto = bfloat16 on CUDA, float32 on the CPU.",
    )
    parser.add_argument("--no_tf32", action="store_true", help="Sample with full float32 matmuls on CUDA.")
    parser.add_argument(
        "--reference_dir",
        default=None,
        help="Folder of reference images for gFID (COCO-6K: the captions' COCO val images); omit to skip gFID.",
    )
    parser.add_argument("--feature_extractor", default=defaults.feature_extractor, choices=FEATURE_EXTRACTORS)
    parser.add_argument("--fid_statistics_cache", default=None, help="Directory of cached reference statistics.")
    parser.add_argument(
        "--clip_model",
        default=defaults.clip_model,
        help=f"CLIPModel hub id or directory (default {DEFAULT_CLIP_MODEL}), {RANDOM_CLIP_STANDIN} "
        "(offline; not a CLIP score), or none.",
    )
    parser.add_argument(
        "--geneval_metadata",
        default=None,
        help="GenEval's evaluation_metadata.jsonl: also write its prompts' samples in GenEval's layout.",
    )
    parser.add_argument("--geneval_images_per_prompt", type=int, default=defaults.geneval_images_per_prompt)
    parser.add_argument(
        "--save_grid",
        type=int,
        default=defaults.save_grid,
        metavar="N",
        help="Samples in each scale's samples_grid.png (0: none).",
    )
    parser.add_argument(
        "--num_workers", type=int, default=defaults.num_workers, help="Reference-image loader workers."
    )
    parser.add_argument(
        "--resume", action="store_true", help="Keep the PNGs of an earlier run with the same settings."
    )
    args = parser.parse_args(argv)
    if not args.prompts and not args.geneval_metadata:
        parser.error("give --prompts (gFID / CLIP score) and/or --geneval_metadata (GenEval export).")
    return args


def config_from_args(args: argparse.Namespace) -> TextToImageEvaluationConfig:
    return TextToImageEvaluationConfig(
        pipeline=args.pipeline,
        prompts=args.prompts,
        prompt_field=args.prompt_field,
        max_prompts=args.max_prompts,
        images_per_prompt=args.images_per_prompt,
        height=args.height,
        width=args.width,
        num_inference_steps=args.num_inference_steps,
        guidance_scale=args.guidance_scale,
        cfg_sweep=args.cfg_sweep,
        negative_prompt=args.negative_prompt,
        embedded_guidance_scale=args.embedded_guidance_scale,
        max_sequence_length=args.max_sequence_length,
        seed=args.seed,
        batch_size=args.batch_size,
        samples_per_chunk=args.samples_per_chunk,
        dtype=args.dtype,
        allow_tf32=not args.no_tf32,
        reference_dir=args.reference_dir,
        feature_extractor=args.feature_extractor,
        fid_statistics_cache=args.fid_statistics_cache,
        clip_model=args.clip_model,
        geneval_metadata=args.geneval_metadata,
        geneval_images_per_prompt=args.geneval_images_per_prompt,
        save_grid=args.save_grid,
        num_workers=args.num_workers,
    )


def main(argv: list[str] | None = None) -> dict | None:
    args = parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    results = evaluate_text_to_image(config_from_args(args), args.output_dir, resume=args.resume)
    if results is not None:
        print((Path(args.output_dir) / "results.md").read_text())
    return results
