"""FID, Inception Score and precision/recall against values computed by hand."""

import math

import numpy as np
import pytest
import torch

from diffusers_aligntok.evaluation import (
    FeatureStatistics,
    build_fid_feature_extractor,
    compute_fid_from_features,
    fid_sample_count_warning,
    frechet_distance,
    inception_score,
    precision_recall,
)
from diffusers_aligntok.evaluation.metrics.fid import (
    load_reference_statistics,
    reference_statistics_key,
    reference_statistics_path,
    save_reference_statistics,
)


def test_frechet_distance_matches_closed_form_for_diagonal_gaussians():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    variances1, variances2 = rng.uniform(0.1, 3.0, size=6), rng.uniform(0.1, 3.0, size=6)
    expected = np.sum((mu1 - mu2) ** 2 + variances1 + variances2 - 2 * np.sqrt(variances1 * variances2))
    assert frechet_distance(mu1, np.diag(variances1), mu2, np.diag(variances2)) == pytest.approx(expected, rel=1e-9)
    # 1-D by hand: N(0, 1) vs N(1, 4): 1 + 1 + 4 - 2 * 2 = 2.
    assert frechet_distance(np.zeros(1), np.eye(1), np.ones(1), 4 * np.eye(1)) == pytest.approx(2.0)


def test_frechet_distance_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="different shapes"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


def test_feature_statistics_match_numpy_and_merge_exactly():
    rng = np.random.default_rng(1)
    features = rng.normal(loc=2.0, size=(300, 5)) @ rng.normal(size=(5, 5))
    streamed = FeatureStatistics(5)
    for chunk in np.array_split(features, 7):
        streamed.update(chunk)
    np.testing.assert_allclose(streamed.mean, features.mean(0), rtol=1e-12)
    np.testing.assert_allclose(streamed.covariance, np.cov(features, rowvar=False), rtol=1e-10, atol=1e-12)
    halves = FeatureStatistics(5).update(features[:120]).merge(FeatureStatistics(5).update(features[120:]))
    np.testing.assert_allclose(halves.covariance, streamed.covariance, rtol=1e-12)
    restored = FeatureStatistics.from_state_dict(streamed.state_dict())
    assert restored.count == 300


def test_fid_of_identical_features_is_zero_and_of_shifted_features_is_the_shift():
    rng = np.random.default_rng(2)
    features = rng.normal(size=(500, 8))
    assert abs(compute_fid_from_features(features, features)) < 1e-8
    # Shifting every sample by d moves only the mean: FID = |d|^2.
    shift = np.full(8, 0.5)
    assert compute_fid_from_features(features, features + shift) == pytest.approx(8 * 0.25, rel=1e-6)


def test_inception_score_by_hand():
    # Uniform predictions: p(y|x) = p(y), every KL is 0, IS = 1.
    assert inception_score(np.zeros((20, 7)), num_splits=1)[0] == pytest.approx(1.0)
    # Confident predictions spread evenly over 5 classes: IS = 5.
    logits = np.full((50, 5), -1e4)
    logits[np.arange(50), np.arange(50) % 5] = 0.0
    assert inception_score(logits, num_splits=1)[0] == pytest.approx(5.0, rel=1e-9)
    # Two samples with p1 = (0.9, 0.1), p2 = (0.2, 0.8): p(y) = (0.55, 0.45).
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8]])
    marginal = probabilities.mean(0)
    kl = (probabilities * np.log(probabilities / marginal)).sum(1)
    assert inception_score(np.log(probabilities), num_splits=1)[0] == pytest.approx(math.exp(kl.mean()), rel=1e-9)
    mean, std = inception_score(logits, num_splits=5)
    assert mean == pytest.approx(5.0) and std == pytest.approx(0.0, abs=1e-9)


def test_precision_recall_identical_sets_are_one_and_hand_case():
    features = np.random.default_rng(3).normal(size=(60, 4))
    result = precision_recall(features, features, k=3)
    assert result["precision"] == 1.0 and result["recall"] == 1.0
    # Real: 0, 1, ..., 9 on a line; with k = 1 every real ball has radius 1. Fake: 0.5 (inside) and 100 (outside):
    # precision 1/2. The two fakes are 99.5 apart, so their balls (radius 99.5) cover every real point: recall 1.
    real = np.arange(10, dtype=np.float64)[:, None]
    fake = np.array([[0.5], [100.0]])
    result = precision_recall(real, fake, k=1)
    assert result["precision"] == pytest.approx(0.5) and result["recall"] == pytest.approx(1.0)
    far = precision_recall(features, features + 1e3, k=3)
    assert far["precision"] == 0.0 and far["recall"] == 0.0


def test_fid_sample_count_warning_names_the_number():
    message = fid_sample_count_warning(64)
    assert "FID with 64 samples is biased upward; the protocol uses 50,000" in message
    assert fid_sample_count_warning(50_000) is None


def test_identical_images_give_zero_fid_through_the_clean_fid_path(standin_feature_extractor):
    images = torch.rand(40, 3, 32, 32) * 2 - 1
    features = standin_feature_extractor(images)
    assert features.shape == (40, 32)
    assert abs(compute_fid_from_features(features, features)) < 1e-6
    # Quantisation happens inside: images that round to the same 8-bit values have identical features.
    nudged = (images + 1e-4).clamp(-1, 1)
    assert abs(compute_fid_from_features(features, standin_feature_extractor(nudged))) < 1e-3


def test_injected_network_sees_clean_fid_inputs():
    seen = {}

    def network(batch):
        seen["shape"], seen["range"] = tuple(batch.shape), (batch.min().item(), batch.max().item())
        return batch.mean(dim=(2, 3))

    extractor = build_fid_feature_extractor("my-local-inception", network=network)
    images = torch.linspace(-1, 1, 3 * 16 * 16).view(1, 3, 16, 16).repeat(2, 1, 1, 1)
    features = extractor(images)
    assert seen["shape"] == (2, 3, 299, 299)
    assert 0.0 <= seen["range"][0] and seen["range"][1] <= 255.0 and seen["range"][1] > 200
    assert features.shape == (2, 3) and extractor.describe()["name"] == "my-local-inception"


@pytest.mark.parametrize("mode", ["clean", "legacy_tensorflow"])
def test_both_inception_modes_feed_the_network_what_clean_fid_feeds_it(mode, tmp_path):
    """Our preprocessing in each mode equals `cleanfid.fid.get_folder_features(mode=...)` on the same images as PNGs,
    with the same network (a stand-in that, like the torchscript Inception, resizes inside when it must)."""
    from cleanfid import fid as cleanfid_fid
    from PIL import Image

    from diffusers_aligntok.evaluation import RandomInceptionStandIn

    pixels = np.random.default_rng(5).integers(0, 256, (4, 20, 24, 3), dtype=np.uint8)
    for index, image in enumerate(pixels):
        Image.fromarray(image).save(tmp_path / f"{index:02d}.png")
    network = RandomInceptionStandIn(resize_inside=True)
    theirs = cleanfid_fid.get_folder_features(
        str(tmp_path), model=network, num_workers=0, batch_size=4, device=torch.device("cpu"), mode=mode, verbose=False
    )
    extractor = build_fid_feature_extractor("local-inception", network=network, inception_mode=mode)
    ours = extractor(torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 127.5 - 1)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
    assert extractor.describe()["inception_mode"] == mode and mode in extractor.describe()["protocol"]


def test_unknown_inception_mode_names_the_choices():
    with pytest.raises(
        ValueError, match=r"Unknown inception_mode 'legacy_pytorch'; choose 'clean' .*'legacy_tensorflow'"
    ):
        build_fid_feature_extractor("random-inception-standin", inception_mode="legacy_pytorch")


def test_unknown_feature_extractor_names_the_choices():
    with pytest.raises(ValueError, match="random-inception-standin"):
        build_fid_feature_extractor("inception-v4")


def test_reference_statistics_cache_round_trip(tmp_path):
    key = {"source": "builtin:shapes", "split": "train", "resolution": [32, 32], "num_samples": 50}
    statistics = FeatureStatistics(4).update(np.random.default_rng(4).normal(size=(50, 4)))
    path = reference_statistics_path(tmp_path, key)
    assert load_reference_statistics(path, key) is None
    save_reference_statistics(path, statistics, key)
    loaded = load_reference_statistics(path, key)
    np.testing.assert_allclose(loaded.covariance, statistics.covariance)
    with np.load(path) as stored:  # clean-fid's layout
        np.testing.assert_allclose(stored["mu"], statistics.mean)
    with pytest.raises(ValueError, match="holds reference statistics for"):
        load_reference_statistics(path, {**key, "num_samples": 51})


def test_importing_evaluation_needs_no_lpips_clean_fid_datasets_or_sklearn():
    import os
    import subprocess
    import sys

    code = (
        "import sys, diffusers_aligntok, diffusers_aligntok.evaluation; "
        "heavy = [name for name in ('lpips', 'cleanfid', 'datasets', 'sklearn') if name in sys.modules]; "
        "assert not heavy, heavy"
    )
    environment = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment, timeout=120)
    assert result.returncode == 0, result.stderr


def test_reference_statistics_key_is_one_key_for_the_same_images():
    # The tokenizer and the class-conditional evaluations measure the same data set: one key, one cache entry.
    common = ("builtin:shapes", "train", (32, 32), 48, "random-inception-standin")
    tokenizer_key = reference_statistics_key(*common, data_description="builtin:shapes (n=48, seed=0)", seed=0)
    generation_key = reference_statistics_key(*common, data_description="builtin:shapes (n=48, seed=0)", seed=0)
    assert tokenizer_key == generation_key
    assert reference_statistics_path("c", tokenizer_key) == reference_statistics_path("c", generation_key)
    # What changes the statistics changes the key: the generating seed of built-in data, the count, the mode.
    assert reference_statistics_key(*common, data_description="d", seed=1) != reference_statistics_key(
        *common, data_description="d", seed=0
    )
    assert "inception_mode" not in tokenizer_key  # keys cached before the mode existed stay valid
    assert reference_statistics_key(*common, inception_mode="legacy_tensorflow")["inception_mode"] == (
        "legacy_tensorflow"
    )
    # A seed only keys generated data; a real data set's images do not depend on it.
    hub = reference_statistics_key("ILSVRC/imagenet-1k", "train", (256, 256), 50000, "clean-fid-inception", seed=3)
    assert hub["seed"] is None
    # A folder of files is keyed by the hash of its listing, not by a data description.
    files = reference_statistics_key("/data/coco", "files", (256, 256), 6000, "x", files_sha256="ab12")
    assert files["files_sha256"] == "ab12" and "data_description" not in files and "seed" not in files
