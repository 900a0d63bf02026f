"""`benchmarks/toy_reproduction.py` end to end at a tiny scale: every arm, every output, finite metrics."""

import importlib.util
import json
import math
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def _load_benchmark():
    spec = importlib.util.spec_from_file_location("toy_reproduction", REPO_ROOT / "benchmarks" / "toy_reproduction.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_toy_reproduction_writes_a_finite_table_for_every_arm(tmp_path):
    benchmark = _load_benchmark()
    results_dir = tmp_path / "results"
    # 10 samples per class: 100 samples, more than the 96 feature dimensions, so the FID covariance is full rank.
    report = benchmark.main([
        "--seeds", "0", "--arms", *benchmark.ARMS, "--scale", "0.01", "--dit_eval_fractions", "0.5", "1.0", "--num_samples_per_class", "10",
        "--num_inference_steps", "3", "--num_dit_latents", "128", "--num_held_out", "100", "--num_probe_images", "60",
        "--output_dir", str(tmp_path / "runs"), "--results_dir", str(results_dir),
    ])
    saved = json.loads((results_dir / "toy_reproduction.json").read_text())
    markdown = (results_dir / "toy_reproduction.md").read_text()
    assert saved["arms"] == list(benchmark.ARMS) == report["arms"]
    for arm in benchmark.ARMS:
        assert benchmark.ARMS[arm] in markdown
        summary = saved["summary"][arm]
        assert 0 <= summary["linear_probe_top1"]["mean"] <= 1 and math.isfinite(summary["psnr"]["mean"])
        assert summary["reconstruction_fid"]["mean"] >= 0
        assert [point["step"] for point in summary["dit"]] == [point["step"] for point in saved["summary"]["aligntok"]["dit"]]
        assert len(summary["dit"]) == 2
        for point in summary["dit"]:
            assert math.isfinite(point["fid_cfg"]["mean"]) and 0 <= point["accuracy_cfg"]["mean"] <= 1
        assert math.isfinite(summary["dit"][-1]["fid_no_cfg"]["mean"])
        assert (tmp_path / "runs" / "seed0" / arm / "samples.png").is_file()
    assert saved["per_seed"][0]["seed"] == 0 and saved["wall_seconds"] > 0
