"""Tokenizer evaluation: reconstruction quality (rFID, PSNR, SSIM, LPIPS), latent semantics (linear probe, CKNNA),
latent statistics, and the feature-based generation metrics (FID, IS, precision/recall) shared with DiT evaluation.

Importing this package needs neither lpips nor clean-fid nor datasets nor scikit-learn: each is imported inside the
function that uses it. The command-line entry points are `training/evaluate_tokenizer.py` and
`training/compute_latent_statistics.py`.
"""

from .latent_statistics import (
    LATENT_NORMALIZATIONS,
    LatentStatistics,
    compute_latent_statistics,
    latent_normalization_config,
    write_latent_statistics,
)
from .metrics.alignment import AlignTokEncoderFeatures, FoundationEncoderFeatures, cknna, hsic_unbiased
from .metrics.fid import (
    FEATURE_EXTRACTORS,
    MIN_SAMPLES_FOR_STABLE_FID,
    FeatureStatistics,
    FIDFeatureExtractor,
    RandomInceptionStandIn,
    build_fid_feature_extractor,
    compute_fid_from_features,
    fid_from_statistics,
    fid_sample_count_warning,
    frechet_distance,
    inception_score,
    precision_recall,
)
from .metrics.linear_probe import LinearProbeConfig, latent_probe_features, linear_probe
from .metrics.reconstruction import (
    PSNR_CAP_DB,
    ReconstructionMetricSums,
    prepare_images,
    psnr,
    quantize_reconstructions,
    ssim,
)
from .report import markdown_table, save_side_by_side
from .tokenizer import TokenizerEvaluationConfig, evaluate_tokenizers
from .tokenizer_adapters import (
    FLUX_VAE_CONFIG,
    FLUX_VAE_RANDOM,
    TokenizerAdapter,
    adapter_for_model,
    build_random_flux_vae,
    load_tokenizer,
)


__all__ = [
    "AlignTokEncoderFeatures",
    "FEATURE_EXTRACTORS",
    "FIDFeatureExtractor",
    "FLUX_VAE_CONFIG",
    "FLUX_VAE_RANDOM",
    "FeatureStatistics",
    "FoundationEncoderFeatures",
    "LATENT_NORMALIZATIONS",
    "LatentStatistics",
    "LinearProbeConfig",
    "MIN_SAMPLES_FOR_STABLE_FID",
    "PSNR_CAP_DB",
    "RandomInceptionStandIn",
    "ReconstructionMetricSums",
    "TokenizerAdapter",
    "TokenizerEvaluationConfig",
    "adapter_for_model",
    "build_fid_feature_extractor",
    "build_random_flux_vae",
    "cknna",
    "compute_fid_from_features",
    "compute_latent_statistics",
    "evaluate_tokenizers",
    "fid_from_statistics",
    "fid_sample_count_warning",
    "frechet_distance",
    "hsic_unbiased",
    "inception_score",
    "latent_normalization_config",
    "latent_probe_features",
    "linear_probe",
    "load_tokenizer",
    "markdown_table",
    "precision_recall",
    "prepare_images",
    "psnr",
    "quantize_reconstructions",
    "save_side_by_side",
    "ssim",
    "write_latent_statistics",
]
