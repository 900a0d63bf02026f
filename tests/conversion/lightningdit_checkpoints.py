"""Test helpers: reference LightningDiTs with trained-looking random weights; checkpoints as train.py writes them."""

import os

import torch

from diffusers_aligntok.conversion import LightningDiTArchitecture

from .lightningdit_reference import LightningDiT


# A LightningDiT small enough for per-test construction (head_dim 32, SwiGLU width 170, 4x4 tokens at patch 2).
TINY_ARCHITECTURE = LightningDiTArchitecture("LightningDiT-tiny/2", depth=2, hidden_size=64, num_heads=2, patch_size=2)
TINY_INPUT_SIZE = 8
TINY_CHANNELS = 8
TINY_NUM_CLASSES = 10

# The published LightningDiT-XL/1 training config (configs/reproductions/lightningdit_xl_vavae_f16d32_64ep_cfg.yaml),
# abridged; train.py stores it in every checkpoint under "config".
TRAIN_CONFIG = {
    "data": {"image_size": 256, "num_classes": 1000, "latent_norm": True, "latent_multiplier": 1.0},
    "vae": {"model_name": "vavae_f16d32", "downsample_ratio": 16},
    "model": {
        "model_type": "LightningDiT-XL/1",
        "use_qknorm": False,
        "use_swiglu": True,
        "use_rope": True,
        "use_rmsnorm": True,
        "wo_shift": False,
        "in_chans": 32,
    },
    "train": {"max_steps": 80000, "global_batch_size": 1024, "exp_name": "lightningdit_xl_vavae_f16d32", "ckpt": None},
    "optimizer": {"lr": 0.0002, "beta2": 0.95},
    "sample": {"cfg_scale": 10.0, "cfg_interval_start": 0.10, "timestep_shift": 0.3},
}


def build_reference(
    architecture: LightningDiTArchitecture,
    input_size: int,
    in_channels: int,
    num_classes: int = 1000,
    seed: int = 0,
    use_qknorm: bool = False,
    use_rope: bool = True,
    wo_shift: bool = False,
    learn_sigma: bool = False,
    class_dropout_prob: float = 0.1,
    use_swiglu: bool = True,
    use_rmsnorm: bool = True,
    trained_like: bool = True,
) -> LightningDiT:
    """The reference model with the published flags (SwiGLU, RMSNorm, RoPE) unless told otherwise, in eval mode."""
    torch.manual_seed(seed)
    model = LightningDiT(
        input_size=input_size,
        patch_size=architecture.patch_size,
        in_channels=in_channels,
        hidden_size=architecture.hidden_size,
        depth=architecture.depth,
        num_heads=architecture.num_heads,
        class_dropout_prob=class_dropout_prob,
        num_classes=num_classes,
        learn_sigma=learn_sigma,
        use_qknorm=use_qknorm,
        use_swiglu=use_swiglu,
        use_rope=use_rope,
        use_rmsnorm=use_rmsnorm,
        wo_shift=wo_shift,
    )
    if trained_like:
        randomize_like_trained(model, seed=seed)
    return model.eval()


def randomize_like_trained(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Gives the layers a fresh LightningDiT initialises to constants random values, as training would.

    Zero-initialised layers (adaLN modulations, the output layer, biases) get N(0, 0.02) values, RMSNorm weights
    1 + N(0, 0.1), and the frozen `pos_embed` the kind of small drift LightningDiT's EMA gives it (about 1e-4), so the
    comparison also shows that the converted model uses the checkpoint's copy rather than recomputing it.
    """
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name == "pos_embed":
                parameter.add_(1e-4 * torch.randn(parameter.shape, generator=generator))
            elif (parameter == 1).all():
                parameter.copy_(1 + 0.1 * torch.randn(parameter.shape, generator=generator))
            elif not parameter.any():
                parameter.copy_(0.02 * torch.randn(parameter.shape, generator=generator))
    return model


def save_train_py_checkpoint(
    path: str | os.PathLike,
    ema: torch.nn.Module,
    model: torch.nn.Module | None = None,
    with_optimizer: bool = True,
) -> str:
    """`{"model", "ema", "opt", "config"}` as LightningDiT's train.py saves it (`model` defaults to `ema`)."""
    model = model if model is not None else ema
    checkpoint = {"model": model.state_dict(), "ema": ema.state_dict(), "config": TRAIN_CONFIG}
    if with_optimizer:
        # A real AdamW state (step counters, betas tuples, per-parameter moments) after one step of a copy.
        trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=2e-4, weight_decay=0, betas=(0.9, 0.95))
        for parameter in trainable:
            parameter.grad = torch.zeros_like(parameter)
        optimizer.step()
        for parameter in trainable:
            parameter.grad = None
        checkpoint["opt"] = optimizer.state_dict()
    torch.save(checkpoint, path)
    return os.fspath(path)


def reference_inputs(
    batch_size: int, in_channels: int, input_size: int, num_classes: int = 1000, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Latents, LightningDiT times `t` (0 = noise, endpoints included) and class ids."""
    generator = torch.Generator().manual_seed(seed)
    latents = torch.randn(batch_size, in_channels, input_size, input_size, generator=generator)
    times = torch.rand(batch_size, generator=generator)
    times[0] = 0.0
    if batch_size > 1:
        times[-1] = 1.0
    labels = torch.randint(0, num_classes, (batch_size,), generator=generator)
    return latents, times, labels


def relative_difference(ours: torch.Tensor, reference: torch.Tensor) -> float:
    """`max |ours - reference| / max |reference|`."""
    return ((ours - reference).abs().max() / reference.abs().max()).item()
