"""Generate an image with diffusers' stock `FluxPipeline` and an AlignTok tokenizer as its VAE.

The only new part in the pipeline is the VAE: `FluxPipeline` reads `vae_scale_factor`, `scaling_factor` and
`shift_factor` from `AlignedAutoencoderKL`'s config exactly as from `AutoencoderKL`'s.

Important: the stock FLUX.1 transformer was trained on FLUX VAE latents (16 channels, f8). Swapping in a different
VAE alone gives noise; the transformer must be one trained on AlignTok latents (`training/train_t2i.py`). With 2x2
packing (`in_channels` = 4 x the tokenizer's `latent_channels`) the stock `FluxPipeline` runs it; with patch 1 (our
recipe's default for f16 latents, see `diffusers_aligntok/pipelines/pipeline_aligntok_flux.py`) `AlignTokFluxPipeline`
does. `examples/text_to_image.py` samples a pipeline saved by `train_t2i.py` at every aspect-ratio bucket.

Usage:
    # Offline smoke run: tiny random components, a few seconds on a CPU (the image is noise).
    python examples/flux_vae_swap.py --output out.png

    # The real swap: text encoders, tokenizers and scheduler from FLUX.1-dev; VAE and transformer trained on AlignTok.
    python examples/flux_vae_swap.py --pretrained_model black-forest-labs/FLUX.1-dev \\
        --aligntok_vae path/to/aligntok_vae --transformer path/to/flux_transformer_on_aligntok \\
        --prompt "a red fox in the snow" --height 512 --width 512 --steps 28 --output fox.png
"""

import argparse

import torch
from diffusers import FluxPipeline, FluxTransformer2DModel

from diffusers_aligntok import (  # import before loading pipelines naming them
    AlignedAutoencoderKL,
    AlignTokFluxPipeline,
)
from diffusers_aligntok.pipelines import latent_patch_size


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--pretrained_model", help="Flux pipeline for text encoders, tokenizers, scheduler. Default: tiny, offline.")
    add("--aligntok_vae", help="AlignedAutoencoderKL directory or hub id (with --pretrained_model).")
    add("--transformer", help="FluxTransformer2DModel trained on AlignTok latents (with --pretrained_model).")
    add("--transformer_subfolder", default=None, help="Subfolder of --transformer, e.g. 'transformer'.")
    add("--prompt", default="a photo of a cat")
    add("--height", type=int, default=None, help="Multiple of 2 x the VAE factor (32 for f16). Default 512, tiny 64.")
    add("--width", type=int, default=None)
    add("--steps", type=int, default=None, help="Default 28, tiny 2.")
    add("--guidance_scale", type=float, default=3.5)
    add("--seed", type=int, default=0)
    add("--dtype", choices=["float32", "bfloat16", "float16"], help="Default: bfloat16 on CUDA, else float32.")
    add("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    add("--output", default="flux_aligntok.png")
    return parser.parse_args(argv)


def build_pipeline(args, dtype):
    if args.pretrained_model is None:
        from diffusers_aligntok.standins import tiny_flux_components

        return FluxPipeline(**tiny_flux_components())
    if not (args.aligntok_vae and args.transformer):
        raise SystemExit("--pretrained_model needs --aligntok_vae and a --transformer trained on AlignTok latents.")
    vae = AlignedAutoencoderKL.from_pretrained(args.aligntok_vae, dtype=dtype)
    transformer = FluxTransformer2DModel.from_pretrained(
        args.transformer, subfolder=args.transformer_subfolder, dtype=dtype
    )
    # Patch 2 (in_channels = 4 x latent channels) is stock FluxPipeline packing; our text-to-image recipe feeds f16
    # AlignTok latents with patch 1 (same token count as the FLUX VAE arm), which AlignTokFluxPipeline adds.
    patch = latent_patch_size(transformer.config.in_channels, vae.config.latent_channels)  # clear error if neither
    pipeline_class = FluxPipeline if patch == 2 else AlignTokFluxPipeline
    return pipeline_class.from_pretrained(args.pretrained_model, vae=vae, transformer=transformer, dtype=dtype)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    tiny = args.pretrained_model is None
    default_dtype = "bfloat16" if args.device.startswith("cuda") and not tiny else "float32"
    dtype = getattr(torch, args.dtype or default_dtype)
    pipe = build_pipeline(args, dtype)
    if tiny and dtype != torch.float32:
        pipe.to(dtype)
    # FluxPipeline ignores `force_upcast`: keep the VAE in float32 under float16 ourselves (decode casts the latents).
    if dtype == torch.float16 and pipe.vae.config.force_upcast:
        pipe.vae.to(torch.float32)
    pipe.to(args.device)

    size = 64 if tiny else 512
    image = pipe(
        args.prompt,
        height=args.height or size,
        width=args.width or size,
        num_inference_steps=args.steps or (2 if tiny else 28),
        guidance_scale=args.guidance_scale,
        max_sequence_length=16 if tiny else 512,
        generator=torch.Generator("cpu").manual_seed(args.seed),
    ).images[0]
    image.save(args.output)
    print(
        f"Saved {image.size[0]}x{image.size[1]} image to {args.output} (VAE: {type(pipe.vae).__name__}, "
        f"f={pipe.vae_scale_factor}, {pipe.vae.config.latent_channels} latent channels)"
    )


if __name__ == "__main__":
    main()
