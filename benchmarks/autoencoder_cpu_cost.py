"""CPU cost of AlignTok tokenizers next to the FLUX VAE: parameter counts, encode/decode time, tiling error.

In one run, on the CPU with a fixed number of threads, fp32, random weights (cost does not depend on the weights):

(a) parameter counts (encoder / adapter / decoder / total) of every preset in `diffusers_aligntok.PRESETS`, and of the
    FLUX VAE for reference. Models are built on the meta device: the same constructor, no memory, no init time.
(b) wall time of encoding and decoding one image (256x256 by default) with the `aligntok-dinov2-large-f16d32` preset
    and with `diffusers.AutoencoderKL` in the FLUX.1 configuration; median of `--repeats` runs after one warm-up. The
    two models are timed alternately, so a busy machine slows both alike, and the ratio is the number to read.
(c) unless `--skip_tiling`: tiled vs untiled encode and decode of the dinov2-large preset at 512x512 and 512x768 with
    256-pixel tiles (mean and max absolute difference), and of the FLUX VAE with diffusers' own tiling for scale. With
    random weights this measures how much the architecture depends on context outside a tile (GroupNorm statistics,
    attention), not the quality of a trained model; rerun with `--model` for a trained one.

Writes `autoencoder_cpu_cost.json` and `.md` under `--output_dir` and prints the tables.

Usage:
    python benchmarks/autoencoder_cpu_cost.py                      # 10-20 minutes on 2 shared cores
    python benchmarks/autoencoder_cpu_cost.py --skip_tiling --repeats 5
    python benchmarks/autoencoder_cpu_cost.py --model path/to/trained_aligntok_vae
"""

import argparse
import datetime
import gc
import json
import os
import platform
import statistics
import time

import torch
from diffusers import AutoencoderKL
from diffusers.image_processor import VaeImageProcessor

import diffusers_aligntok
from diffusers_aligntok import PRESETS, AlignedAutoencoderKL
from diffusers_aligntok.data.synthetic_image import synthetic_test_image
from diffusers_aligntok.evaluation.tokenizer_adapters import FLUX_VAE_CONFIG  # FLUX.1-dev vae/config.json


TIMED_PRESET = "aligntok-dinov2-large-f16d32"


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--threads", type=int, default=2)
    add("--repeats", type=int, default=3, help="Timed runs per model after one warm-up; the median is reported.")
    add("--resolution", type=int, default=256)
    add("--skip_tiling", action="store_true", help="Skip (c), the slowest part (several minutes).")
    add("--tile_size", type=int, default=256)
    add("--model", default=None, help=f"A saved AlignedAutoencoderKL to use instead of random {TIMED_PRESET}.")
    add("--output_dir", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    return parser.parse_args()


def count_parameters(module: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


def parameter_counts() -> list[dict]:
    rows = []
    for name in PRESETS:
        with torch.device("meta"):
            model = AlignedAutoencoderKL.from_preset(name)
        parts = {part: count_parameters(getattr(model, part)) for part in ("encoder", "adapter", "decoder")}
        rows.append({"model": name, **parts, "total": count_parameters(model)})
        del model
    with torch.device("meta"):
        flux_vae = AutoencoderKL(**FLUX_VAE_CONFIG)
    rows.append(
        {
            "model": "FLUX VAE (AutoencoderKL)",
            "encoder": count_parameters(flux_vae.encoder),
            "adapter": 0,
            "decoder": count_parameters(flux_vae.decoder),
            "total": count_parameters(flux_vae),
        }
    )
    return rows


def load_image(height: int, width: int) -> torch.Tensor:
    """The built-in synthetic test image as a (1, 3, H, W) tensor in [-1, 1]."""
    return VaeImageProcessor().preprocess(synthetic_test_image(height, width))


def build_timed_aligntok(model_path: str | None) -> AlignedAutoencoderKL:
    if model_path:
        return AlignedAutoencoderKL.from_pretrained(model_path).eval()
    return AlignedAutoencoderKL.from_preset(TIMED_PRESET).eval()


def time_encode_decode(models: dict[str, torch.nn.Module], image: torch.Tensor, repeats: int) -> list[dict]:
    """Median encode / decode / total seconds per model, timing the models alternately (after one warm-up each)."""
    timings = {name: {"encode": [], "decode": [], "total": []} for name in models}
    for run in range(repeats + 1):
        for name, model in models.items():
            start = time.perf_counter()
            latents = model.encode(image).latent_dist.mode()
            encoded = time.perf_counter()
            model.decode(latents)
            decoded = time.perf_counter()
            if run > 0:  # run 0 is the warm-up
                timings[name]["encode"].append(encoded - start)
                timings[name]["decode"].append(decoded - encoded)
                timings[name]["total"].append(decoded - start)
    rows = [
        {"model": name, **{key: statistics.median(values) for key, values in timing.items()}, "runs": timing}
        for name, timing in timings.items()
    ]
    reference = rows[-1]
    for row in rows:
        row.update({f"{key}_ratio": row[key] / reference[key] for key in ("encode", "decode", "total")})
    return rows


def tiling_differences(models: dict[str, torch.nn.Module], sizes: list[tuple[int, int]], tile_size: int) -> list[dict]:
    """Tiled vs untiled encode (latents) and decode (images, from the same untiled latents) for each model and size."""
    rows = []
    for name, model in models.items():
        factor = 2 ** (len(model.config.block_out_channels) - 1)
        model.tile_sample_min_size, model.tile_latent_min_size = tile_size, tile_size // factor
        for height, width in sizes:
            image = load_image(height, width)
            model.disable_tiling()
            start = time.perf_counter()
            latents = model.encode(image).latent_dist.mode()
            decoded = model.decode(latents).sample
            untiled_seconds = time.perf_counter() - start
            model.enable_tiling()
            start = time.perf_counter()
            tiled_latents = model.encode(image).latent_dist.mode()
            tiled_decoded = model.decode(latents).sample  # same latents: isolates the decoder's tiling error
            tiled_seconds = time.perf_counter() - start
            model.disable_tiling()
            latent_diff, image_diff = (tiled_latents - latents).abs(), (tiled_decoded - decoded).abs()
            rows.append(
                {
                    "model": name,
                    "size": f"{height}x{width}",
                    "encode_mean_abs_diff": latent_diff.mean().item(),
                    "encode_max_abs_diff": latent_diff.max().item(),
                    "latent_std": latents.std().item(),
                    "decode_mean_abs_diff": image_diff.mean().item(),
                    "decode_max_abs_diff": image_diff.max().item(),
                    "decoded_std": decoded.std().item(),
                    "untiled_seconds": untiled_seconds,
                    "tiled_seconds": tiled_seconds,
                }
            )
    return rows


def markdown_table(rows: list[dict], columns: dict[str, str]) -> str:
    """`columns` maps a row key to a header; floats get 3 significant digits, ints thousands separators."""

    def cell(value):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return str(value)
        return f"{value:,}" if isinstance(value, int) else f"{value:.3g}"

    lines = ["| " + " | ".join(columns.values()) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row[key]) for key in columns) + " |" for row in rows]
    return "\n".join(lines)


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    results = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "diffusers_aligntok": diffusers_aligntok.__version__,
        "cpu": platform.processor() or platform.machine(),
        "threads": args.threads,
        "load_average_at_start": os.getloadavg()[0],
        "resolution": args.resolution,
        "repeats": args.repeats,
        "timed_model": args.model or f"{TIMED_PRESET} (random weights)",
    }
    sections = []
    with torch.no_grad():
        results["parameters"] = parameter_counts()
        sections.append(
            "## Parameters\n\n"
            + markdown_table(
                results["parameters"], {key: key for key in ("model", "encoder", "adapter", "decoder", "total")}
            )
        )
        print(sections[-1] + "\n", flush=True)

        aligntok = build_timed_aligntok(args.model)
        flux_vae = AutoencoderKL(**FLUX_VAE_CONFIG).eval()
        image = load_image(args.resolution, args.resolution)
        timed_models = {args.model or TIMED_PRESET: aligntok, "FLUX VAE": flux_vae}  # the reference goes last
        results["timing"] = time_encode_decode(timed_models, image, args.repeats)
        sections.append(
            f"## Encode + decode, one {args.resolution}x{args.resolution} image, fp32, {args.threads} CPU threads "
            f"(median of {args.repeats})\n\n"
            + markdown_table(
                results["timing"],
                {
                    "model": "model",
                    "encode": "encode (s)",
                    "decode": "decode (s)",
                    "total": "total (s)",
                    "encode_ratio": "encode / FLUX",
                    "decode_ratio": "decode / FLUX",
                    "total_ratio": "total / FLUX",
                },
            )
        )
        print(sections[-1] + "\n", flush=True)

        if not args.skip_tiling:
            results["tiling"] = tiling_differences(timed_models, [(512, 512), (512, 768)], args.tile_size)
            sections.append(
                f"## Tiled ({args.tile_size}-pixel tiles) vs untiled\n\nencode: latents of tiled vs untiled "
                "encoding; decode: tiled vs untiled decoding of the same latents (images nominally in [-1, 1]). The "
                "FLUX VAE row is diffusers' own tiling under the same protocol, for scale.\n\n"
                + markdown_table(
                    results["tiling"],
                    {
                        "model": "model",
                        "size": "size (HxW)",
                        "encode_mean_abs_diff": "encode mean abs diff",
                        "encode_max_abs_diff": "encode max abs diff",
                        "latent_std": "latent std",
                        "decode_mean_abs_diff": "decode mean abs diff",
                        "decode_max_abs_diff": "decode max abs diff",
                        "decoded_std": "decoded std",
                        "untiled_seconds": "untiled (s)",
                        "tiled_seconds": "tiled (s)",
                    },
                )
            )
            print(sections[-1] + "\n", flush=True)
        del timed_models, aligntok, flux_vae
        gc.collect()

    os.makedirs(args.output_dir, exist_ok=True)
    json_path = os.path.join(args.output_dir, "autoencoder_cpu_cost.json")
    with open(json_path, "w") as file:
        json.dump(results, file, indent=2)
    header = (
        f"# AlignTok autoencoder CPU cost\n\n{results['date']}, torch {results['torch']}, {results['cpu']}, "
        f"{args.threads} threads, load average at start {results['load_average_at_start']:.1f}. "
        "Random weights unless stated; command: `python benchmarks/autoencoder_cpu_cost.py`.\n\n"
    )
    with open(os.path.join(args.output_dir, "autoencoder_cpu_cost.md"), "w") as file:
        file.write(header + "\n\n".join(sections) + "\n")
    print(f"Wrote {json_path} and autoencoder_cpu_cost.md")


if __name__ == "__main__":
    main()
