"""Streaming over an evaluation data set: fixed batches, sharded over processes, resumable, never all images at once.

Batch `b` always holds images `[b * batch_size, (b + 1) * batch_size)` of the data set (centre crops, no flip), so a
run is a deterministic function of its settings whatever the number of processes, and a resumed process skips the
batches it has already done. [`shard_batches`] gives each accelerate process a contiguous run of batch ids
(`accelerator.split_between_processes`).
"""

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from ..data import ImageDatasetConfig, build_image_dataset
from ..utils import atomic_path


def build_evaluation_dataset(
    source: str,
    split: str,
    resolution: int | tuple[int, int],
    num_samples: int,
    seed: int = 0,
    image_column: str | None = None,
    label_column: str | None = None,
) -> torch.utils.data.Dataset:
    """`num_samples` images of `source`, resized to cover `resolution` and centre-cropped, never flipped.

    Any image size and mode is accepted: images are converted to RGB (alpha composited on white, grayscale repeated)
    and resized so they just cover the target (PIL bicubic), then centre-cropped: the ImageNet evaluation protocol
    (ADM / DiT / LightningDiT). When the split has more images than `num_samples`, the images are taken evenly spaced
    over it ([`EvenlySpacedSubset`]), so a class-sorted folder still gives every class. For `builtin:shapes`,
    `num_samples` images are generated.
    """
    config = ImageDatasetConfig(
        source=source,
        split=split,
        resolution=resolution,
        center_crop=True,
        random_flip=False,
        image_column=image_column,
        label_column=label_column,
        num_builtin_samples=num_samples,
        seed=seed,
        streaming=False,
    )
    dataset = build_image_dataset(config)
    if isinstance(dataset, torch.utils.data.IterableDataset):  # never with streaming=False; a guard for the future
        raise ValueError(f"{source} gave a streaming data set; evaluation needs indexable data (a local copy).")
    if len(dataset) > num_samples:
        return EvenlySpacedSubset(dataset, num_samples)
    return dataset


class EvenlySpacedSubset(torch.utils.data.Dataset):
    """Items `floor(i * len(dataset) / num_samples)` for `i < num_samples`: a deterministic, order-spread subset.

    Image folders list files class by class, so the *first* N images would cover only the first classes; evenly spaced
    ones cover all of them in proportion.
    """

    def __init__(self, dataset: torch.utils.data.Dataset, num_samples: int):
        self.dataset = dataset
        self.positions = [index * len(dataset) // num_samples for index in range(num_samples)]
        self.num_classes = getattr(dataset, "num_classes", None)
        self.source_description = (
            f"{getattr(dataset, 'source_description', 'data')}, {num_samples} evenly spaced of {len(dataset)}"
        )

    @property
    def num_upscaled(self) -> int:
        return getattr(self.dataset, "num_upscaled", 0)

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.dataset[self.positions[index]]


class IndexedItems(torch.utils.data.Dataset):
    """Adds `index` and `upscaled` (whether the source image was smaller than the target) to each item."""

    def __init__(self, dataset: torch.utils.data.Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        # `num_upscaled` is the data set's per-process counter (ShapesDataset never upscales and has none).
        before = getattr(self.dataset, "num_upscaled", 0)
        item = dict(self.dataset[index])
        item["upscaled"] = int(getattr(self.dataset, "num_upscaled", 0) - before)
        item["index"] = index
        return item


def batch_indices(batch_id: int, batch_size: int, num_samples: int) -> list[int]:
    return list(range(batch_id * batch_size, min((batch_id + 1) * batch_size, num_samples)))


def shard_batches(accelerator, num_samples: int, batch_size: int) -> list[int]:
    """This process's batch ids: a contiguous share of `ceil(num_samples / batch_size)` batches."""
    num_batches = -(-num_samples // batch_size)
    with accelerator.split_between_processes(list(range(num_batches))) as mine:
        return list(mine)


def iterate_batches(
    dataset: torch.utils.data.Dataset, batch_ids: list[int], batch_size: int, num_samples: int, num_workers: int = 0
) -> Iterator[tuple[int, dict[str, torch.Tensor]]]:
    """Yields `(batch_id, batch)` for `batch_ids` in order; workers prefetch, the main process holds one batch."""
    if not batch_ids:
        return
    sampler = [batch_indices(batch_id, batch_size, num_samples) for batch_id in batch_ids]
    loader = torch.utils.data.DataLoader(
        IndexedItems(dataset), batch_sampler=sampler, num_workers=num_workers, persistent_workers=False
    )
    yield from zip(batch_ids, loader, strict=True)


def atomic_torch_save(state: Any, path: str | os.PathLike) -> Path:
    """`torch.save` to a temporary file, then rename: a crash mid-write never leaves a truncated state."""
    path = Path(path)
    with atomic_path(path) as temporary:
        torch.save(state, temporary)
    return path
