"""Every script in `examples/` runs against a local model directory: tiny models saved in tmp dirs, loaded by path,
outputs checked for existence and size. Each example is called through its `main(argv)`, in process."""

from pathlib import Path

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline
from PIL import Image

from diffusers_aligntok import AlignedAutoencoderKL, AlignTokDiTPipeline, LightningDiTTransformer2DModel
from tests.testing_utils import load_script, synthetic_test_image, tiny_flux_components


EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def grid_size(num_columns: int, height: int, width: int, padding: int = 2) -> tuple[int, int]:
    """PIL size of one `image_grid` row of `num_columns` images."""
    return num_columns * (width + padding) + padding, height + 2 * padding


def test_every_example_is_tested():
    tested = {"reconstruct", "flux_vae_swap", "text_to_image", "sample_dit"}
    assert {path.stem for path in EXAMPLES.glob("*.py")} == tested


@pytest.fixture(scope="module")
def flux_pipeline_dir(tmp_path_factory) -> Path:
    """A tiny FluxPipeline with an AlignTok VAE (f4, 8 channels; transformer with 2x2 packing), saved like a hub repo."""
    path = tmp_path_factory.mktemp("flux_pipeline")
    FluxPipeline(**tiny_flux_components()).save_pretrained(path)
    return path


def test_reconstruct_a_local_tokenizer(tmp_path):
    torch.manual_seed(0)
    AlignedAutoencoderKL.from_preset("tiny").save_pretrained(tmp_path / "tokenizer")
    synthetic_test_image(32, 48).save(tmp_path / "input.png")
    load_script("examples/reconstruct.py").main(
        [str(tmp_path / "input.png"), "--model", str(tmp_path / "tokenizer"), "--output_dir", str(tmp_path / "out")]
    )
    # The original and its reconstruction side by side.
    assert Image.open(tmp_path / "out" / "input_reconstruction.png").size == (2 * 48, 32)


def test_flux_vae_swap_from_local_directories(tmp_path, flux_pipeline_dir):
    output = tmp_path / "swap.png"
    load_script("examples/flux_vae_swap.py").main(
        [
            "--pretrained_model",
            str(flux_pipeline_dir),
            "--aligntok_vae",
            str(flux_pipeline_dir / "vae"),
            "--transformer",
            str(flux_pipeline_dir),
            "--transformer_subfolder",
            "transformer",
            "--height",
            "32",
            "--width",
            "48",
            "--steps",
            "2",
            "--output",
            str(output),
        ]
    )
    assert Image.open(output).size == (48, 32)


def test_text_to_image_from_a_local_pipeline(tmp_path, flux_pipeline_dir):
    output = tmp_path / "buckets.png"
    load_script("examples/text_to_image.py").main(
        [
            "--pipeline",
            str(flux_pipeline_dir),
            "--resolution",
            "32",
            "--aspect_ratios",
            "1:1",
            "--steps",
            "2",
            "--output",
            str(output),
        ]
    )
    assert Image.open(output).size == grid_size(1, 32, 32)


@pytest.fixture(scope="module")
def dit_pipeline_dir(tmp_path_factory) -> Path:
    """A tiny AlignTokDiTPipeline (2-layer DiT, 10 classes, on the tiny tokenizer's 8x8x8 latents of 32x32 images)."""
    path = tmp_path_factory.mktemp("dit_pipeline")
    torch.manual_seed(0)
    transformer = LightningDiTTransformer2DModel(
        sample_size=8, in_channels=8, hidden_size=32, num_layers=2, num_attention_heads=2, num_classes=10
    )
    pipeline = AlignTokDiTPipeline(
        transformer=transformer,
        vae=AlignedAutoencoderKL.from_preset("tiny"),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=2.0),
    )
    pipeline.save_pretrained(path)
    return path


@pytest.mark.parametrize("labels", [["1", "7"], []], ids=["given-labels", "default-labels"])
def test_sample_dit_from_a_local_pipeline(tmp_path, dit_pipeline_dir, labels):
    output = tmp_path / "samples.png"
    label_args = ["--class_labels", *labels] if labels else []
    load_script("examples/sample_dit.py").main(
        [
            "--pipeline",
            str(dit_pipeline_dir),
            *label_args,
            "--guidance_scale",
            "2.0",
            "--steps",
            "2",
            "--seed",
            "1",
            "--output",
            str(output),
        ]
    )
    # One 32x32 image per label; a 10-class pipeline without labels samples its first 8 classes.
    assert Image.open(output).size == grid_size(len(labels) or 8, 32, 32)
