"""The `LightningDiTTransformer2DModel` options that LightningDiT conversion needs: `timestep_embedding_input`,
`adaln_shift`, `persistent_position_embedding`. Each is checked against the behaviour it stands for, and the defaults
against the model as it was before the options existed (saved configs without them load unchanged)."""

import json

import pytest
import torch

from diffusers_aligntok import LightningDiTTransformer2DModel


TINY_CONFIG = {
    "sample_size": 8,
    "in_channels": 8,
    "patch_size": 1,
    "hidden_size": 32,
    "num_layers": 2,
    "num_attention_heads": 2,
    "num_classes": 10,
}
NEW_OPTIONS = {"timestep_embedding_input": "timestep", "adaln_shift": True, "persistent_position_embedding": False}


def build(seed: int = 0, **overrides) -> LightningDiTTransformer2DModel:
    """A tiny model whose zero-initialised layers have random values (a fresh DiT predicts exactly 0)."""
    torch.manual_seed(seed)
    model = LightningDiTTransformer2DModel(**{**TINY_CONFIG, **overrides})
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if not parameter.any():
                parameter.copy_(0.1 * torch.randn(parameter.shape, generator=generator))
    return model.eval()


def inputs(height: int = 8, width: int = 8):
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(2, 8, height, width, generator=generator)
    sigmas = torch.tensor([0.25, 0.9])
    return latents, sigmas, torch.tensor([3, 10])


def test_the_new_options_default_to_the_previous_model(tmp_path):
    model = build()
    assert {key: model.config[key] for key in NEW_OPTIONS} == NEW_OPTIONS
    assert "patch_embed.pos_embed" not in model.state_dict()
    assert model.transformer_blocks[0].adaln_modulation[-1].out_features == 6 * TINY_CONFIG["hidden_size"]

    # A model saved before the options existed: its config.json lacks them.
    model.save_pretrained(tmp_path)
    config_path = tmp_path / "config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({key: value for key, value in config.items() if key not in NEW_OPTIONS}))
    loaded = LightningDiTTransformer2DModel.from_pretrained(tmp_path).eval()
    assert {key: loaded.config[key] for key in NEW_OPTIONS} == NEW_OPTIONS
    latents, sigmas, labels = inputs()
    with torch.no_grad():
        expected = model(latents, 1000 * sigmas, labels).sample
        torch.testing.assert_close(loaded(latents, 1000 * sigmas, labels).sample, expected, rtol=0, atol=0)


def test_flow_time_embeds_one_minus_sigma():
    """With `"flow_time"`, `timestep = 1000 * sigma` gets the features that `"timestep"` gives `t = 1 - sigma`."""
    flow_time = build(timestep_embedding_input="flow_time")
    raw = build(timestep_embedding_input="timestep")
    raw.load_state_dict(flow_time.state_dict())
    latents, sigmas, labels = inputs()
    with torch.no_grad():
        expected = raw(latents, 1 - sigmas, labels).sample
        actual = flow_time(latents, 1000 * sigmas, labels).sample
        torch.testing.assert_close(actual, expected, rtol=1e-6, atol=1e-6)
        assert not torch.allclose(raw(latents, 1000 * sigmas, labels).sample, actual, atol=1e-3)


def test_adaln_without_shift_equals_a_zero_shift():
    """`adaln_shift=False` (LightningDiT's wo_shift) is the 6-vector modulation with its shift rows at zero."""
    without_shift = build(adaln_shift=False)
    dim = TINY_CONFIG["hidden_size"]
    assert without_shift.transformer_blocks[0].adaln_modulation[-1].weight.shape == (4 * dim, dim)
    with_shift = build(adaln_shift=True)
    state = without_shift.state_dict()
    for index in range(TINY_CONFIG["num_layers"]):
        for suffix in ("weight", "bias"):
            key = f"transformer_blocks.{index}.adaln_modulation.1.{suffix}"
            scale_msa, gate_msa, scale_mlp, gate_mlp = state[key].chunk(4)
            zero = torch.zeros_like(scale_msa)
            state[key] = torch.cat([zero, scale_msa, gate_msa, zero, scale_mlp, gate_mlp])
    with_shift.load_state_dict(state)
    latents, sigmas, labels = inputs()
    with torch.no_grad():
        torch.testing.assert_close(
            without_shift(latents, 1000 * sigmas, labels).sample,
            with_shift(latents, 1000 * sigmas, labels).sample,
            rtol=1e-6,
            atol=1e-6,
        )


def test_a_persistent_position_embedding_is_saved_loaded_and_used(tmp_path):
    model = build(persistent_position_embedding=True)
    recomputed = build().patch_embed.pos_embed
    torch.testing.assert_close(model.state_dict()["patch_embed.pos_embed"], recomputed, rtol=0, atol=0)
    with torch.no_grad():
        model.patch_embed.pos_embed.add_(0.01)  # as a LightningDiT EMA copy differs from the exact sin-cos values
    model.save_pretrained(tmp_path)
    loaded = LightningDiTTransformer2DModel.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(loaded.patch_embed.pos_embed, recomputed + 0.01, rtol=0, atol=0)
    latents, sigmas, labels = inputs()
    timesteps = 1000 * sigmas
    with torch.no_grad():
        expected = model(latents, timesteps, labels).sample
        torch.testing.assert_close(loaded(latents, timesteps, labels).sample, expected, rtol=0, atol=0)
        # Other grids get a freshly computed embedding, as without the option.
        wide, _, _ = inputs(height=8, width=12)
        default = build()
        default.load_state_dict({k: v for k, v in loaded.state_dict().items() if k != "patch_embed.pos_embed"})
        torch.testing.assert_close(loaded(wide, timesteps, labels).sample, default(wide, timesteps, labels).sample)


def test_an_unknown_timestep_embedding_input_is_rejected_with_the_choices():
    with pytest.raises(
        ValueError, match=r"timestep_embedding_input='sigma' is not one of \('timestep', 'flow_time'\)"
    ):
        build(timestep_embedding_input="sigma")
