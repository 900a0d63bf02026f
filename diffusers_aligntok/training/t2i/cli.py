"""Train a FLUX-architecture text-to-image transformer on a frozen VAE: the AlignTok arm or the FLUX VAE arm.

    # the paper's comparison at 256 (2B FluxTransformer2DModel, 100K steps), one arm per VAE, on FSDP:
    accelerate launch --config_file training/accelerate_fsdp.yaml training/train_t2i.py \
        --config training/configs/t2i_2b_256_aligntok.yaml --output_dir runs/t2i_aligntok_256
    accelerate launch --config_file training/accelerate_fsdp.yaml training/train_t2i.py \
        --config training/configs/t2i_2b_256_flux_vae.yaml --output_dir runs/t2i_flux_vae_256

    # CPU smoke run on the built-in captioned shapes with tiny random text encoders (after `make train-tiny`):
    python training/train_t2i.py --config training/configs/t2i_tiny_cpu.yaml --output_dir runs/t2i_tiny

`--vae` replaces the config's VAE: an AlignedAutoencoderKL directory or any diffusers AutoencoderKL (with
`--vae_subfolder vae` for a FLUX.1 repository). Writes `<output_dir>/transformer` (EMA weights, diffusers format),
`<output_dir>/pipeline` (a `FluxPipeline`, or an `AlignTokFluxPipeline` for patch-1 latents, with the VAE and text
encoders), `metrics.json`, validation grids and resumable checkpoints (`--resume_from_checkpoint latest`).
diffusers' habitual flags (`--mixed_precision`, `--seed`, `--report_to`, `--checkpointing_steps`, ...) and `--set
KEY=VALUE` override the config; `--push_to_hub --hub_model_id NAME` pushes `pipeline/` with its card (precedence:
`diffusers_aligntok/training/cli.py`).
"""

import argparse
import logging
from functools import partial
from pathlib import Path

from ..cli import (
    add_training_arguments,
    command_line_overrides,
    hub_repo_id,
    load_config_with_overrides,
    push_final_model,
)
from ..t2i_config import load_t2i_config
from ..t2i_loop import run_t2i_training


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML config (see training/configs/t2i_*.yaml).")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--vae", default=None, help="Overrides model.vae: an AlignedAutoencoderKL or AutoencoderKL.")
    parser.add_argument("--vae_subfolder", default=None, help="Overrides model.vae_subfolder (e.g. 'vae').")
    parser.add_argument("--text_encoders", default=None, help="Overrides model.text_encoders.")
    parser.add_argument("--resume_from_checkpoint", default=None, help="'latest' or a checkpoint directory.")
    add_training_arguments(
        parser,
        set_help="Override one config key, e.g. --set data.caption_dropout_prob=0.2 or --set "
        'validation.prompts=\'["a cat", "a dog"]\' (values are YAML). Repeatable.',
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    repo_id = hub_repo_id(args)  # a bad --push_to_hub fails now, not after the training
    model_flags = {
        "model.vae": ("--vae", args.vae),
        "model.vae_subfolder": ("--vae_subfolder", args.vae_subfolder),
        "model.text_encoders": ("--text_encoders", args.text_encoders),
    }
    config, run_record = load_config_with_overrides(
        partial(load_t2i_config, args.config), command_line_overrides(args, model_flags)
    )
    metrics = run_t2i_training(config, args.output_dir, args.resume_from_checkpoint, run_record)
    if repo_id is not None:
        push_final_model(args, repo_id, Path(args.output_dir) / "pipeline")
    return metrics
