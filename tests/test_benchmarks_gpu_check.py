"""`benchmarks/gpu/check.py` on the CPU with `--quick`: every section of the device script runs (or says why it
skipped), so the script a lent GPU runs once has not rotted since. The GPU itself is never needed here."""

import json
import os
import subprocess
import sys

from tests.testing_utils import REPO_ROOT


def test_gpu_check_runs_every_section_on_the_cpu(tmp_path):
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO_ROOT)}
    environment.pop("OUT", None)
    subprocess.run(
        [sys.executable, "benchmarks/gpu/check.py", "--device", "cpu", "--quick", "--out_dir", str(tmp_path)],
        cwd=REPO_ROOT,
        env=environment,
        check=True,
        timeout=600,
    )
    rows = json.loads((tmp_path / "gpu_check_cpu_smoke.json").read_text())["rows"]
    failed = [row for row in rows if row["status"] != "ok" and not row["status"].startswith("skipped")]
    assert not failed, failed
    measured = {row["name"] for row in rows if row["status"] == "ok"}
    # The CUDA-only and --quick-only skips aside, every section measured something.
    for name in ("tokenizer encode", "tokenizer decode", "DiT train step", "tokenizer train step", "FSDP smoke"):
        assert name in measured, (name, sorted(measured))
    assert all(row["value"] == 0 for row in rows if row["name"].startswith("nan check"))
    assert "| name | setting |" in (tmp_path / "gpu_check_cpu_smoke.md").read_text()
