#!/usr/bin/env python
"""Evaluate a text-to-image pipeline: gFID against a reference image folder, CLIP score, GenEval export.

    accelerate launch training/evaluate_t2i.py --pipeline runs/t2i_aligntok/pipeline \
        --prompts coco6k/captions.txt --reference_dir coco6k/images --guidance_scale 4.0 \
        --output_dir eval/t2i_aligntok_cfg4

The logic lives in `diffusers_aligntok.evaluation.text_to_image_cli` (also installed as a console script, see setup.py);
`--help` lists the flags and that module's docstring describes the protocol and the outputs.
"""

import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a source checkout without installing

from diffusers_aligntok.evaluation.text_to_image_cli import main, parse_args  # noqa: E402, F401


if __name__ == "__main__":
    main()
