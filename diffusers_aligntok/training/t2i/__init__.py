"""The FLUX-architecture text-to-image recipe on a frozen VAE (`accelerate launch training/train_t2i.py`)."""
