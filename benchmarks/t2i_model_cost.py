"""Size and per-step cost of the 2B text-to-image transformer in both arms (AlignTok VAE vs FLUX VAE).

Everything is counted, not timed: models are built on the meta device (the real constructors, no memory) and one
forward pass is traced with `torch.utils.flop_counter.FlopCounterMode`, which counts every matmul, convolution and
attention kernel (2 FLOPs per multiply-add). For each arm and resolution it reports:

- image tokens per image (the transformer's sequence is these plus `max_sequence_length` T5 tokens),
- transformer forward FLOPs per image, and training FLOPs per image: 3x forward (backward costs 2x), or 4x with
  gradient checkpointing (each block's forward runs again in the backward),
- VAE encode FLOPs per image (paid every step without `data.cache_dir`, once with it),
- parameter counts of the transformer and of each VAE.

The arms use the configs in `training/configs/t2i_2b_*.yaml`: 16 pixels per token, so patch 1 on the f16 AlignTok
latent (32 channels per token) and patch 2 on the f8 FLUX latent (64 channels per token). A third row shows what
the stock FluxPipeline's 2x2 packing would make of the AlignTok latent (a quarter of the tokens), for reference.

Usage:
    python benchmarks/t2i_model_cost.py             # about a minute on a CPU
Writes `results/t2i_model_cost.{json,md}`.
"""

import argparse
import datetime
import json
import os
import platform

import torch
from diffusers import AutoencoderKL, FluxTransformer2DModel
from torch.utils.flop_counter import FlopCounterMode

import diffusers_aligntok
from diffusers_aligntok import AlignedAutoencoderKL
from diffusers_aligntok.evaluation.tokenizer_adapters import FLUX_VAE_CONFIG
from diffusers_aligntok.pipelines import latent_image_ids
from diffusers_aligntok.training.t2i_config import FLUX_TRANSFORMER_PRESETS


T5_XXL_WIDTH, CLIP_L_WIDTH = 4096, 768
ARMS = {
    # name: (VAE builder on the meta device, latent channels, downsampling factor, pixels per token or None for the
    # --pixels_per_token of the recipe)
    "AlignTok (DINOv2-L f16d32)": (
        lambda: AlignedAutoencoderKL.from_preset("aligntok-dinov2-large-f16d32"),
        32,
        16,
        None,
    ),
    "FLUX VAE (f8, 16 ch)": (lambda: AutoencoderKL(**FLUX_VAE_CONFIG), 16, 8, None),
    # For reference, not a recipe arm: AlignTok latents with the stock FluxPipeline's 2x2 packing (32 px per token),
    # the unequal comparison the recipe avoids.
    "AlignTok, stock 2x2 packing": (
        lambda: AlignedAutoencoderKL.from_preset("aligntok-dinov2-large-f16d32"),
        32,
        16,
        32,
    ),
}


def count_flops(function) -> int:
    with FlopCounterMode(display=False) as counter:
        function()
    return counter.get_total_flops()


def transformer_forward_flops(
    transformer: FluxTransformer2DModel, image_tokens: int, text_tokens: int, channels: int
) -> int:
    with torch.device("meta"):
        inputs = {
            "hidden_states": torch.randn(1, image_tokens, channels),
            "encoder_hidden_states": torch.randn(1, text_tokens, T5_XXL_WIDTH),
            "pooled_projections": torch.randn(1, CLIP_L_WIDTH),
            "timestep": torch.rand(1),
            "img_ids": latent_image_ids(1, image_tokens),
            "txt_ids": torch.zeros(text_tokens, 3),
        }
    return count_flops(lambda: transformer(**inputs, return_dict=False))


def vae_encode_flops(vae, resolution: int) -> int:
    with torch.device("meta"):
        images = torch.randn(1, 3, resolution, resolution)
    return count_flops(lambda: vae.encode(images))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolutions", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--text_tokens", type=int, default=256, help="T5 tokens (model.max_sequence_length).")
    parser.add_argument("--pixels_per_token", type=int, default=16)
    parser.add_argument("--output_dir", default=os.path.join(os.path.dirname(__file__), "results"))
    args = parser.parse_args()

    rows, parameters = [], {}
    for arm, (build_vae, latent_channels, factor, pixels_per_token) in ARMS.items():
        pixels_per_token = pixels_per_token or args.pixels_per_token
        patch = pixels_per_token // factor
        with torch.device("meta"):
            transformer = FluxTransformer2DModel(
                **FLUX_TRANSFORMER_PRESETS["flux-2b"],
                patch_size=1,
                in_channels=latent_channels * patch**2,
                joint_attention_dim=T5_XXL_WIDTH,
                pooled_projection_dim=CLIP_L_WIDTH,
            )
            vae = build_vae().eval()
        parameters[arm] = {
            "transformer": sum(p.numel() for p in transformer.parameters()),
            "vae": sum(p.numel() for p in vae.parameters()),
            "latent_patch_size": patch,
            "transformer_in_channels": latent_channels * patch**2,
        }
        for resolution in args.resolutions:
            image_tokens = (resolution // pixels_per_token) ** 2
            forward = transformer_forward_flops(
                transformer, image_tokens, args.text_tokens, latent_channels * patch**2
            )
            rows.append(
                {
                    "arm": arm,
                    "resolution": resolution,
                    "latent_shape": [latent_channels, resolution // factor, resolution // factor],
                    "image_tokens": image_tokens,
                    "sequence_length": image_tokens + args.text_tokens,
                    "transformer_forward_tflops": forward / 1e12,
                    "train_tflops_per_image": 3 * forward / 1e12,
                    "train_tflops_per_image_with_checkpointing": 4 * forward / 1e12,
                    "vae_encode_gflops": vae_encode_flops(vae, resolution) / 1e9,
                }
            )
    for row in rows:  # each arm relative to the FLUX VAE arm at the same resolution
        peer = next(r for r in rows if r["resolution"] == row["resolution"] and r["arm"].startswith("FLUX"))
        row["train_flops_vs_flux_arm"] = row["train_tflops_per_image"] / peer["train_tflops_per_image"]

    results = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "diffusers_aligntok": diffusers_aligntok.__version__,
        "platform": platform.platform(),
        "transformer_preset": {"name": "flux-2b", **FLUX_TRANSFORMER_PRESETS["flux-2b"]},
        "text_tokens": args.text_tokens,
        "pixels_per_token": args.pixels_per_token,
        "parameters": parameters,
        "rows": rows,
    }
    os.makedirs(args.output_dir, exist_ok=True)
    with open(os.path.join(args.output_dir, "t2i_model_cost.json"), "w") as handle:
        json.dump(results, handle, indent=2)
    markdown = _markdown(results)
    with open(os.path.join(args.output_dir, "t2i_model_cost.md"), "w") as handle:
        handle.write(markdown)
    print(markdown)


def _markdown(results: dict) -> str:
    lines = [
        "# 2B text-to-image transformer: parameters and per-step cost of both arms",
        "",
        f"{results['date']}, torch {results['torch']}; counted with `FlopCounterMode` on the meta device "
        f"(`python benchmarks/t2i_model_cost.py`). {results['text_tokens']} T5 tokens per caption, "
        f"{results['pixels_per_token']} pixels per token in both arms.",
        "",
        "| arm | transformer params | VAE params | latent patch | transformer in_channels |",
        "|---|---|---|---|---|",
    ]
    for arm, counts in results["parameters"].items():
        lines.append(
            f"| {arm} | {counts['transformer']:,} | {counts['vae']:,} | {counts['latent_patch_size']} | {counts['transformer_in_channels']} |"
        )
    lines += [
        "",
        "| arm | resolution | latent | image tokens | sequence | fwd TFLOPs / image | train TFLOPs / image (3x fwd) | "
        "with grad. checkpointing (4x) | vs FLUX arm | VAE encode GFLOPs / image |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in results["rows"]:
        lines.append(
            f"| {row['arm']} | {row['resolution']} | {'x'.join(map(str, row['latent_shape']))} | {row['image_tokens']} | "
            f"{row['sequence_length']} | {row['transformer_forward_tflops']:.3f} | {row['train_tflops_per_image']:.3f} | "
            f"{row['train_tflops_per_image_with_checkpointing']:.3f} | {row['train_flops_vs_flux_arm']:.4f} | "
            f"{row['vae_encode_gflops']:.1f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
