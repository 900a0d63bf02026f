"""Atomic export of trained models and pipelines, shared by the training loops."""

from pathlib import Path

from ..utils import atomic_path


def save_pretrained_atomically(model_or_pipeline, directory: str | Path) -> Path:
    """`save_pretrained` into a temporary directory beside `directory`, then swap it in (`utils.atomic_path`): a kill
    at any moment leaves the previous export or the new one, never half of one."""
    directory = Path(directory)
    with atomic_path(directory) as temporary:
        model_or_pipeline.save_pretrained(temporary)
    return directory
