"""Small helpers shared by the training loops: atomic exports and JSON-friendly configs."""

import json
import os
import shutil
from pathlib import Path
from typing import Any


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
