"""Atomic export of trained models and pipelines, shared by the training loops."""

import os
import shutil
from pathlib import Path


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
