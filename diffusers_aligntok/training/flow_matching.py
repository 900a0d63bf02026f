"""Linear-path flow matching with a velocity target, in diffusers' conventions.

`x_sigma = (1 - sigma) * x0 + sigma * noise`, sigma in (0, 1) with sigma = 1 pure noise; the model sees
`timestep = sigma * 1000` and predicts the velocity `noise - x0`, exactly what `FlowMatchEulerDiscreteScheduler`
integrates at sampling time. Training sigmas are logit-normal (diffusers' `compute_density_for_timestep_sampling`),
optionally uniform from a given step on (LightningDiT's 800-epoch run), optionally shifted like the sampler's shift.

Against LightningDiT's `transport/transport.py` (`Transport.training_losses`; its t = 1 - sigma, its velocity
`data - noise` = minus ours): the loss is its `mean_flat((v - u)^2)` plus `mean_flat(1 - cosine_similarity(v, u, dim=1))`
(the cosine over channels at each latent position), both averaged over the batch; flipping both velocities changes
neither term, and sigmoid(N(0, 1)) is symmetric, so logit-normal t and logit-normal sigma are the same law.

Every random tensor of a step (noise, sigmas, the label-dropout mask) is drawn for the whole data-parallel global
batch and sliced to this rank (`distributed.GlobalBatch`), so N ranks at batch b train what one process at N * b does.
"""

import torch
import torch.nn.functional as F
from accelerate.utils import extract_model_from_parallel
from diffusers.training_utils import compute_density_for_timestep_sampling

from .distributed import SINGLE_PROCESS, GlobalBatch
from .dit_config import FlowMatchingConfig


NUM_TRAIN_TIMESTEPS = 1000


def sample_sigmas(
    config: FlowMatchingConfig,
    batch_size: int,
    device: torch.device,
    global_batch: GlobalBatch = SINGLE_PROCESS,
    global_step: int | None = None,
) -> torch.Tensor:
    """`batch_size` (this rank's batch) training sigmas: this rank's rows of a draw for the global batch.

    `global_step` is the number of optimiser steps already taken (the loop's `global_step`); it is needed only when
    `config.logit_normal_until_step` is set, from which step on the sigmas are uniform instead of logit-normal.
    """
    scheme = timestep_sampling_at(config, global_step)
    u = global_batch.draw(
        lambda size: compute_density_for_timestep_sampling(
            weighting_scheme=scheme,
            batch_size=size,
            logit_mean=config.logit_mean,
            logit_std=config.logit_std,
            mode_scale=1.29,
        ),
        batch_size,
    ).to(device)
    return shift_sigmas(u, config.timestep_shift)


def timestep_sampling_at(config: FlowMatchingConfig, global_step: int | None) -> str:
    """The sigma density at `global_step`: `config.timestep_sampling`, or "uniform" once `logit_normal_until_step`
    optimiser steps are done (LightningDiT switched `use_lognorm` off at 600K steps of its 800-epoch run)."""
    until = config.logit_normal_until_step
    if until is None:
        return config.timestep_sampling
    if global_step is None:
        raise ValueError(
            f"flow.logit_normal_until_step={until} switches the sigma density at a training step, so sample_sigmas / "
            "flow_matching_loss need `global_step` (the number of optimiser steps already taken); pass it."
        )
    # LightningDiT's uniform branch is `torch.rand` in its time; 1 - U(0, 1) is U(0, 1) in sigma.
    return "uniform" if global_step >= until else config.timestep_sampling


def shift_sigmas(sigmas: torch.Tensor, shift: float) -> torch.Tensor:
    """The SD3 / FLUX timestep shift: `shift * s / (1 + (shift - 1) * s)`; shift 1 is the identity."""
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def flow_matching_loss(
    model: torch.nn.Module,
    latents: torch.Tensor,
    class_labels: torch.Tensor,
    config: FlowMatchingConfig,
    global_batch: GlobalBatch = SINGLE_PROCESS,
    global_step: int | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Velocity-matching MSE (+ optional velocity-direction cosine loss, as LightningDiT), computed in float32.

    `loss = mean((v - u)^2) + velocity_cosine_weight * mean(1 - cos(v, u))`, the cosine taken over the channels of
    each latent position and both means over every sample and position: LightningDiT's loss with weight 1.

    `global_batch` places this rank's `latents` in the step's global batch (`GlobalBatch.of(accelerator)`); the
    noise, sigmas and (in training mode) the label-dropout mask are that global batch's draws at this rank's rows.
    `global_step` (optimiser steps already taken) picks the sigma density when `config.logit_normal_until_step` is set.
    """
    batch_size = latents.shape[0]
    noise = global_batch.randn(latents.shape, device=latents.device, dtype=latents.dtype)
    sigmas = sample_sigmas(config, batch_size, latents.device, global_batch, global_step).view(-1, 1, 1, 1)
    # Drawn here rather than inside the model's label embedder (which would draw for the local batch only), at the
    # same point of the random stream: after the noise and sigmas, before the forward.
    drop_labels = label_dropout_mask(model, batch_size, class_labels.device, global_batch)
    noisy = (1 - sigmas) * latents + sigmas * noise
    target = (noise - latents).float()
    prediction = model(
        noisy, sigmas.flatten() * NUM_TRAIN_TIMESTEPS, class_labels, force_drop_ids=drop_labels
    ).sample.float()
    mse = F.mse_loss(prediction, target)
    logs = {"loss/velocity_mse": mse.detach()}
    loss = mse
    if config.velocity_cosine_weight > 0:
        # Per latent position over channels (dim=1), then the mean over samples and positions, as LightningDiT; one
        # cosine of whole flattened samples would weigh a position by its velocity's norm instead.
        cosine = (1 - F.cosine_similarity(prediction, target, dim=1)).mean()
        loss = loss + config.velocity_cosine_weight * cosine
        logs["loss/velocity_cosine"] = cosine.detach()
    logs["loss/total"] = loss.detach()
    return loss, logs


def label_dropout_mask(
    model: torch.nn.Module, batch_size: int, device: torch.device, global_batch: GlobalBatch = SINGLE_PROCESS
) -> torch.Tensor | None:
    """The classifier-free-guidance label dropout the model's `class_embedder` would apply now, as a global-batch draw.

    `None` (no dropout, nothing drawn) unless the embedder is in training mode with `dropout_prob > 0`, exactly when
    diffusers' `LabelEmbedding` would draw `torch.rand(batch) < dropout_prob` itself; the result goes to the model's
    `force_drop_ids`. With one process it is that same draw.
    """
    embedder = getattr(extract_model_from_parallel(model), "class_embedder", None)
    probability = getattr(embedder, "dropout_prob", 0.0)
    if embedder is None or not embedder.training or not probability > 0:
        return None
    return global_batch.rand((batch_size,), device=device) < probability
