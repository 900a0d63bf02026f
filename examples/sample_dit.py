"""Class-conditional sampling with an `AlignTokDiTPipeline` (a LightningDiT on AlignTok latents).

`training/train_dit.py` saves `<output_dir>/pipeline`: the EMA transformer, the tokenizer that decodes its latents
(with the latent statistics the DiT was trained on) and a `FlowMatchEulerDiscreteScheduler` with the training
config's sampling shift. It loads like any diffusers pipeline once `diffusers_aligntok` is imported (diffusers never
imports the library that `model_index.json` names). Guidance is classifier-free on all latent channels; 1 disables it.

Usage:
    python examples/sample_dit.py --pipeline runs/dit_xl/pipeline --class_labels 207 360 387 974 --guidance_scale 4
    python examples/sample_dit.py --pipeline runs/demo/dit/pipeline --class_labels 0 1 2 3 --steps 25 --output shapes.png

Writes one row of images, one per class label, to `--output`.
"""

import argparse

import torch
from diffusers import DiffusionPipeline

import diffusers_aligntok  # noqa: F401  (registers AlignedAutoencoderKL and AlignTokDiTPipeline with diffusers)
from diffusers_aligntok.training.validation import image_grid


# DiT's sample classes (golden retriever, otter, lesser panda, geyser, macaw, valley, balloon, arctic fox), used when
# the pipeline is an ImageNet one and no labels are given.
IMAGENET_SAMPLE_CLASSES = [207, 360, 387, 974, 88, 979, 417, 279]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--pipeline", required=True, help="A pipeline directory saved by train_dit.py (or a hub id).")
    add(
        "--class_labels",
        type=int,
        nargs="+",
        default=None,
        help="Class ids, one image each. Default: DiT's 8 sample classes for 1000 classes, else the first 8 classes.",
    )
    add("--guidance_scale", type=float, default=4.0, help="Classifier-free guidance scale (1 disables it).")
    add("--steps", type=int, default=50, help="Euler steps (model evaluations; LightningDiT's 250 grid points = 249).")
    add("--seed", type=int, default=0)
    add("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    add("--output", default="dit_samples.png")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    # bf16 on CUDA, as the DiT trained; not float16, whose VAE decodes overflow (the pipeline would upcast).
    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    pipe = DiffusionPipeline.from_pretrained(args.pipeline, dtype=dtype).to(args.device)
    num_classes = pipe.transformer.config.num_classes
    labels = args.class_labels or (
        IMAGENET_SAMPLE_CLASSES if num_classes == 1000 else list(range(min(8, num_classes)))
    )
    images = pipe(
        class_labels=labels,
        guidance_scale=args.guidance_scale,
        num_inference_steps=args.steps,
        generator=torch.Generator("cpu").manual_seed(args.seed),
        output_type="pt",
    ).images
    grid = image_grid([images.float() * 2 - 1])
    grid.save(args.output)
    print(
        f"Saved {len(labels)} samples (classes {labels}, {images.shape[-1]}x{images.shape[-2]}, guidance "
        f"{args.guidance_scale}, {args.steps} steps, {type(pipe).__name__}) to {args.output}"
    )


if __name__ == "__main__":
    main()
