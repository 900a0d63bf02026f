"""Shared pieces of the tests that compare 2 CPU ranks with one process: the launch, and the rank-sync check."""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from diffusers_aligntok.training.checkpointing import list_checkpoints


REPO_ROOT = Path(__file__).resolve().parents[2]


def launch_two_cpu_ranks(script: str, script_args: list[str], master_port: int) -> None:
    """Runs `training/<script>` on 2 CPU DDP ranks (accelerate reports MULTI_CPU, 2 of 2) and fails with its stderr."""
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(master_port),
        str(REPO_ROOT / "training" / script),
        *script_args,
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]


def assert_ranks_in_sync(checkpoints_dir: Path, model_name: str) -> list[list[list[float]]]:
    """Every checkpoint under `checkpoints_dir` recorded two identical rank fingerprints of `model_name`.

    Returns the per-checkpoint fingerprint rows, for comparisons with a one-process run.
    """
    checkpoints = list_checkpoints(checkpoints_dir)
    assert checkpoints, f"no checkpoint in {checkpoints_dir}"
    all_rows = []
    for checkpoint in checkpoints:
        rows = json.loads((checkpoint / "training_state.json").read_text())["rank_parameter_fingerprints"][model_name]
        assert len(rows) == 2 and rows[0] == rows[1], f"{checkpoint}: ranks hold different {model_name} weights"
        all_rows.append(rows)
    return all_rows


def assert_fingerprints_match_one_process(two_ranks_dir: Path, one_process_dir: Path, model_name: str) -> None:
    """The 2-rank run's fingerprint at each checkpoint equals the one-process run's, to float32 rounding."""
    for rows, checkpoint in zip(assert_ranks_in_sync(two_ranks_dir, model_name), list_checkpoints(two_ranks_dir)):
        state = json.loads((one_process_dir / checkpoint.name / "training_state.json").read_text())
        single = state["rank_parameter_fingerprints"][model_name][0]
        torch.testing.assert_close(torch.tensor(rows[0]), torch.tensor(single), rtol=1e-5, atol=1e-4)
