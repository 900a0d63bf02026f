"""Generation evaluation on a tiny untrained AlignTokDiTPipeline: sample plan, process independence, resume, gFID
plumbing, CFG sweep, the recorded knobs and bad inputs. The random stand-in network replaces Inception (offline)."""

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffusers_aligntok.evaluation.generation import (
    GenerationEvaluationConfig,
    build_generation_feature_extractor,
    chunk_path,
    chunks_for_process,
    evaluate_generation,
    generate_chunks,
    iterate_chunks,
    load_aligntok_dit_pipeline,
    load_reference_npz,
    make_sample_plan,
    select_best_guidance_scale,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT / "training"))
import evaluate_generation as evaluate_generation_script  # noqa: E402

NUM_CLASSES = 10


@pytest.fixture(scope="module")
def tiny_pipeline_dir(tmp_path_factory) -> Path:
    from diffusers import FlowMatchEulerDiscreteScheduler

    from diffusers_aligntok import AlignedAutoencoderKL, AlignTokDiTPipeline, LightningDiTTransformer2DModel

    path = tmp_path_factory.mktemp("pipelines") / "tiny_dit"
    torch.manual_seed(0)
    transformer = LightningDiTTransformer2DModel.from_preset("tiny", in_channels=8, sample_size=8, num_classes=NUM_CLASSES)
    # adaLN-zero starts with a zero output layer (zero velocity whatever the label); perturb every weight so the
    # untrained model depends on the class and guidance changes its samples.
    with torch.no_grad():
        for parameter in transformer.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
    pipeline = AlignTokDiTPipeline(transformer=transformer, vae=AlignedAutoencoderKL.from_preset("tiny"),
                                   scheduler=FlowMatchEulerDiscreteScheduler())
    pipeline.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def standin():
    return build_generation_feature_extractor("random-inception-standin")


@pytest.fixture(scope="module")
def statistics_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fid_statistics")


def _config(pipeline_dir, cache, **overrides) -> GenerationEvaluationConfig:
    settings = {
        "pipeline": str(pipeline_dir), "num_samples": 40, "batch_size": 10, "samples_per_chunk": 10,
        "num_inference_steps": 2, "reference": "builtin:shapes", "reference_num_samples": 48,
        "precision_recall_reference_samples": 24, "feature_extractor": "random-inception-standin",
        "fid_statistics_cache": str(cache), "num_workers": 0,
    }
    settings.update(overrides)
    return GenerationEvaluationConfig(**settings)


def _metrics(results) -> dict:
    row = results["rows"][0]
    return {"gfid": row["gfid"], "inception_score": row["inception_score"], "precision": row["precision"],
            "recall": row["recall"]}


# ---------------------------------------------------------------------------------------------------------------------
# The sample plan and process independence
# ---------------------------------------------------------------------------------------------------------------------


def test_sample_plan_is_balanced_deterministic_and_seeded():
    plan = make_sample_plan(seed=0, num_samples=40, label_sampling="balanced", num_classes=NUM_CLASSES)
    assert np.bincount(plan.labels, minlength=NUM_CLASSES).tolist() == [4] * NUM_CLASSES
    assert plan.labels[:10].tolist() != sorted(plan.labels[:10].tolist())  # shuffled: chunks mix the classes
    again = make_sample_plan(seed=0, num_samples=40, label_sampling="balanced", num_classes=NUM_CLASSES)
    assert np.array_equal(plan.labels, again.labels) and np.array_equal(plan.noise_seeds, again.noise_seeds)
    other = make_sample_plan(seed=1, num_samples=40, label_sampling="balanced", num_classes=NUM_CLASSES)
    assert not np.array_equal(plan.labels, other.labels)
    assert not np.intersect1d(plan.noise_seeds, other.noise_seeds).size
    assert len(np.unique(plan.noise_seeds)) == 40 and (plan.noise_seeds >= 0).all()
    # Sample i has the same noise whatever the plan's length.
    assert np.array_equal(make_sample_plan(0, 20, "balanced", NUM_CLASSES).noise_seeds, plan.noise_seeds[:20])
    uniform = make_sample_plan(seed=0, num_samples=37, label_sampling="uniform", num_classes=NUM_CLASSES)
    assert uniform.labels.min() >= 0 and uniform.labels.max() < NUM_CLASSES
    assert np.array_equal(uniform.labels, make_sample_plan(0, 37, "uniform", NUM_CLASSES).labels)


@pytest.mark.parametrize("num_processes", [1, 2, 3])
def test_chunk_assignment_covers_every_chunk_once(num_processes):
    assigned = [chunk for rank in range(num_processes) for chunk in chunks_for_process(7, rank, num_processes)]
    assert sorted(assigned) == list(range(7))


def test_chunks_are_the_same_for_one_or_two_processes(tiny_pipeline_dir, standin, statistics_cache, tmp_path):
    config = _config(tiny_pipeline_dir, statistics_cache, num_samples=12, samples_per_chunk=3, batch_size=3,
                     guidance_scale=2.0, label_sampling="uniform")
    plan = make_sample_plan(config.seed, config.num_samples, config.label_sampling, NUM_CLASSES)
    num_chunks = plan.num_chunks(config.samples_per_chunk)

    def run(directory, process_index, num_processes):
        pipeline = load_aligntok_dit_pipeline(tiny_pipeline_dir)
        pipeline.set_progress_bar_config(disable=True)
        chunks = chunks_for_process(num_chunks, process_index, num_processes)
        generate_chunks(pipeline, plan, chunks, directory, "fp", config, 2.0, standin, resume=False, show_progress=False)

    run(tmp_path / "one", 0, 1)
    run(tmp_path / "two", 1, 2)  # the second "process" first: order must not matter either
    run(tmp_path / "two", 0, 2)
    one = list(iterate_chunks(tmp_path / "one", plan, config.samples_per_chunk, "fp"))
    two = list(iterate_chunks(tmp_path / "two", plan, config.samples_per_chunk, "fp"))
    for left, right in zip(one, two, strict=True):
        for name in ("features", "labels", "sample_indices", "noise_seeds"):
            assert np.array_equal(left[name], right[name]), name
    # Different samples really differ (the features are not constant).
    assert not np.allclose(one[0]["features"][0], one[0]["features"][1])


# ---------------------------------------------------------------------------------------------------------------------
# Resume
# ---------------------------------------------------------------------------------------------------------------------


def test_killed_run_regenerates_only_missing_chunks_and_gives_identical_metrics(tiny_pipeline_dir, statistics_cache, tmp_path):
    config = _config(tiny_pipeline_dir, statistics_cache, num_samples=20, samples_per_chunk=5, batch_size=5)
    output = tmp_path / "run"
    assert evaluate_generation(config, output, _stop_after_chunks=2) is None  # "killed" after 2 of 4 chunks
    scale_dir = output / "cfg-1"
    assert sorted(path.name for path in scale_dir.glob("features-*.npz")) == ["features-00000.npz", "features-00001.npz"]
    first_two = [chunk_path(scale_dir, chunk).stat().st_mtime_ns for chunk in (0, 1)]

    resumed = evaluate_generation(config, output, resume=True)
    assert resumed["rows"][0]["chunks_generated_this_run"] == 2
    assert [chunk_path(scale_dir, chunk).stat().st_mtime_ns for chunk in (0, 1)] == first_two

    chunk_path(scale_dir, 2).unlink()
    kept = {chunk: chunk_path(scale_dir, chunk).stat().st_mtime_ns for chunk in (0, 1, 3)}
    again = evaluate_generation(config, output, resume=True)
    assert again["rows"][0]["chunks_generated_this_run"] == 1
    assert {chunk: chunk_path(scale_dir, chunk).stat().st_mtime_ns for chunk in (0, 1, 3)} == kept
    assert _metrics(again) == _metrics(resumed)
    assert resumed["rows"][0]["precision"] is not None

    # Resuming with a setting that changes the samples is refused rather than mixed in.
    with pytest.raises(ValueError, match="generated with other settings"):
        evaluate_generation(_config(tiny_pipeline_dir, statistics_cache, num_samples=20, samples_per_chunk=5,
                                    batch_size=5, num_inference_steps=3), output, resume=True)


# ---------------------------------------------------------------------------------------------------------------------
# gFID plumbing, the JSON, the CLI
# ---------------------------------------------------------------------------------------------------------------------


def test_gfid_is_zero_against_its_own_statistics_and_positive_against_other_images(tiny_pipeline_dir, statistics_cache,
                                                                                  tmp_path):
    output = tmp_path / "run"
    evaluate_generation_script.main([
        "--pipeline", str(tiny_pipeline_dir), "--output_dir", str(output), "--num_samples", "40", "--batch_size", "10",
        "--samples_per_chunk", "10", "--num_inference_steps", "2", "--sampler", "heun", "--shift", "2.0",
        "--guidance_scale", "1.5", "--guidance_interval", "0.1", "0.9", "--seed", "7", "--reference", "builtin:shapes",
        "--reference_num_samples", "48", "--precision_recall_reference_samples", "24",
        "--feature_extractor", "random-inception-standin", "--fid_statistics_cache", str(statistics_cache),
        "--save_images", "40", "--num_workers", "0",
    ])
    results = json.loads((output / "results.json").read_text())
    assert results["rows"][0]["gfid"] > 1.0  # generated images vs builtin shapes

    settings = results["settings"]
    assert settings["num_inference_steps"] == 2 and settings["sampler"] == "heun"
    assert settings["scheduler_class"] == "FlowMatchHeunDiscreteScheduler" and settings["shift_effective"] == 2.0
    assert settings["transformer_evaluations_per_sample"] == 3  # Heun: two per step but the last
    assert settings["guidance_scale"] == 1.5 and settings["guidance_interval"] == [0.1, 0.9]
    assert settings["seed"] == 7 and settings["label_sampling"] == "balanced" and settings["num_samples"] == 40
    assert settings["sample_plan"]["samples_per_class_min"] == settings["sample_plan"]["samples_per_class_max"] == 4
    assert results["feature_extractor"]["name"] == "random-inception-standin"
    assert results["feature_extractor"]["is_real_metric"] is False
    assert results["feature_extractor"]["inception_score"]["is_real_metric"] is False
    assert results["reference"]["source"] == "builtin:shapes" and results["reference"]["num_samples"] == 48
    assert results["pipeline"]["path"] == str(tiny_pipeline_dir)
    assert results["pipeline"]["transformer"]["config"]["num_classes"] == NUM_CLASSES
    assert results["pipeline"]["vae"]["config"]["latent_channels"] == 8
    assert results["versions"]["torch"] and results["versions"]["diffusers"]
    metrics = results["metrics"]
    assert {"gfid", "inception_score", "precision", "recall"} <= set(metrics)
    assert {"mean", "std"} <= set(metrics["inception_score"])
    assert any("biased upward" in warning for warning in results["warnings"])
    markdown = (output / "results.md").read_text()
    assert "NOT FID" in markdown and "NOT IS" in markdown and "biased upward" in markdown
    assert (output / "cfg-1.5" / "samples_grid.png").is_file()

    # Reference = the statistics of the generated features themselves, with the saved PNGs as ADM's arr_0 images.
    plan = make_sample_plan(7, 40, "balanced", NUM_CLASSES)
    features = np.concatenate([arrays["features"] for arrays in iterate_chunks(output / "cfg-1.5", plan, 10)])
    pngs = sorted((output / "cfg-1.5" / "samples").glob("*.png"))
    assert len(pngs) == 40
    images = np.stack([np.asarray(Image.open(path).convert("RGB")) for path in pngs])
    own = tmp_path / "own_reference.npz"
    np.savez(own, mu=features.astype(np.float64).mean(0), sigma=np.cov(features.astype(np.float64), rowvar=False),
             arr_0=images)
    rescored = evaluate_generation_script.main([
        "--pipeline", str(tiny_pipeline_dir), "--output_dir", str(output), "--num_samples", "40", "--batch_size", "10",
        "--samples_per_chunk", "10", "--num_inference_steps", "2", "--sampler", "heun", "--shift", "2.0",
        "--guidance_scale", "1.5", "--guidance_interval", "0.1", "0.9", "--seed", "7", "--reference", str(own),
        "--precision_recall_reference_samples", "40", "--feature_extractor", "random-inception-standin", "--resume",
    ])
    row = rescored["rows"][0]
    assert row["chunks_generated_this_run"] == 0  # re-scored from the chunk files
    assert abs(row["gfid"]) < 1e-6
    assert row["precision"] == 1.0 and row["recall"] == 1.0  # the PNGs give back exactly the sample features
    assert rescored["reference"]["kind"] == "npz"


def test_reference_npz_without_images_skips_precision_recall_with_a_note(standin, tmp_path):
    path = tmp_path / "statistics.npz"
    np.savez(path, mu=np.zeros(32), sigma=np.eye(32))
    notes = []
    reference = load_reference_npz(path, standin, 100, 8, notes, [])
    assert reference.precision_recall_features is None
    assert any("only mu/sigma" in note for note in notes)


# ---------------------------------------------------------------------------------------------------------------------
# CFG sweep
# ---------------------------------------------------------------------------------------------------------------------


def test_cfg_sweep_reports_the_scale_with_the_lowest_gfid(tiny_pipeline_dir, statistics_cache, tmp_path):
    scales = [1.0, 1.5, 2.0]
    calls = []

    def fake_metrics(guidance_scale, scale_dir, plan, reference, **kwargs):
        calls.append(guidance_scale)
        chunks = list(iterate_chunks(scale_dir, plan, kwargs["samples_per_chunk"]))
        return {"gfid": 10.0 + (guidance_scale - 1.5) ** 2, "inception_score": {"mean": guidance_scale, "std": 0.0},
                "precision": None, "recall": None, "num_samples": sum(len(arrays["labels"]) for arrays in chunks)}

    config = _config(tiny_pipeline_dir, statistics_cache, num_samples=10, cfg_sweep=scales,
                     precision_recall_reference_samples=0)
    results = evaluate_generation(config, tmp_path / "sweep", metrics_function=fake_metrics)
    assert calls == scales
    assert results["best_guidance_scale"] == 1.5 and results["metrics"]["gfid"] == 10.0
    assert [row["best"] for row in results["rows"]] == [False, True, False]
    assert results["settings"]["mode"] == "cfg_sweep" and results["settings"]["guidance_scales"] == scales
    best_line = next(line for line in (tmp_path / "sweep" / "results.md").read_text().splitlines() if "✓" in line)
    assert best_line.startswith("| **1.5** |")
    # Every scale samples the same plan; the guidance changes the samples.
    plan = make_sample_plan(0, 10, "balanced", NUM_CLASSES)
    per_scale = {scale: next(iterate_chunks(tmp_path / "sweep" / f"cfg-{scale:g}", plan, 10)) for scale in scales}
    assert np.array_equal(per_scale[1.0]["labels"], per_scale[2.0]["labels"])
    assert not np.allclose(per_scale[1.0]["features"], per_scale[2.0]["features"])


def test_select_best_guidance_scale_ignores_missing_and_nan():
    rows = [{"guidance_scale": 1.0, "gfid": float("nan")}, {"guidance_scale": 1.5, "gfid": 3.0},
            {"guidance_scale": 2.0, "gfid": None}, {"guidance_scale": 2.5, "gfid": 2.0}]
    assert select_best_guidance_scale(rows)["guidance_scale"] == 2.5
    assert select_best_guidance_scale([{"gfid": None}]) is None


# ---------------------------------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------------------------------


def test_guidance_interval_and_sweep_are_checked():
    with pytest.raises(ValueError, match=r"0 <= low <= high <= 1.*Did you mean \(0.2, 0.8\)"):
        GenerationEvaluationConfig(guidance_interval=(0.8, 0.2))
    with pytest.raises(ValueError, match="0 <= low <= high <= 1"):
        GenerationEvaluationConfig(guidance_interval=(0.0, 1.5))
    with pytest.raises(ValueError, match="lists a scale twice"):
        GenerationEvaluationConfig(cfg_sweep=[1.0, 1.5, 1.0])
    with pytest.raises(SystemExit):
        evaluate_generation_script.parse_args(["--pipeline", "p", "--output_dir", "o", "--guidance_scale", "2",
                                               "--cfg_sweep", "1,2"])


def test_balanced_sampling_needs_a_multiple_of_the_class_count(tiny_pipeline_dir, statistics_cache, tmp_path):
    with pytest.raises(ValueError, match="25 samples over 10 classes leaves 5 over. Use 20 or 30 samples"):
        make_sample_plan(0, 25, "balanced", NUM_CLASSES)
    # Through the evaluation: the class count comes from the transformer's config.
    with pytest.raises(ValueError, match="Use 20 or 30 samples"):
        evaluate_generation(_config(tiny_pipeline_dir, statistics_cache, num_samples=25), tmp_path / "out")
    assert make_sample_plan(0, 25, "uniform", NUM_CLASSES).num_samples == 25


def test_num_classes_mismatch_names_both_sides(tiny_pipeline_dir, statistics_cache, tmp_path):
    with pytest.raises(ValueError, match="num_classes=1000 was requested but the pipeline's transformer has num_classes=10"):
        evaluate_generation(_config(tiny_pipeline_dir, statistics_cache, num_classes=1000), tmp_path / "out")


def test_reference_npz_must_hold_mu_and_sigma_of_matching_size(standin, tmp_path):
    missing = tmp_path / "missing.npz"
    np.savez(missing, mean=np.zeros(32), covariance=np.eye(32))
    with pytest.raises(ValueError, match=r"has the arrays \['mean', 'covariance'\].*needs 'mu'"):
        load_reference_npz(missing, standin, 0, 8, [], [])
    wrong_size = tmp_path / "inception.npz"
    np.savez(wrong_size, mu=np.zeros(2048), sigma=np.eye(2048))
    with pytest.raises(ValueError, match="2048-d statistics.*gives 32-d features"):
        load_reference_npz(wrong_size, standin, 0, 8, [], [])


def test_a_directory_that_is_not_an_aligntok_dit_pipeline_is_refused(tiny_pipeline_dir, tmp_path):
    with pytest.raises(ValueError, match="no model_index.json"):
        load_aligntok_dit_pipeline(tiny_pipeline_dir / "transformer")
    other = tmp_path / "other_pipeline"
    shutil.copytree(tiny_pipeline_dir, other)
    index = json.loads((other / "model_index.json").read_text())
    (other / "model_index.json").write_text(json.dumps({**index, "_class_name": "DiTPipeline"}))
    with pytest.raises(ValueError, match="holds a DiTPipeline .*not an AlignTokDiTPipeline"):
        load_aligntok_dit_pipeline(other)
