"""The AlignTok paper's Table 3 in miniature: which latent space trains a class-conditional DiT fastest and best?

On the demo's built-in data (`builtin:shapes`, 10 classes, 32x32) and with the demo's budget (`diffusers_aligntok.demo`:
toy DINOv2-type foundation encoder pretrained by the script itself, the same tokenizer step counts, the same DiT), per
seed, six tokenizers with the same 8x8x8 latent (f4, 8 channels) and the same decoder architecture (all by default;
`--arms` picks some):

| arm | tokenizer |
|---|---|
| `aligntok` | AlignTok stages 1-3 (`diffusers_aligntok/configs/demo_cpu.yaml` through `train_stage.py`, exactly as the demo; w_sp = 1) |
| `aligntok_stage1` | the same run's stage-1 model (frozen foundation encoder, adapter + decoder trained) |
| `vae` | `diffusers.AutoencoderKL` with a conv encoder, from scratch, the same reconstruction loss (L1, built from the same config by `ReconstructionLoss`), optimiser, batch size and total steps as stages 1-3 together, plus the usual tiny KL term (1e-6) of an LDM VAE |
| `vavae` | the paper's main baseline: the `vae` arm (same budget) plus VA-VAE's vision-foundation alignment loss to the *same* toy foundation encoder (marginal cosine + marginal distance-matrix terms, adaptive weight, VA-VAE's margins) |
| `aligntok_wsp0`, `aligntok_wsp5` | the semantic-preservation sweep: stages 2 and 3 again from the `aligntok` arm's stage-1 model, with stage 2's w_sp = 0 and 5 instead of 1 |

For every arm: reconstruction PSNR on held-out images, latent linear-probe accuracy (`demo.latent_linear_probe`), the
accuracy of a separately trained small CNN classifier, the judge (trained on real shapes only, never on any
tokenizer's output), on the reconstructions, and two FIDs of the reconstructions against the held-out real images
(the floor a DiT can reach through that decoder), both with `evaluation.metrics.fid.compute_fid_from_features`:

- **toy-encoder FID**: in the toy foundation encoder's feature space (its CLS token, 96-d). The AlignTok and VA-VAE
  arms are trained towards that very encoder, so this FID can favour them;
- **judge FID**: in the judge CNN's feature space (its pooled 64-d features before the final Linear), which no
  tokenizer has seen.

Then, except for the sweep arms (`--sweep_dit` includes them), a DiT (`diffusers_aligntok/configs/dit_demo_cpu.yaml` through
`train_dit.py`, the demo's step count) trained on the arm's latents, evaluated at 1/4, 1/2 and all of its steps (the
run resumes from its own checkpoint between them): class-conditional samples with and without CFG at every evaluated
step, their two FIDs against the held-out real images, and the judge's accuracy on them, i.e. how often a sample shows
the class it was asked for.

Writes `toy_reproduction.json` (per-seed values of everything) and `toy_reproduction.md` (mean +- half the range over
seeds, the per-seed judge accuracy of the final CFG samples, and the w_sp sweep next to the paper's linear-probe
numbers) under `--results_dir`, and keeps the runs under `--output_dir`.

Usage:
    python benchmarks/toy_reproduction.py              # 3 seeds at once, 1 thread each: ~1 h on 2 cores
    python benchmarks/toy_reproduction.py --seeds 0 1 --arms aligntok vae vavae
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F


REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # run from a source checkout without installing

from diffusers_aligntok import demo  # noqa: E402
from diffusers_aligntok.data import ShapesDataset  # noqa: E402


logger = logging.getLogger("toy_reproduction")

ARMS: dict[str, str] = {
    "aligntok": "AlignTok stages 1-3",
    "aligntok_stage1": "AlignTok stage 1 only",
    "vae": "conv VAE from scratch",
    "vavae": "conv VAE + VF loss (VA-VAE-style)",
    "aligntok_wsp0": "AlignTok stages 1-3, w_sp = 0",
    "aligntok_wsp5": "AlignTok stages 1-3, w_sp = 5",
}
DEFAULT_ARMS = list(ARMS)
# The semantic-preservation sweep: stage 2's w_sp per arm. The `aligntok` arm is the sweep's w_sp = 1 point
# (`demo_cpu.yaml`'s value); the other two rerun stages 2 and 3 from its stage-1 model.
SEMANTIC_PRESERVATION_WEIGHTS: dict[str, float] = {"aligntok_wsp0": 0.0, "aligntok": 1.0, "aligntok_wsp5": 5.0}
SWEEP_ARMS = [arm for arm in SEMANTIC_PRESERVATION_WEIGHTS if arm != "aligntok"]
# The paper's latent linear-probe top-1 accuracy for w_sp 0 / 1 / 5 (ImageNet; our toy numbers sit beside them).
PAPER_LINEAR_PROBE_TOP1: dict[float, float] = {0.0: 0.095, 1.0: 0.351, 5.0: 0.405}
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
# Evaluators: a held-out classifier (the judge) and two FID feature spaces
# ------------------------------------------------------------------------------------------------------------------


class ShapeClassifier(torch.nn.Module):
    """A small CNN that tells the 10 shapes apart; the judge of class-conditional samples (never a tokenizer part).

    Strided convolutions keep it cheap (about 10 MFLOPs per image): it is trained once per benchmark run on the CPU.
    Its pooled features before the final Linear (`features`, 64-d) are the benchmark's second FID space.
    """

    def __init__(self, num_classes: int = 10):
        super().__init__()

        def block(in_channels: int, out_channels: int, stride: int = 1) -> list[torch.nn.Module]:
            return [
                torch.nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1),
                torch.nn.GroupNorm(8, out_channels),
                torch.nn.SiLU(),
            ]

        self.layers = torch.nn.Sequential(
            *block(3, 16),
            *block(16, 32, stride=2),
            *block(32, 64, stride=2),
            *block(64, 64),
            torch.nn.AdaptiveAvgPool2d(1),
            torch.nn.Flatten(),
            torch.nn.Linear(64, num_classes),
        )

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The penultimate, globally pooled features (N, 64) that the final Linear classifies."""
        return self.layers[:-1](images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.layers[-1](self.features(images))


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
    """The fraction of `images` the judge assigns to their `labels`."""
    predictions = torch.cat([classifier(batch).argmax(-1) for batch in images.split(250)])
    return float((predictions == labels).float().mean())


@torch.no_grad()
def encoder_features(encoder: torch.nn.Module, images: torch.Tensor) -> np.ndarray:
    """FID features: the toy foundation encoder's CLS token (`demo.toy_encoder_features`), float64."""
    return torch.cat([demo.toy_encoder_features(encoder, batch) for batch in images.split(250)]).double().numpy()


@torch.no_grad()
def judge_features(classifier: ShapeClassifier, images: torch.Tensor) -> np.ndarray:
    """FID features independent of the toy foundation encoder: the judge's pooled 64-d features, float64."""
    return torch.cat([classifier.features(batch) for batch in images.split(250)]).double().numpy()


@dataclass
class FidFeatureSpaces:
    """Both FID feature spaces, with the held-out real images' features computed once per seed.

    The toy encoder is the one AlignTok and VA-VAE align to, so its FID may favour them; the judge was trained on real
    images alone and no tokenizer is trained towards it, so its FID has no such bias. Both go through
    `evaluation.metrics.fid.compute_fid_from_features`.
    """

    encoder: torch.nn.Module
    classifier: ShapeClassifier
    real_encoder_features: np.ndarray
    real_judge_features: np.ndarray

    @classmethod
    def from_real_images(
        cls, encoder: torch.nn.Module, classifier: ShapeClassifier, images: torch.Tensor
    ) -> "FidFeatureSpaces":
        return cls(encoder, classifier, encoder_features(encoder, images), judge_features(classifier, images))

    def fids(self, images: torch.Tensor) -> dict[str, float]:
        """`fid` (toy-encoder space) and `judge_fid` (judge space) of `images` against the real images."""
        from diffusers_aligntok.evaluation.metrics.fid import compute_fid_from_features

        return {
            "fid": compute_fid_from_features(self.real_encoder_features, encoder_features(self.encoder, images)),
            "judge_fid": compute_fid_from_features(self.real_judge_features, judge_features(self.classifier, images)),
        }


# ------------------------------------------------------------------------------------------------------------------
# The from-scratch VAE arms
# ------------------------------------------------------------------------------------------------------------------


def build_conv_vae(seed: int):
    """`diffusers.AutoencoderKL` with the demo tokenizer's latent (f4, 8 channels) and decoder architecture."""
    from diffusers import AutoencoderKL

    from diffusers_aligntok.training.config import load_stage_config

    overrides = load_stage_config(demo.TOKENIZER_CONFIG, 1).model.overrides
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
    distance = F.relu(
        (projected @ projected.transpose(1, 2) - features @ features.transpose(1, 2)).abs() - VF_DISTANCE_MARGIN
    ).mean()
    return cosine + distance


def train_conv_vae(
    output_dir: Path, num_steps: int, seed: int, foundation_encoder: str | None = None
) -> dict[str, Any]:
    """Trains the `vae` arm (or, with `foundation_encoder`, the `vavae` arm) and `save_pretrained`s it.

    Same data (`builtin:shapes`, the tokenizer stages' seed, random flips), batch size, optimiser, learning-rate
    schedule, gradient clipping and reconstruction loss (`ReconstructionLoss` from `demo_cpu.yaml`'s stage-1 config)
    as the AlignTok stages.
    """
    from diffusers.optimization import get_scheduler
    from transformers import Dinov2Model

    from diffusers_aligntok.losses import ReconstructionLoss
    from diffusers_aligntok.training.config import load_stage_config

    config = load_stage_config(demo.TOKENIZER_CONFIG, 1)
    vae = build_conv_vae(seed)
    loss_config, optimizer_config = config.loss, config.optimizer
    reconstruction_loss = ReconstructionLoss(
        perceptual_network=None, l1_weight=loss_config.l1_weight, perceptual_weight=0.0, gan_weight=0.0
    )
    parameters = list(vae.parameters())
    encoder = projection = None
    if foundation_encoder is not None:
        encoder = Dinov2Model.from_pretrained(foundation_encoder).eval().requires_grad_(False)
        projection = torch.nn.Conv2d(vae.config.latent_channels, encoder.config.hidden_size, 1)
        parameters += list(projection.parameters())
    optimizer = torch.optim.AdamW(
        parameters,
        lr=optimizer_config.learning_rate,
        betas=(optimizer_config.adam_beta1, optimizer_config.adam_beta2),
        weight_decay=optimizer_config.weight_decay,
    )
    lr_scheduler = get_scheduler(
        optimizer_config.lr_scheduler,
        optimizer=optimizer,
        num_warmup_steps=optimizer_config.lr_warmup_steps,
        num_training_steps=num_steps,
    )
    dataset = ShapesDataset(num_samples=config.data.num_builtin_samples, resolution=32, seed=seed, random_flip=True)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=config.training.train_batch_size,
        shuffle=True,
        drop_last=True,
        generator=torch.Generator().manual_seed(seed),
    )
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
    from diffusers_aligntok.training.dit.latent_cache import (
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
    write_metadata(
        cache_dir,
        {
            "tokenizer": {
                "path": str(cache_dir),
                "class_name": type(tokenizer).__name__,
                "fingerprint": tokenizer_fingerprint(tokenizer),
                "config": dict(tokenizer.config),
            },
            "latent_statistics": {
                "mean": mean,
                "std": std,
                "scaling_factor": 1.0,
                "source": "measured over this cache",
            },
            "latent_shape": list(latents.shape[1:]),
            "num_samples": num_samples,
            "num_classes": ShapesDataset.num_classes,
            "shard_size": num_samples,
            "flipped": True,
            "dtype": "float32",
            "data": {
                "source": "builtin:shapes",
                "resolution": 32,
                "description": f"builtin:shapes (n={num_samples}, seed={seed})",
            },
            "skipped_corrupt_images": 0,
        },
    )
    return cache_dir


@torch.no_grad()
def sample_classes(
    transformer,
    tokenizer,
    cache_dir: Path,
    samples_per_class: int,
    guidance_scale: float,
    num_inference_steps: int,
    seed: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Class-conditional samples through `AlignTokDiTPipeline` (the cache's statistics undo the normalisation)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    from diffusers_aligntok.pipelines import AlignTokDiTPipeline
    from diffusers_aligntok.training.dit.latent_cache import read_metadata

    stats = read_metadata(cache_dir)["latent_statistics"]
    tokenizer.register_to_config(latents_mean=stats["mean"], latents_std=stats["std"], scaling_factor=1.0)
    pipeline = AlignTokDiTPipeline(
        transformer=transformer.eval(), vae=tokenizer, scheduler=FlowMatchEulerDiscreteScheduler(shift=1.0)
    )
    labels = torch.arange(ShapesDataset.num_classes).repeat_interleave(samples_per_class)
    images = pipeline(
        class_labels=labels.tolist(),
        guidance_scale=guidance_scale,
        num_inference_steps=num_inference_steps,
        generator=torch.Generator().manual_seed(seed),
        output_type="pt",
    ).images
    return images * 2 - 1, labels


# ------------------------------------------------------------------------------------------------------------------
# One seed
# ------------------------------------------------------------------------------------------------------------------


def dit_arms(args: argparse.Namespace) -> list[str]:
    """The arms that get a DiT: every asked-for arm but the w_sp sweep's extra ones (unless `--sweep_dit`), whose
    question, how w_sp moves the latent's semantics, the tokenizer metrics answer at a fraction of a DiT's cost."""
    return [arm for arm in args.arms if args.sweep_dit or arm not in SWEEP_ARMS]


def evaluate_tokenizer(
    tokenizer: torch.nn.Module,
    held_out: tuple[torch.Tensor, torch.Tensor],
    classifier: ShapeClassifier,
    feature_spaces: FidFeatureSpaces,
    num_probe_images: int,
) -> dict[str, float]:
    """A tokenizer's own numbers on the held-out images: PSNR, the judge's accuracy and both FIDs of the
    reconstructions, and the latent linear probe."""
    from diffusers_aligntok.training.validation import psnr, reconstruct

    images, labels = held_out
    with torch.no_grad():
        reconstructions = reconstruct(tokenizer, images, batch_size=250)
    # The decoder's own floor for the DiT's FIDs: reconstructions of the reference images themselves.
    fids = feature_spaces.fids(reconstructions)
    return {
        "psnr": float(psnr(images, reconstructions).mean()),
        "reconstruction_classifier_accuracy": classifier_accuracy(classifier, reconstructions, labels),
        "reconstruction_fid": fids["fid"],
        "reconstruction_judge_fid": fids["judge_fid"],
        "linear_probe_top1": demo.latent_linear_probe(tokenizer, num_images=num_probe_images),
    }


def train_and_evaluate_dit(
    tokenizer: torch.nn.Module,
    arm_dir: Path,
    checkpoints: list[int],
    args: argparse.Namespace,
    seed: int,
    classifier: ShapeClassifier,
    feature_spaces: FidFeatureSpaces,
) -> tuple[dict[str, Any], dict[str, float]]:
    """One DiT on the tokenizer's latents, measured at each of `checkpoints` (training steps): with and without CFG,
    the judge's accuracy and both FIDs of class-conditional samples. Returns the results and the seconds spent
    training (latent caching included) and sampling."""
    from diffusers_aligntok import LightningDiTTransformer2DModel
    from diffusers_aligntok.training.validation import image_grid

    started = time.perf_counter()
    cache_dir = cache_tokenizer_latents(tokenizer, arm_dir / "latent_cache", args.num_dit_latents, seed)
    seconds = {"dit_training": time.perf_counter() - started, "sampling": 0.0}
    dit_dir = arm_dir / "dit"
    points: list[dict[str, Any]] = []
    loss_curve: list[dict[str, float]] = []
    for index, steps in enumerate(checkpoints):
        started = time.perf_counter()
        # Each segment resumes from the previous one's checkpoint: one DiT run, measured at several steps.
        metrics = demo.train_class_conditional_dit(cache_dir, dit_dir, steps, seed=seed, resume=index > 0)
        seconds["dit_training"] += time.perf_counter() - started
        started = time.perf_counter()
        loss_curve += metrics["loss_curve"]
        transformer = LightningDiTTransformer2DModel.from_pretrained(dit_dir / "transformer")
        point: dict[str, Any] = {"step": steps, "loss": metrics["loss_curve"][-1]["loss/velocity_mse"]}
        for name, guidance_scale in (("cfg", demo.GUIDANCE_SCALE), ("no_cfg", 1.0)):
            samples, labels = sample_classes(
                transformer,
                tokenizer,
                cache_dir,
                args.num_samples_per_class,
                guidance_scale,
                args.num_inference_steps,
                seed,
            )
            fids = feature_spaces.fids(samples)
            point[f"accuracy_{name}"] = classifier_accuracy(classifier, samples, labels)
            point[f"fid_{name}"] = fids["fid"]
            point[f"judge_fid_{name}"] = fids["judge_fid"]
            if name == "cfg" and steps == checkpoints[-1]:
                columns = min(8, args.num_samples_per_class)
                rows = [samples[labels == label][:columns] for label in range(ShapesDataset.num_classes)]
                image_grid(rows).save(arm_dir / "samples.png")
        points.append(point)
        seconds["sampling"] += time.perf_counter() - started
        logger.info(f"seed {seed}, {arm_dir.name}, DiT step {steps}: {point}")
    results = {"dit": points, "dit_loss_curve": [(p["step"], round(p["loss/velocity_mse"], 4)) for p in loss_curve]}
    return results, seconds


def run_seed(
    seed: int, args: argparse.Namespace, classifier: ShapeClassifier, held_out: tuple[torch.Tensor, torch.Tensor]
) -> dict[str, Any]:
    """Every arm of one seed: foundation encoder, tokenizers, their metrics, and a DiT per arm evaluated during training."""
    from diffusers import AutoencoderKL
    from transformers import Dinov2Model

    from diffusers_aligntok import AlignedAutoencoderKL

    seed_dir = Path(args.output_dir) / f"seed{seed}"
    if seed_dir.exists():
        shutil.rmtree(seed_dir)  # every number comes from this run
    results: dict[str, Any] = {"seed": seed, "arms": {}, "seconds": {}}
    seed_started = time.perf_counter()
    tokenizer_steps = sum(demo.scaled_steps(steps, args.scale) for steps in demo.STAGE_STEPS.values())
    dit_steps = demo.scaled_steps(args.dit_steps, args.scale)
    checkpoints = sorted({max(1, round(dit_steps * fraction)) for fraction in args.dit_eval_fractions})

    started = time.perf_counter()
    encoder_dir = seed_dir / "foundation_encoder"
    results["foundation_encoder"] = demo.pretrain_toy_foundation_encoder(
        encoder_dir, demo.scaled_steps(demo.ENCODER_PRETRAINING_STEPS, args.scale, minimum=1), seed=seed
    )
    feature_spaces = FidFeatureSpaces.from_real_images(
        Dinov2Model.from_pretrained(encoder_dir).eval(), classifier, held_out[0]
    )
    results["seconds"]["foundation_encoder"] = time.perf_counter() - started

    tokenizers: dict[str, Any] = {}
    aligntok_dir = seed_dir / "aligntok"
    if {"aligntok", "aligntok_stage1", *SWEEP_ARMS} & set(args.arms):
        # The sweep arms start from this run's stage-1 model, so the run happens whenever one of them is asked for.
        started = time.perf_counter()
        demo.train_tokenizer_stages(aligntok_dir, encoder_dir, args.scale, seed=seed)
        results["seconds"]["aligntok_stages"] = time.perf_counter() - started
        tokenizers["aligntok"] = lambda: AlignedAutoencoderKL.from_pretrained(aligntok_dir / "stage3" / "model")
        tokenizers["aligntok_stage1"] = lambda: AlignedAutoencoderKL.from_pretrained(aligntok_dir / "stage1" / "model")
    for arm in SWEEP_ARMS:
        if arm in args.arms:
            # Same seed, data order and stage 2-3 budget as the `aligntok` arm: w_sp is the only difference.
            started = time.perf_counter()
            demo.train_tokenizer_stages(
                seed_dir / arm,
                encoder_dir,
                args.scale,
                seed=seed,
                stage1_model=aligntok_dir / "stage1" / "model",
                semantic_preservation_weight=SEMANTIC_PRESERVATION_WEIGHTS[arm],
            )
            results["seconds"][f"{arm}_stages_2_3"] = time.perf_counter() - started
            tokenizers[arm] = lambda arm=arm: AlignedAutoencoderKL.from_pretrained(seed_dir / arm / "stage3" / "model")
    for arm, alignment_encoder in (("vae", None), ("vavae", encoder_dir)):
        if arm in args.arms:
            started = time.perf_counter()
            results.setdefault("vae_training", {})[arm] = train_conv_vae(
                seed_dir / arm / "model",
                tokenizer_steps,
                seed,
                None if alignment_encoder is None else str(alignment_encoder),
            )
            results["seconds"][f"{arm}_training"] = time.perf_counter() - started
            tokenizers[arm] = lambda arm=arm: AutoencoderKL.from_pretrained(seed_dir / arm / "model")

    for arm in args.arms:
        started = time.perf_counter()
        logger.info(f"seed {seed}, arm {arm}: evaluating the tokenizer")
        tokenizer = tokenizers[arm]().eval()
        arm_results: dict[str, Any] = evaluate_tokenizer(
            tokenizer, held_out, classifier, feature_spaces, args.num_probe_images
        )
        arm_results["tokenizer_steps"] = tokenizer_steps
        if arm in SEMANTIC_PRESERVATION_WEIGHTS:
            arm_results["semantic_preservation_weight"] = SEMANTIC_PRESERVATION_WEIGHTS[arm]
        results["seconds"][f"{arm}_tokenizer_evaluation"] = time.perf_counter() - started
        arm_results["dit"] = []
        if arm in dit_arms(args):
            dit_results, dit_seconds = train_and_evaluate_dit(
                tokenizer, seed_dir / arm, checkpoints, args, seed, classifier, feature_spaces
            )
            arm_results.update(dit_results)
            results["seconds"].update({f"{arm}_{name}": value for name, value in dit_seconds.items()})
        results["arms"][arm] = arm_results
    results["seconds"]["total"] = time.perf_counter() - seed_started
    return results


def _run_seed_in_worker(
    seed: int, args: argparse.Namespace, classifier_state: dict, held_out: tuple[torch.Tensor, torch.Tensor]
) -> dict[str, Any]:
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
    return {
        "mean": float(np.mean(values)),
        "half_range": float((max(values) - min(values)) / 2),
        "values": [float(v) for v in values],
    }


TOKENIZER_METRICS = (
    "psnr",
    "linear_probe_top1",
    "reconstruction_classifier_accuracy",
    "reconstruction_fid",
    "reconstruction_judge_fid",
)


def summarize(per_seed: list[dict[str, Any]], arms: list[str]) -> dict[str, Any]:
    """Mean and half-range over seeds of every per-arm number (DiT numbers per evaluated step; none for an arm
    without a DiT)."""
    summary: dict[str, Any] = {}
    for arm in arms:
        runs = [seed["arms"][arm] for seed in per_seed]
        entry = {key: _spread([run[key] for run in runs]) for key in TOKENIZER_METRICS}
        entry["dit"] = []
        for index, point in enumerate(runs[0]["dit"]):
            entry["dit"].append(
                {
                    "step": point["step"],
                    **{key: _spread([run["dit"][index][key] for run in runs]) for key in point if key != "step"},
                }
            )
        summary[arm] = entry
    return summary


def _format(value: dict[str, float], percent: bool = False, digits: int = 2) -> str:
    scale = 100 if percent else 1
    return f"{value['mean'] * scale:.{digits if not percent else 1}f} ± {value['half_range'] * scale:.{digits if not percent else 1}f}"


def markdown_report(report: dict[str, Any]) -> str:
    """The JSON report as Markdown: tokenizer table, DiT table per evaluated step, per-seed key metric, w_sp sweep."""
    summary, arms = report["summary"], report["arms"]
    with_dit = [arm for arm in arms if summary[arm]["dit"]]
    lines = [
        "# Toy reproduction of AlignTok's Table 3 (built-in shapes, 32x32, 8x8x8 latents)",
        "",
        (
            f"Date: {report['date']} · torch {report['torch_version']} · {report['threads']} thread(s) per process · "
            f"wall time {report['wall_seconds'] / 60:.1f} min · seeds {report['seeds']} (run {report['parallel_seeds']} at a time) · "
            f"load average at start {report['load_average_at_start']}"
        ),
        "",
        f"Command: `{report['command']}`",
        "",
        (
            f"Budget per arm and seed: {report['tokenizer_steps']} tokenizer steps (batch 32), DiT {report['dit_steps']} steps "
            f"(batch 64) on {report['num_dit_latents']} latents (+ flips). Samples: {report['num_samples_per_class']} per class, "
            f"{report['num_inference_steps']} Euler steps, CFG {report['guidance_scale']} (all channels) or none. Two FIDs against "
            f"{report['num_held_out']} held-out real images: in the toy foundation encoder's feature space (CLS token, 96-d; "
            "the AlignTok and VA-VAE arms align to this encoder, so it may favour them) and in the judge's (its pooled 64-d "
            "features before the final Linear; no tokenizer saw it). rec.: of those images' reconstructions, the floor a DiT "
            f"on that latent can reach. Judge: a CNN trained on real shapes only, "
            f"{report['classifier']['held_out_accuracy'] * 100:.1f}% on held-out real images. "
            "Numbers are mean ± half the range over seeds (per-seed values in the JSON)."
        ),
        "",
        "## Tokenizers",
        "",
        "| arm | rec. PSNR (dB) | latent linear probe (%) | judge on recon. (%) | rec. FID, toy encoder | rec. FID, judge |",
        "|---|---|---|---|---|---|",
    ]
    for arm in arms:
        entry = summary[arm]
        lines.append(
            f"| {ARMS[arm]} | {_format(entry['psnr'])} | {_format(entry['linear_probe_top1'], True)} | "
            f"{_format(entry['reconstruction_classifier_accuracy'], True)} | {_format(entry['reconstruction_fid'])} | "
            f"{_format(entry['reconstruction_judge_fid'])} |"
        )
    if with_dit:
        lines += [
            "",
            "## DiT on each latent, at each evaluated step",
            "",
            "| arm | DiT step | judge acc., CFG (%) | judge acc., no CFG (%) | FID toy encoder, CFG | FID judge, CFG | "
            "FID toy encoder, no CFG | FID judge, no CFG | velocity MSE |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for arm in with_dit:
            for point in summary[arm]["dit"]:
                lines.append(
                    f"| {ARMS[arm]} | {point['step']} | {_format(point['accuracy_cfg'], True)} | {_format(point['accuracy_no_cfg'], True)} | "
                    f"{_format(point['fid_cfg'])} | {_format(point['judge_fid_cfg'])} | {_format(point['fid_no_cfg'])} | "
                    f"{_format(point['judge_fid_no_cfg'])} | {point['loss']['mean']:.3f} |"
                )
        final_step = summary[with_dit[0]]["dit"][-1]["step"]
        lines += ["", f"Judge accuracy of the CFG samples at DiT step {final_step}, per seed ({report['seeds']}):", ""]
        for arm in with_dit:
            values = ", ".join(f"{value * 100:.1f}" for value in summary[arm]["dit"][-1]["accuracy_cfg"]["values"])
            lines.append(f"- {ARMS[arm]}: {values} %")
    sweep = [arm for arm in SEMANTIC_PRESERVATION_WEIGHTS if arm in arms]
    if sweep:
        lines += [
            "",
            "## Semantic-preservation weight w_sp (stages 2-3 from one stage-1 model per seed)",
            "",
            "| w_sp | arm | latent linear probe (%) | paper's linear probe (%) | rec. PSNR (dB) | judge on recon. (%) | "
            "rec. FID, toy encoder | rec. FID, judge |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for arm in sweep:
            weight, entry = SEMANTIC_PRESERVATION_WEIGHTS[arm], summary[arm]
            lines.append(
                f"| {weight:g} | {ARMS[arm]} | {_format(entry['linear_probe_top1'], True)} | {PAPER_LINEAR_PROBE_TOP1[weight] * 100:.1f} | "
                f"{_format(entry['psnr'])} | {_format(entry['reconstruction_classifier_accuracy'], True)} | "
                f"{_format(entry['reconstruction_fid'])} | {_format(entry['reconstruction_judge_fid'])} |"
            )
    lines += ["", f"Per-seed wall time (s): {report['seconds_per_seed']}", ""]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--seeds", type=int, nargs="+", default=[0, 1, 2])
    add(
        "--arms",
        nargs="+",
        default=DEFAULT_ARMS,
        choices=list(ARMS),
        help="Default: all. A sweep arm (aligntok_wsp*) also trains the aligntok run whose stage-1 model it starts from.",
    )
    add(
        "--sweep_dit",
        action="store_true",
        help=f"Also train and evaluate a DiT on the w_sp sweep arms ({', '.join(SWEEP_ARMS)}): ~5 CPU minutes per arm and seed.",
    )
    add("--scale", type=float, default=1.0, help="Multiplies every training step count (0.02 for a smoke run).")
    add("--dit_steps", type=int, default=demo.DIT_STEPS, help="DiT steps at --scale 1 (default: the demo's).")
    add("--dit_eval_fractions", type=float, nargs="+", default=[0.25, 0.5, 1.0])
    add(
        "--num_samples_per_class", type=int, default=20, help="Class-conditional samples per class and evaluated step."
    )
    add("--num_inference_steps", type=int, default=demo.NUM_INFERENCE_STEPS, help="Euler steps (default: the demo's).")
    add(
        "--num_dit_latents",
        type=int,
        default=demo.NUM_DIT_LATENTS,
        help="Images the DiT trains on (default: the demo's).",
    )
    add("--num_held_out", type=int, default=1000, help="Held-out real images: FID reference and reconstruction set.")
    add("--num_probe_images", type=int, default=1000, help="Held-out images of the latent linear probe.")
    add("--classifier_steps", type=int, default=600)
    add("--threads", type=int, default=1, help="torch threads per process.")
    add(
        "--parallel_seeds",
        type=int,
        default=3,
        help="Seeds run at once, one process each (1: one after another). Default 3: on 2 cores, three single-threaded "
        "processes share the cores and finish together in ~1.5x one seed's time, where 2 + 1 would take 2x.",
    )
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
        # single-threaded processes use the cores better than one process with several threads (tiny matmuls).
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(args.parallel_seeds, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [
                pool.submit(_run_seed_in_worker, seed, args, classifier.state_dict(), held_out) for seed in args.seeds
            ]
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
        "dit_arms": dit_arms(args),
        "semantic_preservation_weights": {
            arm: weight for arm, weight in SEMANTIC_PRESERVATION_WEIGHTS.items() if arm in args.arms
        },
        "paper_linear_probe_top1": {str(weight): top1 for weight, top1 in PAPER_LINEAR_PROBE_TOP1.items()},
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
