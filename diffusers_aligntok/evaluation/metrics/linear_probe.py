"""Linear-probe accuracy of a tokenizer's latent: how linearly decodable the class is from it.

AlignTok reports 35.1% on ImageNet for its latent (VA-VAE 23.0%, a plain VAE 6.0%; DESIGN.md). The paper does not
spell out its probe, so this module fixes one and records it with every result (`LinearProbeConfig.describe()`):

- Features: the raw latent (no scaling/shift), **average-pooled over space** -> `latent_channels` values per image
  (`pooling="mean"`, the default). Pooling makes the probe independent of resolution and spatial layout and asks
  whether the *channels* carry class information, which is what a diffusion model's per-token input sees; it is
  cheap (32 values per image for AlignTok, so 50,000 images fit in memory) and deterministic. `pooling="flatten"`
  uses the whole latent instead (only for small latents, at most 4096 values per image: a flattened 16x16x32 latent
  would need a 8192-way input and its probe mostly measures spatial memorisation).
- Standardisation: each feature is standardised with the mean and standard deviation of the *training* split.
- Classifier: multinomial logistic regression, scikit-learn `LogisticRegression(solver="lbfgs", C=1.0,
  max_iter=1000)` on the full training split; L-BFGS on a convex objective is deterministic, so the result depends
  only on the data and the split.
- Split: the evaluated images are split 80/20 into train/validation, stratified by class, with `seed=0`
  (`sklearn.model_selection.train_test_split`). Images without a label (-1) are left out.
- Reported: top-1 accuracy on the validation split (and on the training split, and the majority-class rate of the
  validation split as the chance level).
"""

import warnings
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch


LINEAR_PROBE_POOLINGS = ("mean", "flatten")
MAX_FLATTENED_FEATURES = 4096


@dataclass
class LinearProbeConfig:
    """The probe protocol (see the module docstring); every field is recorded in the results."""

    pooling: str = "mean"
    validation_fraction: float = 0.2
    seed: int = 0
    inverse_regularization: float = 1.0
    max_iterations: int = 1000

    def __post_init__(self):
        if self.pooling not in LINEAR_PROBE_POOLINGS:
            raise ValueError(f"pooling must be one of {LINEAR_PROBE_POOLINGS}, got {self.pooling!r}.")
        if not 0 < self.validation_fraction < 1:
            raise ValueError(f"validation_fraction must be in (0, 1), got {self.validation_fraction}.")

    def describe(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "features": f"raw latent, {'average-pooled over space' if self.pooling == 'mean' else 'flattened'}",
            "standardisation": "per feature, with training-split mean and std",
            "classifier": "sklearn LogisticRegression(solver='lbfgs', multinomial), full batch",
            "split": f"{1 - self.validation_fraction:.0%}/{self.validation_fraction:.0%} stratified train/validation",
            "metric": "top-1 accuracy on the validation split",
        }


def latent_probe_features(latents: torch.Tensor, pooling: str = "mean") -> torch.Tensor:
    """Latents `(B, C, h, w)` -> probe features `(B, C)` (`"mean"`) or `(B, C*h*w)` (`"flatten"`), float32 on CPU."""
    if latents.ndim != 4:
        raise ValueError(f"Expected latents of shape (batch, channels, height, width), got {tuple(latents.shape)}.")
    if pooling == "mean":
        return latents.float().mean(dim=(2, 3)).cpu()
    if pooling == "flatten":
        size = latents[0].numel()
        if size > MAX_FLATTENED_FEATURES:
            raise ValueError(
                f"pooling='flatten' would give {size} features per image (latent {tuple(latents.shape[1:])}); it is "
                f"meant for latents of at most {MAX_FLATTENED_FEATURES} values. Use pooling='mean'."
            )
        return latents.float().flatten(1).cpu()
    raise ValueError(f"pooling must be one of {LINEAR_PROBE_POOLINGS}, got {pooling!r}.")


def linear_probe(
    features: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor, config: LinearProbeConfig | None = None
) -> dict[str, Any]:
    """Trains and evaluates the linear probe of the module docstring on `features (N, F)` and integer `labels (N,)`.

    Returns:
        `{"top1": validation accuracy, "train_top1", "chance_top1", "num_train", "num_validation", "num_classes",
        "converged", "notes"}`.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    config = config or LinearProbeConfig()
    features = features.detach().cpu().numpy() if torch.is_tensor(features) else np.asarray(features)
    labels = labels.detach().cpu().numpy() if torch.is_tensor(labels) else np.asarray(labels)
    features = features.astype(np.float64)
    labels = labels.astype(np.int64)
    if features.ndim != 2 or labels.shape != (features.shape[0],):
        raise ValueError(f"Expected features (N, F) and labels (N,), got {features.shape} and {labels.shape}.")
    notes = []
    labelled = labels >= 0
    if not labelled.all():
        notes.append(f"{int((~labelled).sum())} images without a label were left out.")
        features, labels = features[labelled], labels[labelled]
    classes, counts = np.unique(labels, return_counts=True)
    if len(classes) < 2:
        raise ValueError(f"A linear probe needs at least 2 classes; the labelled images have {len(classes)}.")
    num_validation = max(len(classes), int(round(config.validation_fraction * len(labels))))
    if len(labels) - num_validation < len(classes):
        raise ValueError(
            f"{len(labels)} labelled images are too few for a linear probe over {len(classes)} classes with a "
            f"{config.validation_fraction:.0%} validation split; evaluate more images."
        )
    stratify = labels if counts.min() >= 2 else None
    if stratify is None:
        notes.append("Some classes have a single image, so the split is not stratified.")
    train_x, validation_x, train_y, validation_y = train_test_split(
        features, labels, test_size=num_validation, random_state=config.seed, stratify=stratify
    )
    mean = train_x.mean(axis=0)
    std = train_x.std(axis=0)
    std[std < 1e-12] = 1.0  # constant features carry no information; keep them at 0
    train_x = (train_x - mean) / std
    validation_x = (validation_x - mean) / std

    classifier = LogisticRegression(C=config.inverse_regularization, max_iter=config.max_iterations, solver="lbfgs")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        classifier.fit(train_x, train_y)
    converged = not any(issubclass(warning.category, ConvergenceWarning) for warning in caught)
    if not converged:
        notes.append(f"L-BFGS stopped at max_iterations={config.max_iterations} before converging.")
    _, validation_counts = np.unique(validation_y, return_counts=True)
    return {
        "top1": float((classifier.predict(validation_x) == validation_y).mean()),
        "train_top1": float((classifier.predict(train_x) == train_y).mean()),
        "chance_top1": float(validation_counts.max() / len(validation_y)),
        "num_train": int(len(train_y)),
        "num_validation": int(len(validation_y)),
        "num_classes": int(len(classes)),
        "num_features": int(features.shape[1]),
        "converged": converged,
        "notes": notes,
    }
