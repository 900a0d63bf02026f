"""Train an AlignTok tokenizer through the paper's three alignment stages.

    accelerate launch training/train_stage.py --config training/configs/imagenet_f16d32.yaml --stage all \
        --output_dir runs/aligntok-imagenet-f16d32

Stage k writes `<output_dir>/stage<k>/model` (load it with `AlignedAutoencoderKL.from_pretrained`), its
`training_config.json`, `metrics.json`, `reconstructions.png`, validation grids and resumable checkpoints. Stage k > 1
starts from stage k-1's model in the same output directory. `--resume_from_checkpoint latest` continues a killed run
of one stage (with `--stage all`, finished stages are skipped and the interrupted one resumes).

diffusers' habitual flags override the config in every stage (`--mixed_precision`, `--report_to`, `--seed`,
`--checkpointing_steps`, `--checkpoints_total_limit`, `--validation_steps`), `--set KEY=VALUE` any other key, and
`--push_to_hub --hub_model_id NAME` pushes the last stage's model with its card (precedence rules:
`diffusers_aligntok/training/cli.py`).
"""

import argparse
import logging
from functools import partial

from accelerate import PartialState

from ..cli import (
    add_training_arguments,
    command_line_overrides,
    hub_repo_id,
    load_config_with_overrides,
    push_final_model,
)
from ..config import STAGES, check_stage_sequence, load_stage_config, stage_overrides
from ..loop import run_stage
from ..stages import stage_model_dir


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML config with `common` and per-stage `stages` sections.")
    parser.add_argument("--stage", default="all", choices=["1", "2", "3", "all"], help="Stage to run, or all three.")
    parser.add_argument("--output_dir", required=True, help="Run directory; stage k writes <output_dir>/stage<k>/.")
    parser.add_argument(
        "--resume_from_checkpoint",
        default=None,
        help="'latest' or a checkpoint directory name/path; a killed run loses at most one checkpoint interval.",
    )
    add_training_arguments(
        parser,
        set_help="Override one config key, relative to a stage's config, in every stage run "
        "(--set loss.gan_weight=0), or in one stage (--set stages.2.loss.semantic_preservation_weight=3, which beats "
        "the all-stage value). Values are YAML. Repeatable.",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    repo_id = hub_repo_id(args)  # a bad --push_to_hub fails now, not after days of training
    stages = STAGES if args.stage == "all" else (int(args.stage),)
    overrides = command_line_overrides(args)
    # Validate every stage's config before the first step of the first stage.
    configs, run_records = {}, {}
    for stage in stages:
        configs[stage], run_records[stage] = load_config_with_overrides(
            partial(load_stage_config, args.config, stage), stage_overrides(overrides, stage, stages)
        )
    check_stage_sequence(configs, str(args.config))
    results = {}
    for stage in stages:
        if (
            args.stage == "all"
            and args.resume_from_checkpoint
            and (stage_model_dir(args.output_dir, stage) / "config.json").is_file()
        ):
            logging.info(f"Stage {stage} already finished in {args.output_dir}; skipping.")
            continue
        results[stage] = run_stage(
            configs[stage], stage, args.output_dir, args.resume_from_checkpoint, run_records[stage]
        )
    # Once, after the last stage: every stage of this command trains in the same process group.
    PartialState().destroy_process_group()
    if repo_id is not None:
        # The final model is the last stage's this command ran (with --stage all: stage 3's).
        push_final_model(args, repo_id, stage_model_dir(args.output_dir, stages[-1]))
    return results
