"""Sample a text-to-image pipeline trained by `training/train_t2i.py` at every aspect-ratio bucket.

`train_t2i.py` saves `<output_dir>/pipeline`: diffusers' `FluxPipeline` (or `AlignTokFluxPipeline` when the AlignTok
latent is fed with patch 1) holding the trained transformer, the VAE it was trained on (`AlignedAutoencoderKL` or the
FLUX VAE) and FLUX's text encoders. It loads like any diffusers pipeline once `diffusers_aligntok` is imported. The
model was trained with caption dropout, so it uses real classifier-free guidance (`true_cfg_scale` with an empty
negative prompt), not FLUX-dev's distilled guidance.

Usage:
    python training/train_t2i.py --config training/configs/t2i_tiny_cpu.yaml --output_dir runs/t2i_tiny
    python examples/text_to_image.py --pipeline runs/t2i_tiny/pipeline --resolution 32 --aspect_ratios 1:1 3:4 4:3 \
        --steps 8 --output grid.png

    python examples/text_to_image.py --pipeline runs/t2i_2b_512_aligntok/pipeline --prompt "a lighthouse at dusk"
"""

import argparse

import torch
from diffusers import DiffusionPipeline

import diffusers_aligntok  # noqa: F401  (registers AlignedAutoencoderKL and AlignTokFluxPipeline with diffusers)
from diffusers_aligntok.data import PAPER_ASPECT_RATIOS, make_buckets
from diffusers_aligntok.pipelines import latent_patch_size
from diffusers_aligntok.training.validation import image_grid


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pipeline", required=True, help="A pipeline directory saved by train_t2i.py (or a hub id).")
    parser.add_argument("--prompt", default="a red circle on a white background")
    parser.add_argument("--resolution", type=int, default=512, help="Bucket area = resolution**2.")
    parser.add_argument("--aspect_ratios", nargs="+", default=list(PAPER_ASPECT_RATIOS))
    parser.add_argument("--steps", type=int, default=28)
    parser.add_argument("--guidance_scale", type=float, default=4.0, help="Real CFG scale (1 disables it).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--output", default="text_to_image_buckets.png")
    args = parser.parse_args(argv)

    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    pipe = DiffusionPipeline.from_pretrained(args.pipeline, dtype=dtype).to(args.device)
    patch = latent_patch_size(pipe.transformer.config.in_channels, pipe.vae.config.latent_channels)
    buckets = make_buckets(args.resolution, args.aspect_ratios, pipe.vae_scale_factor * patch)
    guidance = {"true_cfg_scale": args.guidance_scale, "negative_prompt": ""} if args.guidance_scale > 1 else {}
    row = []
    for bucket in buckets:
        image = pipe(
            args.prompt,
            height=bucket.height,
            width=bucket.width,
            num_inference_steps=args.steps,
            generator=torch.Generator("cpu").manual_seed(args.seed),
            output_type="pt",
            **guidance,
        ).images
        assert image.shape[-2:] == (bucket.height, bucket.width)
        print(f"{bucket}: generated")
        row.append(image.float() * 2 - 1)
    # Buckets differ in size: pad each to the largest so they share one row.
    height, width = max(r.shape[-2] for r in row), max(r.shape[-1] for r in row)
    row = [torch.nn.functional.pad(r, (0, width - r.shape[-1], 0, height - r.shape[-2]), value=1.0) for r in row]
    image_grid([torch.cat(row)]).save(args.output)
    print(
        f"Saved {len(buckets)} buckets ({type(pipe).__name__}, VAE {type(pipe.vae).__name__}, patch {patch}) to {args.output}"
    )


if __name__ == "__main__":
    main()
