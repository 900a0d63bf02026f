"""How paths and ids appear in a public card: hub ids are kept, local paths are shortened."""

import os
from pathlib import Path
from typing import Any


def looks_like_hub_id(value: Any) -> bool:
    """Whether `value` reads as a hub id (`namespace/name`) rather than a local path or a built-in source."""
    if not isinstance(value, str) or value.count("/") != 1 or value.startswith((".", "/", "~")) or ":" in value:
        return False
    if Path(value).expanduser().exists():
        return False
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(value)
    except HFValidationError:
        return False
    return True


def display_path(value: Any) -> Any:
    """An absolute local path shortened to `.../<last two parts>` (a card should not publish a home directory);
    anything else unchanged."""
    if isinstance(value, str) and os.path.isabs(value) and len(Path(value).parts) > 3:
        return ".../" + "/".join(Path(value).parts[-2:])
    return value


def sanitized(value: Any) -> Any:
    """`value` (a config) with every absolute local path shortened by [`display_path`]."""
    if isinstance(value, dict):
        return {key: sanitized(item) for key, item in value.items()}
    if isinstance(value, list):
        return [sanitized(item) for item in value]
    return display_path(value)
