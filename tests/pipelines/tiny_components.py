"""Tiny offline pipeline components for tests, plus the call arguments that keep a pipeline run under a second.

The builders live in the package (`tests.testing_utils`) so examples and benchmarks can use them too;
this module re-exports them for tests and adds test-only helpers. Import from here in tests:

    from diffusers import FluxPipeline
    from .tiny_components import fast_call_kwargs, tiny_flux_components

    pipe = FluxPipeline(**tiny_flux_components())
    images = pipe(**fast_call_kwargs(height=32, width=64)).images
"""

import torch

from tests.testing_utils import (  # noqa: F401  (re-exported)
    TINY_CLIP_HIDDEN_SIZE,
    TINY_CLIP_MAX_LENGTH,
    TINY_T5_D_MODEL,
    build_tiny_clip_text_encoder,
    build_tiny_clip_tokenizer,
    build_tiny_flow_match_scheduler,
    build_tiny_flux_transformer,
    build_tiny_sd3_transformer,
    build_tiny_t5_encoder,
    build_tiny_t5_tokenizer,
    build_tiny_vae,
    tiny_flux_components,
    tiny_sd3_components,
    tiny_sdxl_components,
)


TEST_PROMPT = "a photo of a cat"


def fast_call_kwargs(
    height: int = 32,
    width: int = 32,
    seed: int = 0,
    output_type: str = "pt",
    t5_prompt: bool = True,
    **overrides,
) -> dict:
    """Keyword arguments for a 2-step pipeline call with a seeded CPU generator.

    `t5_prompt=True` adds `max_sequence_length=16` (Flux and SD3 pad T5 prompts to 512 tokens by default); pass
    `t5_prompt=False` for pipelines without a T5 encoder (SDXL).
    """
    kwargs = {
        "prompt": TEST_PROMPT,
        "height": height,
        "width": width,
        "num_inference_steps": 2,
        "output_type": output_type,
        "generator": torch.Generator("cpu").manual_seed(seed),
    }
    if t5_prompt:
        kwargs["max_sequence_length"] = 16
    return {**kwargs, **overrides}


def make_test_images(batch_size: int = 1, height: int = 32, width: int = 32, seed: int = 0) -> torch.Tensor:
    """Smooth random images in `[0, 1]` (the range pipelines' image processors expect for tensors)."""
    generator = torch.Generator("cpu").manual_seed(seed)
    coarse = torch.rand(batch_size, 3, max(1, height // 8), max(1, width // 8), generator=generator)
    return torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)
