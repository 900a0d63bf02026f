"""Linear-path flow matching with a velocity target, in diffusers' conventions.

`x_sigma = (1 - sigma) * x0 + sigma * noise`, sigma in (0, 1) with sigma = 1 pure noise; the model sees
`timestep = sigma * 1000` and predicts the velocity `noise - x0`, exactly what `FlowMatchEulerDiscreteScheduler`
integrates at sampling time. Training sigmas are logit-normal (diffusers' `compute_density_for_timestep_sampling`),
optionally shifted like the sampler's timestep shift.
"""

import torch
import torch.nn.functional as F
from diffusers.training_utils import compute_density_for_timestep_sampling

from .dit_config import FlowMatchingConfig


NUM_TRAIN_TIMESTEPS = 1000


def sample_sigmas(config: FlowMatchingConfig, batch_size: int, device: torch.device) -> torch.Tensor:
    u = compute_density_for_timestep_sampling(
        weighting_scheme=config.timestep_sampling,
        batch_size=batch_size,
        logit_mean=config.logit_mean,
        logit_std=config.logit_std,
        mode_scale=1.29,
    ).to(device)
    return shift_sigmas(u, config.timestep_shift)


def shift_sigmas(sigmas: torch.Tensor, shift: float) -> torch.Tensor:
    """The SD3 / FLUX timestep shift: `shift * s / (1 + (shift - 1) * s)`; shift 1 is the identity."""
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def flow_matching_loss(
    model: torch.nn.Module,
    latents: torch.Tensor,
    class_labels: torch.Tensor,
    config: FlowMatchingConfig,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Velocity-matching MSE (+ optional velocity-direction cosine loss, as LightningDiT), computed in float32."""
    noise = torch.randn_like(latents)
    sigmas = sample_sigmas(config, latents.shape[0], latents.device).view(-1, 1, 1, 1)
    noisy = (1 - sigmas) * latents + sigmas * noise
    target = (noise - latents).float()
    prediction = model(noisy, sigmas.flatten() * NUM_TRAIN_TIMESTEPS, class_labels).sample.float()
    mse = F.mse_loss(prediction, target)
    logs = {"loss/velocity_mse": mse.detach()}
    loss = mse
    if config.velocity_cosine_weight > 0:
        cosine = 1 - F.cosine_similarity(prediction.flatten(1), target.flatten(1), dim=1).mean()
        loss = loss + config.velocity_cosine_weight * cosine
        logs["loss/velocity_cosine"] = cosine.detach()
    logs["loss/total"] = loss.detach()
    return loss, logs
