"""The AlignTok paper's Table 3 in miniature: which latent space trains a class-conditional DiT fastest and best?

On the demo's built-in data (`builtin:shapes`, 10 classes, 32x32) and with the demo's budget (`diffusers_aligntok.demo`:
toy DINOv2-type foundation encoder pretrained by the script itself, the same tokenizer step counts, the same DiT), per
seed, up to four tokenizers with the same 8x8x8 latent (f4, 8 channels) and the same decoder architecture (the
first three by default; `--arms` adds `vavae`):

| arm | tokenizer |
|---|---|
| `aligntok` | AlignTok stages 1-3 (`training/configs/demo_cpu.yaml` through `train_stage.py`, exactly as the demo) |
| `aligntok_stage1` | the same run's stage-1 model (frozen foundation encoder, adapter + decoder trained) |
| `vae` | `diffusers.AutoencoderKL` with a conv encoder, from scratch, the same reconstruction loss (L1, built from the same config by `ReconstructionLoss`), optimiser, batch size and total steps as stages 1-3 together, plus the usual tiny KL term (1e-6) of an LDM VAE |
| `vavae` | the `vae` arm plus VA-VAE's vision-foundation alignment loss to the *same* toy foundation encoder (marginal cosine + marginal distance-matrix terms, adaptive weight, VA-VAE's margins) |

For every arm: reconstruction PSNR on held-out images, latent linear-probe accuracy (`evaluation.linear_probe`), and
a DiT (`training/configs/dit_demo_cpu.yaml` through `train_dit.py`, the demo's step count) trained on its latents,
evaluated at 1/4, 1/2 and all of its steps (the run resumes from its own checkpoint between them): FID in the toy
foundation encoder's feature space (its CLS token, 96-d, `evaluation.fid.compute_fid_from_features`)
between class-conditional samples and held-out real images, and the accuracy of a separately trained small CNN
classifier (trained on real shapes only, never on any tokenizer's output) on the samples, i.e. how often a sample
shows the class it was asked for. The classifier's accuracy on real held-out images and on each arm's reconstructions
and the toy-feature FID of those reconstructions are reported too (the ceiling and the floor a DiT can reach through
that decoder).

Writes `toy_reproduction.json` and `toy_reproduction.md` (mean +- half the range over seeds, per-seed values in the
JSON) under `--results_dir`, and keeps the runs under `--output_dir`.

Usage:
    python benchmarks/toy_reproduction.py                       # 2 seeds in parallel, 1 thread each: ~40-50 min
    python benchmarks/toy_reproduction.py --seeds 0 1 2 --arms aligntok vae
    python benchmarks/toy_reproduction.py --scale 0.02 --num_samples_per_class 4 --results_dir /tmp/r   # smoke run
"""

import argparse
import datetime
import json
import logging
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # run from a source checkout without installing

from diffusers_aligntok import demo
from diffusers_aligntok.data import ShapesDataset

logger = logging.getLogger("toy_reproduction")

ARMS: dict[str, str] = {
    "aligntok": "AlignTok stages 1-3",
    "aligntok_stage1": "AlignTok stage 1 only",
    "vae": "conv VAE from scratch",
    "vavae": "conv VAE + VF loss (VA-VAE-style)",
}
DEFAULT_ARMS = ["aligntok", "aligntok_stage1", "vae"]
# Held-out images (never seen by a tokenizer, the DiT or the classifier): another seed of the generator.
HELD_OUT_SEED = 424_242
CLASSIFIER_SEED = 777
# The conv VAE's KL weight: LDM's usual value, small enough that the latent is practically deterministic like AlignTok's.
VAE_KL_WEIGHT = 1e-6
# VA-VAE (Yao et al. 2025): vf_loss = w * (mcos + mdms) with margins 0.5 / 0.25 and w = 0.1 x the adaptive weight.
VF_WEIGHT = 0.1
VF_COSINE_MARGIN = 0.5
VF_DISTANCE_MARGIN = 0.25


# ------------------------------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------------------------------


def shapes_tensors(num_samples: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`num_samples` built-in images (N, 3, 32, 32) in [-1, 1] and their labels, unflipped."""
    dataset = ShapesDataset(num_samples=num_samples, resolution=32, seed=seed, random_flip=False)
    images = torch.stack([dataset[i]["pixel_values"] for i in range(num_samples)])
    return images, torch.tensor([dataset.label(i) for i in range(num_samples)])


# ------------------------------------------------------------------------------------------------------------------
# Evaluators: a held-out classifier and the toy encoder's feature space
# ------------------------------------------------------------------------------------------------------------------


class ShapeClassifier(torch.nn.Module):
    """A small CNN that tells the 10 shapes apart; the judge of class-conditional samples (never a tokenizer part).

    Strided convolutions keep it cheap (about 10 MFLOPs per image): it is trained once per benchmark run on the CPU.
    """

    def __init__(self, num_classes: int = 10):
        super().__init__()

        def block(in_channels: int, out_channels: int, stride: int = 1) -> list[torch.nn.Module]:
            return [torch.nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1),
                    torch.nn.GroupNorm(8, out_channels), torch.nn.SiLU()]

        self.layers = torch.nn.Sequential(
            *block(3, 16), *block(16, 32, stride=2), *block(32, 64, stride=2), *block(64, 64),
            torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(64, num_classes),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.layers(images)


def train_classifier(num_steps: int, seed: int = CLASSIFIER_SEED) -> tuple[ShapeClassifier, dict[str, float]]:
    """Trains the judge on real shapes (its own seed of the generator, random flips) and measures it on held-out ones."""
    torch.manual_seed(seed)
    images, labels = shapes_tensors(4096, seed)
    classifier = ShapeClassifier()
    optimizer = torch.optim.AdamW(classifier.parameters(), lr=2e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=2e-3, total_steps=num_steps, pct_start=0.1)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(num_steps):
        index = torch.randint(0, len(images), (64,), generator=generator)
        batch = images[index]
        flip = torch.rand(len(batch), generator=generator) < 0.5
        batch = torch.where(flip.view(-1, 1, 1, 1), batch.flip(-1), batch)
        loss = F.cross_entropy(classifier(batch), labels[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    classifier.eval()
    return classifier, {"steps": num_steps}


@torch.no_grad()
def classifier_accuracy(classifier: ShapeClassifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    predictions = torch.cat([classifier(batch).argmax(-1) for batch in images.split(250)])
    return float((predictions == labels).float().mean())


@torch.no_grad()
def encoder_features(encoder: torch.nn.Module, images: torch.Tensor) -> np.ndarray:
    """FID features: the toy foundation encoder's pooled patch tokens (`demo.toy_encoder_features`), float64."""
    return torch.cat([demo.toy_encoder_features(encoder, batch) for batch in images.split(250)]).double().numpy()


# ------------------------------------------------------------------------------------------------------------------
# The from-scratch VAE arms
# ------------------------------------------------------------------------------------------------------------------


def build_conv_vae(seed: int):
    """`diffusers.AutoencoderKL` with the demo tokenizer's latent (f4, 8 channels) and decoder architecture."""
    from diffusers import AutoencoderKL

    from diffusers_aligntok.training.config import load_stage_config

    overrides = load_stage_config(REPO_ROOT / "training" / "configs" / "demo_cpu.yaml", 1).model.overrides
    torch.manual_seed(seed)
    block_out_channels = tuple(overrides["block_out_channels"])
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * len(block_out_channels),
        up_block_types=tuple(overrides["up_block_types"]),
        block_out_channels=block_out_channels,
        layers_per_block=overrides["layers_per_block"],
        latent_channels=overrides["latent_channels"],
        norm_num_groups=overrides["norm_num_groups"],
        sample_size=overrides["sample_size"],
        use_quant_conv=False,
        use_post_quant_conv=False,
    )


def vf_loss(latents: torch.Tensor, projection: torch.nn.Module, features: torch.Tensor) -> torch.Tensor:
    """VA-VAE's VF loss: marginal cosine similarity + marginal distance-matrix similarity, per image over its tokens.

    `latents` (B, C, h, w) are projected to the foundation feature width; `features` (B, h*w, D) are the frozen
    encoder's patch tokens on the same grid.
    """
    projected = F.normalize(projection(latents).flatten(2).transpose(1, 2), dim=-1)  # (B, N, D)
    features = F.normalize(features, dim=-1)
    cosine = F.relu(1 - VF_COSINE_MARGIN - (projected * features).sum(-1)).mean()
    distance = F.relu((projected @ projected.transpose(1, 2) - features @ features.transpose(1, 2)).abs() - VF_DISTANCE_MARGIN).mean()
    return cosine + distance


def train_conv_vae(output_dir: Path, num_steps: int, seed: int, foundation_encoder: str | None = None) -> dict[str, Any]:
    """Trains the `vae` arm (or, with `foundation_encoder`, the `vavae` arm) and `save_pretrained`s it.

    Same data (`builtin:shapes`, the tokenizer stages' seed, random flips), batch size, optimiser, learning-rate
    schedule, gradient clipping and reconstruction loss (`ReconstructionLoss` from `demo_cpu.yaml`'s stage-1 config)
    as the AlignTok stages.
    """
    from diffusers.optimization import get_scheduler
    from transformers import Dinov2Model

    from diffusers_aligntok.losses import ReconstructionLoss
    from diffusers_aligntok.training.config import load_stage_config

    config = load_stage_config(REPO_ROOT / "training" / "configs" / "demo_cpu.yaml", 1)
    vae = build_conv_vae(seed)
    loss_config, optimizer_config = config.loss, config.optimizer
    reconstruction_loss = ReconstructionLoss(perceptual_network=None, l1_weight=loss_config.l1_weight,
                                             perceptual_weight=0.0, gan_weight=0.0)
    parameters = list(vae.parameters())
    encoder = projection = None
    if foundation_encoder is not None:
        encoder = Dinov2Model.from_pretrained(foundation_encoder).eval().requires_grad_(False)
        projection = torch.nn.Conv2d(vae.config.latent_channels, encoder.config.hidden_size, 1)
        parameters += list(projection.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=optimizer_config.learning_rate,
                                  betas=(optimizer_config.adam_beta1, optimizer_config.adam_beta2),
                                  weight_decay=optimizer_config.weight_decay)
    lr_scheduler = get_scheduler(optimizer_config.lr_scheduler, optimizer=optimizer,
                                 num_warmup_steps=optimizer_config.lr_warmup_steps, num_training_steps=num_steps)
    dataset = ShapesDataset(num_samples=config.data.num_builtin_samples, resolution=32, seed=seed, random_flip=True)
    loader = torch.utils.data.DataLoader(dataset, batch_size=config.training.train_batch_size, shuffle=True,
                                         drop_last=True, generator=torch.Generator().manual_seed(seed))
    mean = torch.tensor(demo.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(demo.IMAGENET_STD).view(1, 3, 1, 1)
    step, epoch, logs = 0, 0, {}
    vae.train()
    while step < num_steps:
        dataset.set_epoch(epoch)
        for batch in loader:
            images = batch["pixel_values"]
            posterior = vae.encode(images).latent_dist
            latents = posterior.sample()
            reconstructions = vae.decode(latents).sample
            loss, logs = reconstruction_loss.generator_loss(images, reconstructions)
            loss = loss + VAE_KL_WEIGHT * posterior.kl().mean()
            if encoder is not None:
                with torch.no_grad():
                    features = encoder(pixel_values=((images + 1) / 2 - mean) / std).last_hidden_state[:, 1:]
                alignment = vf_loss(latents, projection, features)
                # VA-VAE's adaptive weight: balance the two gradients at the encoder's last layer.
                last_layer = vae.encoder.conv_out.weight
                rec_grad = torch.autograd.grad(loss, last_layer, retain_graph=True)[0]
                vf_grad = torch.autograd.grad(alignment, last_layer, retain_graph=True)[0]
                adaptive = (rec_grad.norm() / (vf_grad.norm() + 1e-6)).clamp(0, 1e4).detach()
                loss = loss + VF_WEIGHT * adaptive * alignment
                logs["loss/vf"] = alignment.detach()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(parameters, optimizer_config.max_grad_norm)
            optimizer.step()
            lr_scheduler.step()
            step += 1
            if step >= num_steps:
                break
        epoch += 1
    vae.eval().save_pretrained(output_dir)
    return {"steps": num_steps, "final_losses": {name: float(value) for name, value in logs.items()}}


# ------------------------------------------------------------------------------------------------------------------
# Latents, DiT, samples
# ------------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def cache_tokenizer_latents(tokenizer: torch.nn.Module, cache_dir: Path, num_samples: int, seed: int) -> Path:
    """A latent cache in `training/cache_latents.py`'s format (latents + flips, per-channel statistics) for any
    autoencoder with diffusers' `encode`, so every arm's DiT reads its latents through the same `CachedLatentDataset`."""
    from diffusers_aligntok.training.latent_cache import (
        per_channel_statistics,
        tokenizer_fingerprint,
        write_metadata,
        write_shard,
    )

    images, labels = shapes_tensors(num_samples, seed)
    latents = torch.cat([tokenizer.encode(batch).latent_dist.mode() for batch in images.split(256)])
    flipped = torch.cat([tokenizer.encode(batch.flip(-1)).latent_dist.mode() for batch in images.split(256)])
    cache_dir.mkdir(parents=True, exist_ok=True)
    shard = write_shard(cache_dir, 0, {"latents": latents, "latents_flipped": flipped, "labels": labels})
    mean, std = per_channel_statistics([shard])
    write_metadata(cache_dir, {
        "tokenizer": {"path": str(cache_dir), "class_name": type(tokenizer).__name__,
                      "fingerprint": tokenizer_fingerprint(tokenizer), "config": dict(tokenizer.config)},
        "latent_statistics": {"mean": mean, "std": std, "scaling_factor": 1.0, "source": "measured over this cache"},
        "latent_shape": list(latents.shape[1:]),
        "num_samples": num_samples,
        "num_classes": ShapesDataset.num_classes,
        "shard_size": num_samples,
        "flipped": True,
        "dtype": "float32",
        "data": {"source": "builtin:shapes", "resolution": 32, "description": f"builtin:shapes (n={num_samples}, seed={seed})"},
        "skipped_corrupt_images": 0,
    })
    return cache_dir


@torch.no_grad()
def sample_classes(transformer, tokenizer, cache_dir: Path, samples_per_class: int, guidance_scale: float, num_inference_steps: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Class-conditional samples through `AlignTokDiTPipeline` (the cache's statistics undo the normalisation)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    from diffusers_aligntok.pipelines import AlignTokDiTPipeline
    from diffusers_aligntok.training.latent_cache import read_metadata

    stats = read_metadata(cache_dir)["latent_statistics"]
    tokenizer.register_to_config(latents_mean=stats["mean"], latents_std=stats["std"], scaling_factor=1.0)
    pipeline = AlignTokDiTPipeline(transformer=transformer.eval(), vae=tokenizer, scheduler=FlowMatchEulerDiscreteScheduler(shift=1.0))
    labels = torch.arange(ShapesDataset.num_classes).repeat_interleave(samples_per_class)
    images = pipeline(class_labels=labels.tolist(), guidance_scale=guidance_scale, num_inference_steps=num_inference_steps,
                      generator=torch.Generator().manual_seed(seed), output_type="pt").images
    return images * 2 - 1, labels


# ------------------------------------------------------------------------------------------------------------------
# One seed
# ------------------------------------------------------------------------------------------------------------------


def run_seed(seed: int, args: argparse.Namespace, classifier: ShapeClassifier, held_out: tuple[torch.Tensor, torch.Tensor]) -> dict[str, Any]:
    """Every arm of one seed: foundation encoder, tokenizers, their metrics, and a DiT per arm evaluated during training."""
    from diffusers import AutoencoderKL

    from diffusers_aligntok import AlignedAutoencoderKL, LightningDiTTransformer2DModel
    from diffusers_aligntok.evaluation.fid import compute_fid_from_features
    from diffusers_aligntok.training.validation import image_grid, psnr, reconstruct

    seed_dir = Path(args.output_dir) / f"seed{seed}"
    if seed_dir.exists():
        shutil.rmtree(seed_dir)  # every number comes from this run
    results: dict[str, Any] = {"seed": seed, "arms": {}, "seconds": {}}
    seed_started = time.perf_counter()
    held_out_images, held_out_labels = held_out
    tokenizer_steps = sum(demo.scaled_steps(steps, args.scale) for steps in demo.STAGE_STEPS.values())
    dit_steps = demo.scaled_steps(args.dit_steps, args.scale)
    checkpoints = sorted({max(1, round(dit_steps * fraction)) for fraction in args.dit_eval_fractions})

    started = time.perf_counter()
    encoder_dir = seed_dir / "foundation_encoder"
    results["foundation_encoder"] = demo.pretrain_toy_foundation_encoder(
        encoder_dir, demo.scaled_steps(demo.ENCODER_PRETRAINING_STEPS, args.scale, minimum=1), seed=seed)
    from transformers import Dinov2Model

    feature_encoder = Dinov2Model.from_pretrained(encoder_dir).eval()
    real_features = encoder_features(feature_encoder, held_out_images)
    results["seconds"]["foundation_encoder"] = time.perf_counter() - started

    tokenizers: dict[str, Any] = {}
    if {"aligntok", "aligntok_stage1"} & set(args.arms):
        started = time.perf_counter()
        demo.train_tokenizer_stages(seed_dir / "aligntok", encoder_dir, args.scale, seed=seed)
        results["seconds"]["aligntok_stages"] = time.perf_counter() - started
        tokenizers["aligntok"] = lambda: AlignedAutoencoderKL.from_pretrained(seed_dir / "aligntok" / "stage3" / "model")
        tokenizers["aligntok_stage1"] = lambda: AlignedAutoencoderKL.from_pretrained(seed_dir / "aligntok" / "stage1" / "model")
    for arm, alignment_encoder in (("vae", None), ("vavae", encoder_dir)):
        if arm in args.arms:
            started = time.perf_counter()
            results.setdefault("vae_training", {})[arm] = train_conv_vae(
                seed_dir / arm / "model", tokenizer_steps, seed, None if alignment_encoder is None else str(alignment_encoder))
            results["seconds"][f"{arm}_training"] = time.perf_counter() - started
            tokenizers[arm] = lambda arm=arm: AutoencoderKL.from_pretrained(seed_dir / arm / "model")

    for arm in args.arms:
        started = time.perf_counter()
        logger.info(f"seed {seed}, arm {arm}: evaluating the tokenizer and training its DiT")
        tokenizer = tokenizers[arm]().eval()
        reconstructions = reconstruct(tokenizer, held_out_images, batch_size=250)
        arm_results: dict[str, Any] = {
            "psnr": float(psnr(held_out_images, reconstructions).mean()),
            "reconstruction_classifier_accuracy": classifier_accuracy(classifier, reconstructions, held_out_labels),
            # The decoder's own floor for the DiT's FID: reconstructions of the reference images themselves.
            "reconstruction_fid": compute_fid_from_features(real_features, encoder_features(feature_encoder, reconstructions)),
            "linear_probe_top1": demo.latent_linear_probe(tokenizer, num_images=args.num_probe_images),
            "tokenizer_steps": tokenizer_steps,
            "dit": [],
        }
        cache_dir = cache_tokenizer_latents(tokenizer, seed_dir / arm / "latent_cache", args.num_dit_latents, seed)
        dit_dir = seed_dir / arm / "dit"
        loss_curve: list[dict[str, float]] = []
        for index, steps in enumerate(checkpoints):
            # Each segment resumes from the previous one's checkpoint: one DiT run, measured at several steps.
            metrics = demo.train_class_conditional_dit(cache_dir, dit_dir, steps, seed=seed, resume=index > 0)
            loss_curve += metrics["loss_curve"]
            transformer = LightningDiTTransformer2DModel.from_pretrained(dit_dir / "transformer")
            point: dict[str, Any] = {"step": steps, "loss": metrics["loss_curve"][-1]["loss/velocity_mse"]}
            for name, guidance_scale in (("cfg", demo.GUIDANCE_SCALE), ("no_cfg", 1.0)):
                if name == "no_cfg" and steps != checkpoints[-1]:
                    continue  # without guidance only at the end: sampling is the slow part of the evaluation
                samples, labels = sample_classes(transformer, tokenizer, cache_dir, args.num_samples_per_class, guidance_scale,
                                                 args.num_inference_steps, seed)
                point[f"fid_{name}"] = compute_fid_from_features(real_features, encoder_features(feature_encoder, samples))
                point[f"accuracy_{name}"] = classifier_accuracy(classifier, samples, labels)
                if name == "cfg" and steps == checkpoints[-1]:
                    columns = min(8, args.num_samples_per_class)
                    rows = [samples[labels == label][:columns] for label in range(ShapesDataset.num_classes)]
                    image_grid(rows).save(seed_dir / arm / "samples.png")
            arm_results["dit"].append(point)
            logger.info(f"seed {seed}, arm {arm}, DiT step {steps}: {point}")
        arm_results["dit_loss_curve"] = [(p["step"], round(p["loss/velocity_mse"], 4)) for p in loss_curve]
        results["arms"][arm] = arm_results
        results["seconds"][f"{arm}_evaluation_and_dit"] = time.perf_counter() - started
    results["seconds"]["total"] = time.perf_counter() - seed_started
    return results


def _run_seed_in_worker(seed: int, args: argparse.Namespace, classifier_state: dict, held_out: tuple[torch.Tensor, torch.Tensor]) -> dict[str, Any]:
    """`run_seed` in a fresh (spawned) process with its own thread count, for `--parallel_seeds`."""
    logging.basicConfig(format=f"%(asctime)s seed {seed} %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    classifier = ShapeClassifier()
    classifier.load_state_dict(classifier_state)
    return run_seed(seed, args, classifier.eval(), held_out)


# ------------------------------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------------------------------


def _spread(values: list[float]) -> dict[str, float]:
    return {"mean": float(np.mean(values)), "half_range": float((max(values) - min(values)) / 2), "values": [float(v) for v in values]}


def summarize(per_seed: list[dict[str, Any]], arms: list[str]) -> dict[str, Any]:
    """Mean and half-range over seeds of every per-arm number (DiT numbers per evaluated step)."""
    summary: dict[str, Any] = {}
    for arm in arms:
        runs = [seed["arms"][arm] for seed in per_seed]
        entry = {key: _spread([run[key] for run in runs]) for key in ("psnr", "linear_probe_top1", "reconstruction_classifier_accuracy", "reconstruction_fid")}
        entry["dit"] = []
        for index, point in enumerate(runs[0]["dit"]):
            entry["dit"].append({"step": point["step"], **{key: _spread([run["dit"][index][key] for run in runs]) for key in point if key != "step"}})
        summary[arm] = entry
    return summary


def _format(value: dict[str, float], percent: bool = False, digits: int = 2) -> str:
    scale = 100 if percent else 1
    return f"{value['mean'] * scale:.{digits if not percent else 1}f} ± {value['half_range'] * scale:.{digits if not percent else 1}f}"


def markdown_report(report: dict[str, Any]) -> str:
    summary, arms = report["summary"], report["arms"]
    final = {arm: summary[arm]["dit"][-1] for arm in arms}
    lines = [
        "# Toy reproduction of AlignTok's Table 3 (built-in shapes, 32x32, 8x8x8 latents)",
        "",
        (f"Date: {report['date']} · torch {report['torch_version']} · {report['threads']} thread(s) per process · "
         f"wall time {report['wall_seconds'] / 60:.1f} min · seeds {report['seeds']} (run {report['parallel_seeds']} at a time) · "
         f"load average at start {report['load_average_at_start']}"),
        "",
        f"Command: `{report['command']}`",
        "",
        (f"Budget per arm and seed: {report['tokenizer_steps']} tokenizer steps (batch 32), DiT {report['dit_steps']} steps "
         f"(batch 64) on {report['num_dit_latents']} latents (+ flips). Samples: {report['num_samples_per_class']} per class, "
         f"{report['num_inference_steps']} Euler steps, CFG {report['guidance_scale']} (all channels). FID: toy-encoder "
         f"features (96-d) of the samples vs {report['num_held_out']} held-out real images (rec. FID: of those images' "
         f"reconstructions, the floor a DiT on that latent can reach). Classifier: a CNN trained on "
         f"real shapes only, {report['classifier']['held_out_accuracy'] * 100:.1f}% on held-out real images. "
         "Numbers are mean ± half the range over seeds (per-seed values in the JSON)."),
        "",
        "| arm | rec. PSNR (dB) | classifier on recon. (%) | rec. FID | latent linear probe (%) | DiT FID, CFG | DiT class acc., CFG (%) | DiT FID, no CFG | DiT class acc., no CFG (%) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for arm in arms:
        entry = summary[arm]
        lines.append(
            f"| {ARMS[arm]} | {_format(entry['psnr'])} | {_format(entry['reconstruction_classifier_accuracy'], True)} | "
            f"{_format(entry['reconstruction_fid'])} | {_format(entry['linear_probe_top1'], True)} | {_format(final[arm]['fid_cfg'])} | {_format(final[arm]['accuracy_cfg'], True)} | "
            f"{_format(final[arm]['fid_no_cfg'])} | {_format(final[arm]['accuracy_no_cfg'], True)} |"
        )
    steps = [point["step"] for point in summary[arms[0]]["dit"]]
    lines += ["", "DiT quality during training (CFG): FID / class accuracy (%) / velocity MSE at each evaluated step.", "",
              "| arm | " + " | ".join(f"step {step}" for step in steps) + " |", "|---|" + "---|" * len(steps)]
    for arm in arms:
        cells = [f"{_format(point['fid_cfg'])} / {_format(point['accuracy_cfg'], True)} / {point['loss']['mean']:.3f}" for point in summary[arm]["dit"]]
        lines.append(f"| {ARMS[arm]} | " + " | ".join(cells) + " |")
    lines += ["", f"Per-seed wall time (s): {report['seconds_per_seed']}", ""]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--seeds", type=int, nargs="+", default=[0, 1])
    add("--arms", nargs="+", default=DEFAULT_ARMS, choices=list(ARMS),
        help="Default: all but the optional vavae arm (it adds ~15 CPU minutes per seed).")
    add("--scale", type=float, default=1.0, help="Multiplies every training step count (0.02 for a smoke run).")
    add("--dit_steps", type=int, default=demo.DIT_STEPS, help="DiT steps at --scale 1 (default: the demo's).")
    add("--dit_eval_fractions", type=float, nargs="+", default=[0.25, 0.5, 1.0])
    add("--num_samples_per_class", type=int, default=20, help="Class-conditional samples per class and evaluated step.")
    add("--num_inference_steps", type=int, default=demo.NUM_INFERENCE_STEPS, help="Euler steps (default: the demo's).")
    add("--num_dit_latents", type=int, default=demo.NUM_DIT_LATENTS, help="Images the DiT trains on (default: the demo's).")
    add("--num_held_out", type=int, default=1000, help="Held-out real images: FID reference and reconstruction set.")
    add("--num_probe_images", type=int, default=1000, help="Held-out images of the latent linear probe.")
    add("--classifier_steps", type=int, default=600)
    add("--threads", type=int, default=1, help="torch threads per process.")
    add("--parallel_seeds", type=int, default=2, help="Seeds run at once, one process each (1: one after another).")
    add("--output_dir", default="runs/toy_reproduction")
    add("--results_dir", default=str(REPO_ROOT / "benchmarks" / "results"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    load_average = os.getloadavg()
    started = time.perf_counter()

    classifier, classifier_metrics = train_classifier(demo.scaled_steps(args.classifier_steps, args.scale, minimum=20))
    held_out = shapes_tensors(args.num_held_out, HELD_OUT_SEED)
    classifier_metrics["held_out_accuracy"] = classifier_accuracy(classifier, *held_out)
    if args.parallel_seeds > 1 and len(args.seeds) > 1:
        # One spawned process per seed (each with --threads threads): seeds are independent, and on a small machine
        # two single-threaded processes use the cores better than one process with two threads (tiny matmuls).
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(args.parallel_seeds, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(_run_seed_in_worker, seed, args, classifier.state_dict(), held_out) for seed in args.seeds]
            per_seed = [future.result() for future in futures]
    else:
        per_seed = [run_seed(seed, args, classifier, held_out) for seed in args.seeds]
    seconds_per_seed = [round(seed_results["seconds"]["total"]) for seed_results in per_seed]

    report = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join(["python benchmarks/toy_reproduction.py", *(argv if argv is not None else sys.argv[1:])]),
        "torch_version": torch.__version__,
        "python": platform.python_version(),
        "threads": args.threads,
        "parallel_seeds": min(args.parallel_seeds, len(args.seeds)),
        "load_average_at_start": [round(value, 2) for value in load_average],
        "seeds": args.seeds,
        "arms": args.arms,
        "scale": args.scale,
        "tokenizer_steps": sum(demo.scaled_steps(steps, args.scale) for steps in demo.STAGE_STEPS.values()),
        "dit_steps": demo.scaled_steps(args.dit_steps, args.scale),
        "num_dit_latents": args.num_dit_latents,
        "num_samples_per_class": args.num_samples_per_class,
        "num_inference_steps": args.num_inference_steps,
        "guidance_scale": demo.GUIDANCE_SCALE,
        "num_held_out": args.num_held_out,
        "classifier": classifier_metrics,
        "summary": summarize(per_seed, args.arms),
        "per_seed": per_seed,
        "seconds_per_seed": seconds_per_seed,
        "wall_seconds": time.perf_counter() - started,
    }
    results_dir = Path(args.results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / "toy_reproduction.json").write_text(json.dumps(report, indent=2))
    markdown = markdown_report(report)
    (results_dir / "toy_reproduction.md").write_text(markdown)
    print(markdown)
    return report


if __name__ == "__main__":
    main()
