"""`flow_matching.py` against LightningDiT's training loss and its 800-epoch sigma schedule, and the DiT config checks.

LightningDiT (hustvl/LightningDiT, MIT) runs time t: 0 = noise -> 1 = data and predicts `data - noise`; we run
sigma = 1 - t and predict `noise - data`. Its formulas are transcribed below, each naming its file and function.
"""

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
import yaml

from diffusers_aligntok.training.config import ConfigError
from diffusers_aligntok.training.distributed import SINGLE_PROCESS, GlobalBatch
from diffusers_aligntok.training.dit_config import FlowMatchingConfig, load_dit_config
from diffusers_aligntok.training.flow_matching import flow_matching_loss, sample_sigmas


REPO_ROOT = Path(__file__).resolve().parents[2]
SEED = 1234


def mean_flat(x: torch.Tensor) -> torch.Tensor:
    """transport/utils.py, `mean_flat`: the mean over all non-batch dimensions."""
    return torch.mean(x, dim=list(range(1, len(x.size()))))


def lightningdit_loss(model_output: torch.Tensor, x0: torch.Tensor, x1: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """transport/transport.py, `Transport.training_losses` (velocity model, `use_cosine_loss`), with `ut` from
    transport/path.py `ICPlan.compute_ut` (d_alpha = 1, d_sigma = -1), and train.py's sum of the two batch means."""
    ut = 1 * x1 + -1 * x0
    loss = mean_flat((model_output - ut) ** 2)
    cos_loss = mean_flat(1 - torch.nn.functional.cosine_similarity(model_output, ut, dim=1))
    mse_loss = loss.mean()
    return cos_loss.mean() + mse_loss, mse_loss, cos_loss.mean()


class StandInModel(torch.nn.Module):
    """A random velocity model with the transformer's call signature; it records its inputs."""

    def __init__(self, channels: int):
        super().__init__()
        generator = torch.Generator().manual_seed(7)
        self.weight = torch.nn.Parameter(torch.randn(channels, channels, 3, 3, generator=generator) * 0.3)
        self.seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, x, timestep, class_labels, force_drop_ids=None):
        self.seen.append((x.detach().clone(), timestep.detach().clone()))
        scale = (1 + timestep / 1000).view(-1, 1, 1, 1) + class_labels.view(-1, 1, 1, 1) * 0.1
        return SimpleNamespace(sample=F.conv2d(x, self.weight, padding=1) * scale + torch.tanh(3 * x))


def test_loss_is_lightningdits_mse_plus_per_token_cosine():
    latents = torch.randn(6, 8, 5, 5, generator=torch.Generator().manual_seed(0)) * 2
    labels = torch.arange(6)
    model = StandInModel(8)
    torch.manual_seed(SEED)
    loss, logs = flow_matching_loss(model, latents, labels, FlowMatchingConfig(velocity_cosine_weight=1.0))
    noisy, timestep = model.seen[0]
    torch.manual_seed(SEED)
    noise = torch.randn_like(latents)  # flow_matching_loss's first draw
    t = (1 - timestep / 1000).view(-1, 1, 1, 1)  # LightningDiT's time of each sample
    # transport/path.py, `ICPlan.compute_xt`: x_t = t x1 + (1 - t) x0, with x0 the noise and x1 the data.
    torch.testing.assert_close(noisy, t * latents + (1 - t) * noise, rtol=0, atol=1e-6)
    with torch.no_grad():
        ours_output = model.forward(noisy, timestep, labels).sample
    reference, reference_mse, reference_cosine = lightningdit_loss(-ours_output, noise, latents)
    differences = [
        float((ours - theirs).abs() / theirs)
        for ours, theirs in (
            (loss.detach(), reference),
            (logs["loss/velocity_mse"], reference_mse),
            (logs["loss/velocity_cosine"], reference_cosine),
        )
    ]
    # Measured: 0 on all three (float32; the same reductions in the same order).
    assert max(differences) < 1e-6, differences
    # The previous form, one cosine per flattened sample, is a different number here.
    per_sample = 1 - F.cosine_similarity((-ours_output).flatten(1), (latents - noise).flatten(1), dim=1).mean()
    assert float((per_sample - reference_cosine).abs()) > 1e-3


def test_cosine_weight_scales_only_the_cosine_term():
    latents, labels = (
        torch.randn(4, 8, 4, 4, generator=torch.Generator().manual_seed(1)),
        torch.zeros(4, dtype=torch.long),
    )
    results = {}
    for weight in (0.0, 1.0, 0.25):
        torch.manual_seed(SEED)
        results[weight] = flow_matching_loss(
            StandInModel(8), latents, labels, FlowMatchingConfig(velocity_cosine_weight=weight)
        )
    (off, off_logs), (one, one_logs), (quarter, _) = results[0.0], results[1.0], results[0.25]
    assert "loss/velocity_cosine" not in off_logs
    torch.testing.assert_close(off, one_logs["loss/velocity_mse"])
    torch.testing.assert_close(quarter, off + 0.25 * one_logs["loss/velocity_cosine"])
    torch.testing.assert_close(one, off + one_logs["loss/velocity_cosine"])


# ---------------------------------------------------------------------------------------------------------------
# Logit-normal until a step, uniform after (LightningDiT's 800-epoch run, its issue #23: use_lognorm off at 600K)
# ---------------------------------------------------------------------------------------------------------------


def lightningdit_t(batch_size: int, use_lognorm: bool) -> torch.Tensor:
    """transport/transport.py, `Transport.sample` with t0 = 0, t1 = 1 (no partial range, no shifted lognorm), drawn
    with torch where it uses scipy (`norm.rvs`) for the logit-normal: the law, not its random stream."""
    if not use_lognorm:
        return torch.rand((batch_size,)) * (1 - 0) + 0
    return 1 / (1 + torch.exp(-torch.normal(0.0, 1.0, size=(batch_size,))))


def test_sigmas_are_logit_normal_before_the_step_and_uniform_from_it():
    config = FlowMatchingConfig(logit_normal_until_step=100)
    draws = {}
    for step in (0, 99, 100, 5000):
        torch.manual_seed(SEED)
        draws[step] = sample_sigmas(config, 4096, "cpu", global_step=step)
    torch.manual_seed(SEED)
    logit_normal = torch.sigmoid(torch.normal(0.0, 1.0, size=(4096,)))
    torch.manual_seed(SEED)
    uniform = torch.rand(4096)
    assert torch.equal(draws[0], logit_normal) and torch.equal(draws[99], logit_normal)
    assert torch.equal(draws[100], uniform) and torch.equal(draws[5000], uniform)
    # Their laws: sigma = 1 - t of LightningDiT's draws has the same law (logit-normal is symmetric about 1/2).
    for ours, use_lognorm in ((draws[99], True), (draws[100], False)):
        torch.manual_seed(SEED + 1)
        theirs = 1 - lightningdit_t(4096, use_lognorm)
        for threshold in (0.05, 0.25, 0.5, 0.75, 0.95):  # P(sigma < x): 1.3% vs 5% at 0.05 under the two laws
            assert abs(float((ours < threshold).float().mean() - (theirs < threshold).float().mean())) < 0.03
    assert float((draws[99] < 0.05).float().mean()) < 0.025 < float((draws[100] < 0.05).float().mean())
    # Without the field, the step changes nothing and need not be given.
    torch.manual_seed(SEED)
    assert torch.equal(sample_sigmas(FlowMatchingConfig(), 4096, "cpu"), logit_normal)


def test_the_switch_needs_the_step():
    with pytest.raises(ValueError, match=r"logit_normal_until_step=100 .*global_step"):
        sample_sigmas(FlowMatchingConfig(logit_normal_until_step=100), 4, "cpu")


@pytest.mark.parametrize("step", [99, 100])
def test_switched_sigmas_are_still_global_batch_draws(step):
    config, local = FlowMatchingConfig(logit_normal_until_step=100, timestep_shift=2.0), 4
    slices = []
    for rank in range(2):
        torch.manual_seed(SEED)
        slices.append(sample_sigmas(config, local, "cpu", GlobalBatch(rank, 2), global_step=step))
    torch.manual_seed(SEED)
    assert torch.equal(torch.cat(slices), sample_sigmas(config, 2 * local, "cpu", SINGLE_PROCESS, global_step=step))
    assert not torch.equal(slices[0], slices[1])


def test_the_loss_draws_its_sigmas_at_the_given_step():
    latents, labels = torch.randn(5, 8, 4, 4), torch.zeros(5, dtype=torch.long)
    config = FlowMatchingConfig(logit_normal_until_step=10)
    for step, expected_draw in (
        (9, lambda: torch.sigmoid(torch.normal(0.0, 1.0, size=(5,)))),
        (10, lambda: torch.rand(5)),
    ):
        model = StandInModel(8)
        torch.manual_seed(SEED)
        flow_matching_loss(model, latents, labels, config, SINGLE_PROCESS, global_step=step)
        torch.manual_seed(SEED)
        torch.randn_like(latents)  # the noise comes first
        torch.testing.assert_close(model.seen[0][1], expected_draw() * 1000, rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------------------------
# Config checks of the new fields
# ---------------------------------------------------------------------------------------------------------------


def _config_with(tmp_path: Path, section: str, **values) -> Path:
    raw = yaml.safe_load((REPO_ROOT / "training" / "configs" / "dit_tiny_cpu.yaml").read_text())
    raw.setdefault(section, {}).update(values)
    path = tmp_path / "dit.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize(
    "section, values, message",
    [
        ("flow", {"timestep_sampling": "logit-normal"}, r"timestep_sampling must be one of .*'logit-normal'"),
        (
            "flow",
            {"timestep_sampling": "uniform", "logit_normal_until_step": 5},
            r"logit_normal_until_step=5 .*'uniform'",
        ),
        ("flow", {"logit_normal_until_step": -1}, r"logit_normal_until_step=-1"),
        ("validation", {"guidance_channels": 0}, r"guidance_channels must be null .*got 0"),
        ("validation", {"guidance_interval": [0.9, 0.1]}, r"guidance_interval must be \[low, high\]"),
        ("validation", {"sampling_shift": 0.0}, r"sampling_shift must be positive"),
        ("validation", {"num_inference_steps": 0}, r"num_inference_steps must be at least 1"),
    ],
)
def test_bad_sampling_and_schedule_values_name_the_key(tmp_path, section, values, message):
    with pytest.raises(ConfigError, match=message):
        load_dit_config(_config_with(tmp_path, section, **values))
