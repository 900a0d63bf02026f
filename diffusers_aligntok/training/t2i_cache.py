"""Precomputed latents and text embeddings for text-to-image training (`data.cache_dir`).

The frozen VAE and text encoders cost as much as a small transformer step; encoding every image and caption once
makes each later epoch (and each arm of an ablation that shares captions) cheaper. Layout:

    metadata.json               VAE path and weight fingerprint, text encoders, max_sequence_length, data source,
                                buckets, each item's bucket, skip and truncation counts
    empty_caption.safetensors   the embeddings of "" (what caption dropout substitutes)
    shard-00000.safetensors     for item i of the shard: "i.latent_mean", ("i.latent_std" for a stochastic VAE),
                                "i.prompt_embeds", "i.pooled_prompt_embeds"

Shard k holds items [k * shard_size, (k + 1) * shard_size) of the scanned data set, is written by process
`k % num_processes` to a temporary name and renamed, and is never recomputed: a killed caching run resumes where it
stopped. Latents are raw VAE outputs (normalised at training time with the VAE's `scaling_factor`/`shift_factor`); a
VAE with a non-zero posterior std keeps its mean and std, so training still draws a fresh sample each time.
"""

import logging
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ..data.text_image_datasets import TextImageDataset, collate_text_image_batch
from ..utils import tokenizer_fingerprint
from .dit.latent_cache import read_metadata, shard_path, write_metadata, write_shard


logger = logging.getLogger(__name__)

EMPTY_CAPTION_FILE = "empty_caption.safetensors"
CACHE_VERSION = 1


def cache_identity(
    vae: torch.nn.Module, vae_path: str, text_encoders, dataset: TextImageDataset, vae_fingerprint: str | None = None
) -> dict[str, Any]:
    """What a cache must agree with to be reused: the VAE weights, the text conditioning and the scanned data."""
    return {
        "version": CACHE_VERSION,
        "vae": {
            "path": vae_path,
            "class": type(vae).__name__,
            "fingerprint": vae_fingerprint or tokenizer_fingerprint(vae),
        },
        "text_encoders": {"path": text_encoders.path, "max_sequence_length": text_encoders.max_sequence_length},
        "data": {
            "source": dataset.source_description,
            "buckets": [str(b) for b in dataset.buckets],
            "num_items": len(dataset),
        },
    }


def check_cache_identity(cache_dir: Path, identity: dict[str, Any]) -> None:
    cached = {key: read_metadata(cache_dir).get(key) for key in identity}
    differences = [
        f"{key}: cache {cached[key]} vs now {identity[key]}" for key in identity if cached[key] != identity[key]
    ]
    if differences:
        raise ValueError(
            f"The cache in {cache_dir} was built for other inputs ({'; '.join(differences)}). Point data.cache_dir at a "
            "new directory, or delete this one to rebuild it."
        )


@torch.no_grad()
def build_t2i_cache(
    cache_dir: str | Path,
    dataset: TextImageDataset,
    vae,
    vae_path: str,
    text_encoders,
    accelerator,
    shard_size: int = 256,
    batch_size: int = 16,
    vae_fingerprint: str | None = None,
) -> Path:
    """Encodes every item of `dataset` into `cache_dir` (only the missing shards); all processes must call it."""
    cache_dir = Path(cache_dir)
    identity = cache_identity(vae, vae_path, text_encoders, dataset, vae_fingerprint)
    if (cache_dir / "metadata.json").is_file():
        check_cache_identity(cache_dir, identity)
        if read_metadata(cache_dir).get("complete"):
            return cache_dir
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        cache_dir.mkdir(parents=True, exist_ok=True)
        write_metadata(cache_dir, {**identity, "complete": False})
        empty, empty_pooled = text_encoders.encode([""])
        save_file(
            {"prompt_embeds": empty[0].cpu().contiguous(), "pooled_prompt_embeds": empty_pooled[0].cpu().contiguous()},
            str(cache_dir / EMPTY_CAPTION_FILE),
        )
    accelerator.wait_for_everyone()

    num_shards = -(-len(dataset) // shard_size)
    mine = [k for k in range(num_shards) if k % accelerator.num_processes == accelerator.process_index]
    todo = [k for k in mine if not shard_path(cache_dir, k).is_file()]
    counts = torch.zeros(3, dtype=torch.long, device=accelerator.device)  # unreadable, truncated clip, truncated t5
    for shard in todo:
        items = list(range(shard * shard_size, min(len(dataset), (shard + 1) * shard_size)))
        tensors: dict[str, torch.Tensor] = {}
        by_bucket: dict[int, list[int]] = {}
        for index in items:
            by_bucket.setdefault(dataset.bucket_of[index], []).append(index)
        for members in by_bucket.values():
            for start in range(0, len(members), batch_size):
                chunk = members[start : start + batch_size]
                batch = collate_text_image_batch([dataset[i] for i in chunk])
                counts[0] += batch["num_skipped"]
                truncated = text_encoders.count_truncated(batch["caption"])
                counts[1] += truncated["clip"]
                counts[2] += truncated["t5"]
                distribution = vae.encode(batch["pixel_values"].to(accelerator.device, vae.dtype)).latent_dist
                prompt_embeds, pooled = text_encoders.encode(batch["caption"])
                stochastic = bool(distribution.std.abs().max() > 0)
                for row, index in enumerate(chunk):
                    tensors[f"{index}.latent_mean"] = distribution.mean[row].float().cpu()
                    if stochastic:
                        tensors[f"{index}.latent_std"] = distribution.std[row].float().cpu()
                    tensors[f"{index}.prompt_embeds"] = prompt_embeds[row].cpu()
                    tensors[f"{index}.pooled_prompt_embeds"] = pooled[row].cpu()
        write_shard(cache_dir, shard, tensors)
        logger.info(f"Cached shard {shard + 1}/{num_shards} ({len(items)} items) in {cache_dir}")
    counts = accelerator.reduce(counts, reduction="sum")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_metadata(
            cache_dir,
            {
                **identity,
                "complete": True,
                "shard_size": shard_size,
                "bucket_of": list(dataset.bucket_of),
                "skipped_at_scan": dataset.skipped,
                # Counted over the shards written by this call (a resumed caching run counts only its own shards).
                "skipped_unreadable_while_caching": int(counts[0]),
                "truncated_captions": {"clip": int(counts[1]), "t5": int(counts[2])},
            },
        )
    accelerator.wait_for_everyone()
    return cache_dir


class CachedTextImageDataset(torch.utils.data.Dataset):
    """Items of a complete cache: `{"latent_mean", ["latent_std"], "prompt_embeds", "pooled_prompt_embeds"}`."""

    def __init__(self, cache_dir: str | Path):
        self.cache_dir = Path(cache_dir)
        self.metadata = read_metadata(cache_dir)
        if not self.metadata.get("complete"):
            raise FileNotFoundError(
                f"The text-to-image cache {cache_dir} is incomplete; run training again to finish it."
            )
        self.shard_size = int(self.metadata["shard_size"])
        self.bucket_of = list(self.metadata["bucket_of"])
        empty = load_file(str(self.cache_dir / EMPTY_CAPTION_FILE))
        self.empty_prompt_embeds, self.empty_pooled_prompt_embeds = (
            empty["prompt_embeds"],
            empty["pooled_prompt_embeds"],
        )
        self._handles: dict[int, Any] = {}

    def __len__(self) -> int:
        return len(self.bucket_of)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        shard = int(index) // self.shard_size
        if shard not in self._handles:
            self._handles[shard] = safe_open(str(shard_path(self.cache_dir, shard)), framework="pt")
        handle = self._handles[shard]
        item = {
            name: handle.get_tensor(f"{index}.{name}")
            for name in ("latent_mean", "prompt_embeds", "pooled_prompt_embeds")
        }
        if f"{index}.latent_std" in handle.keys():
            item["latent_std"] = handle.get_tensor(f"{index}.latent_std")
        return item

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_handles"] = {}  # file handles do not cross process boundaries
        return state


def collate_cached_batch(items: list[dict]) -> dict[str, torch.Tensor]:
    return {name: torch.stack([item[name] for item in items]) for name in items[0]}
