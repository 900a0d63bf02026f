"""`LightningDiTTransformer2DModel`: the class-conditional diffusion transformer of AlignTok's ImageNet experiments.

AlignTok (arXiv 2509.25162) measures how fast a diffusion model converges on its latents with LightningDiT-XL/1
(Yao et al., "Reconstruction vs. Generation", arXiv 2501.01423): a DiT with SwiGLU, RMSNorm, 2-D RoPE, optional
QK-Norm and adaLN-zero conditioning on timestep + class, trained with linear-path flow matching to predict the
velocity. diffusers has no LightningDiT, so this module builds one from diffusers' own blocks (`PatchEmbed`,
`Timesteps`/`TimestepEmbedding`, `LabelEmbedding`, `RMSNorm`, `FeedForward` with SwiGLU, `AdaLayerNormContinuous`,
the Flux rotary embedding and `dispatch_attention_fn`).

Timestep convention (diffusers flow matching, as `FlowMatchEulerDiscreteScheduler`): `timestep = sigma * 1000`, where
`x_sigma = (1 - sigma) * x0 + sigma * noise`, so `timestep = 1000` is pure noise. The output is the velocity
`v = noise - x0`. Checkpoints of LightningDiT's own code (time `t = 1 - sigma`, velocity `x0 - noise`) are converted to
this convention by `diffusers_aligntok.conversion.convert_lightningdit_checkpoint`, with the config options
`timestep_embedding_input`, `adaln_shift` and `persistent_position_embedding` described in the class docstring.
"""

from typing import Any

import torch
import torch.nn as nn
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.loaders import PeftAdapterMixin
from diffusers.models.attention import AttentionMixin, AttentionModuleMixin, FeedForward
from diffusers.models.attention_dispatch import dispatch_attention_fn
from diffusers.models.embeddings import LabelEmbedding, PatchEmbed, TimestepEmbedding, Timesteps, apply_rotary_emb
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.normalization import AdaLayerNormContinuous, RMSNorm
from diffusers.models.transformers.transformer_flux import FluxPosEmbed
from diffusers.utils import logging


logger = logging.get_logger(__name__)

# Named sizes. All use patch 1: AlignTok's f16 latent of a 256x256 image is already a 16x16 grid (LightningDiT-*/1).
# XL is LightningDiT-XL/1 (~675M parameters), the model of the paper's ImageNet table; B and L follow DiT's sizes.
DIT_PRESETS: dict[str, dict[str, Any]] = {
    "B": {"hidden_size": 768, "num_layers": 12, "num_attention_heads": 12, "patch_size": 1},
    "L": {"hidden_size": 1024, "num_layers": 24, "num_attention_heads": 16, "patch_size": 1},
    "XL": {"hidden_size": 1152, "num_layers": 28, "num_attention_heads": 16, "patch_size": 1},
    # For tests: the latent grid of the "tiny" AlignTok tokenizer (f4, 8 channels) on 32x32 images.
    "tiny": {
        "sample_size": 8,
        "in_channels": 8,
        "hidden_size": 32,
        "num_layers": 2,
        "num_attention_heads": 2,
        "patch_size": 1,
        "num_classes": 10,
    },
}

# Sinusoidal timestep features fed to the timestep MLP (DiT's `frequency_embedding_size`).
_TIMESTEP_PROJECTION_DIM = 256
_ROPE_THETA = 10000.0
# `timestep` runs over [0, _NUM_TRAIN_TIMESTEPS] (the schedulers' `num_train_timesteps`).
_NUM_TRAIN_TIMESTEPS = 1000.0
# What the sinusoidal timestep features are computed from (see `timestep_embedding_input` in the class docstring).
TIMESTEP_EMBEDDING_INPUTS = ("timestep", "flow_time")


class LightningDiTAttnProcessor:
    """Self-attention with optional QK-Norm and 2-D RoPE, through diffusers' attention dispatcher.

    The default backend is PyTorch's `scaled_dot_product_attention`; `model.set_attention_backend("flash")` and the
    other diffusers backends work as for Flux.
    """

    _attention_backend = None
    _parallel_config = None

    def __call__(
        self,
        attn: "LightningDiTAttention",
        hidden_states: torch.Tensor,
        image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        if attn.fused_projections:
            query, key, value = attn.to_qkv(hidden_states).chunk(3, dim=-1)
        else:
            query, key, value = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)

        # (batch, tokens, heads, head_dim), the layout `dispatch_attention_fn` takes.
        query = query.unflatten(-1, (-1, attn.head_dim))
        key = key.unflatten(-1, (-1, attn.head_dim))
        value = value.unflatten(-1, (-1, attn.head_dim))

        # LightningDiT normalises q and k before the rotation.
        query = attn.norm_q(query)
        key = attn.norm_k(key)
        if image_rotary_emb is not None:
            query = apply_rotary_emb(query, image_rotary_emb, sequence_dim=1)
            key = apply_rotary_emb(key, image_rotary_emb, sequence_dim=1)

        hidden_states = dispatch_attention_fn(
            query, key, value, backend=self._attention_backend, parallel_config=self._parallel_config
        )
        hidden_states = hidden_states.flatten(2, 3).to(query.dtype)
        hidden_states = attn.to_out[0](hidden_states)
        return attn.to_out[1](hidden_states)


class LightningDiTAttention(nn.Module, AttentionModuleMixin):
    """Multi-head self-attention of a LightningDiT block (biased q/k/v/out projections, as in DiT)."""

    _default_processor_cls = LightningDiTAttnProcessor
    _available_processors = [LightningDiTAttnProcessor]

    def __init__(self, dim: int, heads: int, qk_norm: bool, eps: float, processor=None):
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.inner_dim = dim
        self.use_bias = True
        self.is_cross_attention = False

        self.to_q = nn.Linear(dim, dim, bias=True)
        self.to_k = nn.Linear(dim, dim, bias=True)
        self.to_v = nn.Linear(dim, dim, bias=True)
        # QK-Norm keeps attention logits bounded; the paper's 800-epoch runs diverge (NaN) without it.
        self.norm_q = RMSNorm(self.head_dim, eps=eps) if qk_norm else nn.Identity()
        self.norm_k = RMSNorm(self.head_dim, eps=eps) if qk_norm else nn.Identity()
        self.to_out = nn.ModuleList([nn.Linear(dim, dim, bias=True), nn.Dropout(0.0)])

        self.set_processor(processor or self._default_processor_cls())

    def forward(
        self, hidden_states: torch.Tensor, image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> torch.Tensor:
        return self.processor(self, hidden_states, image_rotary_emb=image_rotary_emb)


class LightningDiTBlock(nn.Module):
    """A LightningDiT block: adaLN-zero around RMSNorm -> attention and RMSNorm -> SwiGLU MLP.

    With `adaln_shift=False` the modulation has no shift terms (LightningDiT's `wo_shift=True`): 4 vectors per block
    (scale and gate of each branch) instead of 6.
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float, qk_norm: bool, eps: float, adaln_shift: bool = True):
        super().__init__()
        self.adaln_shift = adaln_shift
        self.norm1 = RMSNorm(dim, eps=eps)
        self.attn = LightningDiTAttention(dim, heads, qk_norm=qk_norm, eps=eps)
        self.norm2 = RMSNorm(dim, eps=eps)
        # SwiGLU has three weight matrices instead of two, so its width is 2/3 of the plain MLP's (LightningDiT).
        self.ff = FeedForward(dim, activation_fn="swiglu", inner_dim=int(2 / 3 * mlp_ratio * dim), bias=True)
        # Shift, scale and gate for the attention and the MLP branches, from the timestep + class embedding.
        num_modulations = 6 if adaln_shift else 4
        self.adaln_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, num_modulations * dim, bias=True))

    def forward(
        self,
        hidden_states: torch.Tensor,
        conditioning: torch.Tensor,
        image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        modulation = self.adaln_modulation(conditioning).unsqueeze(1)
        if self.adaln_shift:
            shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = modulation.chunk(6, dim=-1)
        else:
            (scale_msa, gate_msa, scale_mlp, gate_mlp), shift_msa, shift_mlp = modulation.chunk(4, dim=-1), None, None

        norm_hidden_states = _modulate(self.norm1(hidden_states), shift_msa, scale_msa)
        hidden_states = hidden_states + gate_msa * self.attn(norm_hidden_states, image_rotary_emb=image_rotary_emb)

        norm_hidden_states = _modulate(self.norm2(hidden_states), shift_mlp, scale_mlp)
        return hidden_states + gate_mlp * self.ff(norm_hidden_states)


def _modulate(hidden_states: torch.Tensor, shift: torch.Tensor | None, scale: torch.Tensor) -> torch.Tensor:
    """adaLN's `x * (1 + scale) + shift`; without a shift (`adaln_shift=False`) just the scaling."""
    hidden_states = hidden_states * (1 + scale)
    return hidden_states if shift is None else hidden_states + shift


class LightningDiTLabelEmbedding(LabelEmbedding):
    """diffusers' `LabelEmbedding` whose table always holds the null class `num_classes`.

    The null class is the unconditional input of classifier-free guidance, which a pipeline needs even for a model
    trained without label dropout. `force_drop_ids` may also be a boolean tensor on any device.
    """

    def __init__(self, num_classes: int, hidden_size: int, dropout_prob: float):
        super().__init__(num_classes, hidden_size, dropout_prob)
        if self.embedding_table.num_embeddings == num_classes:
            self.embedding_table = nn.Embedding(num_classes + 1, hidden_size)

    def token_drop(self, labels: torch.LongTensor, force_drop_ids: torch.Tensor | None = None) -> torch.LongTensor:
        if force_drop_ids is None:
            drop_ids = torch.rand(labels.shape[0], device=labels.device) < self.dropout_prob
        else:
            drop_ids = torch.as_tensor(force_drop_ids, device=labels.device) == 1
        return torch.where(drop_ids, self.num_classes, labels)


class LightningDiTTransformer2DModel(ModelMixin, AttentionMixin, ConfigMixin, PeftAdapterMixin):
    r"""
    A class-conditional diffusion transformer in the LightningDiT design (arXiv 2501.01423), as AlignTok uses it for
    ImageNet generation (arXiv 2509.25162). The defaults are LightningDiT-XL/1 on AlignTok's 16x16x32 latents.

    The forward pass takes normalised latents, a flow-matching timestep in `[0, 1000]` (`sigma * 1000`, 1000 = pure
    noise) and class ids, and returns the velocity `noise - x0`. Class id `num_classes` is the null class: it is what
    label dropout substitutes during training and what classifier-free guidance uses as the unconditional input.

    Parameters:
        sample_size (`int`, defaults to 16):
            Side of the training latent grid (16 for 256x256 images at f16). Other sizes, square or not, run too: the
            absolute position embedding is interpolated and RoPE uses integer positions.
        in_channels (`int`, defaults to 32): Latent channels (32 for AlignTok's main tokenizer, 64 for its variant).
        out_channels (`int`, *optional*): Output channels; `None` means `in_channels` (a velocity per latent channel).
        patch_size (`int`, defaults to 1):
            Side of the square latent patches turned into tokens. LightningDiT-XL/1 uses 1 on 16x16 latents (256
            tokens); 2 quarters the tokens.
        hidden_size (`int`, defaults to 1152): Transformer width (1152 for XL, 1024 for L, 768 for B).
        num_layers (`int`, defaults to 28): Number of transformer blocks (28 for XL, 24 for L, 12 for B).
        num_attention_heads (`int`, defaults to 16):
            Attention heads (16 for XL and L, 12 for B). With RoPE the head dimension must be a multiple of 4 (half of
            it encodes rows, half columns).
        mlp_ratio (`float`, defaults to 4.0):
            MLP width relative to `hidden_size`; SwiGLU's hidden width is `int(2 / 3 * mlp_ratio * hidden_size)`
            (3072 for XL), which keeps the parameter count of DiT's 4x GELU MLP.
        num_classes (`int`, defaults to 1000): Number of classes (ImageNet-1k). Id `num_classes` is the null class.
        class_dropout_prob (`float`, defaults to 0.1):
            Probability of replacing a label by the null class in training mode (DiT and LightningDiT use 0.1), which
            trains the unconditional model for classifier-free guidance.
        qk_norm (`bool`, defaults to `False`):
            RMSNorm on queries and keys per head. The paper's 64-epoch run does without it; its 800-epoch run needs it
            (without it long runs hit NaN).
        use_rope (`bool`, defaults to `True`):
            2-D rotary position embedding on the patch grid in every attention layer (LightningDiT), on top of the
            fixed sin-cos absolute embedding DiT adds after patchifying.
        norm_eps (`float`, defaults to 1e-6): Epsilon of every RMSNorm (DiT's and LightningDiT's value).
        timestep_embedding_input (`str`, defaults to `"timestep"`):
            What the sinusoidal timestep features (256 of them, cosines first, max period 10000, as in DiT) are
            computed from. `"timestep"`: the `timestep` argument as given (`sigma * 1000`), DiT's and diffusers'
            practice and what this package trains. `"flow_time"`: the flow time `t = 1 - timestep / 1000` in `[0, 1]`
            (0 = pure noise) of LightningDiT's and SiT's code, whose timestep MLP was trained on features of `t`;
            models converted from LightningDiT checkpoints need it. The forward pass takes `sigma * 1000` either way.
        adaln_shift (`bool`, defaults to `True`):
            Whether each block's adaLN modulation has shift terms (6 vectors: shift, scale, gate per branch). `False`
            is LightningDiT's `wo_shift=True` ablation (4 vectors, scale and gate only), for converting such
            checkpoints; the output layer's modulation keeps its shift either way, as in LightningDiT.
        persistent_position_embedding (`bool`, defaults to `False`):
            Store the sin-cos position embedding of the `sample_size` grid in the weights instead of recomputing it
            at construction. LightningDiT keeps it as a frozen parameter that its EMA update nevertheless averages, so
            the EMA weights carry a copy that float32 rounding has moved from the exact sin-cos values (by up to about
            1e-4 over a long run); converted models load that copy to compute exactly what the reference computes.
            Grids of other sizes still get a freshly computed (interpolated) embedding.
    """

    _supports_gradient_checkpointing = True
    _no_split_modules = ["LightningDiTBlock"]
    _skip_layerwise_casting_patterns = ["patch_embed", "norm"]
    _repeated_blocks = ["LightningDiTBlock"]

    @register_to_config
    def __init__(
        self,
        sample_size: int = 16,
        in_channels: int = 32,
        out_channels: int | None = None,
        patch_size: int = 1,
        hidden_size: int = 1152,
        num_layers: int = 28,
        num_attention_heads: int = 16,
        mlp_ratio: float = 4.0,
        num_classes: int = 1000,
        class_dropout_prob: float = 0.1,
        qk_norm: bool = False,
        use_rope: bool = True,
        norm_eps: float = 1e-6,
        timestep_embedding_input: str = "timestep",
        adaln_shift: bool = True,
        persistent_position_embedding: bool = False,
    ):
        super().__init__()
        if hidden_size % num_attention_heads:
            raise ValueError(
                f"hidden_size={hidden_size} is not divisible by num_attention_heads={num_attention_heads}; choose "
                "sizes whose ratio (the head dimension) is an integer."
            )
        head_dim = hidden_size // num_attention_heads
        if use_rope and head_dim % 4:
            raise ValueError(
                f"2-D RoPE needs a head dimension divisible by 4 (half for rows, half for columns, in rotation pairs), "
                f"but hidden_size / num_attention_heads = {head_dim}. Change the sizes or set use_rope=False."
            )
        if sample_size % patch_size:
            raise ValueError(f"sample_size={sample_size} is not divisible by patch_size={patch_size}.")
        if not 0.0 <= class_dropout_prob < 1.0:
            raise ValueError(f"class_dropout_prob={class_dropout_prob} must lie in [0, 1).")
        if num_classes < 1:
            raise ValueError(f"num_classes={num_classes} must be at least 1.")
        if timestep_embedding_input not in TIMESTEP_EMBEDDING_INPUTS:
            raise ValueError(
                f"timestep_embedding_input={timestep_embedding_input!r} is not one of {TIMESTEP_EMBEDDING_INPUTS}: "
                "'timestep' embeds sigma * 1000 (this package's models), 'flow_time' embeds 1 - sigma (models "
                "converted from LightningDiT)."
            )

        self.out_channels = out_channels or in_channels
        self.gradient_checkpointing = False

        # Patchify with a strided conv and add DiT's fixed 2-D sin-cos position embedding.
        self.patch_embed = PatchEmbed(
            height=sample_size,
            width=sample_size,
            patch_size=patch_size,
            in_channels=in_channels,
            embed_dim=hidden_size,
            bias=True,
        )
        if persistent_position_embedding:
            # Same values, but saved and loaded with the weights (re-registering an existing buffer keeps it).
            self.patch_embed.register_buffer("pos_embed", self.patch_embed.pos_embed, persistent=True)
        # DiT's timestep embedder: cos-first sinusoids of the raw timestep, then a 2-layer SiLU MLP.
        self.time_proj = Timesteps(_TIMESTEP_PROJECTION_DIM, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embedder = TimestepEmbedding(_TIMESTEP_PROJECTION_DIM, hidden_size)
        self.class_embedder = LightningDiTLabelEmbedding(num_classes, hidden_size, class_dropout_prob)
        # Half of each head encodes the row, half the column (LightningDiT's `VisionRotaryEmbeddingFast`).
        self.rotary_embedding = (
            FluxPosEmbed(theta=_ROPE_THETA, axes_dim=[head_dim // 2, head_dim // 2]) if use_rope else None
        )

        self.transformer_blocks = nn.ModuleList(
            [
                LightningDiTBlock(
                    hidden_size,
                    num_attention_heads,
                    mlp_ratio=mlp_ratio,
                    qk_norm=qk_norm,
                    eps=norm_eps,
                    adaln_shift=adaln_shift,
                )
                for _ in range(num_layers)
            ]
        )
        self.norm_out = AdaLayerNormContinuous(hidden_size, hidden_size, eps=norm_eps, norm_type="rms_norm")
        self.proj_out = nn.Linear(hidden_size, patch_size * patch_size * self.out_channels, bias=True)

        self._initialize_weights()

    @classmethod
    def from_preset(cls, name: str, **config_overrides) -> "LightningDiTTransformer2DModel":
        """Builds a randomly initialised model from a named size in `DIT_PRESETS` ("B", "L", "XL", "tiny")."""
        if name not in DIT_PRESETS:
            raise ValueError(f"Unknown LightningDiT preset {name!r}; choose one of {sorted(DIT_PRESETS)}.")
        return cls(**{**DIT_PRESETS[name], **config_overrides})

    def _initialize_weights(self) -> None:
        """DiT's initialisation: xavier linears, zeroed adaLN modulations and output layer (each block starts as the
        identity and the model predicts 0)."""

        def init_linear(module: nn.Module) -> None:
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

        self.apply(init_linear)
        # The patch conv is a linear map on flattened patches; initialise it like one.
        patch_weight = self.patch_embed.proj.weight
        nn.init.xavier_uniform_(patch_weight.view(patch_weight.shape[0], -1))
        nn.init.zeros_(self.patch_embed.proj.bias)
        nn.init.normal_(self.class_embedder.embedding_table.weight, std=0.02)
        nn.init.normal_(self.time_embedder.linear_1.weight, std=0.02)
        nn.init.normal_(self.time_embedder.linear_2.weight, std=0.02)
        for block in self.transformer_blocks:
            nn.init.zeros_(block.adaln_modulation[-1].weight)
            nn.init.zeros_(block.adaln_modulation[-1].bias)
        for layer in (self.norm_out.linear, self.proj_out):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def _rotary_embedding(self, grid_height: int, grid_width: int, device: torch.device) -> tuple[torch.Tensor, ...]:
        rows = torch.arange(grid_height, device=device)
        cols = torch.arange(grid_width, device=device)
        # Row-major (row, column) ids, the order in which `PatchEmbed` flattens the grid.
        ids = torch.stack(torch.meshgrid(rows, cols, indexing="ij"), dim=-1).reshape(-1, 2)
        return self.rotary_embedding(ids)

    def _check_inputs(self, hidden_states: torch.Tensor, timestep: torch.Tensor, class_labels: torch.Tensor) -> None:
        config = self.config
        if not torch.is_tensor(hidden_states) or hidden_states.ndim != 4:
            shape = tuple(hidden_states.shape) if torch.is_tensor(hidden_states) else type(hidden_states).__name__
            raise ValueError(f"Expected latents of shape (batch, {config.in_channels}, height, width), got {shape}.")
        batch_size, channels, height, width = hidden_states.shape
        if channels != config.in_channels:
            raise ValueError(
                f"The latents have {channels} channels but this transformer's in_channels is {config.in_channels}. "
                "Use latents of the tokenizer the model was trained on (its `latent_channels`)."
            )
        if height % config.patch_size or width % config.patch_size:
            raise ValueError(
                f"Latent size {height}x{width} is not divisible by patch_size={config.patch_size}; use latent sides "
                f"that are multiples of {config.patch_size}."
            )
        if not torch.is_tensor(class_labels) or class_labels.shape != (batch_size,):
            shape = tuple(class_labels.shape) if torch.is_tensor(class_labels) else type(class_labels).__name__
            raise ValueError(f"Expected class_labels of shape ({batch_size},), one id per latent, got {shape}.")
        if class_labels.is_floating_point() or class_labels.is_complex() or class_labels.dtype == torch.bool:
            raise TypeError(f"class_labels must be integer class ids, got dtype {class_labels.dtype}.")
        if timestep.ndim > 1 or (timestep.ndim == 1 and timestep.shape[0] not in (1, batch_size)):
            raise ValueError(
                f"Expected a scalar timestep or one per latent ({batch_size},), got {tuple(timestep.shape)}."
            )
        if not torch.compiler.is_compiling() and batch_size > 0:
            # Data-dependent (a device sync); skipped under torch.compile to avoid a graph break.
            low, high = torch.aminmax(class_labels)
            if low.item() < 0 or high.item() > config.num_classes:
                bad = low.item() if low.item() < 0 else high.item()
                raise ValueError(
                    f"Class id {bad} is out of range for num_classes={config.num_classes}: valid ids are 0 to "
                    f"{config.num_classes - 1}, plus {config.num_classes} for the null (unconditional) class."
                )

    def forward(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor | float,
        class_labels: torch.LongTensor,
        force_drop_ids: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> Transformer2DModelOutput | tuple[torch.Tensor]:
        """
        Predicts the flow-matching velocity.

        Args:
            hidden_states (`torch.Tensor`): Normalised latents `(batch, in_channels, height, width)`; height and width
                multiples of `patch_size`.
            timestep (`torch.Tensor` or `float`): `sigma * 1000` in `[0, 1000]` (1000 = pure noise), a scalar or one
                value per latent.
            class_labels (`torch.LongTensor`): `(batch,)` class ids in `[0, num_classes]`; `num_classes` is the null
                class.
            force_drop_ids (`torch.Tensor`, *optional*): `(batch,)` flags; where 1 (or `True`) the label is replaced by
                the null class, in any mode (as diffusers' `LabelEmbedding`). Random label dropout with
                `class_dropout_prob` happens only in training mode.
            return_dict (`bool`, defaults to `True`): Return a [`~models.modeling_outputs.Transformer2DModelOutput`]
                instead of a one-element tuple.

        Returns:
            The velocity `noise - x0`, shaped `(batch, out_channels, height, width)`.
        """
        timestep = torch.as_tensor(timestep, device=hidden_states.device)
        self._check_inputs(hidden_states, timestep, class_labels)
        batch_size, _, height, width = hidden_states.shape
        patch_size = self.config.patch_size
        grid_height, grid_width = height // patch_size, width // patch_size

        hidden_states = self.patch_embed(hidden_states)
        timestep = timestep.reshape(-1).expand(batch_size)
        if self.config.timestep_embedding_input == "flow_time":
            timestep = 1.0 - timestep.float() / _NUM_TRAIN_TIMESTEPS
        time_embedding = self.time_embedder(self.time_proj(timestep).to(hidden_states.dtype))
        class_embedding = self.class_embedder(class_labels, force_drop_ids=force_drop_ids)
        conditioning = time_embedding + class_embedding.to(hidden_states.dtype)

        image_rotary_emb = None
        if self.rotary_embedding is not None:
            image_rotary_emb = self._rotary_embedding(grid_height, grid_width, hidden_states.device)

        for block in self.transformer_blocks:
            if torch.is_grad_enabled() and self.gradient_checkpointing:
                hidden_states = self._gradient_checkpointing_func(block, hidden_states, conditioning, image_rotary_emb)
            else:
                hidden_states = block(hidden_states, conditioning, image_rotary_emb)

        hidden_states = self.proj_out(self.norm_out(hidden_states, conditioning))

        # Unpatchify: (batch, tokens, p * p * C) -> (batch, C, height, width).
        hidden_states = hidden_states.reshape(
            batch_size, grid_height, grid_width, patch_size, patch_size, self.out_channels
        )
        output = hidden_states.permute(0, 5, 1, 3, 2, 4).reshape(batch_size, self.out_channels, height, width)

        if not return_dict:
            return (output,)
        return Transformer2DModelOutput(sample=output)
