"""Evaluate a class-conditional AlignTokDiTPipeline: gFID, Inception Score, precision and recall of its samples.

Our default measurement (50,000 class-balanced samples, 250 Euler steps, clean-fid "clean" Inception, ImageNet-train
reference statistics computed here at 256x256, precision/recall against 10,000 reference images), on every GPU
accelerate gives it; comparable with other runs of this script, not with published tables:

    accelerate launch training/evaluate_generation.py --pipeline runs/dit_xl/pipeline \
        --guidance_scale 1.5 --guidance_interval 0.0 0.7 --output_dir eval/dit_xl_cfg1.5

The combination designed to be comparable with ADM's evaluator, behind the published ImageNet 256 gFIDs (ADM, DiT,
SiT, LightningDiT, the AlignTok paper): clean-fid's legacy_tensorflow mode, ADM's reference batch, random labels,
50,000 samples; --save_npz also writes the samples as ADM's evaluator reads them (arr_0 uint8 NHWC, arr_1 labels).
Its agreement with ADM's evaluator has not been measured here (no TensorFlow, no Inception weights offline): for a
number next to published ones, run guided-diffusion's evaluations/evaluator.py on that file. results.json records
under settings.protocol whether a run used this combination:

    accelerate launch training/evaluate_generation.py --pipeline runs/dit_xl/pipeline \
        --guidance_scale 1.5 --guidance_interval 0.0 0.7 --inception_mode legacy_tensorflow \
        --reference VIRTUAL_imagenet256_labeled.npz --label_sampling random \
        --save_npz eval/dit_xl_adm/samples.npz --output_dir eval/dit_xl_adm
    python guided-diffusion/evaluations/evaluator.py VIRTUAL_imagenet256_labeled.npz eval/dit_xl_adm/samples.npz

A guidance-scale sweep (each scale evaluated on the same labels and noise; the best gFID is marked):

    accelerate launch training/evaluate_generation.py --pipeline runs/dit_xl/pipeline \
        --cfg_sweep 1.0,1.25,1.5,1.75,2.0 --num_samples 10000 --output_dir eval/dit_xl_sweep

A reference `.npz` in ADM's format holds `mu`/`sigma` (used when present, as ADM's evaluator does) and/or `arr_0`
images (precision/recall; the statistics too when there is no mu/sigma or with --reference_npz_statistics arr_0).

Offline smoke run on a tiny pipeline, with the clearly named stand-in network (its numbers are not FID or IS):

    python training/evaluate_generation.py --pipeline runs/tiny_dit/pipeline --num_samples 40 --batch_size 20 \
        --num_inference_steps 10 --reference builtin:shapes --reference_num_samples 64 \
        --feature_extractor random-inception-standin --output_dir eval/tiny_dit

Writes `results.json` (every sampling knob, pipeline configs, reference and where its statistics came from, inception
mode, label sampling, effective shift and guidance channels, versions, one row per guidance scale), `results.md` and
per scale `cfg-<scale>/features-*.npz` (one file per chunk of samples). A killed run continues with
`--resume` (same settings; any number of processes), which also re-scores a finished run against another
`--reference` without sampling again.
"""

import argparse
import logging
from pathlib import Path

from .class_conditional import (
    LABEL_SAMPLINGS,
    REFERENCE_NPZ_STATISTICS,
    SAMPLERS,
    GenerationEvaluationConfig,
    evaluate_generation,
)
from .metrics.fid import FEATURE_EXTRACTORS, INCEPTION_MODES


def _scales(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError as error:
        raise argparse.ArgumentTypeError(
            f"--cfg_sweep takes comma-separated numbers like 1.0,1.5,2.0, got {text!r}."
        ) from error


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = GenerationEvaluationConfig()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", required=True, help="Saved AlignTokDiTPipeline directory (or hub id).")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--num_samples", type=int, default=defaults.num_samples)
    parser.add_argument(
        "--batch_size", type=int, default=defaults.batch_size, help="Samples per pipeline call per process."
    )
    parser.add_argument(
        "--samples_per_chunk",
        type=int,
        default=defaults.samples_per_chunk,
        help="Samples per chunk file: the unit of work, resume and process assignment.",
    )
    parser.add_argument(
        "--num_inference_steps",
        type=int,
        default=defaults.num_inference_steps,
        help="Default 250, LightningDiT's FID setting (fewer steps raise the FID).",
    )
    parser.add_argument("--sampler", default=defaults.sampler, choices=SAMPLERS)
    parser.add_argument("--shift", type=float, default=None, help="Timestep shift; default: the pipeline scheduler's.")
    guidance = parser.add_mutually_exclusive_group()
    guidance.add_argument(
        "--guidance_scale",
        type=float,
        default=defaults.guidance_scale,
        help="CFG scale on all latent channels (1.0: no guidance).",
    )
    guidance.add_argument(
        "--cfg_sweep",
        type=_scales,
        default=None,
        help="Comma-separated CFG scales to evaluate in turn; the lowest gFID is reported as best.",
    )
    parser.add_argument(
        "--guidance_interval",
        type=float,
        nargs=2,
        metavar=("LOW", "HIGH"),
        default=list(defaults.guidance_interval),
        help="Noise levels (sigma, 1 = pure noise) between which guidance is applied.",
    )
    parser.add_argument(
        "--guidance_channels",
        type=int,
        default=None,
        help="Passed to the pipeline call only when given: leading latent channels to guide (where the "
        "pipeline supports it). Default: the pipeline's own (all channels).",
    )
    parser.add_argument("--seed", type=int, default=defaults.seed, help="Seed of the sample plan (labels and noise).")
    parser.add_argument(
        "--label_sampling",
        default=defaults.label_sampling,
        choices=LABEL_SAMPLINGS + ("uniform",),
        help="balanced (default): num_samples / num_classes per class (must divide), lower variance; "
        "random: i.i.d. uniform labels as ADM / LightningDiT draw them (for published tables); "
        "uniform: old name of random.",
    )
    parser.add_argument(
        "--num_classes",
        type=int,
        default=None,
        help="Expected number of classes; must match the transformer's (default: the transformer's).",
    )
    parser.add_argument(
        "--reference",
        default=defaults.reference,
        help="An .npz with mu/sigma (and optionally arr_0 images), or a data source (hub id, image "
        "folder, shards, builtin:shapes). Default: ImageNet.",
    )
    parser.add_argument(
        "--reference_npz_statistics",
        default=defaults.reference_npz_statistics,
        choices=REFERENCE_NPZ_STATISTICS,
        help="For an .npz reference: auto (its mu/sigma if present, else from arr_0), mu_sigma, or arr_0 "
        "(compute them from its images with the selected inception mode).",
    )
    parser.add_argument("--reference_split", default=defaults.reference_split)
    parser.add_argument(
        "--reference_num_samples",
        type=int,
        default=None,
        help="Reference images for the statistics (evenly spaced); default: the whole split.",
    )
    parser.add_argument(
        "--reference_resolution",
        type=int,
        default=None,
        help="Centre-crop size of the reference images; default: the generated image size.",
    )
    parser.add_argument(
        "--precision_recall_reference_samples",
        type=int,
        default=defaults.precision_recall_reference_samples,
        help="Real images for precision/recall (0: skip).",
    )
    parser.add_argument("--precision_recall_k", type=int, default=defaults.precision_recall_k)
    parser.add_argument("--feature_extractor", default=defaults.feature_extractor, choices=FEATURE_EXTRACTORS)
    parser.add_argument(
        "--inception_mode",
        default=defaults.inception_mode,
        choices=INCEPTION_MODES,
        help="clean-fid preprocessing: clean (default) or legacy_tensorflow (designed to match ADM's "
        "TensorFlow evaluator).",
    )
    parser.add_argument("--fid_statistics_cache", default=None, help="Directory of cached reference statistics.")
    parser.add_argument(
        "--save_images",
        type=int,
        default=0,
        metavar="N",
        help="Save the first N samples of each scale as PNGs and a grid.",
    )
    parser.add_argument(
        "--save_npz",
        default=None,
        metavar="PATH",
        help="Also write all samples, in sample order, as ADM's evaluator reads them: arr_0 uint8 "
        "(N, H, W, 3), arr_1 labels. A CFG sweep writes <stem>-cfg-<scale>.npz per scale.",
    )
    parser.add_argument(
        "--no_tf32", action="store_true", help="Sample with full float32 matmuls on CUDA (default: TF32)."
    )
    parser.add_argument(
        "--num_workers", type=int, default=defaults.num_workers, help="Reference-pass dataloader workers."
    )
    parser.add_argument(
        "--resume", action="store_true", help="Keep finished chunks of an earlier run with the same settings."
    )
    return parser.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> GenerationEvaluationConfig:
    return GenerationEvaluationConfig(
        pipeline=args.pipeline,
        num_samples=args.num_samples,
        batch_size=args.batch_size,
        samples_per_chunk=args.samples_per_chunk,
        num_inference_steps=args.num_inference_steps,
        sampler=args.sampler,
        shift=args.shift,
        guidance_scale=args.guidance_scale,
        cfg_sweep=args.cfg_sweep,
        guidance_interval=tuple(args.guidance_interval),
        guidance_channels=args.guidance_channels,
        seed=args.seed,
        label_sampling=args.label_sampling,
        num_classes=args.num_classes,
        reference=args.reference,
        reference_npz_statistics=args.reference_npz_statistics,
        reference_split=args.reference_split,
        reference_num_samples=args.reference_num_samples,
        reference_resolution=args.reference_resolution,
        precision_recall_reference_samples=args.precision_recall_reference_samples,
        precision_recall_k=args.precision_recall_k,
        feature_extractor=args.feature_extractor,
        inception_mode=args.inception_mode,
        fid_statistics_cache=args.fid_statistics_cache,
        save_images=args.save_images,
        save_npz=args.save_npz,
        allow_tf32=not args.no_tf32,
        num_workers=args.num_workers,
    )


def main(argv: list[str] | None = None) -> dict | None:
    args = parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    results = evaluate_generation(config_from_args(args), args.output_dir, resume=args.resume)
    if results is not None:
        print((Path(args.output_dir) / "results.md").read_text())
    return results
