"""`benchmarks/training_speed.py`, `data_speed.py` and `optimizer_speed.py` in `--quick` mode on a subset: every row
is timed."""

import json

from tests.testing_utils import load_script


def test_training_speed_then_data_speed_quick(tmp_path):
    training_speed = load_script("benchmarks/training_speed.py")
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

    data_speed = load_script("benchmarks/data_speed.py")
    data_speed.main(["--quick", "--pipelines", "dit_latents", "t2i_cache", "--output_dir", str(tmp_path)])
    results = json.loads((tmp_path / "data_speed.json").read_text())
    assert [row["pipeline"] for row in results["rows"]] == ["dit_latents", "t2i_cache"]
    for row in results["rows"]:
        assert row["status"] == "ok", row["status"]
        assert row["recipe_workers"]["overall_images_per_s"] > 0
    # The quick training rows are at tiny sizes (not 256), but the DiT latents feed the DiT step at any size.
    assert results["steps_source"] and any(c["step"] == "dit_B" for c in results["rows"][0]["comparisons"])


def test_optimizer_speed_quick_times_every_implementation_against_the_default(tmp_path):
    results = load_script("benchmarks/optimizer_speed.py").main(
        ["--quick", "--threads", "1", "--output_dir", str(tmp_path)]
    )
    (model,) = results["models"]
    assert model["status"] == "ok" and model["parameters"] > 0
    rows = {(row["kind"], row["implementation"]): row for row in model["rows"]}
    assert set(rows) == {
        ("AdamW step", "torch default"),
        ("AdamW step", "foreach"),
        ("AdamW step", "fused (trainer)"),
        ("EMA step", "diffusers default"),
        ("EMA step", "foreach (trainer)"),
    }
    assert rows["AdamW step", "torch default"]["ratio"] == rows["EMA step", "diffusers default"]["ratio"] == 1.0
    assert all(row["median_s"] > 0 and row["ratio_min"] <= row["ratio"] <= row["ratio_max"] for row in rows.values())
    assert json.loads((tmp_path / "optimizer_speed_quick.json").read_text())["repeats"] == 3
    assert "| step | implementation |" in (tmp_path / "optimizer_speed_quick.md").read_text()
