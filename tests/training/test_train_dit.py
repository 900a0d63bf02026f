"""Latent caching and `training/train_dit.py` on tiny models: round trip, resume, tokenizer checks, saved pipeline."""

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from diffusers_aligntok import AlignedAutoencoderKL
from diffusers_aligntok.data import ImageDatasetConfig, build_image_dataset
from diffusers_aligntok.training.dit import cli as train_dit
from diffusers_aligntok.training.dit import latent_cache as cache_latents
from diffusers_aligntok.training.dit.latent_cache import CachedLatentDataset

from .rank_equivalence import assert_fingerprints_match_one_process, launch_two_cpu_ranks


REPO_ROOT = Path(__file__).resolve().parents[2]


NUM_IMAGES = 48


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tokenizer")
    torch.manual_seed(0)
    AlignedAutoencoderKL.from_preset("tiny").save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory, tokenizer_dir) -> Path:
    path = tmp_path_factory.mktemp("cache")
    cache_latents.main(
        [
            "--tokenizer",
            str(tokenizer_dir),
            "--data",
            "builtin:shapes",
            "--resolution",
            "32",
            "--num_builtin_samples",
            str(NUM_IMAGES),
            "--shard_size",
            "20",
            "--batch_size",
            "16",
            "--output_dir",
            str(path),
        ]
    )
    return path


def _dit_config(tmp_path: Path, cache_dir: Path, tokenizer_dir: Path | None, name="dit.yaml", **training) -> Path:
    raw = yaml.safe_load((REPO_ROOT / "training" / "configs" / "dit_tiny_cpu.yaml").read_text())
    raw["data"]["cache_dir"] = str(cache_dir)
    raw["validation"].update(
        {"tokenizer": str(tokenizer_dir) if tokenizer_dir else None, "num_inference_steps": 2, "class_labels": [0, 1]}
    )
    raw["training"].update(
        {
            "train_batch_size": 8,
            "max_train_steps": 4,
            "checkpointing_steps": 2,
            "validation_steps": 100,
            "log_every_steps": 1,
            "report_to": "none",
            **training,
        }
    )
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    return path


def test_cache_round_trip_matches_the_tokenizer(cache_dir, tokenizer_dir):
    metadata = json.loads((cache_dir / "metadata.json").read_text())
    assert metadata["num_samples"] == NUM_IMAGES and metadata["latent_shape"] == [8, 8, 8]
    assert metadata["flipped"] and metadata["num_classes"] == 10
    assert metadata["latent_statistics"]["source"] == "measured over this cache"
    tokenizer = AlignedAutoencoderKL.from_pretrained(tokenizer_dir).eval()
    images = build_image_dataset(
        ImageDatasetConfig(source="builtin:shapes", resolution=32, num_builtin_samples=NUM_IMAGES, random_flip=False)
    )
    shard = load_file(str(cache_dir / "shard-00001.safetensors"))  # items 20..39
    batch = torch.stack([images[i]["pixel_values"] for i in (20, 21)])
    with torch.no_grad():
        torch.testing.assert_close(shard["latents"][:2], tokenizer.encode(batch).latent_dist.mode())
        torch.testing.assert_close(shard["latents_flipped"][:2], tokenizer.encode(batch.flip(-1)).latent_dist.mode())
    assert shard["labels"][:2].tolist() == [images[20]["label"], images[21]["label"]]
    # Normalised with the recorded statistics: about zero mean and unit std per channel.
    dataset = CachedLatentDataset(cache_dir, random_flip=False)
    latents = torch.stack([dataset[i]["latents"] for i in range(NUM_IMAGES)])
    assert latents.mean(dim=(0, 2, 3)).abs().max() < 1e-3
    torch.testing.assert_close(latents.std(dim=(0, 2, 3)), torch.ones(8), atol=2e-2, rtol=0)


def test_killed_cache_run_writes_only_missing_shards(cache_dir, tokenizer_dir, tmp_path):
    import shutil

    copy = tmp_path / "cache"
    shutil.copytree(cache_dir, copy)
    (copy / "shard-00002.safetensors").unlink()
    kept = (copy / "shard-00000.safetensors").stat().st_mtime_ns
    with pytest.raises(FileNotFoundError, match="shards \\[2\\] are missing"):
        CachedLatentDataset(copy)
    cache_latents.main(
        [
            "--tokenizer",
            str(tokenizer_dir),
            "--data",
            "builtin:shapes",
            "--resolution",
            "32",
            "--num_builtin_samples",
            str(NUM_IMAGES),
            "--shard_size",
            "20",
            "--batch_size",
            "16",
            "--output_dir",
            str(copy),
            "--dataloader_num_workers",
            "0",  # the fixture loaded with worker processes: either way the same latents
        ]
    )
    assert (copy / "shard-00000.safetensors").stat().st_mtime_ns == kept
    rewritten, original = (load_file(str(d / "shard-00002.safetensors")) for d in (copy, cache_dir))
    assert set(rewritten) == {"latents", "latents_flipped", "labels"}
    for key in rewritten:
        assert torch.equal(rewritten[key], original[key]), key


def test_train_dit_saves_pipeline_and_resumes_exactly(cache_dir, tokenizer_dir, tmp_path):
    from diffusers import DiffusionPipeline

    from diffusers_aligntok import LightningDiTTransformer2DModel

    straight = tmp_path / "straight"
    metrics = train_dit.main(
        ["--config", str(_dit_config(tmp_path, cache_dir, tokenizer_dir)), "--output_dir", str(straight)]
    )
    assert metrics["global_step"] == 4 and len(metrics["loss_curve"]) == 4
    pipeline = DiffusionPipeline.from_pretrained(straight / "pipeline")
    images = pipeline(
        class_labels=[3], num_inference_steps=2, output_type="pt", generator=torch.Generator().manual_seed(0)
    ).images
    assert images.shape == (1, 3, 32, 32)
    assert (straight / "samples.png").is_file()

    resumed = tmp_path / "resumed"
    # Without a validation tokenizer: the transformer's initialisation must not depend on it.
    short = _dit_config(tmp_path, cache_dir, None, name="short.yaml", max_train_steps=2)
    train_dit.main(["--config", str(short), "--output_dir", str(resumed)])
    train_dit.main(
        [
            "--config",
            str(_dit_config(tmp_path, cache_dir, None, name="full.yaml")),
            "--output_dir",
            str(resumed),
            "--resume_from_checkpoint",
            "latest",
        ]
    )
    expected = LightningDiTTransformer2DModel.from_pretrained(straight / "transformer").state_dict()
    actual = LightningDiTTransformer2DModel.from_pretrained(resumed / "transformer").state_dict()
    for name, tensor in expected.items():
        torch.testing.assert_close(actual[name], tensor, rtol=0, atol=1e-6, msg=name)


def test_cache_from_another_tokenizer_is_refused_naming_both(cache_dir, tmp_path):
    other = tmp_path / "other_tokenizer"
    torch.manual_seed(1)
    AlignedAutoencoderKL.from_preset("tiny").save_pretrained(other)
    with pytest.raises(ValueError, match="other_tokenizer") as error:
        train_dit.main(
            ["--config", str(_dit_config(tmp_path, cache_dir, other)), "--output_dir", str(tmp_path / "out")]
        )
    assert "was built with tokenizer" in str(error.value)


def _max_difference(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> float:
    assert first.keys() == second.keys()
    return max(float((first[name] - second[name]).abs().max()) for name in first)


def test_two_ranks_train_exactly_what_one_process_trains_on_the_global_batch(cache_dir, tmp_path):
    """2 DDP CPU ranks at per-rank batch 8 against one process at batch 16 on the same samples (fp32, 4 steps).

    The data line up (rank r holds positions [8r, 8r + 8) of each global batch of 16; 48 items = 3 whole global
    batches an epoch, so step 4 crosses an epoch) and the noise, sigmas and label dropout are global-batch draws, so
    both runs compute the same gradient at every step. The EMA transformers and the last checkpoint's raw weights must
    agree to float32 rounding, every checkpoint must record two identical rank fingerprints, and a run that trains on
    other samples (one process at batch 8) must not pass the same comparison.
    """
    from diffusers_aligntok import LightningDiTTransformer2DModel
    from diffusers_aligntok.training.checkpointing import list_checkpoints

    def config(name: str, batch_size: int) -> Path:
        return _dit_config(
            tmp_path, cache_dir, None, name=name, train_batch_size=batch_size, checkpoints_total_limit=None
        )

    launch_two_cpu_ranks(
        "train_dit.py", ["--config", str(config("two.yaml", 8)), "--output_dir", str(tmp_path / "two")], 29523
    )
    train_dit.main(["--config", str(config("one.yaml", 16)), "--output_dir", str(tmp_path / "one")])
    train_dit.main(["--config", str(config("half.yaml", 8)), "--output_dir", str(tmp_path / "half")])

    metrics = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert metrics["num_processes"] == 2 and metrics["global_step"] == 4
    exported = {
        run: LightningDiTTransformer2DModel.from_pretrained(tmp_path / run / "transformer").state_dict()
        for run in ("two", "one", "half")
    }
    raw = {
        run: load_file(str(tmp_path / run / "checkpoints" / "checkpoint-4" / "model.safetensors"))
        for run in ("two", "one")
    }
    # Measured: 6e-8 (EMA), 3e-8 (raw): float32 rounding of the gradient all-reduce and of 8- against 16-sample matmuls.
    for name, tensor in exported["one"].items():
        torch.testing.assert_close(exported["two"][name], tensor, rtol=0, atol=1e-5, msg=f"EMA {name}")
    for name, tensor in raw["one"].items():
        torch.testing.assert_close(raw["two"][name], tensor, rtol=0, atol=1e-5, msg=f"checkpoint-4 {name}")
    # The control: other samples (and noise) give weights far outside the tolerance (measured: 5e-3; 6e-3 with the
    # pre-fix per-rank draws).
    assert _max_difference(exported["half"], exported["one"]) > 1e-3

    checkpoints = list_checkpoints(tmp_path / "two" / "checkpoints")
    assert [checkpoint.name for checkpoint in checkpoints] == ["checkpoint-2", "checkpoint-4"]
    assert_fingerprints_match_one_process(
        tmp_path / "two" / "checkpoints", tmp_path / "one" / "checkpoints", "transformer"
    )


# ---------------------------------------------------------------------------------------------------------------
# LightningDiT's sampling settings and 800-epoch schedule in the reproduction configs, through the loop
# ---------------------------------------------------------------------------------------------------------------


def lightningdit_sigma_grid(num_sampling_steps: int, timestep_shift: float) -> torch.Tensor:
    """1 - t of LightningDiT's Euler ODE grid: transport/integrators.py, `ode.__init__` (t0 = 0, t1 = 1)."""
    t = torch.linspace(0, 1, num_sampling_steps)
    t = torch.tensor([timestep_shift * t_n / (1 + (timestep_shift - 1) * t_n) for t_n in t])
    return 1 - t


# LightningDiT's configs/reproductions/lightningdit_xl_vavae_f16d32_{64,800}ep_cfg.yaml, `sample:` section.
LIGHTNINGDIT_SAMPLE = {
    "64ep": {"num_sampling_steps": 250, "cfg_scale": 10.0, "cfg_interval_start": 0.10, "timestep_shift": 0.3},
    "800ep": {"num_sampling_steps": 250, "cfg_scale": 6.7, "cfg_interval_start": 0.125, "timestep_shift": 0.3},
}


@pytest.mark.parametrize("run", ["64ep", "800ep"])
def test_reproduction_configs_sample_as_lightningdit_and_the_saved_pipeline_gets_its_shift(run, tmp_path):
    from diffusers_aligntok import LightningDiTTransformer2DModel
    from diffusers_aligntok.training import dit_loop
    from diffusers_aligntok.training.dit_config import load_dit_config

    config = load_dit_config(REPO_ROOT / "training" / "configs" / f"dit_xl_imagenet_{run}.yaml")
    reference, validation = LIGHTNINGDIT_SAMPLE[run], config.validation
    assert validation.num_inference_steps == reference["num_sampling_steps"] - 1  # N grid points = N - 1 steps
    assert validation.guidance_scale == reference["cfg_scale"]
    assert validation.guidance_interval == [0.0, 1.0 - reference["cfg_interval_start"]]
    assert validation.guidance_channels == 3  # forward_with_cfg's published setting; the pipeline default is all
    assert abs(validation.sampling_shift - 1 / reference["timestep_shift"]) < 1e-12
    assert config.flow.logit_normal_until_step == (600_000 if run == "800ep" else None)

    torch.manual_seed(0)
    transformer = LightningDiTTransformer2DModel.from_preset("tiny", in_channels=8, sample_size=8, num_classes=1000)
    pipeline = dit_loop._pipeline(transformer, AlignedAutoencoderKL.from_preset("tiny").eval(), config)
    pipeline.set_progress_bar_config(disable=True)
    assert abs(pipeline.scheduler.config.shift - 1 / reference["timestep_shift"]) < 1e-12
    pipeline.save_pretrained(tmp_path / "pipeline")
    from diffusers import DiffusionPipeline

    assert DiffusionPipeline.from_pretrained(tmp_path / "pipeline").scheduler.config.shift == validation.sampling_shift
    # The validation grid (every validation setting, guidance_channels included) steps through LightningDiT's grid.
    dit_loop._save_sample_grid(pipeline, config, tmp_path / "grid.png")
    expected = lightningdit_sigma_grid(reference["num_sampling_steps"], reference["timestep_shift"])
    assert float((pipeline.scheduler.sigmas - expected).abs().max()) < 1e-6  # measured: 1.5e-7
    assert (tmp_path / "grid.png").is_file()


def test_the_loop_switches_the_sigma_density_at_logit_normal_until_step(cache_dir, tmp_path, monkeypatch):
    from diffusers_aligntok.training import dit_loop
    from diffusers_aligntok.training.flow_matching import timestep_sampling_at

    seen = []
    original = dit_loop.flow_matching_loss

    def recording_loss(model, latents, labels, flow, global_batch, global_step):
        seen.append((global_step, timestep_sampling_at(flow, global_step)))
        return original(model, latents, labels, flow, global_batch, global_step)

    monkeypatch.setattr(dit_loop, "flow_matching_loss", recording_loss)
    path = _dit_config(tmp_path, cache_dir, None)
    raw = yaml.safe_load(path.read_text())
    raw["flow"]["logit_normal_until_step"] = 2
    path.write_text(yaml.safe_dump(raw))
    train_dit.main(["--config", str(path), "--output_dir", str(tmp_path / "run")])
    assert seen == [(0, "logit_normal"), (1, "logit_normal"), (2, "uniform"), (3, "uniform")]


def test_guidance_channels_beyond_the_cache_are_refused_before_training(cache_dir, tmp_path):
    path = _dit_config(tmp_path, cache_dir, None)
    raw = yaml.safe_load(path.read_text())
    raw["validation"]["guidance_channels"] = 9
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ValueError, match=r"guidance_channels=9 but the latent cache has 8 channels"):
        train_dit.main(["--config", str(path), "--output_dir", str(tmp_path / "run")])
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_habitual_flags_validation_images_in_tensorboard_and_push_of_the_pipeline(
    cache_dir, tokenizer_dir, tmp_path, fake_push_to_hub
):
    from diffusers_aligntok.training.checkpointing import list_checkpoints

    from .trackers import tensorboard_images

    output_dir = tmp_path / "run"
    train_dit.main(
        [
            "--config",
            str(_dit_config(tmp_path, cache_dir, tokenizer_dir)),
            "--output_dir",
            str(output_dir),
            "--report_to",
            "tensorboard",
            "--validation_steps",
            "1",
            "--seed",
            "3",
            "--checkpointing_steps",
            "1",
            "--checkpoints_total_limit",
            "1",
            "--mixed_precision",
            "no",
            "--set",
            "training.max_train_steps=2",
            "--set",
            "validation.num_inference_steps=1",
            "--push_to_hub",
            "--hub_model_id",
            "me/dit-tiny",
        ]
    )
    recorded = json.loads((output_dir / "training_config.json").read_text())
    assert recorded["training"]["seed"] == 3 and recorded["validation"]["num_inference_steps"] == 1
    assert recorded["run"]["mixed_precision_source"].startswith("command line")
    assert json.loads((output_dir / "metrics.json").read_text())["mixed_precision"] == "no"
    assert [p.name for p in list_checkpoints(output_dir / "checkpoints")] == ["checkpoint-2"]
    # One row of the 2 validation classes at 32x32, at both steps.
    grid_size = (2 * (32 + 2) + 2, 32 + 4)
    assert tensorboard_images(output_dir / "logs" / "aligntok_dit") == {
        "validation/samples": [(1, *grid_size), (2, *grid_size)]
    }
    assert [(call["model_dir"], call["repo_id"], call["private"]) for call in fake_push_to_hub] == [
        (output_dir / "pipeline", "me/dit-tiny", False)
    ]
    assert "model_index.json" in fake_push_to_hub[0]["files"]


def test_without_a_pipeline_the_transformer_is_pushed(cache_dir, tmp_path, monkeypatch, fake_push_to_hub):
    def fake_training(config, output_dir, resume_from_checkpoint, run_record):
        (Path(output_dir) / "transformer").mkdir(parents=True)
        (Path(output_dir) / "transformer" / "config.json").write_text("{}")
        return {}

    monkeypatch.setattr(train_dit, "run_dit_training", fake_training)
    train_dit.main(
        [
            "--config",
            str(_dit_config(tmp_path, cache_dir, None)),
            "--output_dir",
            str(tmp_path / "run"),
            "--push_to_hub",
            "--hub_model_id",
            "me/dit-tiny",
        ]
    )
    assert [call["model_dir"] for call in fake_push_to_hub] == [tmp_path / "run" / "transformer"]
