"""One optimisation step of tokenizer training: the generator (tokenizer) update, then the discriminator update.

What keeps it correct on several processes (DDP, FSDP, DeepSpeed through accelerate):

- The tokenizer's training forward (encode, latent noise, decode) is one module, [`TokenizerReconstruction`], which
  `accelerator.prepare` wraps; calling `encode`/`decode` on the unwrapped model would bypass DDP's reducer, and every
  rank would then train its own copy at its local batch.
- The generator's GAN term runs the discriminator with its parameters frozen and without gradient sync, so no
  gradient of the tokenizer's loss reaches the discriminator: its update sees the discriminator loss alone (taming and
  LDM get the same by running the two losses in separate passes).
"""

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from accelerate import Accelerator

from ..losses import ReconstructionLoss, semantic_preservation_loss
from ..models import AlignedAutoencoderKL


class NonFiniteLossError(FloatingPointError):
    """A loss term became NaN or inf; the run stops without writing over the last good checkpoint."""


class TokenizerReconstruction(torch.nn.Module):
    """The tokenizer's training forward as one module: images -> `(latents, reconstructions)`.

    `AlignedAutoencoderKL.forward` returns only the reconstruction, while stage 2's L_sp also needs the latent, so the
    training loop prepares this thin wrapper instead: its `forward` is the one call through which gradients flow, and
    `accelerator.prepare` (DDP, FSDP, DeepSpeed, autocast) wraps exactly that call. It adds no parameters of its own;
    `tokenizer` is the `AlignedAutoencoderKL` whose parameters the optimiser and the EMA hold.
    """

    def __init__(self, tokenizer: AlignedAutoencoderKL):
        super().__init__()
        self.tokenizer = tokenizer

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        latents = self.tokenizer.encode(images).latent_dist.mode()
        # Noise augmentation of the decoder's input (`latent_noise_std`); L_sp compares the clean latents.
        reconstructions = self.tokenizer.decode(self.tokenizer.add_latent_noise(latents)).sample
        return latents, reconstructions


@contextlib.contextmanager
def frozen_discriminator(accelerator: Accelerator, discriminator: torch.nn.Module | None) -> Iterator[None]:
    """Runs the discriminator for the generator's GAN term: gradients reach its input, never its parameters.

    Parameters that require gradients are switched off for the forward (so autograd records no gradient for them)
    and the forward runs under `accelerator.no_sync`, so DDP does not wait in the next backward for gradients that
    never come. Both are restored on exit; the backward of the generator loss may run after it.
    """
    if discriminator is None:
        yield
        return
    trainable = [parameter for parameter in discriminator.parameters() if parameter.requires_grad]
    for parameter in trainable:
        parameter.requires_grad_(False)
    try:
        with accelerator.no_sync(discriminator):
            yield
    finally:
        for parameter in trainable:
            parameter.requires_grad_(True)


@dataclass
class TokenizerTrainingComponents:
    accelerator: Accelerator
    # The prepared (possibly DDP/FSDP-wrapped) `TokenizerReconstruction`: every forward with gradients goes through it.
    reconstruction_module: torch.nn.Module
    discriminator: torch.nn.Module | None  # prepared
    reconstruction_loss: ReconstructionLoss
    tokenizer_optimizer: torch.optim.Optimizer
    tokenizer_lr_scheduler: torch.optim.lr_scheduler.LRScheduler
    discriminator_optimizer: torch.optim.Optimizer | None
    semantic_target: AlignedAutoencoderKL | None = None
    semantic_preservation_weight: float = 0.0
    semantic_preservation_kind: str = "l2"
    max_grad_norm: float | None = 1.0

    @property
    def tokenizer(self) -> AlignedAutoencoderKL:
        """The unwrapped tokenizer (for its config, validation and export; never for a forward with gradients)."""
        return self.accelerator.unwrap_model(self.reconstruction_module).tokenizer


def tokenizer_training_step(
    components: TokenizerTrainingComponents, images: torch.Tensor, global_step: int
) -> dict[str, torch.Tensor]:
    """Runs one (micro-)batch through both updates under `accelerator.accumulate` and returns every logged term.

    The generator loss is `L_rec (+ w_sp * L_sp in stage 2)`; its backward reaches the tokenizer's parameters only.
    The discriminator then takes its own step on the same images and the detached reconstructions.

    Raises `NonFiniteLossError` naming the step and the term when any loss is NaN or inf, on every rank at once.
    """
    c = components
    accelerator = c.accelerator
    models = [c.reconstruction_module] + ([c.discriminator] if c.discriminator is not None else [])
    with accelerator.accumulate(*models):
        latents, reconstructions = c.reconstruction_module(images)
        with frozen_discriminator(accelerator, c.discriminator):
            generator_loss, logs = c.reconstruction_loss.generator_loss(
                images,
                reconstructions,
                discriminator=c.discriminator,
                global_step=global_step,
                last_layer_weight=c.tokenizer.decoder.conv_out.weight,
            )
        if c.semantic_target is not None and c.semantic_preservation_weight > 0:
            # The frozen target is not prepared (it has no gradients to sync), so autocast is applied here.
            with torch.no_grad(), accelerator.autocast():
                target_latents = c.semantic_target.encode(images).latent_dist.mode()
            sp_loss = semantic_preservation_loss(latents, target_latents, kind=c.semantic_preservation_kind)
            generator_loss = generator_loss + c.semantic_preservation_weight * sp_loss
            logs["loss/semantic_preservation"] = sp_loss.detach()
        logs["loss/total"] = generator_loss.detach()
        raise_if_not_finite(accelerator, logs, global_step)

        accelerator.backward(generator_loss)
        if accelerator.sync_gradients and c.max_grad_norm:
            logs["grad_norm/tokenizer"] = _as_tensor(
                accelerator.clip_grad_norm_(c.reconstruction_module.parameters(), c.max_grad_norm), images.device
            )
        c.tokenizer_optimizer.step()
        c.tokenizer_lr_scheduler.step()
        c.tokenizer_optimizer.zero_grad(set_to_none=True)

        if c.discriminator is not None and c.discriminator_optimizer is not None:
            discriminator_loss, discriminator_logs = c.reconstruction_loss.discriminator_loss(
                images, reconstructions.detach(), discriminator=c.discriminator, global_step=global_step
            )
            logs.update(discriminator_logs)
            if discriminator_loss.requires_grad:
                raise_if_not_finite(accelerator, {"loss/discriminator": discriminator_loss.detach()}, global_step)
                accelerator.backward(discriminator_loss)
                if accelerator.sync_gradients and c.max_grad_norm:
                    accelerator.clip_grad_norm_(c.discriminator.parameters(), c.max_grad_norm)
                c.discriminator_optimizer.step()
                c.discriminator_optimizer.zero_grad(set_to_none=True)
    return logs


def _as_tensor(value, device) -> torch.Tensor:
    return value.detach().float() if torch.is_tensor(value) else torch.tensor(float(value), device=device)


def raise_if_not_finite(accelerator: Accelerator, logs: dict[str, torch.Tensor], global_step: int) -> None:
    """Raises `NonFiniteLossError` on every rank when any logged term is NaN or inf on any rank."""
    names = list(logs)
    values = torch.stack([logs[name].float().reshape(()) for name in names])
    # Every rank must stop together, or the others would hang in the next collective.
    finite = accelerator.reduce(torch.isfinite(values).float(), reduction="sum")
    bad = [name for name, ok in zip(names, finite.tolist()) if ok < accelerator.num_processes]
    if bad:
        raise NonFiniteLossError(
            f"Non-finite loss at step {global_step}: {', '.join(bad)} (values on this rank: "
            f"{ {name: float(logs[name]) for name in bad} }). Nothing was saved over the last good checkpoint; resume "
            "from it with a lower learning rate or stronger gradient clipping (and bf16 rather than fp16)."
        )


def backward_and_step(
    accelerator: Accelerator,
    model: torch.nn.Module,
    loss: torch.Tensor,
    logs: dict[str, torch.Tensor],
    optimizer,
    lr_scheduler,
    max_grad_norm: float,
) -> None:
    """The denoiser update inside `accelerator.accumulate`: backward, clip (logging the norm) on sync steps, step."""
    accelerator.backward(loss)
    if accelerator.sync_gradients:
        logs["grad_norm"] = accelerator.clip_grad_norm_(model.parameters(), max_grad_norm).detach()
    optimizer.step()
    lr_scheduler.step()
    optimizer.zero_grad(set_to_none=True)


def loggable_values(logs: dict[str, torch.Tensor], lr_scheduler, **extra: float) -> dict[str, float]:
    """Logged terms as floats, with the learning rate and any extra values (throughput, counters)."""
    return {**{name: float(value) for name, value in logs.items()}, "lr": lr_scheduler.get_last_lr()[0], **extra}
