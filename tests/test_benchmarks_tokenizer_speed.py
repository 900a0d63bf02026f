"""`benchmarks/tokenizer_speed.py` at its smallest: the tiny preset against the FLUX VAE, one 32x32 round."""

import json

import pytest
import torch

from tests.testing_utils import load_script


def test_tokenizer_speed_writes_ratios_to_the_flux_vae(tmp_path):
    benchmark = load_script("benchmarks/tokenizer_speed.py")
    benchmark.main(
        [
            "--models", "tiny", "--resolutions", "32", "--batch_sizes", "1", "--dtypes", "fp32",
            "--repeats", "1", "--warmup", "0", "--threads", "1", "--tiling_check_resolution", "0",
            "--output_dir", str(tmp_path),
        ]
    )  # fmt: skip
    results = json.loads((tmp_path / "tokenizer_speed.json").read_text())
    rows = {row["model"]: row for row in results["timing"]}
    assert set(rows) == {"tiny", "flux-vae"}
    for key in ("encode", "decode", "roundtrip"):
        assert rows["flux-vae"][f"{key}_ratio"] == 1.0
        assert rows["tiny"][f"{key}_ratio"] > 0
        assert all(row[f"{key}_s_per_image"] > 0 for row in rows.values())
    assert rows["tiny"]["latent"] == "8x8x8"  # the tiny preset is f4 with 8 channels
    assert "| setting | model |" in (tmp_path / "tokenizer_speed.md").read_text()


def test_tokenizer_speed_times_and_tiles_a_saved_model_and_counts_parameters(tmp_path):
    from diffusers_aligntok import PRESETS, AlignedAutoencoderKL

    benchmark = load_script("benchmarks/tokenizer_speed.py")
    AlignedAutoencoderKL.from_preset("tiny").save_pretrained(tmp_path / "tiny_vae")
    results = benchmark.main(
        [
            "--model", str(tmp_path / "tiny_vae"), "--resolutions", "32", "--batch_sizes", "1", "--dtypes", "fp32",
            "--repeats", "1", "--warmup", "0", "--threads", "1", "--tiling_check_resolution", "32",
            "--tile_size", "16", "--output_dir", str(tmp_path),
        ]
    )  # fmt: skip
    assert {row["model"] for row in results["timing"]} == {"saved", "flux-vae"}
    (tiling,) = results["tiling_check"]
    assert tiling["model"] == "saved" and tiling["status"] == "ok" and tiling["mean_abs_diff"] > 0
    # Keeping the attention stem whole brings the tiled decode closer to untiled than tiling the whole decoder.
    assert tiling["mean_abs_diff"] < tiling["whole_decoder_tiling_mean_abs_diff"]
    assert any(t["target"] == "tiled 32 decode MAE <= 1e-2 (trained weights)" for t in results["targets"])
    # Parameter counts from the meta device equal a count of the real model, part by part.
    counts = {row["model"]: row for row in results["parameters"]}
    assert {f"preset {name}" for name in PRESETS} | {"flux-vae"} == set(counts)
    tiny = AlignedAutoencoderKL.from_preset("tiny")
    assert counts["preset tiny"]["total"] == sum(p.numel() for p in tiny.parameters())
    assert counts["preset tiny"]["adapter"] == sum(p.numel() for p in tiny.adapter.parameters())
    assert counts["preset tiny"]["other"] == 0
    assert "## Parameters" in (tmp_path / "tokenizer_speed.md").read_text()


def test_tokenizer_speed_refuses_saved_without_a_model(tmp_path):
    benchmark = load_script("benchmarks/tokenizer_speed.py")
    with pytest.raises(SystemExit):
        benchmark.main(["--models", "saved", "--output_dir", str(tmp_path)])


def test_tokenizer_speed_variants_time_the_changed_models_in_the_same_rounds(tmp_path):
    benchmark = load_script("benchmarks/tokenizer_speed.py")
    results = benchmark.main(
        [
            "--models", "tiny", "--variants", "slicing", "channels_last", "--resolutions", "32", "--batch_sizes", "2",
            "--dtypes", "fp32", "--repeats", "1", "--warmup", "1", "--threads", "1", "--tiling_check_resolution", "0",
            "--output_dir", str(tmp_path),
        ]
    )  # fmt: skip
    rows = {row["model"]: row for row in results["timing"]}
    expected = {f"{name}{variant}" for name in ("tiny", "flux-vae") for variant in ("", "+slicing", "+channels_last")}
    assert set(rows) == expected
    assert rows["flux-vae+slicing"]["runs"]["decode"] and rows["tiny+slicing"]["latent"] == "8x8x8"
    assert all(set(row["first_call_s"]) == {"encode", "decode"} for row in rows.values())
    models = {name: benchmark.MODELS[name].build(32) for name in ("tiny+slicing", "tiny+channels_last")}
    assert models["tiny+slicing"].use_slicing
    assert models["tiny+channels_last"].decoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last)


def test_time_budget_skips_a_setting_estimated_to_end_past_it(tmp_path):
    benchmark = load_script("benchmarks/tokenizer_speed.py")
    args = benchmark.parse_args(["--models", "tiny", "--tile_size", "256"])
    rows = [
        {"model": name, "resolution": 256, "batch": 1, "dtype": "fp32", "tiled": "no", "roundtrip_s_per_image": t}
        for name, t in (("tiny", 2.0), ("flux-vae", 3.0))
    ]
    setting = benchmark.Setting(1024, 1, "fp32", True, ("tiny", "flux-vae"), 1, 0)
    # 16x the pixels, and 5x5 tiles of 256 cover 1280x1280 of a 1024 image: 1.5625x the area.
    assert benchmark.estimated_seconds("setting", setting, ["tiny", "flux-vae"], rows, args) == pytest.approx(
        (2.0 + 3.0) * 16 * 1.5625
    )
    batched = benchmark.Setting(256, 8, "fp32", False, ("tiny",), 3, 1)
    assert benchmark.estimated_seconds("setting", batched, ["tiny"], rows, args) == pytest.approx(2.0 * 8 * 4)
    # The tiling check: three round trips at 1024, two of them tiled (ours and the whole-decoder reference).
    assert benchmark.estimated_seconds("tiling_check", None, ["tiny"], rows, args) == pytest.approx(
        2.0 * 16 * (1 + 2 * 1.5625)
    )
    assert benchmark.estimated_seconds("setting", setting, ["sd-vae"], rows, args) is None  # nothing measured yet

    # End to end: the first setting always runs; the tiling check, estimated at far more than the budget (the tiny
    # model's 32 px round trip times 16384 for 4096 px), is skipped before it starts, not after.
    results = benchmark.main(
        [
            "--models", "tiny", "--resolutions", "32", "--batch_sizes", "1", "--dtypes", "fp32", "--repeats", "1",
            "--warmup", "0", "--threads", "1", "--tiling_check_resolution", "4096", "--tiling_check_models", "tiny",
            "--tile_size", "16", "--time_budget_s", "60", "--output_dir", str(tmp_path),
        ]
    )  # fmt: skip
    assert {row["resolution"] for row in results["timing"]} == {32} and "tiling_check" not in results
    (skipped,) = [line for line in results["skipped"] if "tiled vs untiled decode at 4096" in line]
    assert "estimated" in skipped and "past the 60s budget" in skipped
