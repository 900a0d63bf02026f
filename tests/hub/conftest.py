"""Fixtures of the Hub tests: tiny saved models laid out as the training scripts write them (configs from the real
config loaders), evaluation JSONs written by the real evaluations of those models (offline stand-in networks), and
the local stand-in for the Hub HTTP API (`local_hub`, defined in hub_stand_in.py)."""

import json
import warnings
from pathlib import Path

import pytest
import torch

from .hub_stand_in import local_hub  # noqa: F401  (registers the fixture for these tests)


REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIGS = REPO_ROOT / "training" / "configs"
NUM_CLASSES = 10
# A hub id in stage 1's config, so the tokenizer card has a base_model (the tiny test encoder is random anyway).
FOUNDATION_ENCODER = "facebook/dinov2-large"


def _write_json(path: Path, value: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2))
    return path


def _tiny_dit_pipeline(vae, seed: int):
    from diffusers import FlowMatchEulerDiscreteScheduler

    from diffusers_aligntok import AlignTokDiTPipeline, LightningDiTTransformer2DModel

    torch.manual_seed(seed)
    transformer = LightningDiTTransformer2DModel.from_preset(
        "tiny", in_channels=8, sample_size=8, num_classes=NUM_CLASSES
    )
    with torch.no_grad():  # adaLN-zero starts at zero: perturb so samples depend on the weights
        for parameter in transformer.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
    return AlignTokDiTPipeline(transformer=transformer, vae=vae, scheduler=FlowMatchEulerDiscreteScheduler())


def _build_tokenizer_run(root: Path) -> Path:
    """`<root>/stage{1,2,3}` as `train_stage.py --stage all` writes them (model saved for stage 3 only)."""
    from diffusers_aligntok import AlignedAutoencoderKL
    from diffusers_aligntok.training.config import config_to_dict, load_stage_config

    for stage in (1, 2, 3):
        config = {"stage": stage, **config_to_dict(load_stage_config(CONFIGS / "tiny_cpu.yaml", stage))}
        config["model"]["foundation_encoder"] = FOUNDATION_ENCODER
        _write_json(root / f"stage{stage}" / "training_config.json", config)
        _write_json(
            root / f"stage{stage}" / "metrics.json",
            {"stage": stage, "global_step": 4, "validation_psnr": 10.0 + stage, "num_processes": 1},
        )
    torch.manual_seed(0)
    AlignedAutoencoderKL.from_preset("tiny").save_pretrained(root / "stage3" / "model")
    return root / "stage3" / "model"


def _build_dit_run(root: Path, tokenizer_dir: Path, cache_dir: Path, seed: int = 0) -> Path:
    """`<root>/{pipeline,transformer,training_config.json,metrics.json}` as `train_dit.py` writes them."""
    from diffusers_aligntok import AlignedAutoencoderKL
    from diffusers_aligntok.training.config import config_to_dict
    from diffusers_aligntok.training.dit_config import load_dit_config

    pipeline = _tiny_dit_pipeline(AlignedAutoencoderKL.from_pretrained(tokenizer_dir), seed)
    pipeline.save_pretrained(root / "pipeline")
    pipeline.transformer.save_pretrained(root / "transformer")
    config = config_to_dict(load_dit_config(CONFIGS / "dit_tiny_cpu.yaml"))
    config["data"]["cache_dir"], config["validation"]["tokenizer"] = str(cache_dir), str(tokenizer_dir)
    _write_json(root / "training_config.json", config)
    _write_json(
        root / "metrics.json",
        {
            "global_step": 200,
            "num_parameters": sum(p.numel() for p in pipeline.transformer.parameters()),
            "num_processes": 1,
        },
    )
    return root / "pipeline"


def _build_t2i_run(root: Path, tokenizer_dir: Path) -> Path:
    """`<root>/{pipeline,transformer,training_config.json,metrics.json}` as `train_t2i.py` writes them (patch 1)."""
    from diffusers_aligntok import AlignedAutoencoderKL, AlignTokFluxPipeline
    from diffusers_aligntok.training.config import config_to_dict
    from diffusers_aligntok.training.t2i_config import load_t2i_config
    from tests.testing_utils import build_tiny_flux_transformer, tiny_flux_components

    components = tiny_flux_components(vae=AlignedAutoencoderKL.from_pretrained(tokenizer_dir))
    components["transformer"] = build_tiny_flux_transformer(8, latent_patch_size=1, guidance_embeds=False)
    pipeline = AlignTokFluxPipeline(**components)
    pipeline.save_pretrained(root / "pipeline")
    pipeline.transformer.save_pretrained(root / "transformer")
    config = config_to_dict(load_t2i_config(CONFIGS / "t2i_tiny_cpu.yaml"))
    config["model"]["vae"] = str(tokenizer_dir)
    _write_json(root / "training_config.json", config)
    _write_json(root / "metrics.json", {"global_step": 20, "num_processes": 1})
    return root / "pipeline"


@pytest.fixture(scope="session")
def hub_assets(tmp_path_factory) -> dict[str, Path]:
    """Tiny models and the evaluation JSONs of them (see the module docstring); built once per session."""
    from diffusers_aligntok import AlignedAutoencoderKL
    from diffusers_aligntok.data import save_shapes_image_folder
    from diffusers_aligntok.evaluation import TokenizerEvaluationConfig, evaluate_tokenizers
    from diffusers_aligntok.evaluation.class_conditional import GenerationEvaluationConfig, evaluate_generation
    from diffusers_aligntok.evaluation.text_to_image import (
        TextToImageEvaluationConfig,
        evaluate_text_to_image,
        save_random_clip_standin,
    )

    root = tmp_path_factory.mktemp("hub_assets")
    tokenizer = _build_tokenizer_run(root / "runs" / "tokenizer")
    torch.manual_seed(1)
    AlignedAutoencoderKL.from_preset("tiny").save_pretrained(root / "runs" / "peer" / "model")
    torch.manual_seed(2)
    AlignedAutoencoderKL.from_preset("tiny").save_pretrained(root / "runs" / "unevaluated" / "model")
    cache_dir = root / "cache"
    _write_json(
        cache_dir / "metadata.json",
        {
            "tokenizer": {
                "path": str(tokenizer),
                "class_name": "AlignedAutoencoderKL",
                "fingerprint": "0123456789abcdef",
            },
            "latent_statistics": {"source": "measured over this cache"},
            "latent_shape": [8, 8, 8],
            "num_samples": 64,
            "num_classes": NUM_CLASSES,
            "flipped": True,
            "data": {
                "source": "builtin:shapes",
                "split": "train",
                "resolution": 32,
                "description": "builtin:shapes (n=64, seed=0)",
            },
        },
    )
    dit = _build_dit_run(root / "runs" / "dit", tokenizer, cache_dir)
    other_dit = _build_dit_run(root / "runs" / "other_dit", tokenizer, cache_dir, seed=5)
    t2i = _build_t2i_run(root / "runs" / "t2i", tokenizer)

    cache = root / "fid_cache"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the stand-in networks and tiny sample counts warn, as they should
        evaluate_tokenizers(
            TokenizerEvaluationConfig(
                tokenizers=[str(tokenizer), str(root / "runs" / "peer" / "model")],
                data="builtin:shapes",
                resolution=32,
                num_samples=40,
                batch_size=20,
                num_workers=0,
                feature_extractor="random-inception-standin",
                perceptual=None,
                fid_statistics_cache=str(cache),
                num_visualization_images=0,
            ),
            root / "eval" / "tokenizer",
        )
        generation = {
            "num_samples": 20,
            "batch_size": 10,
            "samples_per_chunk": 10,
            "num_inference_steps": 2,
            "reference": "builtin:shapes",
            "reference_num_samples": 40,
            "precision_recall_reference_samples": 20,
            "feature_extractor": "random-inception-standin",
            "fid_statistics_cache": str(cache),
            "num_workers": 0,
        }
        evaluate_generation(
            GenerationEvaluationConfig(pipeline=str(dit), cfg_sweep=[1.0, 2.0], **generation), root / "eval" / "dit"
        )
        evaluate_generation(
            GenerationEvaluationConfig(pipeline=str(other_dit), **generation), root / "eval" / "other_dit"
        )
        save_random_clip_standin(root / "clip")
        save_shapes_image_folder(root / "reference", num_images=8, resolution=32, seed=1)
        (root / "prompts.txt").write_text("a red circle\na blue square\n")
        evaluate_text_to_image(
            TextToImageEvaluationConfig(
                pipeline=str(t2i),
                prompts=str(root / "prompts.txt"),
                height=32,
                width=32,
                num_inference_steps=2,
                guidance_scale=2.0,
                max_sequence_length=16,
                batch_size=2,
                samples_per_chunk=2,
                reference_dir=str(root / "reference"),
                feature_extractor="random-inception-standin",
                fid_statistics_cache=str(cache),
                clip_model=str(root / "clip"),
                save_grid=0,
                num_workers=0,
            ),
            root / "eval" / "t2i",
        )
    return {
        "root": root,
        "tokenizer": tokenizer,
        "peer": root / "runs" / "peer" / "model",
        "unevaluated": root / "runs" / "unevaluated" / "model",
        "dit_pipeline": dit,
        "dit_transformer": dit.parent / "transformer",
        "other_dit_pipeline": other_dit,
        "t2i_pipeline": t2i,
        "t2i_transformer": t2i.parent / "transformer",
        "tokenizer_json": root / "eval" / "tokenizer" / "results.json",
        "dit_json": root / "eval" / "dit" / "results.json",
        "other_dit_json": root / "eval" / "other_dit" / "results.json",
        "t2i_json": root / "eval" / "t2i" / "results.json",
    }


def load_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


@pytest.fixture
def load_check_in_process(monkeypatch):
    """Replaces the push's fresh-process load check by the same load in this process (tests about other checks)."""
    from diffusers_aligntok.hub import push
    from diffusers_aligntok.hub.loading import describe_loaded

    def check(directory, model):
        import importlib

        module, class_name = model.load_target.rsplit(".", 1)
        return describe_loaded(getattr(importlib.import_module(module), class_name).from_pretrained(str(directory)))

    monkeypatch.setattr(push, "check_loads_in_fresh_process", check)
