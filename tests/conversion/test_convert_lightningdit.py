"""`convert_lightningdit_checkpoint`: the converted model computes what LightningDiT computes, for every model type.

The reference is a transcription of LightningDiT's model (`lightningdit_reference.py`). Numerical comparisons run in
float32 on checkpoints written as LightningDiT's train.py writes them, under our convention: the reference gets time
`t` (0 = noise), ours `timestep = 1000 * (1 - t)`, and ours must return minus the reference's velocity to 1e-5 relative
(`max |ours + reference| / max |reference|`; measured about 3e-7).

Sizes: LightningDiT-B/1 at its real depth and width (12 x 768, 130M parameters) on an 8x8 latent grid, so its forward
passes stay under a second on one CPU thread; LightningDiT-XL/1 at its real width and head layout (1152, 16 heads of
72, SwiGLU 3072) and the real 16x16 grid but 2 blocks instead of 28, since the 28 blocks only repeat the same block
and would need ~8 GB for the reference, its checkpoint and the converted model. The full key set and shapes of XL/1
and every other published type are checked on the meta device, where nothing is allocated.
"""

import pytest
import torch
from diffusers.utils import logging as diffusers_logging

from diffusers_aligntok import LightningDiTTransformer2DModel
from diffusers_aligntok.conversion import (
    LIGHTNINGDIT_MODEL_TYPES,
    LightningDiTArchitecture,
    LightningDiTVariant,
    convert_lightningdit_checkpoint,
    convert_lightningdit_state_dict,
    lightningdit_state_dict_shapes,
    load_tensor_checkpoint,
    match_lightningdit_architecture,
    select_state_dict,
)

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
from .lightningdit_reference import LightningDiT_models


TOLERANCE = 1e-5
XL_1_DEPTH_2 = LightningDiTArchitecture(
    "LightningDiT-XL/1 (2 blocks)", depth=2, hidden_size=1152, num_heads=16, patch_size=1
)
PARITY_CASES = {
    # name: (architecture, input_size)
    "B/1": (LIGHTNINGDIT_MODEL_TYPES["LightningDiT-B/1"], 8),
    "XL/1-2-blocks": (XL_1_DEPTH_2, 16),
}
NULL_CLASS = 1000
GUIDANCE_SCALE = 4.0


def convert_tiny(tmp_path, reference, **kwargs):
    path = save_train_py_checkpoint(tmp_path / "tiny.pt", reference)
    kwargs = {"in_channels": TINY_CHANNELS, "num_classes": TINY_NUM_CLASSES, "input_size": TINY_INPUT_SIZE, **kwargs}
    return convert_lightningdit_checkpoint(path, TINY_ARCHITECTURE, **kwargs)


def assert_matches_reference(converted, reference, batch_size=3, num_classes=TINY_NUM_CLASSES, seed=0):
    config = converted.config
    latents, times, labels = reference_inputs(batch_size, config.in_channels, config.sample_size, num_classes, seed)
    with torch.no_grad():
        expected = reference(latents, times, labels)
        actual = converted(latents, 1000 * (1 - times), labels).sample
    difference = relative_difference(-actual, expected)
    assert difference < TOLERANCE, difference
    return difference


# ---------------------------------------------------------------------------------------------------------------
# Parity at real sizes: conditional and null-label forward passes, forward_with_cfg, with and without QK-Norm
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=[False, True], ids=["no-qknorm", "qknorm"])
def real_size_outputs(request, tmp_path_factory):
    """{case: outputs} for B/1 and XL/1 (2 blocks), with or without QK-Norm, on one batch of inputs per case: each
    latent twice, once with its class and once with the null class, at LightningDiT times 0, random and 1."""
    use_qknorm = request.param
    outputs = {}
    for name, (architecture, input_size) in PARITY_CASES.items():
        reference = build_reference(architecture, input_size, in_channels=32, use_qknorm=use_qknorm)
        path = tmp_path_factory.mktemp("checkpoints") / "checkpoint.pt"
        # Released checkpoints hold the EMA weights; train.py's optimizer state would add 1 GB at B/1 for nothing here.
        save_train_py_checkpoint(path, reference, with_optimizer=False)
        converted = convert_lightningdit_checkpoint(path, architecture, use_qknorm=use_qknorm, input_size=input_size)
        path.unlink()
        assert converted.config.qk_norm == use_qknorm and converted.config.timestep_embedding_input == "flow_time"

        latents, times, labels = reference_inputs(3, 32, input_size)
        latents, times = torch.cat([latents, latents]), torch.cat([times, times])
        labels = torch.cat([labels, torch.full_like(labels, NULL_CLASS)])
        with torch.no_grad():
            outputs[name] = {
                "reference": reference(latents, times, labels),
                "reference_with_cfg": reference.forward_with_cfg(latents, times, labels, GUIDANCE_SCALE),
                # Our convention: timestep = 1000 * sigma = 1000 * (1 - t), velocity noise - x0 = -(LightningDiT's).
                "ours": -converted(latents, 1000 * (1 - times), labels).sample,
            }
        del reference, converted
    return outputs


@pytest.mark.parametrize("case", list(PARITY_CASES))
def test_conditional_and_null_label_forward_match_the_reference(real_size_outputs, case):
    outputs = real_size_outputs[case]
    conditional, unconditional = outputs["ours"].chunk(2)
    expected_conditional, expected_unconditional = outputs["reference"].chunk(2)
    assert relative_difference(conditional, expected_conditional) < TOLERANCE
    assert relative_difference(unconditional, expected_unconditional) < TOLERANCE
    # The null class really is another input (guidance would otherwise do nothing).
    assert relative_difference(expected_unconditional, expected_conditional) > 1e-2


@pytest.mark.parametrize("case", list(PARITY_CASES))
def test_forward_with_cfg_is_our_guidance_on_its_first_three_channels(real_size_outputs, case):
    """LightningDiT's `forward_with_cfg` = our conditional and null-class passes combined as its sampler combines them
    (only channels 0-2 guided); AlignTokDiTPipeline guides all channels instead (see `classifier_free_guidance`)."""
    outputs = real_size_outputs[case]
    conditional, unconditional = outputs["ours"].chunk(2)
    guided = unconditional + GUIDANCE_SCALE * (conditional - unconditional)
    expected_first_half, expected_second_half = outputs["reference_with_cfg"].chunk(2)
    assert relative_difference(torch.cat([guided[:, :3], conditional[:, 3:]], 1), expected_first_half) < TOLERANCE
    # Its second half repeats the guided channels and keeps the null-class prediction elsewhere.
    assert relative_difference(torch.cat([guided[:, :3], unconditional[:, 3:]], 1), expected_second_half) < TOLERANCE


# ---------------------------------------------------------------------------------------------------------------
# Every published model type, full size, on the meta device
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(LIGHTNINGDIT_MODEL_TYPES))
def test_every_published_model_type_has_the_expected_keys_and_converts(name):
    architecture = LIGHTNINGDIT_MODEL_TYPES[name]
    use_qknorm = name == "LightningDiT-XL/1"  # the 800-epoch recommendation; the other types without
    with torch.device("meta"):
        reference = LightningDiT_models[name](
            input_size=16, in_channels=32, use_qknorm=use_qknorm, use_swiglu=True, use_rope=True, use_rmsnorm=True
        )
    state_dict = reference.state_dict()
    expected = lightningdit_state_dict_shapes(architecture, LightningDiTVariant(use_qknorm=use_qknorm))
    # Same keys, same order, same shapes as LightningDiT's own state_dict().
    assert list(expected) == list(state_dict)
    assert all(tuple(state_dict[key].shape) == shape for key, shape in expected.items())

    # The type is also found among all nine by its shapes alone.
    assert match_lightningdit_architecture(state_dict, "auto", use_qknorm=use_qknorm)[0] == architecture

    converted, config = convert_lightningdit_state_dict(state_dict, name.removeprefix("LightningDiT-"), use_qknorm)
    with torch.device("meta"):
        model = LightningDiTTransformer2DModel(**config)
    model.load_state_dict(converted, strict=True, assign=True)
    # LightningDiT's `pos_embed` is a (frozen) parameter, ours a buffer; nothing else is added or lost.
    reference_count = sum(parameter.numel() for parameter in reference.parameters())
    ours_count = sum(parameter.numel() for parameter in model.parameters()) + model.patch_embed.pos_embed.numel()
    assert ours_count == reference_count
    if name == "LightningDiT-XL/1":
        assert abs(reference_count - 675e6) / 675e6 < 0.02


# ---------------------------------------------------------------------------------------------------------------
# Checkpoint layouts: train.py's dict, EMA preferred, wrapper prefixes, the flags read off the keys
# ---------------------------------------------------------------------------------------------------------------


def test_train_py_checkpoint_converts_its_ema_weights(tmp_path):
    ema = build_reference(TINY_ARCHITECTURE, TINY_INPUT_SIZE, TINY_CHANNELS, TINY_NUM_CLASSES, seed=0)
    online = build_reference(TINY_ARCHITECTURE, TINY_INPUT_SIZE, TINY_CHANNELS, TINY_NUM_CLASSES, seed=1)
    path = save_train_py_checkpoint(tmp_path / "0080000.pt", ema, model=online)
    assert set(torch.load(path, weights_only=True)) == {"model", "ema", "opt", "config"}
    converted = convert_lightningdit_checkpoint(
        path, TINY_ARCHITECTURE, in_channels=TINY_CHANNELS, num_classes=TINY_NUM_CLASSES, input_size=TINY_INPUT_SIZE
    )
    assert_matches_reference(converted, ema)
    assert not converted.training and converted.dtype == torch.float32

    # Without "ema" the online weights are taken.
    torch.save({"model": online.state_dict()}, tmp_path / "model_only.pt")
    converted = convert_lightningdit_checkpoint(
        tmp_path / "model_only.pt",
        TINY_ARCHITECTURE,
        in_channels=TINY_CHANNELS,
        num_classes=TINY_NUM_CLASSES,
        input_size=TINY_INPUT_SIZE,
    )
    assert_matches_reference(converted, online)


@pytest.mark.parametrize("prefix", ["", "module.", "_orig_mod.", "module._orig_mod."])
def test_bare_state_dicts_with_wrapper_prefixes_convert(tmp_path, prefix):
    reference = build_reference(TINY_ARCHITECTURE, TINY_INPUT_SIZE, TINY_CHANNELS, TINY_NUM_CLASSES)
    torch.save({prefix + key: value for key, value in reference.state_dict().items()}, tmp_path / "bare.pt")
    converted = convert_lightningdit_checkpoint(
        tmp_path / "bare.pt",
        TINY_ARCHITECTURE,
        in_channels=TINY_CHANNELS,
        num_classes=TINY_NUM_CLASSES,
        input_size=TINY_INPUT_SIZE,
    )
    assert_matches_reference(converted, reference)


@pytest.mark.parametrize(
    "flags, expected_config",
    [
        ({"use_qknorm": True}, {"qk_norm": True}),
        ({"wo_shift": True}, {"adaln_shift": False}),
        ({"learn_sigma": True}, {"out_channels": None}),
        ({"use_rope": False}, {"use_rope": False}),
        ({"wo_shift": True, "learn_sigma": True, "use_qknorm": True}, {"adaln_shift": False, "qk_norm": True}),
    ],
    ids=["qknorm", "wo_shift", "learn_sigma", "no-rope", "all"],
)
def test_training_flags_are_read_off_the_keys_and_reproduced(tmp_path, flags, expected_config):
    reference = build_reference(TINY_ARCHITECTURE, TINY_INPUT_SIZE, TINY_CHANNELS, TINY_NUM_CLASSES, **flags)
    converted = convert_tiny(tmp_path, reference, use_qknorm=flags.get("use_qknorm", False))
    assert {key: converted.config[key] for key in expected_config} == expected_config
    # learn_sigma: the sigma half of the output layer is dropped, as LightningDiT's forward drops it.
    assert converted.out_channels == TINY_CHANNELS
    assert_matches_reference(converted, reference)


def test_a_model_trained_without_label_dropout_gets_a_zero_null_class_and_a_warning(tmp_path, caplog):
    reference = build_reference(
        TINY_ARCHITECTURE, TINY_INPUT_SIZE, TINY_CHANNELS, TINY_NUM_CLASSES, class_dropout_prob=0.0
    )
    assert reference.y_embedder.embedding_table.num_embeddings == TINY_NUM_CLASSES
    diffusers_logging.enable_propagation()
    try:
        with caplog.at_level("WARNING"):
            converted = convert_tiny(tmp_path, reference)
    finally:
        diffusers_logging.disable_propagation()
    assert "guidance_scale=1.0" in caplog.text
    assert converted.config.class_dropout_prob == 0.0
    assert not converted.class_embedder.embedding_table.weight[TINY_NUM_CLASSES].any()
    assert_matches_reference(converted, reference)


def test_model_type_names_with_and_without_prefix_and_auto_find_the_same_type():
    with torch.device("meta"):
        state_dict = LightningDiT_models["LightningDiT-B/2"](
            input_size=16, in_channels=32, use_swiglu=True, use_rope=True, use_rmsnorm=True
        ).state_dict()
    for model_type in ("LightningDiT-B/2", "B/2", "auto", LIGHTNINGDIT_MODEL_TYPES["LightningDiT-B/2"]):
        architecture, variant = match_lightningdit_architecture(state_dict, model_type)
        assert architecture.name == "LightningDiT-B/2" and variant == LightningDiTVariant()


# ---------------------------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def meta_b1_state_dict():
    with torch.device("meta"):
        return LightningDiT_models["LightningDiT-B/1"](
            input_size=16, in_channels=32, use_swiglu=True, use_rope=True, use_rmsnorm=True
        ).state_dict()


def test_keys_that_fit_the_named_type_name_it_and_the_first_missing_key(meta_b1_state_dict):
    truncated = {key: value for key, value in meta_b1_state_dict.items() if not key.startswith("blocks.11.")}
    with pytest.raises(ValueError, match=r"fit no LightningDiT model type.*'LightningDiT-B/1'") as error:
        convert_lightningdit_state_dict(truncated, "B/1")
    assert "LightningDiT-B/1: first missing key 'blocks.11.norm1.weight'" in str(error.value)
    assert "LightningDiT-XL/1" not in str(error.value)


def test_auto_lists_every_type_tried_with_its_first_problem(meta_b1_state_dict):
    truncated = {key: value for key, value in meta_b1_state_dict.items() if not key.startswith("blocks.11.")}
    with pytest.raises(ValueError, match="fit no LightningDiT model type") as error:
        convert_lightningdit_state_dict(truncated, "auto")
    message = str(error.value)
    for name in LIGHTNINGDIT_MODEL_TYPES:
        assert f"{name}: " in message
    assert "LightningDiT-B/1: first missing key 'blocks.11.norm1.weight'" in message
    assert "LightningDiT-XL/1: 'pos_embed' has shape (1, 256, 768), expected (1, 256, 1152)" in message


def test_wrong_sizes_and_qknorm_flag_are_named_with_the_fix(meta_b1_state_dict):
    wrong_channels = r"'x_embedder.proj.weight' has shape \(768, 32, 1, 1\), expected \(768, 4, 1, 1\)"
    with pytest.raises(ValueError, match=wrong_channels):
        convert_lightningdit_state_dict(meta_b1_state_dict, "B/1", in_channels=4)
    with pytest.raises(ValueError, match=r"missing key 'blocks.0.attn.q_norm.weight'.*pass use_qknorm=False"):
        convert_lightningdit_state_dict(meta_b1_state_dict, "B/1", use_qknorm=True)
    with torch.device("meta"):
        with_qknorm = LightningDiT_models["LightningDiT-B/1"](
            input_size=16, in_channels=32, use_qknorm=True, use_swiglu=True, use_rope=True, use_rmsnorm=True
        ).state_dict()
    with pytest.raises(ValueError, match=r"unexpected key 'blocks.0.attn.q_norm.weight'.*pass use_qknorm=True"):
        convert_lightningdit_state_dict(with_qknorm, "B/1")
    with pytest.raises(ValueError, match=r"'y_embedder.embedding_table.weight' has shape \(1001, 768\)"):
        convert_lightningdit_state_dict(meta_b1_state_dict, "B/1", num_classes=10)


def test_unknown_model_type_lists_the_valid_names(meta_b1_state_dict):
    unknown = r"Unknown LightningDiT model_type 'LightningDiT-XXL/1'.*'LightningDiT-B/1'.*'auto'"
    with pytest.raises(ValueError, match=unknown):
        convert_lightningdit_state_dict(meta_b1_state_dict, "LightningDiT-XXL/1")
    with pytest.raises(ValueError, match="Unknown LightningDiT model_type 'xl/1'"):
        convert_lightningdit_state_dict(meta_b1_state_dict, "xl/1")


class _RecordsUnpickling:
    """Unpickling this object would run `_mark_unpickled`: the converter must refuse it without running it."""

    unpickled = False

    def __reduce__(self):
        return (_mark_unpickled, ())


def _mark_unpickled():
    _RecordsUnpickling.unpickled = True
    return "ran"


def test_a_pickle_with_python_objects_is_refused_without_running_it(tmp_path):
    _RecordsUnpickling.unpickled = False
    reference = build_reference(TINY_ARCHITECTURE, TINY_INPUT_SIZE, TINY_CHANNELS, TINY_NUM_CLASSES)
    path = tmp_path / "with_object.pt"
    torch.save({"ema": reference.state_dict(), "args": _RecordsUnpickling()}, path)
    with pytest.raises(ValueError, match=r"holds Python objects other than tensors.*refused instead of unpickled"):
        convert_lightningdit_checkpoint(path, TINY_ARCHITECTURE, in_channels=TINY_CHANNELS, input_size=TINY_INPUT_SIZE)
    assert not _RecordsUnpickling.unpickled
    # ... whereas unrestricted unpickling would have run it (the test object does what it claims).
    assert torch.load(path, weights_only=False)["args"] == "ran" and _RecordsUnpickling.unpickled


def test_missing_files_and_non_state_dicts_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="No checkpoint file at"):
        load_tensor_checkpoint(tmp_path / "missing.pt")
    torch.save({"step": 10, "weights": [1, 2]}, tmp_path / "not_weights.pt")
    not_a_state_dict = r"'step' \(of 2 such entries\) is not a tensor.*Top-level keys: \['step', 'weights'\]"
    with pytest.raises(ValueError, match=not_a_state_dict):
        convert_lightningdit_checkpoint(tmp_path / "not_weights.pt", "XL/1")
    with pytest.raises(ValueError, match="to hold a dict.*got list"):
        select_state_dict([1, 2, 3])


@pytest.mark.parametrize(
    "flags, message",
    [({"use_swiglu": False}, "use_swiglu=false"), ({"use_rmsnorm": False}, "use_rmsnorm=false")],
    ids=["gelu-mlp", "layernorm"],
)
def test_unpublished_block_variants_are_refused_with_the_reason(flags, message):
    reference = build_reference(TINY_ARCHITECTURE, TINY_INPUT_SIZE, TINY_CHANNELS, TINY_NUM_CLASSES, **flags)
    with pytest.raises(ValueError, match=message):
        convert_lightningdit_state_dict(reference.state_dict(), TINY_ARCHITECTURE, in_channels=TINY_CHANNELS)


def test_rope_tables_for_other_positions_are_refused(tmp_path):
    reference = build_reference(TINY_ARCHITECTURE, TINY_INPUT_SIZE, TINY_CHANNELS, TINY_NUM_CLASSES)
    state_dict = reference.state_dict()
    state_dict["feat_rope.freqs_cos"] = state_dict["feat_rope.freqs_cos"].flip(0)
    torch.save({"ema": state_dict}, tmp_path / "rope.pt")
    with pytest.raises(ValueError, match=r"feat_rope.freqs_cos differs from the 2-D RoPE table.*input_size"):
        convert_lightningdit_checkpoint(
            tmp_path / "rope.pt",
            TINY_ARCHITECTURE,
            in_channels=TINY_CHANNELS,
            num_classes=TINY_NUM_CLASSES,
            input_size=TINY_INPUT_SIZE,
        )
