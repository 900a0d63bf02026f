#!/usr/bin/env python
"""Encode a data set once into a latent cache for DiT training: `diffusers_aligntok.training.dit.latent_cache`.

    accelerate launch training/cache_latents.py --tokenizer runs/imagenet_f16d32/stage3/model \
        --data ILSVRC/imagenet-1k --resolution 256 --output_dir cache/imagenet256_aligntok
"""

import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a source checkout without installing

from diffusers_aligntok.training.dit.latent_cache import main  # noqa: E402


if __name__ == "__main__":
    main()
