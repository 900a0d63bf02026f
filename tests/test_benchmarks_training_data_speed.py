"""`benchmarks/training_speed.py` and `benchmarks/data_speed.py` in `--quick` mode on a subset: every row is timed."""

import importlib.util
import json
from pathlib import Path


REPO_ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_training_speed_then_data_speed_quick(tmp_path):
    training_speed = _load("training_speed")
    training_speed.main(
        ["--quick", "--models", "dit_B", "t2i_aligntok", "--threads", "1", "--output_dir", str(tmp_path)]
    )
    results = json.loads((tmp_path / "training_speed.json").read_text())
    assert [row["model"] for row in results["rows"]] == ["dit_B", "t2i_aligntok"]
    for row in results["rows"]:
        assert row["status"] == "ok", row["status"]
        assert row["total_s"] > 0 and row["images_per_s"] > 0 and row["flops_per_step"] > 0
        assert all(row[f"{phase}_s"] >= 0 for phase in ("backward", "optimizer", "ema"))
        assert row["backward_s"] > 0 and row["optimizer_s"] > 0
    assert "Training-step speed" in (tmp_path / "training_speed.md").read_text()

    data_speed = _load("data_speed")
    data_speed.main(["--quick", "--pipelines", "dit_latents", "t2i_cache", "--output_dir", str(tmp_path)])
    results = json.loads((tmp_path / "data_speed.json").read_text())
    assert [row["pipeline"] for row in results["rows"]] == ["dit_latents", "t2i_cache"]
    for row in results["rows"]:
        assert row["status"] == "ok", row["status"]
        assert row["recipe_workers"]["overall_images_per_s"] > 0
    # The quick training rows are at tiny sizes (not 256), but the DiT latents feed the DiT step at any size.
    assert results["steps_source"] and any(c["step"] == "dit_B" for c in results["rows"][0]["comparisons"])
