#!/usr/bin/env python
"""Evaluate a class-conditional AlignTokDiTPipeline: gFID, Inception Score, precision and recall of its samples.

    accelerate launch training/evaluate_generation.py --pipeline runs/dit_xl/pipeline \
        --guidance_scale 1.5 --guidance_interval 0.0 0.7 --output_dir eval/dit_xl_cfg1.5

The logic lives in `diffusers_aligntok.evaluation.class_conditional_cli` (also installed as a console script, see setup.py);
`--help` lists the flags and that module's docstring describes the protocol and the outputs.
"""

import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a source checkout without installing

from diffusers_aligntok.evaluation.class_conditional_cli import main, parse_args  # noqa: E402, F401


if __name__ == "__main__":
    main()
