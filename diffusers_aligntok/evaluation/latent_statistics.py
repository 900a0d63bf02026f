"""Latent statistics of a tokenizer over a data set, and writing them into the model's `config.json`.

A diffusion model trains best on latents with zero mean and unit variance; the tokenizer's raw latents have neither.
[`LatentStatistics`] accumulates, over a data set and in float64 (Chan et al.'s parallel form of Welford's algorithm,
so batches, processes and resumed runs merge exactly):

- per channel: `latents_mean[c]`, `latents_std[c]` (population std over images and positions);
- globally, over all channels and positions: `shift_factor` = the mean, `scaling_factor` = 1 / the std. These are the
  two numbers FLUX/SD3-style pipelines use: `(z - shift_factor) * scaling_factor`.

Who applies what, after [`write_latent_statistics`] (one normalisation per config, chosen with `normalization`):

- `"per-channel"` (default; class-conditional DiT training, `training/cache_latents.py`): writes `latents_mean`,
  `latents_std`, and `scaling_factor = 1.0`, `shift_factor = 0.0`. `AlignedAutoencoderKL.normalize_latents` (and
  SDXL-family pipelines) compute `(z - latents_mean) * scaling_factor / latents_std`, which is then zero-mean,
  unit-std per channel. FLUX/SD3 pipelines never read per-channel statistics and see `(z - 0) * 1`, i.e. raw latents.
- `"global"` (FLUX-style pipelines, text-to-image with `FluxPipeline`): writes `shift_factor`, `scaling_factor` and
  clears `latents_mean` / `latents_std`, so `normalize_latents` and the pipelines apply the same global affine map.

Writing both kinds at once cannot work: with per-channel statistics set, `normalize_latents` multiplies by
`scaling_factor` as an *extra* factor (the diffusers SDXL convention), so a global `scaling_factor = 1 / std` would
shrink every channel again. The command prints both kinds either way.
"""

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..utils import atomic_path


LATENT_NORMALIZATIONS = ("per-channel", "global")
# Model classes whose config has the four fields and whose pipelines read them as described above.
_WRITABLE_CLASSES = ("AlignedAutoencoderKL", "AutoencoderKL")


class LatentStatistics:
    """Streaming per-channel mean and variance of `(B, C, h, w)` latents, in float64 (mergeable)."""

    def __init__(self, num_channels: int):
        self.num_channels = int(num_channels)
        self.num_images = 0
        self.count = 0  # values per channel
        self.mean = np.zeros(self.num_channels, dtype=np.float64)
        self.m2 = np.zeros(self.num_channels, dtype=np.float64)  # sum of squared deviations from the mean

    def update(self, latents: torch.Tensor) -> "LatentStatistics":
        if latents.ndim != 4 or latents.shape[1] != self.num_channels:
            raise ValueError(f"Expected latents (batch, {self.num_channels}, h, w), got {tuple(latents.shape)}.")
        values = latents.detach().double().transpose(0, 1).flatten(1)  # (C, B*h*w)
        if not torch.isfinite(values).all():
            raise ValueError("The latents contain NaN or inf; check the tokenizer (float16 decoders can overflow).")
        batch = LatentStatistics(self.num_channels)
        batch.num_images = latents.shape[0]
        batch.count = values.shape[1]
        batch.mean = values.mean(dim=1).cpu().numpy()
        batch.m2 = (values - values.mean(dim=1, keepdim=True)).pow(2).sum(dim=1).cpu().numpy()
        return self.merge(batch)

    def merge(self, other: "LatentStatistics") -> "LatentStatistics":
        if other.num_channels != self.num_channels:
            raise ValueError(
                f"Cannot merge {other.num_channels}-channel statistics into {self.num_channels}-channel ones."
            )
        if other.count == 0:
            return self
        total = self.count + other.count
        delta = other.mean - self.mean
        self.mean = self.mean + delta * (other.count / total)
        self.m2 = self.m2 + other.m2 + delta**2 * (self.count * other.count / total)
        self.count = total
        self.num_images += other.num_images
        return self

    def _check_nonempty(self):
        if self.count == 0:
            raise ValueError("No latents were accumulated.")

    @property
    def std(self) -> np.ndarray:
        self._check_nonempty()
        return np.sqrt(self.m2 / self.count)

    @property
    def global_mean(self) -> float:
        self._check_nonempty()
        return float(self.mean.mean())  # every channel has the same count

    @property
    def global_std(self) -> float:
        self._check_nonempty()
        spread_between_channels = (self.mean - self.global_mean) ** 2
        return float(
            np.sqrt((self.m2.sum() + self.count * spread_between_channels.sum()) / (self.count * self.num_channels))
        )

    def to_dict(self) -> dict[str, Any]:
        """Everything a user or a training script needs, as plain Python numbers."""
        return {
            "num_images": int(self.num_images),
            "values_per_channel": int(self.count),
            "latents_mean": [float(value) for value in self.mean],
            "latents_std": [float(value) for value in self.std],
            "global_mean": self.global_mean,
            "global_std": self.global_std,
            "shift_factor": self.global_mean,
            "scaling_factor": 1.0 / self.global_std,
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "num_channels": self.num_channels,
            "num_images": self.num_images,
            "count": self.count,
            "mean": self.mean,
            "m2": self.m2,
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> "LatentStatistics":
        statistics = cls(int(state["num_channels"]))
        statistics.num_images = int(state["num_images"])
        statistics.count = int(state["count"])
        statistics.mean = np.asarray(state["mean"], dtype=np.float64).copy()
        statistics.m2 = np.asarray(state["m2"], dtype=np.float64).copy()
        return statistics


def latent_normalization_config(statistics: LatentStatistics, normalization: str = "per-channel") -> dict[str, Any]:
    """The config values to write for `normalization` (see the module docstring for who reads which)."""
    values = statistics.to_dict()
    if normalization == "per-channel":
        return {
            "latents_mean": values["latents_mean"],
            "latents_std": values["latents_std"],
            "scaling_factor": 1.0,
            "shift_factor": 0.0,
        }
    if normalization == "global":
        return {
            "latents_mean": None,
            "latents_std": None,
            "scaling_factor": values["scaling_factor"],
            "shift_factor": values["shift_factor"],
        }
    raise ValueError(f"normalization must be one of {LATENT_NORMALIZATIONS}, got {normalization!r}.")


def resolve_model_config_path(model_dir: str | os.PathLike) -> Path:
    """`config.json` of a `save_pretrained` directory, or of a pipeline directory's `vae/`."""
    model_dir = Path(model_dir).expanduser()
    for candidate in (model_dir / "config.json", model_dir / "vae" / "config.json"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"{model_dir} has no config.json (nor vae/config.json); --write needs a local save_pretrained directory."
    )


def write_latent_statistics(
    model_dir: str | os.PathLike, statistics: LatentStatistics, normalization: str = "per-channel"
) -> dict[str, Any]:
    """Writes the statistics into the model's `config.json` in place, so `from_pretrained` users get them.

    Only the normalisation fields change (the weights are untouched). The file is replaced atomically, after checking
    that the model class has these fields and that the channel count matches.

    Returns:
        The fields written.
    """
    config_path = resolve_model_config_path(model_dir)
    config = json.loads(config_path.read_text())
    class_name = config.get("_class_name")
    if class_name not in _WRITABLE_CLASSES:
        raise ValueError(
            f"{config_path} belongs to {class_name!r}; only {list(_WRITABLE_CLASSES)} configs have latents_mean, "
            "latents_std, scaling_factor and shift_factor with the meaning written here."
        )
    if int(config.get("latent_channels", -1)) != statistics.num_channels:
        raise ValueError(
            f"{config_path} has latent_channels={config.get('latent_channels')}, but the statistics have "
            f"{statistics.num_channels} channels; they were computed with another model."
        )
    updates = latent_normalization_config(statistics, normalization)
    config.update(updates)
    with atomic_path(config_path) as temporary:
        temporary.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return updates


@torch.no_grad()
def compute_latent_statistics(
    adapter,
    dataset: torch.utils.data.Dataset,
    batch_size: int = 32,
    num_workers: int = 0,
    accelerator=None,
    show_progress: bool = True,
) -> LatentStatistics:
    """Streams `dataset` through `adapter.encode` and accumulates [`LatentStatistics`] of the raw latents.

    With an `accelerator`, each process encodes a contiguous share of the batches and the statistics are merged
    exactly (every process returns the merged result).
    """
    from tqdm.auto import tqdm

    from .streaming import iterate_batches, shard_batches

    num_samples = len(dataset)
    if accelerator is not None:
        batch_ids = shard_batches(accelerator, num_samples, batch_size)
    else:
        batch_ids = list(range(-(-num_samples // batch_size)))
    statistics = LatentStatistics(adapter.latent_channels)
    disable = not show_progress or (accelerator is not None and not accelerator.is_local_main_process)
    for _, batch in tqdm(
        iterate_batches(dataset, batch_ids, batch_size, num_samples, num_workers),
        total=len(batch_ids),
        desc="latent statistics",
        disable=disable,
    ):
        statistics.update(adapter.encode(batch["pixel_values"]))
    if accelerator is not None and accelerator.num_processes > 1:
        from accelerate.utils import gather_object

        merged = LatentStatistics(adapter.latent_channels)
        for state in gather_object([statistics.state_dict()]):
            merged.merge(LatentStatistics.from_state_dict(state))
        statistics = merged
    return statistics
