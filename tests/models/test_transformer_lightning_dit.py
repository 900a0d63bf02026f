"""`LightningDiTTransformer2DModel`: shapes, DiT initialisation, QK-Norm, label dropout, RoPE, gradient checkpointing,
preset sizes and input validation; save/load, dtypes and determinism come from the shared model contract
(`model_contract.py`). Every model is tiny (hidden 32, 2 layers) except the presets, which are built on the meta
device so that counting XL's 675M parameters allocates nothing."""

import inspect

import pytest
import torch

from diffusers_aligntok import DIT_PRESETS, LightningDiTTransformer2DModel

from .model_contract import ModelContractTests


TINY_CONFIG = {
    "sample_size": 8,
    "in_channels": 8,
    "patch_size": 1,
    "hidden_size": 32,
    "num_layers": 2,
    "num_attention_heads": 2,
    "num_classes": 10,
}
NUM_CLASSES = TINY_CONFIG["num_classes"]


def build_tiny_dit(**overrides) -> LightningDiTTransformer2DModel:
    torch.manual_seed(0)
    return LightningDiTTransformer2DModel(**{**TINY_CONFIG, **overrides})


def randomize_zero_initialized(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Gives the zero-initialised layers (adaLN modulations, output layer, biases) random values, as after training;
    a freshly initialised DiT predicts exactly 0, which would make most behaviour untestable."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if not parameter.any():
                parameter.copy_(0.1 * torch.randn(parameter.shape, generator=generator))
    return model


def make_inputs(batch_size: int = 2, height: int = 8, width: int = 8, channels: int = 8, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    latents = torch.randn(batch_size, channels, height, width, generator=generator)
    timestep = torch.rand(batch_size, generator=generator) * 1000
    class_labels = torch.randint(0, NUM_CLASSES, (batch_size,), generator=generator)
    return latents, timestep, class_labels


@pytest.fixture(scope="module")
def trained_like_dit():
    return randomize_zero_initialized(build_tiny_dit()).eval()


# ---------------------------------------------------------------------------------------------------------------
# Shapes
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "patch_size, height, width",
    [(1, 8, 8), (1, 8, 12), (1, 16, 4), (2, 8, 8), (2, 8, 12)],
    ids=["p1-square", "p1-wide", "p1-tall", "p2-square", "p2-wide"],
)
def test_forward_returns_a_velocity_shaped_like_the_latents(patch_size, height, width):
    model = randomize_zero_initialized(build_tiny_dit(patch_size=patch_size)).eval()
    latents, timestep, class_labels = make_inputs(height=height, width=width)
    output = model(latents, timestep, class_labels, return_dict=True).sample
    assert output.shape == latents.shape
    assert torch.isfinite(output).all()
    (tuple_output,) = model(latents, timestep, class_labels, return_dict=False)
    torch.testing.assert_close(tuple_output, output)


def test_out_channels_defaults_to_in_channels_and_can_differ():
    assert build_tiny_dit().out_channels == TINY_CONFIG["in_channels"]
    model = randomize_zero_initialized(build_tiny_dit(out_channels=3, patch_size=2)).eval()
    latents, timestep, class_labels = make_inputs(height=8, width=12)
    assert model(latents, timestep, class_labels).sample.shape == (2, 3, 8, 12)


def test_a_scalar_timestep_is_broadcast_to_the_batch(trained_like_dit):
    latents, _, class_labels = make_inputs()
    scalar = trained_like_dit(latents, 250.0, class_labels).sample
    per_sample = trained_like_dit(latents, torch.full((2,), 250.0), class_labels).sample
    torch.testing.assert_close(scalar, per_sample)


def test_output_depends_on_timestep_class_and_position(trained_like_dit):
    latents, timestep, class_labels = make_inputs()
    reference = trained_like_dit(latents, timestep, class_labels).sample
    assert not torch.allclose(trained_like_dit(latents, timestep + 300, class_labels).sample, reference)
    assert not torch.allclose(trained_like_dit(latents, timestep, (class_labels + 1) % NUM_CLASSES).sample, reference)
    # Position embeddings: moving the content must not simply move the prediction.
    shifted = trained_like_dit(latents.roll(1, dims=-1), timestep, class_labels).sample
    assert not torch.allclose(shifted, reference.roll(1, dims=-1), atol=1e-4)


# ---------------------------------------------------------------------------------------------------------------
# DiT initialisation, QK-Norm, RoPE
# ---------------------------------------------------------------------------------------------------------------


def test_zero_init_makes_the_initial_prediction_zero():
    model = build_tiny_dit()
    for block in model.transformer_blocks:
        assert not block.adaln_modulation[-1].weight.any() and not block.adaln_modulation[-1].bias.any()
    assert not model.proj_out.weight.any() and not model.norm_out.linear.weight.any()
    latents, timestep, class_labels = make_inputs(height=8, width=12)
    assert torch.equal(model(latents, timestep, class_labels).sample, torch.zeros_like(latents))
    # ... and it is the initialisation, not the architecture, that makes it zero.
    assert model.patch_embed.proj.weight.std() > 0 and model.class_embedder.embedding_table.weight.std() > 0
    randomize_zero_initialized(model)
    assert model(latents, timestep, class_labels).sample.abs().max() > 1e-3


def test_qk_norm_adds_only_per_head_norm_weights():
    plain = build_tiny_dit()
    with_qk_norm = build_tiny_dit(qk_norm=True)
    plain_shapes = {name: p.shape for name, p in plain.named_parameters()}
    qk_shapes = {name: p.shape for name, p in with_qk_norm.named_parameters()}
    added = set(qk_shapes) - set(plain_shapes)
    head_dim = TINY_CONFIG["hidden_size"] // TINY_CONFIG["num_attention_heads"]
    layers = range(TINY_CONFIG["num_layers"])
    assert added == {f"transformer_blocks.{i}.attn.{norm}.weight" for i in layers for norm in ("norm_q", "norm_k")}
    assert all(qk_shapes[name] == (head_dim,) for name in added)
    assert set(plain_shapes) <= set(qk_shapes)
    assert all(qk_shapes[name] == shape for name, shape in plain_shapes.items())

    randomize_zero_initialized(with_qk_norm).eval()
    latents, timestep, class_labels = make_inputs(height=8, width=12)
    assert with_qk_norm(latents, timestep, class_labels).sample.shape == latents.shape


def test_rope_matches_lightningdit_two_axis_rotary_frequencies():
    """Half of each head rotates with the row index, half with the column, frequencies repeated in pairs
    (LightningDiT's `VisionRotaryEmbeddingFast` with integer positions), on a non-square grid."""
    model = build_tiny_dit(hidden_size=48, num_attention_heads=2)  # head_dim 24: 12 per axis
    grid_height, grid_width, axis_dim = 3, 5, 12
    cos, sin = model._rotary_embedding(grid_height, grid_width, torch.device("cpu"))

    frequencies = 1.0 / (10000 ** (torch.arange(0, axis_dim, 2, dtype=torch.float64) / axis_dim))
    row_angles = torch.outer(torch.arange(grid_height, dtype=torch.float64), frequencies).repeat_interleave(2, dim=-1)
    col_angles = torch.outer(torch.arange(grid_width, dtype=torch.float64), frequencies).repeat_interleave(2, dim=-1)
    angles = torch.cat(
        [
            row_angles[:, None, :].expand(grid_height, grid_width, axis_dim),
            col_angles[None, :, :].expand(grid_height, grid_width, axis_dim),
        ],
        dim=-1,
    ).reshape(grid_height * grid_width, 2 * axis_dim)
    torch.testing.assert_close(cos.double(), angles.cos(), rtol=0, atol=1e-6)
    torch.testing.assert_close(sin.double(), angles.sin(), rtol=0, atol=1e-6)


def test_attention_equals_softmax_attention_with_qk_norm_and_rope():
    model = randomize_zero_initialized(build_tiny_dit(qk_norm=True)).eval()
    attention = model.transformer_blocks[0].attn
    grid_height, grid_width = 2, 3
    hidden_states = torch.randn(2, grid_height * grid_width, TINY_CONFIG["hidden_size"])
    rotary = model._rotary_embedding(grid_height, grid_width, torch.device("cpu"))
    output = attention(hidden_states, image_rotary_emb=rotary)

    def heads(x):
        return x.unflatten(-1, (attention.heads, attention.head_dim)).transpose(1, 2)  # (batch, heads, tokens, dim)

    def rotate(x):  # interleaved pairs (x0, x1) -> (-x1, x0)
        pairs = x.unflatten(-1, (-1, 2))
        return torch.stack([-pairs[..., 1], pairs[..., 0]], dim=-1).flatten(-2)

    cos, sin = (part.float() for part in rotary)
    query = attention.norm_q(heads(attention.to_q(hidden_states)))
    key = attention.norm_k(heads(attention.to_k(hidden_states)))
    query, key = query * cos + rotate(query) * sin, key * cos + rotate(key) * sin
    weights = torch.softmax(query @ key.transpose(-1, -2) / attention.head_dim**0.5, dim=-1)
    expected = attention.to_out[0]((weights @ heads(attention.to_v(hidden_states))).transpose(1, 2).flatten(2))
    torch.testing.assert_close(output, expected, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# Label dropout (classifier-free guidance training)
# ---------------------------------------------------------------------------------------------------------------


def test_label_dropout_happens_only_in_training_mode():
    model = build_tiny_dit(class_dropout_prob=0.5)
    embedder = model.class_embedder
    labels = torch.arange(NUM_CLASSES).repeat(20)
    table = embedder.embedding_table.weight
    null_row = table[NUM_CLASSES]

    model.eval()
    torch.testing.assert_close(embedder(labels), table[labels])

    model.train()
    embeddings = embedder(labels)
    dropped = (embeddings == null_row).all(dim=-1)
    kept = (embeddings == table[labels]).all(dim=-1)
    assert (dropped | kept).all()
    assert 0.3 < dropped.float().mean() < 0.7  # 200 draws at p = 0.5


def test_force_drop_ids_replace_labels_by_the_null_class_in_any_mode():
    model = randomize_zero_initialized(build_tiny_dit(class_dropout_prob=0.0)).eval()
    latents, timestep, class_labels = make_inputs()
    forced = model(latents, timestep, class_labels, force_drop_ids=torch.tensor([1, 0])).sample
    null_first = torch.tensor([NUM_CLASSES, class_labels[1].item()])
    torch.testing.assert_close(forced, model(latents, timestep, null_first).sample)
    # Boolean flags work too, and the null class exists even without label dropout (needed for guidance).
    assert model.class_embedder.embedding_table.num_embeddings == NUM_CLASSES + 1
    as_booleans = model(latents, timestep, class_labels, force_drop_ids=torch.tensor([True, False])).sample
    torch.testing.assert_close(as_booleans, forced)


# ---------------------------------------------------------------------------------------------------------------
# Gradient checkpointing
# ---------------------------------------------------------------------------------------------------------------


def test_gradient_checkpointing_checkpoints_every_block_and_gives_equal_gradients():
    model = randomize_zero_initialized(build_tiny_dit(class_dropout_prob=0.0, qk_norm=True)).train()
    latents, timestep, class_labels = make_inputs(height=8, width=12)

    def gradients():
        model.zero_grad()
        model(latents, timestep, class_labels).sample.square().mean().backward()
        return {name: p.grad.clone() for name, p in model.named_parameters()}

    expected = gradients()
    checkpointed_calls = []

    def counting_checkpoint(module, *args):
        checkpointed_calls.append(type(module).__name__)
        return torch.utils.checkpoint.checkpoint(module.__call__, *args, use_reentrant=False)

    model.enable_gradient_checkpointing(gradient_checkpointing_func=counting_checkpoint)
    assert model.is_gradient_checkpointing
    actual = gradients()
    assert checkpointed_calls == ["LightningDiTBlock"] * TINY_CONFIG["num_layers"]
    assert actual.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=1e-5, atol=1e-6, msg=name)


# ---------------------------------------------------------------------------------------------------------------
# Presets
# ---------------------------------------------------------------------------------------------------------------

# DiT-B/L/XL sizes (Peebles & Xie, table 1); SwiGLU at 2/3 width keeps them. LightningDiT-XL/1 is ~675M.
PRESET_PARAMETERS = {"B": 130e6, "L": 458e6, "XL": 675e6}


@pytest.mark.parametrize("name", ["B", "L", "XL"])
def test_preset_parameter_counts(name):
    with torch.device("meta"):
        model = LightningDiTTransformer2DModel.from_preset(name)
    num_parameters = sum(p.numel() for p in model.parameters())
    assert abs(num_parameters - PRESET_PARAMETERS[name]) / PRESET_PARAMETERS[name] < 0.02, num_parameters
    assert model.config.patch_size == 1 and model.config.in_channels == 32 and model.config.sample_size == 16


def test_defaults_are_lightningdit_xl_1_and_presets_take_overrides():
    defaults = inspect.signature(LightningDiTTransformer2DModel.__init__).parameters
    assert {key: defaults[key].default for key in DIT_PRESETS["XL"]} == DIT_PRESETS["XL"]
    assert defaults["in_channels"].default == 32 and defaults["sample_size"].default == 16
    model = LightningDiTTransformer2DModel.from_preset("tiny", qk_norm=True, num_classes=5)
    assert model.config.qk_norm and model.config.num_classes == 5 and model.config.hidden_size == 32
    with pytest.raises(ValueError, match="'XXL'.*choose one of"):
        LightningDiTTransformer2DModel.from_preset("XXL")


# ---------------------------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------------------------


def test_class_ids_outside_the_range_name_the_id_and_num_classes(trained_like_dit):
    latents, timestep, _ = make_inputs()
    # The null class id (num_classes) is valid input.
    trained_like_dit(latents, timestep, torch.tensor([0, NUM_CLASSES]))
    with pytest.raises(ValueError, match=r"Class id 11 .*num_classes=10"):
        trained_like_dit(latents, timestep, torch.tensor([0, 11]))
    with pytest.raises(ValueError, match=r"Class id -1 .*num_classes=10"):
        trained_like_dit(latents, timestep, torch.tensor([-1, 3]))
    with pytest.raises(TypeError, match="integer class ids"):
        trained_like_dit(latents, timestep, torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        trained_like_dit(latents, timestep, torch.tensor([0, 1, 2]))


def test_latent_shape_errors_name_the_value_and_the_expectation(trained_like_dit):
    _, timestep, class_labels = make_inputs()
    with pytest.raises(ValueError, match=r"4 channels .*in_channels is 8"):
        trained_like_dit(torch.randn(2, 4, 8, 8), timestep, class_labels)
    patch_2 = build_tiny_dit(patch_size=2)
    with pytest.raises(ValueError, match=r"7x8 is not divisible by patch_size=2"):
        patch_2(torch.randn(2, 8, 7, 8), timestep, class_labels)
    with pytest.raises(ValueError, match="scalar timestep or one per latent"):
        trained_like_dit(torch.randn(2, 8, 8, 8), torch.ones(3), class_labels)


def test_bad_configs_are_rejected_with_the_reason():
    with pytest.raises(ValueError, match="not divisible by num_attention_heads"):
        build_tiny_dit(hidden_size=30, num_attention_heads=4)
    with pytest.raises(ValueError, match="divisible by 4"):
        build_tiny_dit(hidden_size=36, num_attention_heads=6)  # head_dim 6
    build_tiny_dit(hidden_size=36, num_attention_heads=6, use_rope=False)


# ---------------------------------------------------------------------------------------------------------------
# The model contract shared with every model of the package (tests/models/model_contract.py)
# ---------------------------------------------------------------------------------------------------------------


class TestLightningDiTContract(ModelContractTests):
    model_class = LightningDiTTransformer2DModel

    def build_model(self) -> LightningDiTTransformer2DModel:
        # QK-Norm and patch 2 exercise the most weights; no label dropout keeps the train-mode forward deterministic.
        return randomize_zero_initialized(build_tiny_dit(qk_norm=True, patch_size=2, class_dropout_prob=0.0)).eval()

    def model_inputs(self, batch_size: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
        latents, timestep, class_labels = make_inputs(batch_size, height=8, width=12, seed=seed)
        return {"hidden_states": latents, "timestep": timestep, "class_labels": class_labels}

    def model_output(self, model: LightningDiTTransformer2DModel, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return model(**inputs).sample
