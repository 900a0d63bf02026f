"""Shared tiny, offline pieces for the evaluation tests: saved tokenizers, an image folder, stand-in networks."""

import numpy as np
import pytest
import torch
from PIL import Image

from diffusers_aligntok import AlignedAutoencoderKL
from diffusers_aligntok.data import save_shapes_image_folder


def build_tiny_autoencoder_kl(seed: int = 0, num_levels: int = 3):
    """A diffusers `AutoencoderKL` with f = 2 ** (num_levels - 1), 4 latent channels, a few thousand parameters."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    channels = (8,) * (num_levels - 1) + (16,)
    return AutoencoderKL(
        block_out_channels=channels,
        down_block_types=("DownEncoderBlock2D",) * num_levels,
        up_block_types=("UpDecoderBlock2D",) * num_levels,
        latent_channels=4,
        norm_num_groups=4,
        layers_per_block=1,
        sample_size=32,
    ).eval()


class IdentityTokenizer:
    """The TokenizerAdapter protocol with a perfect tokenizer: the latent is the image (f = 1, 3 channels)."""

    name = "identity"
    spatial_factor = 1
    latent_channels = 3

    def encode(self, images):
        return images.float()

    def decode(self, latents):
        return latents.float()


@pytest.fixture(scope="session")
def tiny_aligntok_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tokenizers") / "tiny_aligntok"
    torch.manual_seed(0)
    AlignedAutoencoderKL.from_preset("tiny").save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_kl_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tokenizers") / "tiny_kl"
    build_tiny_autoencoder_kl().save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory):
    """24 labelled 40x40 shapes (10 classes) plus the awkward cases: a grayscale, an RGBA and a too-small image."""
    root = tmp_path_factory.mktemp("images")
    save_shapes_image_folder(root, num_images=24, resolution=40, seed=3)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (40, 40), dtype=np.uint8), mode="L").save(root / "circle" / "gray.png")
    rgba = rng.integers(0, 256, (48, 40, 4), dtype=np.uint8)
    Image.fromarray(rgba, mode="RGBA").save(root / "square" / "rgba.png")
    Image.fromarray(rng.integers(0, 256, (20, 28, 3), dtype=np.uint8)).save(root / "triangle" / "small.png")
    return root


@pytest.fixture(scope="session")
def standin_feature_extractor():
    from diffusers_aligntok.evaluation import build_fid_feature_extractor

    return build_fid_feature_extractor("random-inception-standin")


@pytest.fixture(scope="session")
def random_trunk_lpips():
    from diffusers_aligntok.losses import build_perceptual_network

    return build_perceptual_network("lpips-vgg-random-trunk")
