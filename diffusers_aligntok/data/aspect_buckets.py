"""Aspect-ratio buckets for text-to-image training: every image is cropped to the bucket nearest its shape.

A bucket is an image size `width x height` whose sides are multiples of the pixels per token (16 for both arms of our
FLUX-architecture recipe: f16 latents with patch 1, f8 latents with patch 2) and whose area is close to
`resolution**2`, so every bucket costs about the same number of tokens. The paper's 512 models train on 1:1, 4:5,
3:4, 2:3, 9:16 and their transposes (`PAPER_ASPECT_RATIOS`).
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image


PAPER_ASPECT_RATIOS = ("1:1", "4:5", "5:4", "3:4", "4:3", "2:3", "3:2", "9:16", "16:9")
# A bucket's area may differ from resolution**2 by at most this fraction (closer shapes win within it).
_MAX_AREA_DEVIATION = 0.1


@dataclass(frozen=True)
class Bucket:
    width: int
    height: int

    @property
    def aspect_ratio(self) -> float:
        return self.width / self.height

    def __str__(self) -> str:
        return f"{self.width}x{self.height}"


def parse_aspect_ratio(text: str) -> float:
    """`"4:5"` (width:height) -> 0.8, with a clear error for anything else."""
    try:
        width, height = (float(part) for part in str(text).split(":"))
        if width <= 0 or height <= 0:
            raise ValueError
    except ValueError:
        raise ValueError(
            f"Aspect ratios are written 'width:height' with positive numbers, like '4:5'; got {text!r}."
        ) from None
    return width / height


def make_buckets(resolution: int, aspect_ratios: Sequence[str], multiple: int) -> list[Bucket]:
    """One bucket per aspect ratio: sides multiples of `multiple`, area within 10% of `resolution**2`, shape closest.

    Raises if two ratios land on the same size (the resolution is too small to tell them apart) or if the resolution is
    not a multiple of `multiple`.
    """
    if resolution <= 0 or resolution % multiple:
        raise ValueError(f"resolution {resolution} must be a positive multiple of {multiple} (pixels per token).")
    buckets: list[Bucket] = []
    for text in aspect_ratios:
        ratio = parse_aspect_ratio(text)
        best = _closest_size(resolution, ratio, multiple, _MAX_AREA_DEVIATION)
        # Tiny resolutions (tests, the CPU recipe) may have no aligned size within 10% of the area: allow up to 2x.
        best = best or _closest_size(resolution, ratio, multiple, 1.0)
        if best in buckets:
            raise ValueError(
                f"At resolution {resolution}, aspect ratio {text} lands on the same size ({best}) as another ratio in "
                f"{list(aspect_ratios)}; drop one of them or raise the resolution."
            )
        buckets.append(best)
    return buckets


def _closest_size(resolution: int, ratio: float, multiple: int, max_area_deviation: float) -> Bucket | None:
    """The `multiple`-aligned size closest in shape to `ratio` (then in area to `resolution**2`), or None.

    Only sizes whose area is within a factor `1 + max_area_deviation` of `resolution**2`, and whose shape is within
    10% of `ratio`, are considered.
    """
    best, best_key = None, None
    sides = range(multiple, 4 * resolution + 1, multiple)
    for width in sides:
        for height in sides:
            area_error = abs(math.log(width * height / (resolution * resolution)))
            ratio_error = abs(math.log(width / height / ratio))
            if area_error > math.log(1 + max_area_deviation) or ratio_error > math.log(1.1):
                continue
            key = (round(ratio_error, 6), area_error)
            if best_key is None or key < best_key:
                best, best_key = Bucket(width, height), key
    return best


def nearest_bucket(width: int, height: int, buckets: Sequence[Bucket]) -> int:
    """Index of the bucket whose aspect ratio is closest to `width / height` (in log space: 2:1 and 1:2 are equidistant)."""
    ratio = math.log(width / height)
    return min(range(len(buckets)), key=lambda index: abs(math.log(buckets[index].aspect_ratio) - ratio))


def upscale_needed(width: int, height: int, bucket: Bucket) -> float:
    """The resize factor that makes a `width x height` image just cover `bucket` (> 1 means upscaling)."""
    return max(bucket.width / width, bucket.height / height)


def resize_and_center_crop(image: Image.Image, bucket: Bucket) -> Image.Image:
    """Resize (antialiased bicubic) so the image just covers the bucket, then center-crop to it."""
    scale = upscale_needed(image.width, image.height, bucket)
    width, height = max(bucket.width, round(image.width * scale)), max(bucket.height, round(image.height * scale))
    if (width, height) != image.size:
        image = image.resize((width, height), Image.Resampling.BICUBIC, reducing_gap=None)
    left, top = (width - bucket.width) // 2, (height - bucket.height) // 2
    return image.crop((left, top, left + bucket.width, top + bucket.height))
