"""`training/train_t2i.py` on tiny models: both VAE arms, exact resume, caching, FluxPipeline loading, bad input."""

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from diffusers import (
    AutoencoderKL,
    DiffusionPipeline,
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
)
from PIL import Image

import diffusers_aligntok
from diffusers_aligntok import AlignedAutoencoderKL, AlignTokFluxPipeline
from diffusers_aligntok.data import TextImageDatasetConfig, build_text_image_dataset, make_buckets
from diffusers_aligntok.training.config import ConfigError
from diffusers_aligntok.training.t2i import cli as train_t2i
from diffusers_aligntok.training.t2i_cache import CachedTextImageDataset
from diffusers_aligntok.training.t2i_components import FluxTextEncoders
from diffusers_aligntok.training.t2i_config import T2IFlowConfig, load_t2i_config
from diffusers_aligntok.training.t2i_loop import sample_flux_sigmas
from tests.testing_utils import (
    build_tiny_clip_text_encoder,
    build_tiny_clip_tokenizer,
    build_tiny_t5_encoder,
    build_tiny_t5_tokenizer,
)

from .rank_equivalence import assert_fingerprints_match_one_process, launch_two_cpu_ranks


REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    """Tiny VAEs for both arms and tiny FLUX-layout text encoders, saved like real checkpoints."""
    root = tmp_path_factory.mktemp("t2i_models")
    torch.manual_seed(0)
    # The AlignTok arm: f4, 8 latent channels (so 4 pixels per token = patch 1, 8 = patch 2).
    AlignedAutoencoderKL.from_preset("tiny", scaling_factor=2.0, shift_factor=0.05).save_pretrained(root / "aligntok")
    # The FLUX VAE arm in miniature: a diffusers AutoencoderKL at half the downsampling (f2) with 4 channels, as the
    # FLUX VAE (f8) is to AlignTok (f16); 4 pixels per token = patch 2.
    AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(16, 32),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=32,
        scaling_factor=0.5,
        shift_factor=0.1,
        use_quant_conv=False,
        use_post_quant_conv=False,
    ).save_pretrained(root / "flux_vae")
    # FLUX's text-encoder layout (tokenizer/, text_encoder/, tokenizer_2/, text_encoder_2/), loaded by path.
    build_tiny_clip_tokenizer().save_pretrained(root / "text" / "tokenizer")
    build_tiny_clip_text_encoder().save_pretrained(root / "text" / "text_encoder")
    build_tiny_t5_tokenizer().save_pretrained(root / "text" / "tokenizer_2")
    build_tiny_t5_encoder().save_pretrained(root / "text" / "text_encoder_2")
    return root


def _config(tmp_path: Path, models_dir: Path, vae: str = "aligntok", name: str = "t2i.yaml", **sections) -> Path:
    raw = yaml.safe_load((REPO_ROOT / "training" / "configs" / "t2i_tiny_cpu.yaml").read_text())
    raw["model"].update({"vae": str(models_dir / vae), "text_encoders": str(models_dir / "text")})
    raw["data"]["num_builtin_samples"] = 48
    raw["training"].update(
        {
            "max_train_steps": 2,
            "checkpointing_steps": 1,
            "validation_steps": 100,
            "log_every_steps": 1,
            "report_to": "none",
        }
    )
    raw["validation"].update({"num_inference_steps": 2, "prompts": ["a red circle"]})
    for section, values in sections.items():
        raw[section].update(values)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    return path


def _train(config: Path, output_dir: Path, *extra: str) -> dict:
    return train_t2i.main(["--config", str(config), "--output_dir", str(output_dir), *extra])


def _weights(directory: Path) -> dict[str, torch.Tensor]:
    return FluxTransformer2DModel.from_pretrained(directory).state_dict()


@pytest.mark.parametrize(
    "vae, pixels_per_token, patch, pipeline_class",
    [("aligntok", 4, 1, AlignTokFluxPipeline), ("aligntok", 8, 2, FluxPipeline), ("flux_vae", 4, 2, FluxPipeline)],
    ids=["aligntok-patch1", "aligntok-patch2", "flux-vae-arm"],
)
def test_each_arm_trains_and_its_pipeline_generates_non_square_images(
    tmp_path, models_dir, vae, pixels_per_token, patch, pipeline_class
):
    config = _config(
        tmp_path,
        models_dir,
        vae,
        model={"pixels_per_token": pixels_per_token},
        data={"resolution": 32 if patch == 1 or vae == "flux_vae" else 64},
    )
    metrics = _train(config, tmp_path / "run")
    assert metrics["global_step"] == 2 and metrics["latent_patch_size"] == patch
    assert all(torch.isfinite(torch.tensor(row["loss/total"])) for row in metrics["loss_curve"])
    latent_channels = 8 if vae == "aligntok" else 4
    transformer = FluxTransformer2DModel.from_pretrained(tmp_path / "run" / "transformer")
    assert transformer.config.in_channels == latent_channels * patch**2
    assert transformer.config.joint_attention_dim == 32 and not transformer.config.guidance_embeds
    assert (tmp_path / "run" / "validation" / "step-0000002.png").is_file()

    pipeline = DiffusionPipeline.from_pretrained(tmp_path / "run" / "pipeline")
    assert type(pipeline) is pipeline_class and isinstance(pipeline, FluxPipeline)
    assert type(pipeline.vae) is (AlignedAutoencoderKL if vae == "aligntok" else AutoencoderKL)
    step = (4 if vae == "aligntok" else 2) * patch
    height, width = 3 * step, 5 * step  # non-square, a whole number of tokens
    image = pipeline(
        "a blue star",
        height=height,
        width=width,
        num_inference_steps=2,
        max_sequence_length=64,
        true_cfg_scale=2.0,
        negative_prompt="",
        generator=torch.Generator().manual_seed(0),
    ).images[0]
    assert image.size == (width, height)


def test_stock_flux_pipeline_loads_the_aligntok_arm(tmp_path, models_dir):
    """With patch-2 packing, diffusers' own FluxPipeline.from_pretrained runs the AlignTok arm unmodified."""
    _train(_config(tmp_path, models_dir, model={"pixels_per_token": 8}, data={"resolution": 64}), tmp_path / "run")
    pipeline = FluxPipeline.from_pretrained(tmp_path / "run" / "pipeline")
    assert isinstance(pipeline.vae, AlignedAutoencoderKL)
    images = pipeline(
        ["a red circle"], height=48, width=80, num_inference_steps=2, max_sequence_length=64, output_type="pt"
    ).images
    assert images.shape == (1, 3, 48, 80) and torch.isfinite(images).all()


def test_resume_reproduces_the_uninterrupted_run(tmp_path, models_dir):
    config = _config(
        tmp_path,
        models_dir,
        training={"max_train_steps": 4, "checkpointing_steps": 2, "checkpoints_total_limit": 3},
        data={"caption_dropout_prob": 0.5},
    )
    _train(config, tmp_path / "full")
    reference = _weights(tmp_path / "full" / "transformer")
    # A run killed after step 2: only checkpoint-2 survives, plus a half-written checkpoint the resume must ignore.
    shutil.copytree(
        tmp_path / "full" / "checkpoints" / "checkpoint-2", tmp_path / "killed" / "checkpoints" / "checkpoint-2"
    )
    (tmp_path / "killed" / "checkpoints" / "checkpoint-4.incomplete").mkdir()
    metrics = _train(config, tmp_path / "killed", "--resume_from_checkpoint", "latest")
    assert metrics["global_step"] == 4 and [row["step"] for row in metrics["loss_curve"]] == [3, 4]
    resumed = _weights(tmp_path / "killed" / "transformer")
    for name, tensor in reference.items():
        torch.testing.assert_close(resumed[name], tensor, rtol=0, atol=1e-6, msg=name)
    # A run with another VAE must not continue this checkpoint.
    other = _config(tmp_path, models_dir, "flux_vae", name="other.yaml", training={"max_train_steps": 4})
    with pytest.raises(ValueError, match="Cannot resume"):
        _train(other, tmp_path / "killed", "--resume_from_checkpoint", "latest")


def test_cache_holds_what_live_encoding_computes_and_trains_the_same(tmp_path, models_dir):
    cache_dir = tmp_path / "cache"
    cached_run = _train(_config(tmp_path, models_dir, data={"cache_dir": str(cache_dir)}), tmp_path / "cached")
    live_run = _train(_config(tmp_path, models_dir, name="live.yaml"), tmp_path / "live")
    # Same data order, noise and dropout: the first step's loss agrees (later steps drift by float rounding only,
    # since the cache encodes bucket-grouped batches; Adam amplifies 1e-7 differences in near-zero gradients).
    assert cached_run["loss_curve"][0]["loss/total"] == pytest.approx(
        live_run["loss_curve"][0]["loss/total"], abs=1e-5
    )
    cache = CachedTextImageDataset(cache_dir)
    dataset = build_text_image_dataset(
        TextImageDatasetConfig(num_builtin_samples=48), make_buckets(32, ["1:1", "3:4", "4:3"], 4)
    )
    vae = AlignedAutoencoderKL.from_pretrained(models_dir / "aligntok").eval()
    text_encoders = FluxTextEncoders(str(models_dir / "text"), max_sequence_length=64)
    for index in (0, 13, 40):  # one item per bucket
        item, cached = dataset[index], cache[index]
        with torch.no_grad():
            latents = vae.encode(item["pixel_values"][None]).latent_dist.mean[0]
        prompt_embeds, pooled = text_encoders.encode([item["caption"]])
        torch.testing.assert_close(cached["latent_mean"], latents, rtol=0, atol=1e-5)
        torch.testing.assert_close(cached["prompt_embeds"], prompt_embeds[0], rtol=0, atol=1e-6)
        torch.testing.assert_close(cached["pooled_prompt_embeds"], pooled[0], rtol=0, atol=1e-6)
        assert "latent_std" not in cached  # AlignTok latents are deterministic
    metadata = json.loads((cache_dir / "metadata.json").read_text())
    assert metadata["complete"] and len(metadata["bucket_of"]) == 48 and metadata["truncated_captions"]["t5"] == 0
    shard = cache_dir / "shard-00000.safetensors"
    written = shard.stat().st_mtime_ns
    _train(_config(tmp_path, models_dir, data={"cache_dir": str(cache_dir)}, name="again.yaml"), tmp_path / "again")
    assert shard.stat().st_mtime_ns == written  # a complete cache is reused, not rebuilt
    with pytest.raises(ValueError, match="was built for other inputs"):
        _train(
            _config(tmp_path, models_dir, "flux_vae", data={"cache_dir": str(cache_dir)}, name="other.yaml"),
            tmp_path / "other",
        )


def test_long_captions_are_truncated_and_counted(tmp_path, models_dir):
    # The tiny T5 tokenizer is character-level, so 16 tokens cut every built-in caption.
    metrics = _train(_config(tmp_path, models_dir, model={"max_sequence_length": 16}), tmp_path / "run")
    assert metrics["counters_this_run"]["truncated_t5"] == 2 * 4  # 2 steps of 4 captions
    assert metrics["counters_this_run"]["truncated_clip"] == 0


def test_caption_folder_skips_and_counts_empty_captions_and_small_images(tmp_path, models_dir):
    data = tmp_path / "pairs"
    data.mkdir()
    for index in range(12):
        size = (16, 16) if index == 0 else (48, 40)  # 16x16 is smaller than every 32-pixel bucket
        Image.new("RGB", size, (20 * index, 100, 50)).save(data / f"{index:02d}.png")
        (data / f"{index:02d}.txt").write_text("" if index == 1 else f"a picture number {index}")
    metrics = _train(
        _config(tmp_path, models_dir, data={"source": str(data)}, training={"train_batch_size": 2}), tmp_path / "run"
    )
    assert metrics["skipped_at_scan"] == {"empty_caption": 1, "too_small": 1, "unreadable": 0, "total": 12}


def test_transformer_that_does_not_fit_the_vae_fails_before_training(tmp_path, models_dir):
    FluxTransformer2DModel(
        in_channels=12,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        axes_dims_rope=(4, 6, 6),
    ).save_pretrained(tmp_path / "wrong")
    config = _config(tmp_path, models_dir, model={"init_transformer_from": str(tmp_path / "wrong")})
    with pytest.raises(
        ValueError, match="in_channels \\(12\\) is not latent_channels x patch_size\\*\\*2 for the VAE's 8"
    ):
        _train(config, tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_vae_without_float_shift_factor_is_refused(tmp_path, models_dir):
    AutoencoderKL(
        block_out_channels=(16, 32),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
        norm_num_groups=8,
        layers_per_block=1,
    ).save_pretrained(tmp_path / "sd_vae")
    with pytest.raises(ValueError, match="FluxPipeline needs both as floats"):
        _train(_config(tmp_path, models_dir, model={"vae": str(tmp_path / "sd_vae")}), tmp_path / "run")


@pytest.mark.parametrize(
    "section, values, message",
    [
        ("model", {"transformer_overrides": {"in_channels": 64}}, "follow the VAE"),
        ("model", {"vae": None}, "model.vae is required"),
        ("model", {"transformer_preset": "flux-12b"}, "transformer_preset must be one of"),
        ("data", {"aspect_ratios": ["4x5"]}, "width:height"),
        ("data", {"resolution": 30}, "multiple of model.pixels_per_token"),
        ("data", {"caption_dropout_prob": 1.0}, "caption_dropout_prob"),
        ("training", {"mixed_precision": "fp16"}, "fp16"),
        ("training", {"max_steps": 10}, "unknown key"),
    ],
)
def test_bad_configs_fail_at_load_with_the_key_named(tmp_path, models_dir, section, values, message):
    with pytest.raises(ConfigError, match=message):
        load_t2i_config(_config(tmp_path, models_dir, **{section: values}))


@pytest.mark.parametrize("resolution", [256, 512])
def test_paper_configs_of_the_two_arms_differ_only_in_the_vae(resolution):
    configs = REPO_ROOT / "training" / "configs"
    aligntok = yaml.safe_load((configs / f"t2i_2b_{resolution}_aligntok.yaml").read_text())
    flux = yaml.safe_load((configs / f"t2i_2b_{resolution}_flux_vae.yaml").read_text())
    arm_specific = {
        "vae",
        "vae_subfolder",
        "init_transformer_from",
    }  # the 512 models continue their own arm's 256 model
    assert {k: v for k, v in aligntok["model"].items() if k not in arm_specific} == {
        k: v for k, v in flux["model"].items() if k not in arm_specific
    }
    assert {k: v for k, v in aligntok.items() if k != "model"} == {k: v for k, v in flux.items() if k != "model"}
    assert aligntok["model"]["vae"] != flux["model"]["vae"] and flux["model"]["vae_subfolder"] == "vae"
    load_t2i_config(configs / f"t2i_2b_{resolution}_aligntok.yaml")  # valid against the schema


def test_fsdp_accelerate_config_wraps_existing_flux_blocks():
    from accelerate.commands.config.config_args import load_config_from_file
    from diffusers.models.transformers import transformer_flux

    config = load_config_from_file(str(REPO_ROOT / "training" / "accelerate_fsdp.yaml"))
    assert config.distributed_type == "FSDP" and config.fsdp_config["fsdp_version"] == 2
    for name in config.fsdp_config["fsdp_transformer_layer_cls_to_wrap"].split(","):
        assert hasattr(transformer_flux, name), name


def test_training_sigmas_use_the_sampling_schedulers_resolution_dependent_shift():
    flow = T2IFlowConfig()
    scheduler = FlowMatchEulerDiscreteScheduler(
        use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096
    )
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    for tokens in (256, 1024, 4096):
        torch.manual_seed(0)
        sigmas = sample_flux_sigmas(flow, 1000, tokens, "cpu")
        torch.manual_seed(0)
        unshifted = sample_flux_sigmas(T2IFlowConfig(resolution_dependent_shift=False), 1000, tokens, "cpu")
        expected = scheduler.time_shift(calculate_shift(tokens, 256, 4096, 0.5, 1.15), 1.0, unshifted)
        torch.testing.assert_close(sigmas, expected)
    # More tokens -> noisier training on average (the reason for the shift).
    torch.manual_seed(0)
    low = sample_flux_sigmas(flow, 4000, 256, "cpu").mean()
    torch.manual_seed(0)
    high = sample_flux_sigmas(flow, 4000, 4096, "cpu").mean()
    assert high > low + 0.1


def test_package_exposes_the_flux_pipeline_in_the_diffusers_namespace():
    import diffusers

    assert diffusers.AlignTokFluxPipeline is diffusers_aligntok.AlignTokFluxPipeline


def test_two_ranks_build_the_cache_and_train_exactly_what_one_process_trains_on_the_global_batch(tmp_path, models_dir):
    """2 DDP CPU ranks (accelerate reports MULTI_CPU) at per-rank batch 2 against one process at batch 4 (fp32, 4 steps).

    The ranks build the cache (each its shards) and train; the one-process runs reuse that cache, so both see the same
    latents. `BucketBatchSampler` cuts the same global batches of 4 for both and gives rank r positions [2r, 2r + 2);
    caption dropout, noise and sigmas are global-batch draws. So the transformers (EMA export and the last
    checkpoint's raw weights) must agree to float32 rounding, every checkpoint must record two identical rank
    fingerprints, and one process at batch 2 (other samples) must not pass the same comparison.
    """
    from safetensors.torch import load_file

    from diffusers_aligntok.training.checkpointing import list_checkpoints

    def config(name: str, batch_size: int) -> Path:
        return _config(
            tmp_path,
            models_dir,
            name=name,
            data={"cache_dir": str(tmp_path / "cache"), "caption_dropout_prob": 0.5},
            training={
                "train_batch_size": batch_size,
                "gradient_checkpointing": True,
                "max_train_steps": 4,
                "checkpointing_steps": 2,
                "checkpoints_total_limit": None,
            },
        )

    launch_two_cpu_ranks(
        "train_t2i.py", ["--config", str(config("two.yaml", 2)), "--output_dir", str(tmp_path / "two")], 29521
    )
    metrics = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert metrics["num_processes"] == 2 and metrics["global_step"] == 4
    assert json.loads((tmp_path / "cache" / "metadata.json").read_text())["complete"]
    assert isinstance(DiffusionPipeline.from_pretrained(tmp_path / "two" / "pipeline"), AlignTokFluxPipeline)
    _train(config("one.yaml", 4), tmp_path / "one")
    _train(config("half.yaml", 2), tmp_path / "half")

    exported = {run: _weights(tmp_path / run / "transformer") for run in ("two", "one", "half")}
    raw = {
        run: load_file(str(tmp_path / run / "checkpoints" / "checkpoint-4" / "model.safetensors"))
        for run in ("two", "one")
    }
    # Measured: 4e-8 (float32 rounding of the gradient all-reduce and of 2-sample against 4-sample matmuls).
    for name, tensor in exported["one"].items():
        torch.testing.assert_close(exported["two"][name], tensor, rtol=0, atol=1e-5, msg=f"EMA {name}")
    for name, tensor in raw["one"].items():
        torch.testing.assert_close(raw["two"][name], tensor, rtol=0, atol=1e-5, msg=f"checkpoint-4 {name}")
    # The control: other samples (and noise) give weights far outside the tolerance (measured: 5e-3; 5e-3 with the
    # pre-fix per-rank draws).
    assert max(float((exported["half"][name] - tensor).abs().max()) for name, tensor in exported["one"].items()) > 1e-3

    checkpoints = list_checkpoints(tmp_path / "two" / "checkpoints")
    assert [checkpoint.name for checkpoint in checkpoints] == ["checkpoint-2", "checkpoint-4"]
    assert_fingerprints_match_one_process(
        tmp_path / "two" / "checkpoints", tmp_path / "one" / "checkpoints", "transformer"
    )


def test_habitual_flags_validation_images_in_tensorboard_and_push_of_the_pipeline(
    tmp_path, models_dir, fake_push_to_hub
):
    from .trackers import tensorboard_images

    output_dir = tmp_path / "run"
    _train(
        _config(tmp_path, models_dir),
        output_dir,
        "--report_to",
        "tensorboard",
        "--validation_steps",
        "1",
        "--seed",
        "3",
        "--checkpoints_total_limit",
        "1",
        "--set",
        "validation.num_inference_steps=1",
        "--set",
        "data.aspect_ratios=['1:1']",
        "--push_to_hub",
        "--hub_model_id",
        "me/t2i-tiny",
        "--hub_private_repo",
    )
    recorded = json.loads((output_dir / "training_config.json").read_text())
    assert recorded["training"]["seed"] == 3 and recorded["data"]["aspect_ratios"] == ["1:1"]
    assert recorded["run"]["mixed_precision_source"].startswith("config file")
    assert json.loads((output_dir / "metrics.json").read_text())["mixed_precision"] == "no"
    grid_size = (32 + 4, 32 + 4)  # one prompt at the 32x32 bucket
    assert tensorboard_images(output_dir / "logs" / "aligntok_t2i") == {
        "validation/samples": [(1, *grid_size), (2, *grid_size)]
    }
    assert [(call["model_dir"], call["repo_id"], call["private"]) for call in fake_push_to_hub] == [
        (output_dir / "pipeline", "me/t2i-tiny", True)
    ]
    assert "model_index.json" in fake_push_to_hub[0]["files"]


def test_a_model_flag_and_set_of_the_same_key_are_refused(tmp_path, models_dir):
    with pytest.raises(ConfigError, match=r"model.vae is given twice: --vae .* and --set model.vae="):
        _train(
            _config(tmp_path, models_dir),
            tmp_path / "run",
            "--vae",
            str(models_dir / "aligntok"),
            "--set",
            f"model.vae={models_dir / 'flux_vae'}",
        )
    assert not (tmp_path / "run").exists()
