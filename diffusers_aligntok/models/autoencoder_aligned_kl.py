"""`AlignedAutoencoderKL`: an AlignTok image tokenizer as a diffusers autoencoder.

AlignTok (arXiv 2509.25162) turns a pretrained vision foundation encoder into a continuous tokenizer for latent
diffusion: the encoder's patch tokens pass through a small per-token MLP adapter into a low-dimensional latent grid,
and an LDM-style convolutional decoder maps that grid back to pixels. The three alignment stages that train it live
in `training/`; this module is the model they train and that pipelines use.
"""

import warnings
from typing import Any, Callable

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.loaders import PeftAdapterMixin
from diffusers.models.attention import AttentionMixin, FeedForward
from diffusers.models.autoencoders.vae import AutoencoderMixin, Decoder, DecoderOutput, DiagonalGaussianDistribution
from diffusers.models.modeling_outputs import AutoencoderKLOutput
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import logging
from diffusers.utils.accelerate_utils import apply_forward_hook
from diffusers.utils.torch_utils import randn_tensor

from .foundation_encoders import (
    architecture_config_dict,
    build_encoder_config,
    build_foundation_encoder,
    check_encoder_config_keys,
    encode_patch_tokens,
    get_foundation_encoder_spec,
    load_pretrained_foundation_encoder,
)
from .presets import get_preset


logger = logging.get_logger(__name__)

# `encoder_config=None` means the paper's DINOv2-L/14 for "dinov2" and transformers' defaults for other families.
_DEFAULT_ENCODER_CONFIGS = {"dinov2": get_preset("aligntok-dinov2-large-f16d32").config["encoder_config"]}

# Images are expected in [-1, 1]; anything further out than this is almost surely in [0, 255] or unnormalised.
_IMAGE_RANGE_WARNING_THRESHOLD = 1.5


class DeterministicLatentDistribution(DiagonalGaussianDistribution):
    """A point mass at the adapter's output, with the interface of diffusers' `DiagonalGaussianDistribution`.

    AlignTok's latent is deterministic (the paper found a KL term distorts the encoder's semantics), but pipelines and
    helpers such as `retrieve_latents` call `latent_dist.sample(generator)` or `.mode()`; both return the latent.
    `kl()` is zero per sample and `std`/`var` are zero, so VAE training code that reads them keeps working.
    """

    def __init__(self, latents: torch.Tensor):
        self.parameters = latents
        self.mean = latents
        self.deterministic = True
        zero = torch.zeros((), device=latents.device, dtype=latents.dtype)
        self.std = self.var = zero.expand_as(latents)
        # log(0) is -inf; -30 is the floor `DiagonalGaussianDistribution` clamps log-variances to.
        self.logvar = torch.full((), -30.0, device=latents.device, dtype=latents.dtype).expand_as(latents)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.mean

    def kl(self, other: DiagonalGaussianDistribution | None = None) -> torch.Tensor:
        return torch.zeros(self.mean.shape[0], device=self.mean.device, dtype=self.mean.dtype)

    def nll(self, sample: torch.Tensor, dims: tuple[int, ...] = (1, 2, 3)) -> torch.Tensor:
        return torch.zeros(self.mean.shape[0], device=self.mean.device, dtype=self.mean.dtype)


class AlignedAutoencoderKL(ModelMixin, AttentionMixin, AutoencoderMixin, ConfigMixin, PeftAdapterMixin):
    r"""
    An image tokenizer made by aligning a pretrained vision foundation encoder to a latent-diffusion decoder (AlignTok).

    It is a drop-in replacement for [`~diffusers.AutoencoderKL`] in diffusers pipelines: images in `[-1, 1]` go in,
    `encode(x).latent_dist.sample()` / `.mode()` give a `(batch, latent_channels, H / f, W / f)` latent with
    `f = 2 ** (len(block_out_channels) - 1)` (16 by default), and `decode(z).sample` gives images in `[-1, 1]`.

    Who applies the latent normalisation: as everywhere in diffusers, `encode`/`decode` work on *raw* latents and the
    caller (the pipeline, or training code) normalises them. FLUX/SD3-style pipelines compute
    `(z - shift_factor) * scaling_factor`; [`normalize_latents`] and [`denormalize_latents`] do the same, and use the
    per-channel `latents_mean`/`latents_std` instead of `shift_factor` when those are set.

    Parameters:
        in_channels (`int`, defaults to 3): Channels of the input images (RGB).
        out_channels (`int`, defaults to 3): Channels of the decoded images.
        encoder_type (`str`, defaults to `"dinov2"`):
            Family of the transformers vision encoder: `"dinov2"`, `"dinov2_with_registers"`, `"siglip2"` (the
            fixed-resolution SigLIP 2 checkpoints) or `"mae"`. The paper's tokenizer uses DINOv2; SigLIP 2 and MAE
            were worse for generation.
        encoder_config (`dict`, *optional*):
            Keyword arguments of the family's transformers config class (for example `Dinov2Config`), applied over
            that class's defaults. `None` gives the paper's DINOv2-L/14 (304M parameters) for `"dinov2"` and the
            transformers defaults otherwise. The encoder is built from this config, so nothing is downloaded;
            pretrained weights enter through [`from_foundation_encoder`].
        encoder_image_mean (`tuple[float]`, *optional*):
            Per-channel mean of `[0, 1]` pixels the encoder was pretrained with. `None` takes the family's value
            (ImageNet statistics for DINOv2 and MAE, 0.5 for SigLIP 2).
        encoder_image_std (`tuple[float]`, *optional*): Per-channel std, as `encoder_image_mean`.
        adapter_hidden_channels (`int`, *optional*):
            Hidden width of the adapter, the per-token 2-layer MLP from the encoder width to `latent_channels`. The
            paper gives only its input and output widths; `None` uses the encoder width.
        latent_channels (`int`, defaults to 32): Channels of the latent (32 in the paper; 64 also reported).
        latent_noise_std (`float`, defaults to 0.0):
            Maximum std of the Gaussian noise that [`add_latent_noise`] adds to latents in training mode (each sample
            draws its std uniformly from `[0, latent_noise_std]`), making the decoder robust to the imperfect latents a
            diffusion model produces. 0 disables it; it never applies in eval mode.
        up_block_types (`tuple[str]`):
            Decoder up blocks, from the lowest resolution to the highest, in diffusers' block vocabulary. The default
            is the LDM / VA-VAE decoder with attention at the 16x16 level (LDM's `attn_resolutions=[16]`).
        block_out_channels (`tuple[int]`, defaults to `(128, 128, 256, 256, 512)`):
            Decoder channels per resolution level (LDM's `ch=128, ch_mult=(1, 1, 2, 2, 4)`). Its length sets the
            spatial factor `f = 2 ** (len - 1)`, which is how diffusers pipelines compute `vae_scale_factor`.
        layers_per_block (`int`, defaults to 2): Residual blocks per decoder level (LDM's `num_res_blocks`).
        act_fn (`str`, defaults to `"silu"`): Decoder activation.
        norm_num_groups (`int`, defaults to 32): GroupNorm groups in the decoder.
        mid_block_add_attention (`bool`, defaults to `True`): Self-attention in the decoder's mid block.
        sample_size (`int`, defaults to 256):
            Training image size; also the tile size in pixels when tiling is enabled.
        scaling_factor (`float`, defaults to 1.0): Latent scale that pipelines multiply by after `shift_factor`.
        shift_factor (`float`, defaults to 0.0): Latent shift that pipelines subtract before scaling (a float, never
            `None`: FLUX and SD3 pipelines read it).
        latents_mean (`tuple[float]`, *optional*): Per-channel latent mean, for code that normalises per channel.
        latents_std (`tuple[float]`, *optional*): Per-channel latent std, as `latents_mean`.
        force_upcast (`bool`, defaults to `True`):
            Tells pipelines to run this VAE in float32 when the pipeline runs in float16, whose range the conv decoder
            can overflow. bfloat16 is safe.
    """

    _supports_gradient_checkpointing = True
    _no_split_modules = [
        "ResnetBlock2D",
        "Dinov2Layer",
        "Dinov2WithRegistersLayer",
        "SiglipEncoderLayer",
        "ViTMAELayer",
    ]
    _skip_layerwise_casting_patterns = ["encoder.embeddings", "norm"]

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        encoder_type: str = "dinov2",
        encoder_config: dict[str, Any] | None = None,
        encoder_image_mean: tuple[float, ...] | None = None,
        encoder_image_std: tuple[float, ...] | None = None,
        adapter_hidden_channels: int | None = None,
        latent_channels: int = 32,
        latent_noise_std: float = 0.0,
        up_block_types: tuple[str, ...] = (
            "AttnUpDecoderBlock2D",
            "UpDecoderBlock2D",
            "UpDecoderBlock2D",
            "UpDecoderBlock2D",
            "UpDecoderBlock2D",
        ),
        block_out_channels: tuple[int, ...] = (128, 128, 256, 256, 512),
        layers_per_block: int = 2,
        act_fn: str = "silu",
        norm_num_groups: int = 32,
        mid_block_add_attention: bool = True,
        sample_size: int = 256,
        scaling_factor: float = 1.0,
        shift_factor: float = 0.0,
        latents_mean: tuple[float, ...] | None = None,
        latents_std: tuple[float, ...] | None = None,
        force_upcast: bool = True,
    ):
        super().__init__()
        spec = get_foundation_encoder_spec(encoder_type)
        if len(up_block_types) != len(block_out_channels):
            raise ValueError(
                f"up_block_types has {len(up_block_types)} entries but block_out_channels has "
                f"{len(block_out_channels)}; give one up block per resolution level."
            )
        if in_channels != 3:
            raise ValueError(f"in_channels={in_channels}, but foundation encoders take RGB images (3 channels).")
        if (latents_mean is None) != (latents_std is None):
            raise ValueError(
                "latents_mean and latents_std must be set together (per-channel normalisation needs both); got only "
                f"{'latents_mean' if latents_std is None else 'latents_std'}."
            )
        for name, stats in (("latents_mean", latents_mean), ("latents_std", latents_std)):
            if stats is not None and len(stats) != latent_channels:
                raise ValueError(f"{name} has {len(stats)} values but latent_channels is {latent_channels}.")

        if encoder_config is None:
            encoder_config = _DEFAULT_ENCODER_CONFIGS.get(encoder_type, {})
        encoder_transformers_config = build_encoder_config(encoder_type, dict(encoder_config))
        encoder_image_mean = tuple(encoder_image_mean or spec.image_mean)
        encoder_image_std = tuple(encoder_image_std or spec.image_std)
        # Save the resolved values so a saved config describes the model without reference to code defaults.
        self.register_to_config(
            encoder_config=architecture_config_dict(encoder_transformers_config),
            encoder_image_mean=encoder_image_mean,
            encoder_image_std=encoder_image_std,
        )

        self.encoder = build_foundation_encoder(encoder_type, self.config.encoder_config)
        encoder_hidden_size = encoder_transformers_config.hidden_size
        # Per-token 2-layer MLP, deterministic: no KL term, which the paper found distorts the semantics.
        self.adapter = FeedForward(
            dim=encoder_hidden_size,
            dim_out=latent_channels,
            inner_dim=adapter_hidden_channels or encoder_hidden_size,
            activation_fn="gelu",
        )
        self.decoder = Decoder(
            in_channels=latent_channels,
            out_channels=out_channels,
            up_block_types=up_block_types,
            block_out_channels=block_out_channels,
            layers_per_block=layers_per_block,
            norm_num_groups=norm_num_groups,
            act_fn=act_fn,
            mid_block_add_attention=mid_block_add_attention,
        )
        self.register_buffer(
            "_encoder_pixel_mean", torch.tensor(encoder_image_mean).view(1, -1, 1, 1), persistent=False
        )
        self.register_buffer("_encoder_pixel_std", torch.tensor(encoder_image_std).view(1, -1, 1, 1), persistent=False)

        self.use_slicing = False
        self.use_tiling = False
        self.tile_sample_min_size = sample_size
        self.tile_latent_min_size = sample_size // self.spatial_compression_ratio
        self.tile_overlap_factor = 0.25

    # ------------------------------------------------------------------------------------------------------------
    # Construction helpers
    # ------------------------------------------------------------------------------------------------------------

    @classmethod
    def from_preset(cls, name: str, **config_overrides) -> "AlignedAutoencoderKL":
        """Builds a randomly initialised tokenizer from a named preset (see `diffusers_aligntok.PRESETS`)."""
        return cls(**{**get_preset(name).config, **config_overrides})

    @classmethod
    def from_foundation_encoder(
        cls,
        pretrained_model_name_or_path: str,
        encoder_type: str | None = None,
        *,
        cache_dir: str | None = None,
        revision: str | None = None,
        token: str | bool | None = None,
        local_files_only: bool | None = None,
        **config,
    ) -> "AlignedAutoencoderKL":
        r"""Builds a fresh tokenizer whose encoder weights come from a pretrained transformers checkpoint.

        This is how stage 1 starts: the encoder is pretrained, the adapter and decoder are freshly initialised.

        Args:
            pretrained_model_name_or_path (`str`): A hub id (`"facebook/dinov2-large"`) or a local directory written by
                transformers' `save_pretrained`.
            encoder_type (`str`, *optional*): The encoder family; inferred from the checkpoint's `model_type` when
                omitted.
            config: Any other `AlignedAutoencoderKL` argument (`latent_channels`, decoder sizes, ...). An
                `encoder_config` given here must name keys of the family's transformers config class and agree with
                the checkpoint's config. Keys of the checkpoint's own `config.json` that the config class does not
                define (fine-tuned or converted checkpoints carry some) do not stop the load: transformers' model
                ignores them, and so does the tokenizer's saved `encoder_config`.
        """
        from transformers import AutoConfig

        requested_encoder_config = config.pop("encoder_config", None) or {}
        hub_kwargs = {"cache_dir": cache_dir, "revision": revision, "token": token}
        if local_files_only is not None:
            hub_kwargs["local_files_only"] = local_files_only
        if encoder_type is None:
            checkpoint_config = AutoConfig.from_pretrained(pretrained_model_name_or_path, **hub_kwargs)
            encoder_type = _infer_encoder_type(checkpoint_config, pretrained_model_name_or_path)
        # What the user wrote is checked strictly (a typo must not pass), before any weights are read.
        check_encoder_config_keys(encoder_type, requested_encoder_config)
        pretrained_encoder, checkpoint_encoder_config = load_pretrained_foundation_encoder(
            encoder_type, pretrained_model_name_or_path, **hub_kwargs
        )
        full_checkpoint_config = pretrained_encoder.config.to_dict()
        conflicts = {
            key: (value, full_checkpoint_config.get(key))
            for key, value in requested_encoder_config.items()
            if full_checkpoint_config.get(key) != value
        }
        if conflicts:
            details = ", ".join(
                f"{key}={want!r} but the checkpoint has {have!r}" for key, (want, have) in conflicts.items()
            )
            raise ValueError(
                f"encoder_config does not match {pretrained_model_name_or_path!r}: {details}. Drop these keys to use "
                "the checkpoint's architecture, or choose a checkpoint of the size you want."
            )
        model = cls(encoder_type=encoder_type, encoder_config=checkpoint_encoder_config, **config)
        model.encoder.load_state_dict(pretrained_encoder.state_dict())
        return model

    @classmethod
    def extract_init_dict(cls, config_dict, **kwargs):
        # diffusers only logs when a config of another class is loaded; weights would then load half-random.
        class_name = config_dict.get("_class_name", cls.__name__)
        if class_name != cls.__name__:
            raise ValueError(
                f"This config belongs to `{class_name}`, not `{cls.__name__}`. Load it with "
                f"`diffusers.{class_name}.from_pretrained(...)` (or the library that defines {class_name}), or point "
                f"to a directory saved by `{cls.__name__}.save_pretrained`."
            )
        return super().extract_init_dict(config_dict, **kwargs)

    # ------------------------------------------------------------------------------------------------------------
    # Shapes and latent normalisation
    # ------------------------------------------------------------------------------------------------------------

    @property
    def spatial_compression_ratio(self) -> int:
        """The spatial factor f: an H x W image maps to an (H / f) x (W / f) latent."""
        return 2 ** (len(self.config.block_out_channels) - 1)

    def normalize_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Raw latents from `encode` -> the normalised latents a diffusion model is trained on."""
        mean, scale = self._latent_affine(latents)
        return (latents - mean) * scale

    def denormalize_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents from a diffusion model -> raw latents for `decode`."""
        mean, scale = self._latent_affine(latents)
        return latents / scale + mean

    def _latent_affine(self, latents: torch.Tensor) -> tuple[torch.Tensor | float, torch.Tensor | float]:
        config = self.config
        if config.latents_mean is None or config.latents_std is None:
            return config.shift_factor, config.scaling_factor
        shape = (1, -1) + (1,) * (latents.ndim - 2)
        mean = torch.tensor(config.latents_mean, device=latents.device, dtype=latents.dtype).view(shape)
        std = torch.tensor(config.latents_std, device=latents.device, dtype=latents.dtype).view(shape)
        return mean, config.scaling_factor / std

    def add_latent_noise(self, latents: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Noise augmentation for decoder training (see `latent_noise_std`); the identity in eval mode."""
        if not self.training or self.config.latent_noise_std <= 0:
            return latents
        noise_std = self.config.latent_noise_std * torch.rand(
            (latents.shape[0],) + (1,) * (latents.ndim - 1),
            generator=generator,
            device=latents.device,
            dtype=latents.dtype,
        )
        return latents + noise_std * randn_tensor(
            latents.shape, generator=generator, device=latents.device, dtype=latents.dtype
        )

    # ------------------------------------------------------------------------------------------------------------
    # Encoding
    # ------------------------------------------------------------------------------------------------------------

    def _check_images(self, x: torch.Tensor) -> None:
        if not torch.is_tensor(x) or x.ndim != 4:
            shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise ValueError(
                f"Expected images of shape (batch, {self.config.in_channels}, height, width), got {shape}."
            )
        if x.shape[0] == 0:
            raise ValueError("Got an empty batch (batch size 0); pass at least one image.")
        if not x.is_floating_point():
            raise TypeError(
                f"Expected floating-point images in [-1, 1], got dtype {x.dtype}. Convert uint8 images with "
                "`x.float() / 127.5 - 1` or use diffusers' `VaeImageProcessor.preprocess`."
            )
        if x.shape[1] != self.config.in_channels:
            raise ValueError(
                f"Expected {self.config.in_channels}-channel (RGB) images, got {x.shape[1]} channels in shape "
                f"{tuple(x.shape)}. Convert grayscale or RGBA images to RGB first (PIL: `image.convert('RGB')`)."
            )
        factor = self.spatial_compression_ratio
        height, width = x.shape[-2:]
        if height % factor or width % factor:
            raise ValueError(
                f"Image size {height}x{width} is not a multiple of {factor}, the spatial factor of this tokenizer. "
                f"Resize or crop to {_nearest_multiple(height, factor)}x{_nearest_multiple(width, factor)}."
            )
        if not torch.compiler.is_compiling() and not x.is_meta:  # meta tensors (cost counting) have no values
            low, high = torch.aminmax(x.detach())
            if low.item() < -_IMAGE_RANGE_WARNING_THRESHOLD or high.item() > _IMAGE_RANGE_WARNING_THRESHOLD:
                warnings.warn(
                    f"Images should be in [-1, 1], but values range over [{low.item():.3g}, {high.item():.3g}]. "
                    "Scale [0, 255] images with `x / 127.5 - 1` and [0, 1] images with `2 * x - 1`.",
                    stacklevel=3,
                )

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_tiling and (x.shape[-1] > self.tile_sample_min_size or x.shape[-2] > self.tile_sample_min_size):
            return self._tiled_encode(x)
        return self._encode_untiled(x)

    def _encode_untiled(self, x: torch.Tensor) -> torch.Tensor:
        batch_size, _, height, width = x.shape
        latent_height = height // self.spatial_compression_ratio
        latent_width = width // self.spatial_compression_ratio
        # One encoder patch per latent position: resize so the patch grid equals the latent grid (256 -> 224 for
        # patch-14 DINOv2 at f16); the transformers encoders interpolate their position embeddings to any grid.
        patch_size = self.encoder.config.patch_size
        pixel_values = self._normalize_for_encoder(x)
        encoder_size = (latent_height * patch_size, latent_width * patch_size)
        if encoder_size != (height, width):
            # In float32: CPU torch has no half-precision antialiased bicubic, and resampling gains nothing from it.
            pixel_values = F.interpolate(
                pixel_values.float(),
                size=encoder_size,
                mode="bicubic",
                align_corners=False,
                antialias=encoder_size[0] < height,
            ).to(pixel_values.dtype)
        tokens = encode_patch_tokens(self.config.encoder_type, self.encoder, pixel_values)
        latents = self.adapter(tokens)
        return latents.transpose(1, 2).reshape(batch_size, -1, latent_height, latent_width)

    def _normalize_for_encoder(self, x: torch.Tensor) -> torch.Tensor:
        dtype = next(self.encoder.parameters()).dtype
        x = x.to(dtype)
        mean = self._encoder_pixel_mean.to(device=x.device, dtype=dtype)
        std = self._encoder_pixel_std.to(device=x.device, dtype=dtype)
        return ((x + 1) / 2 - mean) / std

    @apply_forward_hook
    def encode(
        self, x: torch.Tensor, return_dict: bool = True
    ) -> AutoencoderKLOutput | tuple[DeterministicLatentDistribution]:
        """
        Encode a batch of images into latents.

        Args:
            x (`torch.Tensor`): Images of shape `(batch, 3, H, W)` in `[-1, 1]`; H and W multiples of the spatial
                factor (16 by default).
            return_dict (`bool`, *optional*, defaults to `True`):
                Whether to return an [`~models.autoencoder_kl.AutoencoderKLOutput`] instead of a plain tuple.

        Returns:
            The latent distribution (a point mass: `.sample()` and `.mode()` both give the raw latent) wrapped in an
            [`~models.autoencoder_kl.AutoencoderKLOutput`], or a one-element tuple if `return_dict` is False.
        """
        self._check_images(x)
        if self.use_slicing and x.shape[0] > 1:
            latents = torch.cat([self._encode(x_slice) for x_slice in x.split(1)])
        else:
            latents = self._encode(x)
        posterior = DeterministicLatentDistribution(latents)
        if not return_dict:
            return (posterior,)
        return AutoencoderKLOutput(latent_dist=posterior)

    # ------------------------------------------------------------------------------------------------------------
    # Decoding
    # ------------------------------------------------------------------------------------------------------------

    @property
    def post_quant_conv(self) -> torch.nn.Module:
        """The decoder's first layer, under the name SDXL-family pipelines read to find the dtype to upcast to.

        AlignTok has no post-quantisation conv; this alias adds no weights and leaves the state dict unchanged.
        """
        return self.decoder.conv_in

    @property
    def _decoder_compute_dtype(self) -> torch.dtype:
        # A norm layer's dtype: norms are never layerwise-cast, so this is the compute dtype under
        # `enable_layerwise_casting` as well as the model dtype after `.to(dtype)`.
        return self.decoder.conv_norm_out.weight.dtype

    def _check_latents(self, z: torch.Tensor) -> None:
        if not torch.is_tensor(z) or z.ndim != 4 or z.shape[1] != self.config.latent_channels:
            shape = tuple(z.shape) if torch.is_tensor(z) else type(z).__name__
            raise ValueError(
                f"Expected latents of shape (batch, {self.config.latent_channels}, height, width), got {shape}. "
                "FLUX-style pipelines pack latents into 2x2 patches; unpack them before decoding."
            )
        if z.shape[0] == 0:
            raise ValueError("Got an empty batch of latents (batch size 0).")

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        if self.use_tiling and (z.shape[-1] > self.tile_latent_min_size or z.shape[-2] > self.tile_latent_min_size):
            return self._tiled_decode(z)
        return self.decoder(z.to(self._decoder_compute_dtype))

    @apply_forward_hook
    def decode(
        self, z: torch.Tensor, return_dict: bool = True, generator: torch.Generator | None = None
    ) -> DecoderOutput | tuple[torch.Tensor]:
        """
        Decode a batch of raw latents into images in `[-1, 1]`.

        Args:
            z (`torch.Tensor`): Raw (denormalised) latents, `(batch, latent_channels, h, w)`.
            return_dict (`bool`, *optional*, defaults to `True`):
                Whether to return a [`~models.vae.DecoderOutput`] instead of a plain tuple.
            generator: Unused; accepted for signature compatibility with `AutoencoderKL.decode`.
        """
        self._check_latents(z)
        if self.use_slicing and z.shape[0] > 1:
            decoded = torch.cat([self._decode(z_slice) for z_slice in z.split(1)])
        else:
            decoded = self._decode(z)
        if not return_dict:
            return (decoded,)
        return DecoderOutput(sample=decoded)

    def forward(
        self,
        sample: torch.Tensor,
        sample_posterior: bool = False,
        return_dict: bool = True,
        generator: torch.Generator | None = None,
    ) -> DecoderOutput | tuple[torch.Tensor]:
        r"""
        Reconstructs `sample`: encode, add the training-time latent noise (see `latent_noise_std`), decode.

        Args:
            sample (`torch.Tensor`): Images in `[-1, 1]`.
            sample_posterior (`bool`, *optional*, defaults to `False`):
                Accepted for `AutoencoderKL` compatibility; the latent is deterministic, so it changes nothing.
            return_dict (`bool`, *optional*, defaults to `True`):
                Whether to return a [`~models.vae.DecoderOutput`] instead of a plain tuple.
            generator (`torch.Generator`, *optional*): Makes the latent noise augmentation reproducible.
        """
        posterior = self.encode(sample).latent_dist
        latents = posterior.sample(generator=generator) if sample_posterior else posterior.mode()
        decoded = self.decode(self.add_latent_noise(latents, generator=generator)).sample
        if not return_dict:
            return (decoded,)
        return DecoderOutput(sample=decoded)

    # ------------------------------------------------------------------------------------------------------------
    # Tiling
    # ------------------------------------------------------------------------------------------------------------

    def _tiled_encode(self, x: torch.Tensor) -> torch.Tensor:
        r"""Encodes overlapping `sample_size` tiles and blends their latents.

        Each tile is encoded on its own, so the ViT sees only the tile's context: tiled latents approximate the untiled
        ones (see `benchmarks/` for the measured difference) but keep memory flat for any image size.
        """
        factor = self.spatial_compression_ratio
        stride = _tile_stride(self.tile_sample_min_size, self.tile_overlap_factor, granularity=factor)
        return _blend_tiles(x, self._encode_untiled, self.tile_sample_min_size, stride, upscale=1, downscale=factor)

    def _tiled_decode(self, z: torch.Tensor) -> torch.Tensor:
        r"""Decodes the attention stem whole, then overlapping tiles of the upsampling path, and blends them.

        Unlike `AutoencoderKL`, which tiles its whole decoder, the stem (`conv_in`, the mid-block and the leading
        attention up-blocks, i.e. every attention layer of the paper's decoder) runs on the whole latent, so attention
        sees the whole image as it does untiled. It runs at the latent's resolution and its output has at most twice
        that; at 1024x1024 it holds 32 MiB against several GiB for an untiled decode. Only the convolutions and
        GroupNorm statistics of the higher-resolution path see their tile alone. Against tiling the whole decoder,
        this cuts the mean difference from untiled decoding by 1.3-1.6x (random weights at 1024, the toy-trained demo
        tokenizer at 128; `benchmarks/tokenizer_speed.py --tiling_check_only`, see `benchmarks/README.md`).
        """
        hidden_states, upsampling_blocks = self._decode_stem(z.to(self._decoder_compute_dtype))
        stem_scale = hidden_states.shape[-1] // z.shape[-1]
        stride = _tile_stride(self.tile_latent_min_size, self.tile_overlap_factor, granularity=1)
        return _blend_tiles(
            hidden_states,
            lambda tile: self._decode_upsampling_path(tile, upsampling_blocks),
            self.tile_latent_min_size * stem_scale,
            stride * stem_scale,
            upscale=self.spatial_compression_ratio // stem_scale,
            downscale=1,
        )

    def _decode_stem(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.nn.ModuleList]:
        """Runs `conv_in`, the mid-block and the leading attention up-blocks; returns their output and the rest."""
        decoder = self.decoder
        hidden_states = decoder.mid_block(decoder.conv_in(z))
        num_attention_blocks = 0
        for block_type in self.config.up_block_types:
            if block_type != "AttnUpDecoderBlock2D":
                break
            num_attention_blocks += 1
        for up_block in decoder.up_blocks[:num_attention_blocks]:
            hidden_states = up_block(hidden_states)
        return hidden_states, decoder.up_blocks[num_attention_blocks:]

    def _decode_upsampling_path(self, hidden_states: torch.Tensor, up_blocks: torch.nn.ModuleList) -> torch.Tensor:
        # The tail of diffusers' `Decoder.forward` (inference, no `latent_embeds`) from the given up-blocks on.
        decoder = self.decoder
        for up_block in up_blocks:
            hidden_states = up_block(hidden_states)
        return decoder.conv_out(decoder.conv_act(decoder.conv_norm_out(hidden_states)))


def _infer_encoder_type(checkpoint_config, name_or_path: str) -> str:
    from .foundation_encoders import FOUNDATION_ENCODERS

    model_type = getattr(getattr(checkpoint_config, "vision_config", None), "model_type", checkpoint_config.model_type)
    for encoder_type, spec in FOUNDATION_ENCODERS.items():
        if model_type in spec.model_types:
            return encoder_type
    raise ValueError(
        f"{name_or_path!r} holds a {checkpoint_config.model_type!r} model, which is not a supported foundation encoder "
        f"({sorted(FOUNDATION_ENCODERS)}). Pass a DINOv2, DINOv2-with-registers, SigLIP 2 or MAE checkpoint."
    )


def _nearest_multiple(value: int, factor: int) -> int:
    return max(factor, factor * round(value / factor))


def _tile_stride(tile_size: int, overlap_factor: float, granularity: int) -> int:
    stride = int(tile_size * (1 - overlap_factor)) // granularity * granularity
    return max(granularity, stride)


def _tile_starts(length: int, tile_size: int, stride: int) -> list[int]:
    """Tile offsets covering `[0, length)`; the last tile is moved back so every tile has the full size."""
    if length <= tile_size:
        return [0]
    starts = list(range(0, length - tile_size, stride))
    return starts + [length - tile_size]


def _blend_ramp(length: int, overlap: int, ramp_start: bool, ramp_end: bool, like: torch.Tensor) -> torch.Tensor:
    """1-D blending weights: linear ramps of `overlap` samples at the edges shared with a neighbouring tile."""
    weights = torch.ones(length, device=like.device, dtype=torch.float32)
    overlap = min(overlap, length)
    if overlap > 0:
        ramp = (torch.arange(overlap, device=like.device, dtype=torch.float32) + 0.5) / overlap
        if ramp_start:
            weights[:overlap] = torch.minimum(weights[:overlap], ramp)
        if ramp_end:
            weights[length - overlap :] = torch.minimum(weights[length - overlap :], ramp.flip(0))
    return weights


def _blend_tiles(
    inputs: torch.Tensor,
    process_tile: Callable[[torch.Tensor], torch.Tensor],
    tile_size: int,
    stride: int,
    upscale: int,
    downscale: int,
) -> torch.Tensor:
    """Runs `process_tile` on overlapping tiles of `inputs` and blends the outputs with linear ramps.

    Works for any height and width (square or not); the output is `inputs`' size times `upscale / downscale`. Weights
    are accumulated in float32 so half-precision tiles blend without rounding seams.
    """
    height, width = inputs.shape[-2:]
    row_starts = _tile_starts(height, tile_size, stride)
    col_starts = _tile_starts(width, tile_size, stride)
    overlap_out = (tile_size - stride) * upscale // downscale
    output = weight_sum = None
    for row in row_starts:
        for col in col_starts:
            tile_out = process_tile(inputs[..., row : row + tile_size, col : col + tile_size])
            if output is None:
                out_shape = (*tile_out.shape[:2], height * upscale // downscale, width * upscale // downscale)
                output = torch.zeros(out_shape, device=tile_out.device, dtype=torch.float32)
                weight_sum = torch.zeros(out_shape[-2:], device=tile_out.device, dtype=torch.float32)
            tile_height, tile_width = tile_out.shape[-2:]
            row_weights = _blend_ramp(tile_height, overlap_out, row > 0, row + tile_size < height, tile_out)
            col_weights = _blend_ramp(tile_width, overlap_out, col > 0, col + tile_size < width, tile_out)
            weights = row_weights[:, None] * col_weights[None, :]
            out_row, out_col = row * upscale // downscale, col * upscale // downscale
            output[..., out_row : out_row + tile_height, out_col : out_col + tile_width] += tile_out.float() * weights
            weight_sum[out_row : out_row + tile_height, out_col : out_col + tile_width] += weights
    return (output / weight_sum).to(tile_out.dtype)
