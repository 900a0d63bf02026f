"""One optimisation step of tokenizer training: the generator (tokenizer) update, then the discriminator update."""

from dataclasses import dataclass

import torch
from accelerate import Accelerator

from ..losses import ReconstructionLoss, semantic_preservation_loss
from ..models import AlignedAutoencoderKL


class NonFiniteLossError(FloatingPointError):
    """A loss term became NaN or inf; the run stops without writing over the last good checkpoint."""


@dataclass
class TokenizerTrainingComponents:
    accelerator: Accelerator
    tokenizer: torch.nn.Module  # prepared (possibly DDP-wrapped) AlignedAutoencoderKL
    discriminator: torch.nn.Module | None
    reconstruction_loss: ReconstructionLoss
    tokenizer_optimizer: torch.optim.Optimizer
    tokenizer_lr_scheduler: torch.optim.lr_scheduler.LRScheduler
    discriminator_optimizer: torch.optim.Optimizer | None
    semantic_target: AlignedAutoencoderKL | None = None
    semantic_preservation_weight: float = 0.0
    semantic_preservation_kind: str = "l2"
    max_grad_norm: float | None = 1.0


def tokenizer_training_step(
    components: TokenizerTrainingComponents, images: torch.Tensor, global_step: int
) -> dict[str, torch.Tensor]:
    """Runs one (micro-)batch through both updates under `accelerator.accumulate` and returns every logged term.

    Raises `NonFiniteLossError` naming the step and the term when any loss is NaN or inf, on every rank at once.
    """
    c = components
    accelerator = c.accelerator
    raw_tokenizer: AlignedAutoencoderKL = accelerator.unwrap_model(c.tokenizer)
    models = [c.tokenizer] + ([c.discriminator] if c.discriminator is not None else [])
    with accelerator.accumulate(*models):
        # Autocast wraps only a prepared model's forward; encode/decode are other methods.
        with accelerator.autocast():
            latents = raw_tokenizer.encode(images).latent_dist.mode()
            reconstructions = raw_tokenizer.decode(raw_tokenizer.add_latent_noise(latents)).sample
        generator_loss, logs = c.reconstruction_loss.generator_loss(
            images,
            reconstructions,
            discriminator=c.discriminator,
            global_step=global_step,
            last_layer_weight=raw_tokenizer.decoder.conv_out.weight,
        )
        if c.semantic_target is not None and c.semantic_preservation_weight > 0:
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
                accelerator.clip_grad_norm_(c.tokenizer.parameters(), c.max_grad_norm), images.device
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


def backward_and_step(accelerator: Accelerator, model: torch.nn.Module, loss: torch.Tensor, logs: dict[str, torch.Tensor],
                      optimizer, lr_scheduler, max_grad_norm: float) -> None:
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
