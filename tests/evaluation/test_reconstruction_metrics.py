"""PSNR, SSIM and LPIPS against values computed by hand, and the image checks (bad input)."""

import math

import pytest
import torch

from diffusers_aligntok.evaluation import (
    PSNR_CAP_DB,
    ReconstructionMetricSums,
    prepare_images,
    psnr,
    quantize_reconstructions,
    ssim,
)


def test_identical_images_give_the_psnr_cap_ssim_one_and_lpips_zero(random_trunk_lpips):
    images = torch.rand(4, 3, 32, 32) * 2 - 1
    assert torch.equal(psnr(images, images), torch.full((4,), PSNR_CAP_DB))
    torch.testing.assert_close(ssim(images, images), torch.ones(4))
    assert random_trunk_lpips(images, images).abs().max().item() == 0.0


def test_gaussian_noise_of_known_sigma_gives_the_expected_psnr():
    sigma = 0.05  # on the [0, 1] scale: expected PSNR = -20 log10(0.05) = 26.02 dB
    generator = torch.Generator().manual_seed(0)
    images = 0.1 * torch.rand(8, 3, 64, 64, generator=generator) - 0.05  # mid-grey, so the noise is never clamped
    noisy = images + 2 * sigma * torch.randn(images.shape, generator=generator)  # [-1, 1] scale: twice sigma
    expected = -20 * math.log10(sigma)
    assert psnr(images, noisy).mean().item() == pytest.approx(expected, abs=0.1)
    # 8-bit quantisation adds (1/255)^2 / 12 of error variance: negligible next to sigma^2.
    assert psnr(images, quantize_reconstructions(noisy)).mean().item() == pytest.approx(expected, abs=0.1)


def test_ssim_of_constant_images_is_the_luminance_term():
    # Constant images have zero variance, so SSIM reduces to (2ab + C1) / (a^2 + b^2 + C1), C1 = 0.01^2.
    a, b = 0.3, 0.7  # on the [0, 1] scale
    images = torch.full((1, 3, 16, 16), 2 * a - 1)
    reconstructions = torch.full((1, 3, 16, 16), 2 * b - 1)
    expected = (2 * a * b + 1e-4) / (a**2 + b**2 + 1e-4)
    assert ssim(images, reconstructions).item() == pytest.approx(expected, rel=1e-5)


def test_metric_sums_average_per_image_values():
    images = torch.zeros(2, 3, 16, 16)
    reconstructions = torch.stack([torch.full((3, 16, 16), 0.2), torch.full((3, 16, 16), 0.4)])
    sums = ReconstructionMetricSums()
    sums.update(images[:1], reconstructions[:1])
    other = ReconstructionMetricSums()  # another batch, process or resumed run
    other.update(images[1:], reconstructions[1:])
    sums.merge(other)
    # Errors 0.1 and 0.2 on the [0, 1] scale: PSNR 20 dB and 13.98 dB; the mean is over images, not pixels.
    assert sums.means()["psnr"] == pytest.approx((20.0 + -20 * math.log10(0.2)) / 2, rel=1e-5)
    assert sums.means()["lpips"] is None


def test_mismatched_shapes_raise():
    with pytest.raises(ValueError, match="differ in shape"):
        psnr(torch.zeros(1, 3, 32, 32), torch.zeros(1, 3, 16, 16))
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))


def test_prepare_images_converts_grayscale_and_rgba_with_a_warning():
    gray = torch.rand(2, 1, 8, 8) * 2 - 1
    with pytest.warns(UserWarning, match="grayscale"):
        assert torch.equal(prepare_images(gray), gray.expand(-1, 3, -1, -1))
    rgba = torch.rand(1, 4, 8, 8) * 2 - 1
    rgba[:, 3, :4] = -1.0  # fully transparent top half -> white
    rgba[:, 3, 4:] = 1.0  # opaque bottom half -> its colour
    with pytest.warns(UserWarning, match="alpha"):
        rgb = prepare_images(rgba)
    assert torch.allclose(rgb[:, :, :4], torch.ones_like(rgb[:, :, :4]))
    assert torch.allclose(rgb[:, :, 4:], rgba[:, :3, 4:])


def test_prepare_images_rejects_mixed_sizes_integers_ranges_and_channel_counts():
    with pytest.raises(ValueError, match=r"mixed sizes \[\(16, 16\), \(32, 32\)\]"):
        prepare_images([torch.zeros(3, 32, 32), torch.zeros(3, 16, 16)])
    with pytest.raises(ValueError, match="dtype torch.uint8"):
        prepare_images(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"not \[-1, 1\]"):
        prepare_images(torch.full((1, 3, 8, 8), 255.0))
    with pytest.raises(ValueError, match="5 channels"):
        prepare_images(torch.zeros(1, 5, 8, 8))
    assert prepare_images([torch.zeros(3, 8, 8), torch.zeros(3, 8, 8)]).shape == (2, 3, 8, 8)
