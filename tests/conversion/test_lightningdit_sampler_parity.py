"""Sampler-level parity: a converted `AlignTokDiTPipeline` samples what LightningDiT's inference.py samples.

The reference is LightningDiT's own sampler as `inference.py` runs it (`lightningdit_reference.inference_py_sample`:
transport's ODE Euler sampler on its shifted time grid, `forward_with_cfg` with `cfg_interval=True`, the doubled batch
with the null class 1000), on the reference model whose weights a train.py-layout checkpoint carries into
`convert_lightningdit_pipeline`. Our side is the pipeline called as its docstring says LightningDiT's settings map:
`num_inference_steps = num_sampling_steps - 1`, `guidance_channels=3`,
`guidance_interval=(0.0, 1.0 - cfg_interval_start)`, the scheduler's shift from `timestep_shift` (done by the
converter), and the same initial noise as `latents=`
(LightningDiT's x at t = 0; the pipeline uses it as given, with no `init_noise_sigma` scaling).

Both outputs are the *normalised* latents: `output_type="latent"` returns the transformer's latents before
denormalisation, and `inference_py_sample` stops before inference.py's `samples * latent_std / latent_multiplier +
latent_mean`. One test also follows the latents into `vae.decode` against that formula.

The tiny 2-block model (8 latent channels, 8x8 latents) gets strengthened class, time and output weights so that
guidance, its interval and the time grid all move the result far more than the tolerance; the negative controls in
`test_the_comparison_tells_apart_the_settings_it_checks` make sure of it.
"""

import contextlib

import pytest
import torch

from diffusers_aligntok import AlignedAutoencoderKL
from diffusers_aligntok.conversion import convert_lightningdit_pipeline

from .lightningdit_checkpoints import (
    TINY_ARCHITECTURE,
    TINY_CHANNELS,
    TINY_INPUT_SIZE,
    build_reference,
    relative_difference,
    save_train_py_checkpoint,
)
from .lightningdit_reference import inference_py_sample, ode_time_grid
from .test_convert_lightningdit_pipeline import record_decode_inputs, write_latents_stats


# ImageNet's class count: inference.py hard-codes the null class as 1000.
NUM_CLASSES = 1000
TIMESTEP_SHIFT = 0.3  # both published configs
# configs/reproductions/lightningdit_xl_vavae_f16d32_{64ep,800ep}_cfg.yaml: (cfg_scale, cfg_interval_start).
GUIDANCE_CONFIGS = {"64ep": (10.0, 0.10), "800ep": (6.7, 0.125)}
# LightningDiT's sample.num_sampling_steps (grid points): the published 250, and two smaller counts. None puts a grid
# point exactly on cfg_interval_start (that happens when num_sampling_steps - 1 is a multiple of 37 for 0.10 or of 31
# for 0.125, where float rounding alone would decide whether that step is guided); `_check_no_tie` makes sure.
NUM_SAMPLING_STEPS = (8, 31, 250)
LABELS = [207, 3, 999]
TOLERANCE = 1e-4


def strengthen_conditioning(model: torch.nn.Module) -> torch.nn.Module:
    """Scales up the class table (std 0.02 -> 1), the timestep MLP and the output layer of a `build_reference` model.

    With the initialisation's small class and timestep weights the velocity barely depends on the class or the time
    (the conditional-unconditional gap is ~1e-3 of the velocity), so guidance settings would change the samples by less
    than the tolerance. After this the velocity is O(1), the gap ~0.1-0.3 and the time dependence of the same order.
    """
    with torch.no_grad():
        model.y_embedder.embedding_table.weight.mul_(50.0)
        model.t_embedder.mlp[0].weight.mul_(25.0)
        model.t_embedder.mlp[2].weight.mul_(25.0)
        model.final_layer.linear.weight.mul_(2.0)
        model.final_layer.linear.bias.mul_(2.0)
    return model


@pytest.fixture(scope="module")
def reference():
    return strengthen_conditioning(
        build_reference(TINY_ARCHITECTURE, TINY_INPUT_SIZE, TINY_CHANNELS, NUM_CLASSES, seed=3)
    )


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, reference):
    return save_train_py_checkpoint(tmp_path_factory.mktemp("lightningdit") / "0080000.pt", reference)


def convert(checkpoint, vae=None, stats_path=None):
    pipeline = convert_lightningdit_pipeline(
        checkpoint,
        AlignedAutoencoderKL.from_preset("tiny").eval() if vae is None else vae,
        latents_stats_path=stats_path,
        model_type=TINY_ARCHITECTURE,
        timestep_shift=TIMESTEP_SHIFT,
        num_classes=NUM_CLASSES,
        input_size=TINY_INPUT_SIZE,
    )
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


@pytest.fixture(scope="module")
def pipeline(checkpoint):
    return convert(checkpoint)


def initial_noise(seed: int = 0) -> torch.Tensor:
    """inference.py's `z = torch.randn(n, in_channels, latent_size, latent_size)`."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(len(LABELS), TINY_CHANNELS, TINY_INPUT_SIZE, TINY_INPUT_SIZE, generator=generator)


def sample_ours(pipeline, noise, cfg_scale, cfg_interval_start, num_sampling_steps, **overrides):
    settings = {
        "class_labels": LABELS,
        "guidance_scale": cfg_scale,
        "guidance_channels": 3,
        "guidance_interval": (0.0, 1.0 - cfg_interval_start),
        "num_inference_steps": num_sampling_steps - 1,  # LightningDiT counts grid points (see the pipeline docstring)
        "latents": noise,
        "output_type": "latent",
    }
    settings.update(overrides)
    return pipeline(**settings).images


def sample_reference(reference, noise, cfg_scale, cfg_interval_start, num_sampling_steps):
    return inference_py_sample(
        reference, noise, torch.tensor(LABELS), cfg_scale, cfg_interval_start, num_sampling_steps, TIMESTEP_SHIFT
    )


def _check_no_tie(cfg_interval_start, num_sampling_steps):
    grid = ode_time_grid(num_sampling_steps, TIMESTEP_SHIFT)
    assert (grid - cfg_interval_start).abs().min() > 1e-4, "a grid point sits on cfg_interval_start"


@contextlib.contextmanager
def record_calls(module, method="forward"):
    """Records `(batch size, first time argument)` of each call of `module.<method>` (an instance-level wrapper, so
    that it also sees `forward_with_cfg`, which calls `self.forward` past any hooks)."""
    calls = []
    original = getattr(module, method)

    def wrapper(x, t, *args, **kwargs):
        calls.append((x.shape[0], float(t.reshape(-1)[0])))
        return original(x, t, *args, **kwargs)

    setattr(module, method, wrapper)
    try:
        yield calls
    finally:
        delattr(module, method)


@pytest.mark.parametrize("num_sampling_steps", NUM_SAMPLING_STEPS)
@pytest.mark.parametrize("config", list(GUIDANCE_CONFIGS))
def test_the_pipeline_reproduces_lightningdits_ode_euler_sampler(pipeline, reference, config, num_sampling_steps):
    cfg_scale, cfg_interval_start = GUIDANCE_CONFIGS[config]
    _check_no_tie(cfg_interval_start, num_sampling_steps)
    assert pipeline.transformer.config.num_classes == NUM_CLASSES  # so our null label is inference.py's 1000
    noise = initial_noise()
    noise_copy = noise.clone()

    with record_calls(pipeline.transformer) as our_calls:
        ours = sample_ours(pipeline, noise, cfg_scale, cfg_interval_start, num_sampling_steps)
    with record_calls(reference, "forward_with_cfg") as reference_calls:
        expected = sample_reference(reference, noise, cfg_scale, cfg_interval_start, num_sampling_steps)

    torch.testing.assert_close(noise, noise_copy, rtol=0, atol=0)  # our pipeline left the caller's noise alone
    # The same number of model evaluations, guided at the same steps: LightningDiT evaluates the doubled batch every
    # step and guides when t >= cfg_interval_start; we run the doubled batch only when guiding.
    assert len(our_calls) == len(reference_calls) == num_sampling_steps - 1
    guided_reference = [t >= cfg_interval_start for _, t in reference_calls]
    guided_ours = [batch == 2 * len(LABELS) for batch, _ in our_calls]
    assert guided_ours == guided_reference and any(guided_ours) and not all(guided_ours)
    # Our transformer sees timestep = 1000 * sigma = 1000 * (1 - t) on LightningDiT's shifted grid.
    reference_times = torch.tensor([t for _, t in reference_calls])
    our_times = 1.0 - torch.tensor([timestep for _, timestep in our_calls]) / 1000.0
    torch.testing.assert_close(our_times, reference_times, rtol=0, atol=1e-6)

    assert ours.shape == expected.shape == noise.shape
    difference = relative_difference(ours, expected)
    print(f"{config} cfg_scale={cfg_scale} num_sampling_steps={num_sampling_steps}: max rel. diff. {difference:.2e}")
    assert difference < TOLERANCE
    # The sampler moved the latents far from the noise, so the match is not just that of the shared starting point.
    assert relative_difference(expected, noise) > 0.3
    assert relative_difference(ours - noise, expected - noise) < TOLERANCE


def test_the_comparison_tells_apart_the_settings_it_checks(pipeline, checkpoint, reference):
    """Each mapped setting, got wrong, moves the latents far more than the tolerance (so the test above has teeth)."""
    cfg_scale, cfg_interval_start = GUIDANCE_CONFIGS["64ep"]
    num_sampling_steps = 31
    noise = initial_noise()
    expected = sample_reference(reference, noise, cfg_scale, cfg_interval_start, num_sampling_steps)
    wrong_settings = {
        "all channels guided": {"guidance_channels": None},
        "no guidance interval": {"guidance_interval": (0.0, 1.0)},
        "the interval at the noisy end": {"guidance_interval": (1.0 - cfg_interval_start, 1.0)},
        "num_inference_steps = num_sampling_steps": {"num_inference_steps": num_sampling_steps},
        "other class labels": {"class_labels": [LABELS[1], LABELS[0], LABELS[2]]},
    }
    differences = {
        name: relative_difference(
            sample_ours(pipeline, noise, cfg_scale, cfg_interval_start, num_sampling_steps, **override), expected
        )
        for name, override in wrong_settings.items()
    }
    # And LightningDiT's grid without its timestep shift (a converted pipeline with timestep_shift=0, i.e. shift 1).
    unshifted = convert_lightningdit_pipeline(
        checkpoint,
        AlignedAutoencoderKL.from_preset("tiny").eval(),
        model_type=TINY_ARCHITECTURE,
        timestep_shift=0.0,
        num_classes=NUM_CLASSES,
        input_size=TINY_INPUT_SIZE,
    )
    unshifted.set_progress_bar_config(disable=True)
    differences["no timestep shift"] = relative_difference(
        sample_ours(unshifted, noise, cfg_scale, cfg_interval_start, num_sampling_steps), expected
    )
    print({name: f"{difference:.2e}" for name, difference in differences.items()})
    assert all(difference > 20 * TOLERANCE for difference in differences.values()), differences


def test_the_decoded_latents_are_inference_pys_denormalised_samples(tmp_path, checkpoint, reference):
    """Past `output_type="latent"`: what reaches `vae.decode` is `samples * latent_std / latent_multiplier + mean`."""
    stats = write_latents_stats(tmp_path / "latents_stats.pt", num_channels=TINY_CHANNELS)
    vae = AlignedAutoencoderKL.from_preset("tiny").eval()
    pipeline = convert(checkpoint, vae, tmp_path / "latents_stats.pt")
    cfg_scale, cfg_interval_start = GUIDANCE_CONFIGS["64ep"]
    num_sampling_steps = 8
    noise = initial_noise(seed=1)
    with record_decode_inputs(vae) as decoded:
        images = sample_ours(pipeline, noise, cfg_scale, cfg_interval_start, num_sampling_steps, output_type="pt")
    assert images.shape == (len(LABELS), 3, 32, 32)
    samples = sample_reference(reference, noise, cfg_scale, cfg_interval_start, num_sampling_steps)
    latent_multiplier = 1.0  # the published data.latent_multiplier, the converter's default
    expected = (samples * stats["std"]) / latent_multiplier + stats["mean"]
    (decoded,) = decoded
    assert relative_difference(decoded, expected) < TOLERANCE


def test_a_grid_point_on_the_interval_start_is_guided_as_lightningdit_does(pipeline, reference):
    """At num_sampling_steps=38 a grid point lies on cfg_interval_start=0.10 in exact arithmetic; LightningDiT's float32
    t there is 0.10000002 (guided), our sigma 0.90000004 (just past 1 - start): the edge tolerance must guide it too."""
    cfg_scale, cfg_interval_start = GUIDANCE_CONFIGS["64ep"]
    num_sampling_steps = 38
    assert (ode_time_grid(num_sampling_steps, TIMESTEP_SHIFT) - cfg_interval_start).abs().min() < 1e-6  # the tie
    noise = initial_noise()
    ours = sample_ours(pipeline, noise, cfg_scale, cfg_interval_start, num_sampling_steps)
    expected = sample_reference(reference, noise, cfg_scale, cfg_interval_start, num_sampling_steps)
    assert relative_difference(ours, expected) < TOLERANCE
