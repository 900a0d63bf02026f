"""Generation-quality metrics from feature vectors: FID, Inception Score, precision and recall.

The pure functions here ([`frechet_distance`], [`compute_fid_from_features`], [`inception_score`],
[`precision_recall`], [`FeatureStatistics`]) know nothing about tokenizers or images: tokenizer evaluation (rFID) and
generation evaluation (gFID, IS, precision/recall of DiT samples) both feed them features.

Features come from a [`FIDFeatureExtractor`] in one of two of clean-fid's modes (`inception_mode`), both with the
torchscript Inception-V3 of StyleGAN2-ADA (`inception-2015-12-05.pt`, a port of the TensorFlow graph TTUR and ADM's
evaluator use), whose 2048-d pool features are the FID features. Images are first quantised to 8 bits (as if saved to
PNG), then:

- `"clean"` (default; Parmar et al., "On Aliased Resizing and Surprising Subtleties in GAN Evaluation", CVPR 2022):
  resized to 299x299 per channel with PIL's bicubic filter on float32 values, outside the network. Equals
  `cleanfid.fid.compute_fid(folder_a, folder_b, mode="clean")` on the same images saved as PNGs.
- `"legacy_tensorflow"`: passed at their own size, as floats in `[0, 255]`; the network resizes inside, emulating the
  TensorFlow graph's own resize, as `cleanfid.fid.compute_fid(..., mode="legacy_tensorflow")` does. clean-fid's
  README calls this mode equivalent to the official TensorFlow FID implementation (TTUR); ADM's evaluator feeds uint8
  images at their own size into that same graph (`classify_image_graph_def.pb`, input `ExpandDims:0`, features
  `pool_3`), so this is the mode designed to be comparable with published ImageNet gFIDs. Its agreement with ADM's
  evaluator has not been measured here (no TensorFlow and no Inception weights offline).

Either way no file is written and no more than one batch of images is held in memory.

Offline use: `cleanfid.features.build_feature_extractor(mode="clean")` downloads the Inception weights on first use.
Tests and offline demos use `"random-inception-standin"`, a small seeded random convolutional network behind the
same interface, whose numbers are *not* FID and are labelled as such everywhere they are reported.

`cleanfid` and `scipy` are imported inside functions only.
"""

import hashlib
import json
import math
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...standins import RandomInceptionStandIn
from ...utils import atomic_path


# Samples below which an FID estimate is noticeably biased upward (FID's bias falls roughly as 1/N; Chong & Forsyth,
# "Effectively Unbiased FID and Inception Score", CVPR 2020). The ImageNet protocol uses 50,000.
MIN_SAMPLES_FOR_STABLE_FID = 10_000
PROTOCOL_NUM_SAMPLES = 50_000

FEATURE_EXTRACTORS = ("clean-fid-inception", "random-inception-standin")
# clean-fid's modes that use the TF-ported Inception (its third, "legacy_pytorch", is pytorch-fid's torchvision port and
# matches no published ImageNet table, so it is not offered).
INCEPTION_MODES = ("clean", "legacy_tensorflow")
_INCEPTION_SIZE = (299, 299)


# ---------------------------------------------------------------------------------------------------------------------
# Streaming Gaussian statistics and the Frechet distance
# ---------------------------------------------------------------------------------------------------------------------


class FeatureStatistics:
    """Running mean and covariance of feature vectors, accumulated in float64 one batch at a time.

    Holds the count, the sum and the sum of outer products, so statistics from several batches, processes or resumed
    runs merge exactly (`merge`), and a 50,000-sample FID never holds more than one batch of features. The covariance
    is the unbiased one (`N - 1`), like `numpy.cov` and clean-fid.
    """

    def __init__(self, feature_dim: int):
        if feature_dim <= 0:
            raise ValueError(f"feature_dim must be positive, got {feature_dim}.")
        self.feature_dim = int(feature_dim)
        self.count = 0
        self.sum = np.zeros(self.feature_dim, dtype=np.float64)
        self.outer_sum = np.zeros((self.feature_dim, self.feature_dim), dtype=np.float64)

    def update(self, features: np.ndarray | torch.Tensor) -> "FeatureStatistics":
        features = _as_float64_matrix(features, "features")
        if features.shape[1] != self.feature_dim:
            raise ValueError(f"Expected {self.feature_dim}-d features, got shape {features.shape}.")
        self.count += features.shape[0]
        self.sum += features.sum(axis=0)
        self.outer_sum += features.T @ features
        return self

    def merge(self, other: "FeatureStatistics") -> "FeatureStatistics":
        if other.feature_dim != self.feature_dim:
            raise ValueError(f"Cannot merge {other.feature_dim}-d statistics into {self.feature_dim}-d ones.")
        self.count += other.count
        self.sum += other.sum
        self.outer_sum += other.outer_sum
        return self

    @property
    def mean(self) -> np.ndarray:
        if self.count == 0:
            raise ValueError("No features were accumulated; the mean is undefined.")
        return self.sum / self.count

    @property
    def covariance(self) -> np.ndarray:
        if self.count < 2:
            raise ValueError(f"A covariance needs at least 2 samples, got {self.count}.")
        mean = self.mean
        return (self.outer_sum - self.count * np.outer(mean, mean)) / (self.count - 1)

    def state_dict(self) -> dict[str, Any]:
        return {"feature_dim": self.feature_dim, "count": self.count, "sum": self.sum, "outer_sum": self.outer_sum}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> "FeatureStatistics":
        statistics = cls(int(state["feature_dim"]))
        statistics.count = int(state["count"])
        statistics.sum = np.asarray(state["sum"], dtype=np.float64).copy()
        statistics.outer_sum = np.asarray(state["outer_sum"], dtype=np.float64).copy()
        return statistics


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6
) -> float:
    r"""The Frechet (2-Wasserstein) distance between `N(mu1, sigma1)` and `N(mu2, sigma2)`, the quantity FID reports.

        d^2 = ||mu1 - mu2||^2 + Tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^{1/2})

    Computed in float64 with `scipy.linalg.sqrtm`, as clean-fid and TTUR do (clean-fid 0.1.35's own
    `frechet_distance` passes `disp=False`, whose return value changed in SciPy 1.16): if the product is numerically singular
    (fewer samples than dimensions), `eps` is added to both diagonals; a tiny imaginary part from round-off is dropped
    and a large one raises. For diagonal covariances this reduces to
    `sum((mu1 - mu2)^2 + s1 + s2 - 2 sqrt(s1 s2))` over the diagonal entries.

    Returns:
        The squared distance `d^2` as a Python float (FID is this number, not its square root).
    """
    from scipy import linalg

    mu1, mu2 = np.atleast_1d(np.asarray(mu1, dtype=np.float64)), np.atleast_1d(np.asarray(mu2, dtype=np.float64))
    sigma1 = np.atleast_2d(np.asarray(sigma1, dtype=np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, dtype=np.float64))
    if mu1.shape != mu2.shape:
        raise ValueError(f"Mean vectors have different shapes: {mu1.shape} and {mu2.shape}.")
    if sigma1.shape != sigma2.shape or sigma1.shape != (mu1.shape[0], mu1.shape[0]):
        raise ValueError(
            f"Covariances must both be {mu1.shape[0]}x{mu1.shape[0]}, got {sigma1.shape} and {sigma2.shape}."
        )
    difference = mu1 - mu2
    with warnings.catch_warnings():
        # A singular product (fewer samples than dimensions) is handled below, as in clean-fid.
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covariance_mean = linalg.sqrtm(sigma1 @ sigma2)
        if not np.isfinite(covariance_mean).all():
            offset = np.eye(sigma1.shape[0]) * eps
            covariance_mean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covariance_mean):
        if not np.allclose(np.diagonal(covariance_mean).imag, 0, atol=1e-3):
            raise ValueError(
                f"The matrix square root has a large imaginary component ({np.max(np.abs(covariance_mean.imag)):.3g}); "
                "the covariances are far from positive semi-definite. Use more samples than feature dimensions."
            )
        covariance_mean = covariance_mean.real
    return float(difference @ difference + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covariance_mean))


def fid_from_statistics(real: FeatureStatistics, fake: FeatureStatistics) -> float:
    """FID between two accumulated [`FeatureStatistics`]."""
    return frechet_distance(real.mean, real.covariance, fake.mean, fake.covariance)


def compute_fid_from_features(
    real_features: np.ndarray | torch.Tensor, fake_features: np.ndarray | torch.Tensor
) -> float:
    """FID between two sets of feature vectors `(N, D)` and `(M, D)` (sample means, unbiased covariances)."""
    real_features = _as_float64_matrix(real_features, "real_features")
    fake_features = _as_float64_matrix(fake_features, "fake_features")
    real = FeatureStatistics(real_features.shape[1]).update(real_features)
    fake = FeatureStatistics(fake_features.shape[1]).update(fake_features)
    return fid_from_statistics(real, fake)


def fid_sample_count_warning(
    num_samples: int, minimum: int = MIN_SAMPLES_FOR_STABLE_FID, protocol_num_samples: int = PROTOCOL_NUM_SAMPLES
) -> str | None:
    """The warning to give (and record) when an FID rests on too few samples, else None.

    `protocol_num_samples` is the count of the protocol being reproduced (50,000 for ImageNet, 6,000 for COCO-6K).
    """
    if num_samples >= minimum:
        return None
    stable = f" (at least {minimum:,} for a stable estimate)" if minimum != protocol_num_samples else ""
    return (
        f"FID with {num_samples} samples is biased upward; the protocol uses {protocol_num_samples:,}{stable}. "
        "Compare FIDs only at equal sample counts."
    )


# ---------------------------------------------------------------------------------------------------------------------
# Inception Score and precision / recall
# ---------------------------------------------------------------------------------------------------------------------


def inception_score(logits: np.ndarray | torch.Tensor, num_splits: int = 10) -> tuple[float, float]:
    r"""Inception Score (Salimans et al., 2016) from classifier logits `(N, num_classes)`.

        IS = exp(E_x KL(p(y|x) || p(y)))

    with `p(y|x) = softmax(logits)` and `p(y)` the mean prediction, computed on `num_splits` contiguous splits of the
    samples (10 in the original protocol). Returns the mean and standard deviation over the splits. Uniform
    predictions give 1; confident predictions spread evenly over C classes give C.

    For clean-fid's Inception the logits are `features @ W^T + b` of its 1008-way output layer; pass them here.
    """
    logits = torch.as_tensor(np.asarray(logits) if not torch.is_tensor(logits) else logits).double()
    if logits.ndim != 2:
        raise ValueError(f"Expected logits of shape (num_samples, num_classes), got {tuple(logits.shape)}.")
    if not 1 <= num_splits <= logits.shape[0]:
        raise ValueError(
            f"num_splits must be between 1 and the number of samples ({logits.shape[0]}), got {num_splits}."
        )
    log_probabilities = torch.log_softmax(logits, dim=1)
    scores = []
    for chunk in torch.tensor_split(log_probabilities, num_splits):
        log_marginal = torch.logsumexp(chunk, dim=0) - math.log(chunk.shape[0])
        kl = (chunk.exp() * (chunk - log_marginal)).sum(dim=1).mean()
        scores.append(kl.exp().item())
    return float(np.mean(scores)), float(np.std(scores))


def precision_recall(
    real_features: np.ndarray | torch.Tensor,
    fake_features: np.ndarray | torch.Tensor,
    k: int = 3,
    batch_size: int = 1024,
    device: str | torch.device = "cpu",
) -> dict[str, float]:
    """Improved precision and recall (Kynkaanniemi et al., NeurIPS 2019) of `fake_features` against `real_features`.

    Each set's manifold is the union of balls around its samples, each ball's radius the distance to that sample's
    k-th nearest neighbour in the same set (k = 3 in the paper). Precision is the fraction of fake samples inside the
    real manifold; recall the fraction of real samples inside the fake manifold. Identical sets give 1 and 1.
    Distances are Euclidean in float64, computed in batches of `batch_size` rows.

    Returns:
        `{"precision": float, "recall": float, "k": k}`.
    """
    real = torch.as_tensor(_as_float64_matrix(real_features, "real_features"), device=device)
    fake = torch.as_tensor(_as_float64_matrix(fake_features, "fake_features"), device=device)
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"Feature dimensions differ: real {tuple(real.shape)}, fake {tuple(fake.shape)}.")
    if k < 1 or k >= min(real.shape[0], fake.shape[0]):
        raise ValueError(f"k must be in [1, {min(real.shape[0], fake.shape[0]) - 1}] for these set sizes, got {k}.")
    real_radii = _kth_neighbour_radii(real, k, batch_size)
    fake_radii = _kth_neighbour_radii(fake, k, batch_size)
    precision = _fraction_inside_manifold(fake, real, real_radii, batch_size)
    recall = _fraction_inside_manifold(real, fake, fake_radii, batch_size)
    return {"precision": precision, "recall": recall, "k": k}


def _kth_neighbour_radii(features: torch.Tensor, k: int, batch_size: int) -> torch.Tensor:
    # Each row's distance to itself is 0 and counts as the first neighbour, hence k + 1.
    return torch.cat(
        [torch.cdist(rows, features).kthvalue(k + 1, dim=1).values for rows in features.split(batch_size)]
    )


def _fraction_inside_manifold(
    queries: torch.Tensor, references: torch.Tensor, radii: torch.Tensor, batch_size: int
) -> float:
    inside = [(torch.cdist(rows, references) <= radii[None, :]).any(dim=1) for rows in queries.split(batch_size)]
    return torch.cat(inside).double().mean().item()


# ---------------------------------------------------------------------------------------------------------------------
# Feature extraction (clean-fid protocol) with an injectable network
# ---------------------------------------------------------------------------------------------------------------------


def check_inception_mode(mode: str) -> str:
    """`mode` if it is one of [`INCEPTION_MODES`], else a ValueError naming the choices and what each is for."""
    if mode not in INCEPTION_MODES:
        raise ValueError(
            f"Unknown inception_mode {mode!r}; choose 'clean' (clean-fid's antialiased resize, the default) or "
            "'legacy_tensorflow' (clean-fid's emulation of the TensorFlow Inception's own resize, the mode designed "
            "to be comparable with ADM's evaluator and the published ImageNet gFIDs)."
        )
    return mode


def quantize_to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Images in `[-1, 1]` -> uint8 `[0, 255]`, the values a PNG of them would hold (diffusers' `postprocess` rule)."""
    return ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


class FIDFeatureExtractor:
    """Images in `[-1, 1]` -> FID features `(B, D)` float64, following one of clean-fid's modes (see the module doc).

    Args:
        network (`Callable`): Maps float images in `[0, 255]` to `(B, D)` features: `(B, 3, 299, 299)` ones in mode
            `"clean"`, images at their own size in mode `"legacy_tensorflow"` (the network resizes). By default
            clean-fid's torchscript Inception (see [`build_fid_feature_extractor`]). Tests pass a small local network.
        name (`str`): Recorded with every result and in the reference-statistics cache key.
        is_real_metric (`bool`): False for stand-ins; their numbers are reported as "not FID".
        device: Where the network runs.
        resize_threads (`int`): Threads for the PIL resize (PIL releases the GIL while resampling).
        inception_mode (`str`): `"clean"` (default) or `"legacy_tensorflow"`: what happens between the 8-bit images
            and the network, as in `cleanfid.fid.compute_fid(mode=...)`.
    """

    def __init__(
        self,
        network: Callable[[torch.Tensor], torch.Tensor],
        name: str,
        is_real_metric: bool,
        device: str | torch.device = "cpu",
        resize_threads: int | None = None,
        inception_mode: str = "clean",
    ):
        self.network = network
        self.name = name
        self.is_real_metric = is_real_metric
        self.device = torch.device(device)
        self.resize_threads = resize_threads if resize_threads is not None else min(8, os.cpu_count() or 1)
        self.inception_mode = check_inception_mode(inception_mode)
        self._resizer = None

    def resize_for_network(self, images: torch.Tensor) -> torch.Tensor:
        """`[-1, 1]` images -> the network's float32 input in `[0, 255]`: 8-bit quantisation, then in mode `"clean"`
        clean-fid's resize to `(B, 3, 299, 299)`; in mode `"legacy_tensorflow"` nothing more (clean-fid's resizer is
        the identity there: the network resizes)."""
        if self.inception_mode == "legacy_tensorflow":
            return quantize_to_uint8(images).float().cpu().contiguous()
        if self._resizer is None:
            from cleanfid.resize import build_resizer  # lazy: `import diffusers_aligntok` must not need clean-fid

            self._resizer = build_resizer("clean")
        pixels = quantize_to_uint8(images).permute(0, 2, 3, 1).cpu().numpy()
        if self.resize_threads > 1 and len(pixels) > 1:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=self.resize_threads) as pool:
                resized = list(pool.map(self._resizer, pixels))
        else:
            resized = [self._resizer(image) for image in pixels]
        return torch.from_numpy(np.stack(resized)).permute(0, 3, 1, 2).contiguous()

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> np.ndarray:
        batch = self.resize_for_network(images).to(self.device)
        features = self.network(batch)
        return features.detach().double().cpu().numpy().reshape(len(batch), -1)

    def describe(self) -> dict[str, Any]:
        protocols = {
            "clean": "clean-fid 'clean': 8-bit quantisation, PIL bicubic float resize to 299x299 per channel",
            "legacy_tensorflow": "clean-fid 'legacy_tensorflow': 8-bit quantisation, images at their own size into the "
            "network, which resizes inside (emulating the TensorFlow Inception graph's resize)",
        }
        return {
            "name": self.name,
            "is_real_metric": self.is_real_metric,
            "inception_mode": self.inception_mode,
            "protocol": protocols[self.inception_mode],
        }


def feature_dimension(feature_extractor) -> int:
    """The length of the feature vectors `feature_extractor` gives (probed with one small black image)."""
    return int(feature_extractor(torch.zeros(1, 3, 32, 32)).shape[1])


def build_fid_feature_extractor(
    name: str = "clean-fid-inception",
    device: str | torch.device = "cpu",
    network: Callable | None = None,
    inception_mode: str = "clean",
) -> FIDFeatureExtractor:
    """The FID feature extractor called `name`.

    Args:
        name (`str`): `"clean-fid-inception"` (the real metric; clean-fid downloads its Inception weights to `/tmp` on
            first use) or `"random-inception-standin"` (offline stand-in, see [`RandomInceptionStandIn`]). With
            `network` given, any name (it is only recorded).
        device: Where the network runs.
        network (`Callable`, *optional*): A custom network with clean-fid's interface (float images in `[0, 255]` ->
            `(B, D)`; 299x299 in mode `"clean"`, any size in mode `"legacy_tensorflow"`), for example a locally loaded
            Inception. Recorded under `name` and treated as a real metric.
        inception_mode (`str`): `"clean"` (default) or `"legacy_tensorflow"`, see the module docstring. The real
            network is clean-fid's `build_feature_extractor(mode=inception_mode)`; the stand-in resizes inside in
            `"legacy_tensorflow"`, as the real network does there.
    """
    device = torch.device(device)
    check_inception_mode(inception_mode)
    if network is not None:
        return FIDFeatureExtractor(
            network, name=name, is_real_metric=True, device=device, inception_mode=inception_mode
        )
    if name == "clean-fid-inception":
        return FIDFeatureExtractor(
            _clean_fid_inception(device, inception_mode),
            name=name,
            is_real_metric=True,
            device=device,
            inception_mode=inception_mode,
        )
    if name == "random-inception-standin":
        network = RandomInceptionStandIn(resize_inside=inception_mode == "legacy_tensorflow").to(device)
        return FIDFeatureExtractor(
            network, name=name, is_real_metric=False, device=device, inception_mode=inception_mode
        )
    raise ValueError(f"Unknown FID feature extractor {name!r}; choose one of {FEATURE_EXTRACTORS} or pass network=.")


def _clean_fid_inception(
    device: torch.device, inception_mode: str = "clean"
) -> Callable[[torch.Tensor], torch.Tensor]:
    """clean-fid's Inception for `inception_mode` (downloads `inception-2015-12-05.pt` to /tmp on first use)."""
    from cleanfid.features import build_feature_extractor

    try:
        return build_feature_extractor(mode=inception_mode, device=device, use_dataparallel=False)
    except OSError as error:  # urllib errors are OSErrors
        raise RuntimeError(
            "Could not load clean-fid's Inception network (it downloads inception-2015-12-05.pt on first use; no "
            "network?). Copy that file to /tmp on this machine, or use feature_extractor='random-inception-standin' "
            "for offline smoke runs (its numbers are not FID)."
        ) from error


# ---------------------------------------------------------------------------------------------------------------------
# Reference statistics cache
# ---------------------------------------------------------------------------------------------------------------------


def default_reference_statistics_dir() -> Path:
    """`$DIFFUSERS_ALIGNTOK_CACHE/fid_reference_statistics`, by default under `~/.cache/diffusers_aligntok`."""
    root = os.environ.get(
        "DIFFUSERS_ALIGNTOK_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "diffusers_aligntok")
    )
    return Path(root) / "fid_reference_statistics"


def reference_statistics_key(
    source: str,
    split: str,
    resolution: tuple[int, int] | list[int],
    num_samples: int,
    feature_extractor: str,
    *,
    data_description: str | None = None,
    seed: int | None = None,
    files_sha256: str | None = None,
    inception_mode: str = "clean",
) -> dict[str, Any]:
    """The one cache key of reference statistics: what decides the statistics of centre crops of a reference set.

    A data source (hub id, folder, built-in data) is keyed by its `data_description` and, for generated `builtin:`
    data only, the `seed` that generated it; a list of image files (`split="files"`) by `files_sha256`, the hash of
    their relative paths and sizes. The tokenizer, class-conditional and text-to-image evaluations all build their
    keys here, so the same images measured by any of them share one cache entry. `inception_mode` enters the key only
    away from "clean", so entries cached before the mode existed keep their key.
    """
    key: dict[str, Any] = {
        "source": source,
        "split": split,
        "resolution": [int(side) for side in resolution],
        "crop": "center",
        "num_samples": int(num_samples),
    }
    if files_sha256 is not None:
        key["files_sha256"] = files_sha256
    else:
        key["data_description"] = data_description
        key["seed"] = seed if source.startswith("builtin:") else None
    key["feature_extractor"] = feature_extractor
    if inception_mode != "clean":
        key["inception_mode"] = inception_mode
    return key


def reference_statistics_path(cache_dir: str | os.PathLike, key: dict[str, Any]) -> Path:
    """Where the reference statistics for `key` (data source, split, resolution, crop, count, extractor) live."""
    canonical = json.dumps(key, sort_keys=True, default=str)
    digest = hashlib.sha256(canonical.encode()).hexdigest()[:16]
    slug = "".join(character if character.isalnum() else "-" for character in str(key.get("source", "data")))[-40:]
    resolution = key.get("resolution")
    resolution = "x".join(str(side) for side in resolution) if isinstance(resolution, (list, tuple)) else resolution
    return Path(cache_dir) / f"{slug.strip('-')}_{resolution}_{key.get('num_samples')}_{digest}.npz"


def save_reference_statistics(path: str | os.PathLike, statistics: FeatureStatistics, key: dict[str, Any]) -> Path:
    """Writes mean, covariance, count and the key (atomically), in clean-fid's `mu`/`sigma` npz layout."""
    path = Path(path)
    with atomic_path(path) as temporary, open(temporary, "wb") as handle:  # a handle: np.savez would append .npz
        np.savez(
            handle,
            mu=statistics.mean,
            sigma=statistics.covariance,
            count=statistics.count,
            sum=statistics.sum,
            outer_sum=statistics.outer_sum,
            key=json.dumps(key, sort_keys=True, default=str),
        )
    return path


def load_reference_statistics(path: str | os.PathLike, key: dict[str, Any]) -> FeatureStatistics | None:
    """The cached statistics for `key`, or None if there are none; raises if the file holds another key."""
    path = Path(path)
    if not path.is_file():
        return None
    with np.load(path) as stored:
        stored_key = json.loads(str(stored["key"]))
        expected = json.loads(json.dumps(key, sort_keys=True, default=str))
        if stored_key != expected:
            raise ValueError(
                f"{path} holds reference statistics for {stored_key}, not {expected}; delete it or use another cache "
                "directory."
            )
        statistics = FeatureStatistics(int(stored["sum"].shape[0]))
        statistics.count = int(stored["count"])
        statistics.sum = stored["sum"].astype(np.float64)
        statistics.outer_sum = stored["outer_sum"].astype(np.float64)
    return statistics


def _as_float64_matrix(values: np.ndarray | torch.Tensor, name: str) -> np.ndarray:
    if torch.is_tensor(values):
        values = values.detach().cpu().double().numpy()
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"{name} must be a (num_samples, feature_dim) matrix, got shape {values.shape}.")
    if not np.isfinite(values).all():
        raise ValueError(f"{name} contains NaN or inf values; check the images or the model that produced them.")
    return values
