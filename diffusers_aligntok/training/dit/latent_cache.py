"""Latents cached once (LightningDiT-style), as safetensors shards that stream back quickly.

Layout of a cache directory:

    metadata.json                    tokenizer (path, config, weight fingerprint), latent statistics, data settings
    shard-00000.safetensors          "latents" (N, C, h, w), "latents_flipped" (N, C, h, w) (optional), "labels" (N,)
    shard-00001.safetensors ...

Shard k holds data-set items [k * shard_size, (k + 1) * shard_size), so any process can write any shard and a shard
that already exists is never recomputed (a killed caching run resumes where it stopped). Shards are written to a
temporary name and renamed when complete. Latents are *raw* tokenizer outputs; the statistics in the metadata (from
the tokenizer config when it has them, else measured over the cache) normalise them at training time.
"""

import argparse
import json
import logging
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm

from ...data import ImageDatasetConfig, build_image_dataset
from ...data.builtin_shapes import augmentation_generator
from ...models import AlignedAutoencoderKL
from ...utils import atomic_path, tokenizer_fingerprint


__all__ = [
    "METADATA_FILE",
    "SHARD_PATTERN",
    "CachedLatentDataset",
    "LatentNormalization",
    "build_latent_cache",
    "per_channel_statistics",
    "read_metadata",
    "shard_path",
    "write_metadata",
    "write_shard",
]

logger = logging.getLogger(__name__)

METADATA_FILE = "metadata.json"
SHARD_PATTERN = "shard-{index:05d}.safetensors"


def shard_path(cache_dir: str | Path, index: int) -> Path:
    return Path(cache_dir) / SHARD_PATTERN.format(index=index)


def write_shard(cache_dir: str | Path, index: int, tensors: dict[str, torch.Tensor]) -> Path:
    final = shard_path(cache_dir, index)
    with atomic_path(final) as temporary:
        save_file({name: tensor.contiguous() for name, tensor in tensors.items()}, str(temporary))
    return final


def write_metadata(cache_dir: str | Path, metadata: dict[str, Any]) -> None:
    with atomic_path(Path(cache_dir) / METADATA_FILE) as temporary:
        temporary.write_text(json.dumps(metadata, indent=2, default=str))


def read_metadata(cache_dir: str | Path) -> dict[str, Any]:
    path = Path(cache_dir) / METADATA_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{cache_dir} is not a latent cache (no {METADATA_FILE}). Build one with "
            "`python training/cache_latents.py --tokenizer TOKENIZER --data SOURCE --output_dir DIR`."
        )
    return json.loads(path.read_text())


def per_channel_statistics(shards: list[Path]) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of the un-flipped latents over all shards, accumulated in float64."""
    total = total_squares = None
    count = 0
    for path in shards:
        with safe_open(str(path), framework="pt") as handle:
            latents = handle.get_tensor("latents").double()
        channel_first = latents.transpose(0, 1).flatten(1)
        total = channel_first.sum(1) if total is None else total + channel_first.sum(1)
        total_squares = (
            channel_first.pow(2).sum(1) if total_squares is None else total_squares + channel_first.pow(2).sum(1)
        )
        count += channel_first.shape[1]
    mean = total / count
    std = (total_squares / count - mean.pow(2)).clamp_min(1e-12).sqrt()
    return mean.tolist(), std.tolist()


@dataclass
class LatentNormalization:
    """`(z - mean) / std * scaling_factor`, per channel; the same formula as `AlignedAutoencoderKL.normalize_latents`."""

    mean: torch.Tensor
    std: torch.Tensor
    scaling_factor: float = 1.0

    def __post_init__(self):
        # Folded into one multiply-add per item: the data loader normalises every latent of every step.
        self._scale = self.scaling_factor / self.std
        self._offset = -self.mean * self._scale

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any]) -> "LatentNormalization":
        stats = metadata["latent_statistics"]
        shape = (-1, 1, 1)
        return cls(
            torch.tensor(stats["mean"], dtype=torch.float32).view(shape),
            torch.tensor(stats["std"], dtype=torch.float32).view(shape),
            float(stats.get("scaling_factor", 1.0)),
        )

    def __call__(self, latents: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self._offset, latents.float(), self._scale)


class CachedLatentDataset(torch.utils.data.Dataset):
    """Map-style data set over a latent cache: items `{"latents": normalised (C, h, w) float32, "label": int}`.

    With `random_flip`, item `index` returns the cached horizontally flipped latent with probability 0.5, drawn from
    `augmentation_generator(seed, epoch, index)` (so a resumed run replays the same choice). Shards are opened lazily
    in each dataloader worker; latents are read one row at a time, labels once per shard.
    """

    def __init__(self, cache_dir: str | Path, random_flip: bool = True, seed: int = 0):
        self.cache_dir = Path(cache_dir)
        self.metadata = read_metadata(cache_dir)
        self.shard_size = int(self.metadata["shard_size"])
        self.num_samples = int(self.metadata["num_samples"])
        if self.num_samples == 0:
            raise ValueError(f"Latent cache {cache_dir} holds no samples.")
        missing = [i for i in range(self.num_shards) if not shard_path(cache_dir, i).is_file()]
        if missing:
            raise FileNotFoundError(
                f"Latent cache {cache_dir} is incomplete: shards {missing[:5]} are missing. Re-run cache_latents.py "
                "with the same arguments; it writes only the missing shards."
            )
        self.random_flip = random_flip and bool(self.metadata.get("flipped", False))
        self.seed = seed
        self.epoch = 0
        self.normalize = LatentNormalization.from_metadata(self.metadata)
        self.num_classes = self.metadata.get("num_classes")
        self._handles: dict[int, Any] = {}
        self._shard_labels: dict[int, list[int]] = {}

    @property
    def num_shards(self) -> int:
        return -(-self.num_samples // self.shard_size)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return tuple(self.metadata["latent_shape"])

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def _handle(self, shard_index: int):
        if shard_index not in self._handles:
            self._handles[shard_index] = safe_open(str(shard_path(self.cache_dir, shard_index)), framework="pt")
        return self._handles[shard_index]

    def __getitem__(self, index: int) -> dict[str, Any]:
        shard_index, row = divmod(int(index), self.shard_size)
        handle = self._handle(shard_index)
        key = "latents"
        if (
            self.random_flip
            and torch.rand((), generator=augmentation_generator(self.seed, self.epoch, int(index))) < 0.5
        ):
            key = "latents_flipped"
        latents = handle.get_slice(key)[row : row + 1][0]
        return {"latents": self.normalize(latents), "label": self._labels(shard_index)[row]}

    def _labels(self, shard_index: int) -> list[int]:
        """A shard's labels, read whole once (a few KB) rather than one row per item."""
        if shard_index not in self._shard_labels:
            self._shard_labels[shard_index] = self._handle(shard_index).get_tensor("labels").tolist()
        return self._shard_labels[shard_index]

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_handles"] = {}  # file handles do not cross process boundaries
        return state


def _write_shard_after(
    writer: ThreadPoolExecutor,
    previous: Future | None,
    output_dir: Path,
    shard_index: int,
    latents: list[torch.Tensor],
    flipped: list[torch.Tensor],
    labels: list[int],
) -> Future:
    """Queues shard `shard_index` for `writer` once the previous write is done (re-raising its error), so at most one
    finished shard waits in memory while the next is encoded."""
    if previous is not None:
        previous.result()
    tensors = {"latents": torch.cat(latents), "labels": torch.tensor(labels, dtype=torch.int64)}
    if flipped:
        tensors["latents_flipped"] = torch.cat(flipped)
    return writer.submit(write_shard, output_dir, shard_index, tensors)


@torch.no_grad()
def build_latent_cache(
    tokenizer: str | Path,
    output_dir: str | Path,
    *,
    data: str = "builtin:shapes",
    split: str = "train",
    resolution: int = 256,
    num_builtin_samples: int = 2048,
    max_samples: int | None = None,
    batch_size: int = 64,
    shard_size: int = 4096,
    flip: bool = True,
    dtype: str = "float32",
    seed: int = 0,
    num_workers: int = 4,
) -> Path:
    """Encodes a labelled data set once into a latent cache at `output_dir` (with flipped copies unless `flip=False`).

    Each accelerate process encodes its share of the shards; shards that already exist are skipped, so a killed run
    resumes by calling this again with the same arguments. Images are decoded and resized by `num_workers` loader
    processes while the tokenizer encodes, and a finished shard is written by a background thread while the next is
    encoded: on a GPU, decoding JPEGs in this process (about 240 images/s per core, `benchmarks/data_speed.py`) would
    otherwise bound the encoder. The metadata records the tokenizer (path, config, weight
    fingerprint) and the latent statistics that normalise latents in training: the tokenizer config's
    `latents_mean`/`latents_std` when set, else measured over the cache.

    Args:
        tokenizer: An `AlignedAutoencoderKL` directory or hub id.
        output_dir: The cache directory (created if missing).
        data, split, resolution, num_builtin_samples, max_samples, seed: The data set, as in `ImageDatasetConfig`
            (center-cropped, never flipped: flipped latents are cached separately).
        batch_size (`int`): Images per encoder call.
        shard_size (`int`): Items per shard file.
        flip (`bool`): Also cache the latents of horizontally flipped images.
        dtype (`str`): Storage dtype of the latents: "float32", "bfloat16" (half the disk) or "float16".
        num_workers (`int`): Loader processes that decode and resize images (0: in this process).

    Returns:
        `Path`: `output_dir`.
    """
    accelerator = Accelerator()
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    with accelerator.main_process_first():
        dataset = build_image_dataset(
            ImageDatasetConfig(
                source=data,
                split=split,
                resolution=resolution,
                center_crop=True,
                random_flip=False,
                max_samples=max_samples,
                num_builtin_samples=num_builtin_samples,
                seed=seed,
            )
        )
    if getattr(dataset, "num_classes", None) is None:
        raise ValueError(f"{data} has no class labels; class-conditional DiT training needs them.")
    model = AlignedAutoencoderKL.from_pretrained(tokenizer).to(accelerator.device).eval()
    storage_dtype = getattr(torch, dtype)

    num_shards = -(-len(dataset) // shard_size)
    my_shards = [k for k in range(num_shards) if k % accelerator.num_processes == accelerator.process_index]
    todo = [k for k in my_shards if not shard_path(output_dir, k).is_file()]
    if len(todo) < len(my_shards):
        logger.info(
            f"Rank {accelerator.process_index}: {len(my_shards) - len(todo)} shards already cached; skipping them."
        )
    # One loader over this rank's missing shards, its batches never crossing a shard boundary.
    shard_batches = [
        (shard_index, list(range(start, min(start + batch_size, end))))
        for shard_index in todo
        for end in [min((shard_index + 1) * shard_size, len(dataset))]
        for start in range(shard_index * shard_size, end, batch_size)
    ]
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=[indices for _, indices in shard_batches], num_workers=num_workers
    )
    num_skipped, pending_write = 0, None
    current_shard, latents, flipped, labels = None, [], [], []
    progress = tqdm(total=len(todo), desc="shards", disable=not accelerator.is_local_main_process)
    with ThreadPoolExecutor(max_workers=1) as writer:
        for (shard_index, _), batch in zip(shard_batches, loader):
            if shard_index != current_shard and current_shard is not None:
                pending_write = _write_shard_after(
                    writer, pending_write, output_dir, current_shard, latents, flipped, labels
                )
                latents, flipped, labels = [], [], []
                progress.update()
            current_shard = shard_index
            num_skipped += int(batch["num_skipped"].sum())
            images = batch["pixel_values"].to(accelerator.device)
            latents.append(model.encode(images).latent_dist.mode().to("cpu", storage_dtype))
            if flip:
                flipped.append(model.encode(images.flip(-1)).latent_dist.mode().to("cpu", storage_dtype))
            labels.extend(batch["label"].tolist())
        if current_shard is not None:
            pending_write = _write_shard_after(
                writer, pending_write, output_dir, current_shard, latents, flipped, labels
            )
            progress.update()
        if pending_write is not None:
            pending_write.result()
    progress.close()
    accelerator.wait_for_everyone()

    if accelerator.is_main_process:
        shards = [shard_path(output_dir, k) for k in range(num_shards)]
        config = model.config
        if config.latents_mean is not None:
            mean, std, source = list(config.latents_mean), list(config.latents_std), "tokenizer config"
        else:
            (mean, std), source = per_channel_statistics(shards), "measured over this cache"
        sample = dataset[0]["pixel_values"]
        factor = model.spatial_compression_ratio
        write_metadata(
            output_dir,
            {
                "tokenizer": {
                    "path": str(tokenizer),
                    "class_name": type(model).__name__,
                    "fingerprint": tokenizer_fingerprint(model),
                    "config": dict(config),
                },
                "latent_statistics": {"mean": mean, "std": std, "scaling_factor": 1.0, "source": source},
                "latent_shape": [config.latent_channels, sample.shape[-2] // factor, sample.shape[-1] // factor],
                "num_samples": len(dataset),
                "num_classes": dataset.num_classes,
                "shard_size": shard_size,
                "flipped": flip,
                "dtype": dtype,
                "data": {
                    "source": data,
                    "split": split,
                    "resolution": resolution,
                    "center_crop": True,
                    "description": getattr(dataset, "source_description", data),
                },
                "skipped_corrupt_images": num_skipped,
            },
        )
        logger.info(f"Cached {len(dataset)} latents in {num_shards} shards under {output_dir} (statistics: {source}).")
    return output_dir


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Encode a data set once into a latent cache for DiT training (with horizontally flipped copies).\n\n"
        "    accelerate launch training/cache_latents.py --tokenizer runs/imagenet_f16d32/stage3/model \\\n"
        "        --data ILSVRC/imagenet-1k --resolution 256 --output_dir cache/imagenet256_aligntok\n\n"
        "Each process encodes its share of the shards; existing shards are skipped, so a killed run resumes by "
        "re-running the same command.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--tokenizer", required=True, help="AlignedAutoencoderKL directory or hub id.")
    parser.add_argument("--data", default="builtin:shapes", help="Data source (see ImageDatasetConfig.source).")
    parser.add_argument("--split", default="train")
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--num_builtin_samples", type=int, default=2048)
    parser.add_argument("--max_samples", type=int, default=None)
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--shard_size", type=int, default=4096, help="Items per shard file.")
    parser.add_argument("--no_flip", action="store_true", help="Do not also cache horizontally flipped latents.")
    parser.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "bfloat16", "float16"],
        help="Storage dtype of the latents (bfloat16 halves the disk; DiT training runs in bf16).",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--dataloader_num_workers", type=int, default=4, help="Loader processes decoding images (0: in this process)."
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> Path:
    """The `training/cache_latents.py` command: `build_latent_cache` with the flags of `parse_args`."""
    args = parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    return build_latent_cache(
        args.tokenizer,
        args.output_dir,
        data=args.data,
        split=args.split,
        resolution=args.resolution,
        num_builtin_samples=args.num_builtin_samples,
        max_samples=args.max_samples,
        batch_size=args.batch_size,
        shard_size=args.shard_size,
        flip=not args.no_flip,
        dtype=args.dtype,
        seed=args.seed,
        num_workers=args.dataloader_num_workers,
    )
