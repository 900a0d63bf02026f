"""The whole AlignTok pipeline in miniature, on CPU, in minutes: `make demo` or `aligntok-demo --output_dir runs/demo`.

1. A foundation encoder: by default a small DINOv2-type ViT *pretrained by the demo itself* on the built-in shapes
   (supervised on their classes: the stand-in for DINOv2's self-supervised pretraining, giving features with class
   semantics, which is what AlignTok exploits). It is saved with transformers' `save_pretrained` and loaded through
   `AlignedAutoencoderKL.from_foundation_encoder`, the real loading path. `--foundation_encoder ID_OR_PATH` uses a real
   checkpoint instead (it must fit the demo's 32x32 images: any DINOv2 works, slowly).
2. Stages 1, 2 and 3 through the code of `training/train_stage.py` (`diffusers_aligntok.training.tokenizer.cli`), with `diffusers_aligntok/configs/demo_cpu.yaml`.
3. Latents cached by `diffusers_aligntok.training.dit.latent_cache`, a class-conditional DiT trained by
   `diffusers_aligntok.training.dit.cli` (the code of `training/cache_latents.py` and `training/train_dit.py`)
   (`diffusers_aligntok/configs/dit_demo_cpu.yaml`), and samples drawn through `AlignTokDiTPipeline`.

Everything lands in one run directory: `stage{1,2,3}/model` (each with train_stage.py's own validation grid),
`reconstructions.png` (ten held-out images, one per class, above their reconstructions after stages 1, 2 and 3),
`dit/pipeline` (the diffusers pipeline), `samples.png` (one row per class) and `demo_metrics.json` (held-out PSNR and
latent linear-probe accuracy per stage, DiT loss curve, wall times).
"""

import argparse
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import torch
import yaml


# The demo's two recipes ship inside the package (package data), so `aligntok-demo` works from an installed wheel.
CONFIGS_DIR = Path(__file__).resolve().parent / "configs"
# Until the training scripts' code moves into the package (issue 14), the demo runs it from the source checkout.
TOKENIZER_CONFIG = CONFIGS_DIR / "demo_cpu.yaml"
DIT_CONFIG = CONFIGS_DIR / "dit_demo_cpu.yaml"
logger = logging.getLogger("aligntok.demo")

# The toy foundation encoder: a 4-layer DINOv2-type ViT with patch 4 on 32x32 images (an 8x8 patch grid = the f4
# latent grid of the demo tokenizer, so no resizing happens).
TOY_ENCODER_CONFIG = {
    "hidden_size": 96,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "patch_size": 4,
    "image_size": 32,
    "mlp_ratio": 2,
    "use_mask_token": False,
}
# DINOv2 normalises inputs with ImageNet statistics; AlignedAutoencoderKL does the same before calling it.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# The demo's budget at --scale 1 (benchmarks/toy_reproduction.py trains every arm with the same numbers).
ENCODER_PRETRAINING_STEPS = 300
STAGE_STEPS = {1: 150, 2: 100, 3: 100}
DIT_STEPS = 1600
NUM_DIT_LATENTS = 4096  # images whose latents the DiT trains on (plus their flips): the tokenizer's set
GUIDANCE_SCALE = 3.0
NUM_INFERENCE_STEPS = 25
# The seed of the built-in images the demo measures on; nothing trains on them (the tokenizer and the DiT train on
# `seed`, the toy encoder on `seed + 17`).
HELD_OUT_SEED = 12_345


def scaled_steps(value: int, scale: float, minimum: int = 2) -> int:
    """A step count of the demo's budget times `scale` (0.01 for the smoke test), never below `minimum`."""
    return max(minimum, int(value * scale))


def toy_encoder_features(encoder: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Image-level features of the toy encoder for images in [-1, 1]: its CLS token (`pooler_output`), which its
    pretraining head classifies; benchmarks/toy_reproduction.py computes its FID in this feature space."""
    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1)
    return encoder(pixel_values=((images + 1) / 2 - mean) / std).pooler_output


def pretrain_toy_foundation_encoder(output_dir: Path, num_steps: int, resolution: int = 32, seed: int = 0) -> dict:
    """Trains a small `Dinov2Model` to classify the built-in shapes from its CLS token, then saves it.

    The encoder goes through transformers' `save_pretrained`, so stage 1 loads it like any real checkpoint.
    """
    from transformers import Dinov2Config, Dinov2Model

    from .data import ShapesDataset

    torch.manual_seed(seed)
    encoder = Dinov2Model(Dinov2Config(**TOY_ENCODER_CONFIG))
    # Rendered once (~3 s) rather than per step: drawing a shape (~0.8 ms) costs a third of the ViT's training step
    # per image, and the loop sees each image ~5 times.
    dataset = ShapesDataset(num_samples=4096, resolution=resolution, seed=seed + 17, random_flip=False)
    images = torch.stack([dataset[i]["pixel_values"] for i in range(len(dataset))])
    labels = torch.tensor([dataset.label(i) for i in range(len(dataset))])
    head = torch.nn.Linear(encoder.config.hidden_size, dataset.num_classes)
    # A ViT from scratch needs warmup: 50 steps took held-out accuracy at step 300 from 31% to 39% (measured), and
    # lr 1e-3 instead of 3e-3 to 46% (single runs; the data order alone moves it by ~5 points). Classifying the mean of
    # the patch tokens instead of the CLS token stayed near chance at both learning rates.
    optimizer = torch.optim.AdamW([*encoder.parameters(), *head.parameters()], lr=1e-3, weight_decay=0.05)
    warmup = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / 50))
    generator = torch.Generator().manual_seed(seed)
    batch_size, accuracy = 64, 0.0
    order = torch.empty(0, dtype=torch.long)
    for _ in range(num_steps):
        if len(order) < batch_size:  # a new epoch: reshuffle
            order = torch.randperm(len(images), generator=generator)
        index, order = order[:batch_size], order[batch_size:]
        flip = (torch.rand(batch_size, generator=generator) < 0.5).view(-1, 1, 1, 1)
        batch_labels = labels[index]
        logits = head(toy_encoder_features(encoder, torch.where(flip, images[index].flip(-1), images[index])))
        loss = torch.nn.functional.cross_entropy(logits, batch_labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        warmup.step()
        accuracy = 0.9 * accuracy + 0.1 * float((logits.argmax(-1) == batch_labels).float().mean())
    encoder.eval()
    held_out = ShapesDataset(num_samples=500, resolution=resolution, seed=HELD_OUT_SEED, random_flip=False)
    with torch.no_grad():
        held_out_images = torch.stack([held_out[i]["pixel_values"] for i in range(len(held_out))])
        held_out_labels = torch.tensor([held_out.label(i) for i in range(len(held_out))])
        predictions = head(toy_encoder_features(encoder, held_out_images)).argmax(-1)
        held_out_accuracy = float((predictions == held_out_labels).float().mean())
    encoder.save_pretrained(output_dir)
    return {
        "steps": num_steps,
        "final_loss": float(loss.detach()),
        "train_accuracy_ema": accuracy,
        "held_out_accuracy": held_out_accuracy,
    }


def _load_autoencoder(tokenizer: str | Path | torch.nn.Module) -> torch.nn.Module:
    """A tokenizer object, or an `AlignedAutoencoderKL` loaded from its directory."""
    if isinstance(tokenizer, torch.nn.Module):
        return tokenizer.eval()
    from .models import AlignedAutoencoderKL

    return AlignedAutoencoderKL.from_pretrained(tokenizer).eval()


@torch.no_grad()
def latent_linear_probe(
    tokenizer: str | Path | torch.nn.Module, num_images: int = 1000, seed: int = HELD_OUT_SEED
) -> float:
    """Linear-probe accuracy of a tokenizer's latent on held-out built-in images (evaluation.metrics.linear_probe).

    `tokenizer` is a saved `AlignedAutoencoderKL` directory or any autoencoder with diffusers' `encode` interface.
    """
    from .data import ShapesDataset
    from .evaluation.metrics.linear_probe import latent_probe_features, linear_probe

    tokenizer = _load_autoencoder(tokenizer)
    dataset = ShapesDataset(num_samples=num_images, resolution=32, seed=seed, random_flip=False)
    features, labels = [], []
    for start in range(0, num_images, 100):
        items = [dataset[i] for i in range(start, min(start + 100, num_images))]
        latents = tokenizer.encode(torch.stack([item["pixel_values"] for item in items])).latent_dist.mode()
        features.append(latent_probe_features(latents))
        labels += [item["label"] for item in items]
    return float(linear_probe(torch.cat(features), torch.tensor(labels))["top1"])


def _save_enlarged(grid, path: Path, factor: int = 3) -> None:
    """32x32 images are hard to judge at their own size: save the grid enlarged, nearest-neighbour (no smoothing)."""
    grid.resize((grid.width * factor, grid.height * factor), resample=0).save(path)


@torch.no_grad()
def held_out_reconstructions(
    stage_dirs: dict[int, Path], grid_path: Path, num_images: int = 200, seed: int = HELD_OUT_SEED
) -> dict[int, float]:
    """Each stage's tokenizer on the same held-out built-in images (never trained on): mean PSNR per stage, and one PNG
    of the first ten (one per class), originals in the top row, then one row per stage."""
    from .data import ShapesDataset
    from .evaluation.metrics.reconstruction import psnr
    from .training.validation import image_grid, reconstruct

    dataset = ShapesDataset(num_samples=num_images, resolution=32, seed=seed, random_flip=False)
    images = torch.stack([dataset[i]["pixel_values"] for i in range(num_images)])
    rows, mean_psnr = [images[:10]], {}
    for stage, stage_dir in stage_dirs.items():
        reconstructions = reconstruct(_load_autoencoder(stage_dir), images, batch_size=100)
        mean_psnr[stage] = float(psnr(images, reconstructions).mean())
        rows.append(reconstructions[:10])
    _save_enlarged(image_grid(rows), grid_path)
    return mean_psnr


@torch.no_grad()
def save_class_grid(pipeline_dir: Path, path: Path, samples_per_class: int, guidance_scale: float, steps: int) -> None:
    from .pipelines import AlignTokDiTPipeline
    from .training.validation import image_grid

    pipeline = AlignTokDiTPipeline.from_pretrained(pipeline_dir)
    num_classes = pipeline.transformer.config.num_classes
    rows = []
    for label in range(num_classes):
        images = pipeline(
            class_labels=[label] * samples_per_class,
            guidance_scale=guidance_scale,
            num_inference_steps=steps,
            generator=torch.Generator().manual_seed(label),
            output_type="pt",
        ).images
        rows.append(images * 2 - 1)
    _save_enlarged(image_grid(rows), path)


def _write_config(template: Path, destination: Path, updates: dict[str, Any]) -> Path:
    from .training.config import apply_dotted_overrides

    raw = apply_dotted_overrides(yaml.safe_load(template.read_text()), updates, str(template))
    destination.parent.mkdir(parents=True, exist_ok=True)
    destination.write_text(yaml.safe_dump(raw, sort_keys=False))
    return destination


def train_tokenizer_stages(
    output_dir: Path,
    foundation_encoder: str,
    scale: float = 1.0,
    seed: int = 0,
    stage1_model: Path | None = None,
    semantic_preservation_weight: float | None = None,
) -> dict[int, dict]:
    """AlignTok stages 1-3 through `training/train_stage.py` with `demo_cpu.yaml`: `<output_dir>/stage{1,2,3}/model`.

    With `stage1_model` (a saved stage-1 `AlignedAutoencoderKL`), only stages 2 and 3 run, stage 2 starting from that
    model (`model.init_from`), so that runs differing only in a stage-2 setting share one stage 1.
    `semantic_preservation_weight` replaces stage 2's w_sp (`demo_cpu.yaml`: 1.0); the benchmark sweeps it.

    Returns each trained stage's `metrics.json`.
    """
    from .training.tokenizer import cli as train_stage

    updates: dict[str, Any] = {
        "common.model.foundation_encoder": str(foundation_encoder),
        "common.training.seed": seed,
    }
    updates.update(
        {
            f"stages.{stage}.training.max_train_steps": scaled_steps(steps, scale)
            for stage, steps in STAGE_STEPS.items()
        }
    )
    if semantic_preservation_weight is not None:
        updates["stages.2.loss.semantic_preservation_weight"] = semantic_preservation_weight
    stages = list(STAGE_STEPS)
    if stage1_model is not None:
        updates["stages.2.model.init_from"] = str(stage1_model)
        stages = [stage for stage in stages if stage != 1]
    config = _write_config(TOKENIZER_CONFIG, output_dir / "configs" / "tokenizer.yaml", updates)
    # One call per stage when stage 1 is skipped: `--stage all` would train it again.
    for stage in ["all"] if stage1_model is None else stages:
        train_stage.main(["--config", str(config), "--stage", str(stage), "--output_dir", str(output_dir)])
    return {stage: json.loads((output_dir / f"stage{stage}" / "metrics.json").read_text()) for stage in stages}


def train_class_conditional_dit(
    cache_dir: Path,
    output_dir: Path,
    max_train_steps: int,
    tokenizer_dir: Path | None = None,
    seed: int = 0,
    resume: bool = False,
) -> dict[str, Any]:
    """The demo's DiT (`dit_demo_cpu.yaml`) through `training/train_dit.py` on a latent cache.

    With `tokenizer_dir` the run also saves `<output_dir>/pipeline`. With `resume`, training continues from the latest
    checkpoint in `output_dir` up to `max_train_steps` (how the benchmark measures the DiT at intermediate steps).
    """
    from .training.dit import cli as train_dit

    config = _write_config(
        DIT_CONFIG,
        output_dir / "dit.yaml",
        {
            "data.cache_dir": str(cache_dir),
            "validation.tokenizer": str(tokenizer_dir) if tokenizer_dir is not None else None,
            "training.max_train_steps": max_train_steps,
            "training.seed": seed,
        },
    )
    argv = ["--config", str(config), "--output_dir", str(output_dir)]
    return train_dit.main(argv + (["--resume_from_checkpoint", "latest"] if resume else []))


def run_demo(output_dir: Path, foundation_encoder: str | None, encoder_steps: int, scale: float) -> dict[str, Any]:
    from .training.dit import latent_cache as cache_latents

    timings: dict[str, float] = {}
    metrics: dict[str, Any] = {"output_dir": str(output_dir)}
    started = time.perf_counter()

    if foundation_encoder is None:
        foundation_encoder = str(output_dir / "foundation_encoder")
        logger.info(f"Pretraining the toy foundation encoder ({encoder_steps} steps) -> {foundation_encoder}")
        metrics["foundation_encoder"] = {
            "path": foundation_encoder,
            "pretraining": pretrain_toy_foundation_encoder(
                Path(foundation_encoder), scaled_steps(encoder_steps, scale, minimum=1)
            ),
        }
    else:
        metrics["foundation_encoder"] = {"path": foundation_encoder, "pretraining": "given"}
    timings["foundation_encoder"] = time.perf_counter() - started

    stage_started = time.perf_counter()
    stage_metrics = train_tokenizer_stages(output_dir, foundation_encoder, scale)
    timings["tokenizer_stages"] = time.perf_counter() - stage_started
    stage_dirs = {stage: output_dir / f"stage{stage}" / "model" for stage in STAGE_STEPS}
    held_out_psnr = held_out_reconstructions(stage_dirs, output_dir / "reconstructions.png")
    metrics["reconstructions"] = str(output_dir / "reconstructions.png")
    metrics["stages"] = {
        stage: {
            "psnr": held_out_psnr[stage],  # 200 held-out images
            "validation_psnr": stage_metrics[stage]["validation_psnr"],  # the 10 images train_stage.py validates on
            "linear_probe_top1": latent_linear_probe(stage_dirs[stage]),
        }
        for stage in STAGE_STEPS
    }

    dit_started = time.perf_counter()
    tokenizer_dir = output_dir / "stage3" / "model"
    cache_dir = output_dir / "latent_cache"
    cache_latents.main(
        [
            "--tokenizer",
            str(tokenizer_dir),
            "--data",
            "builtin:shapes",
            "--resolution",
            "32",
            "--num_builtin_samples",
            str(NUM_DIT_LATENTS),
            "--shard_size",
            "2048",
            "--batch_size",
            "128",
            "--output_dir",
            str(cache_dir),
        ]
    )
    dit_metrics = train_class_conditional_dit(
        cache_dir, output_dir / "dit", scaled_steps(DIT_STEPS, scale), tokenizer_dir
    )
    save_class_grid(
        output_dir / "dit" / "pipeline",
        output_dir / "samples.png",
        samples_per_class=8,
        guidance_scale=GUIDANCE_SCALE,
        steps=NUM_INFERENCE_STEPS,
    )
    timings["dit"] = time.perf_counter() - dit_started
    curve = dit_metrics["loss_curve"]
    metrics["dit"] = {
        "num_parameters": dit_metrics["num_parameters"],
        "loss_first": curve[0]["loss/velocity_mse"],
        "loss_last": curve[-1]["loss/velocity_mse"],
        "loss_curve": [(point["step"], round(point["loss/velocity_mse"], 4)) for point in curve],
        "pipeline": str(output_dir / "dit" / "pipeline"),
        "samples": str(output_dir / "samples.png"),
    }
    timings["total"] = time.perf_counter() - started
    metrics["seconds"] = {name: round(value, 1) for name, value in timings.items()}
    (output_dir / "demo_metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default="runs/demo")
    parser.add_argument(
        "--foundation_encoder",
        default=None,
        help="Hub id or local directory of a pretrained encoder instead of the demo's toy one.",
    )
    parser.add_argument("--encoder_pretraining_steps", type=int, default=ENCODER_PRETRAINING_STEPS)
    parser.add_argument("--scale", type=float, default=1.0, help="Multiplies every step count (0.05 for a smoke run).")
    args = parser.parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    if args.foundation_encoder is None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the default demo needs nothing from a hub
    metrics = run_demo(Path(args.output_dir), args.foundation_encoder, args.encoder_pretraining_steps, args.scale)
    summary = {stage: {k: round(v, 3) for k, v in values.items()} for stage, values in metrics["stages"].items()}
    print(
        json.dumps(
            {
                "stages": summary,
                "dit_loss": [metrics["dit"]["loss_first"], metrics["dit"]["loss_last"]],
                "seconds": metrics["seconds"],
                "output_dir": metrics["output_dir"],
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
