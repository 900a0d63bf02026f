"""Converting LightningDiT checkpoints (hustvl/LightningDiT, `train.py`) into [`LightningDiTTransformer2DModel`].

LightningDiT's `train.py` saves `{"model", "ema", "opt", "config"}` every `ckpt_every` steps, and its `inference.py`
samples with the `"ema"` weights; released checkpoints hold those alone or as a bare state dict. Which model type a
checkpoint is (depth, width, heads, patch size) is in its training config (`model.model_type`), not in the weights, so
the caller names it, or passes `model_type="auto"` to take the one type whose shapes fit. The flags of the config that
change the weights are read off the keys: `use_rope` (the `feat_rope` buffers), `wo_shift` (4 instead of 6 adaLN
vectors), `learn_sigma` (twice the output channels) and the null class of classifier-free guidance (the label table
has `num_classes + 1` rows when `class_dropout_prob > 0`); `use_qknorm` is given and checked against the keys.

Conversion, LightningDiT name -> ours (`blocks.i.` -> `transformer_blocks.i.`), and what changes on the way:

- `x_embedder.proj.*` -> `patch_embed.proj.*`.
- `pos_embed` -> `patch_embed.pos_embed`, kept (`persistent_position_embedding=True`): LightningDiT's EMA update also
  averages this frozen parameter, and float32 rounding has moved the EMA copy off the exact sin-cos values.
- `t_embedder.mlp.0.*`, `t_embedder.mlp.2.*` -> `time_embedder.linear_1.*`, `time_embedder.linear_2.*`; the model
  embeds `t = 1 - timestep / 1000` (`timestep_embedding_input="flow_time"`), the time this MLP was trained on.
- `y_embedder.embedding_table.weight` -> `class_embedder.embedding_table.weight` (a zero null-class row is appended
  when the model was trained without label dropout and so has none).
- `feat_rope.freqs_cos`, `feat_rope.freqs_sin` -> not stored (our RoPE is computed), but checked against ours.
- `norm1.weight`, `norm2.weight` -> the same names.
- `attn.qkv.*` -> `attn.to_q.*`, `attn.to_k.*`, `attn.to_v.*`: split in three along the output (rows are q, k, v, each
  heads x head_dim, as LightningDiT's reshape to (3, heads, head_dim) reads them).
- `attn.q_norm.weight`, `attn.k_norm.weight` -> `attn.norm_q.weight`, `attn.norm_k.weight`.
- `attn.proj.*` -> `attn.to_out.0.*`.
- `mlp.w12.*` -> `ff.net.0.proj.*` with its halves swapped: LightningDiT computes `silu(a) * b`, diffusers' SwiGLU
  `b * silu(a)` for halves `(b, a)`. `mlp.w3.*` -> `ff.net.2.*`.
- `adaLN_modulation.1.*` -> `adaln_modulation.1.*`, same order (shift, scale, gate for attention, then for the MLP;
  scale, gate only with `wo_shift`, which becomes `adaln_shift=False`).
- `final_layer.norm_final.weight` -> `norm_out.norm.weight`.
- `final_layer.adaLN_modulation.1.*` -> `norm_out.linear.*` with its halves swapped: (shift, scale) there, (scale,
  shift) in diffusers' `AdaLayerNormContinuous`.
- `final_layer.linear.*` -> `proj_out.*`, negated (LightningDiT predicts `x0 - noise`, we `noise - x0`); with
  `learn_sigma` the rows of the unused sigma channels are dropped, as LightningDiT's forward drops those channels.

With `timestep = 1000 * (1 - t)` the converted model returns exactly minus what LightningDiT returns at time `t`
(float32 rounding aside), which is the velocity of our convention.
"""

import itertools
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from diffusers.utils import logging

from ..models.transformer_lightning_dit import LightningDiTTransformer2DModel
from .checkpoints import load_tensor_checkpoint, select_state_dict


logger = logging.get_logger(__name__)

_TIMESTEP_FREQUENCIES = 256  # LightningDiT's `frequency_embedding_size`
_NORM_EPS = 1e-6  # LightningDiT's RMSNorm default
_CLASS_DROPOUT_PROB = 0.1  # LightningDiT's default; train.py does not override it
_MLP_RATIO = 4.0


@dataclass(frozen=True)
class LightningDiTArchitecture:
    """A LightningDiT model type: what `LightningDiT_models[name]` fixes (the rest comes from the training config)."""

    name: str
    depth: int
    hidden_size: int
    num_heads: int
    patch_size: int

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def swiglu_hidden_size(self) -> int:
        # `SwiGLUFFN(hidden_size, int(2 / 3 * mlp_hidden_dim))` with `mlp_hidden_dim = int(hidden_size * mlp_ratio)`.
        return int(2 / 3 * int(self.hidden_size * _MLP_RATIO))


# The constructors at the bottom of LightningDiT's models/lightningdit.py.
LIGHTNINGDIT_MODEL_TYPES: dict[str, LightningDiTArchitecture] = {
    architecture.name: architecture
    for architecture in [
        LightningDiTArchitecture("LightningDiT-B/1", depth=12, hidden_size=768, num_heads=12, patch_size=1),
        LightningDiTArchitecture("LightningDiT-B/2", depth=12, hidden_size=768, num_heads=12, patch_size=2),
        LightningDiTArchitecture("LightningDiT-L/2", depth=24, hidden_size=1024, num_heads=16, patch_size=2),
        LightningDiTArchitecture("LightningDiT-XL/1", depth=28, hidden_size=1152, num_heads=16, patch_size=1),
        LightningDiTArchitecture("LightningDiT-XL/2", depth=28, hidden_size=1152, num_heads=16, patch_size=2),
        LightningDiTArchitecture("LightningDiT-1p0B/1", depth=24, hidden_size=1536, num_heads=24, patch_size=1),
        LightningDiTArchitecture("LightningDiT-1p0B/2", depth=24, hidden_size=1536, num_heads=24, patch_size=2),
        LightningDiTArchitecture("LightningDiT-1p6B/1", depth=28, hidden_size=1792, num_heads=28, patch_size=1),
        LightningDiTArchitecture("LightningDiT-1p6B/2", depth=28, hidden_size=1792, num_heads=28, patch_size=2),
    ]
}


@dataclass(frozen=True)
class LightningDiTVariant:
    """The training-config flags of a LightningDiT checkpoint that change its weights.

    `use_swiglu`, `use_rmsnorm` are not here: conversion needs both true (LightningDiT's published settings).
    """

    use_qknorm: bool = False
    use_rope: bool = True
    wo_shift: bool = False
    learn_sigma: bool = False
    # A label table with the extra null-class row, which LightningDiT adds when `class_dropout_prob > 0`.
    has_null_class: bool = True


def resolve_lightningdit_model_type(model_type: str | LightningDiTArchitecture) -> list[LightningDiTArchitecture]:
    """`"LightningDiT-XL/1"`, `"XL/1"`, an architecture, or `"auto"` (every published type) -> the types to try."""
    if isinstance(model_type, LightningDiTArchitecture):
        return [model_type]
    if model_type == "auto":
        return list(LIGHTNINGDIT_MODEL_TYPES.values())
    if isinstance(model_type, str):
        name = model_type if model_type.startswith("LightningDiT-") else f"LightningDiT-{model_type}"
        if name in LIGHTNINGDIT_MODEL_TYPES:
            return [LIGHTNINGDIT_MODEL_TYPES[name]]
    raise ValueError(
        f"Unknown LightningDiT model_type {model_type!r}; use one of {list(LIGHTNINGDIT_MODEL_TYPES)} (the "
        "`model.model_type` of the training config; the 'LightningDiT-' prefix may be left out), or 'auto' to infer "
        "it from the weights' shapes."
    )


def lightningdit_state_dict_shapes(
    architecture: LightningDiTArchitecture,
    variant: LightningDiTVariant,
    in_channels: int = 32,
    num_classes: int = 1000,
    input_size: int = 16,
) -> dict[str, tuple[int, ...]]:
    """Every key of a LightningDiT state dict with its shape, in the order `LightningDiT.state_dict()` lists them."""
    hidden, patch, head_dim = architecture.hidden_size, architecture.patch_size, architecture.head_dim
    num_tokens = (input_size // patch) ** 2
    out_channels = in_channels * (2 if variant.learn_sigma else 1)
    mlp_hidden = architecture.swiglu_hidden_size
    shapes: dict[str, tuple[int, ...]] = {
        "pos_embed": (1, num_tokens, hidden),
        "x_embedder.proj.weight": (hidden, in_channels, patch, patch),
        "x_embedder.proj.bias": (hidden,),
        "t_embedder.mlp.0.weight": (hidden, _TIMESTEP_FREQUENCIES),
        "t_embedder.mlp.0.bias": (hidden,),
        "t_embedder.mlp.2.weight": (hidden, hidden),
        "t_embedder.mlp.2.bias": (hidden,),
        "y_embedder.embedding_table.weight": (num_classes + int(variant.has_null_class), hidden),
    }
    if variant.use_rope:
        shapes["feat_rope.freqs_cos"] = shapes["feat_rope.freqs_sin"] = (num_tokens, head_dim)
    for index in range(architecture.depth):
        block = f"blocks.{index}."
        shapes[block + "norm1.weight"] = shapes[block + "norm2.weight"] = (hidden,)
        shapes[block + "attn.qkv.weight"] = (3 * hidden, hidden)
        shapes[block + "attn.qkv.bias"] = (3 * hidden,)
        if variant.use_qknorm:
            shapes[block + "attn.q_norm.weight"] = shapes[block + "attn.k_norm.weight"] = (head_dim,)
        shapes[block + "attn.proj.weight"] = (hidden, hidden)
        shapes[block + "attn.proj.bias"] = (hidden,)
        shapes[block + "mlp.w12.weight"] = (2 * mlp_hidden, hidden)
        shapes[block + "mlp.w12.bias"] = (2 * mlp_hidden,)
        shapes[block + "mlp.w3.weight"] = (hidden, mlp_hidden)
        shapes[block + "mlp.w3.bias"] = (hidden,)
        num_modulations = 4 if variant.wo_shift else 6
        shapes[block + "adaLN_modulation.1.weight"] = (num_modulations * hidden, hidden)
        shapes[block + "adaLN_modulation.1.bias"] = (num_modulations * hidden,)
    shapes["final_layer.norm_final.weight"] = (hidden,)
    shapes["final_layer.linear.weight"] = (patch * patch * out_channels, hidden)
    shapes["final_layer.linear.bias"] = (patch * patch * out_channels,)
    shapes["final_layer.adaLN_modulation.1.weight"] = (2 * hidden, hidden)
    shapes["final_layer.adaLN_modulation.1.bias"] = (2 * hidden,)
    return shapes


def lightningdit_transformer_config(
    architecture: LightningDiTArchitecture,
    variant: LightningDiTVariant,
    in_channels: int = 32,
    num_classes: int = 1000,
    input_size: int = 16,
) -> dict[str, Any]:
    """The `LightningDiTTransformer2DModel` config that computes what the LightningDiT does."""
    return {
        "sample_size": input_size,
        "in_channels": in_channels,
        "out_channels": None,
        "patch_size": architecture.patch_size,
        "hidden_size": architecture.hidden_size,
        "num_layers": architecture.depth,
        "num_attention_heads": architecture.num_heads,
        "mlp_ratio": _MLP_RATIO,
        "num_classes": num_classes,
        # Matters only for further training; without a null row the model was trained without label dropout.
        "class_dropout_prob": _CLASS_DROPOUT_PROB if variant.has_null_class else 0.0,
        "qk_norm": variant.use_qknorm,
        "use_rope": variant.use_rope,
        "norm_eps": _NORM_EPS,
        "timestep_embedding_input": "flow_time",
        "adaln_shift": not variant.wo_shift,
        "persistent_position_embedding": True,
    }


def _check_supported_flags(state_dict: Mapping[str, torch.Tensor]) -> None:
    """Refuses the two LightningDiT settings our model does not implement (neither is a published configuration)."""
    if "blocks.0.mlp.fc1.weight" in state_dict:
        raise ValueError(
            "This LightningDiT checkpoint was trained with use_swiglu=false (its blocks have a GELU MLP, "
            "'blocks.0.mlp.fc1.weight'), which LightningDiTTransformer2DModel does not implement: it converts the "
            "published architecture, use_swiglu: true and use_rmsnorm: true (LightningDiT's "
            "configs/lightningdit_xl_vavae_f16d32.yaml)."
        )
    if "blocks.0.attn.qkv.weight" in state_dict and "blocks.0.norm1.weight" not in state_dict:
        raise ValueError(
            "This LightningDiT checkpoint was trained with use_rmsnorm=false (its blocks' norms are LayerNorms without "
            "weights: there is no 'blocks.0.norm1.weight'), which LightningDiTTransformer2DModel does not implement: "
            "it converts the published architecture, use_swiglu: true and use_rmsnorm: true (LightningDiT's "
            "configs/lightningdit_xl_vavae_f16d32.yaml)."
        )


def _detect_variant(
    state_dict: Mapping[str, torch.Tensor],
    architecture: LightningDiTArchitecture,
    use_qknorm: bool,
    in_channels: int,
    num_classes: int,
) -> LightningDiTVariant:
    """The flags read off the keys and shapes (published defaults where the keys to read are missing)."""
    modulation = state_dict.get("blocks.0.adaLN_modulation.1.weight")
    output = state_dict.get("final_layer.linear.weight")
    labels = state_dict.get("y_embedder.embedding_table.weight")
    return LightningDiTVariant(
        use_qknorm=use_qknorm,
        use_rope="feat_rope.freqs_cos" in state_dict,
        wo_shift=modulation is not None and modulation.ndim == 2 and modulation.shape[0] == 4 * modulation.shape[1],
        learn_sigma=output is not None and output.shape[0] == 2 * architecture.patch_size**2 * in_channels,
        has_null_class=labels is None or labels.shape[0] != num_classes,
    )


def _first_mismatch(expected: Mapping[str, tuple[int, ...]], state_dict: Mapping[str, torch.Tensor]) -> str | None:
    """The first difference between expected shapes and a state dict, in words, or `None` if they agree."""
    for name, shape in expected.items():
        if name not in state_dict:
            return f"first missing key {name!r}"
        if tuple(state_dict[name].shape) != shape:
            return f"{name!r} has shape {tuple(state_dict[name].shape)}, expected {shape}"
    unexpected = [name for name in state_dict if name not in expected]
    if unexpected:
        return f"unexpected key {unexpected[0]!r} (of {len(unexpected)})"
    return None


def _qknorm_hint(mismatch: str, use_qknorm: bool) -> str:
    if "q_norm" in mismatch or "k_norm" in mismatch:
        return (
            f" (the checkpoint {'lacks' if use_qknorm else 'has'} QK-Norm weights: pass use_qknorm={not use_qknorm})"
        )
    return ""


def match_lightningdit_architecture(
    state_dict: Mapping[str, torch.Tensor],
    model_type: str | LightningDiTArchitecture,
    use_qknorm: bool = False,
    in_channels: int = 32,
    num_classes: int = 1000,
    input_size: int = 16,
) -> tuple[LightningDiTArchitecture, LightningDiTVariant]:
    """The model type (of those `model_type` names) and flags whose keys and shapes the state dict has exactly.

    Raises:
        ValueError: No type fits; the message names each type tried and its first missing or mismatched key.
    """
    candidates = resolve_lightningdit_model_type(model_type)
    _check_supported_flags(state_dict)
    problems = []
    for architecture in candidates:
        if input_size % architecture.patch_size:
            problems.append(f"{architecture.name}: input_size={input_size} is not a multiple of its patch size")
            continue
        variant = _detect_variant(state_dict, architecture, use_qknorm, in_channels, num_classes)
        expected = lightningdit_state_dict_shapes(architecture, variant, in_channels, num_classes, input_size)
        mismatch = _first_mismatch(expected, state_dict)
        if mismatch is None:
            return architecture, variant
        problems.append(f"{architecture.name}: {mismatch}{_qknorm_hint(mismatch, use_qknorm)}")
    raise ValueError(
        f"The checkpoint's weights fit no LightningDiT model type. Tried {[a.name for a in candidates]} with "
        f"in_channels={in_channels}, num_classes={num_classes}, input_size={input_size}, use_qknorm={use_qknorm}:\n  "
        + "\n  ".join(problems)
        + "\nTake these from the training config (model.model_type, model.in_chans, model.use_qknorm, "
        "data.num_classes, and data.image_size / vae.downsample_ratio for input_size), or pass model_type='auto'."
    )


def _owned(tensor: torch.Tensor) -> torch.Tensor:
    # A float32 copy with its own storage: the checkpoint may be memory-mapped, and views would pin all of it.
    return tensor.detach().to(torch.float32, copy=True).contiguous()


def convert_lightningdit_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    model_type: str | LightningDiTArchitecture,
    use_qknorm: bool = False,
    in_channels: int = 32,
    num_classes: int = 1000,
    input_size: int = 16,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A LightningDiT state dict (prefixes already stripped) -> `(our state dict, our config)`.

    Works on meta tensors too (for checking a conversion without allocating the weights). See the module docstring for
    the key mapping.
    """
    architecture, variant = match_lightningdit_architecture(
        state_dict, model_type, use_qknorm, in_channels, num_classes, input_size
    )
    source = state_dict
    hidden, mlp_hidden = architecture.hidden_size, architecture.swiglu_hidden_size

    class_table = source["y_embedder.embedding_table.weight"]
    if not variant.has_null_class:
        logger.warning(
            "The LightningDiT checkpoint has no null-class embedding (it was trained with class_dropout_prob=0), so "
            "the converted model's null class %d is a zero vector and classifier-free guidance is meaningless: "
            "sample with guidance_scale=1.0.",
            num_classes,
        )
        class_table = torch.cat([class_table, torch.zeros_like(class_table[:1])])

    converted = {
        "patch_embed.proj.weight": source["x_embedder.proj.weight"],
        "patch_embed.proj.bias": source["x_embedder.proj.bias"],
        "patch_embed.pos_embed": source["pos_embed"],
        "time_embedder.linear_1.weight": source["t_embedder.mlp.0.weight"],
        "time_embedder.linear_1.bias": source["t_embedder.mlp.0.bias"],
        "time_embedder.linear_2.weight": source["t_embedder.mlp.2.weight"],
        "time_embedder.linear_2.bias": source["t_embedder.mlp.2.bias"],
        "class_embedder.embedding_table.weight": class_table,
    }
    for index in range(architecture.depth):
        block, ours = f"blocks.{index}.", f"transformer_blocks.{index}."
        converted[ours + "norm1.weight"] = source[block + "norm1.weight"]
        converted[ours + "norm2.weight"] = source[block + "norm2.weight"]
        for suffix in ("weight", "bias"):
            # qkv rows are (q, k, v), each (heads, head_dim): LightningDiT reshapes them to (3, heads, head_dim).
            query, key, value = source[block + f"attn.qkv.{suffix}"].split(hidden, dim=0)
            converted[ours + f"attn.to_q.{suffix}"] = query
            converted[ours + f"attn.to_k.{suffix}"] = key
            converted[ours + f"attn.to_v.{suffix}"] = value
            converted[ours + f"attn.to_out.0.{suffix}"] = source[block + f"attn.proj.{suffix}"]
            # LightningDiT computes silu(first half) * second half; diffusers' SwiGLU second half * silu(first half).
            activated, gated = source[block + f"mlp.w12.{suffix}"].split(mlp_hidden, dim=0)
            converted[ours + f"ff.net.0.proj.{suffix}"] = torch.cat([gated, activated])
            converted[ours + f"ff.net.2.{suffix}"] = source[block + f"mlp.w3.{suffix}"]
            converted[ours + f"adaln_modulation.1.{suffix}"] = source[block + f"adaLN_modulation.1.{suffix}"]
        if variant.use_qknorm:
            converted[ours + "attn.norm_q.weight"] = source[block + "attn.q_norm.weight"]
            converted[ours + "attn.norm_k.weight"] = source[block + "attn.k_norm.weight"]

    converted["norm_out.norm.weight"] = source["final_layer.norm_final.weight"]
    patch_area = architecture.patch_size**2
    for suffix in ("weight", "bias"):
        shift, scale = source[f"final_layer.adaLN_modulation.1.{suffix}"].split(hidden, dim=0)
        converted[f"norm_out.linear.{suffix}"] = torch.cat([scale, shift])
        output = source[f"final_layer.linear.{suffix}"]
        if variant.learn_sigma:
            # Rows are (patch position, channel) with 2 * in_channels channels; LightningDiT returns the first half.
            output = output.unflatten(0, (patch_area, 2 * in_channels))[:, :in_channels].flatten(0, 1)
        converted[f"proj_out.{suffix}"] = -output  # LightningDiT's velocity is x0 - noise, ours noise - x0

    config = lightningdit_transformer_config(architecture, variant, in_channels, num_classes, input_size)
    return {name: _owned(tensor) for name, tensor in converted.items()}, config


def _check_rotary_tables(model: LightningDiTTransformer2DModel, state_dict: Mapping[str, torch.Tensor]) -> None:
    """LightningDiT stores its RoPE tables; ours are computed. They must agree (float32 vs float64 rounding aside)."""
    if "feat_rope.freqs_cos" not in state_dict:
        return
    grid = model.config.sample_size // model.config.patch_size
    cos, sin = model._rotary_embedding(grid, grid, torch.device("cpu"))
    for name, ours in (("feat_rope.freqs_cos", cos), ("feat_rope.freqs_sin", sin)):
        difference = (state_dict[name].float() - ours.float()).abs().max().item()
        if difference > 1e-4:
            raise ValueError(
                f"The checkpoint's {name} differs from the 2-D RoPE table LightningDiTTransformer2DModel computes for "
                f"a {grid}x{grid} grid by up to {difference:.3g}; it was built for other positions than input_size="
                f"{model.config.sample_size}. Pass the input_size (image_size / downsample_ratio) it was trained at."
            )


def convert_lightningdit_checkpoint(
    checkpoint_path: str | os.PathLike,
    model_type: str | LightningDiTArchitecture,
    use_qknorm: bool = False,
    in_channels: int = 32,
    num_classes: int = 1000,
    input_size: int = 16,
) -> LightningDiTTransformer2DModel:
    r"""
    Builds a [`LightningDiTTransformer2DModel`] from a LightningDiT checkpoint.

    The converted model is called as [`AlignTokDiTPipeline`] calls it, with `timestep = 1000 * sigma` where LightningDiT
    would get `t = 1 - sigma`, and returns `noise - x0`, the negative of LightningDiT's output.

    Args:
        checkpoint_path (`str` or `os.PathLike`):
            A `.pt` file as LightningDiT's `train.py` writes it (`{"model", "ema", "opt", "config"}`: the `"ema"`
            weights are taken, else `"model"`), or a bare state dict. Read with `torch.load(weights_only=True)`: a
            pickle that needs more than tensors and plain containers is refused. `module.` / `_orig_mod.` key prefixes
            are removed.
        model_type (`str` or [`LightningDiTArchitecture`]):
            The training config's `model.model_type`: one of `LIGHTNINGDIT_MODEL_TYPES` (`"LightningDiT-XL/1"`, the
            prefix may be omitted: `"XL/1"`), `"auto"` to take the one type whose shapes fit, or an architecture for
            custom sizes.
        use_qknorm (`bool`, defaults to `False`): The config's `model.use_qknorm`; checked against the weights.
        in_channels (`int`, defaults to 32): The config's `model.in_chans` (latent channels).
        num_classes (`int`, defaults to 1000): The config's `data.num_classes`.
        input_size (`int`, defaults to 16): The latent side, `data.image_size / vae.downsample_ratio`.

    Returns:
        The converted model in eval mode, float32.
    """
    checkpoint = load_tensor_checkpoint(checkpoint_path)
    state_dict, location = select_state_dict(checkpoint, source=f"checkpoint {os.fspath(checkpoint_path)!r}")
    converted, config = convert_lightningdit_state_dict(
        state_dict, model_type, use_qknorm, in_channels, num_classes, input_size
    )
    with torch.device("meta"):
        model = LightningDiTTransformer2DModel(**config)
    model.load_state_dict(converted, strict=True, assign=True)
    tensors = itertools.chain(model.named_parameters(), model.named_buffers())
    left_on_meta = [name for name, tensor in tensors if tensor.is_meta]
    if left_on_meta:
        raise RuntimeError(f"Conversion left {left_on_meta} without values; this is a bug in the converter.")
    _check_rotary_tables(model, state_dict)
    summary_keys = ("hidden_size", "num_layers", "num_attention_heads", "patch_size", "qk_norm", "use_rope")
    logger.info(
        "Converted the %s weights of %s (%s).",
        location,
        os.fspath(checkpoint_path),
        ", ".join(f"{key}={config[key]}" for key in summary_keys),
    )
    return model.eval()
