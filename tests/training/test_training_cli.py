"""The command line shared by the training scripts (`diffusers_aligntok/training/cli.py`), without training anything:
mixed-precision precedence, the habitual flags, `--set`, Hub flags, and validation images reaching each tracker."""

import argparse
import sys
import types
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffusers_aligntok.training import cli
from diffusers_aligntok.training.config import ConfigError, load_stage_config
from diffusers_aligntok.training.dit_config import load_dit_config
from diffusers_aligntok.training.validation import log_validation_images


REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIGS = REPO_ROOT / "training" / "configs"
TINY_STAGE = CONFIGS / "tiny_cpu.yaml"  # training.mixed_precision: "no"
DIT_64EP = CONFIGS / "dit_xl_imagenet_64ep.yaml"  # training.mixed_precision: bf16


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--output_dir", default="runs/my-run")
    cli.add_training_arguments(parser, set_help="")
    return parser.parse_args(list(argv))


def load_dit(argv: tuple[str, ...], environ: dict[str, str]):
    return cli.load_config_with_overrides(
        partial(load_dit_config, DIT_64EP), cli.command_line_overrides(parse(*argv)), environ
    )


LAUNCHER_BF16 = {"ACCELERATE_MIXED_PRECISION": "bf16"}


@pytest.mark.parametrize(
    "argv, environ, expected, source",
    [
        ((), {}, "bf16", "config file"),  # nothing chosen: the YAML's value
        (("--mixed_precision", "no"), LAUNCHER_BF16, "no", "command line"),  # the flag beats the launcher
        (
            ("--set", "training.mixed_precision=no"),
            LAUNCHER_BF16,
            "no",
            "command line",
        ),  # --set is the command line too
        # `accelerate launch` writes "no" also when nothing was chosen, so it cannot outrank the YAML.
        ((), {"ACCELERATE_MIXED_PRECISION": "no"}, "bf16", "config file"),
    ],
    ids=["yaml-fallback", "flag-beats-launcher", "set-beats-launcher", "launcher-no-is-unset"],
)
def test_mixed_precision_precedence(argv, environ, expected, source):
    config, record = load_dit(argv, environ)
    assert config.training.mixed_precision == expected == record["mixed_precision"]
    assert record["mixed_precision_source"].startswith(source)


def test_launcher_precision_beats_the_yaml_and_is_recorded_with_its_origin():
    config, record = cli.load_config_with_overrides(partial(load_stage_config, TINY_STAGE, 1), {}, LAUNCHER_BF16)
    assert config.training.mixed_precision == "bf16"
    assert record == {
        "command_line_overrides": {},
        "mixed_precision": "bf16",
        "mixed_precision_source": "accelerate launcher or config (ACCELERATE_MIXED_PRECISION=bf16)",
    }


def test_fp16_from_the_launcher_is_refused_naming_where_it_came_from():
    with pytest.raises(ConfigError, match=r"not supported for tokenizer training.*came from the accelerate launcher"):
        cli.load_config_with_overrides(
            partial(load_stage_config, TINY_STAGE, 1), {}, {"ACCELERATE_MIXED_PRECISION": "fp16"}
        )
    with pytest.raises(ConfigError, match=r"fp16 overflows DiT training.*came from the command line"):
        load_dit(("--mixed_precision", "fp16"), {})


def test_each_habitual_flag_overrides_its_training_key():
    argv = (
        "--report_to",
        "none",
        "--checkpointing_steps",
        "7",
        "--checkpoints_total_limit",
        "2",
        "--validation_steps",
        "9",
        "--seed",
        "11",
        "--mixed_precision",
        "no",
    )
    config, record = load_dit(argv, {})
    training = config.training
    assert (
        training.report_to,
        training.checkpointing_steps,
        training.checkpoints_total_limit,
        training.validation_steps,
        training.seed,
        training.mixed_precision,
    ) == ("none", 7, 2, 9, 11, "no")
    assert record["command_line_overrides"]["training.seed"] == 11
    # Without flags every key keeps the YAML's value.
    untouched, _ = load_dit((), {})
    assert (untouched.training.checkpointing_steps, untouched.training.seed) == (5000, 0)


def test_set_overrides_nested_keys_with_yaml_values():
    argv = (
        "--set",
        "flow.timestep_shift=2",
        "--set",
        "validation.guidance_interval=[0.0, 0.5]",
        "--set",
        "model.overrides.use_qknorm=true",
        "--set",
        "validation.guidance_channels=null",
    )
    config, _ = load_dit(argv, {})
    assert config.flow.timestep_shift == 2.0 and isinstance(config.flow.timestep_shift, float)
    assert config.validation.guidance_interval == [0.0, 0.5]
    assert config.model.overrides["use_qknorm"] is True
    assert config.validation.guidance_channels is None
    # YAML 1.1 would read `no` as False; on the command line only true/false are booleans.
    config, _ = load_dit(("--set", "training.mixed_precision=no", "--set", "training.compile=false"), {})
    assert config.training.mixed_precision == "no" and config.training.compile is False


@pytest.mark.parametrize(
    "argv, message",
    [
        (("--set", "flow.timestep_shfit=2"), r"dit_xl_imagenet_64ep.yaml.flow: unknown key\(s\) \['timestep_shfit'\]"),
        (("--set", "optimizer.learning_rate=fast"), r"optimizer.learning_rate: expected float, got 'fast'"),
        (("--set", "training.seed.value=1"), r"cannot set training.seed.value: training.seed is 0, not a mapping"),
        (("--set", "training.seed"), r"expected KEY=VALUE"),
        (("--set", "training..seed=1"), r"expected KEY=VALUE"),
        (("--set", "training.seed=1", "--set", "training.seed=2"), r"--set training.seed is given twice"),
        (
            ("--seed", "1", "--set", "training.seed=2"),
            r"training.seed is given twice: --seed 1 and --set training.seed=2",
        ),
        (("--set", "flow.timestep_shift=[1"), r"not valid YAML"),
    ],
)
def test_bad_overrides_fail_with_the_full_key(argv, message):
    with pytest.raises(ConfigError, match=message):
        load_dit(argv, {})


def test_hub_flags_fail_early_and_name_the_fix():
    assert cli.hub_repo_id(parse()) is None
    assert cli.hub_repo_id(parse("--push_to_hub", "--hub_model_id", "me/aligntok-tiny")) == "me/aligntok-tiny"
    with pytest.raises(ConfigError, match=r"--push_to_hub needs --hub_model_id.*your-name/my-run"):
        cli.hub_repo_id(parse("--push_to_hub"))
    with pytest.raises(ConfigError, match=r"--hub_model_id 'me/bad name' is not a valid repository id"):
        cli.hub_repo_id(parse("--push_to_hub", "--hub_model_id", "me/bad name"))
    with pytest.raises(ConfigError, match=r"--hub_model_id, --hub_private_repo given without --push_to_hub"):
        cli.hub_repo_id(parse("--hub_model_id", "me/x", "--hub_private_repo"))


class _FakeTensorBoard:
    name = "tensorboard"

    def __init__(self):
        self.images = []
        self.writer = self

    def add_image(self, tag, array, step, dataformats):
        self.images.append((tag, array.shape, array.dtype, step, dataformats))


class _FakeWandB:
    name = "wandb"

    def __init__(self):
        self.logged = []

    def log(self, values, step=None):
        self.logged.append((values, step))


class _OtherTracker:
    name = "mlflow"


def test_validation_images_reach_each_tracker_in_its_own_way(monkeypatch):
    wandb = types.ModuleType("wandb")
    wandb.Image = lambda image, caption=None: ("wandb.Image", image.size, caption)
    monkeypatch.setitem(sys.modules, "wandb", wandb)  # wandb need not be installed: it is imported only when active
    tensorboard, wandb_tracker = _FakeTensorBoard(), _FakeWandB()
    accelerator = types.SimpleNamespace(trackers=[tensorboard, wandb_tracker, _OtherTracker()])
    grid = Image.fromarray(np.zeros((6, 10, 3), dtype=np.uint8))
    log_validation_images(accelerator, "validation/samples", grid, 4, caption="classes [0, 1]")
    assert tensorboard.images == [("validation/samples", (6, 10, 3), np.uint8, 4, "HWC")]
    assert wandb_tracker.logged == [({"validation/samples": [("wandb.Image", (10, 6), "classes [0, 1]")]}, 4)]
