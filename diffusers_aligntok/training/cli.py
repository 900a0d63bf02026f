"""Command-line handling shared by `training/train_stage.py`, `train_dit.py` and `train_t2i.py`.

Each script reads a YAML config and takes, on top of it, the flags users of diffusers' training examples
(`examples/text_to_image/train_text_to_image.py`) type by habit, with the same names and meanings:

    --mixed_precision --report_to --checkpointing_steps --checkpoints_total_limit --validation_steps --seed
    --push_to_hub --hub_model_id --hub_token --hub_private_repo

plus a generic `--set key.path=value` (repeatable) for any other config key. Every override goes through the config's
strict loader, so an unknown key or a wrong type fails with the key's full path before anything is built.

Precedence, highest first:

* a config key: the command line (its flag, or `--set`; giving both for one key is refused) > the YAML file.
* `training.mixed_precision`: the command line > the accelerate launcher (`accelerate launch --mixed_precision X`, or
  the `accelerate config` file that `accelerate launch` reads; both reach the script as `ACCELERATE_MIXED_PRECISION`)
  > the YAML file. `accelerate launch` also writes `no` when neither its flag nor its config chose a precision, so a
  launcher `no` cannot be told from "unset" and does not count as a choice: the YAML's value applies, and the script's
  own `--mixed_precision no` forces fp32. A plain `python training/train_*.py` never reads the accelerate config file.
  The effective value and where it came from are recorded in the run's `training_config.json`.
"""

import argparse
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from .config import ConfigError


logger = logging.getLogger(__name__)

ConfigT = TypeVar("ConfigT")

# `training.<name>` keys that each script also takes as a diffusers-style flag `--<name>`.
TRAINING_FLAGS = (
    "mixed_precision",
    "report_to",
    "checkpointing_steps",
    "checkpoints_total_limit",
    "validation_steps",
    "seed",
)
# The variable through which `accelerate launch` (its flag or the accelerate config file) hands its precision over.
LAUNCHER_MIXED_PRECISION_ENV = "ACCELERATE_MIXED_PRECISION"
MIXED_PRECISION_KEY = "training.mixed_precision"
FROM_COMMAND_LINE = "command line (--mixed_precision or --set training.mixed_precision)"
FROM_CONFIG_FILE = "config file (training.mixed_precision)"


def add_training_arguments(parser: argparse.ArgumentParser, set_help: str) -> None:
    """Adds the habitual diffusers flags, `--set` and the Hub flags; every default is None (the YAML decides)."""
    group = parser.add_argument_group("overrides of the config file (default: the config's value)")
    group.add_argument(
        "--mixed_precision",
        default=None,
        choices=["no", "fp16", "bf16"],
        help="Whether to use mixed precision (training.mixed_precision). Defaults to the value of `accelerate launch "
        "--mixed_precision` or of the accelerate config that `accelerate launch` reads, else the config file's. Use "
        "this argument to override both. fp16 is refused: our models train in bf16 or fp32.",
    )
    group.add_argument(
        "--report_to",
        default=None,
        help='The integration to report the results and logs to (training.report_to): "tensorboard", "wandb", "all" or '
        '"none". Validation images reach tensorboard and wandb.',
    )
    group.add_argument(
        "--checkpointing_steps",
        type=int,
        default=None,
        help="Save a checkpoint of the training state every X updates (training.checkpointing_steps). These "
        "checkpoints are only suitable for resuming training using `--resume_from_checkpoint`.",
    )
    group.add_argument(
        "--checkpoints_total_limit",
        type=int,
        default=None,
        help="Max number of checkpoints to store (training.checkpoints_total_limit; "
        "`--set training.checkpoints_total_limit=null` keeps all).",
    )
    group.add_argument(
        "--validation_steps",
        type=int,
        default=None,
        help="Run validation (grids saved and sent to the trackers) every X updates (training.validation_steps).",
    )
    group.add_argument("--seed", type=int, default=None, help="A seed for reproducible training (training.seed).")
    group.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=set_help)

    hub = parser.add_argument_group("Hugging Face Hub")
    hub.add_argument(
        "--push_to_hub",
        action="store_true",
        help="Whether or not to push the final model, with its model card, to the Hub once training is done.",
    )
    hub.add_argument("--hub_token", default=None, help="The token to use to push to the Model Hub.")
    hub.add_argument(
        "--hub_model_id",
        default=None,
        help="The repository to push to, `namespace/name`; required with --push_to_hub (we do not guess it from "
        "the output directory).",
    )
    hub.add_argument("--hub_private_repo", action="store_true", help="Whether or not to create a private repository.")


def parse_set_arguments(items: Sequence[str]) -> dict[str, Any]:
    """`["loss.gan_weight=0", "data.source=builtin:shapes"]` -> `{"loss.gan_weight": 0, ...}`, values read as YAML."""
    import yaml

    overrides: dict[str, Any] = {}
    for item in items:
        key, separator, text = item.partition("=")
        key = key.strip()
        if not separator or not key or not all(key.split(".")):
            raise ConfigError(
                f"--set {item!r}: expected KEY=VALUE with a dotted config key, e.g. --set training.max_train_steps=10 "
                "or --set model.overrides.latent_noise_std=0.1."
            )
        if key in overrides:
            raise ConfigError(f"--set {key} is given twice ({overrides[key]!r} and {text!r}); keep one.")
        try:
            # YAML, as in the config file: `0` is an int, `1.0e-4` a float, `null` None, `[0, 1]` a list, `true` a bool.
            value = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML ({error}).") from None
        if isinstance(value, bool) and text.strip().lower() not in ("true", "false"):
            # PyYAML (YAML 1.1) reads yes/no/on/off as booleans; `--set training.mixed_precision=no` means the word.
            value = text.strip()
        overrides[key] = value
    return overrides


def command_line_overrides(
    args: argparse.Namespace, named: Mapping[str, tuple[str, Any]] | None = None
) -> dict[str, Any]:
    """The command line's config overrides as dotted keys: `--set` items, each `--<flag>` given as `training.<flag>`,
    and script-specific `named` flags (`{"model.vae": ("--vae", value)}`; a None value means "not given").

    A key set both by a flag and by `--set` is refused: neither should silently win.
    """
    overrides = parse_set_arguments(args.set)
    flags = {f"training.{name}": (f"--{name}", getattr(args, name)) for name in TRAINING_FLAGS}
    for key, (flag, value) in {**flags, **(named or {})}.items():
        if value is None:
            continue
        if key in overrides:
            raise ConfigError(f"{key} is given twice: {flag} {value!r} and --set {key}={overrides[key]!r}; keep one.")
        overrides[key] = value
    return overrides


def launcher_mixed_precision(environ: Mapping[str, str] | None = None) -> str | None:
    """The precision `accelerate launch` chose (its flag or its config file), or None when it chose none."""
    value = (os.environ if environ is None else environ).get(LAUNCHER_MIXED_PRECISION_ENV, "").strip().lower()
    # The launcher writes "no" for "not chosen" as well, so "no" cannot outrank the config file (see module docstring).
    return None if value in ("", "no") else value


def resolve_mixed_precision(
    overrides: Mapping[str, Any], environ: Mapping[str, str] | None = None
) -> tuple[dict[str, Any], str]:
    """`overrides` plus the launcher's precision where the command line set none, and where the value comes from."""
    overrides = dict(overrides)
    if MIXED_PRECISION_KEY in overrides:
        return overrides, FROM_COMMAND_LINE
    launcher = launcher_mixed_precision(environ)
    if launcher is not None:
        overrides[MIXED_PRECISION_KEY] = launcher
        return overrides, f"accelerate launcher or config ({LAUNCHER_MIXED_PRECISION_ENV}={launcher})"
    return overrides, FROM_CONFIG_FILE


def load_config_with_overrides(
    load: Callable[[dict[str, Any]], ConfigT], overrides: Mapping[str, Any], environ: Mapping[str, str] | None = None
) -> tuple[ConfigT, dict[str, Any]]:
    """Calls `load(overrides)` (a strict config loader) with the launcher's mixed precision resolved in.

    Returns the config and the record that goes into `training_config.json`: the command-line overrides, the
    effective `training.mixed_precision` and where it came from.
    """
    resolved, source = resolve_mixed_precision(overrides, environ)
    try:
        config = load(resolved)
    except ConfigError as error:
        if MIXED_PRECISION_KEY in str(error) and source != FROM_CONFIG_FILE:
            raise ConfigError(f"{error} (training.mixed_precision came from the {source}.)") from None
        raise
    record = {
        "command_line_overrides": dict(overrides),
        "mixed_precision": config.training.mixed_precision,
        "mixed_precision_source": source,
    }
    return config, record


def hub_repo_id(args: argparse.Namespace) -> str | None:
    """The repository `--push_to_hub` will push to, validated now (before any training), or None without the flag."""
    hub_flags = [
        flag
        for flag, given in (
            ("--hub_model_id", args.hub_model_id),
            ("--hub_token", args.hub_token),
            ("--hub_private_repo", args.hub_private_repo),
        )
        if given
    ]
    if not args.push_to_hub:
        if hub_flags:
            raise ConfigError(
                f"{', '.join(hub_flags)} given without --push_to_hub; add --push_to_hub to push the model."
            )
        return None
    if not args.hub_model_id:
        # diffusers would push to `<your user>/<output_dir name>`; naming the repository is one flag and never pushes
        # a multi-day run to an account or name nobody chose.
        raise ConfigError(
            f"--push_to_hub needs --hub_model_id, the repository to create or update, e.g. --hub_model_id "
            f"your-name/{Path(args.output_dir).name}."
        )
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(args.hub_model_id)
    except HFValidationError as error:
        raise ConfigError(f"--hub_model_id {args.hub_model_id!r} is not a valid repository id: {error}") from None
    return args.hub_model_id


def push_final_model(args: argparse.Namespace, repo_id: str, model_dir: str | Path) -> str | None:
    """Pushes `model_dir` with its model card from the main process (the others return None); returns the URL.

    Call it after the run has saved everything and every rank is done.
    """
    from accelerate import PartialState

    if not PartialState().is_main_process:
        return None
    from ..hub import push_to_hub  # lazy: training without --push_to_hub never imports the Hub code

    url = push_to_hub(str(model_dir), repo_id, token=args.hub_token, private=args.hub_private_repo)
    logger.info(f"Pushed {model_dir} to {url}")
    return url
