"""`benchmarks/tokenizer_speed.py` at its smallest: the tiny preset against the FLUX VAE, one 32x32 round."""

import json

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
