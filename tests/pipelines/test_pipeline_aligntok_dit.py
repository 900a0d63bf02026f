"""`AlignTokDiTPipeline`: classifier-free guidance (all channels or the first k, interval), Euler and Heun with any step
count, LightningDiT's time grid, shift and guidance against its code, who denormalises the latents, output types and
sizes, save/load through `model_index.json`, determinism, bad input.

Components are tiny and offline: the "tiny" AlignTok tokenizer (f4, 8 latent channels) and a 2-layer DiT on its 8x8
latents of 32x32 images. The DiT's zero-initialised layers get random values (a fresh DiT predicts exactly 0, which
would make guidance invisible).
"""

import contextlib
import json

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import (
    AutoencoderKL,
    DDPMScheduler,
    DiffusionPipeline,
    FlowMatchEulerDiscreteScheduler,
    FlowMatchHeunDiscreteScheduler,
)

from diffusers_aligntok import AlignedAutoencoderKL, AlignTokDiTPipeline, LightningDiTTransformer2DModel
from diffusers_aligntok.pipelines import classifier_free_guidance

# The transcribed reference (tests/ is on sys.path: pytest puts the first folder without __init__.py there).
from ..conversion.lightningdit_reference import forward_with_cfg as lightningdit_forward_with_cfg


NUM_CLASSES = 10
LATENT_CHANNELS = 8
VAE_FACTOR = 4


def build_tiny_dit(**overrides) -> LightningDiTTransformer2DModel:
    torch.manual_seed(0)
    model = LightningDiTTransformer2DModel(
        **{
            "sample_size": 8,
            "in_channels": LATENT_CHANNELS,
            "hidden_size": 32,
            "num_layers": 2,
            "num_attention_heads": 2,
            "num_classes": NUM_CLASSES,
            **overrides,
        }
    )
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            if not parameter.any():  # zero-initialised: adaLN modulations, output layer, biases
                parameter.copy_(0.3 * torch.randn(parameter.shape, generator=generator))
    return model.eval()


def build_pipe(scheduler=None, vae=None, **dit_overrides) -> AlignTokDiTPipeline:
    torch.manual_seed(0)
    vae = vae if vae is not None else AlignedAutoencoderKL.from_preset("tiny").eval()
    pipe = AlignTokDiTPipeline(
        transformer=build_tiny_dit(**dit_overrides), vae=vae, scheduler=scheduler or FlowMatchEulerDiscreteScheduler()
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def pipe():
    return build_pipe()


def call_kwargs(seed: int = 0, **overrides) -> dict:
    kwargs = {
        "class_labels": [1, 7],
        "num_inference_steps": 3,
        "output_type": "latent",
        "generator": torch.Generator("cpu").manual_seed(seed),
    }
    return {**kwargs, **overrides}


@contextlib.contextmanager
def record_transformer_calls(pipe):
    """Yields a list that gets (batch size, timestep, class labels) of every transformer call inside the block."""
    calls = []

    def hook(_, args, kwargs):
        calls.append((args[0].shape[0], float(args[1][0]), args[2].tolist()))

    handle = pipe.transformer.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield calls
    finally:
        handle.remove()


@contextlib.contextmanager
def record_decode_inputs(vae):
    inputs = []
    original = vae.decode

    def decode(z, *args, **kwargs):
        inputs.append(z.clone())
        return original(z, *args, **kwargs)

    vae.decode = decode
    try:
        yield inputs
    finally:
        del vae.decode


def initial_noise(batch_size=2, height=32, width=32, seed=0):
    shape = (batch_size, LATENT_CHANNELS, height // VAE_FACTOR, width // VAE_FACTOR)
    return torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed))


def reference_euler_sampling(transformer, noise, labels, guidance_scale, num_steps):
    """The sampler written out: Euler from sigma = 1 to 0 on a uniform grid (no shift), guidance on every channel."""
    sigmas = torch.linspace(1.0, 0.0, num_steps + 1).tolist()
    labels = torch.tensor(labels)
    null = torch.full_like(labels, NUM_CLASSES)
    latents = noise.clone()
    for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:]):
        timestep = torch.full((latents.shape[0],), sigma * 1000)
        velocity = transformer(latents, timestep, labels).sample
        if guidance_scale != 1.0:
            unconditional = transformer(latents, timestep, null).sample
            velocity = unconditional + guidance_scale * (velocity - unconditional)
        latents = latents + (sigma_next - sigma) * velocity
    return latents


# ---------------------------------------------------------------------------------------------------------------
# Classifier-free guidance
# ---------------------------------------------------------------------------------------------------------------


def test_guidance_function_with_scale_one_is_the_conditional_prediction():
    conditional, unconditional = torch.randn(2, 2, LATENT_CHANNELS, 4, 4).unbind(0)
    torch.testing.assert_close(classifier_free_guidance(conditional, unconditional, 1.0), conditional)
    torch.testing.assert_close(classifier_free_guidance(conditional, unconditional, 0.0), unconditional)
    guided = classifier_free_guidance(conditional, unconditional, 4.0)
    # Every channel is guided, not only the first 3 (DiT / LightningDiT's bug).
    assert ((guided - conditional).abs().amax(dim=(0, 2, 3)) > 1e-3).all()


def test_scale_one_samples_with_the_conditional_prediction_alone(pipe):
    with record_transformer_calls(pipe) as calls:
        latents = pipe(**call_kwargs(guidance_scale=1.0)).images
    assert [batch for batch, _, _ in calls] == [2, 2, 2]  # no unconditional half
    assert all(labels == [1, 7] for _, _, labels in calls)
    expected = reference_euler_sampling(pipe.transformer, initial_noise(), [1, 7], 1.0, 3)
    torch.testing.assert_close(latents, expected, rtol=1e-5, atol=1e-5)


def test_guidance_batches_conditional_and_null_class_and_guides_every_channel(pipe):
    with record_transformer_calls(pipe) as calls:
        guided = pipe(**call_kwargs(guidance_scale=4.0)).images
    assert [batch for batch, _, _ in calls] == [4, 4, 4]
    assert all(labels == [1, 7, NUM_CLASSES, NUM_CLASSES] for _, _, labels in calls)
    expected = reference_euler_sampling(pipe.transformer, initial_noise(), [1, 7], 4.0, 3)
    torch.testing.assert_close(guided, expected, rtol=1e-4, atol=1e-5)

    unguided = pipe(**call_kwargs(guidance_scale=1.0)).images
    per_channel_change = (guided - unguided).abs().amax(dim=(0, 2, 3))
    assert per_channel_change.shape == (LATENT_CHANNELS,)
    assert (per_channel_change > 1e-3).all(), per_channel_change


def test_guidance_applies_only_while_sigma_is_inside_the_interval(pipe):
    # Euler with 3 steps evaluates at sigma = 1, 2/3, 1/3.
    with record_transformer_calls(pipe) as calls:
        pipe(**call_kwargs(guidance_scale=4.0, guidance_interval=(0.4, 1.0)))
    assert [(batch, round(t)) for batch, t, _ in calls] == [(4, 1000), (4, 667), (2, 333)]

    with record_transformer_calls(pipe) as calls:
        outside = pipe(**call_kwargs(guidance_scale=4.0, guidance_interval=(0.7, 0.9))).images
    assert [batch for batch, _, _ in calls] == [2, 2, 2]
    torch.testing.assert_close(outside, pipe(**call_kwargs(guidance_scale=1.0)).images, rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------------------------
# Schedulers and the timestep shift
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_inference_steps", [1, 3, 7])
@pytest.mark.parametrize(
    "scheduler_class, evaluations",
    [(FlowMatchEulerDiscreteScheduler, lambda n: n), (FlowMatchHeunDiscreteScheduler, lambda n: 2 * n - 1)],
    ids=["euler", "heun"],
)
def test_euler_and_heun_run_with_any_step_count(scheduler_class, evaluations, num_inference_steps):
    pipe = build_pipe(scheduler=scheduler_class(shift=3.0))
    with record_transformer_calls(pipe) as calls:
        images = pipe(
            **call_kwargs(num_inference_steps=num_inference_steps, guidance_scale=2.0, output_type="pt")
        ).images
    assert len(calls) == evaluations(num_inference_steps)
    assert calls[0][1] == 1000.0  # every run starts from pure noise
    assert images.shape == (2, 3, 32, 32) and torch.isfinite(images).all()


def test_the_timestep_shift_comes_from_the_scheduler_config():
    shift = 3.0
    scheduler = FlowMatchEulerDiscreteScheduler(shift=shift)
    pipe = build_pipe(scheduler=scheduler)
    with record_transformer_calls(pipe) as calls:
        pipe(**call_kwargs(num_inference_steps=3))
    # The pipeline hands the scheduler the uniform grid 1, 2/3, 1/3 (LightningDiT's); the scheduler shifts it.
    sigmas = torch.linspace(1.0, 0.0, 4)[:-1]
    shifted = shift * sigmas / (1 + (shift - 1) * sigmas)
    torch.testing.assert_close(torch.tensor([t for _, t, _ in calls]), shifted * 1000)


def test_dynamic_shifting_gets_mu_from_the_token_count():
    scheduler = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_image_seq_len=64, base_shift=0.7)
    pipe = build_pipe(scheduler=scheduler)
    with record_transformer_calls(pipe) as calls:
        pipe(**call_kwargs(num_inference_steps=3))  # 8x8 latents, patch 1: 64 tokens -> mu = base_shift
    sigmas = torch.linspace(1.0, 0.0, 4)[:-1]
    shifted = np.exp(0.7) / (np.exp(0.7) + (1 / sigmas - 1))
    torch.testing.assert_close(torch.tensor([t for _, t, _ in calls]), shifted * 1000)


# ---------------------------------------------------------------------------------------------------------------
# Against LightningDiT (hustvl/LightningDiT, MIT): its formulas transcribed, mapped to our convention
# (its t = 1 - sigma; its model predicts data - noise = minus our velocity; its null class is num_classes).
# ---------------------------------------------------------------------------------------------------------------

LIGHTNINGDIT_TIMESTEP_SHIFT = 0.3  # configs/reproductions/lightningdit_xl_vavae_f16d32_{64,800}ep_cfg.yaml


def lightningdit_time_grid(num_sampling_steps: int, timestep_shift: float) -> torch.Tensor:
    """transport/integrators.py, `ode.__init__`: the t grid its Euler ODE (torchdiffeq, fixed grid) steps through.

    t0 = 0, t1 = 1: `Transport.check_interval` adds no eps for a velocity model on the linear path with an ODE.
    """
    t = torch.linspace(0, 1, num_sampling_steps)
    if timestep_shift > 0:

        def compute_tm(t_n, timestep_shift):
            numerator = timestep_shift * t_n
            denominator = 1 + (timestep_shift - 1) * t_n
            return numerator / denominator

        t = torch.tensor([compute_tm(t_n, timestep_shift) for t_n in t])
    return t


def lightningdit_euler_cfg_sample(forward, z, y, cfg_scale, cfg_interval_start, num_sampling_steps, guided_channels):
    """inference.py (`do_sample`, CFG branch) + torchdiffeq's fixed-grid Euler on the grid above: N points, N - 1
    steps, the drift evaluated at each step's start; the null-class half is dropped at the end."""
    t = lightningdit_time_grid(num_sampling_steps, LIGHTNINGDIT_TIMESTEP_SHIFT)
    x = torch.cat([z, z], 0)
    y = torch.cat([y, torch.full_like(y, NUM_CLASSES)], 0)
    for t_cur, t_next in zip(t[:-1], t[1:]):
        drift = lightningdit_forward_with_cfg(
            forward, x, torch.ones(x.size(0)) * t_cur, y, cfg_scale, True, cfg_interval_start, guided_channels
        )
        x = x + (t_next - t_cur) * drift
    return x.chunk(2, dim=0)[0]


def as_lightningdit_model(transformer):
    """Our transformer in LightningDiT's convention: time t = 1 - sigma, output data - noise."""
    return lambda x, t, y: -transformer(x, 1000 * (1 - t), y).sample


@contextlib.contextmanager
def record_scheduler_steps(scheduler):
    """Yields a list that gets (timestep, sample, velocity) of every `scheduler.step` inside the block."""
    steps = []
    original = scheduler.step

    def step(model_output, timestep, sample, *args, **kwargs):
        steps.append((float(timestep), sample.clone(), model_output.clone()))
        return original(model_output, timestep, sample, *args, **kwargs)

    scheduler.step = step
    try:
        yield steps
    finally:
        del scheduler.step


def test_lightningdits_shift_of_its_time_is_diffusers_shift_of_the_inverse_in_sigma():
    # 1 - s t / (1 + (s - 1) t) with t = 1 - sigma is (1 - t) / (s + (1 - s) sigma) = (sigma / s) / (1 + (1/s - 1) sigma).
    sigma = torch.linspace(0, 1, 10001, dtype=torch.float64)
    s = LIGHTNINGDIT_TIMESTEP_SHIFT
    theirs = 1 - s * (1 - sigma) / (1 + (s - 1) * (1 - sigma))
    shift = 1 / s
    ours = shift * sigma / (1 + (shift - 1) * sigma)  # FlowMatchEulerDiscreteScheduler.set_timesteps
    assert float((theirs - ours).abs().max()) < 1e-12


@pytest.mark.parametrize("num_sampling_steps", [250, 30])
def test_euler_grid_is_lightningdits_shifted_time_grid(num_sampling_steps):
    pipe = build_pipe(scheduler=FlowMatchEulerDiscreteScheduler(shift=1 / LIGHTNINGDIT_TIMESTEP_SHIFT))
    # LightningDiT's num_sampling_steps counts grid points: N points are N - 1 Euler steps.
    with record_transformer_calls(pipe) as calls:
        pipe(**call_kwargs(num_inference_steps=num_sampling_steps - 1, guidance_scale=2.0))
    expected_sigmas = 1 - lightningdit_time_grid(num_sampling_steps, LIGHTNINGDIT_TIMESTEP_SHIFT)
    stepped = pipe.scheduler.sigmas  # what the scheduler stepped through, the final 0 included
    assert stepped.shape == expected_sigmas.shape
    # Measured: 1.5e-7 at 250 and 1.2e-7 at 30 (float32 rounding of two ways to compute the same numbers).
    assert float((stepped - expected_sigmas).abs().max()) < 1e-6
    assert stepped[-1] == 0.0 and expected_sigmas[-1] == 0.0  # both end exactly at clean data
    seen = torch.tensor([timestep for _, timestep, _ in calls])
    assert float((seen / 1000 - expected_sigmas[:-1]).abs().max()) < 1e-6
    # diffusers' own grid (timesteps spaced down to its sigma_min, shifted, then 0) would not (measured: 2.3e-3 at
    # 250, 9.5e-2 at 30).
    default = FlowMatchEulerDiscreteScheduler(shift=1 / LIGHTNINGDIT_TIMESTEP_SHIFT)
    default.set_timesteps(num_sampling_steps - 1)
    assert float((default.sigmas - expected_sigmas).abs().max()) > 1e-3


@pytest.mark.parametrize("guidance_channels", [3, None], ids=["first-3", "all"])
@pytest.mark.parametrize("cfg_scale, cfg_interval_start", [(10.0, 0.10), (6.7, 0.125)], ids=["64ep", "800ep"])
def test_guided_velocity_is_lightningdits_forward_with_cfg(guidance_channels, cfg_scale, cfg_interval_start):
    pipe = build_pipe(scheduler=FlowMatchEulerDiscreteScheduler(shift=1 / LIGHTNINGDIT_TIMESTEP_SHIFT))
    num_sampling_steps = 30
    labels = torch.randint(0, NUM_CLASSES, (3,), generator=torch.Generator().manual_seed(1))
    with record_scheduler_steps(pipe.scheduler) as steps:
        pipe(
            **call_kwargs(
                class_labels=labels,
                num_inference_steps=num_sampling_steps - 1,
                guidance_scale=cfg_scale,
                guidance_interval=(0.0, 1.0 - cfg_interval_start),
                guidance_channels=guidance_channels,
            )
        )
    t_grid = lightningdit_time_grid(num_sampling_steps, LIGHTNINGDIT_TIMESTEP_SHIFT)
    forward = as_lightningdit_model(pipe.transformer)
    assert len(steps) == num_sampling_steps - 1
    differences, guided_steps = [], 0
    with torch.no_grad():
        for (timestep, sample, velocity), t_of_grid in zip(steps, t_grid[:-1]):
            # The reference sees the time our model saw (the grids agree to 1e-7, checked above; at CFG 10 that
            # rounding alone would move the velocity by 2e-5), and decides the interval on the same side as on its grid.
            t_seen = torch.tensor(1 - timestep / 1000, dtype=torch.float64)
            assert bool(t_seen >= cfg_interval_start) == bool(t_of_grid >= cfg_interval_start)
            y = torch.cat([labels, torch.full_like(labels, NUM_CLASSES)])
            reference = lightningdit_forward_with_cfg(
                forward,
                torch.cat([sample, sample]),
                torch.ones(len(y), dtype=torch.float64) * t_seen,
                y,
                cfg_scale,
                True,
                cfg_interval_start,
                guided_channels=guidance_channels if guidance_channels is not None else LATENT_CHANNELS,
            )
            differences.append(float((velocity - -reference.chunk(2)[0]).abs().max()))
            guided_steps += bool(t_seen >= cfg_interval_start)
    # Measured: 0 where guided (one batched pass on both sides), 1.6e-6 where not (we run the conditional half alone,
    # it runs both halves and keeps the conditional one: batch-size rounding of the matmuls).
    assert max(differences) < 1e-5, differences
    assert 0 < guided_steps < len(steps)  # the interval boundary is crossed


@pytest.mark.parametrize("guidance_channels", [3, None], ids=["first-3", "all"])
@pytest.mark.parametrize("cfg_scale, cfg_interval_start", [(10.0, 0.10), (6.7, 0.125)], ids=["64ep", "800ep"])
def test_sampling_is_lightningdits_euler_sampler_with_cfg(guidance_channels, cfg_scale, cfg_interval_start):
    """The whole sampler against LightningDiT's (its reproduction settings at 30 grid points), from the same noise."""
    pipe = build_pipe(scheduler=FlowMatchEulerDiscreteScheduler(shift=1 / LIGHTNINGDIT_TIMESTEP_SHIFT))
    labels = torch.tensor([1, 7, 4])
    noise = initial_noise(batch_size=3, seed=3)
    sampling = {
        "class_labels": labels,
        "latents": noise,
        "generator": None,
        "num_inference_steps": 29,
        "guidance_scale": cfg_scale,
        "guidance_interval": (0.0, 1.0 - cfg_interval_start),
    }
    ours = pipe(**call_kwargs(**sampling, guidance_channels=guidance_channels)).images
    with torch.no_grad():
        theirs = lightningdit_euler_cfg_sample(
            as_lightningdit_model(pipe.transformer),
            noise,
            labels,
            cfg_scale,
            cfg_interval_start,
            30,
            guided_channels=guidance_channels if guidance_channels is not None else LATENT_CHANNELS,
        )
    # Measured: at most 5.2e-6 on latents of magnitude ~7 (the 1e-7 grid rounding, amplified by the guidance scale).
    assert float((ours - theirs).abs().max()) < 2e-5
    unguided_rest = pipe(**call_kwargs(**sampling, guidance_channels=None)).images
    if guidance_channels == 3:  # guiding 3 channels is not guiding all 8
        assert float((ours - unguided_rest).abs().max()) > 1e-2


def test_guidance_channels_guide_the_first_k_and_keep_the_conditional_rest():
    conditional, unconditional = torch.randn(2, 2, LATENT_CHANNELS, 4, 4).unbind(0)
    guided = classifier_free_guidance(conditional, unconditional, 4.0, guidance_channels=3)
    torch.testing.assert_close(guided[:, :3], unconditional[:, :3] + 4.0 * (conditional - unconditional)[:, :3])
    torch.testing.assert_close(guided[:, 3:], conditional[:, 3:], rtol=0, atol=0)
    torch.testing.assert_close(
        classifier_free_guidance(conditional, unconditional, 4.0, LATENT_CHANNELS),
        classifier_free_guidance(conditional, unconditional, 4.0),
    )
    with pytest.raises(ValueError, match=r"guidance_channels=9 .*\[1, 8\]"):
        classifier_free_guidance(conditional, unconditional, 4.0, guidance_channels=9)


@pytest.mark.parametrize("guidance_channels", [0, 9, 2.5, True])
def test_bad_guidance_channels_are_rejected_naming_the_range(pipe, guidance_channels):
    with pytest.raises(ValueError, match=rf"guidance_channels={guidance_channels!r} .*\[1, 8\]"):
        pipe(**call_kwargs(guidance_scale=2.0, guidance_channels=guidance_channels))


# ---------------------------------------------------------------------------------------------------------------
# Decoding: denormalisation, force_upcast, output types and sizes
# ---------------------------------------------------------------------------------------------------------------


def test_latents_are_denormalised_by_the_aligntok_vae_before_decoding():
    vae = AlignedAutoencoderKL.from_preset(
        "tiny", scaling_factor=0.5, latents_mean=[0.1 * i for i in range(8)], latents_std=[1.0 + i for i in range(8)]
    ).eval()
    pipe = build_pipe(vae=vae)
    latents = pipe(**call_kwargs()).images
    with record_decode_inputs(pipe.vae) as decoded:
        pipe(**call_kwargs(output_type="pt"))
    torch.testing.assert_close(decoded[0], vae.denormalize_latents(latents))
    assert not torch.allclose(decoded[0], latents)


def build_plain_autoencoder_kl(**config) -> AutoencoderKL:
    torch.manual_seed(0)
    return AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(8, 8, 8),
        latent_channels=LATENT_CHANNELS,
        norm_num_groups=4,
        layers_per_block=1,
        **config,
    ).eval()


@pytest.mark.parametrize(
    "config, expected",
    [
        ({"scaling_factor": 2.0, "shift_factor": 0.5}, lambda z: z / 2.0 + 0.5),
        ({"scaling_factor": 2.0, "shift_factor": None}, lambda z: z / 2.0),
        (
            {"scaling_factor": 2.0, "latents_mean": [0.5] * 8, "latents_std": [3.0] * 8},
            lambda z: z * 3.0 / 2.0 + 0.5,
        ),
    ],
    ids=["scaling-and-shift", "shift-none", "mean-and-std"],
)
def test_a_plain_autoencoder_kl_gets_its_config_factors_undone(config, expected):
    pipe = build_pipe(vae=build_plain_autoencoder_kl(**config))
    latents = pipe(**call_kwargs()).images
    with record_decode_inputs(pipe.vae) as decoded:
        images = pipe(**call_kwargs(output_type="pt")).images
    torch.testing.assert_close(decoded[0], expected(latents))
    assert images.shape == (2, 3, 32, 32)


def test_float16_vae_with_force_upcast_decodes_in_float32():
    pipe = build_pipe()
    pipe.vae.to(torch.float16)
    assert pipe.vae.config.force_upcast
    with record_decode_inputs(pipe.vae) as decoded:
        images = pipe(**call_kwargs(output_type="pt")).images
    assert decoded[0].dtype == torch.float32
    assert pipe.vae.dtype == torch.float16  # put back afterwards
    assert torch.isfinite(images).all()


@pytest.mark.parametrize("height, width", [(32, 32), (32, 48), (48, 16)])
def test_output_types_and_sizes(pipe, height, width):
    kwargs = {"height": height, "width": width, "guidance_scale": 2.0}
    pil = pipe(**call_kwargs(output_type="pil", **kwargs)).images
    assert len(pil) == 2 and all(isinstance(image, PIL.Image.Image) and image.size == (width, height) for image in pil)
    array = pipe(**call_kwargs(output_type="np", **kwargs)).images
    assert isinstance(array, np.ndarray) and array.shape == (2, height, width, 3)
    assert 0.0 <= array.min() and array.max() <= 1.0
    tensor = pipe(**call_kwargs(output_type="pt", **kwargs)).images
    assert torch.is_tensor(tensor) and tensor.shape == (2, 3, height, width)
    np.testing.assert_allclose(tensor.permute(0, 2, 3, 1).numpy(), array, atol=1e-6)
    latents = pipe(**call_kwargs(output_type="latent", **kwargs)).images
    assert latents.shape == (2, LATENT_CHANNELS, height // VAE_FACTOR, width // VAE_FACTOR)
    (as_tuple,) = pipe(**call_kwargs(output_type="pt", return_dict=False, **kwargs))
    torch.testing.assert_close(as_tuple, tensor)


def test_default_size_and_label_forms(pipe):
    # sample_size 8 x VAE factor 4; an int, a list and a tensor of labels are all accepted.
    single = pipe(**call_kwargs(class_labels=3, output_type="pt")).images
    assert single.shape == (1, 3, 32, 32)
    from_tensor = pipe(**call_kwargs(class_labels=torch.tensor([1, 7]))).images
    torch.testing.assert_close(from_tensor, pipe(**call_kwargs()).images, rtol=0, atol=0)


def test_given_latents_replace_the_sampled_noise(pipe):
    noise = initial_noise(height=32, width=48, seed=5)
    from_latents = pipe(**call_kwargs(latents=noise, generator=None)).images
    assert from_latents.shape == noise.shape
    seeded = pipe(**call_kwargs(seed=5, height=32, width=48)).images
    torch.testing.assert_close(from_latents, seeded, rtol=0, atol=0)


def test_a_seeded_generator_makes_runs_reproducible(pipe):
    first = pipe(**call_kwargs(seed=11, guidance_scale=3.0, output_type="pt")).images
    second = pipe(**call_kwargs(seed=11, guidance_scale=3.0, output_type="pt")).images
    other = pipe(**call_kwargs(seed=12, guidance_scale=3.0, output_type="pt")).images
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    assert not torch.allclose(first, other)


# ---------------------------------------------------------------------------------------------------------------
# Save / load
# ---------------------------------------------------------------------------------------------------------------


def test_save_pretrained_and_diffusion_pipeline_from_pretrained_round_trip(tmp_path):
    pipe = build_pipe(scheduler=FlowMatchHeunDiscreteScheduler(shift=2.0))
    pipe.save_pretrained(tmp_path)
    model_index = json.loads((tmp_path / "model_index.json").read_text())
    assert model_index["_class_name"] == "AlignTokDiTPipeline"
    assert model_index["transformer"] == ["diffusers_aligntok", "LightningDiTTransformer2DModel"]
    assert model_index["vae"] == ["diffusers_aligntok", "AlignedAutoencoderKL"]
    assert model_index["scheduler"] == ["diffusers", "FlowMatchHeunDiscreteScheduler"]

    for loader in (DiffusionPipeline, AlignTokDiTPipeline):
        loaded = loader.from_pretrained(tmp_path)
        loaded.set_progress_bar_config(disable=True)
        assert isinstance(loaded, AlignTokDiTPipeline)
        assert isinstance(loaded.transformer, LightningDiTTransformer2DModel)
        assert isinstance(loaded.vae, AlignedAutoencoderKL)
        assert isinstance(loaded.scheduler, FlowMatchHeunDiscreteScheduler) and loaded.scheduler.config.shift == 2.0
        expected = pipe(**call_kwargs(seed=4, guidance_scale=2.0, output_type="pt")).images
        images = loaded(**call_kwargs(seed=4, guidance_scale=2.0, output_type="pt")).images
        torch.testing.assert_close(images, expected, rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------------------------


def test_out_of_range_class_ids_name_the_id_and_num_classes(pipe):
    with pytest.raises(ValueError, match=r"Class id 1000 .*num_classes=10"):
        pipe(**call_kwargs(class_labels=[1, 1000]))
    with pytest.raises(ValueError, match=r"Class id -1 .*num_classes=10"):
        pipe(**call_kwargs(class_labels=-1))
    with pytest.raises(ValueError, match=r"Class id 10 .*num_classes=10"):  # the null class is internal
        pipe(**call_kwargs(class_labels=torch.tensor([10])))
    with pytest.raises(TypeError, match="integer"):
        pipe(**call_kwargs(class_labels=[1.5]))
    with pytest.raises(ValueError, match="empty"):
        pipe(**call_kwargs(class_labels=[]))


def test_latent_and_size_mismatches_name_both_sides(pipe):
    with pytest.raises(ValueError, match=r"latents have shape \(2, 4, 8, 8\), expected \(2, 8, 8, 8\)"):
        pipe(**call_kwargs(latents=torch.randn(2, 4, 8, 8)))
    with pytest.raises(ValueError, match=r"latents have shape \(3, 8, 8, 8\), expected \(2, 8, 8, 8\)"):
        pipe(**call_kwargs(latents=torch.randn(3, 8, 8, 8)))
    with pytest.raises(ValueError, match=r"height=30 and width=32 must be multiples of 4"):
        pipe(**call_kwargs(height=30, width=32))
    patch_2 = build_pipe(patch_size=2)
    with pytest.raises(ValueError, match=r"multiples of 8 .*patch_size 2"):
        patch_2(**call_kwargs(height=36, width=32))
    mismatched = build_pipe(in_channels=4)
    with pytest.raises(ValueError, match=r"latent_channels=8 but the transformer expects in_channels=4"):
        mismatched(**call_kwargs())


@pytest.mark.parametrize("interval", [(0.8, 0.2), (-0.1, 0.5), (0.0, 1.5), (0.5,), "all"])
def test_bad_guidance_intervals_are_rejected(pipe, interval):
    with pytest.raises(ValueError, match="guidance_interval"):
        pipe(**call_kwargs(guidance_interval=interval))


def test_schedulers_without_the_flow_matching_interface_are_rejected():
    with pytest.raises(ValueError, match=r"flow-matching scheduler .*got DDPMScheduler"):
        build_pipe(scheduler=DDPMScheduler())(**call_kwargs())
    with pytest.raises(ValueError, match=r"shift is -1.0"):
        build_pipe(scheduler=FlowMatchEulerDiscreteScheduler(shift=-1.0))(**call_kwargs())
    no_base_shift = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_shift=None)
    with pytest.raises(ValueError, match=r"needs `mu`.*\['base_shift'\] are missing"):
        build_pipe(scheduler=no_base_shift)(**call_kwargs())
    with pytest.raises(ValueError, match="num_inference_steps"):
        build_pipe()(**call_kwargs(num_inference_steps=0))
