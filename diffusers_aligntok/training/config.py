"""Typed, strictly validated configuration: the schema every recipe shares (`OptimizerConfig`, `TrainingConfig`, which
`dit_config.py` and `t2i_config.py` extend), the strict loader, and the config of `training/train_stage.py`.

A config file is YAML with a `common` section (every field below) and a `stages` section whose `"1"`, `"2"` and `"3"`
entries override `common` for that stage, with the same schema. Unknown keys and wrong types fail at load time with
the key's full path, before any model is built.
"""

import copy
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class ModelConfig:
    # A name from `diffusers_aligntok.PRESETS`; the architecture of the tokenizer.
    preset: str = "aligntok-dinov2-large-f16d32"
    # Pretrained weights of the foundation encoder that stage 1 starts from (hub id or local directory). `None` keeps
    # the preset's random encoder, which only makes sense for tests.
    foundation_encoder: str | None = "facebook/dinov2-large"
    # Any other `AlignedAutoencoderKL` keyword argument, applied over the preset.
    overrides: dict[str, Any] = field(default_factory=dict)
    # Stages 2 and 3 start from the previous stage's model directory; `None` means `<output_dir>/stage<k-1>/model`.
    init_from: str | None = None


@dataclass
class DataConfig:
    # See `diffusers_aligntok.data.ImageDatasetConfig`.
    source: str = "builtin:shapes"
    split: str = "train"
    resolution: int = 256
    center_crop: bool = True
    random_flip: bool = True
    image_column: str | None = None
    label_column: str | None = None
    max_samples: int | None = None
    num_builtin_samples: int = 2048
    # Images held out for the reconstruction grid and PSNR at each validation (center crop, no flip).
    num_validation_images: int = 8
    dataloader_num_workers: int = 4


@dataclass
class DiscriminatorConfig:
    base_channels: int = 64
    num_layers: int = 3
    norm: str = "group"


@dataclass
class LossConfig:
    """The generator loss `L1 + perceptual + adaptive GAN (+ w_sp * L_sp in stage 2)`, every term a mean.

    Reductions (they fix what each weight means): L1 is the mean absolute error over every pixel, channel and image;
    the perceptual term is the batch mean of LPIPS (itself a spatial mean); L_sp is the mean over every latent element
    (L2) or over latent positions (cosine). LDM / VA-VAE's KL autoencoder loss instead *sums* L1 + LPIPS over the
    pixels (x 3 * 256 * 256 = 196,608 at 256 px) before its batch mean: that scales L1, LPIPS and the adaptive GAN term
    alike (so their ratios and, through Adam, the training are unchanged), but it would shrink a mean-reduced
    `w_sp * L_sp` by that factor. `w_sp = 1` here is therefore relative to a per-pixel mean L_rec.
    """

    l1_weight: float = 1.0
    # "lpips-vgg" (real LPIPS), "lpips-vgg-random-trunk" (offline stand-in, not a metric) or None (term off).
    perceptual_network: str | None = "lpips-vgg"
    perceptual_weight: float = 1.0
    # Local torchvision VGG16 state dict for offline machines; None downloads it on first use.
    perceptual_trunk_weights_path: str | None = None
    gan_weight: float = 0.5
    # Counted from the stage's own step 0.
    gan_start_step: int = 0
    adaptive_weight_max: float = 1.0e4
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    # Where stages 2 and 3 get their discriminator: "previous_stage" (its weights and optimiser state, as continued
    # LDM / VA-VAE training does), "fresh" (random), or a saved `<run>/stage<k>/discriminator` directory. Stage 1
    # always starts fresh unless a directory is given.
    discriminator_init_from: str = "previous_stage"
    # w_sp: weight of the semantic preservation loss (stage 2 only).
    semantic_preservation_weight: float = 0.0
    semantic_preservation_kind: str = "l2"


@dataclass
class OptimizerConfig:
    """AdamW, its learning-rate schedule and gradient clipping, shared by every recipe (each recipe's config extends
    it with its own defaults and fields). `lr_scheduler` is a name of diffusers' `get_scheduler`; `max_grad_norm` is
    the clipping threshold of the gradient norm."""

    learning_rate: float = 1.0e-4
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    # torch's AdamW default; set only where a recipe's reference run used another.
    adam_epsilon: float = 1.0e-8
    weight_decay: float = 0.0
    lr_scheduler: str = "constant"
    lr_warmup_steps: int = 0
    max_grad_norm: float = 1.0
    # torch's fused AdamW: one kernel for every parameter per step (CUDA and CPU) instead of a loop over tensors; the
    # update is AdamW's, equal to the looped one up to float rounding (`benchmarks/optimizer_speed.py` times both).
    # False uses torch's multi-tensor (foreach) AdamW, e.g. for parameters on a device the fused kernel lacks.
    fused_adamw: bool = True


@dataclass
class TrainingConfig:
    """What `trainer.Trainer` reads: batch and step counts, precision, EMA, cadences, checkpoints and trackers, shared
    by every recipe (each recipe's config extends it with its own defaults and fields)."""

    # Per-device batch size.
    train_batch_size: int = 8
    gradient_accumulation_steps: int = 1
    max_train_steps: int = 1000
    mixed_precision: str = "bf16"
    gradient_checkpointing: bool = False
    compile: bool = False
    seed: int = 0
    # Decay of the EMA of the trained weights; the saved model holds the EMA weights. None disables EMA.
    ema_decay: float | None = None
    # Every cadence also fires at the final step (`Trainer.due`).
    checkpointing_steps: int = 1000
    checkpoints_total_limit: int | None = 3
    validation_steps: int = 1000
    log_every_steps: int = 10
    report_to: str = "tensorboard"


@dataclass
class TokenizerOptimizerConfig(OptimizerConfig):
    """The shared optimiser fields, plus the stage-2 encoder's and the GAN discriminator's learning rates."""

    lr_scheduler: str = "constant_with_warmup"
    # Encoder learning rate in stage 2, where a pretrained ViT is fine-tuned; None uses `learning_rate`.
    encoder_learning_rate: float | None = None
    discriminator_learning_rate: float = 1.0e-4


@dataclass
class TokenizerTrainingConfig(TrainingConfig):
    """The shared training fields, plus the optional LoRA of the stage-2 encoder."""

    # LoRA rank on the encoder's attention projections instead of full fine-tuning (stage 2); None = full.
    encoder_lora_rank: int | None = None


@dataclass
class StageConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optimizer: TokenizerOptimizerConfig = field(default_factory=TokenizerOptimizerConfig)
    training: TokenizerTrainingConfig = field(default_factory=TokenizerTrainingConfig)


STAGES = (1, 2, 3)


class ConfigError(ValueError):
    """A config file with an unknown key, a wrong type or an invalid value."""


def load_stage_config(path: str | Path, stage: int, overrides: dict[str, Any] | None = None) -> StageConfig:
    """Reads the YAML file at `path` and returns the fully validated config of `stage` (1, 2 or 3).

    `overrides` (`{"loss.gan_weight": 0.0}`, keys relative to the stage config) replace single keys of the merged
    `common` + `stages.<stage>` config, in order, before validation; `stage_overrides` picks them from a command line.
    """
    raw = read_yaml_config(path)
    if stage not in STAGES:
        raise ConfigError(f"stage must be one of {STAGES}, got {stage!r}.")
    unknown_sections = set(raw) - {"common", "stages"}
    if unknown_sections:
        raise ConfigError(
            f"{path}: unknown top-level keys {sorted(unknown_sections)}; expected 'common' and 'stages'."
        )
    stages = raw.get("stages") or {}
    if not isinstance(stages, dict):
        raise ConfigError(f"{path}: 'stages' must be a mapping from stage number to overrides.")
    bad_stage_keys = [key for key in stages if str(key) not in {str(s) for s in STAGES}]
    if bad_stage_keys:
        raise ConfigError(f"{path}: unknown stages {bad_stage_keys}; use 1, 2 and 3.")
    stage_section = next((value for key, value in stages.items() if str(key) == str(stage)), None) or {}
    merged = copy.deepcopy(_deep_merge(raw.get("common") or {}, stage_section))
    apply_dotted_overrides(merged, overrides or {}, f"{Path(path).name}:stage{stage}")
    config = config_from_dict(StageConfig, merged, f"{Path(path).name}:stage{stage}")
    _check_values(config, stage, f"{Path(path).name}:stage{stage}")
    return config


def stage_overrides(overrides: dict[str, Any], stage: int, stages_run: tuple[int, ...]) -> dict[str, Any]:
    """The overrides that apply to `stage`, relative to its config: every key without a `stages.` prefix (all stages),
    then the `stages.<stage>.`-prefixed ones with the prefix removed (so one stage's value beats the all-stage one).

    A `stages.<k>` key for a stage that is not one of 1-3, or not among `stages_run`, is refused rather than ignored.
    """
    everywhere, this_stage = {}, {}
    for key, value in overrides.items():
        if not key.startswith("stages."):
            everywhere[key] = value
            continue
        _, number, *rest = key.split(".")
        if number not in {str(s) for s in STAGES} or not rest:
            raise ConfigError(
                f"{key}: a per-stage key is stages.<1, 2 or 3>.<key relative to the stage config>, e.g. "
                "stages.2.loss.semantic_preservation_weight."
            )
        if int(number) not in stages_run:
            raise ConfigError(f"{key} sets a key of stage {number}, but this command runs stages {list(stages_run)}.")
        if int(number) == stage:
            this_stage[".".join(rest)] = value
    return {**everywhere, **this_stage}


def check_stage_sequence(configs: dict[int, StageConfig], where: str) -> None:
    """Checks that consecutive stages run in one command fit together (`train_stage.py --stage all`).

    One process runs them all, so they share accelerate's process-wide state (mixed precision); and a stage that
    carries the previous stage's discriminator needs the previous stage to train one with the same architecture.
    """
    stages = sorted(configs)
    precisions = {stage: configs[stage].training.mixed_precision for stage in stages}
    if len(set(precisions.values())) > 1:
        raise ConfigError(
            f"{where}: training.mixed_precision differs between stages ({precisions}), but the stages of one command "
            "share one accelerate state; use one value in `common`, or run the stages as separate commands."
        )
    for stage in stages:
        loss, previous = configs[stage].loss, configs.get(stage - 1)
        if previous is None or loss.gan_weight == 0 or loss.discriminator_init_from != "previous_stage":
            continue
        if previous.loss.gan_weight == 0:
            raise ConfigError(
                f"{where}: stage {stage} carries the stage-{stage - 1} discriminator on (loss.discriminator_init_from: "
                f"previous_stage), but stage {stage - 1} trains none (loss.gan_weight 0). Set "
                f"stages.{stage}.loss.discriminator_init_from to 'fresh', or give stage {stage - 1} a GAN."
            )
        if previous.loss.discriminator != loss.discriminator:
            raise ConfigError(
                f"{where}: stage {stage} carries the stage-{stage - 1} discriminator on, but loss.discriminator "
                f"differs ({previous.loss.discriminator} vs {loss.discriminator}); keep it in `common`, or set "
                f"stages.{stage}.loss.discriminator_init_from to 'fresh'."
            )


def config_to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def read_yaml_config(path: str | Path) -> dict[str, Any]:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Config file {path} does not exist; see training/configs/ for examples.")
    with open(path, encoding="utf-8") as handle:
        raw = yaml.safe_load(handle) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}.")
    return raw


def set_dotted_key(mapping: dict[str, Any], dotted_key: str, value: Any, where: str = "") -> None:
    """`mapping["a"]["b"]["c"] = value` for `"a.b.c"`, creating missing levels; the strict loader then checks the key.

    A digit string addresses an existing integer key (YAML reads `stages: {1: ...}` with int keys).
    """
    prefix = f"{where}: " if where else ""
    names = dotted_key.split(".")
    if not all(names):
        raise ConfigError(f"{prefix}{dotted_key!r} is not a dotted key such as 'training.seed'.")
    node = mapping
    for depth, name in enumerate(names):
        key = int(name) if name.isdigit() and int(name) in node else name
        if depth == len(names) - 1:
            node[key] = value
            return
        if node.get(key) is None:
            node[key] = {}
        elif not isinstance(node[key], dict):
            parent = ".".join(names[: depth + 1])
            raise ConfigError(f"{prefix}cannot set {dotted_key}: {parent} is {node[key]!r}, not a mapping.")
        node = node[key]


def apply_dotted_overrides(mapping: dict[str, Any], overrides: dict[str, Any], where: str = "") -> dict[str, Any]:
    """`set_dotted_key` for each override, in order; returns `mapping` (changed in place)."""
    for dotted_key, value in overrides.items():
        set_dotted_key(mapping, dotted_key, value, where)
    return mapping


def _deep_merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and key != "overrides":
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def config_from_dict(cls: type, values: Any, where: str) -> Any:
    """Builds dataclass `cls` from a mapping; unknown keys and wrong types raise `ConfigError` naming `where.key`."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping for {cls.__name__}, got {values!r}.")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(values) - set(fields)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; valid keys are {sorted(fields)}.")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in values.items():
        kwargs[name] = _coerce(hints[name], value, f"{where}.{name}")
    return cls(**kwargs)


def _coerce(annotation: Any, value: Any, where: str) -> Any:
    if dataclasses.is_dataclass(annotation):
        return config_from_dict(annotation, value, where)
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(option, value, where)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0] if errors else f"{where}: unexpected value {value!r}.")
    if annotation is Any:
        return value
    expected = origin or annotation
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)  # YAML reads `1` as int; 1.0e-4 style needs no help
    if expected is float and isinstance(value, str):
        try:
            return float(value)  # PyYAML reads `1e-4` (no dot) as a string
        except ValueError:
            pass
    if expected is int and isinstance(value, bool) or not isinstance(value, expected):
        raise ConfigError(f"{where}: expected {getattr(expected, '__name__', expected)}, got {value!r}.")
    return value


def _check_values(config: StageConfig, stage: int, where: str) -> None:
    """Range checks of every weight, rate and size, each naming its key; run before any model is built."""
    model, data, loss = config.model, config.data, config.loss
    optimizer, training = config.optimizer, config.training
    from diffusers.optimization import SchedulerType  # lazy: keeps importing the config module cheap

    from ..losses import PERCEPTUAL_NETWORKS, SEMANTIC_PRESERVATION_KINDS
    from .discriminator_handoff import DISCRIMINATOR_INIT_CHOICES

    schedulers = [scheduler.value for scheduler in SchedulerType]
    checks = [
        (bool(model.preset), "model.preset", "must name a preset (see diffusers_aligntok.PRESETS)"),
        (data.resolution > 0, "data.resolution", "must be positive"),
        (data.max_samples is None or data.max_samples > 0, "data.max_samples", "must be positive or null"),
        (data.num_builtin_samples > 0, "data.num_builtin_samples", "must be positive"),
        (data.num_validation_images > 0, "data.num_validation_images", "must be positive"),
        (data.dataloader_num_workers >= 0, "data.dataloader_num_workers", "must be 0 or more"),
        (loss.l1_weight >= 0, "loss.l1_weight", "must be 0 or more"),
        (loss.perceptual_weight >= 0, "loss.perceptual_weight", "must be 0 or more"),
        (
            loss.perceptual_network is None or loss.perceptual_network in PERCEPTUAL_NETWORKS,
            "loss.perceptual_network",
            f"must be one of {list(PERCEPTUAL_NETWORKS)} or null",
        ),
        (
            loss.perceptual_weight == 0 or loss.perceptual_network is not None,
            "loss.perceptual_weight",
            "must be 0 when loss.perceptual_network is null (the term would be off while the config says it is on)",
        ),
        (
            loss.l1_weight + loss.perceptual_weight > 0,
            "loss.l1_weight",
            "and loss.perceptual_weight cannot both be 0: nothing would teach the decoder to reconstruct",
        ),
        (loss.gan_weight >= 0, "loss.gan_weight", "must be 0 or more"),
        (loss.gan_start_step >= 0, "loss.gan_start_step", "must be 0 or more"),
        (loss.adaptive_weight_max > 0, "loss.adaptive_weight_max", "must be positive"),
        (loss.discriminator.base_channels > 0, "loss.discriminator.base_channels", "must be positive"),
        (loss.discriminator.num_layers > 0, "loss.discriminator.num_layers", "must be positive"),
        (
            loss.discriminator.norm in ("group", "batch", "none"),
            "loss.discriminator.norm",
            "must be 'group', 'batch' or 'none'",
        ),
        (
            loss.discriminator_init_from in DISCRIMINATOR_INIT_CHOICES or Path(loss.discriminator_init_from).is_dir(),
            "loss.discriminator_init_from",
            f"must be one of {list(DISCRIMINATOR_INIT_CHOICES)} or an existing directory",
        ),
        (loss.semantic_preservation_weight >= 0, "loss.semantic_preservation_weight", "must be 0 or more"),
        (
            stage == 2 or loss.semantic_preservation_weight == 0,
            "loss.semantic_preservation_weight",
            "must be 0 outside stage 2 (only stage 2 has the frozen stage-1 target); set it under stages.2",
        ),
        (
            loss.semantic_preservation_kind in SEMANTIC_PRESERVATION_KINDS,
            "loss.semantic_preservation_kind",
            f"must be one of {list(SEMANTIC_PRESERVATION_KINDS)}",
        ),
        (optimizer.learning_rate > 0, "optimizer.learning_rate", "must be positive"),
        (
            optimizer.encoder_learning_rate is None or optimizer.encoder_learning_rate > 0,
            "optimizer.encoder_learning_rate",
            "must be positive or null",
        ),
        (optimizer.discriminator_learning_rate > 0, "optimizer.discriminator_learning_rate", "must be positive"),
        (0 <= optimizer.adam_beta1 < 1, "optimizer.adam_beta1", "must be in [0, 1)"),
        (0 <= optimizer.adam_beta2 < 1, "optimizer.adam_beta2", "must be in [0, 1)"),
        (optimizer.adam_epsilon > 0, "optimizer.adam_epsilon", "must be positive"),
        (optimizer.weight_decay >= 0, "optimizer.weight_decay", "must be 0 or more"),
        (optimizer.lr_scheduler in schedulers, "optimizer.lr_scheduler", f"must be one of {schedulers}"),
        (optimizer.lr_warmup_steps >= 0, "optimizer.lr_warmup_steps", "must be 0 or more"),
        (optimizer.max_grad_norm >= 0, "optimizer.max_grad_norm", "must be 0 (no clipping) or more"),
        (training.train_batch_size > 0, "training.train_batch_size", "must be positive"),
        (training.gradient_accumulation_steps > 0, "training.gradient_accumulation_steps", "must be positive"),
        (training.max_train_steps > 0, "training.max_train_steps", "must be positive"),
        (
            training.mixed_precision in ("no", "bf16", "fp16"),
            "training.mixed_precision",
            "must be 'no', 'bf16' or 'fp16'",
        ),
        (training.ema_decay is None or 0 < training.ema_decay < 1, "training.ema_decay", "must be in (0, 1) or null"),
        (
            training.encoder_lora_rank is None or training.encoder_lora_rank > 0,
            "training.encoder_lora_rank",
            "must be positive or null",
        ),
        (training.checkpointing_steps > 0, "training.checkpointing_steps", "must be positive"),
        (
            training.checkpoints_total_limit is None or training.checkpoints_total_limit > 0,
            "training.checkpoints_total_limit",
            "must be positive or null (keep all)",
        ),
        (training.validation_steps > 0, "training.validation_steps", "must be positive"),
        (training.log_every_steps > 0, "training.log_every_steps", "must be positive"),
    ]
    for ok, key, requirement in checks:
        if not ok:
            raise ConfigError(f"{where}: {key} {requirement}, got {_value_at(config, key)!r}.")
    if training.mixed_precision == "fp16":
        # DESIGN: never train the tokenizer or the discriminator in pure fp16 (GAN + LPIPS overflow).
        raise ConfigError(
            f"{where}: training.mixed_precision 'fp16' is not supported for tokenizer training; use 'bf16'."
        )


def _value_at(config: Any, dotted_key: str) -> Any:
    for name in dotted_key.split("."):
        config = getattr(config, name)
    return config
