"""Validation pieces of the training loops: reconstruction PSNR, image grids, and sending grids to the trackers."""

import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..evaluation import psnr  # noqa: F401  (the validation's PSNR is the evaluation's)
from ..models import AlignedAutoencoderKL


logger = logging.getLogger(__name__)
# Trackers already told (once per process) that they get no images.
_TRACKERS_WITHOUT_IMAGES: set[str] = set()


@torch.no_grad()
def reconstruct(tokenizer: AlignedAutoencoderKL, images: torch.Tensor, batch_size: int = 8) -> torch.Tensor:
    was_training = tokenizer.training
    tokenizer.eval()
    outputs = [
        tokenizer(batch.to(tokenizer.device)).sample.float().clamp(-1, 1).cpu() for batch in images.split(batch_size)
    ]
    tokenizer.train(was_training)
    return torch.cat(outputs)


def image_grid(rows: list[torch.Tensor], padding: int = 2) -> Image.Image:
    """Rows of (N, 3, H, W) images in [-1, 1] -> one PIL image, one row per tensor."""
    num_columns = max(row.shape[0] for row in rows)
    height, width = rows[0].shape[-2:]
    canvas = np.full(
        (len(rows) * (height + padding) + padding, num_columns * (width + padding) + padding, 3), 255, dtype=np.uint8
    )
    for row_index, row in enumerate(rows):
        pixels = ((row.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        for column_index, image in enumerate(pixels):
            top = padding + row_index * (height + padding)
            left = padding + column_index * (width + padding)
            canvas[top : top + height, left : left + width] = image
    return Image.fromarray(canvas)


def save_reconstruction_grid(images: torch.Tensor, reconstructions: torch.Tensor, path: str | Path) -> Image.Image:
    """Saves originals above reconstructions at `path` and returns the grid."""
    return save_grid(image_grid([images, reconstructions]), path)


def save_grid(grid: Image.Image, path: str | Path) -> Image.Image:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)
    return grid


def log_validation_images(accelerator, name: str, grid: Image.Image, step: int, caption: str | None = None) -> None:
    """Sends a validation grid to every tracker of `accelerator`, each in its own way.

    tensorboard gets `add_image` (HWC uint8), wandb a `wandb.Image` (wandb is imported only when its tracker is
    active); other trackers get none, which is logged once, and the grid stays on disk under `validation/`. Trackers
    only exist on the main process, so calling this on every rank is harmless.
    """
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            tracker.writer.add_image(name, np.asarray(grid.convert("RGB")), step, dataformats="HWC")
        elif tracker.name == "wandb":
            import wandb

            tracker.log({name: [wandb.Image(grid, caption=caption)]}, step=step)
        elif tracker.name not in _TRACKERS_WITHOUT_IMAGES:
            _TRACKERS_WITHOUT_IMAGES.add(tracker.name)
            logger.info(f"Validation images go to tensorboard and wandb only; tracker {tracker.name!r} gets none.")
