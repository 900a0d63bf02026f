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

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..data.builtin_shapes import augmentation_generator


METADATA_FILE = "metadata.json"
SHARD_PATTERN = "shard-{index:05d}.safetensors"


def tokenizer_fingerprint(tokenizer: torch.nn.Module) -> str:
    """A hash of the tokenizer's config and weights: a cache and a pipeline must agree on it."""
    digest = hashlib.sha256()
    config = dict(getattr(tokenizer, "config", {}))
    # Latent statistics and scaling do not change the latents themselves.
    for key in ("latents_mean", "latents_std", "scaling_factor", "shift_factor", "_name_or_path", "force_upcast"):
        config.pop(key, None)
    digest.update(json.dumps(config, sort_keys=True, default=str).encode())
    for name, tensor in sorted(tokenizer.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def shard_path(cache_dir: str | Path, index: int) -> Path:
    return Path(cache_dir) / SHARD_PATTERN.format(index=index)


def write_shard(cache_dir: str | Path, index: int, tensors: dict[str, torch.Tensor]) -> Path:
    final = shard_path(cache_dir, index)
    temporary = final.with_suffix(".incomplete")
    save_file({name: tensor.contiguous() for name, tensor in tensors.items()}, str(temporary))
    os.replace(temporary, final)
    return final


def write_metadata(cache_dir: str | Path, metadata: dict[str, Any]) -> None:
    path = Path(cache_dir) / METADATA_FILE
    temporary = path.with_suffix(".incomplete")
    temporary.write_text(json.dumps(metadata, indent=2, default=str))
    os.replace(temporary, path)


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
