"""`AlignTokFluxPipeline`: FluxPipeline with the latent patch read from the models (1 for f16 AlignTok latents)."""

import pytest
import torch
from diffusers import DiffusionPipeline, FluxPipeline

from diffusers_aligntok import AlignTokFluxPipeline
from diffusers_aligntok.pipelines import latent_patch_size, pack_latents, unpack_latents
from tests.testing_utils import build_tiny_flux_transformer, tiny_flux_components


def _call(pipeline, **kwargs):
    arguments = {
        "prompt": "a red circle",
        "num_inference_steps": 2,
        "max_sequence_length": 16,
        "output_type": "pt",
        "generator": torch.Generator().manual_seed(0),
        **kwargs,
    }
    return pipeline(**arguments).images


@pytest.mark.parametrize("patch", [1, 2, 3])
def test_pack_unpack_round_trip_and_flux_packing_for_patch_2(patch):
    latents = torch.randn(2, 5, 6 * patch, 4 * patch)
    tokens = pack_latents(latents, patch)
    assert tokens.shape == (2, 24, 5 * patch**2)
    torch.testing.assert_close(unpack_latents(tokens, 6 * patch, 4 * patch, patch), latents, rtol=0, atol=0)
    if patch == 2:
        torch.testing.assert_close(tokens, FluxPipeline._pack_latents(latents, 2, 5, 12, 8), rtol=0, atol=0)


def test_with_patch_2_it_is_exactly_the_stock_flux_pipeline():
    components = tiny_flux_components()
    stock, ours = FluxPipeline(**components), AlignTokFluxPipeline(**components)
    assert ours.latent_patch_size == 2
    torch.testing.assert_close(_call(ours, height=32, width=48), _call(stock, height=32, width=48), rtol=0, atol=0)


def test_patch_1_generates_every_requested_size_and_saves_and_loads(tmp_path):
    components = tiny_flux_components()
    components["transformer"] = build_tiny_flux_transformer(8, latent_patch_size=1, guidance_embeds=False)
    pipeline = AlignTokFluxPipeline(**components)
    assert pipeline.latent_patch_size == 1
    for height, width in [(16, 16), (12, 20), (28, 8)]:  # multiples of f=4, not of 8
        images = _call(pipeline, height=height, width=width, true_cfg_scale=2.0, negative_prompt="")
        assert images.shape == (1, 3, height, width) and torch.isfinite(images).all()
    pipeline.save_pretrained(tmp_path)
    loaded = DiffusionPipeline.from_pretrained(tmp_path)
    assert type(loaded) is AlignTokFluxPipeline
    torch.testing.assert_close(_call(loaded, height=12, width=20), _call(pipeline, height=12, width=20))


def test_a_transformer_that_fits_no_packing_of_the_vae_is_refused():
    assert latent_patch_size(32, 8) == 2 and latent_patch_size(8, 8) == 1
    with pytest.raises(ValueError, match="in_channels \\(24\\) is not latent_channels x patch_size"):
        latent_patch_size(24, 8)
