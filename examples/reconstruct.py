"""Reconstruct images with an AlignTok tokenizer (encode -> decode) and report PSNR.

For each input it writes `<name>_reconstruction.png`: the (resized) original on the left, the reconstruction on the
right. Without inputs it reconstructs a built-in synthetic test image. `--model tiny-random` (the default) builds the
tiny preset with random weights, so the script runs offline in seconds; its reconstructions are noise.

Usage:
    python examples/reconstruct.py                                      # built-in image, tiny random model
    python examples/reconstruct.py cat.jpg dog.png --model path/to/aligntok_vae --output_dir recon/
    python examples/reconstruct.py big.jpg --model path/to/aligntok_vae --tiling --height 1024 --width 1536
"""

import argparse
import os

import PIL.Image
import torch
from diffusers.image_processor import VaeImageProcessor

from diffusers_aligntok import AlignedAutoencoderKL
from diffusers_aligntok.data.synthetic_image import synthetic_test_image
from diffusers_aligntok.evaluation import psnr


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("images", nargs="*", help="Image files. Default: a built-in synthetic test image.")
    add("--model", default="tiny-random", help="AlignedAutoencoderKL directory or hub id, or 'tiny-random'.")
    add("--subfolder", default=None, help="Subfolder of --model, e.g. 'vae' for a pipeline repository.")
    add("--height", type=int, default=None, help="Resize to this height (rounded down to a multiple of f).")
    add("--width", type=int, default=None, help="Resize to this width. Default: the image's own size.")
    add("--tiling", action="store_true", help="Encode and decode in overlapping tiles (for large images).")
    add("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    add("--dtype", choices=["float32", "bfloat16"], default="float32")
    add("--output_dir", default=".")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    dtype = getattr(torch, args.dtype)
    if args.model == "tiny-random":
        torch.manual_seed(0)
        vae = AlignedAutoencoderKL.from_preset("tiny").to(dtype)
    else:
        vae = AlignedAutoencoderKL.from_pretrained(args.model, subfolder=args.subfolder, dtype=dtype)
    vae = vae.to(args.device).eval()
    if args.tiling:
        vae.enable_tiling()
    processor = VaeImageProcessor(vae_scale_factor=vae.spatial_compression_ratio)

    inputs = [(path, PIL.Image.open(path).convert("RGB")) for path in args.images]
    inputs = inputs or [("synthetic.png", synthetic_test_image(128, 192))]
    os.makedirs(args.output_dir, exist_ok=True)
    for path, image in inputs:
        # preprocess: resize to a multiple of f, scale to [-1, 1]; postprocess: back to [0, 1] / PIL.
        pixels = processor.preprocess(image, height=args.height, width=args.width).to(args.device, vae.dtype)
        with torch.no_grad():
            latents = vae.encode(pixels).latent_dist.mode()
            decoded = vae.decode(latents).sample
        original = processor.postprocess(pixels.float(), output_type="pt")
        reconstruction = processor.postprocess(decoded.float(), output_type="pt")
        side_by_side = torch.cat([original, reconstruction], dim=-1)
        name = os.path.splitext(os.path.basename(path))[0]
        output_path = os.path.join(args.output_dir, f"{name}_reconstruction.png")
        processor.postprocess(side_by_side * 2 - 1, output_type="pil")[0].save(output_path)
        print(
            f"{path}: {pixels.shape[-2]}x{pixels.shape[-1]} -> latent {tuple(latents.shape[1:])}, "
            f"PSNR {psnr(pixels.float().clamp(-1, 1), decoded.float().clamp(-1, 1)).item():.2f} dB -> {output_path}"
        )


if __name__ == "__main__":
    main()
