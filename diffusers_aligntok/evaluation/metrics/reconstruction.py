"""Per-image reconstruction metrics (PSNR, SSIM, LPIPS) and the image checks every metric relies on.

Conventions (the published tokenizer tables, e.g. LDM, VA-VAE, REPA-E, AlignTok, compute them the same way):

- Images and reconstructions are in `[-1, 1]` like every diffusers VAE. Reconstructions are clamped to `[-1, 1]` and,
  by default, quantised to 8 bits ([`quantize_reconstructions`]), because published numbers are measured on saved
  PNGs. Originals read from image files are already exact 8-bit values.
- PSNR and SSIM are measured on the `[0, 1]` scale (peak 1, i.e. data range 1), per image, then averaged over images.
- PSNR of identical images is infinite; it is capped at [`PSNR_CAP_DB`] = 100 dB (MSE floored at 1e-10) so that a
  mean over images stays finite. The same cap as `diffusers_aligntok.training.validation.psnr`.
- SSIM is Wang et al. (2004): 11x11 Gaussian window with sigma 1.5, K1 = 0.01, K2 = 0.03, population (co)variances,
  averaged over the valid window positions and the three channels, as `skimage.metrics.structural_similarity(...,
  gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1, channel_axis=0)`.
- LPIPS is the network from `diffusers_aligntok.losses.build_perceptual_network` (`"lpips-vgg"`); identical images give
  exactly 0. `"lpips-vgg-random-trunk"` is an offline stand-in whose values are not LPIPS.
"""

import warnings
from collections.abc import Sequence

import torch


PSNR_CAP_DB = 100.0
_MSE_FLOOR = 10 ** (-PSNR_CAP_DB / 10)  # 1e-10 on the [0, 1] scale
_SSIM_WINDOW_SIZE = 11
_SSIM_SIGMA = 1.5
_SSIM_K1, _SSIM_K2 = 0.01, 0.03
_RANGE_TOLERANCE = 1e-3


def prepare_images(images: torch.Tensor | Sequence[torch.Tensor], name: str = "images") -> torch.Tensor:
    """Checks and normalises a batch of images for the metrics: float `(B, 3, H, W)` in `[-1, 1]`.

    - A list of `(C, H, W)` tensors is stacked; images of mixed sizes raise `ValueError` (resize and centre-crop them
      to one resolution first, as `diffusers_aligntok.data.build_image_dataset` does).
    - Grayscale (1 channel) is repeated to RGB; RGBA / grey+alpha (4 / 2 channels) are composited on white, as the
      data loader does for image files. Both warn, since the caller may not expect it.
    - Integer images, other channel counts and values outside `[-1, 1]` raise `ValueError`.
    """
    if isinstance(images, (list, tuple)):
        if not images:
            raise ValueError(f"{name} is an empty list; pass at least one image.")
        sizes = sorted({tuple(image.shape[-2:]) for image in images})
        if len(sizes) > 1:
            raise ValueError(
                f"{name} have mixed sizes {sizes}; metrics compare whole images, so resize and centre-crop them to one "
                "resolution first (diffusers_aligntok.data.ImageTransform does this)."
            )
        images = torch.stack([image if image.ndim == 3 else image.squeeze(0) for image in images])
    if not torch.is_tensor(images) or images.ndim != 4:
        shape = tuple(images.shape) if torch.is_tensor(images) else type(images).__name__
        raise ValueError(f"{name} must be a (batch, channels, height, width) tensor, got {shape}.")
    if not images.is_floating_point():
        raise ValueError(
            f"{name} have dtype {images.dtype}; pass float images in [-1, 1] (uint8 x: `x.float() / 127.5 - 1`)."
        )
    low, high = images.min().item(), images.max().item()
    if low < -1 - _RANGE_TOLERANCE or high > 1 + _RANGE_TOLERANCE:
        raise ValueError(
            f"{name} range over [{low:.3g}, {high:.3g}], not [-1, 1]. Scale [0, 1] images with `2 * x - 1` and "
            "[0, 255] images with `x / 127.5 - 1`; clamp reconstructions with `.clamp(-1, 1)`."
        )
    channels = images.shape[1]
    if channels == 3:
        return images
    if channels == 1:
        warnings.warn(f"{name} are grayscale (1 channel); repeating them to RGB.", UserWarning, stacklevel=2)
        return images.expand(-1, 3, -1, -1)
    if channels in (2, 4):
        warnings.warn(
            f"{name} have an alpha channel ({channels} channels); compositing them on white, as the data loader does.",
            UserWarning,
            stacklevel=2,
        )
        color = images[:, : channels - 1].expand(-1, 3, -1, -1)
        alpha = (images[:, channels - 1 :] + 1) / 2
        return color * alpha + (1 - alpha)  # white is 1 in [-1, 1]
    raise ValueError(f"{name} have {channels} channels; expected RGB (3), grayscale (1) or RGBA (4).")


def check_matching_pair(images: torch.Tensor, reconstructions: torch.Tensor) -> None:
    if images.shape != reconstructions.shape:
        raise ValueError(
            f"images {tuple(images.shape)} and reconstructions {tuple(reconstructions.shape)} differ in shape; a "
            "tokenizer must return images of its input size (check its spatial factor and the resolution)."
        )


def quantize_reconstructions(reconstructions: torch.Tensor) -> torch.Tensor:
    """Clamp to `[-1, 1]` and round to the 256 levels of an 8-bit PNG, staying in `[-1, 1]` float32."""
    return ((reconstructions.detach().float().clamp(-1, 1) + 1) * 127.5).round() / 127.5 - 1


def psnr(images: torch.Tensor, reconstructions: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB, `(B,)`, on the `[0, 1]` scale (peak 1); identical images give [`PSNR_CAP_DB`].

    For additive Gaussian noise of standard deviation sigma (on the `[0, 1]` scale) the expected value is
    `-20 log10(sigma)`: 26.02 dB for sigma = 0.05.
    """
    check_matching_pair(images, reconstructions)
    error = (images.float() - reconstructions.float()) / 2  # [-1, 1] differences -> [0, 1] scale
    mse = error.pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse.clamp_min(_MSE_FLOOR))


def _gaussian_filter_matrix(size: int, device: torch.device) -> torch.Tensor:
    """`(size - 10, size)` matrix applying the normalised 11-tap Gaussian at every valid position (float64)."""
    coordinates = torch.arange(_SSIM_WINDOW_SIZE, dtype=torch.float64, device=device) - (_SSIM_WINDOW_SIZE - 1) / 2
    weights = torch.exp(-(coordinates**2) / (2 * _SSIM_SIGMA**2))
    weights = weights / weights.sum()
    num_positions = size - _SSIM_WINDOW_SIZE + 1
    matrix = torch.zeros(num_positions, size, dtype=torch.float64, device=device)
    for offset in range(_SSIM_WINDOW_SIZE):
        matrix[torch.arange(num_positions), torch.arange(num_positions) + offset] = weights[offset]
    return matrix


def ssim(images: torch.Tensor, reconstructions: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM, `(B,)`, on the `[0, 1]` scale (Wang et al. 2004; see the module docstring). Identical: 1.

    Computed in float64; the separable Gaussian filter is two matrix products with banded matrices (valid positions
    only). Images must be at least 11x11 (the window size).
    """
    check_matching_pair(images, reconstructions)
    height, width = images.shape[-2:]
    if height < _SSIM_WINDOW_SIZE or width < _SSIM_WINDOW_SIZE:
        raise ValueError(
            f"SSIM needs images of at least {_SSIM_WINDOW_SIZE}x{_SSIM_WINDOW_SIZE}, got {height}x{width}."
        )
    x = (images.double() + 1) / 2
    y = (reconstructions.double() + 1) / 2
    rows = _gaussian_filter_matrix(height, x.device)
    columns = _gaussian_filter_matrix(width, x.device).T

    def blur(values: torch.Tensor) -> torch.Tensor:
        return rows @ values @ columns

    mean_x, mean_y = blur(x), blur(y)
    variance_x = blur(x * x) - mean_x**2
    variance_y = blur(y * y) - mean_y**2
    covariance = blur(x * y) - mean_x * mean_y
    c1, c2 = _SSIM_K1**2, _SSIM_K2**2  # data range 1
    ssim_map = ((2 * mean_x * mean_y + c1) * (2 * covariance + c2)) / (
        (mean_x**2 + mean_y**2 + c1) * (variance_x + variance_y + c2)
    )
    return ssim_map.flatten(1).mean(1).float()


class ReconstructionMetricSums:
    """Running sums of per-image PSNR, SSIM and (optionally) LPIPS, mergeable across batches, ranks and resumes."""

    def __init__(self):
        self.count = 0
        self.psnr_sum = 0.0
        self.ssim_sum = 0.0
        self.lpips_sum = 0.0
        self.lpips_count = 0

    @torch.no_grad()
    def update(
        self, images: torch.Tensor, reconstructions: torch.Tensor, perceptual_network=None
    ) -> dict[str, torch.Tensor]:
        """Adds one batch (both in `[-1, 1]`, reconstructions already clamped/quantised); returns per-image values."""
        images = prepare_images(images, "images")
        reconstructions = prepare_images(reconstructions, "reconstructions")
        values = {"psnr": psnr(images, reconstructions), "ssim": ssim(images, reconstructions)}
        if perceptual_network is not None:
            values["lpips"] = perceptual_network(images, reconstructions).float()
            self.lpips_sum += values["lpips"].double().sum().item()
            self.lpips_count += images.shape[0]
        self.count += images.shape[0]
        self.psnr_sum += values["psnr"].double().sum().item()
        self.ssim_sum += values["ssim"].double().sum().item()
        return values

    def merge(self, other: "ReconstructionMetricSums") -> "ReconstructionMetricSums":
        self.count += other.count
        self.psnr_sum += other.psnr_sum
        self.ssim_sum += other.ssim_sum
        self.lpips_sum += other.lpips_sum
        self.lpips_count += other.lpips_count
        return self

    def means(self) -> dict[str, float | None]:
        if self.count == 0:
            raise ValueError("No images were measured.")
        return {
            "psnr": self.psnr_sum / self.count,
            "ssim": self.ssim_sum / self.count,
            "lpips": self.lpips_sum / self.lpips_count if self.lpips_count else None,
        }

    def state_dict(self) -> dict[str, float]:
        return dict(vars(self))

    @classmethod
    def from_state_dict(cls, state: dict[str, float]) -> "ReconstructionMetricSums":
        sums = cls()
        for key, value in state.items():
            setattr(sums, key, value)
        return sums
