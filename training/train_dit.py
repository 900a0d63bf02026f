#!/usr/bin/env python
"""Train a class-conditional LightningDiT on cached AlignTok latents (`diffusers_aligntok.training.dit.cli`).

    accelerate launch training/cache_latents.py --tokenizer TOKENIZER --data ILSVRC/imagenet-1k --output_dir CACHE
    accelerate launch training/train_dit.py --config training/configs/dit_xl_imagenet_64ep.yaml --output_dir runs/dit_xl

`--help` lists the flags; the module's docstring describes the outputs.
"""

import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a source checkout without installing

from diffusers_aligntok.training.dit.cli import main  # noqa: E402


if __name__ == "__main__":
    main()
