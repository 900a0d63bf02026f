"""Text-to-image evaluation on tiny offline FluxPipelines: outputs and recorded knobs, true CFG and embedded guidance,
determinism (seed, batch size, processes), resume, the GenEval layout, the CLIP-score formula and bad inputs. The
random stand-ins replace Inception and CLIP, and are checked to be labelled as not-a-metric."""

import hashlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffusers_aligntok.data import save_shapes_image_folder
from diffusers_aligntok.evaluation.sweep import chunks_for_process
from diffusers_aligntok.evaluation.text_to_image import (
    CLIPScorer,
    TextToImageEvaluationConfig,
    build_clip_scorer,
    generate_samples,
    load_geneval_metadata,
    load_prompts,
    load_text_to_image_pipeline,
    make_text_to_image_plan,
    pipeline_call_settings,
    plan_chunks,
    save_random_clip_standin,
)


REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT / "training"))
import evaluate_t2i


HEIGHT, WIDTH = 32, 48  # non-square; the tiny f4 VAE with FLUX's 2x2 packing needs multiples of 8
LONG_PROMPT = "a " + "very " * 20 + "long caption"  # > 77 character-level CLIP tokens
PROMPTS = ["a red circle", "", "a blue square on grass", LONG_PROMPT]
GENEVAL = [
    {"tag": "single_object", "include": [{"class": "cat", "count": 1}], "prompt": "a photo of a cat"},
    {
        "tag": "two_object",
        "include": [{"class": "dog", "count": 1}, {"class": "cup", "count": 1}],
        "prompt": "a photo of a dog and a cup",
    },
]


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict[str, Path]:
    from diffusers import FluxPipeline

    from tests.testing_utils import (
        build_tiny_flux_transformer,
        tiny_flux_components,
    )

    root = tmp_path_factory.mktemp("t2i_assets")
    # Our text-to-image models: no guidance embedding, real CFG.
    components = tiny_flux_components()
    components["transformer"] = build_tiny_flux_transformer(
        components["vae"].config.latent_channels, guidance_embeds=False
    )
    FluxPipeline(**components).save_pretrained(root / "pipeline_cfg")
    # The stock tiny FLUX (guidance_embeds=True, like FLUX.1-dev).
    FluxPipeline(**tiny_flux_components(seed=1)).save_pretrained(root / "pipeline_guidance_embeds")
    save_random_clip_standin(root / "clip")
    save_shapes_image_folder(root / "reference", num_images=12, resolution=40, seed=1)
    save_shapes_image_folder(root / "small_reference", num_images=4, resolution=40, seed=2)
    (root / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    (root / "geneval.jsonl").write_text("".join(json.dumps(entry) + "\n" for entry in GENEVAL))
    return {
        "root": root,
        "pipeline": root / "pipeline_cfg",
        "pipeline_guidance_embeds": root / "pipeline_guidance_embeds",
        "clip": root / "clip",
        "reference": root / "reference",
        "small_reference": root / "small_reference",
        "prompts": root / "prompts.txt",
        "geneval": root / "geneval.jsonl",
        "cache": root / "fid_cache",
    }


def _argv(assets, output_dir, *extra: str) -> list[str]:
    return [
        "--pipeline",
        str(assets["pipeline"]),
        "--prompts",
        str(assets["prompts"]),
        "--output_dir",
        str(output_dir),
        "--height",
        str(HEIGHT),
        "--width",
        str(WIDTH),
        "--num_inference_steps",
        "2",
        "--max_sequence_length",
        "16",
        "--images_per_prompt",
        "2",
        "--batch_size",
        "3",
        "--samples_per_chunk",
        "4",
        "--num_workers",
        "0",
        "--reference_dir",
        str(assets["reference"]),
        "--feature_extractor",
        "random-inception-standin",
        "--fid_statistics_cache",
        str(assets["cache"]),
        "--clip_model",
        str(assets["clip"]),
        "--save_grid",
        "4",
        *extra,
    ]


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.int16)


@pytest.fixture(scope="module")
def evaluated(assets, tmp_path_factory):
    """One full run: true CFG 2.0, 3 prompts x 2 images plus GenEval's 2 prompts x 4 images."""
    output_dir = tmp_path_factory.mktemp("t2i_run") / "eval"
    with pytest.warns(UserWarning, match="stand-in"):
        results = evaluate_t2i.main(
            _argv(assets, output_dir, "--guidance_scale", "2.0", "--geneval_metadata", str(assets["geneval"]))
        )
    return results, output_dir


# ---------------------------------------------------------------------------------------------------------------------
# End to end
# ---------------------------------------------------------------------------------------------------------------------


def test_results_record_every_knob_and_label_the_standins(assets, evaluated):
    results, output_dir = evaluated
    stored = json.loads((output_dir / "results.json").read_text())
    assert stored["metrics"] == json.loads(json.dumps(results["metrics"]))
    settings = stored["settings"]
    assert (settings["height"], settings["width"], settings["num_inference_steps"], settings["seed"]) == (
        HEIGHT,
        WIDTH,
        2,
        0,
    )
    assert (
        settings["guidance_scale"] == 2.0
        and settings["images_per_prompt"] == 2
        and settings["dtype_effective"] == "float32"
    )
    assert settings["num_scored_samples"] == 6 and settings["num_samples"] == 6 + 2 * 4

    # The pipeline's VAE and transformer configs.
    pipeline = stored["pipeline"]
    assert pipeline["class"] == "FluxPipeline" and pipeline["vae"]["class"] == "AlignedAutoencoderKL"
    assert pipeline["vae"]["config"]["latent_channels"] == 8 and pipeline["vae_scale_factor"] == 4
    assert pipeline["transformer"]["config"]["guidance_embeds"] is False
    assert pipeline["transformer"]["config"]["in_channels"] == 32

    # Prompt file: hash, counts, truncation by each text encoder and by the CLIP-score model.
    prompts = stored["prompts"]
    assert prompts["sha256"] == hashlib.sha256(assets["prompts"].read_bytes()).hexdigest()
    assert (prompts["num_prompts"], prompts["num_empty_skipped"], prompts["format"]) == (3, 1, "txt")
    assert prompts["truncated"]["CLIP-score text encoder (77 tokens)"] == 1
    assert prompts["truncated"]["pipeline tokenizer (CLIPTokenizer, 77 tokens)"] == 1

    # Real CFG: true_cfg_scale with an empty negative prompt, no embedded guidance.
    row = stored["rows"][0]
    assert row["call_kwargs"]["true_cfg_scale"] == 2.0 and "guidance_scale" not in row["call_kwargs"]
    assert row["cfg_argument"] == "true_cfg_scale" and row["negative_prompt"] == ""
    assert row["samples_generated_this_run"] == 14 and row["samples_kept_from_earlier_run"] == 0

    # Metrics and their labels.
    metrics = stored["metrics"]
    assert np.isfinite(metrics["gfid"]) and metrics["gfid"] > 0
    assert 0 <= metrics["clip_score"] <= 100
    assert metrics["gfid_is_real_metric"] is False and metrics["clip_score_is_real_metric"] is False
    assert stored["feature_extractor"]["is_real_metric"] is False and stored["clip"]["is_real_metric"] is False
    assert stored["reference"]["num_images"] == 12 and stored["reference"]["resolution"] == [HEIGHT, WIDTH]
    assert stored["versions"]["diffusers"] and stored["versions"]["torch"]
    assert any("not FID" in warning for warning in stored["warnings"])
    assert any("not a CLIP score" in warning for warning in stored["warnings"])
    assert any("FID with 6 samples is biased upward; the protocol uses 6,000" in w for w in stored["warnings"])
    markdown = (output_dir / "results.md").read_text()
    assert "NOT FID" in markdown and "NOT CLIP" in markdown


def test_pngs_have_the_requested_non_square_size_and_an_index(evaluated):
    _, output_dir = evaluated
    samples = sorted((output_dir / "cfg-2" / "samples").glob("*.png"))
    assert [path.name for path in samples] == [f"{p:06d}-{k:03d}.png" for p in range(3) for k in range(2)]
    for path in samples:
        with Image.open(path) as image:
            assert image.size == (WIDTH, HEIGHT) and image.mode == "RGB"
    assert not list(output_dir.rglob(".*.incomplete"))
    index = [json.loads(line) for line in (output_dir / "prompts.jsonl").read_text().splitlines()]
    assert [entry["prompt"] for entry in index[:6:2]] == [PROMPTS[0], PROMPTS[2], PROMPTS[3]]
    assert len({entry["seed"] for entry in index}) == len(index)  # every sample has its own noise
    assert (output_dir / "cfg-2" / "samples_grid.png").is_file()


def test_geneval_export_has_geneval_layout(evaluated):
    _, output_dir = evaluated
    geneval_dir = output_dir / "cfg-2" / "geneval"
    assert sorted(path.name for path in geneval_dir.iterdir()) == ["00000", "00001"]
    for index, entry in enumerate(GENEVAL):
        folder = geneval_dir / f"{index:05d}"
        assert json.loads((folder / "metadata.jsonl").read_text()) == entry
        names = sorted(path.name for path in (folder / "samples").iterdir())
        assert names == [f"{k:05d}.png" for k in range(4)]
        with Image.open(folder / "samples" / "00000.png") as image:
            assert image.size == (WIDTH, HEIGHT)


# ---------------------------------------------------------------------------------------------------------------------
# Determinism and resume
# ---------------------------------------------------------------------------------------------------------------------


def test_same_seed_same_images_whatever_the_batch_size(assets, evaluated, tmp_path):
    _, first = evaluated
    results = evaluate_t2i.main(
        _argv(
            assets,
            tmp_path / "batch1",
            "--guidance_scale",
            "2.0",
            "--batch_size",
            "1",
            "--samples_per_chunk",
            "1",
            "--geneval_metadata",
            str(assets["geneval"]),
        )
    )
    for path in sorted((first / "cfg-2").rglob("*.png")):
        if path.name == "samples_grid.png":
            continue
        other = tmp_path / "batch1" / path.relative_to(first)
        # float32 matmuls may round differently with another batch size: at most one 8-bit level.
        assert np.abs(_pixels(path) - _pixels(other)).max() <= 1, path
    assert results["metrics"]["gfid"] == pytest.approx(evaluated[0]["metrics"]["gfid"], rel=1e-3)


def test_processes_generate_the_same_images_as_one_process(assets, tmp_path):
    config = TextToImageEvaluationConfig(
        pipeline=str(assets["pipeline"]),
        prompts=str(assets["prompts"]),
        height=HEIGHT,
        width=WIDTH,
        num_inference_steps=2,
        max_sequence_length=16,
    )
    pipeline = load_text_to_image_pipeline(assets["pipeline"])
    pipeline.set_progress_bar_config(disable=True)
    call = pipeline_call_settings(pipeline, config, 2.0)
    plan = make_text_to_image_plan(load_prompts(assets["prompts"]), 2, seed=0)
    chunks = plan_chunks(len(plan), 2)

    def run(directory, process_index, num_processes, batch_size):
        mine = [plan[i] for c in chunks_for_process(len(chunks), process_index, num_processes) for i in chunks[c]]
        generate_samples(pipeline, mine, directory, call, batch_size, resume=False, show_progress=False)

    run(tmp_path / "one", 0, 1, 4)
    run(tmp_path / "two", 1, 2, 2)  # the second "process" first: order must not matter
    run(tmp_path / "two", 0, 2, 2)
    for sample in plan:
        assert (
            np.abs(
                _pixels(tmp_path / "one" / sample.relative_path) - _pixels(tmp_path / "two" / sample.relative_path)
            ).max()
            <= 1
        )
    # Another seed gives other images.
    other = make_text_to_image_plan(load_prompts(assets["prompts"]), 1, seed=1)[:1]
    generate_samples(pipeline, other, tmp_path / "seed1", call, 1, resume=False, show_progress=False)
    assert (
        np.abs(
            _pixels(tmp_path / "seed1" / other[0].relative_path) - _pixels(tmp_path / "one" / plan[0].relative_path)
        ).max()
        > 10
    )


def test_noise_seeds_do_not_depend_on_counts(assets):
    prompts = load_prompts(assets["prompts"])
    two = {(s.prompt_index, s.image_index): s.seed for s in make_text_to_image_plan(prompts, 2, seed=0)}
    three = {(s.prompt_index, s.image_index): s.seed for s in make_text_to_image_plan(prompts, 3, seed=0)}
    first_prompt = {
        (s.prompt_index, s.image_index): s.seed
        for s in make_text_to_image_plan(load_prompts(assets["prompts"], max_prompts=1), 2, seed=0)
    }
    assert all(three[key] == seed for key, seed in two.items())
    assert all(two[key] == seed for key, seed in first_prompt.items())
    assert make_text_to_image_plan(prompts, 1, seed=1)[0].seed != make_text_to_image_plan(prompts, 1, seed=0)[0].seed


def test_resume_keeps_existing_images_and_refuses_other_settings(assets, evaluated, tmp_path):
    first_results, first = evaluated
    output_dir = tmp_path / "eval"
    shutil.copytree(first, output_dir)
    samples = output_dir / "cfg-2" / "samples"
    removed = [samples / "000001-000.png", output_dir / "cfg-2" / "geneval" / "00001" / "samples" / "00003.png"]
    for path in removed:
        path.unlink()
    kept = samples / "000000-000.png"
    before = kept.stat().st_mtime_ns

    results = evaluate_t2i.main(
        _argv(assets, output_dir, "--guidance_scale", "2.0", "--resume", "--geneval_metadata", str(assets["geneval"]))
    )
    row = results["rows"][0]
    assert (row["samples_generated_this_run"], row["samples_kept_from_earlier_run"]) == (2, 12)
    assert kept.stat().st_mtime_ns == before
    for path in removed:
        assert np.abs(_pixels(path) - _pixels(first / path.relative_to(output_dir))).max() <= 1
    assert results["metrics"]["gfid"] == pytest.approx(first_results["metrics"]["gfid"], rel=1e-6)
    assert results["metrics"]["clip_score"] == pytest.approx(first_results["metrics"]["clip_score"], rel=1e-6)

    with pytest.raises(ValueError, match="other settings"):
        evaluate_t2i.main(
            _argv(
                assets,
                output_dir,
                "--guidance_scale",
                "2.0",
                "--resume",
                "--seed",
                "5",
                "--geneval_metadata",
                str(assets["geneval"]),
            )
        )


# ---------------------------------------------------------------------------------------------------------------------
# Guidance modes, sweep, optional metrics
# ---------------------------------------------------------------------------------------------------------------------


def test_sweep_on_a_guidance_embedded_flux_with_a_small_reference(assets, tmp_path):
    argv = _argv(
        assets,
        tmp_path / "sweep",
        "--cfg_sweep",
        "1.0,2.0",
        "--embedded_guidance_scale",
        "5.0",
        "--reference_dir",
        str(assets["small_reference"]),
        "--pipeline",
        str(assets["pipeline_guidance_embeds"]),
    )  # argparse keeps the last --pipeline
    with pytest.warns(UserWarning, match="4 readable images for 6 samples"):
        results = evaluate_t2i.main(argv)
    rows = results["rows"]
    assert [row["guidance_scale"] for row in rows] == [1.0, 2.0]
    assert [row["call_kwargs"]["guidance_scale"] for row in rows] == [5.0, 5.0]  # the distilled guidance
    assert rows[0]["negative_prompt"] is None and rows[0]["cfg_argument"] is None
    assert rows[1]["negative_prompt"] == "" and rows[1]["call_kwargs"]["true_cfg_scale"] == 2.0
    assert sum(row["best"] for row in rows) == 1
    assert results["best_guidance_scale"] == min(rows, key=lambda row: row["gfid"])["guidance_scale"]
    assert results["settings"]["mode"] == "cfg_sweep"
    a, b = (tmp_path / "sweep" / f"cfg-{scale}" / "samples" / "000000-000.png" for scale in ("1", "2"))
    assert np.abs(_pixels(a) - _pixels(b)).max() > 0  # same noise, other guidance


def test_metrics_are_optional_and_geneval_alone_works(assets, tmp_path):
    results = evaluate_t2i.main(
        [
            "--pipeline",
            str(assets["pipeline"]),
            "--geneval_metadata",
            str(assets["geneval"]),
            "--geneval_images_per_prompt",
            "1",
            "--height",
            str(HEIGHT),
            "--width",
            str(WIDTH),
            "--num_inference_steps",
            "1",
            "--max_sequence_length",
            "16",
            "--output_dir",
            str(tmp_path / "geneval_only"),
        ]
    )
    assert (
        results["prompts"] is None and results["metrics"]["gfid"] is None and results["metrics"]["clip_score"] is None
    )
    assert results["geneval"]["num_prompts"] == 2 and results["geneval"]["scored"] is False
    assert len(list((tmp_path / "geneval_only" / "cfg-1" / "geneval").rglob("*.png"))) == 2

    results = evaluate_t2i.main(
        [
            "--pipeline",
            str(assets["pipeline"]),
            "--prompts",
            str(assets["prompts"]),
            "--clip_model",
            "none",
            "--height",
            str(HEIGHT),
            "--width",
            str(WIDTH),
            "--num_inference_steps",
            "1",
            "--max_sequence_length",
            "16",
            "--max_prompts",
            "1",
            "--output_dir",
            str(tmp_path / "no_metrics"),
        ]
    )
    assert results["metrics"]["gfid"] is None and results["clip"] is None
    assert any("gFID skipped" in note for note in results["notes"])
    assert any("CLIP score skipped" in note for note in results["notes"])


def test_call_settings_follow_the_pipeline_signature_and_config(assets):
    config = TextToImageEvaluationConfig(prompts="p.txt", embedded_guidance_scale=4.0)
    cfg_pipeline = load_text_to_image_pipeline(assets["pipeline"])
    with pytest.raises(ValueError, match="no guidance embedding"):
        pipeline_call_settings(cfg_pipeline, config, 3.0)
    embedded = load_text_to_image_pipeline(assets["pipeline_guidance_embeds"])
    default = pipeline_call_settings(embedded, TextToImageEvaluationConfig(prompts="p.txt"), 1.0)
    assert default.kwargs["guidance_scale"] == 3.5 and default.embedded_guidance_scale == 3.5  # FluxPipeline's default
    assert default.kwargs["true_cfg_scale"] == 1.0 and default.negative_prompt is None


def test_clip_score_is_100_times_the_clamped_cosine(assets):
    scorer = build_clip_scorer(str(assets["clip"]))
    assert isinstance(scorer, CLIPScorer) and scorer.is_real_metric is False and scorer.max_length == 77
    images = {
        "same": torch.tensor([1.0, 0.0]),
        "opposite": torch.tensor([-1.0, 0.0]),
        "diagonal": torch.tensor([0.6, 0.8]),
    }
    scorer.image_embeddings = lambda batch: torch.stack([images[name] for name in batch])
    scorer.text_embeddings = lambda prompts: torch.tensor([[1.0, 0.0]] * len(prompts))
    np.testing.assert_allclose(scorer(["same", "opposite", "diagonal"], ["x"] * 3), [100.0, 0.0, 60.0], atol=1e-5)
    assert build_clip_scorer("random-clip-standin").is_real_metric is False
    assert scorer.count_truncated(["short", LONG_PROMPT]) == 1


# ---------------------------------------------------------------------------------------------------------------------
# Prompt files
# ---------------------------------------------------------------------------------------------------------------------


def test_prompt_file_formats(tmp_path):
    (tmp_path / "p.jsonl").write_text('{"caption": " a cat "}\n\n{"caption": ""}\n{"caption": "a dog"}\n')
    prompts = load_prompts(tmp_path / "p.jsonl")
    assert prompts.prompts == ["a cat", "a dog"] and prompts.num_empty_skipped == 2 and prompts.field == "caption"
    (tmp_path / "p.json").write_text(json.dumps({"annotations": [{"image_id": 1, "caption": "a boat"}]}))
    assert load_prompts(tmp_path / "p.json").prompts == ["a boat"]
    (tmp_path / "p.csv").write_text('id,prompt\n1,a tree\n2,"a house,\nat night"\n')
    assert load_prompts(tmp_path / "p.csv").prompts == ["a tree", "a house,\nat night"]
    (tmp_path / "q.jsonl").write_text('{"text": "x", "sentence": "a bird"}\n')
    assert load_prompts(tmp_path / "q.jsonl", field="sentence").prompts == ["a bird"]
    assert load_prompts(tmp_path / "p.csv", max_prompts=1).prompts == ["a tree"]


@pytest.mark.parametrize(
    ("name", "content", "error", "match"),
    [
        ("missing.txt", None, FileNotFoundError, "does not exist"),
        ("empty.txt", "\n  \n\n", ValueError, "holds no prompts"),
        ("bad.jsonl", '{"caption": "a"}\nnot json\n', ValueError, "line 2: not valid JSON"),
        ("nofield.jsonl", '{"url": "x"}\n', ValueError, "--prompt_field"),
        ("prompts.yaml", "- a cat\n", ValueError, "unsupported prompt file type"),
        ("numbers.json", "[1, 2]", ValueError, "expected a prompt string"),
    ],
)
def test_bad_prompt_files_fail_clearly(tmp_path, name, content, error, match):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(error, match=match):
        load_prompts(path)


def test_geneval_metadata_must_be_jsonl_with_prompts(tmp_path):
    (tmp_path / "meta.jsonl").write_text('{"prompt": "a cat"}\n\n{"prompt": "a dog"}\n')
    with pytest.raises(ValueError, match="numbers its prompt folders by line"):
        load_geneval_metadata(tmp_path / "meta.jsonl")
    (tmp_path / "meta.txt").write_text("a cat\n")
    with pytest.raises(ValueError, match="evaluation_metadata.jsonl"):
        load_geneval_metadata(tmp_path / "meta.txt")


# ---------------------------------------------------------------------------------------------------------------------
# Bad input to the script
# ---------------------------------------------------------------------------------------------------------------------


def test_bad_inputs_fail_before_sampling(assets, tmp_path):
    empty_reference = tmp_path / "empty_reference"
    (empty_reference / "sub").mkdir(parents=True)
    (empty_reference / "notes.txt").write_text("no images here")
    with pytest.raises(ValueError, match="holds no images"):
        evaluate_t2i.main(_argv(assets, tmp_path / "a", "--reference_dir", str(empty_reference)))
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        evaluate_t2i.main(_argv(assets, tmp_path / "a", "--reference_dir", str(tmp_path / "nowhere")))
    with pytest.raises(ValueError, match=r"38x48 is not a multiple of 8 .* Use e.g. 40x48"):
        evaluate_t2i.main(_argv(assets, tmp_path / "a", "--height", "38"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        evaluate_t2i.main(_argv(assets, tmp_path / "a", "--prompts", str(tmp_path / "missing.txt")))
    with pytest.raises(ValueError, match="no model_index.json"):
        evaluate_t2i.main(_argv(assets, tmp_path / "a", "--pipeline", str(assets["clip"])))
    with pytest.raises(ValueError, match="Guidance scales must be finite and >= 1"):
        evaluate_t2i.main(_argv(assets, tmp_path / "a", "--guidance_scale", "0.5"))
    with pytest.raises(SystemExit):
        evaluate_t2i.main(["--pipeline", str(assets["pipeline"]), "--output_dir", str(tmp_path / "a")])
    assert not (tmp_path / "a" / "cfg-1").exists()  # nothing was sampled
