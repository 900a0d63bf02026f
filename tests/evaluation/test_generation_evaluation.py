"""Generation evaluation on a tiny untrained AlignTokDiTPipeline: sample plan, process independence, resume, gFID
plumbing, CFG sweep, the ADM-format sample npz and reference batches, inception modes, guidance channels, the recorded
knobs and bad inputs. The random stand-in network replaces Inception (offline)."""

import json
import shutil
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffusers_aligntok.evaluation.class_conditional import (
    GenerationEvaluationConfig,
    GenerationFeatureExtractor,
    Reference,
    build_generation_feature_extractor,
    check_guidance_channels,
    chunk_path,
    describe_protocol,
    evaluate_generation,
    generate_chunk,
    generate_chunks,
    generation_fingerprint,
    iterate_chunks,
    load_aligntok_dit_pipeline,
    load_reference_npz,
    make_sample_plan,
    random_labels,
    write_adm_sample_npz,
)
from diffusers_aligntok.evaluation.metrics.fid import (
    FeatureStatistics,
    build_fid_feature_extractor,
    compute_fid_from_features,
    save_reference_statistics,
)
from diffusers_aligntok.evaluation.sweep import chunks_for_process, select_best_guidance_scale


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
    transformer = LightningDiTTransformer2DModel.from_preset(
        "tiny", in_channels=8, sample_size=8, num_classes=NUM_CLASSES
    )
    # adaLN-zero starts with a zero output layer (zero velocity whatever the label); perturb every weight so the
    # untrained model depends on the class and guidance changes its samples.
    with torch.no_grad():
        for parameter in transformer.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
    pipeline = AlignTokDiTPipeline(
        transformer=transformer,
        vae=AlignedAutoencoderKL.from_preset("tiny"),
        scheduler=FlowMatchEulerDiscreteScheduler(),
    )
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
        "pipeline": str(pipeline_dir),
        "num_samples": 40,
        "batch_size": 10,
        "samples_per_chunk": 10,
        "num_inference_steps": 2,
        "reference": "builtin:shapes",
        "reference_num_samples": 48,
        "precision_recall_reference_samples": 24,
        "feature_extractor": "random-inception-standin",
        "fid_statistics_cache": str(cache),
        "num_workers": 0,
    }
    settings.update(overrides)
    return GenerationEvaluationConfig(**settings)


def _metrics(results) -> dict:
    row = results["rows"][0]
    return {
        "gfid": row["gfid"],
        "inception_score": row["inception_score"],
        "precision": row["precision"],
        "recall": row["recall"],
    }


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


def test_random_labels_are_a_function_of_seed_and_sample_index_only():
    plan = make_sample_plan(seed=3, num_samples=2_000, label_sampling="random", num_classes=NUM_CLASSES)
    assert plan.label_sampling == "random" and plan.labels.dtype == np.int64
    assert plan.labels.min() >= 0 and plan.labels.max() < NUM_CLASSES
    counts = np.bincount(plan.labels, minlength=NUM_CLASSES)
    assert counts.min() > 140 and counts.max() < 260  # uniform: 200 each, sd ~13
    assert counts.min() != counts.max()  # independent draws, not balanced
    # A pure function of (seed, index): any subset of indices, any plan length, any process.
    assert np.array_equal(random_labels(3, [1999, 0, 7], NUM_CLASSES), plan.labels[[1999, 0, 7]])
    assert np.array_equal(make_sample_plan(3, 37, "random", NUM_CLASSES).labels, plan.labels[:37])
    samples_per_chunk, num_chunks = 300, plan.num_chunks(300)
    for num_processes in (1, 2, 3):
        labels = np.full(plan.num_samples, -1)
        for rank in range(num_processes):
            # What each rank would sample: its own plan (every rank builds it) cut to its own chunks.
            rank_plan = make_sample_plan(3, 2_000, "random", NUM_CLASSES)
            for chunk in chunks_for_process(num_chunks, rank, num_processes):
                indices = rank_plan.chunk_indices(chunk, samples_per_chunk)
                labels[indices] = rank_plan.labels[indices]
        assert np.array_equal(labels, plan.labels), num_processes
    # Other seeds give other labels; the labels are not a function of the noise seeds.
    assert (make_sample_plan(4, 2_000, "random", NUM_CLASSES).labels != plan.labels).mean() > 0.8
    assert (plan.labels != plan.noise_seeds % NUM_CLASSES).mean() > 0.8
    # "uniform" is the old name.
    assert np.array_equal(make_sample_plan(3, 37, "uniform", NUM_CLASSES).labels, plan.labels[:37])
    assert GenerationEvaluationConfig(label_sampling="uniform").label_sampling == "random"
    with pytest.raises(ValueError, match=r"label_sampling must be one of \('balanced', 'random'\), got 'stratified'"):
        GenerationEvaluationConfig(label_sampling="stratified")


@pytest.mark.parametrize("num_processes", [1, 2, 3])
def test_chunk_assignment_covers_every_chunk_once(num_processes):
    assigned = [chunk for rank in range(num_processes) for chunk in chunks_for_process(7, rank, num_processes)]
    assert sorted(assigned) == list(range(7))


def test_chunks_and_sample_npz_are_the_same_for_one_or_two_processes(
    tiny_pipeline_dir, standin, statistics_cache, tmp_path
):
    config = _config(
        tiny_pipeline_dir,
        statistics_cache,
        num_samples=12,
        samples_per_chunk=3,
        batch_size=3,
        guidance_scale=2.0,
        label_sampling="random",
        save_npz=str(tmp_path / "unused.npz"),
    )
    plan = make_sample_plan(config.seed, config.num_samples, config.label_sampling, NUM_CLASSES)
    num_chunks = plan.num_chunks(config.samples_per_chunk)

    def run(directory, process_index, num_processes):
        pipeline = load_aligntok_dit_pipeline(tiny_pipeline_dir)
        pipeline.set_progress_bar_config(disable=True)
        chunks = chunks_for_process(num_chunks, process_index, num_processes)
        generate_chunks(
            pipeline, plan, chunks, directory, "fp", config, 2.0, standin, resume=False, show_progress=False
        )

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
    # The ADM npz gathers every rank's chunks in sample order: byte-identical to one process's.
    write_adm_sample_npz(tmp_path / "one.npz", tmp_path / "one", plan, config.samples_per_chunk, "fp")
    write_adm_sample_npz(tmp_path / "two.npz", tmp_path / "two", plan, config.samples_per_chunk, "fp")
    with np.load(tmp_path / "one.npz") as left, np.load(tmp_path / "two.npz") as right:
        assert np.array_equal(left["arr_0"], right["arr_0"]) and np.array_equal(left["arr_1"], plan.labels)
        assert np.array_equal(right["arr_1"], plan.labels)


# ---------------------------------------------------------------------------------------------------------------------
# Resume
# ---------------------------------------------------------------------------------------------------------------------


def test_killed_run_regenerates_only_missing_chunks_and_gives_identical_metrics(
    tiny_pipeline_dir, statistics_cache, tmp_path
):
    config = _config(tiny_pipeline_dir, statistics_cache, num_samples=20, samples_per_chunk=5, batch_size=5)
    output = tmp_path / "run"
    assert evaluate_generation(config, output, _stop_after_chunks=2) is None  # "killed" after 2 of 4 chunks
    scale_dir = output / "cfg-1"
    assert sorted(path.name for path in scale_dir.glob("features-*.npz")) == [
        "features-00000.npz",
        "features-00001.npz",
    ]
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
        evaluate_generation(
            _config(
                tiny_pipeline_dir,
                statistics_cache,
                num_samples=20,
                samples_per_chunk=5,
                batch_size=5,
                num_inference_steps=3,
            ),
            output,
            resume=True,
        )


# ---------------------------------------------------------------------------------------------------------------------
# gFID plumbing, the JSON, the CLI
# ---------------------------------------------------------------------------------------------------------------------


def test_gfid_is_zero_against_its_own_statistics_and_positive_against_other_images(
    tiny_pipeline_dir, statistics_cache, tmp_path
):
    output = tmp_path / "run"
    evaluate_generation_script.main(
        [
            "--pipeline",
            str(tiny_pipeline_dir),
            "--output_dir",
            str(output),
            "--num_samples",
            "40",
            "--batch_size",
            "10",
            "--samples_per_chunk",
            "10",
            "--num_inference_steps",
            "2",
            "--sampler",
            "heun",
            "--shift",
            "2.0",
            "--guidance_scale",
            "1.5",
            "--guidance_interval",
            "0.1",
            "0.9",
            "--seed",
            "7",
            "--reference",
            "builtin:shapes",
            "--reference_num_samples",
            "48",
            "--precision_recall_reference_samples",
            "24",
            "--feature_extractor",
            "random-inception-standin",
            "--fid_statistics_cache",
            str(statistics_cache),
            "--save_images",
            "40",
            "--num_workers",
            "0",
        ]
    )
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
    np.savez(
        own,
        mu=features.astype(np.float64).mean(0),
        sigma=np.cov(features.astype(np.float64), rowvar=False),
        arr_0=images,
    )
    rescored = evaluate_generation_script.main(
        [
            "--pipeline",
            str(tiny_pipeline_dir),
            "--output_dir",
            str(output),
            "--num_samples",
            "40",
            "--batch_size",
            "10",
            "--samples_per_chunk",
            "10",
            "--num_inference_steps",
            "2",
            "--sampler",
            "heun",
            "--shift",
            "2.0",
            "--guidance_scale",
            "1.5",
            "--guidance_interval",
            "0.1",
            "0.9",
            "--seed",
            "7",
            "--reference",
            str(own),
            "--precision_recall_reference_samples",
            "40",
            "--feature_extractor",
            "random-inception-standin",
            "--resume",
        ]
    )
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
# ADM's formats: the sample npz, reference batches, inception modes, the protocol record
# ---------------------------------------------------------------------------------------------------------------------


def _as_model_input(pixels: np.ndarray) -> torch.Tensor:
    """uint8 NHWC -> the [-1, 1] NCHW images the feature extractors take (they quantise back to the same pixels)."""
    return torch.from_numpy(np.ascontiguousarray(pixels)).permute(0, 3, 1, 2).float() / 127.5 - 1


def test_adm_recipe_writes_the_npz_adms_evaluator_reads_and_records_every_choice(
    tiny_pipeline_dir, statistics_cache, tmp_path
):
    output, npz = tmp_path / "run", tmp_path / "adm" / "samples.npz"
    arguments = [
        "--pipeline",
        str(tiny_pipeline_dir),
        "--output_dir",
        str(output),
        "--num_samples",
        "20",
        "--batch_size",
        "10",
        "--samples_per_chunk",
        "10",
        "--num_inference_steps",
        "2",
        "--seed",
        "5",
        "--label_sampling",
        "random",
        "--inception_mode",
        "legacy_tensorflow",
        "--feature_extractor",
        "random-inception-standin",
        "--precision_recall_reference_samples",
        "0",
        "--fid_statistics_cache",
        str(statistics_cache),
        "--num_workers",
        "0",
    ]
    evaluate_generation_script.main(
        arguments
        + [
            "--reference",
            "builtin:shapes",
            "--reference_num_samples",
            "48",
            "--save_npz",
            str(npz),
            "--save_images",
            "20",
        ]
    )
    plan = make_sample_plan(5, 20, "random", NUM_CLASSES)

    # numpy.load reads it as ADM's evaluator does: arr_0 uint8 NHWC in sample order, arr_1 the labels.
    with np.load(npz) as stored:
        assert stored.files == ["arr_0", "arr_1"]
        images, labels = stored["arr_0"], stored["arr_1"]
    assert images.dtype == np.uint8 and images.shape == (20, 32, 32, 3)
    assert labels.dtype == np.int64 and np.array_equal(labels, plan.labels)
    pngs = sorted((output / "cfg-1" / "samples").glob("*.png"))  # <index>_class<label>.png
    assert [int(path.stem.split("_class")[1]) for path in pngs] == plan.labels.tolist()
    assert np.array_equal(images, np.stack([np.asarray(Image.open(path).convert("RGB")) for path in pngs]))
    # ADM's streaming reader: the npy header of arr_0.npy inside the zip, then raw rows.
    with zipfile.ZipFile(npz) as archive, archive.open("arr_0.npy") as member:
        assert np.lib.format.read_magic(member) == (1, 0)
        assert np.lib.format.read_array_header_1_0(member) == ((20, 32, 32, 3), False, np.dtype(np.uint8))
        first = np.frombuffer(member.read(32 * 32 * 3), dtype=np.uint8).reshape(32, 32, 3)
    assert np.array_equal(first, images[0])
    # The npz holds exactly the pixels that were measured.
    legacy = build_generation_feature_extractor("random-inception-standin", inception_mode="legacy_tensorflow")
    features = np.concatenate([arrays["features"] for arrays in iterate_chunks(output / "cfg-1", plan, 10)])
    np.testing.assert_allclose(legacy(_as_model_input(images))[0], features, rtol=1e-5, atol=1e-6)

    # Every choice is in the JSON and the markdown.
    results = json.loads((output / "results.json").read_text())
    settings = results["settings"]
    assert settings["inception_mode"] == settings["inception_mode_effective"] == "legacy_tensorflow"
    assert results["feature_extractor"]["inception_mode"] == "legacy_tensorflow"
    assert settings["label_sampling"] == "random" and settings["num_samples"] == 20
    assert settings["sample_plan"]["labels"].startswith("labels[i] = splitmix64(seed, i")
    assert settings["save_npz"] == str(npz)
    assert results["rows"][0]["sample_npz"]["path"] == str(npz)
    assert results["rows"][0]["sample_npz"]["arrays"]["arr_0"] == {"dtype": "uint8", "shape": [20, 32, 32, 3]}
    assert results["reference"]["kind"] == "data" and results["reference"]["inception_mode"] == "legacy_tensorflow"
    scheduler = json.loads((tiny_pipeline_dir / "scheduler" / "scheduler_config.json").read_text())
    assert settings["shift"] is None and settings["shift_source"] == "pipeline scheduler"
    assert settings["shift_effective"] == scheduler["shift"]
    assert settings["timestep_shift_lightningdit"] == pytest.approx(1 / scheduler["shift"])
    assert settings["guidance_channels"] is None and settings["guidance_channels_effective"] == "all"
    protocol = settings["protocol"]
    assert protocol["adm_comparable"] is False
    assert [condition.split(" ")[0] for condition in protocol["unmet"]] == ["real", "reference:", "num_samples=50000"]
    markdown = (output / "results.md").read_text()
    assert "20 samples per scale (random labels" in markdown and "inception_mode legacy_tensorflow" in markdown
    assert "ADM-comparable combination: no (differs in: real Inception" in markdown
    assert f"Samples for ADM's evaluator (cfg 1): {npz} (arr_0 uint8 20x32x32x3)" in markdown
    assert "shift 1.0 (pipeline scheduler), guidance channels all" in markdown

    # ADM-style reference batches give the FID computed directly from the same features: arr_0 images (statistics
    # computed with the selected mode) and precomputed mu/sigma. Re-scored from the chunk files (--resume).
    reference_images = np.random.default_rng(0).integers(0, 256, (48, 32, 32, 3), dtype=np.uint8)
    reference_features = legacy(_as_model_input(reference_images))[0]
    expected = compute_fid_from_features(reference_features, features)
    images_only, statistics_only = tmp_path / "reference_images.npz", tmp_path / "reference_statistics.npz"
    np.savez(images_only, arr_0=reference_images)
    np.savez(statistics_only, mu=reference_features.mean(0), sigma=np.cov(reference_features, rowvar=False))
    for path, source in ((images_only, "arr_0"), (statistics_only, "mu_sigma")):
        rescored = evaluate_generation_script.main(arguments + ["--reference", str(path), "--resume"])
        assert rescored["rows"][0]["chunks_generated_this_run"] == 0
        assert rescored["rows"][0]["gfid"] == pytest.approx(expected, rel=1e-6)
        assert rescored["reference"]["statistics_source"] == source
        assert rescored["reference"]["path"] == str(path) and rescored["reference"]["kind"] == "npz"
    assert rescored["reference"]["statistics_num_images"] is None  # foreign mu/sigma: count unknown
    # A resume with save_npz and chunks that lack image files regenerates those chunks only.
    for image_file in (output / "cfg-1").glob("images-*.npz"):
        image_file.unlink()
    again = evaluate_generation_script.main(
        arguments + ["--reference", str(statistics_only), "--resume", "--save_npz", str(tmp_path / "again.npz")]
    )
    assert again["rows"][0]["chunks_generated_this_run"] == 2
    with np.load(tmp_path / "again.npz") as stored:
        assert np.array_equal(stored["arr_0"], images)


def test_reference_npz_statistics_choose_between_stored_and_computed(standin, tmp_path):
    images = np.random.default_rng(1).integers(0, 256, (40, 16, 16, 3), dtype=np.uint8)
    features = standin(_as_model_input(images))[0]
    both = tmp_path / "both.npz"
    np.savez(both, mu=np.full(32, 7.0), sigma=np.eye(32), arr_0=images)
    auto = load_reference_npz(both, standin, 10, 8, [], [])  # ADM's rule: stored mu/sigma first
    assert auto.description["statistics_source"] == "mu_sigma" and np.all(auto.mean == 7.0)
    assert auto.precision_recall_features.shape == (10, 32)  # arr_0 still serves precision / recall
    notes, warnings_list = [], []
    computed = load_reference_npz(both, standin, 10, 8, notes, warnings_list, statistics="arr_0", image_size=(32, 32))
    np.testing.assert_allclose(computed.mean, features.mean(0), rtol=1e-10)
    np.testing.assert_allclose(computed.covariance, np.cov(features, rowvar=False), rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(computed.precision_recall_features, features[[4 * i for i in range(10)]], rtol=1e-5)
    assert computed.description["statistics_num_images"] == 40 and computed.description["arr_0_shape"] == [
        40,
        16,
        16,
        3,
    ]
    assert any("stored mu/sigma are ignored" in note for note in notes)
    assert any("arr_0 images are 16x16 but the samples are 32x32" in warning for warning in warnings_list)
    # Foreign mu/sigma against clean features of a real network: the mix of preprocessings is warned about; in
    # legacy_tensorflow mode it is the designed combination (a note).
    for mode, expected in (("clean", "mixes two preprocessings"), ("legacy_tensorflow", "designed to reproduce ADM")):
        real = GenerationFeatureExtractor(
            build_fid_feature_extractor("local-inception", network=standin.fid.network, inception_mode=mode)
        )
        notes, warnings_list = [], []
        load_reference_npz(both, real, 0, 8, notes, warnings_list)
        assert any(expected in message for message in notes + warnings_list), mode


def test_reference_npz_bad_inputs_name_the_file_and_the_fix(standin, tmp_path):
    def write(name, **arrays):
        np.savez(tmp_path / name, **arrays)
        return tmp_path / name

    images = np.zeros((4, 16, 16, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match=r"neither.npz has the arrays \['labels'\].*'mu'.*or 'arr_0'.*np.savez"):
        load_reference_npz(write("neither.npz", labels=np.arange(3)), standin, 0, 8, [], [])
    with pytest.raises(ValueError, match=r"float.npz: arr_0 must hold uint8 RGB images \(N, H, W, 3\).*got float32"):
        load_reference_npz(write("float.npz", arr_0=images.astype(np.float32)), standin, 0, 8, [], [])
    with pytest.raises(ValueError, match=r"gray.npz: arr_0 must hold uint8 RGB.*\(4, 16, 16\).*astype\(np.uint8\)"):
        load_reference_npz(write("gray.npz", arr_0=images[..., 0]), standin, 0, 8, [], [])
    with pytest.raises(ValueError, match="has mu but not sigma"):
        load_reference_npz(write("mu.npz", mu=np.zeros(32), arr_0=images), standin, 0, 8, [], [])
    with pytest.raises(ValueError, match=r"inception.npz holds 2048-d statistics.*gives 32-d features.*arr_0"):
        load_reference_npz(write("inception.npz", mu=np.zeros(2048), sigma=np.eye(2048)), standin, 0, 8, [], [])
    with pytest.raises(ValueError, match=r"'mu_sigma' but .*images.npz has no mu/sigma.*'auto' or 'arr_0'"):
        load_reference_npz(write("images.npz", arr_0=images), standin, 0, 8, [], [], statistics="mu_sigma")
    with pytest.raises(ValueError, match=r"'arr_0' but .*stats.npz has no arr_0"):
        load_reference_npz(
            write("stats.npz", mu=np.zeros(32), sigma=np.eye(32)), standin, 0, 8, [], [], statistics="arr_0"
        )
    with pytest.raises(ValueError, match=r"one.npz: arr_0 holds 1 image\(s\); reference statistics need at least 2"):
        load_reference_npz(write("one.npz", arr_0=images[:1]), standin, 0, 8, [], [])
    with pytest.raises(FileNotFoundError, match="missing.npz does not exist.*VIRTUAL_imagenet256_labeled.npz"):
        load_reference_npz(tmp_path / "missing.npz", standin, 0, 8, [], [])
    (tmp_path / "text.npz").write_text("not a zip")
    with pytest.raises(ValueError, match="text.npz is not a readable .npz"):
        load_reference_npz(tmp_path / "text.npz", standin, 0, 8, [], [])
    # A statistics file this package wrote records its network and mode; another mode is refused.
    ours = tmp_path / "ours.npz"
    statistics = FeatureStatistics(32).update(np.random.default_rng(2).normal(size=(40, 32)))
    save_reference_statistics(ours, statistics, {"source": "x", "feature_extractor": "random-inception-standin"})
    assert load_reference_npz(ours, standin, 0, 8, [], []).description["statistics_num_images"] == 40
    legacy = build_generation_feature_extractor("random-inception-standin", inception_mode="legacy_tensorflow")
    with pytest.raises(
        ValueError, match="inception_mode 'clean', but the samples are measured with .* in 'legacy_tens"
    ):
        load_reference_npz(ours, legacy, 0, 8, [], [])
    with pytest.raises(ValueError, match="reference_npz_statistics must be one of"):
        GenerationEvaluationConfig(reference_npz_statistics="stored")
    with pytest.raises(ValueError, match="save_npz='samples.npy' must name an .npz file"):
        GenerationEvaluationConfig(save_npz="samples.npy")


def test_inception_mode_is_passed_through_recorded_and_checked(tiny_pipeline_dir, statistics_cache, standin, tmp_path):
    seen = []

    def network(batch):
        seen.append(tuple(batch.shape))
        return batch.mean(dim=(2, 3))

    images = torch.rand(2, 3, 16, 16) * 2 - 1
    for mode, shape in (("clean", (2, 3, 299, 299)), ("legacy_tensorflow", (2, 3, 16, 16))):
        extractor = build_generation_feature_extractor("random-inception-standin", inception_mode=mode)
        assert extractor.describe()["inception_mode"] == mode and extractor.fid.inception_mode == mode
        assert extractor.fid.network.resize_inside is (mode == "legacy_tensorflow")
        build_fid_feature_extractor("local", network=network, inception_mode=mode)(images)
        assert seen[-1] == shape  # legacy_tensorflow: the network gets the images at their own size
    with pytest.raises(
        ValueError, match=r"Unknown inception_mode 'tensorflow'; choose 'clean' .* or 'legacy_tensorflow'"
    ):
        GenerationEvaluationConfig(inception_mode="tensorflow")
    with pytest.raises(ValueError, match="Unknown inception_mode 'legacy_pytorch'"):
        build_generation_feature_extractor("random-inception-standin", inception_mode="legacy_pytorch")
    # An injected extractor must preprocess as the config says (fails before any sample).
    with pytest.raises(
        ValueError, match="preprocesses in inception_mode 'clean', but the config asks for 'legacy_tensorflow'"
    ):
        evaluate_generation(
            _config(tiny_pipeline_dir, statistics_cache, inception_mode="legacy_tensorflow"),
            tmp_path / "out",
            feature_extractor=standin,
        )
    # The fingerprint (resume) tells the modes and guidance channels apart; at their defaults it is unchanged.
    config = GenerationEvaluationConfig()
    arguments = (
        config,
        1.0,
        {"transformer": {"fingerprint": "t"}, "vae": {"fingerprint": "v"}},
        {"shift": 1.0},
        "clean-fid-inception",
        (256, 256),
    )
    default = generation_fingerprint(*arguments)
    assert generation_fingerprint(*arguments, "clean") == default
    assert generation_fingerprint(*arguments, "legacy_tensorflow") != default
    assert generation_fingerprint(GenerationEvaluationConfig(guidance_channels=3), *arguments[1:]) != default


class _PipelineWithoutGuidanceChannels:
    transformer = type("Transformer", (), {"config": type("Config", (), {"in_channels": 4, "sample_size": 2})()})()

    def __call__(
        self,
        class_labels,
        guidance_scale=1.0,
        guidance_interval=(0.0, 1.0),
        num_inference_steps=50,
        latents=None,
        output_type="pil",
    ):
        raise AssertionError("not called in these tests")


class _PipelineWithGuidanceChannels(_PipelineWithoutGuidanceChannels):
    def __call__(
        self,
        class_labels,
        guidance_scale=1.0,
        guidance_interval=(0.0, 1.0),
        guidance_channels=None,
        num_inference_steps=50,
        latents=None,
        output_type="pil",
    ):
        raise AssertionError("not called in these tests")


class _RecordingPipeline(_PipelineWithoutGuidanceChannels):
    def __init__(self):
        self.calls = []

    def __call__(self, **kwargs):
        self.calls.append(kwargs)
        images = torch.rand(len(kwargs["class_labels"]), 3, 8, 8)
        return type("Output", (), {"images": images})()


def test_guidance_channels_is_passed_only_when_given_and_checked(
    tiny_pipeline_dir, statistics_cache, standin, tmp_path
):
    plan = make_sample_plan(0, 4, "random", NUM_CLASSES)
    recording = _RecordingPipeline()
    generate_chunk(recording, plan, 0, 4, 4, 2.0, (0.0, 1.0), 1, standin)
    generate_chunk(recording, plan, 0, 4, 4, 2.0, (0.0, 1.0), 1, standin, guidance_channels=3)
    assert "guidance_channels" not in recording.calls[0] and recording.calls[1]["guidance_channels"] == 3

    assert check_guidance_channels(_PipelineWithoutGuidanceChannels(), None) == "all"
    with pytest.raises(ValueError, match="guidance_channels=3 was given, but .* takes no guidance_channels argument"):
        check_guidance_channels(_PipelineWithoutGuidanceChannels(), 3)
    with pytest.raises(ValueError, match="takes no guidance_channels argument"):  # **kwargs is not enough
        check_guidance_channels(recording, 3)
    assert check_guidance_channels(_PipelineWithGuidanceChannels(), None) == "all"
    assert check_guidance_channels(_PipelineWithGuidanceChannels(), 3) == 3
    with pytest.raises(ValueError, match="guidance_channels=5 exceeds the transformer's 4 latent channels"):
        check_guidance_channels(_PipelineWithGuidanceChannels(), 5)
    with pytest.raises(ValueError, match="guidance_channels must be a positive integer .* got 0"):
        GenerationEvaluationConfig(guidance_channels=0)

    # Through the evaluation, with this package's pipeline (once its __call__ takes the argument).
    import inspect

    from diffusers_aligntok import AlignTokDiTPipeline

    if "guidance_channels" not in inspect.signature(AlignTokDiTPipeline.__call__).parameters:
        pytest.skip("AlignTokDiTPipeline.__call__ has no guidance_channels argument in this version")
    config = _config(
        tiny_pipeline_dir,
        statistics_cache,
        num_samples=10,
        guidance_scale=2.0,
        guidance_channels=3,
        precision_recall_reference_samples=0,
    )
    results = evaluate_generation(config, tmp_path / "channels")
    assert results["settings"]["guidance_channels"] == results["settings"]["guidance_channels_effective"] == 3
    assert "guidance channels 3" in (tmp_path / "channels" / "results.md").read_text()


def test_protocol_record_names_what_differs_from_the_adm_combination():
    from diffusers_aligntok.evaluation.metrics.fid import RandomInceptionStandIn

    real = GenerationFeatureExtractor(
        build_fid_feature_extractor(
            "local-inception", network=RandomInceptionStandIn(resize_inside=True), inception_mode="legacy_tensorflow"
        )
    )
    adm = Reference(
        np.zeros(2),
        np.eye(2),
        None,
        {"kind": "npz", "statistics_source": "mu_sigma", "file_name": "VIRTUAL_imagenet256_labeled.npz"},
    )
    config = GenerationEvaluationConfig(
        label_sampling="random", num_samples=50_000, inception_mode="legacy_tensorflow"
    )
    protocol = describe_protocol(config, real, adm)
    assert protocol["adm_comparable"] is True and protocol["unmet"] == []
    assert protocol["reference_file"] == "VIRTUAL_imagenet256_labeled.npz"
    assert "not been measured" in protocol["statement"]
    balanced = GenerationEvaluationConfig(num_samples=50_000, inception_mode="legacy_tensorflow")
    assert describe_protocol(balanced, real, adm)["unmet"] == ["label_sampling='random'"]
    computed = Reference(np.zeros(2), np.eye(2), None, {"kind": "npz", "statistics_source": "arr_0"})
    assert describe_protocol(config, real, computed)["unmet"][0].startswith("reference: the stored mu/sigma")


# ---------------------------------------------------------------------------------------------------------------------
# CFG sweep
# ---------------------------------------------------------------------------------------------------------------------


def test_cfg_sweep_reports_the_scale_with_the_lowest_gfid(tiny_pipeline_dir, statistics_cache, tmp_path):
    scales = [1.0, 1.5, 2.0]
    calls = []

    def fake_metrics(guidance_scale, scale_dir, plan, reference, **kwargs):
        calls.append(guidance_scale)
        chunks = list(iterate_chunks(scale_dir, plan, kwargs["samples_per_chunk"]))
        return {
            "gfid": 10.0 + (guidance_scale - 1.5) ** 2,
            "inception_score": {"mean": guidance_scale, "std": 0.0},
            "precision": None,
            "recall": None,
            "num_samples": sum(len(arrays["labels"]) for arrays in chunks),
        }

    config = _config(
        tiny_pipeline_dir, statistics_cache, num_samples=10, cfg_sweep=scales, precision_recall_reference_samples=0
    )
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
    rows = [
        {"guidance_scale": 1.0, "gfid": float("nan")},
        {"guidance_scale": 1.5, "gfid": 3.0},
        {"guidance_scale": 2.0, "gfid": None},
        {"guidance_scale": 2.5, "gfid": 2.0},
    ]
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
        evaluate_generation_script.parse_args(
            ["--pipeline", "p", "--output_dir", "o", "--guidance_scale", "2", "--cfg_sweep", "1,2"]
        )


def test_balanced_sampling_needs_a_multiple_of_the_class_count(tiny_pipeline_dir, statistics_cache, tmp_path):
    with pytest.raises(ValueError, match="25 samples over 10 classes leaves 5 over. Use 20 or 30 samples"):
        make_sample_plan(0, 25, "balanced", NUM_CLASSES)
    # Through the evaluation: the class count comes from the transformer's config.
    with pytest.raises(ValueError, match="Use 20 or 30 samples"):
        evaluate_generation(_config(tiny_pipeline_dir, statistics_cache, num_samples=25), tmp_path / "out")
    assert make_sample_plan(0, 25, "uniform", NUM_CLASSES).num_samples == 25


def test_num_classes_mismatch_names_both_sides(tiny_pipeline_dir, statistics_cache, tmp_path):
    with pytest.raises(
        ValueError, match="num_classes=1000 was requested but the pipeline's transformer has num_classes=10"
    ):
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
