#!/usr/bin/env python
"""Train a FLUX-architecture text-to-image transformer on a frozen VAE (`diffusers_aligntok.training.t2i.cli`).

    accelerate launch --config_file training/accelerate_fsdp.yaml training/train_t2i.py \
        --config training/configs/t2i_2b_256_aligntok.yaml --output_dir runs/t2i_aligntok_256
    python training/train_t2i.py --config training/configs/t2i_tiny_cpu.yaml --output_dir runs/t2i_tiny  # CPU smoke run

`--help` lists the flags; the module's docstring describes the outputs.
"""

import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a source checkout without installing

from diffusers_aligntok.training.t2i.cli import main  # noqa: E402


if __name__ == "__main__":
    main()
