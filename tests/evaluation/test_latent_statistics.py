"""Latent statistics: streaming math, the write into config.json, and the round trip through from_pretrained."""

import json
import shutil

import numpy as np
import pytest
import torch

from diffusers_aligntok import AlignedAutoencoderKL
from diffusers_aligntok.evaluation import (
    LatentStatistics,
    compute_latent_statistics,
    load_tokenizer,
    write_latent_statistics,
)
from diffusers_aligntok.evaluation.streaming import build_evaluation_dataset
from tests.testing_utils import load_script


def test_latent_statistics_match_numpy_and_merge():
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(30, 4, 3, 5, generator=generator) * torch.tensor([1.0, 2.0, 0.5, 3.0]).view(1, 4, 1, 1)
    latents += torch.tensor([0.0, -1.0, 4.0, 2.0]).view(1, 4, 1, 1)
    statistics = LatentStatistics(4)
    for chunk in latents.split(7):
        statistics.update(chunk)
    values = latents.double().transpose(0, 1).flatten(1).numpy()
    np.testing.assert_allclose(statistics.mean, values.mean(1), rtol=1e-12)
    np.testing.assert_allclose(statistics.std, values.std(1), rtol=1e-12)
    assert statistics.global_mean == pytest.approx(values.mean(), rel=1e-12)
    assert statistics.global_std == pytest.approx(values.std(), rel=1e-12)
    summary = statistics.to_dict()
    assert summary["shift_factor"] == summary["global_mean"]
    assert summary["scaling_factor"] == pytest.approx(1 / values.std())
    assert summary["num_images"] == 30
    halves = LatentStatistics(4).update(latents[:11]).merge(LatentStatistics(4).update(latents[11:]))
    np.testing.assert_allclose(halves.std, statistics.std, rtol=1e-12)


def _normalized_latents(model_dir, dataset):
    model = AlignedAutoencoderKL.from_pretrained(model_dir).eval()
    images = torch.stack([dataset[index]["pixel_values"] for index in range(len(dataset))])
    with torch.no_grad():
        return model, model.normalize_latents(model.encode(images).latent_dist.mode()).double()


@pytest.mark.parametrize("normalization", ["per-channel", "global"])
def test_written_statistics_round_trip_through_from_pretrained(tiny_aligntok_dir, tmp_path, normalization):
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_aligntok_dir, model_dir)
    dataset = build_evaluation_dataset("builtin:shapes", "train", 32, num_samples=24, seed=5)
    statistics = compute_latent_statistics(load_tokenizer(str(model_dir)), dataset, batch_size=10, show_progress=False)
    written = write_latent_statistics(model_dir, statistics, normalization)

    model, normalized = _normalized_latents(model_dir, dataset)
    per_channel = normalized.transpose(0, 1).flatten(1)
    if normalization == "per-channel":
        assert model.config.latents_mean == pytest.approx(statistics.mean.tolist())
        assert model.config.scaling_factor == 1.0 and written["shift_factor"] == 0.0
        torch.testing.assert_close(per_channel.mean(1), torch.zeros(8, dtype=torch.float64), atol=1e-5, rtol=0)
        torch.testing.assert_close(
            per_channel.std(1, unbiased=False), torch.ones(8, dtype=torch.float64), atol=1e-5, rtol=0
        )
    else:
        assert model.config.latents_mean is None
        assert model.config.shift_factor == pytest.approx(statistics.global_mean)
        assert normalized.mean().item() == pytest.approx(0.0, abs=1e-5)
        assert normalized.std(unbiased=False).item() == pytest.approx(1.0, abs=1e-5)
    # Only the normalisation fields changed; the file stays a diffusers config.
    config = json.loads((model_dir / "config.json").read_text())
    assert config["_class_name"] == "AlignedAutoencoderKL" and config["latent_channels"] == 8


def test_write_refuses_other_classes_and_channel_mismatches(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"_class_name": "AutoencoderDC", "latent_channels": 4}))
    with pytest.raises(ValueError, match="only \\['AlignedAutoencoderKL', 'AutoencoderKL'\\]"):
        write_latent_statistics(tmp_path, LatentStatistics(4).update(torch.zeros(1, 4, 2, 2)))
    (tmp_path / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL", "latent_channels": 16}))
    with pytest.raises(ValueError, match="latent_channels=16"):
        write_latent_statistics(tmp_path, LatentStatistics(4).update(torch.zeros(1, 4, 2, 2)))


def test_compute_latent_statistics_command_writes_the_config(tiny_aligntok_dir, tmp_path, capsys):
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_aligntok_dir, model_dir)
    script = load_script("training/compute_latent_statistics.py")
    summary = script.main(
        [
            "--model",
            str(model_dir),
            "--data",
            "builtin:shapes",
            "--num_samples",
            "12",
            "--batch_size",
            "6",
            "--write",
            "--output_json",
            str(tmp_path / "stats.json"),
        ]
    )
    printed = capsys.readouterr().out
    assert "shift_factor" in printed and "scaling_factor" in printed and "Wrote per-channel" in printed
    assert summary["statistics"]["num_images"] == 12 and summary["data"]["resolution"] == 32  # the model's sample_size
    stored = json.loads((tmp_path / "stats.json").read_text())
    assert AlignedAutoencoderKL.load_config(model_dir)["latents_std"] == pytest.approx(
        stored["statistics"]["latents_std"]
    )
