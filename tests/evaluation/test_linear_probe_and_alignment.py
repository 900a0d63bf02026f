"""Linear probe and CKNNA on synthetic latents whose answers are known."""

import pytest
import torch

from diffusers_aligntok import AlignedAutoencoderKL
from diffusers_aligntok.evaluation import (
    AlignTokEncoderFeatures,
    LinearProbeConfig,
    cknna,
    latent_probe_features,
    linear_probe,
)


def _class_latents(num_per_class: int = 40, num_classes: int = 4, seed: int = 0):
    """Latents (N, 8, 4, 4) whose pooled channel k is large exactly for class k: linearly separable."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(num_classes).repeat_interleave(num_per_class)
    latents = 0.3 * torch.randn(len(labels), 8, 4, 4, generator=generator)
    latents[torch.arange(len(labels)), labels] += 2.0
    return latents, labels


def test_linear_probe_is_near_perfect_on_separable_latents_and_deterministic():
    latents, labels = _class_latents()
    features = latent_probe_features(latents, "mean")
    assert features.shape == (160, 8)
    result = linear_probe(features, labels)
    assert result["top1"] >= 0.95
    assert result["num_validation"] == 32 and result["num_classes"] == 4 and result["chance_top1"] == 0.25
    assert linear_probe(features, labels) == result


def test_linear_probe_is_near_chance_on_random_labels():
    latents, _ = _class_latents(num_per_class=100)
    random_labels = torch.randint(0, 4, (400,), generator=torch.Generator().manual_seed(1))
    result = linear_probe(latent_probe_features(latents), random_labels)
    assert result["top1"] < 0.4  # chance is ~0.25 on 80 validation images


def test_linear_probe_leaves_out_unlabelled_images_and_needs_two_classes():
    latents, labels = _class_latents()
    labels = labels.clone()
    labels[:10] = -1
    result = linear_probe(latent_probe_features(latents), labels)
    assert result["num_train"] + result["num_validation"] == 150 and "10 images without a label" in result["notes"][0]
    with pytest.raises(ValueError, match="at least 2 classes"):
        linear_probe(torch.zeros(10, 3), torch.zeros(10, dtype=torch.long))


def test_flatten_pooling_refuses_large_latents():
    assert latent_probe_features(torch.zeros(2, 4, 4, 4), "flatten").shape == (2, 64)
    with pytest.raises(ValueError, match="pooling='mean'"):
        latent_probe_features(torch.zeros(1, 32, 16, 16), "flatten")
    with pytest.raises(ValueError, match="pooling must be one of"):
        LinearProbeConfig(pooling="max")


def test_cknna_is_one_for_identical_and_rotated_features_and_near_zero_for_unrelated():
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(100, 16, generator=generator)
    assert cknna(features, features) == pytest.approx(1.0, abs=1e-9)
    rotation, _ = torch.linalg.qr(torch.randn(16, 16, generator=generator, dtype=torch.float64))
    assert cknna(features, features.double() @ rotation) == pytest.approx(1.0, abs=1e-9)
    # A representation of the same samples in another dimension: only the kernel matters.
    assert cknna(features, torch.cat([features, features], dim=1)) == pytest.approx(1.0, abs=1e-9)
    unrelated = torch.randn(100, 16, generator=generator)
    assert abs(cknna(features, unrelated)) < 0.2


def test_cknna_rejects_mismatched_sample_counts():
    with pytest.raises(ValueError, match="same n samples"):
        cknna(torch.zeros(10, 3), torch.zeros(11, 3))


def test_aligntok_encoder_features_are_mean_pooled_patch_tokens(tiny_vae):
    images = torch.rand(3, 3, 32, 32) * 2 - 1
    features = AlignTokEncoderFeatures(tiny_vae)(images)
    assert features.shape == (3, tiny_vae.config.encoder_config["hidden_size"])
    # Same encoder input as the tokenizer's own encode: normalised, resized to the 8x8 latent grid (patch 3 -> 24 px).
    pixels = tiny_vae._normalize_for_encoder(images)
    pixels = torch.nn.functional.interpolate(
        pixels, size=(24, 24), mode="bicubic", align_corners=False, antialias=True
    )
    tokens = tiny_vae.encoder(pixel_values=pixels).last_hidden_state[:, 1:]
    torch.testing.assert_close(features, tokens.mean(1))
    assert isinstance(tiny_vae, AlignedAutoencoderKL)
