"""`benchmarks/toy_reproduction.py` end to end at a tiny scale: every arm, every output, finite metrics."""

import json
import math

import torch

from tests.testing_utils import load_script


def test_judge_features_feed_the_classifier_head_and_give_a_second_fid():
    from transformers import Dinov2Config, Dinov2Model

    from diffusers_aligntok import demo

    benchmark = load_script("benchmarks/toy_reproduction.py")
    torch.manual_seed(0)
    classifier = benchmark.ShapeClassifier().eval()
    images, _ = benchmark.shapes_tensors(300, seed=3)
    features = benchmark.judge_features(classifier, images)
    assert features.shape == (300, 64)
    # The features are exactly what the final Linear classifies: the judge's penultimate layer, nothing else.
    with torch.no_grad():
        logits = classifier.layers[-1](torch.from_numpy(features).float())
        torch.testing.assert_close(logits, classifier(images), rtol=1e-4, atol=1e-5)

    encoder = Dinov2Model(Dinov2Config(**demo.TOY_ENCODER_CONFIG)).eval()
    # 150 images per set: more than either feature width (96, 64), so both covariances are full rank.
    spaces = benchmark.FidFeatureSpaces.from_real_images(encoder, classifier, images[:150])
    same, other_real, noise = (
        spaces.fids(images[:150]),
        spaces.fids(images[150:]),
        spaces.fids(torch.rand_like(images[:150]) * 2 - 1),
    )
    assert set(same) == {"fid", "judge_fid"}
    for name in same:
        assert abs(same[name]) < 1e-6 and 0 <= other_real[name] < noise[name]


def test_sweep_arms_get_no_dit_unless_asked():
    benchmark = load_script("benchmarks/toy_reproduction.py")
    assert set(benchmark.SWEEP_ARMS) == {"aligntok_wsp0", "aligntok_wsp5"} and benchmark.DEFAULT_ARMS == list(
        benchmark.ARMS
    )
    default = benchmark.parse_args([])
    assert default.seeds == [0, 1, 2] and "vavae" in default.arms
    assert benchmark.dit_arms(default) == ["aligntok", "aligntok_stage1", "vae", "vavae"]
    assert benchmark.dit_arms(benchmark.parse_args(["--sweep_dit"])) == list(benchmark.ARMS)


def test_toy_reproduction_writes_a_finite_table_for_every_arm(tmp_path):
    benchmark = load_script("benchmarks/toy_reproduction.py")
    results_dir = tmp_path / "results"
    # 10 samples per class: 100 samples, more than the 96 feature dimensions, so the FID covariance is full rank.
    report = benchmark.main(
        [
            "--seeds",
            "0",
            "--arms",
            *benchmark.ARMS,
            "--scale",
            "0.01",
            "--dit_eval_fractions",
            "0.5",
            "1.0",
            "--num_samples_per_class",
            "10",
            "--num_inference_steps",
            "3",
            "--num_dit_latents",
            "128",
            "--num_held_out",
            "100",
            "--num_probe_images",
            "60",
            "--output_dir",
            str(tmp_path / "runs"),
            "--results_dir",
            str(results_dir),
        ]
    )
    saved = json.loads((results_dir / "toy_reproduction.json").read_text())
    markdown = (results_dir / "toy_reproduction.md").read_text()
    assert saved["arms"] == list(benchmark.ARMS) == report["arms"]
    assert saved["dit_arms"] == [arm for arm in benchmark.ARMS if arm not in benchmark.SWEEP_ARMS]
    for arm in benchmark.ARMS:
        assert benchmark.ARMS[arm] in markdown
        summary = saved["summary"][arm]
        assert 0 <= summary["linear_probe_top1"]["mean"] <= 1 and math.isfinite(summary["psnr"]["mean"])
        assert 0 <= summary["reconstruction_classifier_accuracy"]["mean"] <= 1
        assert summary["reconstruction_fid"]["mean"] >= 0 and summary["reconstruction_judge_fid"]["mean"] >= 0
        if arm in benchmark.SWEEP_ARMS:
            assert summary["dit"] == [] and saved["per_seed"][0]["arms"][arm]["dit"] == []
            assert (
                saved["per_seed"][0]["arms"][arm]["semantic_preservation_weight"]
                == benchmark.SEMANTIC_PRESERVATION_WEIGHTS[arm]
            )
            assert (tmp_path / "runs" / "seed0" / arm / "stage3" / "model" / "config.json").is_file()
            # Stage 1 is shared with the aligntok arm, not retrained.
            assert not (tmp_path / "runs" / "seed0" / arm / "stage1").exists()
            continue
        assert [point["step"] for point in summary["dit"]] == [
            point["step"] for point in saved["summary"]["aligntok"]["dit"]
        ]
        assert len(summary["dit"]) == 2
        for point in summary["dit"]:
            for guidance in ("cfg", "no_cfg"):
                assert math.isfinite(point[f"fid_{guidance}"]["mean"]) and math.isfinite(
                    point[f"judge_fid_{guidance}"]["mean"]
                )
                assert 0 <= point[f"accuracy_{guidance}"]["mean"] <= 1
        assert len(summary["dit"][-1]["accuracy_cfg"]["values"]) == 1  # one per seed
        assert (tmp_path / "runs" / "seed0" / arm / "samples.png").is_file()
    # The sweep table: our linear probe next to the paper's for w_sp 0, 1 and 5.
    assert "Semantic-preservation weight" in markdown and all(
        f"| {value} |" in markdown for value in ("9.5", "35.1", "40.5")
    )
    assert saved["per_seed"][0]["seed"] == 0 and saved["wall_seconds"] > 0
