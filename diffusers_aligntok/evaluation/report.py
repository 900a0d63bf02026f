"""Results of a tokenizer evaluation: the JSON with every setting, a short Markdown table, a side-by-side PNG."""

import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ..utils import format_metric, write_json, write_text


RESULTS_JSON = "results.json"
RESULTS_MARKDOWN = "results.md"
RECONSTRUCTIONS_PNG = "reconstructions.png"

_VERSIONED_PACKAGES = (
    "diffusers-aligntok",
    "torch",
    "torchvision",
    "diffusers",
    "transformers",
    "accelerate",
    "clean-fid",
    "lpips",
    "scikit-learn",
    "scipy",
    "numpy",
    "pillow",
    "datasets",
)


def package_versions() -> dict[str, str | None]:
    """Versions of Python and of every package that can change a number in the results."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for package in _VERSIONED_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def markdown_table(results: dict[str, Any]) -> str:
    """A short Markdown table of the headline numbers, with the settings and caveats underneath."""
    settings = results["settings"]
    fid_name = results["feature_extractor"]["name"]
    fid_is_real = results["feature_extractor"]["is_real_metric"]
    perceptual = results.get("perceptual") or {}
    lines = [
        "| tokenizer | f | latent (C x h x w) | rFID | PSNR (dB) | SSIM | LPIPS | linear probe top-1 | CKNNA |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for entry in results["tokenizers"]:
        tokenizer, metrics = entry["tokenizer"], entry["metrics"]
        probe = metrics.get("linear_probe") or {}
        latent = "x".join(str(size) for size in metrics["latent_shape"])
        lines.append(
            f"| {tokenizer['name']} | {tokenizer['spatial_factor']} | {latent} | {format_metric(metrics.get('rfid'), 2)} | "
            f"{format_metric(metrics.get('psnr'), 2)} | {format_metric(metrics.get('ssim'), 3)} | {format_metric(metrics.get('lpips'), 3)} | "
            f"{format_metric(probe.get('top1'), 1, 100, '%')} | {format_metric(metrics.get('cknna'), 3)} |"
        )
    height, width = settings["resolution"]
    lines += [
        "",
        f"{settings['num_samples']} images of {settings['data_description']}, {height}x{width} centre crops; "
        f"reconstructions quantised to 8 bits: {settings['quantize_reconstructions']}.",
        f"rFID: {fid_name}{'' if fid_is_real else ' (a random stand-in network: NOT FID, only checks the code path)'}; "
        f"LPIPS: {perceptual.get('name') or 'off'}"
        f"{' (random VGG trunk: NOT LPIPS)' if perceptual and not perceptual.get('is_real_metric') else ''}; "
        f"linear probe: {results['linear_probe_protocol']['features']}, "
        f"{results['linear_probe_protocol']['split']}; CKNNA: k={settings['cknna_topk']} against "
        f"{(results.get('reference_encoder') or {}).get('name', 'no reference encoder (skipped)')}.",
    ]
    return "\n".join(lines + warnings_and_notes(results)) + "\n"


def warnings_and_notes(results: dict[str, Any]) -> list[str]:
    """The Markdown bullet lines of a results envelope's `warnings` and `notes`, closing every evaluation's
    `results.md`."""
    return [f"- warning: {warning}" for warning in results.get("warnings", [])] + [
        f"- note: {note}" for note in results.get("notes", [])
    ]


def write_results_files(output_dir: str | os.PathLike, results: dict[str, Any], markdown: str) -> tuple[Path, Path]:
    """Writes an evaluation's `results.json` (the envelope as plain JSON) and `results.md` atomically and returns their
    paths."""
    output_dir = Path(output_dir)
    return write_json(output_dir / RESULTS_JSON, results), write_text(output_dir / RESULTS_MARKDOWN, markdown)


def write_results(output_dir: str | os.PathLike, results: dict[str, Any]) -> tuple[Path, Path]:
    """Writes the tokenizer evaluation's `results.json` and `results.md` (atomically) and returns their paths."""
    return write_results_files(output_dir, results, markdown_table(results))


def _to_pil(image: torch.Tensor, size: int) -> Image.Image:
    pixels = ((image.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    picture = Image.fromarray(np.ascontiguousarray(pixels))
    if picture.size != (size, size):
        # Nearest neighbour: small images are enlarged for viewing without inventing detail.
        scale = size / max(picture.size)
        picture = picture.resize(
            (max(1, round(picture.width * scale)), max(1, round(picture.height * scale))), Image.Resampling.NEAREST
        )
    return picture


def save_side_by_side(
    originals: torch.Tensor,
    rows: list[tuple[str, torch.Tensor, float | None]],
    path: str | os.PathLike,
    caption: str = "",
    cell_size: int | None = None,
) -> Path:
    """A PNG with the originals on top and one row of reconstructions per tokenizer.

    Args:
        originals (`torch.Tensor`): `(N, 3, H, W)` in `[-1, 1]`.
        rows: `(tokenizer name, reconstructions (N, 3, H, W), mean PSNR over the whole evaluation)` per tokenizer.
        caption (`str`): A line drawn above the grid (data, resolution, what the PSNR is).
        cell_size (`int`, *optional*): Displayed image size; small images are enlarged (nearest) to at least 96 px.

    Each row's label gives the tokenizer and its mean PSNR; under every reconstruction is that image's own PSNR.
    Text uses PIL's default font.
    """
    from .metrics.reconstruction import psnr

    font = ImageFont.load_default()
    num_images = originals.shape[0]
    cell = cell_size or max(96, max(originals.shape[-2:]))
    padding, label_width, text_height = 4, 230, 14
    row_height = cell + text_height + padding
    title_height = 2 * text_height + padding if caption else padding
    width = label_width + num_images * (cell + padding) + padding
    height = title_height + (len(rows) + 1) * row_height + padding
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    if caption:
        draw.text((padding, padding), caption, fill="black", font=font)

    def draw_row(row_index: int, label_lines: list[str], images: torch.Tensor, per_image: list[str] | None):
        top = title_height + row_index * row_height
        for line_index, line in enumerate(label_lines):
            draw.text(
                (padding, top + cell // 2 - text_height + line_index * text_height), line, fill="black", font=font
            )
        for column, image in enumerate(images):
            left = label_width + padding + column * (cell + padding)
            canvas.paste(_to_pil(image, cell), (left, top))
            if per_image:
                draw.text((left + 2, top + cell + 1), per_image[column], fill="black", font=font)

    draw_row(0, ["originals"], originals, None)
    for row_index, (name, reconstructions, mean_psnr) in enumerate(rows, start=1):
        per_image = [f"{value:.2f} dB" for value in psnr(originals.float(), reconstructions.float()).tolist()]
        label = [
            name if len(name) <= 36 else name[:33] + "...",
            f"PSNR {mean_psnr:.2f} dB (mean)" if mean_psnr is not None else "",
        ]
        draw_row(row_index, label, reconstructions, per_image)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path
