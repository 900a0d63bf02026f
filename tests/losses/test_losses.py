"""Tests of the training losses: hinge GAN, PatchGAN discriminator, L_rec with the adaptive weight, and L_sp.

Tiny shapes (2 x 3 x 32 x 32 images) and the random-trunk LPIPS stand-in keep everything offline and fast.
"""

import os
import subprocess
import sys
import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from diffusers_aligntok.losses import (
    PatchGANDiscriminator,
    ReconstructionLoss,
    build_perceptual_network,
    hinge_discriminator_loss,
    hinge_generator_loss,
    semantic_preservation_loss,
)


GENERATOR_LOG_KEYS = {
    "loss/l1",
    "loss/perceptual",
    "loss/gan_generator",
    "gan/adaptive_weight",
    "loss/generator_total",
}
DISCRIMINATOR_LOG_KEYS = {"loss/discriminator", "gan/logits_real", "gan/logits_fake"}


class TinyDecoder(nn.Module):
    """A two-convolution stand-in for the decoder; `conv_out.weight` is the last layer, as in diffusers' `Decoder`."""

    def __init__(self):
        super().__init__()
        self.conv_in = nn.Conv2d(4, 8, 3, padding=1)
        self.conv_out = nn.Conv2d(8, 3, 3, padding=1)

    def forward(self, latents):
        return self.conv_out(F.silu(self.conv_in(latents)))


class CountingDiscriminator(nn.Module):
    def __init__(self, discriminator):
        super().__init__()
        self.discriminator = discriminator
        self.calls = 0

    def forward(self, images):
        self.calls += 1
        return self.discriminator(images)


@pytest.fixture(scope="module")
def random_trunk_lpips():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # building the stand-in must not leak torchvision's deprecation warnings
        return build_perceptual_network("lpips-vgg-random-trunk")


def _images(seed=0, batch_size=2, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(batch_size, 3, 32, 32, generator=generator) * 2 - 1).to(dtype)


def _tiny_disc():
    return PatchGANDiscriminator(in_channels=3, base_channels=8, num_layers=3)


def _decoder_setup():
    decoder = TinyDecoder()
    latents = torch.randn(2, 4, 32, 32)
    return decoder, latents, _images(1)


# ---- hinge losses and the discriminator ----


def test_hinge_losses_by_hand():
    logits_real = torch.tensor([2.0, 0.5, -1.0])
    logits_fake = torch.tensor([-2.0, 0.0, 1.0])
    # relu(1 - real) = [0, 0.5, 2] -> mean 5/6; relu(1 + fake) = [0, 1, 2] -> mean 1.
    expected = 0.5 * (5.0 / 6.0 + 1.0)
    assert hinge_discriminator_loss(logits_real, logits_fake).item() == pytest.approx(expected)
    assert hinge_generator_loss(logits_fake).item() == pytest.approx(1.0 / 3.0)
    assert hinge_discriminator_loss(logits_real.bfloat16(), logits_fake.bfloat16()).dtype == torch.float32
    assert hinge_generator_loss(logits_fake.bfloat16()).dtype == torch.float32


def test_discriminator_shape_init_and_norms():
    images = _images()
    for norm in ("group", "batch", "none"):
        assert PatchGANDiscriminator(base_channels=8, norm=norm)(images).shape == (2, 1, 2, 2)
    # pix2pix layout: three stride-2 convolutions, then two stride-1 4x4 ones: 64 -> 32 -> 16 -> 8 -> 7 -> 6.
    default = PatchGANDiscriminator()
    assert not any(isinstance(module, nn.BatchNorm2d) for module in default.modules())
    assert default(torch.zeros(1, 3, 64, 64)).shape == (1, 1, 6, 6)
    # pix2pix init: convolutions N(0, 0.02), normalisation scales N(1, 0.02).
    assert default.layers[2].weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert default.layers[2].weight.mean().abs().item() < 1e-3
    assert default.layers[3].weight.mean().item() == pytest.approx(1.0, abs=0.01)
    with pytest.raises(ValueError, match="instance"):
        PatchGANDiscriminator(norm="instance")


def test_discriminator_is_float32_under_bf16_inputs_and_autocast():
    disc = _tiny_disc()
    assert disc(_images(dtype=torch.bfloat16)).dtype == torch.float32
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        assert disc(_images()).dtype == torch.float32
        assert nn.Conv2d(3, 1, 1)(_images()).dtype == torch.bfloat16  # autocast really is on here
    with pytest.raises(TypeError, match="float32"):
        _tiny_disc().to(torch.bfloat16)(_images())


# ---- ReconstructionLoss ----


def test_l1_term_matches_by_hand_and_perceptual_weight_zero_is_off():
    images, reconstructions = _images(0), _images(1)
    loss_fn = ReconstructionLoss(perceptual_network=None, perceptual_weight=0.0, l1_weight=2.0)
    loss, logs = loss_fn.generator_loss(images, reconstructions)
    expected_l1 = (images - reconstructions).abs().mean()
    torch.testing.assert_close(logs["loss/l1"], F.l1_loss(reconstructions, images))
    torch.testing.assert_close(logs["loss/l1"], expected_l1)
    torch.testing.assert_close(loss, 2.0 * expected_l1)
    assert logs["loss/perceptual"].item() == 0.0


def test_missing_perceptual_network_with_nonzero_weight_warns():
    with pytest.warns(UserWarning, match="perceptual term"):
        ReconstructionLoss(perceptual_network=None, perceptual_weight=1.0)


def test_identical_images_give_zero_l1_and_perceptual(random_trunk_lpips):
    images = _images()
    loss_fn = ReconstructionLoss(perceptual_network=random_trunk_lpips)
    loss, logs = loss_fn.generator_loss(images, images.clone())
    assert logs["loss/l1"].item() == 0.0
    assert logs["loss/perceptual"].abs().item() < 1e-6
    assert loss.abs().item() < 1e-6


def test_perceptual_term_is_weighted_frozen_and_passes_gradients(random_trunk_lpips):
    images, reconstructions = _images(0), _images(1).requires_grad_()
    loss_fn = ReconstructionLoss(perceptual_network=random_trunk_lpips, perceptual_weight=0.5)
    loss_fn.train()  # a parent's .train() must not switch LPIPS's dropout on
    assert not random_trunk_lpips.training and not random_trunk_lpips.lpips.training
    assert not any(parameter.requires_grad for parameter in random_trunk_lpips.parameters())
    assert not random_trunk_lpips.is_real_metric

    loss, logs = loss_fn.generator_loss(images, reconstructions)
    distance = random_trunk_lpips(images, reconstructions.detach())
    assert distance.shape == (2,)
    torch.testing.assert_close(logs["loss/perceptual"], distance.mean())
    torch.testing.assert_close(loss.detach(), logs["loss/l1"] + 0.5 * distance.mean())
    assert logs["loss/perceptual"].item() > 0
    loss.backward()
    assert reconstructions.grad is not None and reconstructions.grad.abs().sum() > 0


def test_gan_term_absent_before_start_and_present_after():
    images, reconstructions = _images(0), _images(1)
    disc = CountingDiscriminator(_tiny_disc())
    loss_fn = ReconstructionLoss(perceptual_network=None, perceptual_weight=0.0, gan_start_step=10)

    loss, logs = loss_fn.generator_loss(images, reconstructions, discriminator=disc, global_step=9)
    assert disc.calls == 0 and not loss_fn.is_gan_active(9)
    assert logs["loss/gan_generator"].item() == 0.0 and logs["gan/adaptive_weight"].item() == 0.0
    torch.testing.assert_close(loss, logs["loss/l1"])
    disc_loss, disc_logs = loss_fn.discriminator_loss(images, reconstructions, discriminator=disc, global_step=9)
    assert disc.calls == 0 and disc_loss.item() == 0.0 and not disc_loss.requires_grad
    assert set(disc_logs) == DISCRIMINATOR_LOG_KEYS and all(value.item() == 0.0 for value in disc_logs.values())

    loss, logs = loss_fn.generator_loss(images, reconstructions, discriminator=disc, global_step=10)
    assert disc.calls == 1 and loss_fn.is_gan_active(10)
    expected_gan = hinge_generator_loss(disc.discriminator(reconstructions))
    torch.testing.assert_close(logs["loss/gan_generator"], expected_gan.detach())
    assert logs["gan/adaptive_weight"].item() == 1.0  # no last layer given: documented fallback
    torch.testing.assert_close(loss.detach(), logs["loss/l1"] + 0.5 * expected_gan.detach())

    # No discriminator, or gan_weight 0, leaves the GAN out at any step.
    _, logs = loss_fn.generator_loss(images, reconstructions, discriminator=None, global_step=100)
    assert logs["loss/gan_generator"].item() == 0.0
    assert not ReconstructionLoss(perceptual_weight=0.0, gan_weight=0.0, gan_start_step=0).is_gan_active(100)


def test_discriminator_loss_by_hand_and_no_gradient_to_reconstructions():
    images, reconstructions = _images(0), _images(1).requires_grad_()
    disc = _tiny_disc()
    loss_fn = ReconstructionLoss(perceptual_network=None, perceptual_weight=0.0, gan_start_step=0)
    loss, logs = loss_fn.discriminator_loss(images, reconstructions, discriminator=disc, global_step=0)
    logits_real, logits_fake = disc(images), disc(reconstructions.detach())
    expected = 0.5 * (F.relu(1 - logits_real).mean() + F.relu(1 + logits_fake).mean())
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(logs["gan/logits_real"], logits_real.mean().detach())
    torch.testing.assert_close(logs["gan/logits_fake"], logits_fake.mean().detach())
    loss.backward()
    assert reconstructions.grad is None
    assert disc.layers[0].weight.grad is not None


def test_adaptive_weight_is_the_gradient_norm_ratio_at_the_last_layer():
    decoder, latents, images = _decoder_setup()
    disc = _tiny_disc()
    loss_fn = ReconstructionLoss(perceptual_network=None, perceptual_weight=0.0, gan_weight=0.5, gan_start_step=0)
    reconstructions = decoder(latents)
    loss, logs = loss_fn.generator_loss(
        images, reconstructions, discriminator=disc, global_step=0, last_layer_weight=decoder.conv_out.weight
    )

    # By hand, on a fresh graph.
    reconstructions = decoder(latents)
    nll = (reconstructions - images).abs().mean()
    gan = -disc(reconstructions).mean()
    (nll_grad,) = torch.autograd.grad(nll, decoder.conv_out.weight, retain_graph=True)
    (gan_grad,) = torch.autograd.grad(gan, decoder.conv_out.weight, retain_graph=True)
    expected_weight = nll_grad.norm() / (gan_grad.norm() + 1e-4)

    assert expected_weight.item() != pytest.approx(1.0, abs=1e-3)  # the test can tell it from the fallback
    torch.testing.assert_close(logs["gan/adaptive_weight"], expected_weight)
    torch.testing.assert_close(loss.detach(), (nll + expected_weight * 0.5 * gan).detach())
    # The weight is detached: the total's gradient is that of nll + w * 0.5 * gan with w a constant.
    loss.backward()
    torch.testing.assert_close(decoder.conv_out.weight.grad, nll_grad + expected_weight * 0.5 * gan_grad)


def test_adaptive_weight_is_clamped():
    decoder, latents, images = _decoder_setup()
    disc = _tiny_disc()
    kwargs = {"discriminator": disc, "global_step": 0, "last_layer_weight": decoder.conv_out.weight}
    unclamped = ReconstructionLoss(perceptual_weight=0.0, gan_start_step=0)
    _, logs = unclamped.generator_loss(images, decoder(latents), **kwargs)
    cap = logs["gan/adaptive_weight"].item() / 10
    clamped = ReconstructionLoss(perceptual_weight=0.0, gan_start_step=0, adaptive_weight_max=cap)
    _, logs = clamped.generator_loss(images, decoder(latents), **kwargs)
    assert logs["gan/adaptive_weight"].item() == pytest.approx(cap)


def test_adaptive_weight_falls_back_to_one_without_a_gradient_path():
    decoder, latents, images = _decoder_setup()
    disc = _tiny_disc()
    loss_fn = ReconstructionLoss(perceptual_weight=0.0, gan_start_step=0)
    kwargs = {"discriminator": disc, "global_step": 0}
    with torch.no_grad():
        loss, logs = loss_fn.generator_loss(
            images, decoder(latents), last_layer_weight=decoder.conv_out.weight, **kwargs
        )
    assert logs["gan/adaptive_weight"].item() == 1.0 and not loss.requires_grad
    _, logs = loss_fn.generator_loss(images, decoder(latents), last_layer_weight=None, **kwargs)
    assert logs["gan/adaptive_weight"].item() == 1.0
    unrelated_weight = nn.Conv2d(8, 3, 3).weight  # a tensor that is not in the graph: almost surely a caller bug
    with pytest.warns(UserWarning, match="not on the gradient path"):
        _, logs = loss_fn.generator_loss(images, decoder(latents), last_layer_weight=unrelated_weight, **kwargs)
    assert logs["gan/adaptive_weight"].item() == 1.0


def test_logs_have_every_key_detached_float32_and_bf16_gives_float32(random_trunk_lpips):
    decoder, latents, images = _decoder_setup()
    disc = _tiny_disc()
    loss_fn = ReconstructionLoss(perceptual_network=random_trunk_lpips, gan_start_step=5)
    for step in (0, 5):
        reconstructions = decoder(latents).bfloat16()
        loss, logs = loss_fn.generator_loss(
            images.bfloat16(),
            reconstructions,
            discriminator=disc,
            global_step=step,
            last_layer_weight=decoder.conv_out.weight,
        )
        assert loss.dtype == torch.float32 and loss.requires_grad
        assert set(logs) == GENERATOR_LOG_KEYS
        for key, value in logs.items():
            assert value.dtype == torch.float32 and value.ndim == 0 and not value.requires_grad, key
        assert (logs["loss/gan_generator"].item() != 0.0) == (step == 5)
        # The L1 is computed in float32 from the bf16 values, not in bf16 (which would be off by ~1e-3 relative).
        torch.testing.assert_close(logs["loss/l1"], F.l1_loss(reconstructions.float(), images.bfloat16().float()))
        disc_loss, disc_logs = loss_fn.discriminator_loss(
            images.bfloat16(), reconstructions.detach(), discriminator=disc, global_step=step
        )
        assert disc_loss.dtype == torch.float32 and set(disc_logs) == DISCRIMINATOR_LOG_KEYS
        assert all(value.dtype == torch.float32 and not value.requires_grad for value in disc_logs.values())


def test_shape_mismatch_raises():
    loss_fn = ReconstructionLoss(perceptual_weight=0.0)
    with pytest.raises(ValueError, match=r"\(2, 3, 16, 16\)"):
        loss_fn.generator_loss(_images(), torch.zeros(2, 3, 16, 16))


# ---- build_perceptual_network ----


def test_build_perceptual_network_names_and_errors(tmp_path):
    assert build_perceptual_network(None) is None
    with pytest.raises(ValueError, match="lpips-vgg-random-trunk"):
        build_perceptual_network("lpips-alex")
    with pytest.raises(ValueError, match="misleading"):
        build_perceptual_network("lpips-vgg-random-trunk", trunk_weights_path="vgg16.pth")
    bad_path = tmp_path / "not_vgg.pth"
    torch.save({"weight": torch.zeros(1)}, bad_path)
    with pytest.raises(ValueError, match="features.0.weight"):
        build_perceptual_network("lpips-vgg", trunk_weights_path=str(bad_path))


def test_trunk_weights_load_from_a_local_torchvision_state_dict(tmp_path, random_trunk_lpips):
    # A torchvision-named state dict with values unlike any random init, so a missed load would show.
    trunk = random_trunk_lpips.lpips.net
    state_dict = {
        "features." + name.split(".", 1)[1]: torch.full_like(value, 0.01 * (index + 1))
        for index, (name, value) in enumerate(trunk.state_dict().items())
    }
    state_dict["classifier.0.weight"] = torch.zeros(2, 2)  # extra keys of a full vgg16 state dict are ignored
    path = tmp_path / "vgg16.pth"
    torch.save(state_dict, path)
    network = build_perceptual_network("lpips-vgg", trunk_weights_path=str(path))
    assert network.is_real_metric and network.name == "lpips-vgg"
    loaded = network.lpips.net.state_dict()
    for name in trunk.state_dict():
        torch.testing.assert_close(loaded[name], state_dict["features." + name.split(".", 1)[1]])
    # The linear heads are the shipped calibrated ones, the same as in the random-trunk build.
    torch.testing.assert_close(network.lpips.lin0.model[-1].weight, random_trunk_lpips.lpips.lin0.model[-1].weight)


# ---- semantic_preservation_loss ----


def test_semantic_preservation_l2_is_mse_and_gradient_reaches_only_latents():
    latents = torch.randn(2, 8, 4, 4, requires_grad=True)
    target = torch.randn(2, 8, 4, 4, requires_grad=True)
    loss = semantic_preservation_loss(latents, target, kind="l2")
    torch.testing.assert_close(loss, F.mse_loss(latents, target))
    loss.backward()
    assert latents.grad is not None and latents.grad.abs().sum() > 0
    assert target.grad is None


def test_semantic_preservation_cosine_parallel_and_orthogonal():
    latents = torch.randn(2, 8, 4, 4, requires_grad=True)
    assert semantic_preservation_loss(latents, 3.0 * latents.detach(), kind="cosine").item() == pytest.approx(
        0.0, abs=1e-6
    )
    first = torch.zeros(2, 8, 4, 4)
    first[:, 0] = 1.0
    second = torch.zeros(2, 8, 4, 4)
    second[:, 1] = 2.0
    assert semantic_preservation_loss(first, second, kind="cosine").item() == pytest.approx(1.0)
    # By hand: one channel vector per (sample, row, column) position.
    target = torch.randn(2, 8, 4, 4, requires_grad=True)
    vectors = latents.detach().permute(0, 2, 3, 1).reshape(-1, 8)
    target_vectors = target.detach().permute(0, 2, 3, 1).reshape(-1, 8)
    expected = 1 - (vectors * target_vectors).sum(1) / (vectors.norm(dim=1) * target_vectors.norm(dim=1))
    loss = semantic_preservation_loss(latents, target, kind="cosine")
    torch.testing.assert_close(loss.detach(), expected.mean())
    loss.backward()
    assert latents.grad.abs().sum() > 0 and target.grad is None


def test_semantic_preservation_float32_and_errors():
    latents = torch.randn(2, 8, 4, 4).bfloat16()
    for kind in ("l2", "cosine"):
        assert semantic_preservation_loss(latents, latents + 0.5, kind=kind).dtype == torch.float32
    with pytest.raises(ValueError, match=r"\(2, 8, 4, 4\).*\(2, 8, 2, 2\)"):
        semantic_preservation_loss(torch.zeros(2, 8, 4, 4), torch.zeros(2, 8, 2, 2))
    with pytest.raises(ValueError, match="l1"):
        semantic_preservation_loss(latents, latents, kind="l1")


# ---- import hygiene ----


def test_importing_losses_does_not_import_lpips():
    code = (
        "import sys, diffusers_aligntok, diffusers_aligntok.losses; "
        "assert 'lpips' not in sys.modules, sorted(name for name in sys.modules if 'lpips' in name)"
    )
    environment = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment, timeout=120)
    assert result.returncode == 0, result.stderr
