"""`convert_lightningdit_pipeline` and `aligntok-convert-lightningdit`: LightningDiT's latent statistics in the VAE
config (so the pipeline denormalises as LightningDiT's inference.py does), its timestep shift as the scheduler's, and
a saved pipeline that loads back with `DiffusionPipeline.from_pretrained`.

Everything is tiny: the "tiny" AlignTok tokenizer (f4, 8 latent channels) or a tiny diffusers `AutoencoderKL`, and a
2-block LightningDiT on their 8x8 latents. The sampler-level comparison with LightningDiT's own ODE Euler sampler
(`forward_with_cfg`, its time grid and timestep shift) is in `test_lightningdit_sampler_parity.py`.
"""

import contextlib
import importlib.metadata
import json

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, DiffusionPipeline, FlowMatchEulerDiscreteScheduler
from diffusers.utils import logging as diffusers_logging

import diffusers_aligntok
from diffusers_aligntok import AlignedAutoencoderKL, AlignTokDiTPipeline
from diffusers_aligntok.conversion import (
    LIGHTNINGDIT_MODEL_TYPES,
    convert_lightningdit_pipeline,
    lightningdit_scheduler,
    load_lightningdit_latent_stats,
)
from diffusers_aligntok.conversion.lightningdit_cli import load_vae, main

from .lightningdit_checkpoints import (
    TINY_ARCHITECTURE,
    TINY_CHANNELS,
    TINY_INPUT_SIZE,
    TINY_NUM_CLASSES,
    build_reference,
    reference_inputs,
    relative_difference,
    save_train_py_checkpoint,
)


def write_latents_stats(path, num_channels=TINY_CHANNELS, seed=0):
    """A latents_stats.pt as LightningDiT's ImgLatentDataset writes it: mean and std of shape (1, C, 1, 1)."""
    generator = torch.Generator().manual_seed(seed)
    stats = {
        "mean": torch.randn(1, num_channels, 1, 1, generator=generator),
        "std": 0.5 + torch.rand(1, num_channels, 1, 1, generator=generator),
    }
    torch.save(stats, path)
    return stats


def build_tiny_autoencoder_kl(latent_channels: int = TINY_CHANNELS) -> AutoencoderKL:
    torch.manual_seed(0)
    return AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(8, 8, 8),
        latent_channels=latent_channels,
        norm_num_groups=4,
        layers_per_block=1,
    ).eval()


@pytest.fixture(scope="module")
def tiny_reference():
    return build_reference(TINY_ARCHITECTURE, TINY_INPUT_SIZE, TINY_CHANNELS, TINY_NUM_CLASSES)


@pytest.fixture
def tiny_files(tmp_path, tiny_reference):
    checkpoint = save_train_py_checkpoint(tmp_path / "0080000.pt", tiny_reference)
    stats = write_latents_stats(tmp_path / "latents_stats.pt")
    return checkpoint, tmp_path / "latents_stats.pt", stats


@contextlib.contextmanager
def record_decode_inputs(vae):
    recorded = []
    original = vae.decode

    def decode(latents, *args, **kwargs):
        recorded.append(latents.clone())
        return original(latents, *args, **kwargs)

    vae.decode = decode
    try:
        yield recorded
    finally:
        del vae.decode


def convert_tiny_pipeline(checkpoint, vae, stats_path=None, **kwargs):
    pipeline = convert_lightningdit_pipeline(
        checkpoint,
        vae,
        latents_stats_path=stats_path,
        model_type=TINY_ARCHITECTURE,
        num_classes=TINY_NUM_CLASSES,
        input_size=TINY_INPUT_SIZE,
        **kwargs,
    )
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


@pytest.mark.parametrize("vae_kind", ["aligntok", "autoencoder_kl"])
@pytest.mark.parametrize("latent_multiplier", [None, 0.5])
def test_the_pipeline_denormalises_like_lightningdit_inference(tiny_files, vae_kind, latent_multiplier):
    checkpoint, stats_path, stats = tiny_files
    vae = AlignedAutoencoderKL.from_preset("tiny").eval() if vae_kind == "aligntok" else build_tiny_autoencoder_kl()
    pipeline = convert_tiny_pipeline(checkpoint, vae, stats_path, latent_multiplier=latent_multiplier)
    assert pipeline.vae is vae  # configured in place, as documented
    multiplier = 1.0 if latent_multiplier is None else latent_multiplier
    assert vae.config.scaling_factor == multiplier and vae.config.shift_factor == 0.0
    np.testing.assert_allclose(vae.config.latents_mean, stats["mean"].flatten().double().numpy())
    np.testing.assert_allclose(vae.config.latents_std, stats["std"].flatten().double().numpy())

    call = {"class_labels": [1, 7], "num_inference_steps": 2}
    latents = pipeline(**call, output_type="latent", generator=torch.Generator().manual_seed(0)).images
    with record_decode_inputs(vae) as decoded:
        images = pipeline(**call, output_type="pt", generator=torch.Generator().manual_seed(0)).images
    assert images.shape == (2, 3, 32, 32) and torch.isfinite(images).all()
    # inference.py: samples = (samples * latent_std) / latent_multiplier + latent_mean, then vae.decode.
    expected = latents * stats["std"] / multiplier + stats["mean"]
    torch.testing.assert_close(decoded[0], expected, rtol=1e-5, atol=1e-5)


def test_the_pipeline_runs_the_converted_transformer_with_lightningdits_shift(tiny_files, tiny_reference):
    checkpoint, stats_path, _ = tiny_files
    pipeline = convert_tiny_pipeline(checkpoint, AlignedAutoencoderKL.from_preset("tiny").eval(), stats_path)
    assert isinstance(pipeline.scheduler, FlowMatchEulerDiscreteScheduler)
    assert pipeline.scheduler.config.shift == pytest.approx(1 / 0.3)
    assert lightningdit_scheduler(0.0).config.shift == 1.0  # LightningDiT's "no shift"
    assert lightningdit_scheduler(0.5).config.shift == 2.0
    latents, times, labels = reference_inputs(2, TINY_CHANNELS, TINY_INPUT_SIZE, TINY_NUM_CLASSES)
    with torch.no_grad():
        ours = pipeline.transformer(latents, 1000 * (1 - times), labels).sample
        assert relative_difference(-ours, tiny_reference(latents, times, labels)) < 1e-5


def test_latents_stats_with_the_wrong_channel_count_are_refused(tmp_path, tiny_files):
    checkpoint, _, _ = tiny_files
    write_latents_stats(tmp_path / "stats_32.pt", num_channels=32)
    vae = AlignedAutoencoderKL.from_preset("tiny").eval()
    with pytest.raises(ValueError, match=r"'mean' .* has shape \(1, 32, 1, 1\).*8 latent channels"):
        convert_tiny_pipeline(checkpoint, vae, tmp_path / "stats_32.pt")
    assert vae.config.latents_mean is None  # nothing was changed


def test_malformed_latents_stats_are_refused(tmp_path):
    torch.save({"mean": torch.zeros(1, 8, 1, 1)}, tmp_path / "no_std.pt")
    with pytest.raises(ValueError, match=r"not a LightningDiT latents_stats.pt.*found \['mean'\]"):
        load_lightningdit_latent_stats(tmp_path / "no_std.pt", 8)
    torch.save({"mean": torch.zeros(1, 8, 1, 1), "std": torch.zeros(1, 8, 1, 1)}, tmp_path / "zero_std.pt")
    with pytest.raises(ValueError, match="'std' .* is 0.0 for channel 0; it must be > 0"):
        load_lightningdit_latent_stats(tmp_path / "zero_std.pt", 8)
    torch.save({"mean": torch.zeros(2, 8, 1, 1), "std": torch.ones(2, 8, 1, 1)}, tmp_path / "batched.pt")
    with pytest.raises(ValueError, match=r"has shape \(2, 8, 1, 1\)"):
        load_lightningdit_latent_stats(tmp_path / "batched.pt", 8)


def test_without_latents_stats_the_vae_keeps_its_normalisation_and_a_warning_says_so(tiny_files, caplog):
    checkpoint, _, _ = tiny_files
    vae = AlignedAutoencoderKL.from_preset("tiny", scaling_factor=2.0).eval()
    diffusers_logging.enable_propagation()
    try:
        with caplog.at_level("WARNING"):
            pipeline = convert_tiny_pipeline(checkpoint, vae)
    finally:
        diffusers_logging.disable_propagation()
    assert "pass its latents_stats.pt" in caplog.text
    assert pipeline.vae.config.scaling_factor == 2.0 and pipeline.vae.config.latents_mean is None


def test_a_vae_with_other_latent_channels_is_named_as_the_cause(tiny_files):
    checkpoint, _, _ = tiny_files
    with pytest.raises(ValueError, match=r"(?s)fit no LightningDiT model type.*VAE's latent_channels=4"):
        convert_tiny_pipeline(checkpoint, build_tiny_autoencoder_kl(latent_channels=4))


def test_bad_pipeline_arguments_are_named(tiny_files):
    checkpoint, stats_path, _ = tiny_files
    with pytest.raises(ValueError, match="latent_multiplier=0.5 is used only with latents_stats_path"):
        convert_tiny_pipeline(checkpoint, AlignedAutoencoderKL.from_preset("tiny"), latent_multiplier=0.5)
    with pytest.raises(ValueError, match="timestep_shift=-0.3 must be a number >= 0"):
        convert_tiny_pipeline(checkpoint, AlignedAutoencoderKL.from_preset("tiny"), stats_path, timestep_shift=-0.3)
    with pytest.raises(TypeError, match="AutoencoderKL-like"):
        convert_tiny_pipeline(checkpoint, object(), stats_path)


# ---------------------------------------------------------------------------------------------------------------
# The console script, end to end
# ---------------------------------------------------------------------------------------------------------------


def test_the_console_script_is_installed():
    (entry_point,) = importlib.metadata.entry_points(group="console_scripts", name="aligntok-convert-lightningdit")
    from diffusers_aligntok import commands

    assert entry_point.load() is commands.convert_lightningdit  # which runs `main` and exits with its status


def test_console_script_saves_a_pipeline_that_from_pretrained_loads(tmp_path, tiny_files, tiny_reference, monkeypatch):
    checkpoint, stats_path, stats = tiny_files
    # Register the tiny size under a name, as the command takes only named model types.
    monkeypatch.setitem(LIGHTNINGDIT_MODEL_TYPES, TINY_ARCHITECTURE.name, TINY_ARCHITECTURE)
    AlignedAutoencoderKL.from_preset("tiny").save_pretrained(tmp_path / "tokenizer")
    output_dir = tmp_path / "converted"
    main(
        [
            "--checkpoint",
            str(checkpoint),
            "--model_type",
            "tiny/2",
            "--vae",
            str(tmp_path / "tokenizer"),
            "--latents_stats",
            str(stats_path),
            "--output_dir",
            str(output_dir),
            "--timestep_shift",
            "0.25",
            "--num_classes",
            str(TINY_NUM_CLASSES),
            "--input_size",
            str(TINY_INPUT_SIZE),
        ]
    )
    model_index = json.loads((output_dir / "model_index.json").read_text())
    assert model_index["_class_name"] == "AlignTokDiTPipeline"
    assert model_index["transformer"] == ["diffusers_aligntok", "LightningDiTTransformer2DModel"]

    assert diffusers_aligntok.__name__  # imported: from_pretrained resolves our classes through it
    pipeline = DiffusionPipeline.from_pretrained(output_dir)
    assert isinstance(pipeline, AlignTokDiTPipeline)
    assert pipeline.scheduler.config.shift == pytest.approx(4.0)
    assert pipeline.transformer.config.timestep_embedding_input == "flow_time"
    np.testing.assert_allclose(pipeline.vae.config.latents_std, stats["std"].flatten().double().numpy())
    # The reloaded transformer still computes what LightningDiT does, EMA-drifted position embedding included.
    latents, times, labels = reference_inputs(2, TINY_CHANNELS, TINY_INPUT_SIZE, TINY_NUM_CLASSES)
    with torch.no_grad():
        ours = pipeline.transformer(latents, 1000 * (1 - times), labels).sample
        assert relative_difference(-ours, tiny_reference(latents, times, labels)) < 1e-5
    pipeline.set_progress_bar_config(disable=True)
    images = pipeline(class_labels=[0, 9], num_inference_steps=2, guidance_scale=2.0, output_type="np").images
    assert images.shape == (2, 32, 32, 3) and np.isfinite(images).all()


def test_load_vae_reads_aligntok_and_diffusers_vaes_and_pipeline_folders(tmp_path):
    AlignedAutoencoderKL.from_preset("tiny").save_pretrained(tmp_path / "aligntok")
    build_tiny_autoencoder_kl().save_pretrained(tmp_path / "pipeline" / "vae")
    assert isinstance(load_vae(tmp_path / "aligntok"), AlignedAutoencoderKL)
    assert type(load_vae(tmp_path / "pipeline")) is AutoencoderKL
    with pytest.raises(FileNotFoundError, match="No VAE at"):
        load_vae(tmp_path / "missing")
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "config.json").write_text(json.dumps({"_class_name": "NotAModel"}))
    with pytest.raises(ValueError, match="'NotAModel', which is neither"):
        load_vae(tmp_path / "odd")
