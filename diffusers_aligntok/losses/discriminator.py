"""PatchGAN discriminator and hinge GAN losses for tokenizer training.

AlignTok's reconstruction loss (arXiv 2509.25162; docs/design.md, "L_rec") has an adaptive-weight GAN term with a
PatchGAN-style discriminator and the hinge loss, as in VQGAN / taming-transformers and the LDM and VA-VAE autoencoders.
The layout below is pix2pix's `NLayerDiscriminator`, written here from its description.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


_NORMS = ("group", "batch", "none")


def _normalization(norm: str, channels: int) -> nn.Module:
    if norm == "group":
        # 32 groups as in the LDM decoder, fewer when the width does not divide by 32 (tiny test configurations).
        return nn.GroupNorm(math.gcd(32, channels), channels)
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    return nn.Identity()


class PatchGANDiscriminator(nn.Module):
    r"""
    A PatchGAN discriminator: a stack of 4x4 convolutions that gives one real/fake logit per overlapping image patch.

    This is the pix2pix / taming-transformers `NLayerDiscriminator` layout: a stride-2 4x4 convolution with
    LeakyReLU(0.2) and no normalisation, `num_layers - 1` more stride-2 4x4 convolutions with normalisation and
    LeakyReLU(0.2) whose width doubles each time (capped at `8 * base_channels`), one stride-1 4x4 convolution with
    normalisation and LeakyReLU(0.2), and a stride-1 4x4 convolution to one channel. With the defaults a 256x256 image
    gives 30x30 logits whose receptive field is 70x70 pixels. Convolution weights are initialised from N(0, 0.02) and
    normalisation scales from N(1, 0.02) with zero shifts, as in pix2pix.

    The paper says "PatchGAN-style" with a hinge loss; the number of layers and widths are taming's defaults.

    The forward pass always runs in float32 (inputs are cast and autocast is disabled inside): a GAN's logits and
    gradients are easily damaged by reduced precision (docs/design.md: never train the discriminator in pure fp16). Keep
    the discriminator's parameters in float32; mixed-precision training only needs autocast, which this module ignores.

    Parameters:
        in_channels (`int`, defaults to 3): Channels of the images it judges (RGB).
        base_channels (`int`, defaults to 64): Width of the first convolution (pix2pix's `ndf`).
        num_layers (`int`, defaults to 3): Number of stride-2 convolutions (pix2pix's `n_layers`); each halves the
            resolution, so the input side must be at least `2 ** num_layers * 2` pixels.
        norm (`str`, defaults to `"group"`):
            Normalisation after each inner convolution: `"group"` (GroupNorm with up to 32 groups), `"batch"`
            (BatchNorm, taming's choice) or `"none"`. GroupNorm is our default because BatchNorm statistics differ per
            DDP rank and per gradient-accumulation micro-batch, so a BatchNorm discriminator behaves differently with
            the same global batch split differently; GroupNorm normalises each sample on its own. Convolutions that
            feed a normalisation have no bias (the normalisation's shift replaces it).
    """

    def __init__(self, in_channels: int = 3, base_channels: int = 64, num_layers: int = 3, norm: str = "group"):
        super().__init__()
        if norm not in _NORMS:
            raise ValueError(f"Unknown discriminator norm {norm!r}; choose one of {_NORMS}.")
        if num_layers < 1:
            raise ValueError(f"num_layers must be at least 1, got {num_layers}.")
        use_bias = norm == "none"

        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, base_channels, kernel_size=4, stride=2, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        channels = base_channels
        for layer_index in range(1, num_layers):
            out_channels = base_channels * min(2**layer_index, 8)
            layers += [
                nn.Conv2d(channels, out_channels, kernel_size=4, stride=2, padding=1, bias=use_bias),
                _normalization(norm, out_channels),
                nn.LeakyReLU(0.2, inplace=True),
            ]
            channels = out_channels
        out_channels = base_channels * min(2**num_layers, 8)
        layers += [
            nn.Conv2d(channels, out_channels, kernel_size=4, stride=1, padding=1, bias=use_bias),
            _normalization(norm, out_channels),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(out_channels, 1, kernel_size=4, stride=1, padding=1),
        ]
        self.layers = nn.Sequential(*layers)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Conv2d):
            nn.init.normal_(module.weight, 0.0, 0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.GroupNorm, nn.BatchNorm2d)):
            nn.init.normal_(module.weight, 1.0, 0.02)
            nn.init.zeros_(module.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Returns patch logits of shape `(batch, 1, h, w)` in float32 for images of shape `(batch, C, H, W)`."""
        weight_dtype = self.layers[0].weight.dtype
        if weight_dtype != torch.float32:
            raise TypeError(
                f"PatchGANDiscriminator parameters are {weight_dtype}; keep them in float32 (use autocast for mixed "
                "precision, which this module turns off for itself) so its logits are computed in float32."
            )
        with torch.autocast(device_type=images.device.type, enabled=False):
            return self.layers(images.float())


def hinge_discriminator_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """The discriminator's hinge loss `0.5 * (mean(relu(1 - D(real))) + mean(relu(1 + D(fake))))`, in float32.

    The 0.5 factor is taming's `hinge_d_loss`, used by the VQGAN, LDM and VA-VAE autoencoders.
    """
    return 0.5 * (F.relu(1.0 - logits_real.float()).mean() + F.relu(1.0 + logits_fake.float()).mean())


def hinge_generator_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """The generator's hinge loss `-mean(D(fake))`, in float32."""
    return -logits_fake.float().mean()
