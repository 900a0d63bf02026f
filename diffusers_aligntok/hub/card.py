"""Model cards for our models and pipelines, rendered from the templates in `templates/` with `huggingface_hub`'s
`ModelCard.from_template` and `ModelCardData`.

    card = render_model_card("runs/x/stage3/model", "me/aligntok-f16d32", evaluation_json=["eval/x/results.json"])
    card.save("README.md")

One template per family (`tokenizer.md`, `class_conditional.md`, `text_to_image.md`); this module fills them with
what the files beside the model say (configs, training configs, evaluation JSONs) and writes the metadata block:
`library_name: diffusers`, the license, `base_model` (the foundation encoder stage 1 started from, when it is a hub
id), `datasets` (hub ids only), tags, `pipeline_tag` and a `model-index` with one `EvalResult` per reported number.
"""

import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCard, ModelCardData

from .evaluations import (
    EvaluationReport,
    MatchedEvaluation,
    check_evaluation_kind,
    evaluation_report,
    load_evaluation,
    match_evaluation,
)
from .model_directory import ModelDirectory, count_parameters_by_module, inspect_model_directory
from .naming import display_path, looks_like_hub_id
from .recipes import (
    StageRecord,
    config_details,
    describe_training_data,
    dit_recipe_table,
    dit_tokenizer_stages,
    foundation_encoder,
    run_record,
    t2i_recipe_table,
    tokenizer_stage_table,
    tokenizer_stages,
)


TEMPLATES = {
    "tokenizer": "tokenizer.md",
    "class_conditional": "class_conditional.md",
    "text_to_image": "text_to_image.md",
}
# The Hub has no "image tokenizer" or "class-conditional generation" task: the closest ones.
PIPELINE_TAGS = {
    "tokenizer": "image-to-image",
    "class_conditional": "unconditional-image-generation",
    "text_to_image": "text-to-image",
}
PAPER_ARXIV_ID = "2509.25162"
CITATION_BIBTEX = """@article{chen2025aligntok,
  title         = {Aligning Visual Foundation Encoders to Tokenizers for Diffusion Models},
  author        = {Chen, Bowei and Bi, Sai and Tan, Hao and Zhang, He and Zhang, Tianyuan and Li, Zhengqi and
                   Xiong, Yuanjun and Zhang, Jianming and Zhang, Kai},
  journal       = {arXiv preprint arXiv:2509.25162},
  eprint        = {2509.25162},
  archivePrefix = {arXiv},
  primaryClass  = {cs.CV},
  year          = {2025}
}"""
_ENCODER_NAMES = {
    "dinov2": "DINOv2",
    "dinov2_with_registers": "DINOv2 with registers",
    "siglip2": "SigLIP 2",
    "mae": "MAE",
}
# Example classes for ImageNet-1k models: golden retriever, otter, red panda, geyser (the DiT paper's samples).
_IMAGENET_EXAMPLE_CLASSES = [207, 360, 387, 974]
_DEFAULT_PROMPT = "a lighthouse on a rocky coast at dusk"
_LIBRARY_LINE = (
    "Install the library that defines these classes first: `pip install diffusers-aligntok` (or `pip install "
    "-e .` in its repository). `import diffusers_aligntok` before loading: it registers the classes that "
    "the saved configs name with diffusers."
)


@dataclass
class CardContext:
    """Everything a template needs, plus the metadata the family decides (base model, datasets, tags)."""

    variables: dict[str, Any]
    base_model: str | None = None
    datasets: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)


def template_text(family: str) -> str:
    """The template of `family` from the installed package (it ships as package data, so a wheel install has it)."""
    return resources.files(__package__).joinpath("templates", TEMPLATES[family]).read_text(encoding="utf-8")


def as_paths(evaluation_json: str | os.PathLike | Iterable[str | os.PathLike] | None) -> list[Path]:
    """`evaluation_json` as a list of paths (one path alone is accepted too)."""
    if evaluation_json is None:
        return []
    if isinstance(evaluation_json, (str, os.PathLike)):
        return [Path(evaluation_json)]
    return [Path(path) for path in evaluation_json]


def render_model_card(
    model_dir: str | os.PathLike | ModelDirectory,
    repo_id: str,
    *,
    evaluation_json: str | os.PathLike | Sequence[str | os.PathLike] = (),
    license: str = "apache-2.0",
    base_model: str | None = None,
    fingerprints: dict[str, str] | None = None,
) -> ModelCard:
    """Renders the card of a model or pipeline directory.

    Args:
        model_dir: The directory (or its [`ModelDirectory`]).
        repo_id (`str`): The repository the card is for; the usage code loads from it.
        evaluation_json: Evaluation `results.json` files of this model; each is checked to belong to it.
        license (`str`): The Hub license id (default `"apache-2.0"`).
        base_model (`str`, *optional*): Overrides the `base_model` found in the training configs.
        fingerprints (`dict[str, str]`, *optional*): The model's weight fingerprints by role, when already computed
            (the push computes them in its load check); otherwise they are computed here if an evaluation needs them.
    """
    from .loading import fingerprints_in_process

    model = model_dir if isinstance(model_dir, ModelDirectory) else inspect_model_directory(model_dir)
    evaluations = [load_evaluation(path) for path in as_paths(evaluation_json)]
    for evaluation in evaluations:
        check_evaluation_kind(evaluation, model)
    if fingerprints is None and any(evaluation.kind != "tokenizer" for evaluation in evaluations):
        fingerprints = fingerprints_in_process(model)
    matched = [match_evaluation(evaluation, model, fingerprints) for evaluation in evaluations]
    return build_model_card(model, repo_id, matched, license=license, base_model=base_model)


def build_model_card(
    model: ModelDirectory,
    repo_id: str,
    matched: list[MatchedEvaluation],
    *,
    license: str = "apache-2.0",
    base_model: str | None = None,
) -> ModelCard:
    """The card of `model` from already matched evaluations (see [`render_model_card`])."""
    model_name = repo_id.split("/")[-1]
    reports = [evaluation_report(item, model_name, tokenizer_is_component=model.is_pipeline) for item in matched]
    builders = {
        "tokenizer": _tokenizer_context,
        "class_conditional": _class_conditional_context,
        "text_to_image": _text_to_image_context,
    }
    context = builders[model.family](model, repo_id, matched)
    eval_results = [result for report in reports for result in report.eval_results]
    card_data = ModelCardData(
        library_name="diffusers",
        license=license,
        base_model=base_model or context.base_model,
        datasets=context.datasets or None,
        tags=["aligntok", "diffusers", *context.tags, f"arxiv:{PAPER_ARXIV_ID}"],
        pipeline_tag=PIPELINE_TAGS[model.family],
        eval_results=eval_results or None,
        model_name=model_name if eval_results else None,
    )
    warnings = list(context.variables.pop("warnings", []))
    if any(report.uses_standins for report in reports):
        warnings.append(
            "Some numbers in the evaluation section come from stand-in networks (an offline run) and are not "
            "the metrics they are named after; they only show that the evaluation ran."
        )
    variables = {
        "repo_id": repo_id,
        "warnings": warnings,
        "evaluation_section": evaluation_section(reports),
        "citation": CITATION_BIBTEX,
        "library_line": _LIBRARY_LINE,
        **context.variables,
    }
    card = ModelCard.from_template(card_data, template_str=template_text(model.family), **variables)
    check_card_parses(str(card), card_data)
    return card


def check_card_parses(text: str, expected: ModelCardData) -> None:
    """Parses a rendered card back (`ModelCard(text).data`) and checks its metadata equals `expected`: what the Hub
    reads is what was rendered. A difference is a bug here, so it raises `RuntimeError`."""
    try:
        parsed = ModelCard(text).data
    except ValueError as error:
        raise RuntimeError(f"The rendered model card does not parse back ({error}); this is a bug.") from error
    if parsed.to_dict() != expected.to_dict():
        raise RuntimeError(
            f"The rendered model card's metadata parses back as {parsed.to_dict()}, not {expected.to_dict()}; this is a bug."
        )


def evaluation_section(reports: list[EvaluationReport]) -> str:
    """The card's evaluation section: per evaluation a table, its protocol, the comparability statement, warnings."""
    if not reports:
        return (
            "No evaluation results were given when this card was written. Evaluate the model (see the repository's "
            "README) and push again with `aligntok-push ... --evaluation_json results.json`."
        )
    parts = []
    for report in reports:
        text = f"### {report.title}\n\n{report.table}\n\n" + "\n".join(f"- {line}" for line in report.protocol)
        text += f"\n\n{report.statement}"
        if report.warnings:
            text += "\n\nWarnings the evaluation recorded:\n\n" + "\n".join(
                f"- {warning}" for warning in report.warnings
            )
        parts.append(text)
    return "\n\n".join(parts)


def _code(lines: list[str]) -> str:
    return "\n".join(lines)


def _model_table(rows: list[tuple[str, Any]]) -> str:
    lines = ["| | |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in rows if value not in (None, "")]
    return "\n".join(lines)


def _count(value: int) -> str:
    for threshold, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if value >= threshold:
            return f"{value / threshold:.1f}{suffix}"
    return str(value)


def _parameters(counts: dict[str, int], parts: Sequence[str] = ()) -> str | None:
    if not counts:
        return None
    total = sum(counts.values())
    shown = [f"{name} {_count(counts[name])}" for name in parts if name in counts]
    return f"{_count(total)} ({total:,})" + (f": {', '.join(shown)}" if shown else "")


def _spatial_factor(vae_config: dict[str, Any] | None) -> int | None:
    if not vae_config or not vae_config.get("block_out_channels"):
        return None
    return 2 ** (len(vae_config["block_out_channels"]) - 1)


def _round_to_multiple(value: int, multiple: int) -> int:
    return max(multiple, value // multiple * multiple)


def _first_evaluation(matched: list[MatchedEvaluation], kind: str) -> dict[str, Any] | None:
    return next((item.evaluation.results for item in matched if item.evaluation.kind == kind), None)


def _normalisation_text(config: dict[str, Any]) -> str:
    scaling, shift = config.get("scaling_factor", 1.0), config.get("shift_factor", 0.0)
    if config.get("latents_mean") is not None:
        formula = (
            f"per channel, `(z - latents_mean) / latents_std * scaling_factor` with the {len(config['latents_mean'])} "
            f"`latents_mean` / `latents_std` values of `config.json` and `scaling_factor` {scaling:g}"
        )
    elif scaling == 1.0 and not shift:
        formula = (
            "nothing yet (`scaling_factor` 1, `shift_factor` 0: no statistics were measured; "
            "`training/compute_latent_statistics.py --write` measures and stores them)"
        )
    else:
        formula = (
            f"`(z - shift_factor) * scaling_factor` with `shift_factor` {shift:g} and `scaling_factor` {scaling:g}"
        )
    return (
        "`encode` returns and `decode` takes *raw* latents, as every diffusers VAE does; the diffusion model (or your "
        f"training code) normalises them: `vae.normalize_latents(z)` computes {formula}, and "
        "`vae.denormalize_latents` undoes it. FLUX and SD3 pipelines read `scaling_factor` and `shift_factor` from "
        "the config and apply them themselves."
    )


# ---------------------------------------------------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------------------------------------------------


def _encoder_description(config: dict[str, Any]) -> str:
    encoder = config.get("encoder_config") or {}
    name = _ENCODER_NAMES.get(config.get("encoder_type"), config.get("encoder_type"))
    size = ", ".join(
        f"{label} {encoder[key]}"
        for key, label in (("hidden_size", "width"), ("num_hidden_layers", "layers"), ("patch_size", "patch"))
        if key in encoder
    )
    return f"{name} ViT ({size})" if size else str(name)


def _tokenizer_facts(config: dict[str, Any], stages: list[StageRecord]) -> dict[str, Any]:
    """Spatial factor, channels, and the image size the usage code uses (the last stage's training resolution)."""
    factor = _spatial_factor(config) or 1
    channels = config.get("latent_channels")
    stage_resolution = (stages[-1].config.get("data") or {}).get("resolution") if stages else None
    if isinstance(stage_resolution, (list, tuple)):
        stage_resolution = stage_resolution[0]
    size = _round_to_multiple(int(stage_resolution or config.get("sample_size") or 256), factor)
    return {"factor": factor, "channels": channels, "size": size, "latent_size": size // factor}


def tokenizer_stages_section(stages: list[StageRecord]) -> str:
    """The stage table and each stage's full config, or a line saying the recipe is unknown."""
    if not stages:
        return (
            "Recipe unknown: no `training_config.json` of the stages was found beside the model (expected at "
            "`<run>/stage<k>/training_config.json`, next to `<run>/stage<k>/model`)."
        )
    details = "\n\n".join(
        config_details(f"stage {record.stage}: training_config.json", record.config) for record in stages
    )
    notes = []
    if any(not (record.config.get("loss") or {}).get("perceptual_network") for record in stages):
        notes.append(
            "Stages without a perceptual network trained without the LPIPS term (an offline recipe, or an "
            "ablation); the paper's recipe uses LPIPS with weight 1."
        )
    return tokenizer_stage_table(stages) + ("\n\n" + " ".join(notes) if notes else "") + "\n\n" + details


def started_from_random_encoder(stages: list[StageRecord]) -> bool:
    """Whether stage 1 built its encoder from a config alone (no `foundation_encoder`, no `init_from`)."""
    stage_one = next((record for record in stages if record.stage == 1), None)
    model = (stage_one.config.get("model") or {}) if stage_one is not None else {}
    return stage_one is not None and not model.get("foundation_encoder") and not model.get("init_from")


_RANDOM_ENCODER_WARNING = (
    "{whose} encoder started from random weights (stage 1 `model.foundation_encoder: null`), not from a pretrained "
    "foundation encoder: a test or demonstration artefact, not an AlignTok tokenizer in the paper's sense."
)


def _tokenizer_context(model: ModelDirectory, repo_id: str, matched: list[MatchedEvaluation]) -> CardContext:
    config = model.config
    stages = tokenizer_stages(model.path)
    facts = _tokenizer_facts(config, stages)
    foundation = foundation_encoder(stages)
    warnings = []
    if started_from_random_encoder(stages):
        started = (
            "random initialisation (stage 1 had no `model.foundation_encoder`): not a pretrained foundation encoder"
        )
        warnings.append(_RANDOM_ENCODER_WARNING.format(whose="This tokenizer's"))
    elif foundation:
        started = f"`{display_path(foundation)}`"
    else:
        started = "not recorded"
    last = stages[-1].config if stages else {}
    data = describe_training_data(
        (last.get("data") or {}).get("source"), (last.get("data") or {}).get("resolution"), "the tokenizer"
    )
    warnings += data.warnings
    size, latent, channels, factor = facts["size"], facts["latent_size"], facts["channels"], facts["factor"]
    model_table = _model_table(
        [
            ("class", "`AlignedAutoencoderKL` (diffusers-aligntok): the interface of `diffusers.AutoencoderKL`"),
            ("foundation encoder", f"{_encoder_description(config)}, started from {started}"),
            ("adapter", "per-token 2-layer MLP to the latent channels (deterministic latent, no KL term)"),
            (
                "latent",
                f"f{factor}, {channels} channels: a {size}x{size} image -> {latent}x{latent}x{channels} "
                "(any size that is a multiple of the factor)",
            ),
            (
                "decoder",
                f"LDM-style conv decoder, channels {config.get('block_out_channels')}, "
                f"{config.get('layers_per_block')} res blocks per level",
            ),
            ("parameters", _parameters(count_parameters_by_module(model.path), ("encoder", "adapter", "decoder"))),
            (
                "latent normalisation in config.json",
                (
                    f"per-channel statistics ({len(config['latents_mean'])} values), "
                    f"scaling_factor {config.get('scaling_factor'):g}"
                )
                if config.get("latents_mean") is not None
                else f"scaling_factor {config.get('scaling_factor', 1.0):g}, shift_factor {config.get('shift_factor', 0.0):g}",
            ),
            (
                "force_upcast",
                f"{config.get('force_upcast')} (pipelines decode in float32 when the rest runs in float16)",
            ),
        ]
    )
    usage_code = _code(
        [
            "import torch",
            "",
            "import diffusers_aligntok  # registers AlignTok's classes with diffusers; import it before from_pretrained",
            "from diffusers_aligntok import AlignedAutoencoderKL",
            "",
            f'vae = AlignedAutoencoderKL.from_pretrained("{repo_id}").eval()',
            f"images = torch.rand(1, 3, {size}, {size}) * 2 - 1  # RGB in [-1, 1]; height and width: multiples of {factor}",
            "with torch.no_grad():",
            f"    latents = vae.encode(images).latent_dist.mode()  # raw latents, (1, {channels}, {latent}, {latent}); deterministic",
            f"    reconstruction = vae.decode(latents).sample  # (1, 3, {size}, {size})",
            "    normalized = vae.normalize_latents(latents)  # what a diffusion model trains on",
            "print(latents.shape, reconstruction.shape)",
        ]
    )
    usage_notes = "\n\n".join(
        [
            _normalisation_text(config),
            "In a diffusers pipeline the tokenizer replaces the VAE (`vae=vae`); a denoiser trained on another VAE's latents "
            "does not work with it, nor the other way round. FLUX-type pipelines pack latents 2x2, so their transformer's "
            f"`in_channels` is {4 * channels} for this tokenizer.",
        ]
    )
    limitations = [
        "The latent space belongs to this tokenizer: diffusion models must be trained on it (and normalised with its "
        "statistics); swapping in another VAE's denoiser fails silently with noise.",
        "Tiled encoding (`enable_tiling`) is an approximation for the ViT encoder (each tile sees less context); tiled "
        "decoding matches the untiled output closely.",
        "Run it in float32 or bfloat16; float16 decoders can overflow to NaN (`force_upcast` keeps pipelines safe).",
        "Reconstruction quality outside the training data's domain and resolution has not been measured unless the "
        "evaluation section says so.",
    ]
    return CardContext(
        variables={
            "title": f"{repo_id.split('/')[-1]}: an AlignTok image tokenizer",
            "summary": (
                f"An AlignTok image tokenizer for latent diffusion ([arXiv {PAPER_ARXIV_ID}](https://arxiv.org/abs/"
                f"{PAPER_ARXIV_ID})): a {_ENCODER_NAMES.get(config.get('encoder_type'), config.get('encoder_type'))} "
                "foundation encoder aligned to a latent-diffusion decoder in three stages, packaged as "
                "`AlignedAutoencoderKL`, a drop-in for `diffusers.AutoencoderKL`. Its latent keeps the encoder's "
                f"semantics: f{factor}, {channels} channels, deterministic."
            ),
            "warnings": warnings,
            "model_table": model_table,
            "usage_code": usage_code,
            "usage_notes": usage_notes,
            "recipe": tokenizer_stages_section(stages),
            "training_data": data.text,
            "limitations": limitations,
        },
        base_model=foundation if looks_like_hub_id(foundation) else None,
        datasets=data.dataset_ids,
        tags=["vae", "image-tokenizer", "autoencoder", str(config.get("encoder_type"))],
    )


# ---------------------------------------------------------------------------------------------------------------------
# Class-conditional DiT (pipeline or transformer)
# ---------------------------------------------------------------------------------------------------------------------


def _class_conditional_context(model: ModelDirectory, repo_id: str, matched: list[MatchedEvaluation]) -> CardContext:
    transformer = model.transformer_config or {}
    vae = model.tokenizer_config if model.is_pipeline else None
    record = run_record(model.path)
    stages = dit_tokenizer_stages(record)
    cache = (record.cache_metadata if record else None) or {}
    cache_data = cache.get("data") or {}
    num_classes = int(transformer.get("num_classes") or 1000)
    factor = _spatial_factor(vae)
    latent_side = int(transformer.get("sample_size") or 32)
    image_side = latent_side * factor if factor else cache_data.get("resolution")
    evaluation = _first_evaluation(matched, "generation")
    validation = (record.config.get("validation") or {}) if record else {}
    if evaluation is not None:
        settings = evaluation["settings"]
        steps = settings.get("num_inference_steps")
        guidance = evaluation.get("best_guidance_scale") or (
            evaluation["rows"][0]["guidance_scale"] if evaluation["rows"] else 1.0
        )
        interval = settings.get("guidance_interval") or [0.0, 1.0]
        source_of_defaults = "the evaluation's settings (its best guidance scale)"
    else:
        steps = validation.get("num_inference_steps") or 50
        guidance = validation.get("guidance_scale") or 1.0
        interval = validation.get("guidance_interval") or [0.0, 1.0]
        source_of_defaults = "the training run's validation settings" if validation else "defaults"
    labels = _IMAGENET_EXAMPLE_CLASSES if num_classes == 1000 else list(range(min(4, num_classes)))
    call = [f"    class_labels={labels},", f"    guidance_scale={float(guidance):g},"]
    if list(interval) != [0.0, 1.0]:
        call.append(f"    guidance_interval=({float(interval[0]):g}, {float(interval[1]):g}),")
    call += [f"    num_inference_steps={int(steps)},", "    generator=torch.Generator().manual_seed(0),"]
    if model.is_pipeline:
        usage_code = _code(
            [
                "import torch",
                "",
                "import diffusers_aligntok  # registers AlignTok's classes: DiffusionPipeline resolves model_index.json through it",
                "from diffusers import DiffusionPipeline",
                "",
                f'pipe = DiffusionPipeline.from_pretrained("{repo_id}")',
                "images = pipe(",
                *call,
                ").images",
                'images[0].save("sample.png")',
            ]
        )
        usage_notes = (
            f"`class_labels` are class ids in `[0, {num_classes})`{' (ImageNet-1k)' if num_classes == 1000 else ''}, one "
            f"image each, {image_side}x{image_side}. The call uses {source_of_defaults}. Guidance applies to all latent "
            "channels (LightningDiT's released sampler guides only the first 3: `guidance_channels=3` reproduces it); "
            "`guidance_interval=(low, high)` limits it to noise levels in that range; `guidance_scale=1.0` samples "
            "without guidance."
        )
    else:
        usage_code = _code(
            [
                "import torch",
                "",
                "import diffusers_aligntok  # registers AlignTok's classes with diffusers",
                "from diffusers_aligntok import LightningDiTTransformer2DModel",
                "",
                f'transformer = LightningDiTTransformer2DModel.from_pretrained("{repo_id}").eval()',
                f"latents = torch.randn(1, {transformer.get('in_channels')}, {latent_side}, {latent_side})",
                "with torch.no_grad():",
                f"    velocity = transformer(latents, timestep=torch.tensor([500.0]), class_labels=torch.tensor([{labels[0]}])).sample",
                "print(velocity.shape)",
            ]
        )
        tokenizer_fingerprint = (cache.get("tokenizer") or {}).get("fingerprint")
        usage_notes = (
            "This repository holds the transformer alone. To sample images, build an `AlignTokDiTPipeline(transformer="
            "transformer, vae=<the tokenizer its latents came from>, scheduler=FlowMatchEulerDiscreteScheduler(shift=...))`"
            + (
                f"; the training latents came from the tokenizer with fingerprint `{tokenizer_fingerprint}`"
                if tokenizer_fingerprint
                else ""
            )
            + ". Another tokenizer's latents give noise."
        )
    data = describe_training_data(cache_data.get("source"), cache_data.get("resolution"), "the DiT")
    warnings = list(data.warnings)
    if started_from_random_encoder(stages):
        warnings.append(_RANDOM_ENCODER_WARNING.format(whose="The tokenizer's"))
    recipe_parts = []
    if record is not None:
        recipe_parts += [dit_recipe_table(record, transformer), config_details("training_config.json", record.config)]
    else:
        recipe_parts.append(
            "Recipe unknown: no `training_config.json` was found beside the model (expected at "
            "`<run>/training_config.json`, next to `<run>/pipeline`)."
        )
    recipe_parts.append("#### The tokenizer\n\n" + tokenizer_stages_section(stages))
    model_rows = [
        ("pipeline" if model.is_pipeline else "class", f"`{model.class_name}` (diffusers-aligntok)"),
        (
            "transformer",
            "`LightningDiTTransformer2DModel`, "
            + ", ".join(
                f"{key} {transformer[key]}"
                for key in ("hidden_size", "num_layers", "num_attention_heads", "patch_size", "qk_norm")
                if key in transformer
            ),
        ),
        ("parameters (transformer)", _parameters(count_parameters_by_module(model.transformer_dir))),
        ("classes", num_classes),
        ("latent", f"{transformer.get('in_channels')} x {latent_side} x {latent_side}"),
        ("image size", f"{image_side}x{image_side}" if image_side else None),
    ]
    if vae is not None:
        model_rows.append(
            (
                "tokenizer (vae/)",
                f"`{vae.get('_class_name')}`, f{factor}, {vae.get('latent_channels')} channels"
                + (", per-channel latent statistics" if vae.get("latents_mean") is not None else ""),
            )
        )
    if model.is_pipeline:
        scheduler = model.component_configs.get("scheduler") or {}
        model_rows.append(
            ("scheduler", f"`{(model.config.get('scheduler') or [None, None])[1]}`, shift {scheduler.get('shift')}")
        )
    limitations = [
        f"Generates only the {num_classes} training classes at {image_side}x{image_side}; it takes no text."
        if image_side
        else f"Generates only the {num_classes} training classes; it takes no text.",
        "The transformer models the latents of the tokenizer in `vae/`: another VAE gives noise.",
        "Generated images inherit the training data's biases; do not use them as evidence of real events or people.",
        "Quality figures are only those in the evaluation section, with their protocol.",
    ]
    return CardContext(
        variables={
            "title": f"{repo_id.split('/')[-1]}: class-conditional LightningDiT on AlignTok latents",
            "summary": (
                (
                    "An `AlignTokDiTPipeline`: a class-conditional LightningDiT "
                    if model.is_pipeline
                    else "A class-conditional LightningDiT transformer (`LightningDiTTransformer2DModel`) "
                )
                + f"trained by flow matching on the latents of an AlignTok tokenizer ([arXiv {PAPER_ARXIV_ID}]"
                f"(https://arxiv.org/abs/{PAPER_ARXIV_ID})), {num_classes} classes."
            ),
            "warnings": warnings,
            "model_table": _model_table(model_rows),
            "usage_code": usage_code,
            "usage_notes": usage_notes,
            "recipe": "\n\n".join(recipe_parts),
            "training_data": data.text,
            "limitations": limitations,
            "is_pipeline": model.is_pipeline,
        },
        datasets=data.dataset_ids,
        tags=[
            "lightningdit",
            "class-conditional",
            "image-generation",
            "flow-matching",
            "pipeline" if model.is_pipeline else "transformer",
        ],
    )


# ---------------------------------------------------------------------------------------------------------------------
# Text-to-image (FLUX-architecture transformer or pipeline)
# ---------------------------------------------------------------------------------------------------------------------


def _text_to_image_context(model: ModelDirectory, repo_id: str, matched: list[MatchedEvaluation]) -> CardContext:
    transformer = model.transformer_config or {}
    vae = model.tokenizer_config if model.is_pipeline else None
    record = run_record(model.path)
    run_config = record.config if record else {}
    model_section, data_section = run_config.get("model") or {}, run_config.get("data") or {}
    validation = run_config.get("validation") or {}
    vae_class = (vae or {}).get("_class_name")
    arm = {"AlignedAutoencoderKL": "AlignTok", "AutoencoderKL": "FLUX VAE"}.get(vae_class)
    factor = _spatial_factor(vae)
    patch = None
    if vae and vae.get("latent_channels") and transformer.get("in_channels"):
        patch = round(math.sqrt(transformer["in_channels"] / vae["latent_channels"]))
    evaluation = _first_evaluation(matched, "text_to_image")
    if evaluation is not None:
        settings = evaluation["settings"]
        height, width = settings.get("image_size") or [settings.get("height"), settings.get("width")]
        steps = settings.get("num_inference_steps")
        guidance = evaluation.get("best_guidance_scale") or settings.get("guidance_scale") or 1.0
        max_sequence_length = settings.get("max_sequence_length")
        source_of_defaults = "the evaluation's settings (its best guidance scale)"
    else:
        resolution = data_section.get("resolution") or 256
        height = width = resolution
        steps = validation.get("num_inference_steps") or 50
        guidance = validation.get("guidance_scale") or 1.0
        max_sequence_length = model_section.get("max_sequence_length")
        source_of_defaults = "the training run's validation settings" if validation else "defaults"
    if factor and patch:
        height, width = _round_to_multiple(int(height), factor * patch), _round_to_multiple(int(width), factor * patch)
    prompt = (validation.get("prompts") or [_DEFAULT_PROMPT])[0]
    guidance_embeds = bool(transformer.get("guidance_embeds"))
    call = [
        f"    {json.dumps(prompt)},",
        f"    height={height},",
        f"    width={width},",
        f"    num_inference_steps={int(steps)},",
    ]
    if guidance_embeds:
        call.append(f"    guidance_scale={float(guidance):g},")
    elif float(guidance) > 1.0:
        call += [f"    true_cfg_scale={float(guidance):g},", '    negative_prompt="",']
    if max_sequence_length:
        call.append(f"    max_sequence_length={int(max_sequence_length)},")
    call.append("    generator=torch.Generator().manual_seed(0),")
    if model.is_pipeline:
        usage_code = _code(
            [
                "import torch",
                "",
                "import diffusers_aligntok  # registers AlignTok's classes (the VAE, AlignTokFluxPipeline) with diffusers",
                "from diffusers import DiffusionPipeline",
                "",
                f'pipe = DiffusionPipeline.from_pretrained("{repo_id}")',
                "image = pipe(",
                *call,
                ").images[0]",
                'image.save("sample.png")',
            ]
        )
        usage_notes = (
            f"The call uses {source_of_defaults}. "
            + (
                "Guidance is FLUX's embedded (distilled) guidance: the transformer has `guidance_embeds=True`."
                if guidance_embeds
                else "The transformer was trained with caption dropout for real classifier-free guidance: `true_cfg_scale` > 1 "
                "with an empty `negative_prompt` (its `guidance_embeds` is False, so `guidance_scale` does nothing)."
            )
            + (
                f" Latents are fed with patch {patch}: "
                + (
                    "`AlignTokFluxPipeline` overrides only FluxPipeline's packing."
                    if patch == 1
                    else "the stock `FluxPipeline` runs it."
                )
                if patch
                else ""
            )
        )
    else:
        usage_code = _code(
            [
                "from diffusers import FluxTransformer2DModel  # diffusers' own class: no import of diffusers_aligntok needed",
                "",
                f'transformer = FluxTransformer2DModel.from_pretrained("{repo_id}").eval()',
                "print(sum(parameter.numel() for parameter in transformer.parameters()))",
            ]
        )
        usage_notes = (
            "This repository holds the transformer alone (diffusers' own `FluxTransformer2DModel`). To sample, put it in "
            f"a `FluxPipeline` (latent patch 2) or `diffusers_aligntok.AlignTokFluxPipeline` (patch 1) with the VAE "
            f"it was trained with ({display_path(model_section.get('vae')) or 'see the training recipe'}) and FLUX's "
            "CLIP-L and T5 text encoders; `in_channels` = VAE latent channels x patch^2."
        )
    data = describe_training_data(data_section.get("source"), data_section.get("resolution"), "the transformer")
    warnings = list(data.warnings)
    if model_section.get("text_encoders") == "tiny-random":
        warnings.append(
            "Trained with tiny *random* text encoders (`model.text_encoders: tiny-random`): the model cannot "
            "follow prompts. A smoke-test artefact."
        )
    recipe_parts = []
    if record is not None:
        recipe_parts += [
            t2i_recipe_table(record, transformer, vae_class),
            config_details("training_config.json", record.config),
        ]
    else:
        recipe_parts.append(
            "Recipe unknown: no `training_config.json` was found beside the model (expected at "
            "`<run>/training_config.json`, next to `<run>/pipeline`)."
        )
    model_rows = [
        ("pipeline" if model.is_pipeline else "class", f"`{model.class_name}`"),
        (
            "transformer",
            "`FluxTransformer2DModel`, "
            + ", ".join(
                f"{key} {transformer[key]}"
                for key in (
                    "num_layers",
                    "num_single_layers",
                    "num_attention_heads",
                    "attention_head_dim",
                    "in_channels",
                    "guidance_embeds",
                )
                if key in transformer
            ),
        ),
        ("parameters (transformer)", _parameters(count_parameters_by_module(model.transformer_dir))),
        (
            "VAE",
            f"`{vae_class}` ({arm} arm), f{factor}, {vae.get('latent_channels')} channels"
            if vae
            else (
                f"{display_path(model_section.get('vae'))} (not in this repository)"
                if model_section.get("vae")
                else None
            ),
        ),
        ("latent patch", patch),
        (
            "text encoders",
            ", ".join(
                f"`{(model.config.get(name) or [None, None])[1]}`"
                for name in ("text_encoder", "text_encoder_2")
                if model.is_pipeline and (model.config.get(name) or [None, None])[1]
            )
            or (model_section.get("text_encoders") and str(model_section.get("text_encoders"))),
        ),
    ]
    limitations = [
        "Trained at the resolutions and aspect ratios of its recipe; far from them quality drops.",
        "Text-to-image models reproduce their data's biases and can produce unsafe or misleading images; filter outputs "
        "before showing them to people.",
        "Legible text, counting and rare concepts are weak points of models of this size and data.",
        "Quality figures are only those in the evaluation section, with their protocol.",
    ]
    return CardContext(
        variables={
            "title": f"{repo_id.split('/')[-1]}: a text-to-image FLUX-architecture "
            + ("pipeline" if model.is_pipeline else "transformer")
            + (f" ({arm} latents)" if arm else ""),
            "summary": (
                ("A text-to-image pipeline" if model.is_pipeline else "A text-to-image transformer")
                + " from the AlignTok text-to-image recipe ([arXiv "
                f"{PAPER_ARXIV_ID}](https://arxiv.org/abs/{PAPER_ARXIV_ID})): a FLUX-architecture transformer trained "
                "from scratch" + (f" on {arm} latents." if arm else ".")
            ),
            "warnings": warnings,
            "model_table": _model_table(model_rows),
            "usage_code": usage_code,
            "usage_notes": usage_notes,
            "recipe": "\n\n".join(recipe_parts),
            "training_data": data.text,
            "limitations": limitations,
            "is_pipeline": model.is_pipeline,
        },
        base_model=model_section.get("init_transformer_from")
        if looks_like_hub_id(model_section.get("init_transformer_from"))
        else None,
        datasets=data.dataset_ids,
        tags=[
            "text-to-image",
            "flux",
            "flow-matching",
            {"AlignTok": "aligntok-vae", "FLUX VAE": "flux-vae"}.get(arm, "vae-unknown"),
            "pipeline" if model.is_pipeline else "transformer",
        ],
    )
