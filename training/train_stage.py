#!/usr/bin/env python
"""Train an AlignTok tokenizer through the paper's three alignment stages (`diffusers_aligntok.training.tokenizer.cli`).

    accelerate launch training/train_stage.py --config training/configs/imagenet_f16d32.yaml --stage all \
        --output_dir runs/aligntok-imagenet-f16d32

`--help` lists the flags; the module's docstring describes the outputs.
"""

import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a source checkout without installing

from diffusers_aligntok.training.tokenizer.cli import main  # noqa: E402


if __name__ == "__main__":
    main()
