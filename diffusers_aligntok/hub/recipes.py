"""The training recipe and data of a pushed model, read from the files training wrote beside it.

Where they are (docs/design.md's layouts):

    <run>/stage<k>/model/                 a tokenizer after stage k
    <run>/stage<j>/training_config.json   each stage's effective config (`"stage": j`), for j = 1..k
    <run>/stage<j>/metrics.json           its final validation PSNR, steps and process count
    <run>/pipeline/, <run>/transformer/   a DiT or text-to-image run's outputs
    <run>/training_config.json            that run's config (DiT: `flow` + `data.cache_dir`; t2i: `model.text_encoders`)
    <run>/metrics.json                    its steps, process count and parameter count
    <cache>/metadata.json                 a DiT's latent cache: the tokenizer, the data, the latent statistics

Anything missing is said in the card ("recipe unknown"), never guessed. Local paths in configs are shown by their
last components only: a public card should not publish a home directory.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .naming import display_path, looks_like_hub_id, sanitized


@dataclass
class StageRecord:
    """One tokenizer stage: its number, `training_config.json`, `metrics.json` (or None) and directory."""

    stage: int
    config: dict[str, Any]
    metrics: dict[str, Any] | None
    directory: Path


@dataclass
class RunRecord:
    """A DiT or text-to-image run: its `training_config.json`, `metrics.json` (or None), directory and, for a DiT, the
    latent cache's `metadata.json` (or None when the cache is not on this machine)."""

    config: dict[str, Any]
    metrics: dict[str, Any] | None
    directory: Path
    cache_metadata: dict[str, Any] | None = None


@dataclass
class TrainingData:
    """What the card says about the training data: a paragraph, hub dataset ids for the metadata, warnings."""

    text: str
    dataset_ids: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None


def _resolve(path: Any, *bases: Path) -> Path | None:
    """`path` as an existing local directory: as given (absolute, or relative to the working directory), or relative
    to each of `bases`; None if none exists."""
    if not isinstance(path, str) or not path:
        return None
    candidate = Path(path).expanduser()
    for option in [candidate, *(base / candidate for base in bases if not candidate.is_absolute())]:
        if option.is_dir():
            return option.resolve()
    return None


# ---------------------------------------------------------------------------------------------------------------------
# Finding the records
# ---------------------------------------------------------------------------------------------------------------------


def tokenizer_stages(tokenizer_dir: Path | None) -> list[StageRecord]:
    """The stages that produced the tokenizer in `tokenizer_dir` (`<run>/stage<k>/model`): stages 1..k that have a
    `training_config.json`, in order; empty when the directory is not laid out that way."""
    if tokenizer_dir is None:
        return []
    beside = _read_json(tokenizer_dir.parent / "training_config.json")
    if beside is None or not isinstance(beside.get("stage"), int):
        return []
    run_dir = tokenizer_dir.parent.parent
    stages = []
    for stage in range(1, beside["stage"] + 1):
        directory = tokenizer_dir.parent if stage == beside["stage"] else run_dir / f"stage{stage}"
        config = beside if stage == beside["stage"] else _read_json(directory / "training_config.json")
        if config is not None:
            stages.append(StageRecord(stage, config, _read_json(directory / "metrics.json"), directory))
    return stages


def run_record(model_dir: Path) -> RunRecord | None:
    """The DiT or text-to-image run that wrote `model_dir` (`<run>/pipeline` or `<run>/transformer`), or None."""
    directory = model_dir.parent
    config = _read_json(directory / "training_config.json")
    if config is None or "stage" in config:
        return None
    record = RunRecord(config, _read_json(directory / "metrics.json"), directory)
    cache_dir = _resolve((config.get("data") or {}).get("cache_dir"), directory)
    if cache_dir is not None and "flow" in config and "validation" in config:
        record.cache_metadata = _read_json(cache_dir / "metadata.json")
    return record


def dit_tokenizer_stages(record: RunRecord | None) -> list[StageRecord]:
    """The tokenizer stages behind a DiT run's latents, when the tokenizer directory is still on this machine."""
    if record is None:
        return []
    candidates = [
        (record.config.get("validation") or {}).get("tokenizer"),
        ((record.cache_metadata or {}).get("tokenizer") or {}).get("path"),
    ]
    for candidate in candidates:
        directory = _resolve(candidate, record.directory)
        if directory is not None:
            stages = tokenizer_stages(directory)
            if stages:
                return stages
    return []


def foundation_encoder(stages: list[StageRecord]) -> str | None:
    """The pretrained encoder stage 1 started from (`model.foundation_encoder`: a hub id or a local directory)."""
    for record in stages:
        if record.stage == 1:
            return (record.config.get("model") or {}).get("foundation_encoder")
    return None


# ---------------------------------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------------------------------

_STAGE_ROLES = {
    1: ("adapter + decoder", "encoder"),
    2: ("encoder + adapter + decoder", "stage-1 encoder + adapter (the L_sp target)"),
    3: ("decoder", "encoder + adapter (latent space fixed)"),
}


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _global_batch(training: dict[str, Any], metrics: dict[str, Any] | None) -> str:
    per_process = training.get("train_batch_size")
    accumulation = training.get("gradient_accumulation_steps", 1) or 1
    processes = (metrics or {}).get("num_processes")
    if per_process is None:
        return "-"
    if processes is None:
        return f"{per_process} x {accumulation} accumulation per process (process count not recorded)"
    return f"{per_process * accumulation * processes} ({per_process} x {accumulation} accumulation x {processes} processes)"


def _optimizer(optimizer: dict[str, Any], encoder: bool = False) -> str:
    parts = [f"AdamW lr {_number(optimizer.get('learning_rate'))}"]
    if encoder and optimizer.get("encoder_learning_rate") is not None:
        parts.append(f"encoder lr {_number(optimizer['encoder_learning_rate'])}")
    parts.append(f"betas ({_number(optimizer.get('adam_beta1'))}, {_number(optimizer.get('adam_beta2'))})")
    parts.append(f"weight decay {_number(optimizer.get('weight_decay'))}")
    parts.append(f"{optimizer.get('lr_scheduler')} schedule, {optimizer.get('lr_warmup_steps')} warm-up steps")
    if optimizer.get("max_grad_norm") is not None:
        parts.append(f"grad-norm clip {_number(optimizer['max_grad_norm'])}")
    return ", ".join(parts)


def _precision(config: dict[str, Any]) -> str:
    effective = (config.get("run") or {}).get("accelerator_mixed_precision")
    configured = (config.get("training") or {}).get("mixed_precision")
    return str(effective or configured)


def _stage_loss(stage: int, loss: dict[str, Any]) -> str:
    terms = [f"{_number(loss.get('l1_weight', 1.0))} x L1"]
    if loss.get("perceptual_network") and loss.get("perceptual_weight"):
        terms.append(f"{_number(loss['perceptual_weight'])} x LPIPS (`{loss['perceptual_network']}`)")
    else:
        terms.append("no perceptual term")
    if loss.get("gan_weight"):
        terms.append(f"{_number(loss['gan_weight'])} x adaptive hinge GAN from step {loss.get('gan_start_step', 0)}")
    if stage == 2 and loss.get("semantic_preservation_weight"):
        terms.append(
            f"{_number(loss['semantic_preservation_weight'])} x L_sp ({loss.get('semantic_preservation_kind')})"
        )
    return " + ".join(terms)


def tokenizer_stage_table(stages: list[StageRecord]) -> str:
    """The three-stage recipe as a Markdown table, one row per stage, values from each stage's config."""
    lines = [
        "| stage | trains | frozen | loss | steps | global batch | optimiser | EMA | precision | data | validation PSNR |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for record in stages:
        config, metrics = record.config, record.metrics or {}
        training, data = config.get("training") or {}, config.get("data") or {}
        trains, frozen = _STAGE_ROLES.get(record.stage, ("?", "?"))
        if record.stage == 2 and training.get("encoder_lora_rank"):
            trains += f" (encoder through LoRA rank {training['encoder_lora_rank']})"
        steps = training.get("max_train_steps")
        if metrics.get("global_step") not in (None, steps):
            steps = f"{metrics['global_step']} of {steps}"
        resolution = data.get("resolution")
        data_text = (
            f"{display_path(data.get('source'))} at {resolution}x{resolution}"
            if resolution
            else str(display_path(data.get("source")))
        )
        psnr = metrics.get("validation_psnr")
        lines.append(
            f"| {record.stage} | {trains} | {frozen} | {_stage_loss(record.stage, config.get('loss') or {})} | {steps} | "
            f"{_global_batch(training, record.metrics)} | {_optimizer(config.get('optimizer') or {}, encoder=record.stage == 2)} "
            f"| {_number(training['ema_decay']) if training.get('ema_decay') else '-'} | {_precision(config)} | {data_text} | "
            f"{f'{psnr:.2f} dB' if isinstance(psnr, (int, float)) else '-'} |"
        )
    return "\n".join(lines)


def _key_value_table(rows: list[tuple[str, Any]]) -> str:
    lines = ["| setting | value |", "|---|---|"]
    for name, value in rows:
        if value is None or value == "":
            continue
        text = json.dumps(value) if isinstance(value, (dict, list)) else _number(value)
        lines.append(f"| {name} | {text.replace('|', '/')} |")
    return "\n".join(lines)


def config_details(title: str, config: dict[str, Any]) -> str:
    """A collapsed `<details>` block with the whole config as JSON (local paths shortened)."""
    body = json.dumps(sanitized(config), indent=2)
    return f"<details>\n<summary>{title}</summary>\n\n```json\n{body}\n```\n\n</details>"


def dit_recipe_table(record: RunRecord, transformer_config: dict[str, Any] | None) -> str:
    """A DiT run's recipe (transformer, latents, objective, optimiser, steps) as a Markdown table."""
    config, metrics = record.config, record.metrics or {}
    model, flow, training = config.get("model") or {}, config.get("flow") or {}, config.get("training") or {}
    transformer = transformer_config or {}
    cache = record.cache_metadata or {}
    cache_data = cache.get("data") or {}
    sampling = "logit-normal" if flow.get("timestep_sampling") == "logit_normal" else flow.get("timestep_sampling")
    if flow.get("timestep_sampling") == "logit_normal":
        sampling += f" (mean {_number(flow.get('logit_mean'))}, std {_number(flow.get('logit_std'))})"
        if flow.get("logit_normal_until_step") is not None:
            sampling += f" until step {flow['logit_normal_until_step']}, then uniform"
    rows = [
        (
            "transformer",
            f"preset `{model.get('preset')}`"
            + (f", overrides {json.dumps(model.get('overrides'))}" if model.get("overrides") else ""),
        ),
        (
            "size",
            ", ".join(
                f"{key} {transformer[key]}"
                for key in ("hidden_size", "num_layers", "num_attention_heads", "patch_size", "qk_norm")
                if key in transformer
            )
            or None,
        ),
        ("parameters", f"{metrics['num_parameters']:,}" if metrics.get("num_parameters") else None),
        ("classes", transformer.get("num_classes")),
        ("label dropout (for CFG)", transformer.get("class_dropout_prob")),
        (
            "latents",
            (
                f"{'x'.join(str(size) for size in cache.get('latent_shape') or [])} from {cache.get('num_samples')} images of "
                f"{cache_data.get('description') or cache_data.get('source')}"
                f"{' (and their horizontal flips)' if cache.get('flipped') else ''}"
            )
            if cache
            else None,
        ),
        ("tokenizer (fingerprint)", ((cache.get("tokenizer") or {}).get("fingerprint")) if cache else None),
        ("latent normalisation", ((cache.get("latent_statistics") or {}).get("source")) if cache else None),
        (
            "objective",
            "flow matching on the linear path, velocity target"
            + (
                f", + {_number(flow['velocity_cosine_weight'])} x per-token velocity cosine loss"
                if flow.get("velocity_cosine_weight")
                else ""
            ),
        ),
        ("timestep sampling", sampling),
        ("training timestep shift", flow.get("timestep_shift")),
        ("optimiser", _optimizer(config.get("optimizer") or {})),
        (
            "steps",
            training.get("max_train_steps")
            if metrics.get("global_step") in (None, training.get("max_train_steps"))
            else f"{metrics['global_step']} of {training.get('max_train_steps')}",
        ),
        ("global batch", _global_batch(training, record.metrics)),
        ("precision", _precision(config)),
        ("EMA decay (the saved weights)", training.get("ema_decay")),
        ("seed", training.get("seed")),
    ]
    validation = config.get("validation") or {}
    if validation:
        rows.append(
            ("sampling defaults saved with the pipeline", f"shift {_number(validation.get('sampling_shift'))}")
        )
    return _key_value_table(rows)


def t2i_recipe_table(record: RunRecord, transformer_config: dict[str, Any] | None, vae_class: str | None) -> str:
    """A text-to-image run's recipe (transformer, VAE arm, text encoders, data, objective, optimiser) as a table."""
    config, metrics = record.config, record.metrics or {}
    model, data, flow = config.get("model") or {}, config.get("data") or {}, config.get("flow") or {}
    training = config.get("training") or {}
    transformer = transformer_config or {}
    shift = (
        (
            "resolution-dependent (FLUX): "
            + f"{_number(flow.get('base_shift'))} at {flow.get('base_image_seq_len')} tokens to "
            f"{_number(flow.get('max_shift'))} at {flow.get('max_image_seq_len')}"
        )
        if flow.get("resolution_dependent_shift")
        else flow.get("shift")
    )
    rows = [
        (
            "transformer",
            f"`FluxTransformer2DModel`, preset `{model.get('transformer_preset')}`"
            + (
                f", overrides {json.dumps(model.get('transformer_overrides'))}"
                if model.get("transformer_overrides")
                else ""
            ),
        ),
        (
            "size",
            ", ".join(
                f"{key} {transformer[key]}"
                for key in (
                    "num_layers",
                    "num_single_layers",
                    "num_attention_heads",
                    "attention_head_dim",
                    "in_channels",
                    "patch_size",
                )
                if key in transformer
            )
            or None,
        ),
        ("parameters", f"{metrics['num_parameters']:,}" if metrics.get("num_parameters") else None),
        (
            "VAE",
            f"{display_path(model.get('vae'))}"
            + (f" (`{vae_class}`)" if vae_class else "")
            + (f", subfolder {model['vae_subfolder']}" if model.get("vae_subfolder") else ""),
        ),
        ("pixels per token", model.get("pixels_per_token")),
        ("text encoders", model.get("text_encoders")),
        ("max text tokens (T5)", model.get("max_sequence_length")),
        ("initialised from", display_path(model.get("init_transformer_from"))),
        (
            "data",
            f"{display_path(data.get('source'))}, split {data.get('split')}"
            + (f", first {data['max_samples']}" if data.get("max_samples") else ""),
        ),
        ("resolution / aspect ratios", f"{data.get('resolution')}, {', '.join(data.get('aspect_ratios') or [])}"),
        ("caption dropout (for CFG)", data.get("caption_dropout_prob")),
        ("objective", "flow matching on the linear path, velocity target"),
        (
            "timestep sampling",
            f"{flow.get('timestep_sampling')} (mean {_number(flow.get('logit_mean'))}, std {_number(flow.get('logit_std'))})"
            if flow.get("timestep_sampling") == "logit_normal"
            else flow.get("timestep_sampling"),
        ),
        ("timestep shift", shift),
        ("optimiser", _optimizer(config.get("optimizer") or {})),
        (
            "steps",
            training.get("max_train_steps")
            if metrics.get("global_step") in (None, training.get("max_train_steps"))
            else f"{metrics['global_step']} of {training.get('max_train_steps')}",
        ),
        ("global batch", _global_batch(training, record.metrics)),
        ("precision", _precision(config)),
        ("gradient checkpointing", training.get("gradient_checkpointing")),
        ("EMA decay (the saved weights)", training.get("ema_decay")),
        ("seed", training.get("seed")),
    ]
    return _key_value_table(rows)


# ---------------------------------------------------------------------------------------------------------------------
# Training data and its domain
# ---------------------------------------------------------------------------------------------------------------------


def describe_training_data(source: Any, resolution: Any, what: str) -> TrainingData:
    """A paragraph on the data `what` (e.g. "the tokenizer") was trained on and what it does not cover."""
    if not source:
        return TrainingData(
            f"Not recorded: no training_config.json was found beside the model, so the data {what} was "
            "trained on is unknown. Do not assume it generalises beyond what the evaluation shows."
        )
    shown = display_path(source)
    size = (
        f" at {resolution}x{resolution}"
        if isinstance(resolution, int)
        else (f" at {resolution}" if resolution else "")
    )
    lowered = str(source).lower()
    ids = [source] if looks_like_hub_id(source) else []
    if lowered.startswith("builtin:shapes"):
        return TrainingData(
            f"`{shown}`{size}: procedurally generated coloured shapes (10 classes{', with template captions' if 'captions' in lowered else ''}), "
            "made on the fly from a seed. A toy domain for tests and the demo: this model has never seen a photograph "
            "and is not meant for real images.",
            ids,
            [f"Trained on the built-in toy data `{shown}`: a demonstration model, not for real images."],
        )
    if "imagenet" in lowered:
        return TrainingData(
            f"`{shown}`{size}: ImageNet-1k (about 1.28M photographs of 1,000 object classes), centre-cropped. Domain "
            "limits: object-centred natural photographs; text, faces, crowds, illustrations, medical or satellite "
            "imagery and resolutions far from the training size are outside it, and ImageNet's label and "
            "demographic biases carry over. Not evaluated on other domains.",
            ids,
        )
    if "laion" in lowered:
        return TrainingData(
            f"`{shown}`{size}: web-scraped image-text pairs (LAION). Domain limits: captions are noisy alt-texts; the "
            "data carries the web's social biases and may contain unsafe or copyrighted content; rare concepts, "
            "legible text and counting are weak points of models trained on it.",
            ids,
        )
    return TrainingData(
        f"`{shown}`{size}. Behaviour outside this data's domain (content, style, resolution) has not been measured.",
        ids,
    )
