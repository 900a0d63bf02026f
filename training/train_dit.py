#!/usr/bin/env python
"""Train a class-conditional LightningDiT on cached AlignTok latents (flow matching, velocity target).

    accelerate launch training/cache_latents.py --tokenizer TOKENIZER --data ILSVRC/imagenet-1k --output_dir CACHE
    accelerate launch training/train_dit.py --config training/configs/dit_xl_imagenet_64ep.yaml --output_dir runs/dit_xl

Writes `<output_dir>/transformer` (EMA weights, diffusers format), `<output_dir>/pipeline` (an `AlignTokDiTPipeline`
with the cache's tokenizer, when `validation.tokenizer` is set), `metrics.json` with the loss curve, sample grids and
resumable checkpoints (`--resume_from_checkpoint latest`).
"""

import argparse
import logging
import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a source checkout without installing

from diffusers_aligntok.training.dit_config import load_dit_config  # noqa: E402
from diffusers_aligntok.training.dit_loop import run_dit_training  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML config (see training/configs/dit_*.yaml).")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--resume_from_checkpoint", default=None, help="'latest' or a checkpoint directory.")
    args = parser.parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    return run_dit_training(load_dit_config(args.config), args.output_dir, args.resume_from_checkpoint)


if __name__ == "__main__":
    main()
