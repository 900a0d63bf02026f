"""Train a class-conditional LightningDiT on cached AlignTok latents (flow matching, velocity target).

    accelerate launch training/cache_latents.py --tokenizer TOKENIZER --data ILSVRC/imagenet-1k --output_dir CACHE
    accelerate launch training/train_dit.py --config training/configs/dit_xl_imagenet_64ep.yaml --output_dir runs/dit_xl

Writes `<output_dir>/transformer` (EMA weights, diffusers format), `<output_dir>/pipeline` (an `AlignTokDiTPipeline`
with the cache's tokenizer, when `validation.tokenizer` is set), `metrics.json` with the loss curve, sample grids and
resumable checkpoints (`--resume_from_checkpoint latest`). diffusers' habitual flags (`--mixed_precision`, `--seed`,
`--report_to`, `--checkpointing_steps`, ...) and `--set KEY=VALUE` override the config; `--push_to_hub --hub_model_id
NAME` pushes `pipeline/` (or `transformer/` without one) with its card (precedence: `diffusers_aligntok/training/cli.py`).
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
from ..dit_config import load_dit_config
from ..dit_loop import run_dit_training


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML config (see training/configs/dit_*.yaml).")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--resume_from_checkpoint", default=None, help="'latest' or a checkpoint directory.")
    add_training_arguments(
        parser,
        set_help="Override one config key, e.g. --set flow.timestep_shift=2 or --set validation.guidance_scale=4 "
        "(values are YAML). Repeatable.",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    repo_id = hub_repo_id(args)  # a bad --push_to_hub fails now, not after the training
    config, run_record = load_config_with_overrides(
        partial(load_dit_config, args.config), command_line_overrides(args)
    )
    metrics = run_dit_training(config, args.output_dir, args.resume_from_checkpoint, run_record)
    if repo_id is not None:
        # The whole pipeline when the run saved one (validation.tokenizer set), else the transformer alone.
        final = "pipeline" if config.validation.tokenizer is not None else "transformer"
        push_final_model(args, repo_id, Path(args.output_dir) / final)
    return metrics
