"""`training/train_stage.py` end to end on the tiny CPU recipe: stages, outputs, resume, bad input, two processes."""

import json
import sys
from pathlib import Path

import pytest
import torch
import yaml
from transformers import Dinov2Config, Dinov2Model

from diffusers_aligntok import AlignedAutoencoderKL
from diffusers_aligntok.training.checkpointing import list_checkpoints
from diffusers_aligntok.training.config import ConfigError, load_stage_config
from diffusers_aligntok.training.tokenizer import cli as train_stage

from .rank_equivalence import assert_ranks_in_sync, launch_two_cpu_ranks


REPO_ROOT = Path(__file__).resolve().parents[2]
TINY_CONFIG = REPO_ROOT / "training" / "configs" / "tiny_cpu.yaml"


def _write_config(
    tmp_path: Path, update_common: dict | None = None, stages: dict | None = None, name: str = "config.yaml"
) -> Path:
    raw = yaml.safe_load(TINY_CONFIG.read_text())
    for section, values in (update_common or {}).items():
        raw["common"].setdefault(section, {}).update(values)
    if stages is not None:
        raw["stages"] = stages
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="module")
def foundation_encoder_dir(tmp_path_factory) -> Path:
    """A tiny 'pretrained' DINOv2 saved with transformers, matching the tiny preset's encoder."""
    path = tmp_path_factory.mktemp("dinov2_tiny")
    torch.manual_seed(123)
    config = Dinov2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, patch_size=3, image_size=24, mlp_ratio=2
    )
    Dinov2Model(config).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, foundation_encoder_dir) -> Path:
    tmp_path = tmp_path_factory.mktemp("run_all")
    config = _write_config(tmp_path, {"model": {"foundation_encoder": str(foundation_encoder_dir)}})
    output_dir = tmp_path / "out"
    train_stage.main(["--config", str(config), "--stage", "all", "--output_dir", str(output_dir)])
    return output_dir


def test_all_stages_write_loadable_models_and_metrics(finished_run):
    for stage in (1, 2, 3):
        stage_dir = finished_run / f"stage{stage}"
        model = AlignedAutoencoderKL.from_pretrained(stage_dir / "model")
        assert model.config.latent_channels == 8
        metrics = json.loads((stage_dir / "metrics.json").read_text())
        assert metrics["global_step"] == 4 and metrics["stage"] == stage
        assert metrics["validation_psnr"] > 0
        assert "loss/l1" in metrics["final_losses"] and "loss/gan_generator" in metrics["final_losses"]
        assert (stage_dir / "reconstructions.png").is_file()
        assert (stage_dir / "training_config.json").is_file()
        assert [p.name for p in list_checkpoints(stage_dir / "checkpoints")] == ["checkpoint-2", "checkpoint-4"]
        # Every checkpoint holds a diffusers-format tokenizer.
        AlignedAutoencoderKL.from_pretrained(stage_dir / "checkpoints" / "checkpoint-4" / "tokenizer")
    stage2 = json.loads((finished_run / "stage2" / "metrics.json").read_text())
    assert "loss/semantic_preservation" in stage2["final_losses"]


def _changed(before: torch.nn.Module, after: torch.nn.Module) -> bool:
    return any(not torch.equal(a, b) for a, b in zip(before.state_dict().values(), after.state_dict().values()))


def test_stage_freezing_rules(finished_run, foundation_encoder_dir):
    pretrained = Dinov2Model.from_pretrained(foundation_encoder_dir).state_dict()
    stage1, stage2, stage3 = (
        AlignedAutoencoderKL.from_pretrained(finished_run / f"stage{k}" / "model") for k in (1, 2, 3)
    )
    # Stage 1: the encoder is the pretrained one, untouched; adapter and decoder move between its checkpoints.
    for name, tensor in stage1.encoder.state_dict().items():
        assert torch.equal(tensor, pretrained[name]), name
    at_step_2 = AlignedAutoencoderKL.from_pretrained(
        finished_run / "stage1" / "checkpoints" / "checkpoint-2" / "tokenizer"
    )
    assert not _changed(at_step_2.encoder, stage1.encoder)
    assert _changed(at_step_2.adapter, stage1.adapter) and _changed(at_step_2.decoder, stage1.decoder)
    # Stage 2 changes all three, and starts exactly at stage 1's latents: L_sp is zero at its first step.
    assert _changed(stage1.encoder, stage2.encoder)
    assert _changed(stage1.adapter, stage2.adapter) and _changed(stage1.decoder, stage2.decoder)
    stage2_metrics = json.loads((finished_run / "stage2" / "metrics.json").read_text())
    assert stage2_metrics["first_losses"]["loss/semantic_preservation"] == 0.0
    assert stage2_metrics["final_losses"]["loss/semantic_preservation"] > 0.0
    # Stage 3: encoder + adapter are bit-for-bit stage 2's, only the decoder moved.
    for name, tensor in stage2.state_dict().items():
        if name.startswith(("encoder.", "adapter.")):
            assert torch.equal(tensor, stage3.state_dict()[name]), name
    assert not torch.equal(stage2.decoder.conv_out.weight, stage3.decoder.conv_out.weight)
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.equal(stage2.encode(images).latent_dist.mode(), stage3.encode(images).latent_dist.mode())


def test_resume_continues_exactly(tmp_path):
    straight = tmp_path / "straight"
    train_stage.main(["--config", str(_write_config(tmp_path)), "--stage", "1", "--output_dir", str(straight)])

    interrupted = tmp_path / "interrupted"
    short = _write_config(tmp_path, {"training": {"max_train_steps": 2}}, name="short.yaml")
    train_stage.main(["--config", str(short), "--stage", "1", "--output_dir", str(interrupted)])
    # A kill during a later checkpoint write leaves an incomplete directory that `latest` must ignore.
    (interrupted / "stage1" / "checkpoints" / "checkpoint-3.incomplete").mkdir()
    train_stage.main(
        [
            "--config",
            str(_write_config(tmp_path)),
            "--stage",
            "1",
            "--output_dir",
            str(interrupted),
            "--resume_from_checkpoint",
            "latest",
        ]
    )
    expected = AlignedAutoencoderKL.from_pretrained(straight / "stage1" / "model").state_dict()
    resumed = AlignedAutoencoderKL.from_pretrained(interrupted / "stage1" / "model").state_dict()
    for name, tensor in expected.items():
        torch.testing.assert_close(resumed[name], tensor, rtol=0, atol=1e-6, msg=name)


def test_resume_with_another_model_config_is_refused(tmp_path):
    output_dir = tmp_path / "out"
    config = _write_config(tmp_path, {"training": {"max_train_steps": 2}})
    train_stage.main(["--config", str(config), "--stage", "1", "--output_dir", str(output_dir)])
    other = _write_config(tmp_path, {"model": {"overrides": {"latent_noise_std": 0.1}}}, name="other.yaml")
    with pytest.raises(ValueError, match="latent_noise_std"):
        train_stage.main(
            [
                "--config",
                str(other),
                "--stage",
                "1",
                "--output_dir",
                str(output_dir),
                "--resume_from_checkpoint",
                "latest",
            ]
        )


def test_stage2_without_stage1_model_fails_before_training(tmp_path):
    with pytest.raises(FileNotFoundError, match="stage-1 model"):
        train_stage.main(
            ["--config", str(_write_config(tmp_path)), "--stage", "2", "--output_dir", str(tmp_path / "empty")]
        )


@pytest.mark.parametrize(
    "update, message",
    [
        ({"training": {"max_train_step": 3}}, "max_train_step"),
        ({"training": {"max_train_steps": "many"}}, "max_train_steps"),
        ({"optimizer": {"learning_rate": -1.0}}, "optimizer.learning_rate must be positive, got -1.0"),
        ({"training": {"mixed_precision": "fp16"}}, "bf16"),
        ({"loss": {"semantic_preservation_weight": -1.0}}, "loss.semantic_preservation_weight must be 0 or more"),
        ({"loss": {"gan_weight": -0.5}}, "loss.gan_weight"),
        ({"loss": {"l1_weight": 0.0}}, "loss.l1_weight"),
        (
            {"loss": {"perceptual_weight": 1.0}},
            "loss.perceptual_weight must be 0 when loss.perceptual_network is null",
        ),
        ({"loss": {"discriminator": {"num_layers": 0}}}, "loss.discriminator.num_layers"),
        ({"loss": {"discriminator_init_from": "stage1"}}, "loss.discriminator_init_from"),
        ({"optimizer": {"adam_beta2": 1.5}}, "optimizer.adam_beta2"),
        ({"optimizer": {"lr_scheduler": "cosine_annealing"}}, "optimizer.lr_scheduler"),
        ({"training": {"ema_decay": 1.0}}, "training.ema_decay"),
        ({"data": {"resolution": 0}}, "data.resolution"),
    ],
)
def test_bad_config_fails_at_load_with_the_key_named(tmp_path, update, message):
    with pytest.raises(ConfigError, match=message):
        load_stage_config(_write_config(tmp_path, update), 1)


def test_empty_dataset_stops_with_its_path(tmp_path):
    empty = tmp_path / "no_images"
    empty.mkdir()
    config = _write_config(tmp_path, {"data": {"source": str(empty)}})
    with pytest.raises(ValueError, match=str(empty)):
        train_stage.main(["--config", str(config), "--stage", "1", "--output_dir", str(tmp_path / "out")])


def test_non_finite_loss_stops_with_step_and_term_without_new_checkpoint(tmp_path, monkeypatch):
    from diffusers_aligntok.losses import ReconstructionLoss
    from diffusers_aligntok.training.step import NonFiniteLossError

    original = ReconstructionLoss.generator_loss

    def poisoned(self, images, reconstructions, *args, global_step, **kwargs):
        loss, logs = original(self, images, reconstructions, *args, global_step=global_step, **kwargs)
        if global_step == 2:
            logs["loss/l1"] = torch.tensor(float("nan"))
        return loss, logs

    monkeypatch.setattr(ReconstructionLoss, "generator_loss", poisoned)
    output_dir = tmp_path / "out"
    with pytest.raises(NonFiniteLossError, match=r"step 2: loss/l1"):
        train_stage.main(["--config", str(_write_config(tmp_path)), "--stage", "1", "--output_dir", str(output_dir)])
    assert [p.name for p in list_checkpoints(output_dir / "stage1" / "checkpoints")] == ["checkpoint-2"]
    assert not (output_dir / "stage1" / "model").exists()


def test_two_ranks_train_exactly_what_one_rank_trains_on_the_same_global_batch(tmp_path):
    """`--stage all` on 2 DDP ranks at per-rank batch 4 against 1 rank at batch 8 on the same samples.

    Without the GAN term (its adaptive weight uses each rank's local gradients, so it legitimately differs), the two
    runs compute the same gradient at every step: the parameters of all three stages (stage 2 with EMA and L_sp) must
    agree to float32 rounding, and every rank must hold the same weights at every checkpoint.
    """
    steps = {"max_train_steps": 3, "checkpointing_steps": 1, "checkpoints_total_limit": None, "report_to": "none"}
    common = {"loss": {"gan_weight": 0.0}, "data": {"num_builtin_samples": 64}}
    stages = {1: {}, 2: {"loss": {"semantic_preservation_weight": 1.0}, "training": {"ema_decay": 0.9}}, 3: {}}
    two_ranks = _write_config(tmp_path, {**common, "training": {**steps, "train_batch_size": 4}}, stages, "two.yaml")
    one_rank = _write_config(tmp_path, {**common, "training": {**steps, "train_batch_size": 8}}, stages, "one.yaml")
    launch_two_cpu_ranks(
        "train_stage.py", ["--config", str(two_ranks), "--stage", "all", "--output_dir", str(tmp_path / "two")], 29517
    )
    train_stage.main(["--config", str(one_rank), "--stage", "all", "--output_dir", str(tmp_path / "one")])

    initial = AlignedAutoencoderKL.from_preset("tiny").state_dict()  # the stage-1 init has the same seed in both runs
    for stage in (1, 2, 3):
        metrics = json.loads((tmp_path / "two" / f"stage{stage}" / "metrics.json").read_text())
        assert metrics["num_processes"] == 2 and metrics["global_step"] == 3
        two = AlignedAutoencoderKL.from_pretrained(tmp_path / "two" / f"stage{stage}" / "model").state_dict()
        one = AlignedAutoencoderKL.from_pretrained(tmp_path / "one" / f"stage{stage}" / "model").state_dict()
        for name, tensor in one.items():
            # An attention key bias shifts every logit of a query row alike, so softmax cancels it: its exact gradient
            # is 0 and what it gets is rounding noise, which Adam scales up to lr-sized steps of random sign. Measured:
            # <= 2.7e-5 for those, <= 2e-6 for every other parameter.
            tolerance = 1e-4 if name.endswith("to_k.bias") else 1e-5
            torch.testing.assert_close(two[name], tensor, rtol=0, atol=tolerance, msg=f"stage {stage}: {name}")
        assert_ranks_in_sync(tmp_path / "two" / f"stage{stage}" / "checkpoints", "tokenizer")
    # The comparison is sensitive: training moved the decoder by far more than the tolerance.
    moved = (one["decoder.conv_out.weight"] - initial["decoder.conv_out.weight"]).abs().max()
    assert moved > 1e-3, moved


def test_stage2_with_encoder_lora_and_gradient_checkpointing_exports_a_plain_model(finished_run, tmp_path):
    stages = {
        1: {},
        2: {
            "loss": {"semantic_preservation_weight": 1.0},
            "training": {"encoder_lora_rank": 2, "gradient_checkpointing": True, "ema_decay": 0.9},
        },
    }
    config = _write_config(tmp_path, {"model": {"init_from": str(finished_run / "stage1" / "model")}}, stages=stages)
    output_dir = tmp_path / "lora"
    train_stage.main(["--config", str(config), "--stage", "2", "--output_dir", str(output_dir)])
    stage1 = AlignedAutoencoderKL.from_pretrained(finished_run / "stage1" / "model")
    lora_model = AlignedAutoencoderKL.from_pretrained(output_dir / "stage2" / "model")
    assert not any("lora" in name for name in lora_model.state_dict())
    assert not lora_model.is_gradient_checkpointing
    # The LoRA update was merged into the attention projections; the rest of the encoder is untouched.
    query = "encoder.encoder.layer.0.attention.q_proj.weight"
    assert not torch.equal(stage1.state_dict()[query], lora_model.state_dict()[query])
    patch = "embeddings.patch_embeddings.projection.weight"
    assert torch.equal(stage1.encoder.state_dict()[patch], lora_model.encoder.state_dict()[patch])
    # Adapter and decoder are still fully fine-tuned beside the encoder LoRA.
    assert not torch.equal(stage1.decoder.conv_out.weight, lora_model.decoder.conv_out.weight)
    assert not torch.equal(stage1.adapter.net[2].weight, lora_model.adapter.net[2].weight)


def test_semantic_preservation_weight_outside_stage_2_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="stage1: loss.semantic_preservation_weight must be 0 outside stage 2"):
        load_stage_config(_write_config(tmp_path, {"loss": {"semantic_preservation_weight": 1.0}}), 1)


def test_resolution_that_does_not_fit_the_tokenizer_names_data_resolution(tmp_path):
    config = _write_config(tmp_path, {"data": {"resolution": 30}})  # the tiny preset is f4
    with pytest.raises(ConfigError, match=r"data.resolution 30 is not a multiple of 4.*28 or 32"):
        train_stage.main(["--config", str(config), "--stage", "1", "--output_dir", str(tmp_path / "out")])


def test_stages_that_cannot_hand_the_discriminator_on_fail_before_training(tmp_path):
    no_gan_in_stage_1 = _write_config(tmp_path, stages={1: {"loss": {"gan_weight": 0.0}}, 2: {}, 3: {}})
    with pytest.raises(ConfigError, match="stage 1 trains none"):
        train_stage.main(["--config", str(no_gan_in_stage_1), "--stage", "all", "--output_dir", str(tmp_path / "a")])
    other_precision = _write_config(
        tmp_path, stages={1: {}, 2: {"training": {"mixed_precision": "bf16"}}}, name="b.yaml"
    )
    with pytest.raises(ConfigError, match="mixed_precision differs between stages"):
        train_stage.main(["--config", str(other_precision), "--stage", "all", "--output_dir", str(tmp_path / "b")])
    # Stage 2 alone, after a stage 1 that trained no GAN: the missing discriminator is named, with the way out.
    train_stage.main(["--config", str(no_gan_in_stage_1), "--stage", "1", "--output_dir", str(tmp_path / "c")])
    with pytest.raises(FileNotFoundError, match="discriminator_init_from to 'fresh'"):
        train_stage.main(["--config", str(no_gan_in_stage_1), "--stage", "2", "--output_dir", str(tmp_path / "c")])


def _discriminator_record(stage_dir: Path) -> tuple[int, int]:
    """(updates recorded in config.json, AdamW's step count) of the discriminator a stage handed on."""
    record = json.loads((stage_dir / "discriminator" / "config.json").read_text())
    optimizer_state = torch.load(stage_dir / "discriminator" / "optimizer.pt", weights_only=True)
    return record["num_updates"], int(optimizer_state["state"][0]["step"])


def test_discriminator_and_its_optimizer_state_carry_across_stages(finished_run, tmp_path):
    # tiny_cpu.yaml: 4 steps a stage; the GAN starts at step 2 in stage 1 and at step 0 in stages 2 and 3.
    assert [_discriminator_record(finished_run / f"stage{k}") for k in (1, 2, 3)] == [(2, 2), (6, 6), (10, 10)]
    # The hand-off's weights are the stage's final discriminator, the one its last checkpoint holds.
    from safetensors.torch import load_file

    handed_on = load_file(str(finished_run / "stage1" / "discriminator" / "model.safetensors"))
    checkpointed = load_file(
        str(finished_run / "stage1" / "checkpoints" / "checkpoint-4" / "model.safetensors")
    )  # the tokenizer is in tokenizer/
    assert handed_on.keys() == checkpointed.keys()
    assert all(torch.equal(handed_on[name], checkpointed[name]) for name in handed_on)
    # 'fresh' starts a new discriminator and a new optimiser state (and restarts its update count).
    fresh = _write_config(
        tmp_path,
        {"model": {"init_from": str(finished_run / "stage1" / "model")}},
        stages={1: {}, 2: {"loss": {"discriminator_init_from": "fresh"}}},
    )
    train_stage.main(["--config", str(fresh), "--stage", "2", "--output_dir", str(tmp_path / "fresh")])
    assert _discriminator_record(tmp_path / "fresh" / "stage2") == (2, 2)


def test_two_ranks_train_the_gan_in_sync_through_all_stages(tmp_path):
    """The GAN path on 2 DDP ranks: the generator's frozen-discriminator pass, the discriminator's own step and the
    hand-off between stages; every rank holds the same tokenizer and discriminator at every checkpoint."""
    config = _write_config(
        tmp_path,
        {
            "training": {
                "max_train_steps": 3,
                "checkpointing_steps": 1,
                "checkpoints_total_limit": None,
                "report_to": "none",
            },
            "loss": {"gan_start_step": 1},
        },
    )
    launch_two_cpu_ranks(
        "train_stage.py", ["--config", str(config), "--stage", "all", "--output_dir", str(tmp_path / "out")], 29519
    )
    for stage in (1, 2, 3):
        stage_dir = tmp_path / "out" / f"stage{stage}"
        metrics = json.loads((stage_dir / "metrics.json").read_text())
        assert metrics["num_processes"] == 2 and metrics["final_losses"]["loss/discriminator"] > 0
        for name in ("tokenizer", "discriminator"):
            assert_ranks_in_sync(stage_dir / "checkpoints", name)
    assert [_discriminator_record(tmp_path / "out" / f"stage{k}")[0] for k in (1, 2, 3)] == [2, 5, 8]


# ---------------------------------------------------------------------------------------------------------------
# diffusers' habitual flags, --set, mixed precision from the launcher, --push_to_hub
# ---------------------------------------------------------------------------------------------------------------


def test_accelerate_launch_mixed_precision_trains_in_bf16_without_editing_the_yaml(tmp_path):
    """The real launcher: `accelerate launch --mixed_precision bf16` beats the YAML's `no` (which is only a default)."""
    import os
    import subprocess

    config = _write_config(tmp_path, {"training": {"max_train_steps": 2, "report_to": "none"}})
    output_dir = tmp_path / "out"
    env = {key: value for key, value in os.environ.items() if key != "ACCELERATE_MIXED_PRECISION"}
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--cpu",
        "--num_processes",
        "1",
        "--num_cpu_threads_per_process",
        "1",
        "--mixed_precision",
        "bf16",
        str(REPO_ROOT / "training" / "train_stage.py"),
        "--config",
        str(config),
        "--stage",
        "1",
        "--output_dir",
        str(output_dir),
    ]
    result = subprocess.run(command, env={**env, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    recorded = json.loads((output_dir / "stage1" / "training_config.json").read_text())
    assert recorded["training"]["mixed_precision"] == "bf16"
    assert (
        recorded["run"]["mixed_precision_source"] == "accelerate launcher or config (ACCELERATE_MIXED_PRECISION=bf16)"
    )
    assert recorded["run"]["accelerator_mixed_precision"] == "bf16"
    assert json.loads((output_dir / "stage1" / "metrics.json").read_text())["mixed_precision"] == "bf16"


def test_habitual_flags_reach_the_run_and_the_final_model_is_pushed(tmp_path, monkeypatch, fake_push_to_hub):
    from PIL import Image

    from .trackers import tensorboard_images

    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")  # as `accelerate launch --mixed_precision bf16` would
    output_dir = tmp_path / "out"
    train_stage.main(
        [
            "--config",
            str(_write_config(tmp_path, {"training": {"report_to": "none"}})),
            "--stage",
            "1",
            "--output_dir",
            str(output_dir),
            "--mixed_precision",
            "no",
            "--seed",
            "3",
            "--checkpointing_steps",
            "1",
            "--checkpoints_total_limit",
            "1",
            "--validation_steps",
            "1",
            "--report_to",
            "tensorboard",
            "--set",
            "training.max_train_steps=2",
            "--set",
            "data.num_validation_images=2",
            "--push_to_hub",
            "--hub_model_id",
            "me/aligntok-tiny",
            "--hub_token",
            "hf_secret",
            "--hub_private_repo",
        ]
    )
    stage_dir = output_dir / "stage1"
    recorded = json.loads((stage_dir / "training_config.json").read_text())
    assert recorded["training"]["seed"] == 3 and recorded["data"]["num_validation_images"] == 2
    assert recorded["run"]["mixed_precision_source"].startswith("command line")  # the flag beat the launcher's bf16
    assert recorded["run"]["accelerator_mixed_precision"] == "no"
    assert "hf_secret" not in (stage_dir / "training_config.json").read_text()
    assert json.loads((stage_dir / "metrics.json").read_text())["global_step"] == 2
    assert [p.name for p in list_checkpoints(stage_dir / "checkpoints")] == ["checkpoint-2"]  # limit 1, every step
    # Validation at every step: the grids on disk and in tensorboard (2 held-out images, originals above reconstructions).
    grids = sorted((stage_dir / "validation").iterdir())
    assert [p.name for p in grids] == ["step-0000001.png", "step-0000002.png"]
    width, height = Image.open(grids[0]).size
    assert width == 2 * (32 + 2) + 2 and height == 2 * (32 + 2) + 2
    images = tensorboard_images(stage_dir / "logs" / "aligntok_stage1")
    assert images == {"validation/reconstructions": [(1, width, height), (2, width, height)]}
    # Pushed once, from the saved model directory, with the Hub flags.
    assert len(fake_push_to_hub) == 1
    push = fake_push_to_hub[0]
    assert (push["model_dir"], push["repo_id"], push["token"], push["private"]) == (
        stage_dir / "model",
        "me/aligntok-tiny",
        "hf_secret",
        True,
    )
    assert "config.json" in push["files"] and "diffusion_pytorch_model.safetensors" in push["files"]


def test_set_applies_to_every_stage_and_a_stages_prefix_to_one(tmp_path, monkeypatch, fake_push_to_hub):
    from diffusers_aligntok.training.stages import stage_model_dir

    seen = {}

    def fake_run_stage(config, stage, output_dir, resume_from_checkpoint, run_record):
        seen[stage] = (config, run_record)
        stage_model_dir(output_dir, stage).mkdir(parents=True)
        (stage_model_dir(output_dir, stage) / "config.json").write_text("{}")
        return {}

    monkeypatch.setattr(train_stage, "run_stage", fake_run_stage)
    train_stage.main(
        [
            "--config",
            str(_write_config(tmp_path)),
            "--stage",
            "all",
            "--output_dir",
            str(tmp_path / "out"),
            "--seed",
            "5",
            "--set",
            "loss.gan_start_step=1",
            "--set",
            "stages.2.loss.semantic_preservation_weight=3",
            "--set",
            "stages.3.training.max_train_steps=1",
            "--set",
            "training.max_train_steps=3",
            "--push_to_hub",
            "--hub_model_id",
            "me/aligntok-tiny",
        ]
    )
    configs = [seen[stage][0] for stage in (1, 2, 3)]
    assert [c.training.seed for c in configs] == [5, 5, 5]
    assert [c.loss.gan_start_step for c in configs] == [1, 1, 1]  # beats the YAML's stages 2 and 3 (gan_start_step 0)
    assert [c.loss.semantic_preservation_weight for c in configs] == [0.0, 3.0, 0.0]
    assert [c.training.max_train_steps for c in configs] == [3, 3, 1]  # the one-stage value beats the all-stage one
    assert seen[3][1]["command_line_overrides"] == {
        "loss.gan_start_step": 1,
        "training.max_train_steps": 1,
        "training.seed": 5,
    }
    # With --stage all the final model is stage 3's.
    assert [call["model_dir"] for call in fake_push_to_hub] == [tmp_path / "out" / "stage3" / "model"]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--push_to_hub"], r"--push_to_hub needs --hub_model_id"),
        (["--push_to_hub", "--hub_model_id", "me/two words"], r"not a valid repository id"),
        (
            ["--set", "training.max_train_step=3"],
            r"config.yaml:stage1.training: unknown key\(s\) \['max_train_step'\]",
        ),
        (["--set", "loss.discriminator.num_layer=1"], r"stage1.loss.discriminator: unknown key\(s\) \['num_layer'\]"),
        (
            ["--set", "training.max_train_steps=many"],
            r"config.yaml:stage1.training.max_train_steps: expected int, got 'many'",
        ),
        (
            ["--set", "stages.2.loss.gan_weight=0"],
            r"stages.2.loss.gan_weight sets a key of stage 2, but this command runs stages \[1\]",
        ),
        (["--set", "stages.4.loss.gan_weight=0"], r"stages.<1, 2 or 3>"),
        (["--mixed_precision", "fp16"], r"'fp16' is not supported for tokenizer training.*came from the command line"),
    ],
)
def test_bad_command_lines_fail_before_training(tmp_path, monkeypatch, extra, message):
    monkeypatch.setattr(train_stage, "run_stage", lambda *args: pytest.fail("training started"))
    with pytest.raises(ConfigError, match=message):
        train_stage.main(
            ["--config", str(_write_config(tmp_path)), "--stage", "1", "--output_dir", str(tmp_path / "out"), *extra]
        )
    assert not (tmp_path / "out").exists()
