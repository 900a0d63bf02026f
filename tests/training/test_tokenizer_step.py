"""`tokenizer_training_step` against independent computations: the two GAN updates and the adaptive weight.

Each test snapshots the models before one real training step, recomputes what that step must do with plain autograd
on the snapshot (the formulas written out here, not the library's loss functions), and compares.
"""

import copy

import pytest
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from diffusers.optimization import get_scheduler

from diffusers_aligntok import AlignedAutoencoderKL
from diffusers_aligntok.losses import PatchGANDiscriminator, ReconstructionLoss
from diffusers_aligntok.training.step import (
    TokenizerReconstruction,
    TokenizerTrainingComponents,
    frozen_discriminator,
    tokenizer_training_step,
)


GAN_WEIGHT = 0.5


def _components(max_grad_norm=None) -> TokenizerTrainingComponents:
    torch.manual_seed(0)
    accelerator = Accelerator(cpu=True)
    tokenizer = AlignedAutoencoderKL.from_preset("tiny")
    tokenizer.encoder.requires_grad_(False)  # stage 1
    discriminator = PatchGANDiscriminator(base_channels=8, num_layers=2, norm="group")
    tokenizer_optimizer = torch.optim.AdamW([p for p in tokenizer.parameters() if p.requires_grad], lr=1e-3)
    discriminator_optimizer = torch.optim.AdamW(discriminator.parameters(), lr=1e-3)
    scheduler = get_scheduler("constant", optimizer=tokenizer_optimizer)
    module, tokenizer_optimizer, scheduler = accelerator.prepare(
        TokenizerReconstruction(tokenizer), tokenizer_optimizer, scheduler
    )
    discriminator, discriminator_optimizer = accelerator.prepare(discriminator, discriminator_optimizer)
    loss = ReconstructionLoss(perceptual_network=None, perceptual_weight=0.0, gan_weight=GAN_WEIGHT, gan_start_step=0)
    return TokenizerTrainingComponents(
        accelerator=accelerator,
        reconstruction_module=module,
        discriminator=discriminator,
        reconstruction_loss=loss,
        tokenizer_optimizer=tokenizer_optimizer,
        tokenizer_lr_scheduler=scheduler,
        discriminator_optimizer=discriminator_optimizer,
        max_grad_norm=max_grad_norm,
    )


def _record_before_step(optimizer, parameters, record: dict, key: str) -> None:
    """Wraps `optimizer.step` so that the gradients and values of `parameters` are recorded when it is called."""
    original_step = optimizer.step

    def step(*args, **kwargs):
        record[key] = {
            "grads": [None if p.grad is None else p.grad.clone() for p in parameters],
            "values": [p.detach().clone() for p in parameters],
        }
        return original_step(*args, **kwargs)

    optimizer.step = step


@pytest.fixture
def images():
    return torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1


def test_discriminator_step_sees_only_its_own_loss_and_the_generator_step_leaves_it_alone(images):
    c = _components()
    discriminator = c.accelerator.unwrap_model(c.discriminator)
    discriminator_before = copy.deepcopy(discriminator)
    tokenizer_before = copy.deepcopy(c.tokenizer)
    record = {}
    _record_before_step(c.tokenizer_optimizer, list(discriminator.parameters()), record, "generator")
    _record_before_step(c.discriminator_optimizer, list(discriminator.parameters()), record, "discriminator")

    tokenizer_training_step(c, images, global_step=0)

    # The generator's update: no discriminator parameter has a gradient, and none has changed.
    assert all(grad is None for grad in record["generator"]["grads"])
    for value, before in zip(record["generator"]["values"], discriminator_before.parameters()):
        assert torch.equal(value, before)
    # The discriminator's update: exactly autograd of the hinge loss on real images and the step's reconstructions.
    with torch.no_grad():
        reconstructions = tokenizer_before.train().decode(tokenizer_before.encode(images).latent_dist.mode()).sample
    logits_real, logits_fake = discriminator_before(images), discriminator_before(reconstructions)
    hinge = 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())
    expected = torch.autograd.grad(hinge, list(discriminator_before.parameters()))
    for grad, reference in zip(record["discriminator"]["grads"], expected):
        torch.testing.assert_close(grad, reference, rtol=1e-5, atol=1e-7)


def test_adaptive_weight_is_the_gradient_norm_ratio_at_the_decoder_last_layer(images):
    c = _components()
    tokenizer_before = copy.deepcopy(c.tokenizer).train()
    discriminator_before = copy.deepcopy(c.accelerator.unwrap_model(c.discriminator))

    logs = tokenizer_training_step(c, images, global_step=0)

    reconstructions = tokenizer_before.decode(tokenizer_before.encode(images).latent_dist.mode()).sample
    last_layer = tokenizer_before.decoder.conv_out.weight
    nll = (reconstructions - images).abs().mean()
    gan = -discriminator_before(reconstructions).mean()
    (nll_grad,) = torch.autograd.grad(nll, last_layer, retain_graph=True)
    (gan_grad,) = torch.autograd.grad(gan, last_layer)
    expected = nll_grad.norm() / (gan_grad.norm() + 1e-4)  # VQGAN's calculate_adaptive_weight
    torch.testing.assert_close(logs["gan/adaptive_weight"], expected, rtol=1e-5, atol=0)
    torch.testing.assert_close(logs["loss/total"], nll + GAN_WEIGHT * expected * gan, rtol=1e-5, atol=1e-7)


def test_tokenizer_gradient_is_autograd_of_the_generator_loss(images):
    c = _components()
    tokenizer_before = copy.deepcopy(c.tokenizer).train()
    discriminator_before = copy.deepcopy(c.accelerator.unwrap_model(c.discriminator))
    trained = [p for p in c.tokenizer.parameters() if p.requires_grad]
    record = {}
    _record_before_step(c.tokenizer_optimizer, trained, record, "generator")

    logs = tokenizer_training_step(c, images, global_step=0)

    reconstructions = tokenizer_before.decode(tokenizer_before.encode(images).latent_dist.mode()).sample
    total = (reconstructions - images).abs().mean() - GAN_WEIGHT * logs["gan/adaptive_weight"] * discriminator_before(
        reconstructions
    ).mean()
    expected = torch.autograd.grad(total, [p for p in tokenizer_before.parameters() if p.requires_grad])
    for grad, reference in zip(record["generator"]["grads"], expected):
        torch.testing.assert_close(grad, reference, rtol=1e-4, atol=1e-7)


def test_frozen_discriminator_restores_trainable_flags_and_passes_input_gradients():
    accelerator = Accelerator(cpu=True)
    discriminator = PatchGANDiscriminator(base_channels=8, num_layers=2)
    discriminator.conv_in_frozen = torch.nn.Parameter(torch.zeros(1), requires_grad=False)  # stays frozen after
    images = torch.rand(2, 3, 32, 32, requires_grad=True)
    with frozen_discriminator(accelerator, discriminator):
        assert not any(p.requires_grad for p in discriminator.parameters())
        output = discriminator(images).mean()
    output.backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    assert all(p.grad is None for p in discriminator.parameters())
    assert [name for name, p in discriminator.named_parameters() if not p.requires_grad] == ["conv_in_frozen"]
