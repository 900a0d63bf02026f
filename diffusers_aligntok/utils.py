"""Small helpers every layer shares: atomic writes, JSON conversion and the number format of result tables.

Every file or directory the library writes that a later run reads (checkpoints, exported models, latent caches,
statistics, sample chunks, results) goes through [`atomic_path`], so a kill during the write leaves the previous
version, never a half-written one.
"""

import contextlib
import hashlib
import json
import math
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch


__all__ = [
    "INCOMPLETE_SUFFIX",
    "atomic_path",
    "format_metric",
    "is_incomplete",
    "settings_fingerprint",
    "to_jsonable",
    "tokenizer_fingerprint",
    "write_json",
    "write_text",
]

# The one temporary-name scheme: `<name>.incomplete` beside the destination (same filesystem, so the rename is atomic).
INCOMPLETE_SUFFIX = ".incomplete"


def is_incomplete(path: str | os.PathLike) -> bool:
    """True for the temporary name of an [`atomic_path`] write (a leftover of a killed run)."""
    return Path(path).name.endswith(INCOMPLETE_SUFFIX)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, fsync: bool = False) -> Iterator[Path]:
    """Yields a temporary path beside `path`; on a clean exit it replaces `path` with what was written there.

    Works for files and directories: write a file at the yielded path, or create a directory there and fill it. A
    leftover from a killed earlier write is removed first. If the block raises, the temporary is removed and `path` is
    untouched. An existing directory at `path` is moved aside, replaced, then deleted, so a kill at any moment leaves
    either the old or the new version under a recognisable name.

    Args:
        path: The destination.
        fsync (`bool`): Flush a written file to disk before the rename (for checkpoint state that must survive a
            power cut, not only a kill).

    Example:

        with atomic_path(output_dir / "results.json") as temporary:
            temporary.write_text(json.dumps(results))
    """
    path = Path(path)
    temporary = path.with_name(path.name + INCOMPLETE_SUFFIX)
    _remove(temporary)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield temporary
        if not temporary.exists():
            raise FileNotFoundError(f"Nothing was written at {temporary} inside `atomic_path({str(path)!r})`.")
        if fsync and temporary.is_file():
            with open(temporary, "rb") as handle:
                os.fsync(handle.fileno())
        if path.is_dir() and not path.is_symlink():
            replaced = path.with_name(path.name + ".replaced" + INCOMPLETE_SUFFIX)
            _remove(replaced)
            os.replace(path, replaced)
            os.replace(temporary, path)
            shutil.rmtree(replaced)
        else:
            os.replace(temporary, path)
    except BaseException:
        _remove(temporary)
        raise


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def to_jsonable(value: Any) -> Any:
    """`value` as plain JSON types: tuples become lists, paths, dtypes and other objects their `str`."""
    return json.loads(json.dumps(value, default=str))


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Writes `text` to `path` atomically (UTF-8)."""
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike, value: Any, indent: int = 2, sort_keys: bool = False) -> Path:
    """Writes `value` as JSON (through [`to_jsonable`]) to `path` atomically, with a final newline."""
    return write_text(path, json.dumps(to_jsonable(value), indent=indent, sort_keys=sort_keys) + "\n")


def format_metric(value: Any, digits: int, scale: float = 1.0, suffix: str = "") -> str:
    """A metric as a Markdown table cell: `value * scale` to `digits` decimals plus `suffix`; `-` for a missing,
    non-numeric or non-finite value (a NaN or an infinite FID is a failed measurement, not a number to rank)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        return "-"
    return f"{value * scale:.{digits}f}{suffix}"


def settings_fingerprint(settings: dict[str, Any], length: int | None = 24) -> str:
    """The SHA-256 of `settings` as canonical JSON (sorted keys; `str` for what JSON cannot hold), as hex cut to
    `length` characters. What a resumable run stores beside its partial results, to refuse resuming with others."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()
    return digest if length is None else digest[:length]


def tokenizer_fingerprint(tokenizer: torch.nn.Module) -> str:
    """A hash of the tokenizer's config and weights: a cache and a pipeline must agree on it."""
    digest = hashlib.sha256()
    config = dict(getattr(tokenizer, "config", {}))
    # Latent statistics and scaling do not change the latents themselves.
    for key in ("latents_mean", "latents_std", "scaling_factor", "shift_factor", "_name_or_path", "force_upcast"):
        config.pop(key, None)
    digest.update(json.dumps(config, sort_keys=True, default=str).encode())
    for name, tensor in sorted(tokenizer.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]
