"""One small interface over image tokenizers, so a single evaluation compares AlignTok with any diffusers autoencoder.

A tokenizer adapter has

    name: str                 # shown in tables; says "random weights" when they are
    spatial_factor: int       # an H x W image maps to an (H / f) x (W / f) latent
    latent_channels: int
    encode(images) -> latents # images (B, 3, H, W) in [-1, 1] -> raw latents (B, C, H / f, W / f), float32
    decode(latents) -> images # raw latents -> images (B, 3, H, W), float32 (not clamped)

Raw latents are what `decode` takes back: no `scaling_factor` / `shift_factor` / per-channel normalisation applied
(those belong to the diffusion model, see `latent_statistics.py`). Adapters exist for

- `AlignedAutoencoderKL` (ours) and `diffusers.AutoencoderKL` (SD-VAE, FLUX VAE, VA-VAE / REPA-E exports): the mode of
  `encode(x).latent_dist` (AlignTok's latent is deterministic anyway);
- `diffusers.AutoencoderDC`: `encode(x).latent`;
- `diffusers.AutoencoderRAE`: `encode(x).latent`. RAE takes and returns images in `[0, 1]` and normalises its latent
  inside `encode`; the adapter converts the image range, and its output size is fixed by its config.

[`load_tokenizer`] reads `config.json`'s `_class_name` and builds the right class and adapter; `"flux-vae-random"`
builds an `AutoencoderKL` in the FLUX.1 VAE configuration with *random* weights for offline comparisons.
"""

import json
import math
import os
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn as nn

from ..models import AlignedAutoencoderKL
from ..standins import FLUX_VAE_CONFIG, build_random_flux_vae  # noqa: F401  (re-exported)
from ..utils import to_jsonable


FLUX_VAE_RANDOM = "flux-vae-random"


@runtime_checkable
class TokenizerAdapter(Protocol):
    name: str
    spatial_factor: int
    latent_channels: int

    def encode(self, images: torch.Tensor) -> torch.Tensor: ...

    def decode(self, latents: torch.Tensor) -> torch.Tensor: ...


class DiffusersAutoencoderAdapter:
    """Adapter base for a diffusers autoencoder: device/dtype handling, size checks, a JSON description.

    Args:
        model (`nn.Module`): The autoencoder; put in eval mode with gradients off.
        name (`str`, *optional*): Display name; defaults to the source path or the class name.
        source (`str`, *optional*): Where it was loaded from (recorded in results).
        random_weights (`bool`): The weights are random (an offline stand-in); the name then says so.
        dtype (`torch.dtype`, *optional*): Compute dtype; inputs are cast to it and outputs come back as float32.
    """

    def __init__(
        self,
        model: nn.Module,
        name: str | None = None,
        source: str | None = None,
        random_weights: bool = False,
        dtype: torch.dtype | None = None,
    ):
        self.model = model.eval().requires_grad_(False)
        if dtype is not None and dtype != next(model.parameters()).dtype:
            self.model.to(dtype=dtype)
        self.source = source
        self.random_weights = random_weights
        name = name or (os.path.basename(os.path.normpath(source)) if source else type(model).__name__)
        self.name = f"{name} (random weights)" if random_weights and "random" not in name else name

    @property
    def spatial_factor(self) -> int:
        return (
            int(self.model.spatial_compression_ratio)
            if hasattr(self.model, "spatial_compression_ratio")
            else (2 ** (len(self.model.config.block_out_channels) - 1))
        )

    @property
    def latent_channels(self) -> int:
        return int(self.model.config.latent_channels)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def to(self, device: str | torch.device) -> "DiffusersAutoencoderAdapter":
        self.model.to(device)
        return self

    def check_image_size(self, height: int, width: int) -> None:
        """Raises `ValueError` if this tokenizer cannot take `height x width` images."""
        factor = self.spatial_factor
        if height % factor or width % factor:
            raise ValueError(
                f"{self.name}: image size {height}x{width} is not a multiple of its spatial factor {factor}; choose a "
                f"resolution that every compared tokenizer's factor divides (e.g. {_round_up(height, factor)})."
            )

    def _model_input(self, images: torch.Tensor) -> torch.Tensor:
        return images.to(device=self.device, dtype=self.dtype)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self._encode(self._model_input(images)).float()

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.model.decode(latents.to(device=self.device, dtype=self.dtype)).sample.float()

    def _encode(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """What the results JSON records about this tokenizer."""
        return {
            "name": self.name,
            "class_name": type(self.model).__name__,
            "source": self.source,
            "random_weights": self.random_weights,
            "spatial_factor": self.spatial_factor,
            "latent_channels": self.latent_channels,
            "num_parameters": sum(parameter.numel() for parameter in self.model.parameters()),
            "dtype": str(self.dtype).replace("torch.", ""),
            "config": to_jsonable(dict(self.model.config)),
        }


class AlignedAutoencoderKLAdapter(DiffusersAutoencoderAdapter):
    """`AlignedAutoencoderKL`: the deterministic latent (`latent_dist.mode()`)."""

    def _encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.encode(images).latent_dist.mode()


class AutoencoderKLAdapter(DiffusersAutoencoderAdapter):
    """`diffusers.AutoencoderKL`: the posterior mode (its mean), the usual choice for reconstruction metrics."""

    def _encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.encode(images).latent_dist.mode()


class AutoencoderDCAdapter(DiffusersAutoencoderAdapter):
    """`diffusers.AutoencoderDC` (deep compression autoencoder): `encode(x).latent`."""

    def _encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.encode(images).latent


class AutoencoderRAEAdapter(DiffusersAutoencoderAdapter):
    """`diffusers.AutoencoderRAE`: images in `[0, 1]`, fixed output size `decoder_image_size`, latent normalised inside.

    The spatial factor is the decoder patch size (one latent position per decoded patch).
    """

    @property
    def spatial_factor(self) -> int:
        return int(self.model.config.patch_size)

    def check_image_size(self, height: int, width: int) -> None:
        size = int(self.model.decoder_image_size)
        if (height, width) != (size, size):
            raise ValueError(
                f"{self.name}: AutoencoderRAE always decodes {size}x{size} images (its encoder resizes every input to "
                f"{self.model.config.encoder_input_size}), so it cannot reconstruct {height}x{width} images; evaluate "
                f"it at --resolution {size}."
            )

    def _encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.encode((images + 1) / 2).latent

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return super().decode(latents) * 2 - 1


def _adapter_table() -> dict[type, type[DiffusersAutoencoderAdapter]]:
    from diffusers import AutoencoderDC, AutoencoderKL, AutoencoderRAE

    return {
        AlignedAutoencoderKL: AlignedAutoencoderKLAdapter,
        AutoencoderKL: AutoencoderKLAdapter,
        AutoencoderDC: AutoencoderDCAdapter,
        AutoencoderRAE: AutoencoderRAEAdapter,
    }


def adapter_for_model(model: nn.Module, **kwargs) -> DiffusersAutoencoderAdapter:
    """Wraps an autoencoder instance in its adapter (`kwargs` go to [`DiffusersAutoencoderAdapter`])."""
    for model_class, adapter_class in _adapter_table().items():
        if isinstance(model, model_class):
            return adapter_class(model, **kwargs)
    supported = ", ".join(cls.__name__ for cls in _adapter_table())
    raise TypeError(
        f"No tokenizer adapter for {type(model).__name__}; supported: {supported}. Other tokenizers can implement the "
        "TokenizerAdapter protocol (name, spatial_factor, latent_channels, encode, decode) directly."
    )


def read_tokenizer_config(name_or_path: str, subfolder: str | None = None) -> tuple[dict[str, Any], str | None]:
    """A tokenizer's `config.json` and the subfolder it lies in (a pipeline directory's `vae/` is found by itself)."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        candidates = [subfolder] if subfolder else [None, "vae"]
        for candidate in candidates:
            config_path = path / candidate / "config.json" if candidate else path / "config.json"
            if config_path.is_file():
                return json.loads(config_path.read_text()), candidate
        raise ValueError(
            f"{name_or_path} has no config.json{' in ' + subfolder if subfolder else ' (nor vae/config.json)'}: point "
            "to a directory written by save_pretrained, a diffusers pipeline directory, or a hub id."
        )
    if path.exists() or name_or_path.startswith((".", "/", "~")):
        raise ValueError(f"{name_or_path} is not a directory; expected a save_pretrained directory or a hub id.")
    from huggingface_hub import hf_hub_download

    errors = []
    for candidate in [subfolder] if subfolder else [None, "vae"]:
        try:
            config_file = hf_hub_download(name_or_path, "config.json", subfolder=candidate)
            return json.loads(Path(config_file).read_text()), candidate
        except Exception as error:  # missing file, offline mode, unknown repo
            errors.append(f"{candidate or '.'}: {type(error).__name__}: {error}")
    raise ValueError(f"Could not read the config of {name_or_path!r} from the hub ({'; '.join(errors)}).")


def load_tokenizer(
    name_or_path: str,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    subfolder: str | None = None,
    name: str | None = None,
) -> DiffusersAutoencoderAdapter:
    """Loads a tokenizer by path or hub id and wraps it in its adapter.

    Args:
        name_or_path (`str`): A `save_pretrained` directory, a diffusers pipeline directory (its `vae/` is used), a hub
            id, or `"flux-vae-random"` (an `AutoencoderKL` in the FLUX.1 VAE configuration with random weights, for
            offline runs; its results are labelled "random weights").
        device, dtype: Where and in which dtype the model runs (default: CPU, the saved dtype).
        subfolder (`str`, *optional*): Subfolder holding the model (default: the root, else `vae/`).
        name (`str`, *optional*): Display name (default: the directory's name, or the hub id).

    The class comes from `config.json`'s `_class_name`: `AlignedAutoencoderKL`, `AutoencoderKL`, `AutoencoderDC` or
    `AutoencoderRAE`.
    """
    if name_or_path == FLUX_VAE_RANDOM:
        adapter = AutoencoderKLAdapter(
            build_random_flux_vae(),
            name=name or FLUX_VAE_RANDOM,
            source=FLUX_VAE_RANDOM,
            random_weights=True,
            dtype=dtype,
        )
        return adapter.to(device) if device is not None else adapter
    config, resolved_subfolder = read_tokenizer_config(name_or_path, subfolder)
    class_name = config.get("_class_name")
    classes = {model_class.__name__: model_class for model_class in _adapter_table()}
    if class_name not in classes:
        raise ValueError(
            f"{name_or_path} holds a {class_name!r} model; evaluation supports {sorted(classes)} (or pass "
            f"{FLUX_VAE_RANDOM!r}). Wrap other tokenizers in an object with the TokenizerAdapter interface."
        )
    load_kwargs = {"subfolder": resolved_subfolder} if resolved_subfolder else {}
    model = classes[class_name].from_pretrained(name_or_path, **load_kwargs)
    display_name = name or (
        os.path.basename(os.path.normpath(name_or_path)) if Path(name_or_path).expanduser().is_dir() else name_or_path
    )
    if display_name in ("model", "vae"):  # e.g. runs/x/stage3/model: keep the informative parent
        display_name = "/".join(Path(name_or_path).expanduser().resolve().parts[-3:])
    adapter = adapter_for_model(model, name=display_name, source=str(name_or_path), dtype=dtype)
    return adapter.to(device) if device is not None else adapter


def check_resolution_for_all(adapters: list[DiffusersAutoencoderAdapter], height: int, width: int) -> None:
    """Raises one `ValueError` naming every tokenizer that cannot take `height x width` images.

    Adapters without a `check_image_size` method (any object with the protocol's attributes) are checked against
    their `spatial_factor`.
    """
    problems = []
    for adapter in adapters:
        try:
            if hasattr(adapter, "check_image_size"):
                adapter.check_image_size(height, width)
            elif height % adapter.spatial_factor or width % adapter.spatial_factor:
                raise ValueError(
                    f"{adapter.name}: image size {height}x{width} is not a multiple of its spatial factor "
                    f"{adapter.spatial_factor}."
                )
        except ValueError as error:
            problems.append(str(error))
    if problems:
        factor = math.lcm(*(adapter.spatial_factor for adapter in adapters))
        raise ValueError(
            " ".join(problems) + f" A resolution that all of them accept is a multiple of {factor}, e.g. "
            f"{_round_up(height, factor)}x{_round_up(width, factor)}."
        )


def _round_up(value: int, factor: int) -> int:
    return max(factor, -(-value // factor) * factor)
