# A test-only transcription of LightningDiT's model, the reference that the converter's outputs are compared against.
#
# Source: https://github.com/hustvl/LightningDiT, commit 2725fed42a14898744433809949834e26957bcdd (2025-06-12),
# MIT License, Copyright (c) 2024 HUST Vision Lab. Files: models/lightningdit.py (Attention, TimestepEmbedder,
# LabelEmbedder, LightningDiTBlock, FinalLayer, LightningDiT with forward and forward_with_cfg, the sin-cos position
# embedding and the model-type constructors), models/swiglu_ffn.py (SwiGLUFFN), models/rmsnorm.py (RMSNorm only; the
# rest of that file is an unused LLaMA copy that needs fairscale), models/pos_embed.py (VisionRotaryEmbeddingFast,
# rotate_half, broadcat); and, at the bottom, the sampler inference.py runs (transport/ ODE Euler with torchdiffeq's
# fixed-grid Euler loop written out; the sources are listed there).
#
# Changes, none of which alters a number the model computes:
# - only torch: timm's `PatchEmbed` and `Mlp` (imported by lightningdit.py from timm.models.vision_transformer) are
#   replaced by their few-line equivalents with the same submodule names (`proj`; `fc1`, `act`, `fc2`); einops'
#   `rearrange`/`repeat` by `unflatten`/`stack`/`repeat_interleave`; `broadcat` by `expand` + `cat`.
# - the `@torch.compile` decorators are dropped (eager execution is what they compile).
# - gradient checkpointing (`use_checkpoint`) and the unused `VisionRotaryEmbedding` / `freqs_for` variants are left
#   out.
# - `forward_with_cfg` is kept verbatim, including its guidance of only the first 3 channels (a DiT leftover), so that a
#   sampler-level parity test can call it exactly as LightningDiT's `inference.py` does.
# - the sampler needs no torchdiffeq: `odeint(method="euler")` on LightningDiT's grid is a three-line loop.
# Nothing here is imported by the package.

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


# --------------------------------------------------------------------------------------------------------------------
# timm stand-ins (timm.layers.PatchEmbed with its defaults as LightningDiT calls it, timm.layers.Mlp)
# --------------------------------------------------------------------------------------------------------------------


class PatchEmbed(nn.Module):
    """timm's `PatchEmbed(img_size, patch_size, in_chans, embed_dim, bias=True)`: strided conv, flatten to tokens."""

    def __init__(self, img_size: int, patch_size: int, in_chans: int, embed_dim: int, bias: bool = True):
        super().__init__()
        self.img_size = (img_size, img_size)
        self.patch_size = (patch_size, patch_size)
        self.grid_size = (img_size // patch_size, img_size // patch_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size, bias=bias)
        self.norm = nn.Identity()

    def forward(self, x):
        _, _, height, width = x.shape
        assert (height, width) == self.img_size, f"Input size ({height}*{width}) doesn't match model {self.img_size}."
        x = self.proj(x)
        x = x.flatten(2).transpose(1, 2)  # NCHW -> NLC
        return self.norm(x)


class Mlp(nn.Module):
    """timm's `Mlp` (fc1 -> act -> fc2, dropout 0, no norm)."""

    def __init__(self, in_features, hidden_features=None, out_features=None, act_layer=nn.GELU, drop=0.0):
        super().__init__()
        out_features = out_features or in_features
        hidden_features = hidden_features or in_features
        self.fc1 = nn.Linear(in_features, hidden_features, bias=True)
        self.act = act_layer()
        self.drop1 = nn.Dropout(drop)
        self.norm = nn.Identity()
        self.fc2 = nn.Linear(hidden_features, out_features, bias=True)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x):
        x = self.drop1(self.act(self.fc1(x)))
        return self.drop2(self.fc2(self.norm(x)))


# --------------------------------------------------------------------------------------------------------------------
# models/swiglu_ffn.py, models/rmsnorm.py, models/pos_embed.py
# --------------------------------------------------------------------------------------------------------------------


class SwiGLUFFN(nn.Module):
    def __init__(self, in_features, hidden_features=None, out_features=None, act_layer=None, drop=0.0, bias=True):
        super().__init__()
        out_features = out_features or in_features
        hidden_features = hidden_features or in_features
        self.w12 = nn.Linear(in_features, 2 * hidden_features, bias=bias)
        self.w3 = nn.Linear(hidden_features, out_features, bias=bias)

    def forward(self, x):
        x12 = self.w12(x)
        x1, x2 = x12.chunk(2, dim=-1)
        hidden = F.silu(x1) * x2
        return self.w3(hidden)


class RMSNorm(torch.nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def _norm(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)

    def forward(self, x):
        output = self._norm(x.float()).type_as(x)
        return output * self.weight


def rotate_half(x):
    # rearrange(x, '... (d r) -> ... d r', r=2); unbind; stack((-x2, x1)); rearrange back
    x = x.unflatten(-1, (-1, 2))
    x1, x2 = x.unbind(dim=-1)
    x = torch.stack((-x2, x1), dim=-1)
    return x.flatten(-2)


class VisionRotaryEmbeddingFast(nn.Module):
    def __init__(self, dim, pt_seq_len=16, ft_seq_len=None, theta=10000):
        super().__init__()
        freqs = 1.0 / (theta ** (torch.arange(0, dim, 2)[: (dim // 2)].float() / dim))  # freqs_for == 'lang'

        if ft_seq_len is None:
            ft_seq_len = pt_seq_len
        t = torch.arange(ft_seq_len) / ft_seq_len * pt_seq_len

        freqs = torch.einsum("..., f -> ... f", t, freqs)
        freqs = freqs.repeat_interleave(2, dim=-1)  # repeat(freqs, '... n -> ... (n r)', r=2)
        # broadcat((freqs[:, None, :], freqs[None, :, :]), dim=-1)
        length = freqs.shape[0]
        freqs = torch.cat(
            [freqs[:, None, :].expand(length, length, -1), freqs[None, :, :].expand(length, length, -1)], dim=-1
        )

        freqs_cos = freqs.cos().view(-1, freqs.shape[-1])
        freqs_sin = freqs.sin().view(-1, freqs.shape[-1])

        self.register_buffer("freqs_cos", freqs_cos)
        self.register_buffer("freqs_sin", freqs_sin)

    def forward(self, t):
        return t * self.freqs_cos + rotate_half(t) * self.freqs_sin


# --------------------------------------------------------------------------------------------------------------------
# models/lightningdit.py
# --------------------------------------------------------------------------------------------------------------------


def modulate(x, shift, scale):
    if shift is None:
        return x * (1 + scale.unsqueeze(1))
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class Attention(nn.Module):
    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = False,
        qk_norm: bool = False,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        norm_layer: nn.Module = nn.LayerNorm,
        fused_attn: bool = True,
        use_rmsnorm: bool = False,
    ) -> None:
        super().__init__()
        assert dim % num_heads == 0, "dim should be divisible by num_heads"

        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.fused_attn = fused_attn

        if use_rmsnorm:
            norm_layer = RMSNorm

        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.q_norm = norm_layer(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = norm_layer(self.head_dim) if qk_norm else nn.Identity()
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor, rope=None) -> torch.Tensor:
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)

        if rope is not None:
            q = rope(q)
            k = rope(k)

        if self.fused_attn:
            x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop.p if self.training else 0.0)
        else:
            q = q * self.scale
            attn = q @ k.transpose(-2, -1)
            attn = attn.softmax(dim=-1)
            attn = self.attn_drop(attn)
            x = attn @ v

        x = x.transpose(1, 2).reshape(B, N, C)
        x = self.proj(x)
        x = self.proj_drop(x)
        return x


class TimestepEmbedder(nn.Module):
    def __init__(self, hidden_size: int, frequency_embedding_size: int = 256) -> None:
        super().__init__()
        self.frequency_embedding_size = frequency_embedding_size
        self.mlp = nn.Sequential(
            nn.Linear(frequency_embedding_size, hidden_size, bias=True),
            nn.SiLU(),
            nn.Linear(hidden_size, hidden_size, bias=True),
        )

    @staticmethod
    def timestep_embedding(t: torch.Tensor, dim: int, max_period: int = 10000) -> torch.Tensor:
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(start=0, end=half, dtype=torch.float32) / half).to(
            device=t.device
        )

        args = t[:, None].float() * freqs[None]
        embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)

        if dim % 2:
            embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)

        return embedding

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        t_freq = self.timestep_embedding(t, self.frequency_embedding_size)
        t_emb = self.mlp(t_freq)
        return t_emb


class LabelEmbedder(nn.Module):
    def __init__(self, num_classes, hidden_size, dropout_prob):
        super().__init__()
        use_cfg_embedding = dropout_prob > 0
        self.embedding_table = nn.Embedding(num_classes + use_cfg_embedding, hidden_size)
        self.num_classes = num_classes
        self.dropout_prob = dropout_prob

    def token_drop(self, labels, force_drop_ids=None):
        if force_drop_ids is None:
            drop_ids = torch.rand(labels.shape[0], device=labels.device) < self.dropout_prob
        else:
            drop_ids = force_drop_ids == 1
        labels = torch.where(drop_ids, self.num_classes, labels)
        return labels

    def forward(self, labels, train, force_drop_ids=None):
        use_dropout = self.dropout_prob > 0
        if (train and use_dropout) or (force_drop_ids is not None):
            labels = self.token_drop(labels, force_drop_ids)
        embeddings = self.embedding_table(labels)
        return embeddings


class LightningDiTBlock(nn.Module):
    def __init__(
        self,
        hidden_size,
        num_heads,
        mlp_ratio=4.0,
        use_qknorm=False,
        use_swiglu=False,
        use_rmsnorm=False,
        wo_shift=False,
        **block_kwargs,
    ):
        super().__init__()

        if not use_rmsnorm:
            self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
            self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        else:
            self.norm1 = RMSNorm(hidden_size)
            self.norm2 = RMSNorm(hidden_size)

        self.attn = Attention(
            hidden_size,
            num_heads=num_heads,
            qkv_bias=True,
            qk_norm=use_qknorm,
            use_rmsnorm=use_rmsnorm,
            **block_kwargs,
        )

        mlp_hidden_dim = int(hidden_size * mlp_ratio)
        approx_gelu = lambda: nn.GELU(approximate="tanh")  # noqa: E731
        if use_swiglu:
            self.mlp = SwiGLUFFN(hidden_size, int(2 / 3 * mlp_hidden_dim))
        else:
            self.mlp = Mlp(in_features=hidden_size, hidden_features=mlp_hidden_dim, act_layer=approx_gelu, drop=0)

        if wo_shift:
            self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 4 * hidden_size, bias=True))
        else:
            self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size, bias=True))
        self.wo_shift = wo_shift

    def forward(self, x, c, feat_rope=None):
        if self.wo_shift:
            scale_msa, gate_msa, scale_mlp, gate_mlp = self.adaLN_modulation(c).chunk(4, dim=1)
            shift_msa = None
            shift_mlp = None
        else:
            shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c).chunk(6, dim=1)

        x = x + gate_msa.unsqueeze(1) * self.attn(modulate(self.norm1(x), shift_msa, scale_msa), rope=feat_rope)
        x = x + gate_mlp.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))
        return x


class FinalLayer(nn.Module):
    def __init__(self, hidden_size, patch_size, out_channels, use_rmsnorm=False):
        super().__init__()
        if not use_rmsnorm:
            self.norm_final = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        else:
            self.norm_final = RMSNorm(hidden_size)
        self.linear = nn.Linear(hidden_size, patch_size * patch_size * out_channels, bias=True)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size, bias=True))

    def forward(self, x, c):
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        x = modulate(self.norm_final(x), shift, scale)
        x = self.linear(x)
        return x


class LightningDiT(nn.Module):
    def __init__(
        self,
        input_size=32,
        patch_size=2,
        in_channels=32,
        hidden_size=1152,
        depth=28,
        num_heads=16,
        mlp_ratio=4.0,
        class_dropout_prob=0.1,
        num_classes=1000,
        learn_sigma=False,
        use_qknorm=False,
        use_swiglu=False,
        use_rope=False,
        use_rmsnorm=False,
        wo_shift=False,
    ):
        super().__init__()
        self.learn_sigma = learn_sigma
        self.in_channels = in_channels
        self.out_channels = in_channels if not learn_sigma else in_channels * 2
        self.patch_size = patch_size
        self.num_heads = num_heads
        self.use_rope = use_rope
        self.use_rmsnorm = use_rmsnorm
        self.depth = depth
        self.hidden_size = hidden_size
        self.x_embedder = PatchEmbed(input_size, patch_size, in_channels, hidden_size, bias=True)
        self.t_embedder = TimestepEmbedder(hidden_size)
        self.y_embedder = LabelEmbedder(num_classes, hidden_size, class_dropout_prob)
        num_patches = self.x_embedder.num_patches
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches, hidden_size), requires_grad=False)

        if self.use_rope:
            half_head_dim = hidden_size // num_heads // 2
            hw_seq_len = input_size // patch_size
            self.feat_rope = VisionRotaryEmbeddingFast(dim=half_head_dim, pt_seq_len=hw_seq_len)
        else:
            self.feat_rope = None

        self.blocks = nn.ModuleList(
            [
                LightningDiTBlock(
                    hidden_size,
                    num_heads,
                    mlp_ratio=mlp_ratio,
                    use_qknorm=use_qknorm,
                    use_swiglu=use_swiglu,
                    use_rmsnorm=use_rmsnorm,
                    wo_shift=wo_shift,
                )
                for _ in range(depth)
            ]
        )
        self.final_layer = FinalLayer(hidden_size, patch_size, self.out_channels, use_rmsnorm=use_rmsnorm)
        self.initialize_weights()

    def initialize_weights(self):
        def _basic_init(module):
            if isinstance(module, nn.Linear):
                torch.nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.constant_(module.bias, 0)

        self.apply(_basic_init)

        pos_embed = get_2d_sincos_pos_embed(self.pos_embed.shape[-1], int(self.x_embedder.num_patches**0.5))
        self.pos_embed.data.copy_(torch.from_numpy(pos_embed).float().unsqueeze(0))

        w = self.x_embedder.proj.weight.data
        nn.init.xavier_uniform_(w.view([w.shape[0], -1]))
        nn.init.constant_(self.x_embedder.proj.bias, 0)

        nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)

        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)

        for block in self.blocks:
            nn.init.constant_(block.adaLN_modulation[-1].weight, 0)
            nn.init.constant_(block.adaLN_modulation[-1].bias, 0)

        nn.init.constant_(self.final_layer.adaLN_modulation[-1].weight, 0)
        nn.init.constant_(self.final_layer.adaLN_modulation[-1].bias, 0)
        nn.init.constant_(self.final_layer.linear.weight, 0)
        nn.init.constant_(self.final_layer.linear.bias, 0)

    def unpatchify(self, x):
        c = self.out_channels
        p = self.x_embedder.patch_size[0]
        h = w = int(x.shape[1] ** 0.5)
        assert h * w == x.shape[1]

        x = x.reshape(shape=(x.shape[0], h, w, p, p, c))
        x = torch.einsum("nhwpqc->nchpwq", x)
        imgs = x.reshape(shape=(x.shape[0], c, h * p, h * p))
        return imgs

    def forward(self, x, t=None, y=None):
        x = self.x_embedder(x) + self.pos_embed
        t = self.t_embedder(t)
        y = self.y_embedder(y, self.training)
        c = t + y

        for block in self.blocks:
            x = block(x, c, self.feat_rope)

        x = self.final_layer(x, c)
        x = self.unpatchify(x)

        if self.learn_sigma:
            x, _ = x.chunk(2, dim=1)
        return x

    def forward_with_cfg(self, x, t, y, cfg_scale, cfg_interval=None, cfg_interval_start=None):
        return forward_with_cfg(self.forward, x, t, y, cfg_scale, cfg_interval, cfg_interval_start)


def forward_with_cfg(forward, x, t, y, cfg_scale, cfg_interval=None, cfg_interval_start=None, guided_channels=3):
    """`LightningDiT.forward_with_cfg` around any `forward(x, t, y)`. `guided_channels=3` is its code ("for exact
    reproducibility reasons", after DiT); `None` is the standard form it leaves commented out (all channels)."""
    half = x[: len(x) // 2]
    combined = torch.cat([half, half], dim=0)
    model_out = forward(combined, t, y)
    eps, rest = model_out[:, :guided_channels], model_out[:, guided_channels:]
    cond_eps, uncond_eps = torch.split(eps, len(eps) // 2, dim=0)
    half_eps = uncond_eps + cfg_scale * (cond_eps - uncond_eps)

    if cfg_interval is True:
        timestep = t[0]
        if timestep < cfg_interval_start:
            half_eps = cond_eps

    eps = torch.cat([half_eps, half_eps], dim=0)
    return torch.cat([eps, rest], dim=1)


def get_2d_sincos_pos_embed(embed_dim, grid_size, cls_token=False, extra_tokens=0):
    grid_h = np.arange(grid_size, dtype=np.float32)
    grid_w = np.arange(grid_size, dtype=np.float32)
    grid = np.meshgrid(grid_w, grid_h)  # here w goes first
    grid = np.stack(grid, axis=0)

    grid = grid.reshape([2, 1, grid_size, grid_size])
    pos_embed = get_2d_sincos_pos_embed_from_grid(embed_dim, grid)
    if cls_token and extra_tokens > 0:
        pos_embed = np.concatenate([np.zeros([extra_tokens, embed_dim]), pos_embed], axis=0)
    return pos_embed


def get_2d_sincos_pos_embed_from_grid(embed_dim, grid):
    assert embed_dim % 2 == 0
    emb_h = get_1d_sincos_pos_embed_from_grid(embed_dim // 2, grid[0])
    emb_w = get_1d_sincos_pos_embed_from_grid(embed_dim // 2, grid[1])
    emb = np.concatenate([emb_h, emb_w], axis=1)
    return emb


def get_1d_sincos_pos_embed_from_grid(embed_dim, pos):
    assert embed_dim % 2 == 0
    omega = np.arange(embed_dim // 2, dtype=np.float64)
    omega /= embed_dim / 2.0
    omega = 1.0 / 10000**omega

    pos = pos.reshape(-1)
    out = np.einsum("m,d->md", pos, omega)

    emb_sin = np.sin(out)
    emb_cos = np.cos(out)

    emb = np.concatenate([emb_sin, emb_cos], axis=1)
    return emb


# --------------------------------------------------------------------------------------------------------------------
# Model types (the bottom of models/lightningdit.py)
# --------------------------------------------------------------------------------------------------------------------


def LightningDiT_XL_1(**kwargs):
    return LightningDiT(depth=28, hidden_size=1152, patch_size=1, num_heads=16, **kwargs)


def LightningDiT_XL_2(**kwargs):
    return LightningDiT(depth=28, hidden_size=1152, patch_size=2, num_heads=16, **kwargs)


def LightningDiT_L_2(**kwargs):
    return LightningDiT(depth=24, hidden_size=1024, patch_size=2, num_heads=16, **kwargs)


def LightningDiT_B_1(**kwargs):
    return LightningDiT(depth=12, hidden_size=768, patch_size=1, num_heads=12, **kwargs)


def LightningDiT_B_2(**kwargs):
    return LightningDiT(depth=12, hidden_size=768, patch_size=2, num_heads=12, **kwargs)


def LightningDiT_1p0B_1(**kwargs):
    return LightningDiT(depth=24, hidden_size=1536, patch_size=1, num_heads=24, **kwargs)


def LightningDiT_1p0B_2(**kwargs):
    return LightningDiT(depth=24, hidden_size=1536, patch_size=2, num_heads=24, **kwargs)


def LightningDiT_1p6B_1(**kwargs):
    return LightningDiT(depth=28, hidden_size=1792, patch_size=1, num_heads=28, **kwargs)


def LightningDiT_1p6B_2(**kwargs):
    return LightningDiT(depth=28, hidden_size=1792, patch_size=2, num_heads=28, **kwargs)


LightningDiT_models = {
    "LightningDiT-B/1": LightningDiT_B_1,
    "LightningDiT-B/2": LightningDiT_B_2,
    "LightningDiT-L/2": LightningDiT_L_2,
    "LightningDiT-XL/1": LightningDiT_XL_1,
    "LightningDiT-XL/2": LightningDiT_XL_2,
    "LightningDiT-1p0B/1": LightningDiT_1p0B_1,
    "LightningDiT-1p0B/2": LightningDiT_1p0B_2,
    "LightningDiT-1p6B/1": LightningDiT_1p6B_1,
    "LightningDiT-1p6B/2": LightningDiT_1p6B_2,
}


# --------------------------------------------------------------------------------------------------------------------
# The sampler of inference.py: transport's ODE Euler sampler (sample.mode ODE, sampling_method euler) with CFG
# --------------------------------------------------------------------------------------------------------------------
#
# Sources (same commit): transport/__init__.py (create_transport: Linear path + velocity prediction -> train_eps =
# sample_eps = 0), transport/transport.py (Transport.check_interval -> t0 = 0, t1 = 1 for that pair; get_drift's
# velocity_ode: the drift is the model output; Sampler.sample_ode), transport/integrators.py (ode.__init__: the time
# grid `linspace(t0, t1, num_steps)` and its `compute_tm` timestep shift; ode.sample: `_fn` broadcasting t over the
# batch, then torchdiffeq's `odeint(_fn, x, t, method="euler")`), and inference.py (do_sample, its non-demo branch: the
# doubled batch with the null class 1000, `forward_with_cfg` with `cfg_interval=True`, keeping the first half).
# torchdiffeq's fixed-grid Euler (torchdiffeq/_impl/solvers.py FixedGridODESolver.integrate, fixed_grid.py
# Euler._step_func) is transcribed too: on a grid equal to the requested times it is `y += (t1 - t0) * f(t0, y)` per
# interval, the drift evaluated at the left end (no perturbation by default) with `t` cast to the state's dtype, and
# `odeint(...)[-1]` is the state after the last step (its linear interpolation returns `y1` when `t == t1`).
# atol/rtol are unused by fixed-grid solvers and left out.


def ode_time_grid(num_steps: int, timestep_shift: float = 0.0, t0: float = 0.0, t1: float = 1.0) -> torch.Tensor:
    """transport/integrators.py `ode.__init__`: `num_steps` points from t0 (noise) to t1 (data), optionally shifted."""
    t = torch.linspace(t0, t1, num_steps)

    if timestep_shift > 0:

        def compute_tm(t_n, timestep_shift):
            numerator = timestep_shift * t_n
            denominator = 1 + (timestep_shift - 1) * t_n
            return numerator / denominator

        t = torch.tensor([compute_tm(t_n, timestep_shift) for t_n in t])
    return t


def velocity_ode(x, t, model, **model_kwargs):
    """transport/transport.py `Transport.get_drift` for ModelType.VELOCITY (with body_fn's shape check)."""
    model_output = model(x, t, **model_kwargs)
    assert model_output.shape == x.shape, "Output shape from ODE solver must match input shape"
    return model_output


def sample_ode_euler(x, model, num_steps: int, timestep_shift: float = 0.0, **model_kwargs) -> torch.Tensor:
    """`Sampler.sample_ode(sampling_method="euler", num_steps=..., timestep_shift=...)(x, model, **kwargs)[-1]`."""
    grid = ode_time_grid(num_steps, timestep_shift).to(x.device)

    def _fn(t, x):  # integrators.py ode.sample
        t = torch.ones(x.size(0)).to(x.device) * t
        return velocity_ode(x, t, model, **model_kwargs)

    # torchdiffeq FixedGridODESolver.integrate with Euler._step_func (the grid is the requested times).
    y0 = x
    for t_left, t_right in zip(grid[:-1], grid[1:]):
        dt = t_right - t_left
        y0 = y0 + dt * _fn(t_left.to(y0.dtype), y0)
    return y0


def inference_py_sample(
    model: LightningDiT,
    z: torch.Tensor,
    y: torch.Tensor,
    cfg_scale: float,
    cfg_interval_start: float,
    num_sampling_steps: int,
    timestep_shift: float,
) -> torch.Tensor:
    """inference.py `do_sample` (non-demo): the normalised latents, before its `samples * latent_std / ... + mean`."""
    using_cfg = cfg_scale > 1.0
    n = z.shape[0]
    if using_cfg:
        z = torch.cat([z, z], 0)
        y_null = torch.tensor([1000] * n, device=z.device)  # hard-coded in inference.py: ImageNet's null class
        y = torch.cat([y, y_null], 0)
        model_kwargs = {"y": y, "cfg_scale": cfg_scale, "cfg_interval": True, "cfg_interval_start": cfg_interval_start}
        model_fn = model.forward_with_cfg
    else:
        model_kwargs = {"y": y}
        model_fn = model.forward

    with torch.no_grad():
        samples = sample_ode_euler(z, model_fn, num_sampling_steps, timestep_shift, **model_kwargs)
    if using_cfg:
        samples, _ = samples.chunk(2, dim=0)  # Remove null class samples
    return samples
