"""The class-conditional LightningDiT recipe on cached latents (`training/cache_latents.py`, `training/train_dit.py`)."""
