"""Crash-safe accelerate checkpoints: written to a temporary directory, renamed when complete, rotated.

A kill during a write leaves only a `checkpoint-N.incomplete` directory, which `--resume_from_checkpoint latest`
ignores, so the previous checkpoint stays usable. Each checkpoint holds the tokenizer in diffusers format
(`tokenizer/`, loadable with `AlignedAutoencoderKL.from_pretrained`), the discriminator, optimizers, schedulers, EMA,
RNG states of every rank, and `training_state.json` (step, model config) which a resume checks against the current run.

Under data parallelism (DDP) every rank must hold the same weights after every optimiser step; a forward that bypasses
the prepared module trains each rank's copy apart without any error. Each checkpoint therefore records a fingerprint
of every trained model on every rank (`rank_parameter_fingerprints`) and stops the run if the ranks disagree.
"""

import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import DistributedType

from ..utils import INCOMPLETE_SUFFIX, to_jsonable


logger = get_logger(__name__)

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
TRAINING_STATE_FILE = "training_state.json"


def list_checkpoints(checkpoints_dir: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    checkpoints_dir = Path(checkpoints_dir)
    if not checkpoints_dir.is_dir():
        return []
    found = [
        (int(m.group(1)), path) for path in checkpoints_dir.iterdir() if (m := CHECKPOINT_PATTERN.match(path.name))
    ]
    return [path for _, path in sorted(found)]


def resolve_resume_checkpoint(checkpoints_dir: str | Path, resume_from_checkpoint: str | None) -> Path | None:
    if not resume_from_checkpoint:
        return None
    if resume_from_checkpoint == "latest":
        checkpoints = list_checkpoints(checkpoints_dir)
        if not checkpoints:
            logger.warning(f"--resume_from_checkpoint latest: no checkpoint in {checkpoints_dir}; starting fresh.")
            return None
        return checkpoints[-1]
    path = Path(resume_from_checkpoint)
    if not path.is_absolute() and not path.exists():
        path = Path(checkpoints_dir) / resume_from_checkpoint
    if not (path / TRAINING_STATE_FILE).is_file():
        raise FileNotFoundError(
            f"{path} is not a complete training checkpoint (no {TRAINING_STATE_FILE}). Use 'latest' or one of "
            f"{[p.name for p in list_checkpoints(checkpoints_dir)]}."
        )
    return path


class RanksOutOfSyncError(RuntimeError):
    """Data-parallel ranks hold different weights: their gradients were not averaged (a bug, never a user error)."""


# Sharded strategies hold a different slice of each parameter on every rank, so per-rank fingerprints differ by design.
_SHARDED_DISTRIBUTED_TYPES = (DistributedType.FSDP, DistributedType.DEEPSPEED)


def parameter_fingerprint(model: torch.nn.Module) -> list[float]:
    """`[sum, sum of squares, position-weighted sum]` of a model's parameters in float64: equal weights, equal lists.

    The position weight (the parameter's index + 1) makes two parameters that swapped values fingerprint differently.
    """
    totals = torch.zeros(3, dtype=torch.float64)
    for index, parameter in enumerate(model.parameters()):
        values = parameter.detach().double()
        totals += torch.stack([values.sum(), values.square().sum(), values.sum() * (index + 1)]).cpu()
    return totals.tolist()


def rank_parameter_fingerprints(
    accelerator: Accelerator, models: dict[str, torch.nn.Module]
) -> dict[str, list[list[float]]]:
    """Every rank's [`parameter_fingerprint`] of each model, gathered: `{name: [rank 0's, rank 1's, ...]}`.

    Raises [`RanksOutOfSyncError`] naming the models whose ranks disagree. Every rank must call it. Under FSDP and
    DeepSpeed (sharded weights) nothing is compared and an empty mapping is returned.
    """
    if accelerator.distributed_type in _SHARDED_DISTRIBUTED_TYPES or not models:
        return {}
    local = torch.tensor(
        [parameter_fingerprint(accelerator.unwrap_model(model)) for model in models.values()],
        dtype=torch.float64,
        device=accelerator.device,
    )
    gathered = accelerator.gather(local.unsqueeze(0)).cpu()  # (num_processes, num_models, 3)
    fingerprints = {name: gathered[:, index].tolist() for index, name in enumerate(models)}
    diverged = [name for name, per_rank in fingerprints.items() if any(row != per_rank[0] for row in per_rank)]
    if diverged:
        raise RanksOutOfSyncError(
            f"The data-parallel ranks hold different weights for {diverged} (per-rank fingerprints "
            f"{ {name: fingerprints[name] for name in diverged} }): their gradients were not averaged. Every forward "
            "that carries gradients must go through the module returned by `accelerator.prepare`."
        )
    return fingerprints


def save_checkpoint(
    accelerator: Accelerator,
    checkpoints_dir: str | Path,
    global_step: int,
    training_state: dict[str, Any],
    total_limit: int | None,
    extra_save: Callable[[Path], None] | None = None,
    synchronized_models: dict[str, torch.nn.Module] | None = None,
) -> Path:
    """Saves the full training state at `global_step` atomically; every rank must call it.

    `extra_save(directory)`, if given, runs on every rank after accelerate's state is written and before the rename,
    for per-rank state accelerate does not know (the sharded EMA of an FSDP run).

    `synchronized_models` (`{name: prepared model}`) are the trained models whose weights every data-parallel rank
    must share: their per-rank fingerprints go into `training_state.json` and a disagreement raises
    [`RanksOutOfSyncError`] before anything is written, so the last good checkpoint stays the latest.
    """
    fingerprints = rank_parameter_fingerprints(accelerator, synchronized_models or {})
    checkpoints_dir = Path(checkpoints_dir)
    final_path = checkpoints_dir / f"checkpoint-{global_step}"
    temporary_path = checkpoints_dir / f"checkpoint-{global_step}{INCOMPLETE_SUFFIX}"
    if accelerator.is_main_process:
        shutil.rmtree(temporary_path, ignore_errors=True)
        temporary_path.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(temporary_path))
    if extra_save is not None:
        extra_save(temporary_path)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        with open(temporary_path / TRAINING_STATE_FILE, "w", encoding="utf-8") as handle:
            state = {**training_state, "global_step": global_step, "rank_parameter_fingerprints": fingerprints}
            json.dump(state, handle, indent=2, default=str)
            handle.flush()
            os.fsync(handle.fileno())
        if final_path.exists():
            shutil.rmtree(final_path)
        os.replace(temporary_path, final_path)
        _rotate(checkpoints_dir, total_limit)
        logger.info(f"Saved checkpoint {final_path}")
    accelerator.wait_for_everyone()
    return final_path


def _rotate(checkpoints_dir: Path, total_limit: int | None) -> None:
    if total_limit is None:
        return
    checkpoints = list_checkpoints(checkpoints_dir)
    for stale in checkpoints[: max(0, len(checkpoints) - total_limit)]:
        shutil.rmtree(stale, ignore_errors=True)


def read_training_state(checkpoint_path: str | Path) -> dict[str, Any]:
    with open(Path(checkpoint_path) / TRAINING_STATE_FILE, encoding="utf-8") as handle:
        return json.load(handle)


def check_resume_compatible(checkpoint_path: Path, expected_state: dict[str, Any]) -> dict[str, Any]:
    """Refuses to resume a checkpoint whose recorded state differs from `expected_state` (a stage, a model config...).

    Nested dicts (model configs) are compared key by key, so the error names exactly what changed.
    """
    state = read_training_state(checkpoint_path)
    differences = []
    for name, expected in expected_state.items():
        saved = state.get(name)
        expected = to_jsonable(expected)
        if isinstance(expected, dict) and isinstance(saved, dict):
            keys = sorted(
                k for k in set(saved) | set(expected) if not k.startswith("_") and saved.get(k) != expected.get(k)
            )
            differences += [f"{name}.{k}: checkpoint {saved.get(k)!r} vs now {expected.get(k)!r}" for k in keys]
        elif saved != expected:
            differences.append(f"{name}: checkpoint {saved!r} vs now {expected!r}")
    if differences:
        raise ValueError(
            f"Cannot resume from {checkpoint_path}: {'; '.join(differences)}. Resume with the configuration the "
            "checkpoint was made with, or start a new --output_dir."
        )
    return state
