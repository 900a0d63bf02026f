"""How well a tokenizer's latent aligns with a foundation encoder's representation: CKNNA.

CKNNA (Centered Kernel Nearest-Neighbour Alignment; Huh et al., "The Platonic Representation Hypothesis", ICML 2024,
Eq. 5 and their `platonic-rep` code) compares two representations of the same `n` images by their linear kernels
`K = A A^T` and `L = B B^T` (rows L2-normalised), restricted to pairs that are among each other's `k` nearest
neighbours in *both* representations:

    CKNNA(A, B) = HSIC(K * M, L * M) / sqrt(HSIC(K * M_K, K * M_K) HSIC(L * M_L, L * M_L))

where `M[i, j] = 1` if `j` is among the top-k neighbours of `i` under `K` and under `L` (self excluded), `M_K` / `M_L`
the same for one kernel alone, and HSIC the unbiased estimator (Song et al., 2012). It is 1 for identical
representations (and any rotation of them), near 0 for unrelated ones. Default `k = 10`, as in Huh et al.

Protocol here: the tokenizer side is the latent average-pooled over space (`C` values per image); the reference side
is the foundation encoder's patch tokens average-pooled (`D` values). For an `AlignedAutoencoderKL` the reference is
its own `encoder` ([`AlignTokEncoderFeatures`]; note that stage 2 fine-tunes it, so pass the original checkpoint with
[`FoundationEncoderFeatures`] to measure alignment with the pretrained DINOv2 instead). For other VAEs the reference is
whatever the caller passes; the evaluation command defaults to the first AlignTok tokenizer's encoder and otherwise
skips CKNNA with a note.
"""

from typing import Any

import torch
import torch.nn.functional as F

from ...models import AlignedAutoencoderKL
from ...models.foundation_encoders import (
    FOUNDATION_ENCODERS,
    encode_patch_tokens,
    get_foundation_encoder_spec,
    load_pretrained_foundation_encoder,
)


def hsic_unbiased(kernel_k: torch.Tensor, kernel_l: torch.Tensor) -> torch.Tensor:
    """The unbiased HSIC estimator of Song et al. (2012), Eq. 5 in Huh et al. (needs n > 3)."""
    n = kernel_k.shape[0]
    if n <= 3:
        raise ValueError(f"Unbiased HSIC needs more than 3 samples, got {n}.")
    k_tilde = kernel_k.clone().fill_diagonal_(0)
    l_tilde = kernel_l.clone().fill_diagonal_(0)
    value = (
        (k_tilde * l_tilde.T).sum()
        + k_tilde.sum() * l_tilde.sum() / ((n - 1) * (n - 2))
        - 2 * (k_tilde @ l_tilde).sum() / (n - 2)
    )
    return value / (n * (n - 3))


def _mutual_neighbour_mask(kernel_k: torch.Tensor, kernel_l: torch.Tensor, topk: int) -> torch.Tensor:
    n = kernel_k.shape[0]
    masks = []
    for kernel in (kernel_k, kernel_l):
        without_self = kernel.clone().fill_diagonal_(float("-inf"))
        neighbours = without_self.topk(topk, dim=1).indices
        masks.append(torch.zeros(n, n, dtype=kernel.dtype, device=kernel.device).scatter_(1, neighbours, 1.0))
    return masks[0] * masks[1]


def cknna(features_a: torch.Tensor, features_b: torch.Tensor, topk: int = 10) -> float:
    """CKNNA between two representations `(n, d_a)` and `(n, d_b)` of the same `n` samples (see the module docstring).

    Rows are L2-normalised first (as in `platonic-rep`); computed in float64. Needs `n > topk` and `n > 3`.
    """
    if features_a.ndim != 2 or features_b.ndim != 2 or features_a.shape[0] != features_b.shape[0]:
        raise ValueError(
            f"CKNNA needs two (n, d) feature matrices for the same n samples, got {tuple(features_a.shape)} and "
            f"{tuple(features_b.shape)}."
        )
    n = features_a.shape[0]
    if not 1 <= topk < n:
        raise ValueError(f"topk must be in [1, {n - 1}] for {n} samples, got {topk}.")
    a = F.normalize(torch.as_tensor(features_a).double(), dim=1)
    b = F.normalize(torch.as_tensor(features_b).double(), dim=1)
    kernel_a, kernel_b = a @ a.T, b @ b.T

    def similarity(kernel_k: torch.Tensor, kernel_l: torch.Tensor) -> torch.Tensor:
        mask = _mutual_neighbour_mask(kernel_k, kernel_l, topk)
        return hsic_unbiased(mask * kernel_k, mask * kernel_l)

    cross = similarity(kernel_a, kernel_b)
    normaliser = torch.sqrt(similarity(kernel_a, kernel_a) * similarity(kernel_b, kernel_b))
    if normaliser <= 0:
        raise ValueError("CKNNA is undefined here: a representation's neighbourhood kernel has zero HSIC.")
    return (cross / normaliser).item()


class AlignTokEncoderFeatures:
    """An `AlignedAutoencoderKL`'s foundation encoder as a reference: patch tokens, average-pooled, `(B, hidden_size)`.

    Runs the tokenizer's own `encode` (so the encoder sees exactly the input it sees in the tokenizer: normalised and
    resized to the latent grid) and captures the encoder output with a forward hook.
    """

    def __init__(self, model: AlignedAutoencoderKL, name: str = "aligntok-encoder"):
        self.model = model
        self.name = name
        self._num_prefix_tokens = FOUNDATION_ENCODERS[model.config.encoder_type].num_prefix_tokens(
            model.encoder.config
        )

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        captured = {}

        def keep_output(module, inputs, output):
            captured["tokens"] = output[0] if isinstance(output, tuple) else output.last_hidden_state

        handle = self.model.encoder.register_forward_hook(keep_output)
        try:
            parameter = next(self.model.parameters())
            self.model.encode(images.to(device=parameter.device, dtype=parameter.dtype))
        finally:
            handle.remove()
        return captured["tokens"][:, self._num_prefix_tokens :].float().mean(dim=1)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": "AlignedAutoencoderKL encoder, patch tokens mean-pooled",
            "encoder_type": self.model.config.encoder_type,
        }


class FoundationEncoderFeatures:
    """A pretrained transformers encoder (DINOv2, SigLIP 2, MAE) as a reference: patch tokens mean-pooled.

    Images in `[-1, 1]` are mapped to `[0, 1]`, normalised with the family's statistics and resized (bicubic,
    antialiased) to `input_size` (224: a 16x16 grid for patch-14 DINOv2, as in its pretraining).
    """

    def __init__(self, encoder, encoder_type: str, name: str, input_size: int = 224):
        self.encoder = encoder.eval().requires_grad_(False)
        self.encoder_type = encoder_type
        self.name = name
        self.input_size = input_size
        spec = get_foundation_encoder_spec(encoder_type)
        self._mean = torch.tensor(spec.image_mean).view(1, 3, 1, 1)
        self._std = torch.tensor(spec.image_std).view(1, 3, 1, 1)

    @classmethod
    def from_pretrained(cls, name_or_path: str, encoder_type: str | None = None, input_size: int = 224, **kwargs):
        """Loads the encoder from a hub id or local directory; `encoder_type` is inferred from its `model_type`."""
        if encoder_type is None:
            from transformers import AutoConfig

            config = AutoConfig.from_pretrained(name_or_path, **kwargs)
            model_type = getattr(getattr(config, "vision_config", None), "model_type", config.model_type)
            matches = [name for name, spec in FOUNDATION_ENCODERS.items() if model_type in spec.model_types]
            if not matches:
                raise ValueError(
                    f"{name_or_path!r} holds a {model_type!r} model, not one of the foundation encoder families "
                    f"{sorted(FOUNDATION_ENCODERS)}; pass a DINOv2, SigLIP 2 or MAE checkpoint."
                )
            encoder_type = matches[0]
        encoder, _ = load_pretrained_foundation_encoder(encoder_type, name_or_path, **kwargs)
        return cls(encoder, encoder_type, name=str(name_or_path), input_size=input_size)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        parameter = next(self.encoder.parameters())
        pixels = ((images.float() + 1) / 2 - self._mean.to(images.device)) / self._std.to(images.device)
        if pixels.shape[-2:] != (self.input_size, self.input_size):
            pixels = F.interpolate(
                pixels,
                size=(self.input_size, self.input_size),
                mode="bicubic",
                align_corners=False,
                antialias=pixels.shape[-1] > self.input_size,
            )
        # `encode_patch_tokens` drops the CLS and register tokens.
        tokens = encode_patch_tokens(self.encoder_type, self.encoder, pixels.to(parameter.device, parameter.dtype))
        return tokens.float().mean(dim=1)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": "pretrained foundation encoder, patch tokens mean-pooled",
            "encoder_type": self.encoder_type,
            "input_size": self.input_size,
        }
