"""One adapter interface over AlignTok and diffusers autoencoders; loading by `_class_name`; the random FLUX VAE."""

import json

import pytest
import torch

from diffusers_aligntok.evaluation import (
    FLUX_VAE_CONFIG,
    TokenizerAdapter,
    adapter_for_model,
    build_random_flux_vae,
    load_tokenizer,
)
from diffusers_aligntok.evaluation.tokenizer_adapters import (
    AlignedAutoencoderKLAdapter,
    AutoencoderKLAdapter,
    check_resolution_for_all,
)

from .conftest import build_tiny_autoencoder_kl


def _images(batch=2, size=16):
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1


def test_load_tokenizer_picks_the_class_from_config(tiny_aligntok_dir, tiny_kl_dir, tmp_path):
    aligntok = load_tokenizer(str(tiny_aligntok_dir))
    assert isinstance(aligntok, AlignedAutoencoderKLAdapter) and isinstance(aligntok, TokenizerAdapter)
    assert (aligntok.spatial_factor, aligntok.latent_channels, aligntok.name) == (4, 8, "tiny_aligntok")
    latents = aligntok.encode(_images(size=32))
    assert latents.shape == (2, 8, 8, 8) and latents.dtype == torch.float32
    torch.testing.assert_close(latents, aligntok.model.encode(_images(size=32)).latent_dist.mode())
    assert aligntok.decode(latents).shape == (2, 3, 32, 32)

    kl = load_tokenizer(str(tiny_kl_dir))
    assert isinstance(kl, AutoencoderKLAdapter) and (kl.spatial_factor, kl.latent_channels) == (4, 4)
    torch.testing.assert_close(kl.encode(_images()), kl.model.encode(_images()).latent_dist.mode())

    # A diffusers pipeline directory: its vae/ subfolder is used.
    (tmp_path / "pipeline").mkdir()
    (tmp_path / "pipeline" / "model_index.json").write_text("{}")
    build_tiny_autoencoder_kl().save_pretrained(tmp_path / "pipeline" / "vae")
    assert isinstance(load_tokenizer(str(tmp_path / "pipeline")), AutoencoderKLAdapter)
    described = kl.describe()
    assert described["class_name"] == "AutoencoderKL" and described["config"]["latent_channels"] == 4
    json.dumps(described)  # JSON-ready


def test_load_tokenizer_rejects_unknown_classes_and_missing_configs(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel"}))
    with pytest.raises(ValueError, match="UNet2DModel"):
        load_tokenizer(str(tmp_path))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no config.json"):
        load_tokenizer(str(tmp_path / "empty"))


def test_flux_vae_random_has_the_flux_configuration_and_says_it_is_random():
    adapter = load_tokenizer("flux-vae-random")
    config = adapter.model.config
    for key, value in FLUX_VAE_CONFIG.items():
        assert (tuple(config[key]) if isinstance(value, tuple) else config[key]) == value, key
    assert (adapter.spatial_factor, adapter.latent_channels) == (8, 16)
    assert adapter.random_weights and "random" in adapter.name and adapter.describe()["random_weights"]
    # Seeded, without touching the global RNG: the same weights every time.
    state = torch.random.get_rng_state()
    assert torch.equal(build_random_flux_vae().decoder.conv_out.weight, adapter.model.decoder.conv_out.weight)
    assert torch.equal(torch.random.get_rng_state(), state)


def test_autoencoder_dc_and_rae_adapters():
    from diffusers import AutoencoderDC, AutoencoderRAE

    torch.manual_seed(0)
    dc = AutoencoderDC(
        latent_channels=4,
        attention_head_dim=2,
        encoder_block_types=("ResBlock", "ResBlock"),
        decoder_block_types=("ResBlock", "ResBlock"),
        encoder_block_out_channels=(8, 16),
        decoder_block_out_channels=(8, 16),
        encoder_layers_per_block=(1, 1),
        decoder_layers_per_block=(1, 1),
        encoder_qkv_multiscales=((), ()),
        decoder_qkv_multiscales=((), ()),
        decoder_norm_types="rms_norm",
        decoder_act_fns="silu",
    )
    adapter = adapter_for_model(dc)
    assert adapter.spatial_factor == 2
    torch.testing.assert_close(adapter.encode(_images()), dc.encode(_images()).latent)

    rae = AutoencoderRAE(
        encoder_hidden_size=64,
        encoder_patch_size=14,
        encoder_num_hidden_layers=1,
        decoder_hidden_size=32,
        decoder_num_hidden_layers=1,
        decoder_num_attention_heads=2,
        decoder_intermediate_size=64,
        patch_size=8,
        encoder_input_size=28,
    )
    adapter = adapter_for_model(rae, name="tiny-rae")
    images = _images(size=16)
    latents = adapter.encode(images)
    # RAE works on [0, 1] images; the adapter converts both ways.
    torch.testing.assert_close(latents, rae.encode((images + 1) / 2).latent)
    torch.testing.assert_close(adapter.decode(latents), rae.decode(latents).sample * 2 - 1)
    assert adapter.spatial_factor == 8
    with pytest.raises(ValueError, match="always decodes 16x16"):
        adapter.check_image_size(32, 32)
    with pytest.raises(TypeError, match="No tokenizer adapter for Linear"):
        adapter_for_model(torch.nn.Linear(2, 2))


def test_a_resolution_not_divisible_by_every_spatial_factor_raises_one_clear_error(tiny_kl_dir):
    f4 = load_tokenizer(str(tiny_kl_dir))
    f8 = adapter_for_model(build_tiny_autoencoder_kl(num_levels=4), name="tiny-f8")
    check_resolution_for_all([f4, f8], 32, 32)
    with pytest.raises(ValueError) as error:
        check_resolution_for_all([f4, f8], 34, 34)
    message = str(error.value)
    assert "tiny_kl: image size 34x34 is not a multiple of its spatial factor 4" in message
    assert "tiny-f8" in message and "multiple of 8, e.g. 40x40" in message
