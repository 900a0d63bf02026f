"""`AlignTokDiTPipeline`: class-conditional ImageNet generation with a LightningDiT on AlignTok latents.

Sampling follows the paper's protocol (arXiv 2509.25162, LightningDiT's recipe): flow-matching ODE from pure noise
(sigma = 1) to data (sigma = 0) with diffusers' `FlowMatchEulerDiscreteScheduler` (or `FlowMatchHeunDiscreteScheduler`)
on LightningDiT's time grid, the timestep shift of the scheduler's config, and classifier-free guidance restricted to an
interval of noise levels (optionally to the first latent channels, as LightningDiT's `forward_with_cfg` does).

Conventions against LightningDiT (hustvl/LightningDiT, MIT): its time runs t: 0 = noise -> 1 = data, ours is diffusers'
sigma = 1 - t; its model predicts `data - noise`, ours `noise - data` (the transformer sees `timestep = 1000 * sigma`).
Its `timestep_shift: s` (`t' = s t / (1 + (s - 1) t)`) is the scheduler's `shift = 1 / s`, and its `cfg_interval_start: s`
is `guidance_interval=(0.0, 1.0 - s)`.
"""

import importlib
import inspect
from collections.abc import Sequence

import numpy as np
import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FlowMatchHeunDiscreteScheduler
from diffusers.image_processor import VaeImageProcessor
from diffusers.pipelines.flux.pipeline_flux import calculate_shift
from diffusers.pipelines.pipeline_utils import DiffusionPipeline, ImagePipelineOutput
from diffusers.utils import logging
from diffusers.utils.torch_utils import get_module_execution_device, randn_tensor

from ..models.autoencoder_aligned_kl import AlignedAutoencoderKL
from ..models.transformer_lightning_dit import LightningDiTTransformer2DModel


logger = logging.get_logger(__name__)

_PACKAGE = __name__.split(".")[0]
_OUTPUT_TYPES = ("pil", "np", "pt", "latent")
# Config keys `calculate_shift` needs for resolution-dependent (dynamic) shifting, as FluxPipeline reads them.
_DYNAMIC_SHIFT_KEYS = ("base_image_seq_len", "max_image_seq_len", "base_shift", "max_shift")
# A float32 grid point that lies on a guidance-interval edge in exact arithmetic rounds to either side of it; counting
# such points as inside reproduces LightningDiT's `t >= cfg_interval_start` at its float32 grid points.
_GUIDANCE_INTERVAL_EDGE_TOLERANCE = 1e-6


def classifier_free_guidance(
    conditional: torch.Tensor,
    unconditional: torch.Tensor,
    guidance_scale: float,
    guidance_channels: int | None = None,
) -> torch.Tensor:
    """`unconditional + guidance_scale * (conditional - unconditional)`, on all channels or on the first `k`.

    `guidance_channels=None` (the default, and standard classifier-free guidance) guides every channel.
    `guidance_channels=k` guides channels `[0, k)` only and leaves the others at the conditional prediction: exactly
    what DiT's and LightningDiT's `forward_with_cfg` do with `k = 3` (a leftover of DiT's 4-channel SD-VAE latents, kept
    there "for exact reproducibility"; on 32-channel AlignTok latents it leaves 29 channels unguided). LightningDiT's
    published guidance scales were tuned for `k = 3`; guiding all channels needs a smaller scale.
    """
    guided = unconditional + guidance_scale * (conditional - unconditional)
    if guidance_channels is None:
        return guided
    channels = conditional.shape[1]
    if not (
        isinstance(guidance_channels, int)
        and not isinstance(guidance_channels, bool)
        and 1 <= guidance_channels <= channels
    ):
        raise ValueError(
            f"guidance_channels={guidance_channels!r} must be None (all channels) or an integer in [1, {channels}] "
            f"(the prediction has {channels} channels)."
        )
    # The unguided channels take the conditional prediction, as `forward_with_cfg` keeps `rest` of the conditional half.
    return torch.cat([guided[:, :guidance_channels], conditional[:, guidance_channels:]], dim=1)


def lightningdit_sigmas(num_inference_steps: int) -> np.ndarray:
    """The unshifted noise levels of LightningDiT's Euler grid with `num_inference_steps` steps, without the final 0.

    LightningDiT (`transport/integrators.py`, `ode`) integrates on `t = linspace(0, 1, N)`: `N` points, `N - 1` Euler
    steps, ending exactly at t = 1 (clean data; a velocity model on the linear path uses no `sample_eps`). In sigma that
    is `linspace(1, 0, n + 1)` for `n = N - 1` steps; the scheduler shifts these `n` values and appends the final 0.
    """
    return np.linspace(1.0, 0.0, num_inference_steps + 1)[:-1]


class AlignTokDiTPipeline(DiffusionPipeline):
    r"""
    Class-conditional image generation with a [`LightningDiTTransformer2DModel`] on the latents of an AlignTok
    tokenizer.

    Parameters:
        transformer ([`LightningDiTTransformer2DModel`]): Predicts the flow-matching velocity of normalised latents.
        vae ([`AlignedAutoencoderKL`] or [`~diffusers.AutoencoderKL`]):
            Decodes latents into images. The transformer works on *normalised* latents; the pipeline undoes the
            normalisation with `vae.denormalize_latents` when the VAE has it (AlignTok), otherwise with the config's
            `latents_mean`/`latents_std` (`z * std / scaling_factor + mean`) or `z / scaling_factor + shift_factor`.
        scheduler ([`~diffusers.FlowMatchEulerDiscreteScheduler`] or [`~diffusers.FlowMatchHeunDiscreteScheduler`]):
            A flow-matching scheduler (Euler is the paper's sampler); its config's `shift` is the timestep shift, or
            with `use_dynamic_shifting` the pipeline computes `mu` from the token count as FluxPipeline does. A
            scheduler whose `set_timesteps` takes `sigmas` (Euler) steps through LightningDiT's grid (see `__call__`);
            one that does not (Heun) uses its own.
    """

    model_cpu_offload_seq = "transformer->vae"

    def __init__(
        self,
        transformer: LightningDiTTransformer2DModel,
        vae: AlignedAutoencoderKL | AutoencoderKL,
        scheduler: FlowMatchEulerDiscreteScheduler | FlowMatchHeunDiscreteScheduler,
    ):
        super().__init__()
        self.register_modules(transformer=transformer, vae=vae, scheduler=scheduler)
        self.image_processor = VaeImageProcessor(vae_scale_factor=self.vae_scale_factor)

    def register_to_config(self, **kwargs):
        # diffusers records a component's library as its full module path unless the library is one it knows. Our
        # classes are importable from the package's top level, so record ["diffusers_aligntok", class] instead: the
        # model_index.json then survives module moves and loads once `diffusers_aligntok` is imported.
        super().register_to_config(**{name: _package_level_entry(value) for name, value in kwargs.items()})

    @property
    def vae_scale_factor(self) -> int:
        vae = getattr(self, "vae", None)
        if vae is None:
            return 16
        return getattr(vae, "spatial_compression_ratio", None) or 2 ** (len(vae.config.block_out_channels) - 1)

    # ------------------------------------------------------------------------------------------------------------
    # Input checks
    # ------------------------------------------------------------------------------------------------------------

    def _check_scheduler(self) -> None:
        scheduler = self.scheduler
        config = getattr(scheduler, "config", {})
        uses_dynamic_shift = bool(config.get("use_dynamic_shifting", False))
        if (
            not hasattr(scheduler, "set_timesteps")
            or "num_train_timesteps" not in config
            or ("shift" not in config and not uses_dynamic_shift)
        ):
            raise ValueError(
                f"AlignTokDiTPipeline needs a flow-matching scheduler with a `shift` in its config and timesteps equal "
                f"to sigma * num_train_timesteps (FlowMatchEulerDiscreteScheduler or FlowMatchHeunDiscreteScheduler), "
                f"got {type(scheduler).__name__}. Build one with e.g. `FlowMatchEulerDiscreteScheduler(shift=...)`."
            )
        if not uses_dynamic_shift and not (isinstance(config["shift"], (int, float)) and config["shift"] > 0):
            raise ValueError(
                f"The scheduler's shift is {config['shift']!r}; it must be a positive number (1.0 means no shift)."
            )
        if uses_dynamic_shift:
            missing = [key for key in _DYNAMIC_SHIFT_KEYS if config.get(key) is None]
            if missing:
                raise ValueError(
                    f"{type(scheduler).__name__} has use_dynamic_shifting=True, so set_timesteps needs `mu`, which "
                    f"this pipeline computes from the token count and the config's {list(_DYNAMIC_SHIFT_KEYS)}; "
                    f"{missing} are missing. Set them in the scheduler config, or use a fixed `shift` with "
                    "use_dynamic_shifting=False."
                )

    def _prepare_class_labels(self, class_labels: int | Sequence[int] | torch.Tensor) -> torch.LongTensor:
        num_classes = self.transformer.config.num_classes
        if torch.is_tensor(class_labels):
            if class_labels.is_floating_point() or class_labels.is_complex() or class_labels.dtype == torch.bool:
                raise TypeError(
                    f"class_labels must hold integer class ids, got a tensor of dtype {class_labels.dtype}."
                )
            if class_labels.ndim > 1:
                raise ValueError(f"class_labels must be a scalar or 1-D, got shape {tuple(class_labels.shape)}.")
            labels = class_labels.reshape(-1).tolist()
        elif isinstance(class_labels, int) and not isinstance(class_labels, bool):
            labels = [class_labels]
        elif isinstance(class_labels, Sequence) and not isinstance(class_labels, str):
            labels = list(class_labels)
        else:
            raise TypeError(
                f"class_labels must be an int, a list of ints or a tensor of ids, got {type(class_labels).__name__}."
            )
        if not labels:
            raise ValueError("class_labels is empty; pass at least one class id.")
        for label in labels:
            if not isinstance(label, int) or isinstance(label, bool):
                raise TypeError(f"class_labels must be integer ids, got {label!r} ({type(label).__name__}).")
            if not 0 <= label < num_classes:
                raise ValueError(
                    f"Class id {label} is out of range: the transformer has num_classes={num_classes}, so ids run from "
                    f"0 to {num_classes - 1}. (For unconditional samples use guidance_scale=0.0, which gives the "
                    "null-class prediction.)"
                )
        return torch.tensor(labels, dtype=torch.long, device=self._execution_device)

    def _check_inputs(
        self,
        batch_size: int,
        height: int,
        width: int,
        latents: torch.Tensor | None,
        guidance_interval: Sequence[float],
        guidance_channels: int | None,
        num_inference_steps: int,
        output_type: str,
    ) -> None:
        transformer_config = self.transformer.config
        if self.vae.config.latent_channels != transformer_config.in_channels:
            raise ValueError(
                f"The VAE has latent_channels={self.vae.config.latent_channels} but the transformer expects "
                f"in_channels={transformer_config.in_channels}; use the tokenizer the transformer was trained on."
            )
        multiple = self.vae_scale_factor * transformer_config.patch_size
        if height % multiple or width % multiple:
            raise ValueError(
                f"height={height} and width={width} must be multiples of {multiple} (the VAE's factor "
                f"{self.vae_scale_factor} x the transformer's patch_size {transformer_config.patch_size})."
            )
        if latents is not None:
            expected = (
                batch_size,
                transformer_config.in_channels,
                height // self.vae_scale_factor,
                width // self.vae_scale_factor,
            )
            if tuple(latents.shape) != expected:
                raise ValueError(
                    f"latents have shape {tuple(latents.shape)}, expected {expected}: (number of class labels, the "
                    "transformer's in_channels, height / vae_scale_factor, width / vae_scale_factor)."
                )
        if (
            not isinstance(guidance_interval, Sequence)
            or len(guidance_interval) != 2
            or not all(isinstance(value, (int, float)) for value in guidance_interval)
        ):
            raise ValueError(
                f"guidance_interval must be a pair (low, high) of noise levels, got {guidance_interval!r}."
            )
        low, high = guidance_interval
        if not 0.0 <= low <= high <= 1.0:
            raise ValueError(
                f"guidance_interval={tuple(guidance_interval)} must satisfy 0 <= low <= high <= 1 (noise levels sigma, "
                "1 = pure noise)."
            )
        channels = transformer_config.in_channels
        if guidance_channels is not None and (
            not isinstance(guidance_channels, int)
            or isinstance(guidance_channels, bool)
            or not 1 <= guidance_channels <= channels
        ):
            raise ValueError(
                f"guidance_channels={guidance_channels!r} must be None (guide all {channels} latent channels) or an "
                f"integer in [1, {channels}] (guide the first k; LightningDiT's published setting is 3)."
            )
        if not isinstance(num_inference_steps, int) or num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be a positive integer, got {num_inference_steps!r}.")
        if output_type not in _OUTPUT_TYPES:
            raise ValueError(f"output_type={output_type!r} is not one of {_OUTPUT_TYPES}.")

    # ------------------------------------------------------------------------------------------------------------
    # Pieces of the sampling loop
    # ------------------------------------------------------------------------------------------------------------

    def _set_timesteps(self, num_inference_steps: int, num_tokens: int, device: torch.device) -> torch.Tensor:
        config = self.scheduler.config
        kwargs = {}
        if config.get("use_dynamic_shifting", False):
            # Resolution-dependent shift, computed as FluxPipeline does from the transformer's token count.
            kwargs["mu"] = calculate_shift(num_tokens, *(config[key] for key in _DYNAMIC_SHIFT_KEYS))
            if "mu" not in inspect.signature(self.scheduler.set_timesteps).parameters:
                raise ValueError(
                    f"{type(self.scheduler).__name__} has use_dynamic_shifting=True but its set_timesteps takes no "
                    "`mu`; use a fixed `shift` instead."
                )
        if "sigmas" in inspect.signature(self.scheduler.set_timesteps).parameters:
            # LightningDiT's grid, uniform in sigma down to exactly 0. diffusers' own grid instead spaces the timesteps
            # down to its sigma_min (about 1 / num_train_timesteps, shifted twice) and then jumps to 0.
            kwargs["sigmas"] = lightningdit_sigmas(num_inference_steps)
        self.scheduler.set_timesteps(num_inference_steps, device=device, **kwargs)
        return self.scheduler.timesteps

    def _denormalize_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents (the transformer's space) -> raw latents for `vae.decode`."""
        if hasattr(self.vae, "denormalize_latents"):
            return self.vae.denormalize_latents(latents)
        config = self.vae.config
        scaling_factor = getattr(config, "scaling_factor", None) or 1.0
        latents_mean = getattr(config, "latents_mean", None)
        latents_std = getattr(config, "latents_std", None)
        if latents_mean is not None and latents_std is not None:
            if len(latents_mean) != latents.shape[1] or len(latents_std) != latents.shape[1]:
                raise ValueError(
                    f"The VAE config has {len(latents_mean)} latents_mean and {len(latents_std)} latents_std values "
                    f"but the latents have {latents.shape[1]} channels."
                )
            shape = (1, -1, 1, 1)
            mean = torch.tensor(latents_mean, device=latents.device, dtype=latents.dtype).view(shape)
            std = torch.tensor(latents_std, device=latents.device, dtype=latents.dtype).view(shape)
            return latents * std / scaling_factor + mean
        shift_factor = getattr(config, "shift_factor", None) or 0.0
        return latents / scaling_factor + shift_factor

    def _decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        # float16 VAE decoders overflow (NaN / black images); `force_upcast` asks pipelines to decode in float32.
        needs_upcasting = self.vae.dtype == torch.float16 and self.vae.config.force_upcast
        if needs_upcasting:
            self.vae.to(dtype=torch.float32)
        try:
            latents = latents.to(device=get_module_execution_device(self.vae), dtype=self.vae.dtype)
            return self.vae.decode(self._denormalize_latents(latents), return_dict=False)[0]
        finally:
            if needs_upcasting:
                self.vae.to(dtype=torch.float16)

    # ------------------------------------------------------------------------------------------------------------
    # Sampling
    # ------------------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def __call__(
        self,
        class_labels: int | list[int] | torch.Tensor,
        guidance_scale: float = 1.0,
        guidance_interval: tuple[float, float] = (0.0, 1.0),
        guidance_channels: int | None = None,
        num_inference_steps: int = 50,
        height: int | None = None,
        width: int | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
    ) -> ImagePipelineOutput | tuple:
        r"""
        Generates one image per class label.

        Args:
            class_labels (`int`, `list[int]` or `torch.Tensor`): Class ids in `[0, num_classes)`, one per image.
            guidance_scale (`float`, defaults to 1.0):
                Classifier-free guidance scale `w` in `uncond + w * (cond - uncond)`, applied to the channels
                `guidance_channels` selects. 1.0 disables guidance (and skips the unconditional pass); 0.0 samples
                unconditionally. (LightningDiT samples without guidance whenever its `cfg_scale <= 1`.)
            guidance_interval (`tuple[float, float]`, defaults to `(0.0, 1.0)`):
                Noise levels `(low, high)` between which guidance is applied: at each model evaluation, with
                `sigma = timestep / num_train_timesteps` (1 = pure noise, 0 = clean), guidance is on when
                `low <= sigma <= high`; elsewhere the conditional prediction is used alone. The default guides
                everywhere. Guidance at the noisiest levels costs diversity (Kynkaanniemi et al., 2024, "Applying
                guidance in a limited interval"); LightningDiT's `cfg_interval_start=s` (its time runs from 0 = noise
                to 1 = data, and it guides when `t >= s`) corresponds to `(0.0, 1.0 - s)`.
            guidance_channels (`int`, *optional*):
                `None` (the default) guides every latent channel, the standard form. `k` guides only channels
                `[0, k)`, the others taking the conditional prediction: LightningDiT's `forward_with_cfg` with `k = 3`,
                the setting its published FIDs (and guidance scales, e.g. 10.0 at 64 epochs) were measured with.
            num_inference_steps (`int`, defaults to 50):
                Euler (or Heun) steps `n`; any count >= 1. With a scheduler that accepts `sigmas` (Euler) the steps run
                through LightningDiT's grid: the unshifted noise levels `1, 1 - 1/n, ..., 1/n`, shifted by the
                scheduler, then a last step to exactly 0, i.e. `n` model evaluations on `n + 1` grid points. LightningDiT
                counts grid points instead: its `num_sampling_steps=N` (`linspace(0, 1, N)` in its time, ending exactly
                at t = 1) is `num_inference_steps=N - 1` here, so its published 250 is 249. Heun keeps diffusers' own
                grid and makes two model evaluations per step but the last.
            height (`int`, *optional*): Image height in pixels; defaults to the transformer's `sample_size` times the
                VAE factor (256 for the paper's models). A multiple of the VAE factor times the patch size.
            width (`int`, *optional*): Image width, as `height`.
            generator (`torch.Generator` or list of them, *optional*): Makes the initial noise reproducible.
            latents (`torch.Tensor`, *optional*):
                Initial noise `(batch, in_channels, height / f, width / f)`, used instead of sampling it.
            output_type (`str`, defaults to `"pil"`):
                `"pil"`, `"np"` (float arrays in `[0, 1]`), `"pt"` (tensors in `[0, 1]`) or `"latent"` (the
                normalised latents the transformer produced, before denormalisation and decoding).
            return_dict (`bool`, defaults to `True`): Return an [`~pipelines.ImagePipelineOutput`] instead of a tuple.

        Returns:
            [`~pipelines.ImagePipelineOutput`] with the images, or a one-element tuple.
        """
        self._check_scheduler()
        labels = self._prepare_class_labels(class_labels)
        batch_size = labels.shape[0]
        if latents is not None and (height is None or width is None):
            height = height or latents.shape[-2] * self.vae_scale_factor
            width = width or latents.shape[-1] * self.vae_scale_factor
        default_size = self.transformer.config.sample_size * self.vae_scale_factor
        height, width = height or default_size, width or default_size
        self._check_inputs(
            batch_size, height, width, latents, guidance_interval, guidance_channels, num_inference_steps, output_type
        )

        device = self._execution_device
        dtype = self.transformer.dtype
        latent_shape = (
            batch_size,
            self.transformer.config.in_channels,
            height // self.vae_scale_factor,
            width // self.vae_scale_factor,
        )
        if latents is None:
            latents = randn_tensor(latent_shape, generator=generator, device=device, dtype=dtype)
        else:
            latents = latents.to(device=device, dtype=dtype)

        patch_size = self.transformer.config.patch_size
        num_tokens = (latent_shape[2] // patch_size) * (latent_shape[3] // patch_size)
        timesteps = self._set_timesteps(num_inference_steps, num_tokens, device)
        num_train_timesteps = self.scheduler.config.num_train_timesteps

        guidance_low, guidance_high = guidance_interval
        use_guidance = guidance_scale != 1.0
        null_labels = torch.full_like(labels, self.transformer.config.num_classes)
        guided_labels = torch.cat([labels, null_labels])

        with self.progress_bar(total=len(timesteps)) as progress_bar:
            for timestep in timesteps:
                sigma = float(timestep) / num_train_timesteps
                # Closed interval: LightningDiT guides when t >= cfg_interval_start, i.e. sigma <= 1 - start.
                guide_now = use_guidance and (
                    guidance_low - _GUIDANCE_INTERVAL_EDGE_TOLERANCE
                    <= sigma
                    <= guidance_high + _GUIDANCE_INTERVAL_EDGE_TOLERANCE
                )
                if guide_now:
                    # Conditional and unconditional halves in one batched forward pass.
                    model_input = torch.cat([latents, latents])
                    model_labels = guided_labels
                else:
                    model_input, model_labels = latents, labels
                velocity = self.transformer(
                    model_input, timestep.expand(model_input.shape[0]), model_labels, return_dict=False
                )[0]
                if guide_now:
                    conditional, unconditional = velocity.chunk(2)
                    velocity = classifier_free_guidance(conditional, unconditional, guidance_scale, guidance_channels)
                latents = self.scheduler.step(velocity, timestep, latents, return_dict=False)[0]
                progress_bar.update()

        if output_type == "latent":
            images = latents
        else:
            images = self.image_processor.postprocess(self._decode_latents(latents), output_type=output_type)

        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return ImagePipelineOutput(images=images)


def _package_level_entry(value):
    """`("diffusers_aligntok.models.x", "Class")` -> `("diffusers_aligntok", "Class")` when the package exports it."""
    if not (isinstance(value, (tuple, list)) and len(value) == 2 and isinstance(value[0], str)):
        return value
    library, class_name = value
    if library.startswith(_PACKAGE + ".") and getattr(importlib.import_module(_PACKAGE), class_name, None) is not None:
        return (_PACKAGE, class_name)
    return value
