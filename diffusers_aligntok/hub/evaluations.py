"""Evaluation results for a model card: read our evaluations' `results.json`, check they belong to the pushed model,
and turn them into a Markdown table, a protocol statement and `huggingface_hub.EvalResult`s.

Three formats, written by `diffusers_aligntok.evaluation`:

| kind | written by | recognised by | identifies the model by |
|---|---|---|---|
| `tokenizer` | `evaluate_tokenizers` (`training/evaluate_tokenizer.py`) | `tokenizers`, `linear_probe_protocol` | `tokenizers[i].tokenizer.source` (the path or hub id given) and `.config` |
| `generation` | `evaluate_generation` (`training/evaluate_generation.py`) | `pipeline`, `settings.sample_plan` | `pipeline.transformer.fingerprint`, `pipeline.vae.fingerprint` (config + weights hash), `pipeline.path` |
| `text_to_image` | `evaluate_text_to_image` (`training/evaluate_t2i.py`) | `pipeline`, `prompts`, `clip` | the same fingerprints and path |

A fingerprint is `diffusers_aligntok.utils.tokenizer_fingerprint` of the loaded model: the push computes
it for the pushed model in its fresh-process load check and compares. A tokenizer evaluation records no fingerprint,
so its entry must name the pushed directory (same resolved path, same architecture config, weights not modified after
the JSON was written), or a directory holding the same safetensors weights, or, when the recorded path no longer
exists (moved, another machine), end in the same path components with the same config.
"""

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..utils import format_metric
from .model_directory import HubPushError, ModelDirectory, safetensors_weights_digest, weight_files
from .naming import display_path, looks_like_hub_id


EVALUATION_KINDS = ("tokenizer", "generation", "text_to_image")
# Which evaluations a card of each kind shows. A pipeline's card also shows the evaluation of its tokenizer (`vae/`).
ACCEPTED_EVALUATIONS: dict[str, tuple[str, ...]] = {
    "tokenizer": ("tokenizer",),
    "class_conditional_transformer": ("generation",),
    "class_conditional_pipeline": ("generation", "tokenizer"),
    "text_to_image_transformer": ("text_to_image",),
    "text_to_image_pipeline": ("text_to_image", "tokenizer"),
}
_WRITERS = {
    "tokenizer": "training/evaluate_tokenizer.py",
    "generation": "training/evaluate_generation.py",
    "text_to_image": "training/evaluate_t2i.py",
}
# Config keys that do not define the tokenizer's latents (as in `tokenizer_fingerprint`) or are bookkeeping.
_CONFIG_KEYS_IGNORED = {
    "_name_or_path",
    "_diffusers_version",
    "_use_default_values",
    "latents_mean",
    "latents_std",
    "scaling_factor",
    "shift_factor",
    "force_upcast",
}
# Seconds of clock slack when comparing a weight file's modification time with the JSON's.
_MTIME_SLACK_SECONDS = 2.0
_FLUX_VAE_RANDOM = "flux-vae-random"
# Published rFIDs (the paper's 0.26, VA-VAE's, FLUX's) are measured on all 50,000 ImageNet-val images at 256x256.
_PUBLISHED_RFID_SETUP = {
    "data": "ILSVRC/imagenet-1k",
    "split": "validation",
    "num_samples": 50_000,
    "resolution": [256, 256],
}


@dataclass(frozen=True)
class Evaluation:
    """One evaluation `results.json`: its path, kind (one of [`EVALUATION_KINDS`]), contents and modification time."""

    path: Path
    kind: str
    results: dict[str, Any]
    modified_time: float


@dataclass(frozen=True)
class MatchedEvaluation:
    """An evaluation checked against the pushed model.

    Args:
        evaluation (`Evaluation`): The JSON.
        entry_index (`int`, *optional*): For a tokenizer evaluation, the entry that is the pushed tokenizer (the
            others are peers evaluated alongside it).
        matched_by (`str`): How the JSON was tied to the model (`"fingerprint"`, `"path"`, ...), shown in the card.
    """

    evaluation: Evaluation
    entry_index: int | None
    matched_by: str


@dataclass
class EvaluationReport:
    """What a card shows of one evaluation: a heading, a Markdown table, protocol lines, a comparability statement,
    the JSON's warnings, and the `EvalResult`s of the model-index."""

    title: str
    table: str
    protocol: list[str]
    comparable_with_published: bool
    statement: str
    warnings: list[str] = field(default_factory=list)
    eval_results: list[Any] = field(default_factory=list)
    uses_standins: bool = False


def load_evaluation(path: str | os.PathLike) -> Evaluation:
    """Reads one evaluation `results.json` and tells its kind; raises `HubPushError` for anything else."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise HubPushError(f"Evaluation JSON {path} does not exist; pass the results.json an evaluation wrote.")
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise HubPushError(f"Evaluation JSON {path} cannot be read: {error}.") from None
    kind = evaluation_kind(results)
    if kind is None:
        raise HubPushError(
            f"{path} is not a results.json of our evaluations (tokenizer: {_WRITERS['tokenizer']}, class-conditional "
            f"generation: {_WRITERS['generation']}, text-to-image: {_WRITERS['text_to_image']}); training's "
            "metrics.json and other files do not carry the settings a card needs."
        )
    return Evaluation(path=path.resolve(), kind=kind, results=results, modified_time=path.stat().st_mtime)


def evaluation_kind(results: Any) -> str | None:
    """`"tokenizer"`, `"generation"` or `"text_to_image"` for one of our results JSONs, else None."""
    if not isinstance(results, dict) or not isinstance(results.get("settings"), dict):
        return None
    if isinstance(results.get("tokenizers"), list) and "linear_probe_protocol" in results:
        return "tokenizer"
    if isinstance(results.get("pipeline"), dict) and isinstance(results.get("rows"), list):
        if "sample_plan" in results["settings"]:
            return "generation"
        if "prompts" in results and "clip" in results:
            return "text_to_image"
    return None


def check_evaluation_kind(evaluation: Evaluation, model: ModelDirectory) -> None:
    """Raises `HubPushError` if a card of `model`'s kind does not show this kind of evaluation."""
    accepted = ACCEPTED_EVALUATIONS[model.kind]
    if evaluation.kind not in accepted:
        raise HubPushError(
            f"{evaluation.path} is a {evaluation.kind} evaluation, but {model.path} is a {model.kind.replace('_', ' ')} "
            f"({model.class_name}), whose card shows {' and '.join(accepted)} evaluations. Pass the JSON with the model "
            "it evaluated."
        )


def match_evaluation(
    evaluation: Evaluation, model: ModelDirectory, fingerprints: dict[str, str] | None
) -> MatchedEvaluation:
    """Checks that `evaluation` evaluated `model`; raises `HubPushError` naming the JSON and both models if not.

    `fingerprints` are the pushed model's `tokenizer_fingerprint`s by role (`"transformer"`, `"vae"`), computed after
    loading it; generation and text-to-image evaluations are compared on them.
    """
    check_evaluation_kind(evaluation, model)
    if evaluation.kind == "tokenizer":
        return _match_tokenizer_evaluation(evaluation, model)
    return _match_pipeline_evaluation(evaluation, model, fingerprints or {})


def _match_pipeline_evaluation(
    evaluation: Evaluation, model: ModelDirectory, fingerprints: dict[str, str]
) -> MatchedEvaluation:
    recorded = evaluation.results["pipeline"]
    roles = ("transformer", "vae") if model.is_pipeline else ("transformer",)
    recorded_fingerprints = {role: (recorded.get(role) or {}).get("fingerprint") for role in roles}
    if all(recorded_fingerprints.values()):
        missing = [role for role in roles if role not in fingerprints]
        if missing:
            raise RuntimeError(f"No fingerprint of the pushed {missing} was computed; this is a bug.")
        different = [
            f"{role}: evaluated {recorded_fingerprints[role]}, pushed {fingerprints[role]}"
            for role in roles
            if recorded_fingerprints[role] != fingerprints[role]
        ]
        if different:
            raise HubPushError(
                f"{evaluation.path} evaluated another model than {model.path}: the weight fingerprints differ "
                f"({'; '.join(different)}; the evaluation ran on {recorded.get('path')}). Evaluate this model "
                f"({_WRITERS[evaluation.kind]} --pipeline ...), or pass the JSON of its own evaluation."
            )
        return MatchedEvaluation(evaluation, None, "weight fingerprint")
    # Older results without fingerprints: only the pipeline's own path can tie them to the model.
    path = recorded.get("path")
    if (
        model.is_pipeline
        and path
        and Path(path).expanduser().exists()
        and Path(path).expanduser().resolve() == model.path
    ):
        return MatchedEvaluation(evaluation, None, "path")
    raise HubPushError(
        f"{evaluation.path} records no weight fingerprints and its pipeline path {path!r} is not {model.path}, so it "
        "cannot be tied to the pushed model. Re-run the evaluation on this model with the current package."
    )


def _match_tokenizer_evaluation(evaluation: Evaluation, model: ModelDirectory) -> MatchedEvaluation:
    tokenizer_dir = model.tokenizer_dir
    tokenizer_config = model.tokenizer_config or {}
    # `load_tokenizer` also takes a pipeline directory and uses its vae/, so the pipeline's own path counts.
    candidates = {tokenizer_dir, model.path}
    pushed_digest: list[str | None] = []  # computed once, on first need (it reads every weight)
    reasons = []
    for index, entry in enumerate(evaluation.results["tokenizers"]):
        described = entry.get("tokenizer") or {}
        source = described.get("source")
        if not source or source == _FLUX_VAE_RANDOM:
            reasons.append(f"{described.get('name', source)!r} (no local source)")
            continue
        recorded = Path(source).expanduser()
        if recorded.exists():
            resolved = recorded.resolve()
            if resolved in candidates:
                problem = _config_difference(described.get("config"), tokenizer_config) or _stale_weights(
                    tokenizer_dir, evaluation
                )
                if problem is None:
                    return MatchedEvaluation(evaluation, index, "path")
                reasons.append(f"{source!r} (that is this directory, but {problem})")
                continue
            recorded_tokenizer = resolved / "vae" if (resolved / "model_index.json").is_file() else resolved
            if not pushed_digest:
                pushed_digest.append(safetensors_weights_digest(tokenizer_dir))
            if (
                pushed_digest[0] is not None
                and recorded_tokenizer.is_dir()
                and (safetensors_weights_digest(recorded_tokenizer) == pushed_digest[0])
            ):
                return MatchedEvaluation(evaluation, index, "identical weights at the evaluated path")
            reasons.append(f"{source!r} (another directory, with other weights)")
            continue
        # The recorded path is gone (moved, or the evaluation ran on another machine): trailing path components
        # (all of a relative path's, the last 3 of an absolute one) and the architecture must agree.
        parts = [part for part in recorded.parts if part not in ("/", ".", "..") and part != recorded.anchor]
        trailing = parts[-3:] if recorded.is_absolute() else parts
        if len(trailing) >= 2 and any(list(candidate.parts[-len(trailing) :]) == trailing for candidate in candidates):
            problem = _config_difference(described.get("config"), tokenizer_config)
            if problem is None:
                return MatchedEvaluation(evaluation, index, f"path ending {'/'.join(trailing)} and config")
            reasons.append(f"{source!r} (same path ending, but {problem})")
            continue
        reasons.append(f"{source!r} (does not exist here and its path does not end like this one)")
    raise HubPushError(
        f"{evaluation.path} evaluated no tokenizer that is {tokenizer_dir}: its tokenizers are {'; '.join(reasons)}. "
        f"Compared resolved paths, then the safetensors weights. Evaluate this tokenizer ({_WRITERS['tokenizer']} "
        f"--tokenizers {tokenizer_dir}), or pass the JSON of its own evaluation."
    )


def _config_difference(recorded: dict[str, Any] | None, current: dict[str, Any]) -> str | None:
    """None if the architecture keys both configs have agree, else a short description of the first differences."""
    if not isinstance(recorded, dict):
        return None  # nothing recorded to compare with; the path decides
    keys = (set(recorded) & set(current)) - _CONFIG_KEYS_IGNORED
    differing = sorted(key for key in keys if _jsonable(recorded[key]) != _jsonable(current[key]))
    if not differing:
        return None
    shown = ", ".join(f"{key}: evaluated {recorded[key]!r}, now {current[key]!r}" for key in differing[:3])
    return f"its config changed since the evaluation ({shown})"


def _stale_weights(directory: Path, evaluation: Evaluation) -> str | None:
    """A description if a weight file in `directory` was written after the evaluation JSON (a retrained model)."""
    newest = max((path.stat().st_mtime for path in weight_files(directory)), default=0.0)
    if newest > evaluation.modified_time + _MTIME_SLACK_SECONDS:
        return "its weights were written after the evaluation JSON (retrained in place?)"
    return None


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


# ---------------------------------------------------------------------------------------------------------------------
# Reports: the card's table, protocol and model-index entries
# ---------------------------------------------------------------------------------------------------------------------


def evaluation_report(
    matched: MatchedEvaluation, model_name: str, tokenizer_is_component: bool = False
) -> EvaluationReport:
    """The card's view of one matched evaluation (see [`EvaluationReport`]).

    `tokenizer_is_component`: the card is a pipeline's and a tokenizer evaluation is of its `vae/`; the table and the
    model-index then say so instead of presenting the numbers as the pipeline's own.
    """
    builders = {
        "tokenizer": _tokenizer_report,
        "generation": _generation_report,
        "text_to_image": _text_to_image_report,
    }
    if matched.evaluation.kind == "tokenizer":
        report = _tokenizer_report(matched, model_name, tokenizer_is_component)
    else:
        report = builders[matched.evaluation.kind](matched, model_name)
    report.protocol.append(
        f"Source: `{matched.evaluation.path.name}` of this evaluation, tied to this model by {matched.matched_by}; "
        f"diffusers-aligntok {(matched.evaluation.results.get('versions') or {}).get('diffusers-aligntok') or 'unknown'}."
    )
    return report


def _metric_label(name: str, is_real: bool) -> str:
    return name if is_real else f"{name} (stand-in network: not {name})"


def _metric_type(metric_type: str, is_real: bool) -> str:
    # A stand-in's numbers must never sit on a leaderboard next to real ones: they get their own metric type.
    return metric_type if is_real else f"{metric_type}-standin"


def _eval_result(**kwargs) -> Any:
    from huggingface_hub import EvalResult

    return EvalResult(**{key: value for key, value in kwargs.items() if value is not None})


def _tokenizer_report(matched: MatchedEvaluation, model_name: str, is_component: bool = False) -> EvaluationReport:
    results = matched.evaluation.results
    settings = results["settings"]
    feature_extractor = results.get("feature_extractor") or {}
    fid_is_real = bool(feature_extractor.get("is_real_metric"))
    perceptual = results.get("perceptual") or {}
    lpips_is_real = bool(perceptual.get("is_real_metric")) if perceptual else False
    lines = [
        f"| tokenizer | latent (C x h x w) | {_metric_label('rFID', fid_is_real)} | PSNR (dB) | SSIM | "
        f"{_metric_label('LPIPS', lpips_is_real) if perceptual else 'LPIPS'} | linear probe top-1 | CKNNA |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for index, entry in enumerate(results["tokenizers"]):
        described, metrics = entry.get("tokenizer") or {}, entry.get("metrics") or {}
        this = "**`vae/`** (this pipeline's tokenizer)" if is_component else f"**{model_name}** (this model)"
        name = this if index == matched.entry_index else f"{described.get('name')} (compared)"
        probe = metrics.get("linear_probe") or {}
        latent = "x".join(str(size) for size in metrics.get("latent_shape") or []) or "-"
        lines.append(
            f"| {name} | {latent} | {format_metric(metrics.get('rfid'), 3)} | {format_metric(metrics.get('psnr'), 2)} | "
            f"{format_metric(metrics.get('ssim'), 3)} | {format_metric(metrics.get('lpips'), 3)} | "
            f"{format_metric(probe.get('top1'), 1, 100, '%')} | {format_metric(metrics.get('cknna'), 3)} |"
        )
    height, width = settings["resolution"]
    probe_protocol = results.get("linear_probe_protocol") or {}
    reference_encoder = (results.get("reference_encoder") or {}).get("name")
    protocol = [
        f"Images: {settings.get('num_samples')} of {settings.get('data_description', settings.get('data'))} (split "
        f"`{settings.get('split')}`), {height}x{width} centre crops; reconstructions rounded to 8 bits: "
        f"{settings.get('quantize_reconstructions')}.",
        f"rFID features: `{feature_extractor.get('name')}`"
        f"{'' if fid_is_real else ' (a random stand-in network: these values are NOT FID)'}, reference statistics of "
        "the same images.",
        f"LPIPS: `{perceptual.get('name')}`{'' if lpips_is_real else ' (random VGG trunk: NOT LPIPS)'}."
        if perceptual
        else "LPIPS: not measured.",
        f"Linear probe: {probe_protocol.get('features')}, {probe_protocol.get('classifier')}, "
        f"{probe_protocol.get('split')}. CKNNA: k={settings.get('cknna_topk')} against "
        f"{reference_encoder or 'no reference encoder (skipped)'}.",
    ]
    unmet = [
        f"{key}={settings.get(key)!r} (published: {value!r})"
        for key, value in _PUBLISHED_RFID_SETUP.items()
        if settings.get(key) != value
    ]
    if not fid_is_real:
        unmet.append("rFID from a stand-in network")
    if perceptual and not lpips_is_real:
        unmet.append("LPIPS from a random trunk")
    comparable = not unmet
    statement = (
        "Same images, count and size as the published rFIDs (all 50,000 ImageNet-val images at 256x256), measured with "
        "clean-fid's Inception; agreement with the published evaluators was not measured here."
        if comparable
        else f"**Not comparable with published numbers** ({'; '.join(unmet)}): compare only with runs of this evaluation at "
        "the same settings."
    )
    eval_results = []
    if matched.entry_index is not None:
        metrics = results["tokenizers"][matched.entry_index].get("metrics") or {}
        dataset = {
            "task_type": "image-to-image",
            "task_name": "Image reconstruction",
            "dataset_type": settings["data"] if looks_like_hub_id(settings.get("data")) else str(settings.get("data")),
            "dataset_name": str(settings.get("data_description") or settings.get("data")),
            "dataset_split": settings.get("split"),
            "dataset_args": {"resolution": f"{height}x{width}", "num_samples": settings.get("num_samples")},
        }
        values = [
            ("rfid", "rFID", metrics.get("rfid"), fid_is_real),
            ("psnr", "PSNR (dB)", metrics.get("psnr"), True),
            ("ssim", "SSIM", metrics.get("ssim"), True),
            ("lpips", "LPIPS", metrics.get("lpips"), lpips_is_real),
            (
                "linear-probe-top1",
                "Linear probe top-1 accuracy (fraction)",
                (metrics.get("linear_probe") or {}).get("top1"),
                True,
            ),
            ("cknna", "CKNNA", metrics.get("cknna"), True),
        ]
        for metric_type, metric_name, value, is_real in values:
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                eval_results.append(
                    _eval_result(
                        **dataset,
                        metric_type=_metric_type(metric_type, is_real),
                        metric_name=("Tokenizer (vae/) " if is_component else "")
                        + _metric_label(metric_name, is_real),
                        metric_value=value,
                        verified=False,
                    )
                )
    warnings = list(results.get("warnings") or [])
    entry = results["tokenizers"][matched.entry_index] if matched.entry_index is not None else {}
    if (entry.get("tokenizer") or {}).get("random_weights"):
        warnings.append("The evaluated tokenizer had random weights.")
    return EvaluationReport(
        title="Reconstruction and latent quality",
        table="\n".join(lines),
        protocol=protocol,
        comparable_with_published=comparable,
        statement=statement,
        warnings=warnings,
        eval_results=eval_results,
        uses_standins=not fid_is_real or bool(perceptual and not lpips_is_real),
    )


def _reference_description(reference: dict[str, Any]) -> str:
    if reference.get("kind") == "npz":
        source = (
            "its stored mu/sigma"
            if reference.get("statistics_source") == "mu_sigma"
            else f"statistics of its {reference.get('statistics_num_images')} images"
        )
        return f"`{Path(str(reference.get('path'))).name}` ({source})"
    if reference.get("kind") == "image_folder":
        return (
            f"image folder `{Path(str(reference.get('path'))).name}` ({reference.get('num_images')} images, "
            f"{reference.get('preprocessing')})"
        )
    resolution = reference.get("resolution") or ["?", "?"]
    return (
        f"{reference.get('data_description') or reference.get('source')} (split `{reference.get('split')}`, "
        f"{reference.get('num_samples')} images, {resolution[0]}x{resolution[1]} centre crops)"
    )


def _generation_report(matched: MatchedEvaluation, model_name: str) -> EvaluationReport:
    results = matched.evaluation.results
    settings = results["settings"]
    feature_extractor = results.get("feature_extractor") or {}
    fid_is_real = bool(feature_extractor.get("is_real_metric"))
    is_is_real = bool((feature_extractor.get("inception_score") or {}).get("is_real_metric", fid_is_real))
    lines = [
        f"| CFG scale | guidance interval | {_metric_label('gFID', fid_is_real)} | {_metric_label('IS', is_is_real)} | "
        "precision | recall | best |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in results["rows"]:
        score = row.get("inception_score") or {}
        interval = row.get("guidance_interval") or settings.get("guidance_interval") or [0.0, 1.0]
        lines.append(
            f"| {row['guidance_scale']:g} | [{interval[0]:g}, {interval[1]:g}] | {format_metric(row.get('gfid'), 2)} | "
            f"{format_metric(score.get('mean'), 2)} ± {format_metric(score.get('std'), 2)} | {format_metric(row.get('precision'), 3)} | "
            f"{format_metric(row.get('recall'), 3)} | {'✓' if row.get('best') else ''} |"
        )
    protocol_block = settings.get("protocol") or {}
    plan = settings.get("sample_plan") or {}
    shift = "dynamic" if settings.get("dynamic_shifting") else settings.get("shift_effective")
    image_size = settings.get("image_size") or ["?", "?"]
    reference = results.get("reference") or {}
    protocol = [
        f"Samples: {settings.get('num_samples')} per scale, {image_size[0]}x{image_size[1]}, "
        f"`{settings.get('label_sampling')}` labels over {plan.get('num_classes')} classes (seed {settings.get('seed')}).",
        f"Sampling: {settings.get('sampler')} ({settings.get('scheduler_class')}), {settings.get('num_inference_steps')} "
        f"steps, shift {shift} (LightningDiT timestep_shift {settings.get('timestep_shift_lightningdit')}), CFG on "
        f"{settings.get('guidance_channels_effective')} latent channels.",
        f"Features: `{feature_extractor.get('name')}`, inception mode `{settings.get('inception_mode_effective')}`"
        f"{'' if fid_is_real else ' (a random stand-in network: these values are NOT FID / IS)'}.",
        f"Reference: {_reference_description(reference)}.",
    ]
    comparable = bool(protocol_block.get("adm_comparable"))
    statement = protocol_block.get("statement") or ""
    if not comparable:
        unmet = protocol_block.get("unmet") or ["no protocol record in the JSON"]
        statement = (
            f"**Not comparable with published numbers**: not the ADM-comparable combination (differs in: "
            f"{'; '.join(unmet)}); compare only with runs of this evaluation at the same settings."
        )
    dataset = {
        "task_type": "unconditional-image-generation",
        "task_name": "Class-conditional image generation",
        "dataset_type": reference.get("source")
        if looks_like_hub_id(reference.get("source"))
        else str(reference.get("file_name") or Path(str(reference.get("path") or reference.get("source"))).name),
        "dataset_name": _reference_description(reference).replace("`", ""),
        "dataset_split": reference.get("split"),
    }
    eval_results = []
    for row in results["rows"]:
        arguments = {
            "guidance_scale": row["guidance_scale"],
            "guidance_interval": list(row.get("guidance_interval") or []),
            "num_inference_steps": settings.get("num_inference_steps"),
            "sampler": settings.get("sampler"),
            "num_samples": row.get("num_samples"),
            "label_sampling": settings.get("label_sampling"),
            "inception_mode": settings.get("inception_mode_effective"),
            "adm_comparable": comparable,
        }
        values = [
            ("gfid", "gFID", row.get("gfid"), fid_is_real),
            ("inception-score", "Inception Score", (row.get("inception_score") or {}).get("mean"), is_is_real),
            ("precision", "Precision", row.get("precision"), fid_is_real),
            ("recall", "Recall", row.get("recall"), fid_is_real),
        ]
        eval_results += _guidance_scale_eval_results(values, row["guidance_scale"], dataset, arguments)
    return EvaluationReport(
        title="Class-conditional generation",
        table="\n".join(lines),
        protocol=protocol,
        comparable_with_published=comparable,
        statement=statement,
        warnings=list(results.get("warnings") or []),
        eval_results=eval_results,
        uses_standins=not fid_is_real or not is_is_real,
    )


def _text_to_image_report(matched: MatchedEvaluation, model_name: str) -> EvaluationReport:
    results = matched.evaluation.results
    settings = results["settings"]
    feature_extractor = results.get("feature_extractor") or {}
    fid_is_real = bool(feature_extractor.get("is_real_metric"))
    clip = results.get("clip") or {}
    clip_is_real = bool(clip.get("is_real_metric"))
    lines = [
        f"| CFG scale | {_metric_label('gFID', fid_is_real)} | {_metric_label('CLIP score', clip_is_real)} | best |",
        "|---|---|---|---|",
    ]
    for row in results["rows"]:
        lines.append(
            f"| {row['guidance_scale']:g} | {format_metric(row.get('gfid'), 2)} | {format_metric(row.get('clip_score'), 2)} ± "
            f"{format_metric(row.get('clip_score_std'), 2)} | {'✓' if row.get('best') else ''} |"
        )
    prompts = results.get("prompts") or {}
    reference = results.get("reference") or {}
    first_row = results["rows"][0] if results["rows"] else {}
    image_size = settings.get("image_size") or ["?", "?"]
    protocol = [
        (
            f"Prompts: `{Path(str(prompts.get('path'))).name}` ({prompts.get('num_prompts')} prompts, sha256 "
            f"{str(prompts.get('sha256'))[:12]}...), {settings.get('images_per_prompt')} image(s) per prompt."
            if prompts
            else "Prompts: none (GenEval export only)."
        ),
        f"Sampling: {image_size[0]}x{image_size[1]}, {settings.get('num_inference_steps')} steps, guidance through "
        f"`{first_row.get('cfg_argument')}` with negative prompt {settings.get('negative_prompt')!r}, "
        f"{settings.get('dtype_effective')}.",
        (
            f"gFID: `{feature_extractor.get('name')}` features{'' if fid_is_real else ' (a random stand-in network: NOT FID)'} "
            f"against {_reference_description(reference)}."
            if feature_extractor
            else "gFID: not measured."
        ),
        (
            f"CLIP score: `{display_path(clip.get('name'))}`{'' if clip_is_real else ' (a random stand-in model: NOT a CLIP score)'}, "
            f"{clip.get('formula')}."
            if clip
            else "CLIP score: not measured."
        ),
    ]
    if results.get("geneval"):
        protocol.append("GenEval: prompts exported in GenEval's layout, not scored here (GenEval needs mmdetection).")
    statement = (
        "**Not comparable with published numbers**: the paper does not specify every detail of its COCO-6K "
        "protocol; compare only with runs of this evaluation on the same prompt file (same sha256), reference "
        "images, steps and guidance."
    )
    dataset_name = " vs ".join(
        part
        for part in (
            f"{Path(str(prompts.get('path'))).name} ({prompts.get('num_prompts')} prompts)" if prompts else None,
            f"{Path(str(reference.get('path'))).name} ({reference.get('num_images')} images)" if reference else None,
        )
        if part
    )
    dataset = {
        "task_type": "text-to-image",
        "task_name": "Text-to-image generation",
        "dataset_type": Path(str(reference.get("path") or prompts.get("path") or "prompts")).name,
        "dataset_name": dataset_name or "prompts",
    }
    eval_results = []
    for row in results["rows"]:
        arguments = {
            "guidance_scale": row["guidance_scale"],
            "cfg_argument": row.get("cfg_argument"),
            "num_inference_steps": settings.get("num_inference_steps"),
            "num_samples": row.get("num_samples"),
            "image_size": f"{image_size[0]}x{image_size[1]}",
        }
        values = [
            ("gfid", "gFID", row.get("gfid"), fid_is_real),
            ("clip-score", "CLIP score", row.get("clip_score"), clip_is_real),
        ]
        eval_results += _guidance_scale_eval_results(values, row["guidance_scale"], dataset, arguments)
    return EvaluationReport(
        title="Text-to-image generation",
        table="\n".join(lines),
        protocol=protocol,
        comparable_with_published=False,
        statement=statement,
        warnings=list(results.get("warnings") or []),
        eval_results=eval_results,
        uses_standins=bool(feature_extractor and not fid_is_real) or bool(clip and not clip_is_real),
    )


def _guidance_scale_eval_results(
    values: list[tuple[str, str, Any, bool]], guidance_scale: float, dataset: dict[str, Any], arguments: dict[str, Any]
) -> list:
    """The `EvalResult`s of one guidance scale's row: one per finite `(metric_type, name, value, is_real)`."""
    return [
        _eval_result(
            **dataset,
            metric_type=_metric_type(metric_type, is_real),
            metric_name=f"{_metric_label(metric_name, is_real)} (CFG {guidance_scale:g})",
            metric_config=f"cfg-{guidance_scale:g}",
            metric_args=arguments,
            metric_value=value,
            verified=False,
        )
        for metric_type, metric_name, value, is_real in values
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ]
