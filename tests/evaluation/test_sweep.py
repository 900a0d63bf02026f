"""The guidance-scale sweep layout both generation evaluations share."""

import numpy as np
import pytest
import torch
from PIL import Image

from diffusers_aligntok.evaluation.sweep import (
    SAMPLES_DIR,
    SAMPLES_GRID_PNG,
    check_guidance_scales,
    chunks_for_process,
    guidance_scale_dir,
    save_sample_grid,
    tf32_matmuls,
)


def test_sample_grid_is_near_square_in_file_name_order(tmp_path):
    scale_dir = guidance_scale_dir(tmp_path, 1.5)
    (scale_dir / SAMPLES_DIR).mkdir(parents=True)
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255)]
    for index, colour in enumerate(colours):
        Image.new("RGB", (4, 6), colour).save(scale_dir / SAMPLES_DIR / f"{index:05d}.png")
    notes: list[str] = []
    path = save_sample_grid(scale_dir, 5, notes)
    assert path == str(scale_dir / SAMPLES_GRID_PNG) and scale_dir.name == "cfg-1.5" and not notes
    grid = np.asarray(Image.open(path))
    assert grid.shape == (2 * 6, 3 * 4, 3)  # 5 images: 3 columns, 2 rows
    for index, colour in enumerate(colours):
        row, column = divmod(index, 3)
        assert tuple(grid[row * 6 + 3, column * 4 + 2]) == colour
    assert tuple(grid[6 + 3, 2 * 4 + 2]) == (255, 255, 255)  # the empty cell stays white


def test_sample_grid_notes_missing_pngs(tmp_path):
    notes: list[str] = []
    assert save_sample_grid(tmp_path / "cfg-1", 4, notes) is None
    assert "0 of the first 4 samples have PNGs" in notes[0]


def test_guidance_scales_and_chunk_plan():
    assert check_guidance_scales(None, 1.5, minimum=1.0, example="1,2") is None
    assert check_guidance_scales([1, 2.5], 1.0, minimum=1.0, example="1,2") == [1.0, 2.5]
    with pytest.raises(ValueError, match="twice"):
        check_guidance_scales([1.0, 1.0], 1.0, minimum=1.0, example="1,2")
    with pytest.raises(ValueError, match=">= 1"):
        check_guidance_scales(None, 0.5, minimum=1.0, example="1,2")
    plans = [chunks_for_process(7, rank, 3) for rank in range(3)]
    assert sorted(chunk for plan in plans for chunk in plan) == list(range(7))  # every chunk once
    with pytest.raises(ValueError, match="outside"):
        chunks_for_process(7, 3, 3)


def test_tf32_setting_is_restored():
    before = torch.backends.cuda.matmul.allow_tf32
    with tf32_matmuls(not before):
        assert torch.backends.cuda.matmul.allow_tf32 is (not before)
    assert torch.backends.cuda.matmul.allow_tf32 is before
