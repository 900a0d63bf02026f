"""Tests for `AlignedAutoencoderKL`, in the manner of diffusers' `tests/models/autoencoders/`.

Every test builds the "tiny" preset (f4, 8 latent channels, a 2-layer patch-3 DINOv2) or an equally tiny variant, on
32x32 to 96x96 seeded images, so the file runs in seconds on two CPU cores and never downloads anything. The groups
follow diffusers' behaviour mixins: outputs, determinism, save/load, slicing and tiling, training, dtypes, the config
that pipelines read, input validation, encoder families, pretrained encoders and PEFT.
"""

import copy
import inspect
import json
import re
import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers import AutoencoderKL
from diffusers.models.autoencoders.vae import DecoderOutput
from diffusers.models.modeling_outputs import AutoencoderKLOutput
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion_img2img import retrieve_latents
from transformers import (
    Dinov2Config,
    Dinov2Model,
    Dinov2WithRegistersConfig,
    Dinov2WithRegistersModel,
    SiglipConfig,
    SiglipModel,
    SiglipVisionModel,
    ViTMAEModel,
)

from diffusers_aligntok import FOUNDATION_ENCODERS, AlignedAutoencoderKL, DeterministicLatentDistribution, get_preset

from .model_contract import ModelContractTests


TINY_CONFIG = get_preset("tiny").config
FACTOR = 4  # 2 ** (len(TINY_CONFIG["block_out_channels"]) - 1)
LATENT_CHANNELS = TINY_CONFIG["latent_channels"]
_DECODER_KEYS = ("latent_channels", "up_block_types", "block_out_channels", "layers_per_block", "norm_num_groups")
TINY_DECODER_CONFIG = {key: TINY_CONFIG[key] for key in (*_DECODER_KEYS, "sample_size")}

# One tiny transformers config per encoder family. Patch 4 equals the spatial factor, so the encoder sees the image at
# its own size and a hand-written reference needs no resizing.
_TINY_VIT = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "patch_size": 4, "image_size": 16}
TINY_ENCODER_CONFIGS = {
    "dinov2": {**_TINY_VIT, "mlp_ratio": 2},
    "dinov2_with_registers": {**_TINY_VIT, "mlp_ratio": 2, "num_register_tokens": 4},
    "siglip2": {**_TINY_VIT, "intermediate_size": 64},
    "mae": {**_TINY_VIT, "intermediate_size": 64},
}
# Tokens before the row-major patch tokens: CLS, then registers; SigLIP has neither.
NUM_PREFIX_TOKENS = {"dinov2": 1, "dinov2_with_registers": 5, "siglip2": 0, "mae": 1}
ENCODER_CLASSES = {
    "dinov2": Dinov2Model,
    "dinov2_with_registers": Dinov2WithRegistersModel,
    "siglip2": SiglipVisionModel,
    "mae": ViTMAEModel,
}


def make_images(batch_size: int = 2, height: int = 32, width: int = 32, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch_size, 3, height, width, generator=generator) * 2 - 1


def make_latents(batch_size: int = 2, height: int = 8, width: int = 8, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch_size, LATENT_CHANNELS, height, width, generator=generator)


def make_tiny_vae(**overrides) -> AlignedAutoencoderKL:
    torch.manual_seed(0)
    return AlignedAutoencoderKL.from_preset("tiny", **overrides).eval()


def make_family_vae(encoder_type: str, **overrides) -> AlignedAutoencoderKL:
    return make_tiny_vae(encoder_type=encoder_type, encoder_config=TINY_ENCODER_CONFIGS[encoder_type], **overrides)


def saved_config(model: AlignedAutoencoderKL) -> dict:
    """The config as `save_pretrained` writes it, without bookkeeping keys (`_class_name`, `_name_or_path`, ...)."""
    return {key: value for key, value in json.loads(model.to_json_string()).items() if not key.startswith("_")}


def normalize_for_encoder(model: AlignedAutoencoderKL, images: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(model.config.encoder_image_mean).view(1, 3, 1, 1)
    std = torch.tensor(model.config.encoder_image_std).view(1, 3, 1, 1)
    return ((images + 1) / 2 - mean) / std


def latents_from_patch_tokens(model: AlignedAutoencoderKL, tokens: torch.Tensor, height: int, width: int):
    """Adapter on row-major patch tokens, written independently of the model: (B, h*w, C) -> (B, latent, h, w)."""
    grid = tokens.reshape(tokens.shape[0], height, width, tokens.shape[-1])
    return model.adapter(grid).permute(0, 3, 1, 2)


def cpu_supports(dtype: torch.dtype) -> bool:
    try:
        F.conv2d(torch.ones(1, 1, 3, 3, dtype=dtype), torch.ones(1, 1, 1, 1, dtype=dtype))
        torch.ones(2, dtype=dtype).exp()
    except (RuntimeError, NotImplementedError):
        return False
    return True


# ---------------------------------------------------------------------------------------------------------------------
# Outputs: shapes, output classes, the latent distribution, pipeline helpers
# ---------------------------------------------------------------------------------------------------------------------


class TestOutputs:
    @pytest.mark.parametrize("height, width", [(32, 32), (32, 48), (48, 32), (64, 16)])
    @torch.no_grad()
    def test_encode_decode_forward_shapes(self, tiny_vae, height, width):
        images = make_images(2, height, width)

        encoded = tiny_vae.encode(images)
        assert isinstance(encoded, AutoencoderKLOutput)
        assert isinstance(encoded.latent_dist, DeterministicLatentDistribution)
        latents = encoded.latent_dist.mode()
        assert latents.shape == (2, LATENT_CHANNELS, height // FACTOR, width // FACTOR)

        decoded = tiny_vae.decode(latents)
        assert isinstance(decoded, DecoderOutput)
        assert decoded.sample.shape == (2, 3, height, width)

        reconstructed = tiny_vae(images)
        assert isinstance(reconstructed, DecoderOutput)
        assert reconstructed.sample.shape == (2, 3, height, width)
        # In eval mode forward is exactly decode(encode(x)): no latent noise, no sampling.
        assert torch.equal(reconstructed.sample, decoded.sample)

    @torch.no_grad()
    def test_return_dict_false_gives_tuples(self, tiny_vae):
        images = make_images()
        encoded = tiny_vae.encode(images, return_dict=False)
        assert isinstance(encoded, tuple) and len(encoded) == 1
        assert isinstance(encoded[0], DeterministicLatentDistribution)

        latents = encoded[0].mode()
        decoded = tiny_vae.decode(latents, return_dict=False)
        assert isinstance(decoded, tuple) and len(decoded) == 1
        assert torch.equal(decoded[0], tiny_vae.decode(latents).sample)

        reconstructed = tiny_vae(images, return_dict=False)
        assert isinstance(reconstructed, tuple) and len(reconstructed) == 1
        assert torch.equal(reconstructed[0], decoded[0])

    @torch.no_grad()
    def test_latent_distribution_is_a_deterministic_point_mass(self, tiny_vae):
        posterior = tiny_vae.encode(make_images(3)).latent_dist
        mode = posterior.mode()
        for seed in (0, 1):
            assert torch.equal(posterior.sample(torch.Generator().manual_seed(seed)), mode)
        assert torch.equal(posterior.sample(), mode)

        kl = posterior.kl()
        assert kl.shape == (3,)
        assert torch.count_nonzero(kl) == 0
        assert torch.count_nonzero(posterior.std) == 0 and torch.count_nonzero(posterior.var) == 0
        assert posterior.std.shape == mode.shape

    @torch.no_grad()
    def test_sample_posterior_changes_nothing(self, tiny_vae):
        images = make_images()
        sampled = tiny_vae(images, sample_posterior=True, generator=torch.Generator().manual_seed(3)).sample
        assert torch.equal(sampled, tiny_vae(images).sample)

    @pytest.mark.parametrize("sample_mode", ["sample", "argmax"])
    @torch.no_grad()
    def test_retrieve_latents_helper(self, tiny_vae, sample_mode):
        images = make_images()
        expected = tiny_vae.encode(images).latent_dist.mode()
        latents = retrieve_latents(
            tiny_vae.encode(images), generator=torch.Generator().manual_seed(0), sample_mode=sample_mode
        )
        assert torch.equal(latents, expected)


# ---------------------------------------------------------------------------------------------------------------------
# Determinism and the training-time latent noise
# ---------------------------------------------------------------------------------------------------------------------


class TestDeterminism:
    @torch.no_grad()
    def test_encode_and_decode_are_bitwise_deterministic_in_eval_mode(self, tiny_vae):
        images = make_images(2, 32, 48)
        first = tiny_vae.encode(images).latent_dist.mode()
        second = tiny_vae.encode(images).latent_dist.mode()
        assert torch.equal(first, second)
        assert torch.equal(tiny_vae.decode(first).sample, tiny_vae.decode(first).sample)

    def test_latent_noise_is_seeded_and_only_in_train_mode(self):
        vae = make_tiny_vae(latent_noise_std=0.5).train()
        latents = make_latents(4)

        noisy = vae.add_latent_noise(latents, generator=torch.Generator().manual_seed(1))
        assert not torch.allclose(noisy, latents)
        assert torch.equal(noisy, vae.add_latent_noise(latents, generator=torch.Generator().manual_seed(1)))
        assert not torch.equal(noisy, vae.add_latent_noise(latents, generator=torch.Generator().manual_seed(2)))

        vae.eval()
        assert torch.equal(vae.add_latent_noise(latents, generator=torch.Generator().manual_seed(1)), latents)

        without_noise = make_tiny_vae(latent_noise_std=0.0).train()
        assert torch.equal(without_noise.add_latent_noise(latents), latents)

    def test_latent_noise_std_is_drawn_per_sample_up_to_latent_noise_std(self):
        vae = make_tiny_vae(latent_noise_std=0.5).train()
        latents = torch.zeros(64, LATENT_CHANNELS, 16, 16)
        noise = vae.add_latent_noise(latents, generator=torch.Generator().manual_seed(0))
        per_sample_std = noise.flatten(1).std(dim=1)
        # Each sample's std is uniform in [0, 0.5]; 2048 values per sample estimate it to within a few percent.
        assert per_sample_std.max() <= 0.5 * 1.1
        assert per_sample_std.min() < 0.1 and per_sample_std.max() > 0.4

    def test_forward_applies_latent_noise_in_train_mode(self):
        vae = make_tiny_vae(latent_noise_std=0.5)
        images = make_images()
        with torch.no_grad():
            clean = vae(images).sample
            vae.train()
            noisy = vae(images, generator=torch.Generator().manual_seed(0)).sample
            noisy_again = vae(images, generator=torch.Generator().manual_seed(0)).sample
        assert torch.equal(noisy, noisy_again)
        assert not torch.allclose(noisy, clean, atol=1e-3)


# ---------------------------------------------------------------------------------------------------------------------
# save_pretrained / from_pretrained
# ---------------------------------------------------------------------------------------------------------------------


class TestSaveLoad:
    def test_round_trip_keeps_outputs_and_resolved_config(self, tmp_path):
        vae = make_tiny_vae(encoder_image_mean=(0.4, 0.5, 0.6), encoder_image_std=(0.2, 0.3, 0.25))
        vae.save_pretrained(tmp_path)
        assert (tmp_path / "diffusion_pytorch_model.safetensors").is_file()

        config_on_disk = json.loads((tmp_path / "config.json").read_text())
        assert config_on_disk["_class_name"] == "AlignedAutoencoderKL"
        # The encoder architecture is written out in full, so the checkpoint does not depend on code defaults.
        encoder_config = config_on_disk["encoder_config"]
        assert encoder_config["hidden_size"] == 32 and encoder_config["patch_size"] == 3
        assert encoder_config["num_hidden_layers"] == 2 and encoder_config["layer_norm_eps"] == 1e-6
        assert config_on_disk["encoder_image_mean"] == [0.4, 0.5, 0.6]
        assert config_on_disk["encoder_image_std"] == [0.2, 0.3, 0.25]

        loaded = AlignedAutoencoderKL.from_pretrained(tmp_path).eval()
        assert saved_config(loaded) == saved_config(vae)
        for (name, tensor), (loaded_name, loaded_tensor) in zip(vae.state_dict().items(), loaded.state_dict().items()):
            assert name == loaded_name and torch.equal(tensor, loaded_tensor), name
        images = make_images(2, 32, 48)
        with torch.no_grad():
            assert torch.equal(loaded(images).sample, vae(images).sample)

    def test_default_image_statistics_are_resolved_into_the_config(self, tmp_path, tiny_vae):
        assert tuple(tiny_vae.config.encoder_image_mean) == (0.485, 0.456, 0.406)
        assert tuple(tiny_vae.config.encoder_image_std) == (0.229, 0.224, 0.225)
        tiny_vae.save_pretrained(tmp_path)
        config_on_disk = json.loads((tmp_path / "config.json").read_text())
        assert config_on_disk["encoder_image_mean"] == [0.485, 0.456, 0.406]
        assert config_on_disk["encoder_image_std"] == [0.229, 0.224, 0.225]

    def test_loading_an_autoencoder_kl_checkpoint_raises(self, tmp_path):
        autoencoder_kl = AutoencoderKL(block_out_channels=(8,), norm_num_groups=8, latent_channels=4, sample_size=32)
        autoencoder_kl.save_pretrained(tmp_path)
        with pytest.raises(ValueError, match=r"(?<!Aligned)AutoencoderKL"):
            AlignedAutoencoderKL.from_pretrained(tmp_path)


# ---------------------------------------------------------------------------------------------------------------------
# Slicing and tiling
# ---------------------------------------------------------------------------------------------------------------------


def _enable_small_tiles(vae: AlignedAutoencoderKL) -> None:
    vae.enable_tiling()
    vae.tile_sample_min_size = 32
    vae.tile_latent_min_size = 32 // FACTOR


class TestSlicingAndTiling:
    @torch.no_grad()
    def test_slicing_matches_batched(self, tiny_vae):
        images = make_images(3)
        latents = tiny_vae.encode(images).latent_dist.mode()
        decoded = tiny_vae.decode(latents).sample

        tiny_vae.enable_slicing()
        sliced_latents = tiny_vae.encode(images).latent_dist.mode()
        sliced_decoded = tiny_vae.decode(latents).sample
        assert torch.allclose(sliced_latents, latents, atol=1e-5)
        assert torch.allclose(sliced_decoded, decoded, atol=1e-5)

    @pytest.mark.parametrize("height, width", [(64, 96), (96, 64)])
    @torch.no_grad()
    def test_tiled_shapes(self, tiny_vae, height, width):
        _enable_small_tiles(tiny_vae)
        latents = tiny_vae.encode(make_images(1, height, width)).latent_dist.mode()
        assert latents.shape == (1, LATENT_CHANNELS, height // FACTOR, width // FACTOR)
        decoded = tiny_vae.decode(latents).sample
        assert decoded.shape == (1, 3, height, width)
        assert torch.isfinite(decoded).all()

    @pytest.mark.parametrize("height, width", [(64, 96), (96, 64)])
    @torch.no_grad()
    def test_tile_placement_and_blending_are_exact_for_local_operators(self, tiny_vae, height, width):
        # With per-tile operators that see no context beyond their receptive field, overlapping tiles agree wherever
        # they overlap, so any correctly placed and normalised blend reproduces the untiled result exactly. A tile put
        # at the wrong offset, or blend weights that do not sum to one, would show up here.
        # Stand-ins: average pooling for the encoder, nearest upsampling (each latent pixel becomes a block) for the
        # decoder, whose module is kept so that everything else the model reads from it stays in place. Tiled decoding
        # runs the stem on the whole latent (here it doubles the resolution, as the paper's decoder's does) and tiles
        # the rest, so the tile size, stride and overlap are rescaled to the stem's output.
        tiny_vae._encode_untiled = lambda images: F.avg_pool2d(images, FACTOR)
        upsample = lambda hidden_states, factor: F.interpolate(hidden_states, scale_factor=factor, mode="nearest")  # noqa: E731
        tiny_vae.decoder.forward = lambda latents: upsample(latents, FACTOR)
        tiny_vae._decode_stem = lambda latents: (upsample(latents, 2), None)
        tiny_vae._decode_upsampling_path = lambda hidden_states, up_blocks: upsample(hidden_states, FACTOR // 2)
        images = make_images(1, height, width)
        latents = make_latents(1, height // FACTOR, width // FACTOR)

        untiled_latents = tiny_vae.encode(images).latent_dist.mode()
        untiled_decoded = tiny_vae.decode(latents).sample
        _enable_small_tiles(tiny_vae)
        assert torch.allclose(tiny_vae.encode(images).latent_dist.mode(), untiled_latents, atol=1e-6)
        assert torch.allclose(tiny_vae.decode(latents).sample, untiled_decoded, atol=1e-6)

    @pytest.mark.parametrize("height, width", [(64, 96), (96, 64)])
    @torch.no_grad()
    def test_tiled_encode_is_close_to_untiled(self, tiny_vae, height, width):
        images = make_images(1, height, width)
        latents = tiny_vae.encode(images).latent_dist.mode()
        _enable_small_tiles(tiny_vae)
        tiled_latents = tiny_vae.encode(images).latent_dist.mode()
        # Each 32 px tile is encoded by the ViT on its own, so the latents can only approximate the untiled ones
        # (DESIGN.md: measured, not hidden). The yardstick is a misplaced tile: a latent off by one position differs
        # from the right one by about the mean difference between neighbouring latents. Measured with random weights:
        # tiled vs untiled is ~0.2x that baseline; 0.5x still separates a correct tiling from a shifted one.
        tiling_error = (tiled_latents - latents).abs().mean()
        neighbour_difference = (latents - latents.roll(1, dims=-1)).abs().mean()
        assert tiling_error < 0.5 * neighbour_difference

    @pytest.mark.parametrize("height, width", [(64, 96), (96, 64)])
    @torch.no_grad()
    def test_tiled_decode_is_closer_to_untiled_than_autoencoder_kl_tiling(self, tiny_vae, height, width):
        # With random weights the GroupNorm statistics and the attention of a 32 px tile differ from the full image's,
        # so tiled and untiled decodes differ by up to ~2 (diffusers' own tiling test only bounds a signed max by 0.5,
        # and only where its tiling is not even triggered). The justified reference is diffusers' AutoencoderKL
        # running the *same* decoder weights with the same tile size and overlap, which tiles the whole decoder.
        # Ours runs the attention stem on the whole latent; measured over 3 seeds and both shapes: 0.30-0.40x
        # AutoencoderKL's mean abs difference (0.07-0.10 vs 0.23-0.25), where tiling the whole decoder with our blend
        # gave 0.84x.
        reference = AutoencoderKL(
            down_block_types=("DownEncoderBlock2D",) * 3,
            use_post_quant_conv=False,
            **TINY_DECODER_CONFIG,
        ).eval()
        reference.decoder.load_state_dict(tiny_vae.decoder.state_dict())
        latents = tiny_vae.encode(make_images(1, height, width)).latent_dist.mode()
        decoded = tiny_vae.decode(latents).sample
        assert torch.equal(reference.decode(latents).sample, decoded)

        _enable_small_tiles(tiny_vae)
        _enable_small_tiles(reference)
        tiled_error = (tiny_vae.decode(latents).sample - decoded).abs().mean()
        reference_tiled_error = (reference.decode(latents).sample - decoded).abs().mean()
        assert tiled_error <= 0.5 * reference_tiled_error

    @torch.no_grad()
    def test_tiled_decode_stem_sees_the_whole_latent(self, tiny_vae):
        # A change in the top-left latents reaches the bottom-right pixels of an untiled decode only through the
        # decoder's global operations, attention and GroupNorm statistics (the convolutions' receptive field is far
        # smaller than 64x96 px). Tiled decoding keeps the stem (attention included) whole; had the stem seen only its
        # tile, as when the whole decoder is tiled, the bottom-right tiles, which do not contain the change, would be
        # exactly as they were.
        latents = make_latents(1, 64 // FACTOR, 96 // FACTOR)
        changed = latents.clone()
        changed[..., :2, :2] += 1.0
        _enable_small_tiles(tiny_vae)
        bottom_right = (Ellipsis, slice(-16, None), slice(-16, None))
        difference = tiny_vae.decode(changed).sample[bottom_right] - tiny_vae.decode(latents).sample[bottom_right]
        assert difference.abs().max() > 1e-4

    @torch.no_grad()
    def test_tiles_larger_than_the_image_change_nothing(self, tiny_vae):
        images = make_images(1, 64, 96)
        latents = tiny_vae.encode(images).latent_dist.mode()
        decoded = tiny_vae.decode(latents).sample
        tiny_vae.enable_tiling()
        tiny_vae.tile_sample_min_size = 128
        tiny_vae.tile_latent_min_size = 128 // FACTOR
        assert torch.equal(tiny_vae.encode(images).latent_dist.mode(), latents)
        assert torch.equal(tiny_vae.decode(latents).sample, decoded)

    def test_default_tile_size_follows_sample_size(self, tiny_vae):
        assert tiny_vae.tile_sample_min_size == TINY_CONFIG["sample_size"]
        assert tiny_vae.tile_latent_min_size == TINY_CONFIG["sample_size"] // FACTOR


# ---------------------------------------------------------------------------------------------------------------------
# Training: gradient checkpointing
# ---------------------------------------------------------------------------------------------------------------------


def _reconstruction_gradients(vae: AlignedAutoencoderKL, images: torch.Tensor) -> dict[str, torch.Tensor]:
    vae.train()
    vae.zero_grad(set_to_none=True)
    reconstruction = vae(images).sample
    F.mse_loss(reconstruction, images).backward()
    return {name: parameter.grad.clone() for name, parameter in vae.named_parameters() if parameter.grad is not None}


class TestGradientCheckpointing:
    def test_gradients_match_without_checkpointing(self, tiny_vae):
        checkpointed = copy.deepcopy(tiny_vae)
        checkpointed.enable_gradient_checkpointing()
        images = make_images(2, 32, 48)

        gradients = _reconstruction_gradients(tiny_vae, images)
        checkpointed_gradients = _reconstruction_gradients(checkpointed, images)

        # Stage 2 fine-tunes the encoder, so every parameter, encoder included, must receive its gradient.
        trainable = {name for name, parameter in tiny_vae.named_parameters() if parameter.requires_grad}
        assert set(gradients) == trainable
        assert any(name.startswith("encoder.") for name in gradients)
        assert set(checkpointed_gradients) == set(gradients)
        for name, gradient in gradients.items():
            assert torch.allclose(checkpointed_gradients[name], gradient, atol=1e-5), name

    def test_flag_reaches_encoder_layers_and_decoder(self, tiny_vae):
        tiny_vae.enable_gradient_checkpointing()
        assert tiny_vae.decoder.gradient_checkpointing is True
        encoder_flags = [
            name
            for name, module in tiny_vae.encoder.named_modules()
            if getattr(module, "gradient_checkpointing", False)
        ]
        assert any(".layer." in name for name in encoder_flags), encoder_flags

    @pytest.mark.parametrize("checkpointing, expected_calls", [(False, 1), (True, 2)])
    def test_checkpointing_recomputes_encoder_and_decoder_blocks(self, tiny_vae, checkpointing, expected_calls):
        # The flag alone proves nothing: the recomputation in the backward pass is what saves memory.
        if checkpointing:
            tiny_vae.enable_gradient_checkpointing()
        calls = {"encoder": 0, "decoder": 0}
        encoder_submodule = tiny_vae.encoder.encoder.layer[0].attention
        decoder_submodule = tiny_vae.decoder.up_blocks[0].resnets[0]
        encoder_submodule.register_forward_hook(lambda *_: calls.__setitem__("encoder", calls["encoder"] + 1))
        decoder_submodule.register_forward_hook(lambda *_: calls.__setitem__("decoder", calls["decoder"] + 1))
        _reconstruction_gradients(tiny_vae, make_images())
        assert calls == {"encoder": expected_calls, "decoder": expected_calls}


# ---------------------------------------------------------------------------------------------------------------------
# dtypes
# ---------------------------------------------------------------------------------------------------------------------


class TestDtypes:
    @pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bfloat16", "float16"])
    @torch.no_grad()
    def test_half_precision_model_round_trips_float32_images(self, tiny_vae, dtype):
        if not cpu_supports(dtype):
            pytest.skip(f"this CPU build of torch cannot run {dtype} convolutions")
        # Whatever the model dtype, the encoder input is resized with antialiased bicubic interpolation, which CPU
        # torch implements only in float32; pipelines pass float32 images to a bf16 VAE on CPU.
        tiny_vae.to(dtype)
        latents = tiny_vae.encode(make_images()).latent_dist.mode()
        assert latents.dtype == dtype and torch.isfinite(latents).all()
        decoded = tiny_vae.decode(latents).sample
        assert decoded.dtype == dtype and torch.isfinite(decoded).all()
        assert decoded.shape == (2, 3, 32, 32)

    @pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bfloat16", "float16"])
    @torch.no_grad()
    def test_half_precision_model_decodes_float32_latents(self, tiny_vae, dtype):
        if not cpu_supports(dtype):
            pytest.skip(f"this CPU build of torch cannot run {dtype} convolutions")
        tiny_vae.to(dtype)
        decoded = tiny_vae.decode(make_latents()).sample
        assert decoded.dtype == dtype and torch.isfinite(decoded).all()

    @torch.no_grad()
    def test_layerwise_casting_decodes(self, tiny_vae):
        # diffusers' `enable_layerwise_casting` stores weights in a low-precision dtype and upcasts them per layer;
        # the inputs must stay in the compute dtype. AutoencoderKL supports it, so a drop-in replacement must too.
        latents = make_latents()
        expected = tiny_vae.decode(latents).sample
        tiny_vae.enable_layerwise_casting(storage_dtype=torch.bfloat16, compute_dtype=torch.float32)
        decoded = tiny_vae.decode(latents).sample
        assert decoded.dtype == torch.float32
        assert torch.allclose(decoded, expected, atol=0.1)

    @torch.no_grad()
    def test_layerwise_casting_encodes(self, tiny_vae):
        images = make_images()
        expected = tiny_vae.encode(images).latent_dist.mode()
        tiny_vae.enable_layerwise_casting(storage_dtype=torch.bfloat16, compute_dtype=torch.float32)
        latents = tiny_vae.encode(images).latent_dist.mode()
        assert latents.dtype == torch.float32
        assert torch.allclose(latents, expected, atol=0.05)

    def test_force_upcast_defaults_to_true(self, tiny_vae):
        assert inspect.signature(AlignedAutoencoderKL.__init__).parameters["force_upcast"].default is True
        assert tiny_vae.config.force_upcast is True


# ---------------------------------------------------------------------------------------------------------------------
# The config fields that pipelines read, and latent normalisation
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def paper_tokenizers():
    # The meta device builds the paper's 350M-parameter models without allocating or initialising any weight
    # (~0.2 s instead of ~9 s each); parameter counts and configs are all these tests read.
    with torch.device("meta"):
        return {
            name: AlignedAutoencoderKL.from_preset(name)
            for name in ("aligntok-dinov2-large-f16d32", "aligntok-dinov2-large-f16d64")
        }


def _num_parameters(module: nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


class TestPipelineConfig:
    def test_paper_tokenizer_sizes(self, paper_tokenizers):
        vae = paper_tokenizers["aligntok-dinov2-large-f16d32"]
        assert _num_parameters(vae.encoder) == pytest.approx(304e6, rel=0.01)  # DINOv2-L/14
        assert _num_parameters(vae.decoder) == pytest.approx(41.4e6, rel=0.01)  # the paper's ~42M LDM decoder
        # diffusers pipelines compute vae_scale_factor from block_out_channels.
        assert 2 ** (len(vae.config.block_out_channels) - 1) == 16 == vae.spatial_compression_ratio
        assert vae.config.latent_channels == 32
        assert vae.decoder.conv_in.in_channels == 32

    def test_64_channel_variant(self, paper_tokenizers):
        vae = paper_tokenizers["aligntok-dinov2-large-f16d64"]
        assert vae.config.latent_channels == 64
        assert vae.decoder.conv_in.in_channels == 64
        assert vae.adapter.net[-1].out_features == 64
        assert vae.spatial_compression_ratio == 16

    def test_default_constructor_is_the_paper_tokenizer(self, paper_tokenizers):
        with torch.device("meta"):
            vae = AlignedAutoencoderKL()
        paper = paper_tokenizers["aligntok-dinov2-large-f16d32"]
        assert saved_config(vae) == saved_config(paper)
        assert vae.config.force_upcast is True

    def test_shift_and_scaling_factor_are_floats(self, paper_tokenizers, tiny_vae, tmp_path):
        # FLUX and SD3 pipelines compute `(z - shift_factor) * scaling_factor`: None would crash them.
        tiny_vae.save_pretrained(tmp_path)
        reloaded = AlignedAutoencoderKL.from_pretrained(tmp_path)
        for vae in (*paper_tokenizers.values(), tiny_vae, reloaded):
            assert isinstance(vae.config.shift_factor, float)
            assert isinstance(vae.config.scaling_factor, float)

    def test_normalize_latents_with_shift_and_scaling(self):
        vae = make_tiny_vae(shift_factor=0.3, scaling_factor=1.7)
        latents = make_latents()
        normalized = vae.normalize_latents(latents)
        assert torch.allclose(normalized, (latents - 0.3) * 1.7, atol=1e-6)
        assert torch.allclose(vae.denormalize_latents(normalized), latents, atol=1e-5)

    def test_normalize_latents_with_per_channel_statistics(self):
        mean = [0.1 * channel - 0.3 for channel in range(LATENT_CHANNELS)]
        std = [0.5 + 0.25 * channel for channel in range(LATENT_CHANNELS)]
        # shift_factor is set too, to show that per-channel statistics take its place.
        vae = make_tiny_vae(latents_mean=mean, latents_std=std, scaling_factor=0.8, shift_factor=10.0)
        latents = make_latents()
        normalized = vae.normalize_latents(latents)
        expected = torch.empty_like(latents)
        for channel in range(LATENT_CHANNELS):
            expected[:, channel] = (latents[:, channel] - mean[channel]) / std[channel] * 0.8
        assert torch.allclose(normalized, expected, atol=1e-6)
        assert torch.allclose(vae.denormalize_latents(normalized), latents, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------------------
# Input validation: every bad input gets a clear error or warning
# ---------------------------------------------------------------------------------------------------------------------


class TestInputValidation:
    @pytest.mark.parametrize("channels", [1, 4])
    def test_non_rgb_images(self, tiny_vae, channels):
        images = torch.zeros(1, channels, 32, 32)
        with pytest.raises(ValueError, match="RGB") as error:
            tiny_vae.encode(images)
        assert f"{channels} channels" in str(error.value)

    @pytest.mark.parametrize(
        "height, width, suggestion",
        [(30, 30, r"(28|32)x(28|32)"), (35, 45, r"36x44"), (32, 50, r"32x(48|52)")],
    )
    def test_size_not_divisible_by_the_factor_names_the_nearest_valid_size(self, tiny_vae, height, width, suggestion):
        with pytest.raises(ValueError, match=f"{height}x{width}") as error:
            tiny_vae.encode(torch.zeros(1, 3, height, width))
        assert re.search(suggestion, str(error.value)), str(error.value)

    def test_empty_batch(self, tiny_vae):
        with pytest.raises(ValueError, match="empty"):
            tiny_vae.encode(torch.zeros(0, 3, 32, 32))
        with pytest.raises(ValueError, match="empty"):
            tiny_vae.decode(torch.zeros(0, LATENT_CHANNELS, 8, 8))

    @pytest.mark.parametrize("dtype", [torch.uint8, torch.int64])
    def test_integer_images(self, tiny_vae, dtype):
        with pytest.raises(TypeError, match=str(dtype)):
            tiny_vae.encode(torch.zeros(1, 3, 32, 32, dtype=dtype))

    def test_unbatched_image(self, tiny_vae):
        with pytest.raises(ValueError, match=r"\(3, 32, 32\)"):
            tiny_vae.encode(torch.zeros(3, 32, 32))

    def test_images_in_0_255_warn(self, tiny_vae):
        with pytest.warns(UserWarning, match=r"\[-1, 1\]"):
            tiny_vae.encode(make_images() * 127.5 + 127.5)

    def test_images_in_range_do_not_warn(self, tiny_vae):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            tiny_vae.encode(make_images())

    def test_latents_with_wrong_channel_count(self, tiny_vae):
        with pytest.raises(ValueError, match=f"{LATENT_CHANNELS}"):
            tiny_vae.decode(torch.zeros(1, 4 * LATENT_CHANNELS, 4, 4))  # e.g. FLUX-packed latents
        with pytest.raises(ValueError):
            tiny_vae.decode(torch.zeros(LATENT_CHANNELS, 8, 8))

    def test_unknown_encoder_type_lists_the_options(self):
        with pytest.raises(ValueError, match="clip") as error:
            AlignedAutoencoderKL.from_preset("tiny", encoder_type="clip")
        for encoder_type in FOUNDATION_ENCODERS:
            assert repr(encoder_type) in str(error.value)

    def test_unknown_encoder_config_key_is_named(self):
        encoder_config = {**TINY_CONFIG["encoder_config"], "hidden_sise": 64}
        with pytest.raises(ValueError, match="hidden_sise"):
            AlignedAutoencoderKL.from_preset("tiny", encoder_config=encoder_config)

    def test_mismatched_decoder_lists(self):
        with pytest.raises(ValueError, match="up_block_types"):
            AlignedAutoencoderKL.from_preset("tiny", block_out_channels=(16, 32))

    @pytest.mark.parametrize("name", ["latents_mean", "latents_std"])
    def test_latent_statistics_of_wrong_length(self, name):
        statistics = {"latents_mean": [0.0] * LATENT_CHANNELS, "latents_std": [1.0] * LATENT_CHANNELS, name: [1.0] * 4}
        with pytest.raises(ValueError, match=name):
            AlignedAutoencoderKL.from_preset("tiny", **statistics)

    @pytest.mark.parametrize("given", ["latents_mean", "latents_std"])
    def test_latent_statistics_set_alone(self, given):
        with pytest.raises(ValueError, match="set together"):
            AlignedAutoencoderKL.from_preset("tiny", **{given: [0.5] * LATENT_CHANNELS})

    def test_non_rgb_in_channels(self):
        with pytest.raises(ValueError, match="RGB"):
            AlignedAutoencoderKL.from_preset("tiny", in_channels=4)

    def test_unknown_preset_lists_the_presets(self):
        with pytest.raises(ValueError, match="aligntok-dinov2-large-f16d32"):
            AlignedAutoencoderKL.from_preset("aligntok-dinov3")


# ---------------------------------------------------------------------------------------------------------------------
# Encoder families
# ---------------------------------------------------------------------------------------------------------------------


class TestEncoderFamilies:
    @pytest.mark.parametrize("encoder_type", list(TINY_ENCODER_CONFIGS))
    @torch.no_grad()
    def test_encoder_family_builds_and_uses_row_major_patch_tokens(self, encoder_type):
        vae = make_family_vae(encoder_type)
        assert type(vae.encoder) is ENCODER_CLASSES[encoder_type]
        images = make_images(2, 32, 48)
        latents = vae.encode(images).latent_dist.mode()
        assert latents.shape == (2, LATENT_CHANNELS, 8, 12)
        assert vae.decode(latents).sample.shape == (2, 3, 32, 48)

        # By hand: normalise, run the transformers model, drop CLS/register tokens, lay the patches out row-major.
        forward_kwargs = {}
        if encoder_type in ("siglip2", "mae"):
            forward_kwargs["interpolate_pos_encoding"] = True
        if encoder_type == "mae":
            forward_kwargs["noise"] = torch.arange(8 * 12, dtype=torch.float32).expand(2, -1)
        pixel_values = normalize_for_encoder(vae, images)
        hidden_states = vae.encoder(pixel_values=pixel_values, **forward_kwargs).last_hidden_state
        assert hidden_states.shape[1] == NUM_PREFIX_TOKENS[encoder_type] + 8 * 12
        tokens = hidden_states[:, NUM_PREFIX_TOKENS[encoder_type] :]
        assert torch.allclose(latents, latents_from_patch_tokens(vae, tokens, 8, 12), atol=1e-5)

    @torch.no_grad()
    def test_dinov2_resizes_to_the_patch_grid(self, tiny_vae):
        # The tiny preset has patch 3 with f4 (as the paper's patch 14 with f16): a 32x48 image is resized to 24x36.
        images = make_images(2, 32, 48)
        latents = tiny_vae.encode(images).latent_dist.mode()
        pixel_values = F.interpolate(
            normalize_for_encoder(tiny_vae, images), size=(24, 36), mode="bicubic", align_corners=False, antialias=True
        )
        tokens = tiny_vae.encoder(pixel_values=pixel_values).last_hidden_state[:, 1:]
        assert torch.allclose(latents, latents_from_patch_tokens(tiny_vae, tokens, 8, 12), atol=1e-5)

    @torch.no_grad()
    def test_mae_keeps_every_patch_in_order(self):
        # MAE checkpoints ship mask_ratio=0.75; a tokenizer must see every patch whatever the config says.
        vae = make_tiny_vae(encoder_type="mae", encoder_config={**TINY_ENCODER_CONFIGS["mae"], "mask_ratio": 0.75})
        assert vae.encoder.config.mask_ratio == 0.0
        images = make_images(2, 32, 48)
        latents = vae.encode(images).latent_dist.mode()

        # Independent reference: let ViTMAE shuffle the patches randomly, then undo the shuffle with its ids_restore.
        # Attention is permutation-equivariant and the position embeddings are added before shuffling, so the
        # restored tokens are the row-major patch tokens.
        noise = torch.rand(2, 8 * 12, generator=torch.Generator().manual_seed(0))
        output = vae.encoder(
            pixel_values=normalize_for_encoder(vae, images), noise=noise, interpolate_pos_encoding=True
        )
        shuffled_tokens = output.last_hidden_state[:, 1:]
        index = output.ids_restore.unsqueeze(-1).expand(-1, -1, shuffled_tokens.shape[-1])
        tokens = torch.gather(shuffled_tokens, 1, index)
        assert torch.allclose(latents, latents_from_patch_tokens(vae, tokens, 8, 12), atol=1e-5)

    def test_family_image_statistics(self):
        assert tuple(make_family_vae("siglip2").config.encoder_image_mean) == (0.5, 0.5, 0.5)
        assert tuple(make_family_vae("mae").config.encoder_image_std) == (0.229, 0.224, 0.225)

    @pytest.mark.parametrize("encoder_type", ["dinov2_with_registers", "siglip2", "mae"])
    def test_encoder_family_round_trip(self, tmp_path, encoder_type):
        vae = make_family_vae(encoder_type)
        vae.save_pretrained(tmp_path)
        loaded = AlignedAutoencoderKL.from_pretrained(tmp_path).eval()
        assert type(loaded.encoder) is ENCODER_CLASSES[encoder_type]
        images = make_images()
        with torch.no_grad():
            assert torch.equal(loaded(images).sample, vae(images).sample)


# ---------------------------------------------------------------------------------------------------------------------
# from_foundation_encoder: pretrained transformers checkpoints saved locally
# ---------------------------------------------------------------------------------------------------------------------


# Each writer saves a tiny random transformers checkpoint and returns (the weights the encoder must end up with, keyed
# as in the encoder's state dict; the checkpoint's vision config).


def _save_dinov2(path):
    model = Dinov2Model(Dinov2Config(**TINY_ENCODER_CONFIGS["dinov2"]))
    model.save_pretrained(path)
    return model.state_dict(), model.config


def _save_dinov2_with_registers(path):
    model = Dinov2WithRegistersModel(Dinov2WithRegistersConfig(**TINY_ENCODER_CONFIGS["dinov2_with_registers"]))
    model.save_pretrained(path)
    return model.state_dict(), model.config


def _save_siglip_with_text_tower(path):
    text_config = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "vocab_size": 64,
        "max_position_embeddings": 16,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 0,
    }
    config = SiglipConfig(text_config=text_config, vision_config=TINY_ENCODER_CONFIGS["siglip2"])
    model = SiglipModel(config)
    model.save_pretrained(path)
    # transformers 5 keys SiglipVisionModel's weights without the `vision_model.` prefix that SiglipModel uses.
    vision_weights = {
        name.removeprefix("vision_model."): tensor
        for name, tensor in model.state_dict().items()
        if name.startswith("vision_model.")
    }
    return vision_weights, model.config.vision_config


CHECKPOINT_WRITERS = {
    "dinov2": _save_dinov2,
    "dinov2_with_registers": _save_dinov2_with_registers,
    "siglip2": _save_siglip_with_text_tower,
}


class TestFromFoundationEncoder:
    @pytest.mark.parametrize("encoder_type", list(CHECKPOINT_WRITERS))
    def test_loads_encoder_weights_and_architecture(self, tmp_path, encoder_type):
        torch.manual_seed(0)
        source_weights, source_config = CHECKPOINT_WRITERS[encoder_type](tmp_path / "checkpoint")
        vae = AlignedAutoencoderKL.from_foundation_encoder(str(tmp_path / "checkpoint"), **TINY_DECODER_CONFIG).eval()

        assert vae.config.encoder_type == encoder_type
        assert type(vae.encoder) is ENCODER_CLASSES[encoder_type]
        for key in ("hidden_size", "num_hidden_layers", "patch_size"):
            assert vae.config.encoder_config[key] == getattr(source_config, key), key

        encoder_weights = vae.encoder.state_dict()
        # Only the vision tower is taken: no text tower, and no pooling head (AlignTok uses the patch tokens).
        assert not any(re.search(r"(^|\.)(text_model|head)\.", name) for name in encoder_weights)
        for name, tensor in encoder_weights.items():
            assert torch.equal(tensor, source_weights[name]), name
        patch_embedding = next(name for name in encoder_weights if "patch_embedding" in name)
        assert torch.equal(encoder_weights[patch_embedding], source_weights[patch_embedding])

        # The tokenizer saved after loading carries the pretrained weights, not a fresh initialisation.
        vae.save_pretrained(tmp_path / "tokenizer")
        reloaded = AlignedAutoencoderKL.from_pretrained(tmp_path / "tokenizer").eval()
        for name, tensor in reloaded.encoder.state_dict().items():
            assert torch.equal(tensor, source_weights[name]), name
        images = make_images()
        with torch.no_grad():
            assert torch.equal(reloaded(images).sample, vae(images).sample)

    def test_wrong_encoder_type_names_both(self, tmp_path):
        _save_dinov2(tmp_path)
        with pytest.raises(ValueError, match="dinov2") as error:
            AlignedAutoencoderKL.from_foundation_encoder(str(tmp_path), encoder_type="mae", **TINY_DECODER_CONFIG)
        assert "mae" in str(error.value)

    def test_disagreeing_encoder_config_names_the_key(self, tmp_path):
        _save_dinov2(tmp_path)
        with pytest.raises(ValueError, match="hidden_size"):
            AlignedAutoencoderKL.from_foundation_encoder(
                str(tmp_path), encoder_config={"hidden_size": 64}, **TINY_DECODER_CONFIG
            )
        agreeing = AlignedAutoencoderKL.from_foundation_encoder(
            str(tmp_path), encoder_config={"hidden_size": 32}, **TINY_DECODER_CONFIG
        )
        assert agreeing.config.encoder_config["hidden_size"] == 32

    def test_checkpoint_config_keys_the_config_class_does_not_know_do_not_stop_the_load(self, tmp_path):
        """Fine-tuned or converted DINOv2 checkpoints often carry extra config keys (here `intermediate_size`, which
        Dinov2Config does not define: its MLP width is `mlp_ratio * hidden_size`); transformers ignores them, so must we.
        """
        torch.manual_seed(0)
        source_weights, _ = _save_dinov2(tmp_path / "checkpoint")
        config_path = tmp_path / "checkpoint" / "config.json"
        config_path.write_text(json.dumps({**json.loads(config_path.read_text()), "intermediate_size": 64}))

        vae = AlignedAutoencoderKL.from_foundation_encoder(str(tmp_path / "checkpoint"), **TINY_DECODER_CONFIG)
        for name, tensor in vae.encoder.state_dict().items():
            assert torch.equal(tensor, source_weights[name]), name
        assert "intermediate_size" not in vae.config.encoder_config  # the saved tokenizer reloads with a clean config
        vae.save_pretrained(tmp_path / "tokenizer")
        AlignedAutoencoderKL.from_pretrained(tmp_path / "tokenizer")
        # What the user passes is still checked strictly, even a key the checkpoint's config.json has.
        for unknown in ("intermediate_size", "hiden_size"):
            with pytest.raises(ValueError, match=rf"encoder_config has keys \['{unknown}'\] that Dinov2Config"):
                AlignedAutoencoderKL.from_foundation_encoder(
                    str(tmp_path / "checkpoint"), encoder_config={unknown: 64}, **TINY_DECODER_CONFIG
                )


# ---------------------------------------------------------------------------------------------------------------------
# PEFT
# ---------------------------------------------------------------------------------------------------------------------


class TestPeft:
    def test_lora_on_encoder_attention(self, tiny_vae):
        peft = pytest.importorskip("peft")
        images = make_images()
        with torch.no_grad():
            expected = tiny_vae(images).sample

        tiny_vae.add_adapter(peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
        lora_modules = [name for name, module in tiny_vae.named_modules() if hasattr(module, "lora_A")]
        assert len(lora_modules) == 2 * TINY_CONFIG["encoder_config"]["num_hidden_layers"]
        assert all(name.startswith("encoder.") for name in lora_modules)
        with torch.no_grad():
            assert torch.equal(tiny_vae(images).sample, expected)  # LoRA B starts at zero

        # The adapters sit in the computation: their B matrices receive gradients.
        _reconstruction_gradients(tiny_vae, images)
        lora_b_gradients = [parameter.grad for name, parameter in tiny_vae.named_parameters() if "lora_B" in name]
        assert lora_b_gradients and all(grad is not None and grad.abs().sum() > 0 for grad in lora_b_gradients)


# ---------------------------------------------------------------------------------------------------------------------
# The model contract shared with every model of the package (tests/models/model_contract.py)
# ---------------------------------------------------------------------------------------------------------------------


class TestAlignedAutoencoderKLContract(ModelContractTests):
    model_class = AlignedAutoencoderKL

    def build_model(self) -> AlignedAutoencoderKL:
        return make_tiny_vae(latent_noise_std=0.0)  # no latent noise: the train-mode forward is deterministic

    def model_inputs(self, batch_size: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
        return {"sample": make_images(batch_size, 32, 48, seed=seed)}

    def model_output(self, model: AlignedAutoencoderKL, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return model(**inputs).sample
