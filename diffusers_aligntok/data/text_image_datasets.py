"""Image-caption data for text-to-image training, bucketed by aspect ratio.

`build_text_image_dataset(TextImageDatasetConfig(...), buckets)` scans a source once, assigns every usable image to
the bucket nearest its shape, and returns a [`TextImageDataset`] whose items are

    {"pixel_values": float32 (3, bucket height, bucket width) in [-1, 1], "caption": str, "num_skipped": int}

Sources (`TextImageDatasetConfig.source`):

- `"builtin:shapes-captions"` (default): the built-in shapes, rendered at every bucket's size, with captions naming
  the shape and its colours ("a red star on a light blue background"). Generated, so no download.
- a local directory of images with caption files beside them (`cat.jpg` + `cat.txt`, the usual fine-tuning layout).
- anything `datasets` reads, through the same loader as the tokenizer data: parquet or webdataset `.tar` shards (a
  directory, a glob or a file; webdataset samples `x.jpg` + `x.txt` become columns `jpg` and `txt`), an image folder
  with a `metadata.jsonl` caption column, or a hub dataset id. Columns are found by name (`image_column`,
  `caption_column`, or the usual names) and images are read undecoded.

What is skipped, counted and reported (`TextImageDataset.skipped`), never silently dropped: captions that are empty
after stripping, images that would have to be upscaled by more than `max_upscale` to cover their bucket ("smaller
than the bucket"), and unreadable images (at the scan, or when decoding later: the next image of the same bucket is
used and `num_skipped` says how many were passed over, so the loop can count them exactly). A source with nothing
usable, or mostly unreadable, stops with its path and the counts.
"""

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .aspect_buckets import Bucket, nearest_bucket, resize_and_center_crop, upscale_needed
from .builtin_shapes import ShapesDataset, pil_to_tensor
from .image_datasets import (
    IMAGE_COLUMN_CANDIDATES,
    IMAGE_FILE_EXTENSIONS,
    ImageDatasetConfig,
    decode_image,
    load_hf_dataset,
    pick_column,
)


logger = logging.getLogger(__name__)

BUILTIN_TEXT_IMAGE_SOURCES = ("builtin:shapes-captions",)
CAPTION_COLUMN_CANDIDATES = ("caption", "text", "txt", "prompt", "captions", "sentence")
# Above this fraction of unreadable images the source is broken, not noisy: stop instead of training on the rest.
_MAX_UNREADABLE_FRACTION = 0.5
_MAX_CONSECUTIVE_DECODE_FAILURES = 100

# Names for the built-in captions: the nearest of these colours (RGB in [0, 1]) names a fill or background.
_COLOUR_NAMES = {
    "black": (0.0, 0.0, 0.0),
    "white": (1.0, 1.0, 1.0),
    "gray": (0.5, 0.5, 0.5),
    "red": (0.85, 0.1, 0.1),
    "green": (0.1, 0.65, 0.2),
    "blue": (0.1, 0.2, 0.85),
    "yellow": (0.95, 0.9, 0.1),
    "orange": (0.95, 0.55, 0.1),
    "purple": (0.5, 0.15, 0.65),
    "pink": (0.95, 0.55, 0.7),
    "brown": (0.5, 0.3, 0.1),
    "cyan": (0.1, 0.8, 0.85),
    "dark blue": (0.05, 0.1, 0.4),
    "light blue": (0.6, 0.8, 0.95),
    "dark green": (0.05, 0.3, 0.1),
    "olive": (0.5, 0.5, 0.1),
}


@dataclass
class TextImageDatasetConfig:
    """Where image-caption pairs come from; see the module docstring for the sources."""

    source: str = "builtin:shapes-captions"
    split: str = "train"
    image_column: str | None = None
    caption_column: str | None = None
    # Use at most this many records of the source (None: all).
    max_samples: int | None = None
    # Length of `builtin:shapes-captions`.
    num_builtin_samples: int = 512
    # An image needing more upscaling than this to cover its bucket is skipped and counted (1.0: never upscale).
    max_upscale: float = 1.0
    seed: int = 0


def colour_name(rgb: Sequence[float]) -> str:
    """The nearest named colour to an RGB triple in [0, 1]."""
    rgb = np.asarray(rgb, dtype=np.float64)
    return min(_COLOUR_NAMES, key=lambda name: float(np.sum((np.asarray(_COLOUR_NAMES[name]) - rgb) ** 2)))


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


class _Source:
    """Random access to the records of a source: size (header only), caption, and the decoded image."""

    description: str

    def __len__(self) -> int:
        raise NotImplementedError

    def size(self, index: int) -> tuple[int, int]:
        raise NotImplementedError

    def caption(self, index: int) -> str:
        raise NotImplementedError

    def image(self, index: int) -> Image.Image:
        raise NotImplementedError


class _BuiltinCaptionedShapes(_Source):
    """The built-in shapes at every bucket's size (record `i` uses bucket `(i // num_classes) % len(buckets)`, so every
    class appears in every bucket), captioned with the shape and its colours."""

    def __init__(self, num_samples: int, buckets: Sequence[Bucket], seed: int):
        self.buckets = list(buckets)
        self.num_samples = num_samples
        self.renderers = [
            ShapesDataset(num_samples, (b.height, b.width), seed=seed, random_flip=False) for b in self.buckets
        ]
        self.description = f"builtin:shapes-captions (n={num_samples}, seed={seed})"

    def __len__(self) -> int:
        return self.num_samples

    def _renderer(self, index: int) -> ShapesDataset:
        return self.renderers[(index // ShapesDataset.num_classes) % len(self.renderers)]

    def size(self, index: int) -> tuple[int, int]:
        renderer = self._renderer(index)
        return renderer.width, renderer.height

    def caption(self, index: int) -> str:
        params = self._renderer(index).sample_parameters(index)
        background = (np.asarray(params["background_start"]) + np.asarray(params["background_end"])) / 2
        shape = ShapesDataset.class_names[params["label"]].replace("_", " ")
        fill, background = colour_name(params["fill"]), colour_name(background)
        return f"{_article(fill)} {fill} {shape} on {_article(background)} {background} background"

    def image(self, index: int) -> Image.Image:
        return self._renderer(index).render_image(index)


class _CaptionFolder(_Source):
    """Images with a same-named `.txt` caption beside them, anywhere under a directory (sorted paths)."""

    def __init__(self, directory: str):
        paths = sorted(
            path
            for path in Path(directory).rglob("*")
            if path.suffix.lower() in IMAGE_FILE_EXTENSIONS and not any(part.startswith(".") for part in path.parts)
        )
        self.paths = [path for path in paths if path.with_suffix(".txt").is_file()]
        self.num_without_caption = len(paths) - len(self.paths)
        self.description = f"caption folder {directory} ({len(self.paths)} captioned images)"

    def __len__(self) -> int:
        return len(self.paths)

    def size(self, index: int) -> tuple[int, int]:
        with Image.open(self.paths[index]) as image:
            return image.size

    def caption(self, index: int) -> str:
        return self.paths[index].with_suffix(".txt").read_text(encoding="utf-8", errors="replace")

    def image(self, index: int) -> Image.Image:
        return decode_image(str(self.paths[index]))


class _HFSource(_Source):
    """A `datasets` data set (parquet, webdataset, image folder with metadata, hub) with images left undecoded."""

    def __init__(self, config: TextImageDatasetConfig):
        import datasets

        hf_dataset, self.description = load_hf_dataset(ImageDatasetConfig(source=config.source, split=config.split))
        self.image_column = pick_column(
            hf_dataset.features, config.image_column, IMAGE_COLUMN_CANDIDATES, "image", config.source
        )
        self.caption_column = pick_column(
            hf_dataset.features, config.caption_column, CAPTION_COLUMN_CANDIDATES, "caption", config.source
        )
        if self.caption_column is None:
            raise ValueError(
                f"found no caption column in {config.source} (columns {list(hf_dataset.features)}; looked for "
                f"{list(CAPTION_COLUMN_CANDIDATES)}); set data.caption_column."
            )
        if isinstance(hf_dataset.features[self.image_column], datasets.Image):
            hf_dataset = hf_dataset.cast_column(self.image_column, datasets.Image(decode=False))
        self.dataset = hf_dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def _payload(self, index: int) -> Any:
        return self.dataset[index][self.image_column]

    def size(self, index: int) -> tuple[int, int]:
        payload = self._payload(index)
        if isinstance(payload, dict) and payload.get("bytes") is not None:
            import io

            with Image.open(io.BytesIO(payload["bytes"])) as image:
                return image.size
        return decode_image(payload).size

    def caption(self, index: int) -> str:
        value = self.dataset[index][self.caption_column]
        if isinstance(value, bytes):
            value = value.decode("utf-8", errors="replace")
        if isinstance(value, (list, tuple)):  # several captions per image (COCO style): the first
            value = value[0] if value else ""
        return "" if value is None else str(value)

    def image(self, index: int) -> Image.Image:
        return decode_image(self._payload(index))


def open_text_image_source(config: TextImageDatasetConfig, buckets: Sequence[Bucket]) -> _Source:
    if config.source in BUILTIN_TEXT_IMAGE_SOURCES:
        return _BuiltinCaptionedShapes(config.num_builtin_samples, buckets, config.seed)
    if config.source.startswith("builtin:"):
        raise ValueError(
            f"Unknown built-in source {config.source!r}; text-to-image has {list(BUILTIN_TEXT_IMAGE_SOURCES)}."
        )
    path = os.path.expanduser(config.source)
    if os.path.isdir(path) and any(Path(path).rglob("*.txt")) and not any(Path(path).rglob("metadata.*")):
        folder = _CaptionFolder(path)
        if len(folder):
            return folder
    return _HFSource(config)


class TextImageDataset(torch.utils.data.Dataset):
    """The usable records of a source, each with its bucket; items are bucket-sized images with their captions.

    Attributes:
        buckets: the bucket sizes; `bucket_of[i]` is item `i`'s bucket index.
        skipped: counts from the scan: `empty_caption`, `too_small`, `unreadable` (and `total` records scanned).
    """

    def __init__(
        self, source: _Source, buckets: Sequence[Bucket], max_upscale: float = 1.0, max_samples: int | None = None
    ):
        self.source = source
        self.buckets = list(buckets)
        self.source_description = source.description
        records, bucket_of = [], []
        skipped = {"empty_caption": 0, "too_small": 0, "unreadable": 0}
        total = len(source) if max_samples is None else min(len(source), max_samples)
        for index in range(total):
            try:
                width, height = source.size(index)
            except Exception as error:  # noqa: BLE001 - any decoder error means "unreadable"
                skipped["unreadable"] += 1
                logger.warning(
                    f"Skipping unreadable image {index} of {source.description}: {type(error).__name__}: {error}"
                )
                continue
            if not source.caption(index).strip():
                skipped["empty_caption"] += 1
                continue
            bucket = nearest_bucket(width, height, self.buckets)
            if upscale_needed(width, height, self.buckets[bucket]) > max_upscale + 1e-9:
                skipped["too_small"] += 1
                continue
            records.append(index)
            bucket_of.append(bucket)
        self.records, self.bucket_of = records, bucket_of
        # Items sorted by bucket, so an unreadable image is replaced by the next one of its bucket in O(1).
        self._by_bucket = np.argsort(np.asarray(bucket_of, dtype=np.int64), kind="stable")
        self._position = np.empty(len(records), dtype=np.int64)
        self._position[self._by_bucket] = np.arange(len(records))
        counts = np.bincount(np.asarray(bucket_of, dtype=np.int64), minlength=len(self.buckets))
        self._bucket_start = np.concatenate([[0], np.cumsum(counts)[:-1]])
        self._bucket_count = counts
        self.skipped = {**skipped, "total": total}
        if total and skipped["unreadable"] > _MAX_UNREADABLE_FRACTION * total:
            raise RuntimeError(
                f"{skipped['unreadable']} of {total} images of {source.description} are unreadable; is it the right data?"
            )
        if not records:
            smallest = min(self.buckets, key=lambda b: b.width * b.height)
            raise ValueError(
                f"No usable image-caption pairs in {source.description}: of {total} records, {skipped['empty_caption']} "
                f"have empty captions, {skipped['too_small']} are smaller than their bucket (smallest bucket "
                f"{smallest}, max_upscale {max_upscale}) and {skipped['unreadable']} are unreadable."
            )
        if any(skipped.values()):
            logger.warning(f"{source.description}: skipped {skipped} of {total} records.")

    def __len__(self) -> int:
        return len(self.records)

    def bucket_counts(self) -> dict[str, int]:
        return {str(bucket): self.bucket_of.count(index) for index, bucket in enumerate(self.buckets)}

    def __getitem__(self, index: int) -> dict:
        bucket = self.bucket_of[index]
        start, count = int(self._bucket_start[bucket]), int(self._bucket_count[bucket])
        offset = int(self._position[index]) - start
        for num_skipped in range(min(count, _MAX_CONSECUTIVE_DECODE_FAILURES)):
            record = self.records[int(self._by_bucket[start + (offset + num_skipped) % count])]
            try:
                image = self.source.image(record)
            except Exception as error:  # noqa: BLE001
                logger.warning(
                    f"Skipping unreadable image {record} of {self.source_description}: {type(error).__name__}: {error}"
                )
                continue
            return {
                "pixel_values": pil_to_tensor(resize_and_center_crop(image, self.buckets[bucket])),
                "caption": self.source.caption(record).strip(),
                "num_skipped": num_skipped,
            }
        raise RuntimeError(
            f"{_MAX_CONSECUTIVE_DECODE_FAILURES} unreadable images in a row in {self.source_description}."
        )


def build_text_image_dataset(config: TextImageDatasetConfig, buckets: Sequence[Bucket]) -> TextImageDataset:
    return TextImageDataset(open_text_image_source(config, buckets), buckets, config.max_upscale, config.max_samples)


def collate_text_image_batch(items: list[dict]) -> dict:
    return {
        "pixel_values": torch.stack([item["pixel_values"] for item in items]),
        "caption": [item["caption"] for item in items],
        "num_skipped": sum(item["num_skipped"] for item in items),
    }


class BucketBatchSampler(torch.utils.data.Sampler):
    """Batches of one bucket each, in an order that is a pure function of `(seed, epoch)`.

    Each epoch, every bucket's items are shuffled and cut into *global* batches of `batch_size * num_replicas` (the
    remainder of each bucket is left out that epoch; the shuffle changes which), the global batches are shuffled, and
    replica `rank` takes its `batch_size` slice of each. So all ranks step through the same bucket at the same time,
    and a resume at step `k` of an epoch skips exactly `k` batches (`set_epoch(epoch, start_batch=k)`).
    """

    def __init__(self, bucket_of: Sequence[int], batch_size: int, seed: int = 0, num_replicas: int = 1, rank: int = 0):
        self.bucket_of = list(bucket_of)
        self.batch_size, self.seed, self.num_replicas, self.rank = batch_size, seed, num_replicas, rank
        self.epoch, self.start_batch = 0, 0
        global_batch = batch_size * num_replicas
        counts = np.bincount(self.bucket_of) if self.bucket_of else np.zeros(0, dtype=int)
        if (counts // global_batch).sum() == 0:
            raise ValueError(
                f"No bucket holds a whole global batch ({global_batch} = {batch_size} per device x {num_replicas}): "
                f"bucket sizes {counts.tolist()}. Lower train_batch_size or add data."
            )

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def global_batches(self) -> list[np.ndarray]:
        rng = np.random.default_rng((self.seed, self.epoch))
        global_batch = self.batch_size * self.num_replicas
        bucket_of = np.asarray(self.bucket_of)
        batches = []
        for bucket in range(int(bucket_of.max()) + 1):
            members = rng.permutation(np.flatnonzero(bucket_of == bucket))
            batches += [
                members[start : start + global_batch]
                for start in range(0, len(members) - global_batch + 1, global_batch)
            ]
        return [batches[i] for i in rng.permutation(len(batches))]

    def __len__(self) -> int:
        counts = np.bincount(self.bucket_of)
        return int((counts // (self.batch_size * self.num_replicas)).sum())

    def __iter__(self):
        start, stop = self.rank * self.batch_size, (self.rank + 1) * self.batch_size
        for batch in self.global_batches()[self.start_batch :]:
            yield batch[start:stop].tolist()
