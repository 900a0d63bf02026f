"""Shared test setup: nothing may reach a model hub, and every test starts from the same seed."""

import os


# Set before transformers/diffusers/huggingface_hub are imported, so a stray download fails fast instead of hanging.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402


# Tiny models run fastest single-threaded, and `make test` already runs two pytest workers on two cores.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed_everything():
    torch.manual_seed(0)
    yield


@pytest.fixture
def tiny_vae():
    from diffusers_aligntok import AlignedAutoencoderKL

    torch.manual_seed(0)
    return AlignedAutoencoderKL.from_preset("tiny").eval()
