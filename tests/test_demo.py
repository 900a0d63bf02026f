"""The README's main command (`make demo` -> `aligntok-demo`) at a hundredth of its step counts."""

import json
import subprocess
import sys

from PIL import Image

from diffusers_aligntok import AlignedAutoencoderKL, AlignTokDiTPipeline


def test_demo_runs_end_to_end_and_writes_every_output(tmp_path):
    output_dir = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "diffusers_aligntok.demo", "--output_dir", str(output_dir), "--scale", "0.01"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((output_dir / "demo_metrics.json").read_text())
    for stage in ("1", "2", "3"):
        assert metrics["stages"][stage]["psnr"] > 0
        assert 0 <= metrics["stages"][stage]["linear_probe_top1"] <= 1
        assert (output_dir / f"stage{stage}" / "reconstructions.png").is_file()
    # One PNG with originals above each stage's reconstructions: 4 rows of 10 images of 32x32 (2-pixel gaps), at 3x.
    with Image.open(output_dir / "reconstructions.png") as grid:
        assert grid.size == ((10 * 34 + 2) * 3, (4 * 34 + 2) * 3)
    assert (output_dir / "samples.png").is_file() and metrics["dit"]["loss_curve"]
    # The toy encoder went through transformers' save_pretrained and the real loading path.
    assert (output_dir / "foundation_encoder" / "config.json").is_file()
    assert 0 <= metrics["foundation_encoder"]["pretraining"]["held_out_accuracy"] <= 1
    AlignedAutoencoderKL.from_pretrained(output_dir / "stage3" / "model")
    AlignTokDiTPipeline.from_pretrained(output_dir / "dit" / "pipeline")
