"""Small helpers shared by the training loops: the Accelerator, atomic exports and JSON-friendly configs."""

import json
import os
import shutil
from pathlib import Path
from typing import Any


def build_accelerator(training_config, project_dir: str | Path):
    """The `Accelerator` of a training run, from a config with the usual `training:` fields; seeds everything."""
    from accelerate import Accelerator, DataLoaderConfiguration
    from accelerate.utils import ProjectConfiguration, set_seed

    project_dir = Path(project_dir)
    report_to = training_config.report_to
    accelerator = Accelerator(
        gradient_accumulation_steps=training_config.gradient_accumulation_steps,
        mixed_precision=training_config.mixed_precision,
        log_with=None if report_to in ("", "none") else report_to,
        project_config=ProjectConfiguration(project_dir=str(project_dir), logging_dir=str(project_dir / "logs")),
        # Epoch-seeded shuffling makes the data order a function of (seed, epoch), so a resume replays it exactly.
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=training_config.seed),
    )
    set_seed(training_config.seed)
    return accelerator


def save_pretrained_atomically(model_or_pipeline, directory: str | Path) -> Path:
    """`save_pretrained` into `<directory>.incomplete`, then rename: a kill mid-write never leaves a half model."""
    directory = Path(directory)
    temporary = directory.with_name(directory.name + ".incomplete")
    shutil.rmtree(temporary, ignore_errors=True)
    model_or_pipeline.save_pretrained(temporary)
    if directory.exists():
        shutil.rmtree(directory)
    os.replace(temporary, directory)
    return directory


def write_training_config(
    directory: str | Path, config: dict[str, Any], run_record: dict[str, Any] | None, accelerator
) -> Path:
    """`<directory>/training_config.json`: the effective config, plus under `run` what the command line decided
    (`cli.load_config_with_overrides`) and the precision accelerate actually runs with."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    run = {**(run_record or {}), "accelerator_mixed_precision": accelerator.mixed_precision}
    path = directory / "training_config.json"
    path.write_text(json.dumps({**config, "run": to_jsonable(run)}, indent=2))
    return path


def to_jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def flatten_for_trackers(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config dict -> flat `{"a.b": scalar}`, the form tensorboard's hparams accept."""
    flat = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_for_trackers(value, f"{name}."))
        else:
            flat[name] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return flat
