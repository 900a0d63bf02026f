"""CLIP score (Hessel et al., 2021; torchmetrics' `CLIPScore`): `100 * max(cos(image, text), 0)` averaged over samples.

scorer = build_clip_scorer("openai/clip-vit-large-patch14")  # or "random-clip-standin" offline
scores = scorer(images, prompts)
"""

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from ...standins import CLIP_STANDIN_CONFIG_KEY, build_random_clip_standin


DEFAULT_CLIP_MODEL = "openai/clip-vit-large-patch14"
RANDOM_CLIP_STANDIN = "random-clip-standin"


def count_truncated_prompts(tokenizer, prompts: Sequence[str], max_length: int | None = None) -> int:
    """How many prompts have more tokens (with the special ones) than `max_length` (default: the tokenizer's)."""
    max_length = max_length or tokenizer.model_max_length
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lengths = [len(ids) for ids in tokenizer(list(prompts), truncation=False)["input_ids"]]
    return sum(length > max_length for length in lengths)


class CLIPScorer:
    """`100 * max(cos(image embedding, text embedding), 0)` per image-prompt pair, as torchmetrics' `CLIPScore`.

    Args:
        model (`transformers.CLIPModel`), tokenizer, image_processor: The CLIP model and its preprocessing.
        name (`str`): Recorded with the score.
        is_real_metric (`bool`): False for a random stand-in; its numbers are reported as "not a CLIP score".
        device: Where the model runs (float32).
    """

    def __init__(
        self, model, tokenizer, image_processor, name: str, is_real_metric: bool, device: str | torch.device = "cpu"
    ):
        self.device = torch.device(device)
        self.model = model.to(self.device, torch.float32).eval()
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.name = name
        self.is_real_metric = is_real_metric

    @property
    def max_length(self) -> int:
        return int(min(self.tokenizer.model_max_length, self.model.config.text_config.max_position_embeddings))

    def count_truncated(self, prompts: Sequence[str]) -> int:
        return count_truncated_prompts(self.tokenizer, prompts, self.max_length)

    @torch.no_grad()
    def text_embeddings(self, prompts: Sequence[str]) -> torch.Tensor:
        tokens = self.tokenizer(
            list(prompts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(self.device)
        pooled = self.model.text_model(
            input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]
        ).pooler_output
        return torch.nn.functional.normalize(self.model.text_projection(pooled).float(), dim=-1)

    @torch.no_grad()
    def image_embeddings(self, images: Sequence[Image.Image]) -> torch.Tensor:
        pixels = self.image_processor(images=list(images), return_tensors="pt")["pixel_values"].to(self.device)
        pooled = self.model.vision_model(pixel_values=pixels).pooler_output
        return torch.nn.functional.normalize(self.model.visual_projection(pooled).float(), dim=-1)

    def __call__(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> np.ndarray:
        cosine = (self.image_embeddings(images) * self.text_embeddings(prompts)).sum(dim=-1)
        return (100 * cosine.clamp_min(0)).double().cpu().numpy()

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "is_real_metric": self.is_real_metric,
            "formula": "mean over samples of 100 * max(cos(CLIP image embedding, CLIP text embedding), 0)",
            "max_text_tokens": self.max_length,
            "image_preprocessing": f"{type(self.image_processor).__name__} of the 8-bit PNG",
        }


def build_clip_scorer(name_or_path: str, device: str | torch.device = "cpu") -> CLIPScorer:
    """`random-clip-standin` (in memory), or a `CLIPModel` with its processor from a hub id or a local directory."""
    if name_or_path == RANDOM_CLIP_STANDIN:
        model, tokenizer, image_processor = build_random_clip_standin()
        return CLIPScorer(model, tokenizer, image_processor, RANDOM_CLIP_STANDIN, is_real_metric=False, device=device)
    from transformers import CLIPModel, CLIPProcessor

    try:
        model = CLIPModel.from_pretrained(name_or_path)
        processor = CLIPProcessor.from_pretrained(name_or_path)
    except OSError as error:
        raise OSError(
            f"Could not load the CLIP model {name_or_path!r} (a CLIPModel with its tokenizer and image processor): "
            f"{error}. Download it once (huggingface-cli download {DEFAULT_CLIP_MODEL}) or give a local directory; "
            f"--clip_model none skips the CLIP score, --clip_model {RANDOM_CLIP_STANDIN} runs an offline stand-in."
        ) from error
    is_standin = bool(getattr(model.config, CLIP_STANDIN_CONFIG_KEY, False))
    return CLIPScorer(
        model,
        processor.tokenizer,
        processor.image_processor,
        str(name_or_path),
        is_real_metric=not is_standin,
        device=device,
    )
