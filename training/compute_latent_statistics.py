#!/usr/bin/env python
"""Measure a tokenizer's latent statistics over a data set and (with --write) store them in its config.json.

    accelerate launch training/compute_latent_statistics.py --model runs/imagenet_f16d32/stage3/model \
        --data ILSVRC/imagenet-1k --split train --num_samples 50000 --write

The logic lives in `diffusers_aligntok.evaluation.latent_statistics_cli` (also installed as a console script, see setup.py);
`--help` lists the flags and that module's docstring describes the protocol and the outputs.
"""

import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a source checkout without installing

from diffusers_aligntok.evaluation.latent_statistics_cli import main, parse_args  # noqa: E402, F401


if __name__ == "__main__":
    main()
