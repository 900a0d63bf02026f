"""The semantic preservation loss L_sp of AlignTok's stage 2 (perceptual alignment).

Stage 2 (arXiv 2509.25162; docs/design.md, method table) unfreezes the encoder and trains encoder + adapter + decoder with
`L_rec + w_sp * L_sp`, where L_sp keeps the current latent `A(E(x))` close to the latent of a frozen copy of the
stage-1 encoder + adapter, so that fine-tuning for reconstruction does not wash out the encoder's semantics.
"""

import torch
import torch.nn.functional as F


SEMANTIC_PRESERVATION_KINDS = ("l2", "cosine")


def semantic_preservation_loss(latents: torch.Tensor, target_latents: torch.Tensor, kind: str = "l2") -> torch.Tensor:
    """L_sp between the latents of the model being trained and those of the frozen stage-1 encoder + adapter.

    Paper settings (docs/design.md): L2, measured after the adapter (before it was clearly worse), weighted by `w_sp = 1`
    on ImageNet and 3 on LAION (the weight is the caller's); cosine instead of L2 works about as well. The paper does
    not say how the L2 is normalised; ours is the mean over all elements, so its scale does not depend on the latent's
    size. It is added to `ReconstructionLoss`'s per-element mean L_rec, so `w_sp` weighs one unit of mean squared
    latent error against one unit of mean absolute pixel error; with LDM-style code, which sums L_rec over the pixels,
    the same balance needs `w_sp` times `C * H * W` (see `ReconstructionLoss`). At toy scale w_sp behaves as the
    paper's ablation reports (the latent's linear probe rises with w_sp; `benchmarks/toy_reproduction.py`).

    Args:
        latents (`torch.Tensor`): `(batch, channels, h, w)` latents of the model being trained; gradients flow here.
        target_latents (`torch.Tensor`):
            Same shape, from the frozen stage-1 encoder + adapter. Detached here, so no gradient reaches it even if the
            caller forgot `torch.no_grad()`.
        kind (`str`, defaults to `"l2"`):
            `"l2"`: mean squared error over all elements. `"cosine"`: `1 - cosine similarity` of the channel vectors
            at each latent position, averaged over positions and the batch (0 when parallel, 1 when orthogonal).

    Returns:
        A float32 scalar, whatever the input dtype.
    """
    if kind not in SEMANTIC_PRESERVATION_KINDS:
        raise ValueError(
            f"Unknown semantic preservation loss kind {kind!r}; choose one of {SEMANTIC_PRESERVATION_KINDS}."
        )
    if latents.shape != target_latents.shape:
        raise ValueError(
            f"latents {tuple(latents.shape)} and target_latents {tuple(target_latents.shape)} must have one shape: "
            "both should come from the same images through the trained and the frozen stage-1 encoder + adapter."
        )
    if latents.ndim != 4:
        raise ValueError(
            f"latents must be (batch, channels, h, w), got shape {tuple(latents.shape)}; the cosine is taken along "
            "dimension 1, so reshape token sequences to a grid first."
        )
    latents = latents.float()
    target_latents = target_latents.detach().float()
    with torch.autocast(device_type=latents.device.type, enabled=False):
        if kind == "l2":
            return F.mse_loss(latents, target_latents)
        return (1.0 - F.cosine_similarity(latents, target_latents, dim=1, eps=1e-8)).mean()
