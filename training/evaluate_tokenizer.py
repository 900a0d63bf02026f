#!/usr/bin/env python
"""Evaluate image tokenizers side by side (`aligntok-evaluate-tokenizer`, `diffusers_aligntok.evaluation.tokenizer_cli`).

    accelerate launch training/evaluate_tokenizer.py \
        --tokenizers runs/aligntok-imagenet-f16d32/stage3/model black-forest-labs/FLUX.1-dev \
        --output_dir eval/aligntok-vs-flux

`--help` lists the flags; the module's docstring describes the protocol and the outputs.
"""

import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a source checkout without installing

from diffusers_aligntok.evaluation.tokenizer_cli import main, parse_args  # noqa: E402, F401


if __name__ == "__main__":
    main()
