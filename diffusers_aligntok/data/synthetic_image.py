"""A built-in test image: reconstruction examples and benchmarks use it when no image is given (no file, no download)."""

import numpy as np
import PIL.Image


def synthetic_test_image(height: int = 256, width: int = 256) -> PIL.Image.Image:
    """A deterministic RGB test image with smooth gradients, sharp edges and fine stripes (no file, no download).

    Reconstruction demos and benchmarks use it when no image is given; its mix of flat, smooth and high-frequency
    regions makes tokenizer artefacts (blur, ringing, tile seams) visible.
    """
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    y, x = y / max(height - 1, 1), x / max(width - 1, 1)
    red = x
    green = y
    blue = 0.5 + 0.5 * np.sin(2 * np.pi * 12 * x * (1 - y))  # stripes whose frequency varies across the image
    image = np.stack([red, green, blue], axis=-1)
    disc = (x - 0.35) ** 2 + (y - 0.4) ** 2 < 0.18**2
    image[disc] = (0.95, 0.85, 0.1)
    square = (np.abs(x - 0.72) < 0.14) & (np.abs(y - 0.68) < 0.14)
    image[square] = (0.1, 0.2, 0.8)
    checker = ((np.floor(x * width / 8) + np.floor(y * height / 8)) % 2).astype(np.float32)
    bottom_band = y > 0.9
    image[bottom_band] = checker[bottom_band, None] * np.ones(3, dtype=np.float32)
    return PIL.Image.fromarray((image * 255).round().astype(np.uint8))
