r"""`aligntok-convert-lightningdit`: a LightningDiT checkpoint + VAE + latents_stats.pt -> a saved AlignTokDiTPipeline.

    aligntok-convert-lightningdit --checkpoint lightningdit-xl-imagenet256-800ep.pt --model_type LightningDiT-XL/1 \
        --vae path/to/tokenizer --latents_stats path/to/latents_stats.pt --output_dir lightningdit-xl-pipeline

Load the result with `import diffusers_aligntok; DiffusionPipeline.from_pretrained("lightningdit-xl-pipeline")`. The
flags take the values of the LightningDiT training config (configs/*.yaml) the checkpoint was trained with.
"""

import argparse
import json
import logging
import os
from collections.abc import Sequence
from typing import Any

import diffusers

from .. import models as aligntok_models
from .lightningdit_pipeline import convert_lightningdit_pipeline
from .lightningdit_transformer import LIGHTNINGDIT_MODEL_TYPES


logger = logging.getLogger("aligntok-convert-lightningdit")


def load_vae(path: str | os.PathLike) -> Any:
    """A VAE saved with `save_pretrained` in a local directory (or in its `vae/` subfolder, as in a pipeline)."""
    path = os.fspath(path)
    in_pipeline_folder = os.path.isfile(os.path.join(path, "vae", "config.json"))
    subfolder = "vae" if not os.path.isfile(os.path.join(path, "config.json")) and in_pipeline_folder else None
    config_path = os.path.join(path, subfolder or "", "config.json")
    if not os.path.isfile(config_path):
        raise FileNotFoundError(
            f"No VAE at {path!r}: expected a directory written by save_pretrained (with config.json), or a pipeline "
            "directory with a vae/ subfolder."
        )
    with open(config_path, encoding="utf-8") as file:
        class_name = json.load(file).get("_class_name")
    vae_class = None
    if isinstance(class_name, str):
        vae_class = getattr(aligntok_models, class_name, None) or getattr(diffusers, class_name, None)
    if vae_class is None or not hasattr(vae_class, "from_pretrained"):
        raise ValueError(
            f"{config_path!r} names the class {class_name!r}, which is neither a diffusers_aligntok nor a diffusers "
            "model; use a VAE saved by AlignedAutoencoderKL or diffusers (e.g. AutoencoderKL)."
        )
    return vae_class.from_pretrained(path, subfolder=subfolder).eval()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="LightningDiT .pt file (train.py's, or a state dict).")
    parser.add_argument(
        "--model_type",
        required=True,
        help=f"The training config's model.model_type ({', '.join(LIGHTNINGDIT_MODEL_TYPES)}; the 'LightningDiT-' "
        "prefix may be left out), or 'auto' to infer it from the weights' shapes.",
    )
    parser.add_argument("--vae", required=True, help="Local directory of the VAE (save_pretrained format).")
    parser.add_argument(
        "--latents_stats", default=None, help="LightningDiT's latents_stats.pt (per-channel mean/std)."
    )
    parser.add_argument("--output_dir", required=True, help="Where to save the pipeline.")
    parser.add_argument("--use_qknorm", action="store_true", help="The config's model.use_qknorm was true.")
    parser.add_argument("--timestep_shift", type=float, default=0.3, help="sample.timestep_shift (0 = none).")
    parser.add_argument(
        "--latent_multiplier", type=float, default=None, help="data.latent_multiplier (default 1.0, with stats)."
    )
    parser.add_argument("--num_classes", type=int, default=1000, help="data.num_classes.")
    parser.add_argument("--input_size", type=int, default=16, help="data.image_size / vae.downsample_ratio.")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> str:
    """Converts and saves; returns the output directory."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    pipeline = convert_lightningdit_pipeline(
        args.checkpoint,
        load_vae(args.vae),
        latents_stats_path=args.latents_stats,
        model_type=args.model_type,
        use_qknorm=args.use_qknorm,
        timestep_shift=args.timestep_shift,
        latent_multiplier=args.latent_multiplier,
        num_classes=args.num_classes,
        input_size=args.input_size,
    )
    pipeline.save_pretrained(args.output_dir)
    logger.info("Saved the pipeline to %s; load it with `import diffusers_aligntok` first.", args.output_dir)
    return args.output_dir


if __name__ == "__main__":
    main()
