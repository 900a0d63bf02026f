"""`AlignedAutoencoderKL` inside stock diffusers pipelines: Flux, Flux img2img, SD3 (text-to-image and img2img), SDXL.

Every component is tiny, random and built offline (see `tiny_components.py`); each pipeline call runs 2 steps on a
32-64 pixel image. What is checked is the contract between the pipelines and our VAE: output sizes for square and
non-square images, `encode` inside img2img, save/load through `model_index.json`, who applies `shift_factor` and
`scaling_factor`, float16/bfloat16 runs, and the offline defaults of the examples that use these components.
"""

import contextlib
import json
import runpy
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import (
    DiffusionPipeline,
    FluxImg2ImgPipeline,
    FluxPipeline,
    StableDiffusion3Img2ImgPipeline,
    StableDiffusion3Pipeline,
    StableDiffusionXLPipeline,
)

from diffusers_aligntok import AlignedAutoencoderKL

from .tiny_components import (
    build_tiny_vae,
    fast_call_kwargs,
    make_test_images,
    tiny_flux_components,
    tiny_sd3_components,
    tiny_sdxl_components,
)


def _quiet(pipe):
    pipe.set_progress_bar_config(disable=True)
    return pipe


@contextlib.contextmanager
def record_forward_calls(module: torch.nn.Module):
    """Yields a list that gets the dtype of the first tensor input of every `module` call made inside the block."""
    dtypes = []

    def hook(_, args, kwargs):
        tensors = [value for value in (*args, *kwargs.values()) if torch.is_tensor(value)]
        dtypes.append(tensors[0].dtype if tensors else None)

    handle = module.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield dtypes
    finally:
        handle.remove()


@pytest.fixture(scope="module")
def flux_pipe():
    return _quiet(FluxPipeline(**tiny_flux_components()))


@pytest.fixture(scope="module")
def saved_flux_pipe_dir(flux_pipe, tmp_path_factory):
    directory = tmp_path_factory.mktemp("flux_aligntok")
    flux_pipe.save_pretrained(directory)
    return directory


# ---------------------------------------------------------------------------------------------------------------
# Text-to-image
# ---------------------------------------------------------------------------------------------------------------


def test_flux_vae_scale_factor_comes_from_block_out_channels(flux_pipe):
    assert flux_pipe.vae_scale_factor == flux_pipe.vae.spatial_compression_ratio == 4
    assert flux_pipe.transformer.config.in_channels == 4 * flux_pipe.vae.config.latent_channels


@pytest.mark.parametrize("height, width", [(32, 32), (32, 64), (64, 32)])
def test_flux_text_to_image_sizes(flux_pipe, height, width):
    # Flux packs 2x2 latent patches: sides must divide by 2 * vae_scale_factor = 8.
    images = flux_pipe(**fast_call_kwargs(height, width, output_type="pt")).images
    assert images.shape == (1, 3, height, width)
    assert torch.isfinite(images).all()
    assert images.min() >= 0 and images.max() <= 1

    pil_images = flux_pipe(**fast_call_kwargs(height, width, output_type="pil")).images
    assert len(pil_images) == 1
    assert pil_images[0].size == (width, height)
    assert pil_images[0].mode == "RGB"
    # Same seed, same latents: the PIL image is the rounded tensor image.
    expected = (images[0].permute(1, 2, 0).numpy() * 255).round()
    assert np.abs(np.asarray(pil_images[0], dtype=np.float32) - expected).max() <= 1


def test_flux_batch_of_prompts_with_several_images_each(flux_pipe):
    kwargs = fast_call_kwargs(32, 64, prompt=["a cat", "a dog"], num_images_per_prompt=2)
    images = flux_pipe(**kwargs).images
    assert images.shape == (4, 3, 32, 64)
    assert torch.isfinite(images).all()


def test_flux_with_vae_tiling_enabled(flux_pipe):
    # The tiny preset tiles at 32 pixels, so a 64x64 image decodes from overlapping latent tiles.
    flux_pipe.vae.enable_tiling()
    try:
        images = flux_pipe(**fast_call_kwargs(64, 64)).images
    finally:
        flux_pipe.vae.disable_tiling()
    assert images.shape == (1, 3, 64, 64)
    assert torch.isfinite(images).all()


def test_sd3_text_to_image_non_square():
    pipe = _quiet(StableDiffusion3Pipeline(**tiny_sd3_components()))
    assert pipe.vae_scale_factor == 4
    images = pipe(**fast_call_kwargs(32, 48)).images
    assert images.shape == (1, 3, 32, 48)
    assert torch.isfinite(images).all()


def test_sdxl_text_to_image():
    # SDXL-family pipelines read only `scaling_factor`; the tiny VAE has shift 0 and no per-channel statistics.
    pipe = _quiet(StableDiffusionXLPipeline(**tiny_sdxl_components()))
    images = pipe(**fast_call_kwargs(32, 64, t5_prompt=False)).images
    assert images.shape == (1, 3, 32, 64)
    assert torch.isfinite(images).all()


# ---------------------------------------------------------------------------------------------------------------
# Saving and loading
# ---------------------------------------------------------------------------------------------------------------


def test_flux_save_pretrained_and_load_back_gives_the_same_images(flux_pipe, saved_flux_pipe_dir):
    loaded = _quiet(DiffusionPipeline.from_pretrained(saved_flux_pipe_dir))
    assert isinstance(loaded, FluxPipeline)
    assert isinstance(loaded.vae, AlignedAutoencoderKL)

    def as_json(config):  # tuples come back as lists; private keys record provenance, not architecture
        return json.loads(json.dumps({key: value for key, value in config.items() if not key.startswith("_")}))

    assert as_json(loaded.vae.config) == as_json(flux_pipe.vae.config)

    expected = flux_pipe(**fast_call_kwargs(32, 64, seed=3)).images
    images = loaded(**fast_call_kwargs(32, 64, seed=3)).images
    # Weights are bit-identical; a reloaded transformer can differ in the last float bit (memory layout), no more.
    torch.testing.assert_close(images, expected, rtol=0, atol=1e-5)


def test_flux_model_index_names_the_package_for_the_vae(saved_flux_pipe_dir):
    model_index = json.loads((saved_flux_pipe_dir / "model_index.json").read_text())
    assert model_index["vae"] == ["diffusers_aligntok", "AlignedAutoencoderKL"]


# ---------------------------------------------------------------------------------------------------------------
# Image-to-image: `encode` runs inside the pipeline
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("height, width", [(32, 32), (32, 64)])
def test_flux_img2img_encodes_with_the_aligned_vae(height, width):
    pipe = _quiet(FluxImg2ImgPipeline(**tiny_flux_components()))
    with record_forward_calls(pipe.vae.encoder) as encoder_calls:
        images = pipe(**fast_call_kwargs(height, width, image=make_test_images(1, height, width), strength=0.6)).images
    assert len(encoder_calls) == 1
    assert images.shape == (1, 3, height, width)
    assert torch.isfinite(images).all()


def test_sd3_img2img_encodes_with_the_aligned_vae():
    pipe = _quiet(StableDiffusion3Img2ImgPipeline(**tiny_sd3_components()))
    with record_forward_calls(pipe.vae.encoder) as encoder_calls:
        # SD3 img2img resizes to `height`/`width` (default: transformer sample_size * 4 = 128), so pass them.
        images = pipe(**fast_call_kwargs(48, 32, image=make_test_images(1, 48, 32), strength=0.6)).images
    assert len(encoder_calls) == 1
    assert images.shape == (1, 3, 48, 32)
    assert torch.isfinite(images).all()


def test_flux_img2img_from_pipe_needs_the_vae_passed_again(flux_pipe):
    # `from_pipe` only carries over components whose type matches the pipeline's annotation (`AutoencoderKL`).
    with pytest.raises(ValueError, match="vae"):
        FluxImg2ImgPipeline.from_pipe(flux_pipe)
    img2img = _quiet(FluxImg2ImgPipeline.from_pipe(flux_pipe, vae=flux_pipe.vae))
    assert img2img.vae is flux_pipe.vae and img2img.transformer is flux_pipe.transformer
    images = img2img(**fast_call_kwargs(32, 32, image=make_test_images(1, 32, 32), strength=0.6)).images
    assert images.shape == (1, 3, 32, 32)


# ---------------------------------------------------------------------------------------------------------------
# Who applies shift_factor and scaling_factor
# ---------------------------------------------------------------------------------------------------------------

SCALING_FACTOR, SHIFT_FACTOR = 2.0, 0.5


@pytest.mark.parametrize(
    "pipeline_class, components",
    [(FluxPipeline, tiny_flux_components), (StableDiffusion3Pipeline, tiny_sd3_components)],
    ids=["flux", "sd3"],
)
def test_pipeline_decodes_latents_divided_by_scaling_plus_shift(pipeline_class, components):
    """The pipeline, not the VAE, applies the config's factors: it decodes `latents / scaling + shift`."""
    vae = build_tiny_vae(scaling_factor=SCALING_FACTOR, shift_factor=SHIFT_FACTOR)
    pipe = _quiet(pipeline_class(**components(vae=vae)))
    height, width = 32, 64

    latents = pipe(**fast_call_kwargs(height, width, output_type="latent")).images
    images = pipe(**fast_call_kwargs(height, width, output_type="pt")).images

    if pipeline_class is FluxPipeline:  # output_type="latent" gives Flux's packed 2x2 sequence
        latents = FluxPipeline._unpack_latents(latents, height, width, pipe.vae_scale_factor)
    assert latents.shape == (1, vae.config.latent_channels, height // 4, width // 4)
    with torch.no_grad():
        by_hand = vae.decode(latents / SCALING_FACTOR + SHIFT_FACTOR).sample
        # `denormalize_latents` is the same affine map when no per-channel statistics are set.
        torch.testing.assert_close(vae.denormalize_latents(latents), latents / SCALING_FACTOR + SHIFT_FACTOR)
    torch.testing.assert_close(images, pipe.image_processor.postprocess(by_hand, output_type="pt"), rtol=0, atol=1e-6)

    # Without the factors the result would differ: the test can tell who applied them.
    with torch.no_grad():
        unscaled = pipe.image_processor.postprocess(vae.decode(latents).sample, output_type="pt")
    assert (images - unscaled).abs().max() > 1e-3


def test_flux_img2img_normalizes_encoded_latents_with_shift_then_scaling():
    vae = build_tiny_vae(scaling_factor=SCALING_FACTOR, shift_factor=SHIFT_FACTOR)
    pipe = FluxImg2ImgPipeline(**tiny_flux_components(vae=vae))
    image = 2 * make_test_images(1, 32, 64) - 1
    with torch.no_grad():
        pipeline_latents = pipe._encode_vae_image(image, generator=torch.Generator().manual_seed(0))
        raw = vae.encode(image).latent_dist.mode()
    torch.testing.assert_close(pipeline_latents, (raw - SHIFT_FACTOR) * SCALING_FACTOR)
    torch.testing.assert_close(pipeline_latents, vae.normalize_latents(raw))


def test_flux_ignores_per_channel_latent_statistics(flux_pipe):
    """Flux and SD3 read only `shift_factor`/`scaling_factor`: per-channel `latents_mean`/`latents_std` in the config
    are used by `vae.normalize_latents` but never by these pipelines, so a transformer meant for them must be trained
    on `(z - shift_factor) * scaling_factor`."""
    channels = flux_pipe.vae.config.latent_channels
    vae = build_tiny_vae(latents_mean=(0.3,) * channels, latents_std=(2.0,) * channels)
    pipe = _quiet(FluxPipeline(**tiny_flux_components(vae=vae)))
    latents = FluxPipeline._unpack_latents(pipe(**fast_call_kwargs(output_type="latent")).images, 32, 32, 4)
    images = pipe(**fast_call_kwargs(output_type="pt")).images
    config = vae.config
    with torch.no_grad():
        by_config_factors = vae.decode(latents / config.scaling_factor + config.shift_factor).sample
        by_statistics = vae.decode(vae.denormalize_latents(latents)).sample
    by_config_factors = pipe.image_processor.postprocess(by_config_factors, output_type="pt")
    by_statistics = pipe.image_processor.postprocess(by_statistics, output_type="pt")
    torch.testing.assert_close(images, by_config_factors, rtol=0, atol=1e-6)
    assert (images - by_statistics).abs().max() > 1e-3


# ---------------------------------------------------------------------------------------------------------------
# float16
# ---------------------------------------------------------------------------------------------------------------


def test_flux_float16_with_the_vae_kept_in_float32():
    """Flux and SD3 do not read `force_upcast`; users keep the VAE in float32 themselves, and `decode`/`encode` cast
    the pipeline's float16 latents and images to the VAE's dtype."""
    pipe = _quiet(FluxPipeline(**tiny_flux_components()))
    pipe.to(torch.float16)
    pipe.vae.to(torch.float32)
    images = pipe(**fast_call_kwargs(32, 32)).images
    assert pipe.transformer.dtype == torch.float16
    assert images.shape == (1, 3, 32, 32)
    assert torch.isfinite(images).all()


def test_sdxl_float16_upcasts_the_vae_when_force_upcast():
    vae = build_tiny_vae()
    assert vae.config.force_upcast
    pipe = _quiet(StableDiffusionXLPipeline(**tiny_sdxl_components(vae=vae)))
    pipe.to(torch.float16)
    with record_forward_calls(pipe.vae.decoder) as decoder_calls:
        images = pipe(**fast_call_kwargs(32, 64, t5_prompt=False)).images
    assert decoder_calls == [torch.float32]  # decoded in float32 ...
    assert pipe.vae.dtype == torch.float16  # ... and cast back afterwards
    assert images.shape == (1, 3, 32, 64)
    assert torch.isfinite(images).all()


def test_flux_img2img_in_bfloat16():
    # The encoder's input resize runs in float32: CPU torch has no half-precision antialiased bicubic kernel.
    pipe = _quiet(FluxImg2ImgPipeline(**tiny_flux_components()))
    pipe.to(torch.bfloat16)
    images = pipe(**fast_call_kwargs(32, 32, image=make_test_images(1, 32, 32), strength=0.6)).images
    assert images.shape == (1, 3, 32, 32)
    assert torch.isfinite(images).all()


# ---------------------------------------------------------------------------------------------------------------
# Examples (their offline defaults must keep working)
# ---------------------------------------------------------------------------------------------------------------

EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples"


def _run_example(monkeypatch, script: str, *argv: str) -> None:
    monkeypatch.setattr(sys, "argv", [script, *argv])
    runpy.run_path(str(EXAMPLES_DIR / script), run_name="__main__")


def test_flux_vae_swap_example_runs_offline(monkeypatch, tmp_path, capsys):
    output = tmp_path / "out.png"
    _run_example(monkeypatch, "flux_vae_swap.py", "--output", str(output), "--height", "32", "--width", "64")
    with PIL.Image.open(output) as image:
        assert image.size == (64, 32)
    assert "AlignedAutoencoderKL" in capsys.readouterr().out


def test_reconstruct_example_runs_offline(monkeypatch, tmp_path, capsys):
    _run_example(monkeypatch, "reconstruct.py", "--output_dir", str(tmp_path), "--tiling")
    with PIL.Image.open(tmp_path / "synthetic_reconstruction.png") as image:
        assert image.size == (2 * 192, 128)  # original | reconstruction
    assert "PSNR" in capsys.readouterr().out
