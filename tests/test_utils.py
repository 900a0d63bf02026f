"""`atomic_path`: a write that fails or is killed leaves the previous version, for files and directories; the shared
metric format and settings fingerprint."""

import json
import os
import subprocess
import sys

import pytest

from diffusers_aligntok.utils import (
    INCOMPLETE_SUFFIX,
    atomic_path,
    format_metric,
    is_incomplete,
    settings_fingerprint,
    to_jsonable,
    write_json,
)


def test_a_file_appears_only_when_complete(tmp_path):
    path = tmp_path / "results.json"
    path.write_text("old")
    with atomic_path(path) as temporary:
        temporary.write_text("new")
        assert path.read_text() == "old"  # readers see the old version until the block ends
        assert is_incomplete(temporary) and temporary.parent == path.parent
    assert path.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def test_an_error_inside_the_block_keeps_the_previous_file_and_removes_the_temporary(tmp_path):
    path = tmp_path / "stats.npz"
    path.write_bytes(b"previous")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(path) as temporary:
            temporary.write_bytes(b"half")
            raise RuntimeError("disk full")
    assert path.read_bytes() == b"previous"
    assert not (tmp_path / ("stats.npz" + INCOMPLETE_SUFFIX)).exists()


def test_a_directory_is_replaced_whole(tmp_path):
    path = tmp_path / "model"
    path.mkdir()
    (path / "stale.bin").write_text("stale")
    with atomic_path(path) as temporary:
        temporary.mkdir()
        (temporary / "config.json").write_text("{}")
    assert sorted(p.name for p in path.iterdir()) == ["config.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_a_leftover_of_a_killed_write_is_cleared_and_a_kill_mid_write_keeps_the_old_version(tmp_path):
    path = tmp_path / "metadata.json"
    path.write_text("old")
    # A process killed inside the block: the destination still holds the old version.
    script = (
        "import os, sys\n"
        "from diffusers_aligntok.utils import atomic_path\n"
        f"with atomic_path({str(path)!r}) as temporary:\n"
        "    temporary.write_text('partial')\n"
        "    os._exit(9)\n"
    )
    assert subprocess.run([sys.executable, "-c", script]).returncode == 9
    assert path.read_text() == "old"
    leftover = tmp_path / ("metadata.json" + INCOMPLETE_SUFFIX)
    assert leftover.read_text() == "partial"
    write_json(path, {"step": 3})
    assert json.loads(path.read_text()) == {"step": 3} and not leftover.exists()


def test_nothing_written_is_an_error_not_a_silent_deletion(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("keep")
    with pytest.raises(FileNotFoundError, match="Nothing was written"):
        with atomic_path(path):
            pass
    assert path.read_text() == "keep"


def test_to_jsonable_converts_tuples_paths_and_dtypes():
    import torch

    path = os.path.join("a", "b")
    assert to_jsonable({"size": (2, 3), "path": path, "dtype": torch.bfloat16}) == {
        "size": [2, 3],
        "path": path,
        "dtype": "torch.bfloat16",
    }


def test_format_metric_marks_failed_measurements():
    assert format_metric(3.14159, 2) == "3.14"
    assert format_metric(0.8125, 1, 100, "%") == "81.2%"
    # A NaN or infinite FID is a failed measurement; None, text and booleans are not numbers to print.
    for value in (None, float("nan"), float("inf"), "3.1", True):
        assert format_metric(value, 2) == "-"


def test_settings_fingerprint_ignores_key_order_and_sees_every_value():
    settings = {"seed": 0, "guidance_scale": 1.5, "shape": (4, 32, 32)}
    reordered = {"shape": [4, 32, 32], "guidance_scale": 1.5, "seed": 0}
    assert settings_fingerprint(settings) == settings_fingerprint(reordered)
    assert len(settings_fingerprint(settings)) == 24 and len(settings_fingerprint(settings, length=None)) == 64
    assert settings_fingerprint({**settings, "seed": 1}) != settings_fingerprint(settings)
