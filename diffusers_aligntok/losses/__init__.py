"""Training losses for AlignTok tokenizers: L_rec (L1 + LPIPS + adaptive hinge GAN) and the stage-2 L_sp.

Importing this package does not import lpips; [`build_perceptual_network`] does, when called.
"""

from .discriminator import PatchGANDiscriminator, hinge_discriminator_loss, hinge_generator_loss
from .reconstruction import PERCEPTUAL_NETWORKS, LPIPSDistance, ReconstructionLoss, build_perceptual_network
from .semantic_preservation import SEMANTIC_PRESERVATION_KINDS, semantic_preservation_loss


__all__ = [
    "LPIPSDistance",
    "PERCEPTUAL_NETWORKS",
    "PatchGANDiscriminator",
    "ReconstructionLoss",
    "SEMANTIC_PRESERVATION_KINDS",
    "build_perceptual_network",
    "hinge_discriminator_loss",
    "hinge_generator_loss",
    "semantic_preservation_loss",
]
