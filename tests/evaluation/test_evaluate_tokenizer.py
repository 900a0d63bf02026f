"""The evaluation run end to end: the command on a folder, perfect-tokenizer sanity, resume, bad input."""

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from diffusers_aligntok.evaluation import TokenizerEvaluationConfig, evaluate_tokenizers, load_tokenizer
from diffusers_aligntok.evaluation.tokenizer import PARTIAL_STATE_DIR
from tests.testing_utils import load_script

from .conftest import IdentityTokenizer


def test_command_evaluates_two_tokenizers_on_a_folder(tiny_aligntok_dir, tiny_kl_dir, image_folder, tmp_path, capsys):
    script = load_script("training/evaluate_tokenizer.py")
    arguments = [
        "--tokenizers",
        str(tiny_aligntok_dir),
        str(tiny_kl_dir),
        "--data",
        str(image_folder),
        "--resolution",
        "32",
        "--num_samples",
        "64",
        "--batch_size",
        "16",
        "--num_workers",
        "0",
        "--output_dir",
        str(tmp_path / "run1"),
        "--feature_extractor",
        "random-inception-standin",
        "--perceptual",
        "none",
        "--fid_statistics_cache",
        str(tmp_path / "cache"),
        "--num_visualization_images",
        "4",
    ]  # LPIPS through the same path is in test_a_perfect_tokenizer_scores_perfectly (it is the slow part on a CPU)
    with pytest.warns(UserWarning, match="FID with 27 samples is biased upward; the protocol uses 50,000"):
        results = script.main(arguments)
    table = capsys.readouterr().out
    assert "| tiny_aligntok | 4 | 8x8x8 |" in table and "| tiny_kl | 4 | 4x8x8 |" in table

    run = tmp_path / "run1"
    stored = json.loads((run / "results.json").read_text())
    assert stored["tokenizers"][0]["metrics"]["rfid"] == pytest.approx(results["tokenizers"][0]["metrics"]["rfid"])
    settings = stored["settings"]
    assert settings["resolution"] == [32, 32] and settings["crop"] == "center" and settings["split"] == "train"
    assert settings["num_samples"] == 27 and settings["num_samples_requested"] == 64
    assert stored["versions"]["torch"] and stored["versions"]["diffusers"]
    assert stored["feature_extractor"] == {
        **stored["feature_extractor"],
        "name": "random-inception-standin",
        "is_real_metric": False,
    }
    assert stored["perceptual"] is None
    assert stored["tokenizers"][0]["tokenizer"]["config"]["latent_channels"] == 8
    warnings = " ".join(stored["warnings"])
    assert "has only 27 images" in warnings
    assert "1 of 27 images were smaller than 32x32 and were upscaled" in warnings  # the 20x28 image
    assert "not FID" in warnings
    for entry in stored["tokenizers"]:
        metrics = entry["metrics"]
        assert (
            0 < metrics["psnr"] < 100
            and -1 <= metrics["ssim"] <= 1
            and metrics["lpips"] is None
            and metrics["rfid"] > 0
        )
        assert metrics["linear_probe"]["num_classes"] == 10 and 0 <= metrics["linear_probe"]["top1"] <= 1
        assert -1 <= metrics["cknna"] <= 1 and metrics["cknna_num_samples"] == 27
    assert stored["reference_encoder"]["name"] == "encoder of tiny_aligntok"
    assert stored["reference_statistics"]["cached"] is False
    assert "rFID: random-inception-standin (a random stand-in network: NOT FID" in (run / "results.md").read_text()
    with Image.open(run / "reconstructions.png") as picture:
        assert picture.height > 3 * 96 and picture.width > 4 * 96  # originals + 2 rows, 4 columns
    assert not (run / PARTIAL_STATE_DIR).exists()
    assert Path(stored["reference_statistics"]["path"]).is_file()  # cached for the next run


def test_a_perfect_tokenizer_scores_perfectly(standin_feature_extractor, random_trunk_lpips, tmp_path):
    config = TokenizerEvaluationConfig(
        data="builtin:shapes",
        resolution=32,
        num_samples=36,
        batch_size=18,
        num_workers=0,
        fid_statistics_cache=str(tmp_path / "cache"),
        num_visualization_images=2,
    )
    results = evaluate_tokenizers(
        config,
        tmp_path / "run",
        adapters=[IdentityTokenizer()],
        feature_extractor=standin_feature_extractor,
        perceptual_network=random_trunk_lpips,
    )
    metrics = results["tokenizers"][0]["metrics"]
    assert results["perceptual"]["name"] == "lpips-vgg-random-trunk" and not results["perceptual"]["is_real_metric"]
    assert any("not LPIPS" in warning for warning in results["warnings"])
    assert abs(metrics["rfid"]) < 1e-6
    assert metrics["psnr"] == 100.0 and metrics["ssim"] == pytest.approx(1.0) and metrics["lpips"] == 0.0
    # The pooled "latent" is the mean colour: the probe runs; CKNNA has no AlignTok encoder to compare with.
    assert metrics["linear_probe"]["num_validation"] == 10 and metrics["cknna"] is None  # 10 classes: >= 1 each
    assert any("CKNNA skipped" in note for note in results["notes"])


def test_resume_gives_the_same_results_as_an_uninterrupted_run(tiny_aligntok_dir, standin_feature_extractor, tmp_path):
    def run(name, **kwargs):
        settings = {
            "data": "builtin:shapes",
            "resolution": 32,
            "num_samples": 18,
            "batch_size": 6,
            "num_workers": 0,
            "perceptual": None,
            "fid_statistics_cache": str(tmp_path / "cache"),
            "save_every_batches": 1,
            "num_visualization_images": 2,
            "cknna_topk": 5,
        }
        config = TokenizerEvaluationConfig(**{**settings, **kwargs.pop("config", {})})
        adapters = [IdentityTokenizer(), load_tokenizer(str(tiny_aligntok_dir))]
        return evaluate_tokenizers(
            config, tmp_path / name, adapters=adapters, feature_extractor=standin_feature_extractor, **kwargs
        )

    uninterrupted = run("full")
    assert run("resumed", _stop_after_batches=1) is None
    assert (tmp_path / "resumed" / PARTIAL_STATE_DIR / "rank0_of_1.pt").is_file()
    with pytest.raises(ValueError, match="other settings"):
        run("resumed", resume=True, config={"batch_size": 4})
    resumed = run("resumed", resume=True)
    # The first run cached the reference statistics; the second used them.
    assert (uninterrupted["reference_statistics"]["cached"], resumed["reference_statistics"]["cached"]) == (
        False,
        True,
    )
    for expected, actual in zip(uninterrupted["tokenizers"], resumed["tokenizers"], strict=True):
        for key in ("rfid", "psnr", "ssim", "cknna"):
            assert actual["metrics"][key] == pytest.approx(expected["metrics"][key], rel=1e-9, abs=1e-12), key
        assert actual["metrics"]["linear_probe"] == expected["metrics"]["linear_probe"]


def test_a_resolution_that_a_tokenizer_cannot_take_fails_before_reading_data(tiny_aligntok_dir, tmp_path):
    config = TokenizerEvaluationConfig(
        tokenizers=[str(tiny_aligntok_dir)],
        data=str(tmp_path / "does-not-exist"),
        resolution=30,
        num_samples=8,
        perceptual=None,
        feature_extractor="random-inception-standin",
    )
    with pytest.raises(ValueError, match="30x30 is not a multiple of its spatial factor 4"):
        evaluate_tokenizers(config, tmp_path / "run")


def test_nan_reconstructions_are_an_error_not_a_number(standin_feature_extractor, tmp_path):
    class BrokenTokenizer(IdentityTokenizer):
        name = "broken"

        def decode(self, latents):
            return torch.full_like(latents, float("nan"))

    config = TokenizerEvaluationConfig(
        data="builtin:shapes",
        resolution=16,
        num_samples=4,
        batch_size=4,
        num_workers=0,
        perceptual=None,
        fid_statistics_cache=str(tmp_path / "cache"),
    )
    with pytest.raises(FloatingPointError, match="broken produced NaN/inf reconstructions"):
        evaluate_tokenizers(
            config, tmp_path / "run", adapters=[BrokenTokenizer()], feature_extractor=standin_feature_extractor
        )
