"""What is pushed: a model or pipeline directory written by `save_pretrained`, checked before anything uploads.

[`inspect_model_directory`] tells which of our five kinds a directory holds (from `config.json`'s `_class_name` or
`model_index.json`) and refuses one without a config or without weights. [`stage_upload_folder`] writes the folder
that is uploaded: the model's files (weights hard-linked where the file system allows, so a multi-GB model is not
copied) plus a `model_index.json` whose entries name our library the way `DiffusionPipeline.from_pretrained` resolves
it. [`safetensors_weights_digest`] and [`count_safetensors_parameters`] read safetensors files without torch.
"""

import json
import os
import shutil
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class HubPushError(ValueError):
    """A model directory, evaluation JSON, repository id or login that cannot be pushed; the message says the fix."""


# `config.json` `_class_name` -> (kind, class the fresh-process load check calls `from_pretrained` on).
MODEL_CLASSES: dict[str, tuple[str, str]] = {
    "AlignedAutoencoderKL": ("tokenizer", "diffusers_aligntok.AlignedAutoencoderKL"),
    "LightningDiTTransformer2DModel": (
        "class_conditional_transformer",
        "diffusers_aligntok.LightningDiTTransformer2DModel",
    ),
    "FluxTransformer2DModel": ("text_to_image_transformer", "diffusers.FluxTransformer2DModel"),
}
# `model_index.json` `_class_name` -> kind. Pipelines load with `DiffusionPipeline.from_pretrained`.
PIPELINE_CLASSES: dict[str, str] = {
    "AlignTokDiTPipeline": "class_conditional_pipeline",
    "AlignTokFluxPipeline": "text_to_image_pipeline",
    "FluxPipeline": "text_to_image_pipeline",
}
KINDS = (
    "tokenizer",
    "class_conditional_transformer",
    "class_conditional_pipeline",
    "text_to_image_transformer",
    "text_to_image_pipeline",
)
# Components every supported pipeline needs (the others may be null in model_index.json, e.g. FLUX's image encoder).
_REQUIRED_PIPELINE_COMPONENTS = ("transformer", "vae", "scheduler")
# Files that make a component directory loadable without weights (schedulers, tokenizers, processors).
_WEIGHTLESS_COMPONENT_FILES = (
    "scheduler_config.json",
    "tokenizer_config.json",
    "tokenizer.json",
    "preprocessor_config.json",
    "spiece.model",
    "vocab.json",
)
_WEIGHT_SUFFIXES = (".safetensors", ".bin")
_LIBRARY = "diffusers_aligntok"


@dataclass(frozen=True)
class ModelDirectory:
    """A checked model or pipeline directory.

    Args:
        path (`Path`): The directory, resolved.
        kind (`str`): One of [`KINDS`].
        class_name (`str`): `config.json`'s or `model_index.json`'s `_class_name`.
        config (`dict`): `config.json` (a model) or `model_index.json` (a pipeline).
        component_configs (`dict[str, dict]`): For a pipeline, each model component's `config.json` (`vae`,
            `transformer`, text encoders) and the scheduler's `scheduler_config.json`; empty for a model.
    """

    path: Path
    kind: str
    class_name: str
    config: dict[str, Any]
    component_configs: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def is_pipeline(self) -> bool:
        return self.kind.endswith("_pipeline")

    @property
    def family(self) -> str:
        """`"tokenizer"`, `"class_conditional"` or `"text_to_image"`: which card template renders it."""
        return "tokenizer" if self.kind == "tokenizer" else self.kind.rsplit("_", 1)[0]

    @property
    def load_target(self) -> str:
        """What the fresh-process load check calls `from_pretrained` on, as `module.Class`."""
        return "diffusers.DiffusionPipeline" if self.is_pipeline else MODEL_CLASSES[self.class_name][1]

    @property
    def tokenizer_dir(self) -> Path | None:
        """The tokenizer's directory: the model itself, a pipeline's `vae/`, or None (a transformer alone)."""
        if self.kind == "tokenizer":
            return self.path
        return self.path / "vae" if self.is_pipeline else None

    @property
    def tokenizer_config(self) -> dict[str, Any] | None:
        if self.kind == "tokenizer":
            return self.config
        return self.component_configs.get("vae")

    @property
    def transformer_config(self) -> dict[str, Any] | None:
        if self.kind == "tokenizer":
            return None
        return self.component_configs.get("transformer") if self.is_pipeline else self.config

    @property
    def transformer_dir(self) -> Path | None:
        if self.kind == "tokenizer":
            return None
        return self.path / "transformer" if self.is_pipeline else self.path


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise HubPushError(
            f"{path} ({what}) cannot be read as JSON: {error}. Re-export the model with save_pretrained."
        ) from None
    if not isinstance(value, dict):
        raise HubPushError(f"{path} ({what}) holds a {type(value).__name__}, not a JSON object; re-export the model.")
    return value


def weight_files(directory: Path) -> list[Path]:
    """The weight files of a `save_pretrained` directory (top level): safetensors/bin files, shards included.

    Raises `HubPushError` if a shard index (`*.index.json`) names a shard that is missing.
    """
    files = sorted(path for path in directory.iterdir() if path.is_file() and path.name.endswith(_WEIGHT_SUFFIXES))
    for index_path in sorted(directory.glob("*.index.json")):
        weight_map = _read_json(index_path, "shard index").get("weight_map", {})
        missing = sorted({shard for shard in weight_map.values() if not (directory / shard).is_file()})
        if missing:
            raise HubPushError(
                f"{index_path} lists weight shards that are missing: {missing}. The save was interrupted or the "
                "folder was copied partially; copy the missing shards or re-export the model with save_pretrained."
            )
    return files


def _check_model_files(directory: Path, what: str) -> None:
    if not weight_files(directory):
        raise HubPushError(
            f"{directory} ({what}) has config.json but no weights (diffusion_pytorch_model.safetensors, "
            "model.safetensors or their shards): the save was interrupted or only the config was copied. Point to a "
            "complete save_pretrained directory, or re-export the model."
        )


def inspect_model_directory(model_dir: str | os.PathLike) -> ModelDirectory:
    """Checks `model_dir` and tells what it holds; raises `HubPushError` naming the problem and its fix.

    A model directory has `config.json` with `_class_name` `AlignedAutoencoderKL`, `LightningDiTTransformer2DModel` or
    `FluxTransformer2DModel`, and weights. A pipeline directory has `model_index.json` (`AlignTokDiTPipeline`,
    `AlignTokFluxPipeline` or `FluxPipeline`) and, for every component it names, a sub-folder with that component's
    config (and weights, for models).
    """
    path = Path(model_dir).expanduser()
    if not path.is_dir():
        raise HubPushError(
            f"{model_dir} is not a directory; pass the folder save_pretrained wrote (e.g. runs/x/stage3/model)."
        )
    path = path.resolve()
    if path.name.endswith(".incomplete"):
        raise HubPushError(
            f"{path} is an unfinished save (training writes to *.incomplete and renames it when complete); push "
            f"{path.with_name(path.name[: -len('.incomplete')])} once it exists."
        )
    if (path / "model_index.json").is_file():
        return _inspect_pipeline(path)
    if (path / "config.json").is_file():
        config = _read_json(path / "config.json", "model config")
        class_name = config.get("_class_name")
        if class_name not in MODEL_CLASSES:
            raise HubPushError(
                f"{path}/config.json is a {class_name!r} model; aligntok-push pushes {sorted(MODEL_CLASSES)} models "
                f"and {sorted(PIPELINE_CLASSES)} pipelines. Other models: use their own push_to_hub."
            )
        _check_model_files(path, class_name)
        return ModelDirectory(path=path, kind=MODEL_CLASSES[class_name][0], class_name=class_name, config=config)
    hints = [
        name
        for name in ("model", "pipeline", "transformer", "vae")
        if (path / name / "config.json").is_file() or (path / name / "model_index.json").is_file()
    ]
    hint = f" Did you mean {path / hints[0]}?" if hints else ""
    raise HubPushError(
        f"{path} has neither config.json (a model) nor model_index.json (a pipeline), so it is no save_pretrained "
        f"directory.{hint}"
    )


def _inspect_pipeline(path: Path) -> ModelDirectory:
    index = _read_json(path / "model_index.json", "pipeline index")
    class_name = index.get("_class_name")
    if class_name not in PIPELINE_CLASSES:
        raise HubPushError(
            f"{path}/model_index.json is a {class_name!r} pipeline; aligntok-push pushes {sorted(PIPELINE_CLASSES)} "
            f"pipelines and {sorted(MODEL_CLASSES)} models."
        )
    components = {name: entry for name, entry in index.items() if not name.startswith("_")}
    missing = [name for name in _REQUIRED_PIPELINE_COMPONENTS if not _is_present(components.get(name))]
    if missing:
        raise HubPushError(
            f"{path}/model_index.json has no {missing} component(s); a {class_name} needs them. Re-save the pipeline."
        )
    component_configs: dict[str, dict[str, Any]] = {}
    for name, entry in components.items():
        if not _is_present(entry):
            continue
        directory = path / name
        if not directory.is_dir():
            raise HubPushError(
                f"{path}/model_index.json names a {name!r} component ({entry[1]}) but {directory} does not exist; copy "
                "the whole pipeline folder, or re-save it with save_pretrained."
            )
        if (directory / "config.json").is_file():
            _check_model_files(directory, f"the pipeline's {name}")
            component_configs[name] = _read_json(directory / "config.json", f"{name} config")
        elif (directory / "scheduler_config.json").is_file():
            component_configs[name] = _read_json(directory / "scheduler_config.json", f"{name} config")
        elif not any((directory / file_name).is_file() for file_name in _WEIGHTLESS_COMPONENT_FILES):
            raise HubPushError(
                f"{directory} (the pipeline's {name}, {entry[1]}) has no config.json, scheduler_config.json or "
                "tokenizer files; copy the whole pipeline folder, or re-save it with save_pretrained."
            )
    return ModelDirectory(
        path=path,
        kind=PIPELINE_CLASSES[class_name],
        class_name=class_name,
        config=index,
        component_configs=component_configs,
    )


def _is_present(entry: Any) -> bool:
    return isinstance(entry, (list, tuple)) and len(entry) == 2 and entry[0] is not None and entry[1] is not None


def normalized_model_index(index: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """`model_index.json` with every entry of our library written as `["diffusers_aligntok", "<Class>"]`.

    diffusers records a class of a library it does not know by its full module path
    (`diffusers_aligntok.models.autoencoder_aligned_kl`) when the pipeline was saved without `import
    diffusers_aligntok` (docs/design.md); that entry breaks as soon as a module moves. The short entry resolves through
    the package's top level, which exposes every class a pipeline names. Returns the index and what was changed.
    """
    import diffusers_aligntok

    fixed, changes = dict(index), []
    for name, entry in index.items():
        if name.startswith("_") or not _is_present(entry):
            continue
        library, class_name = entry
        if library != _LIBRARY and str(library).startswith(_LIBRARY + ".") and hasattr(diffusers_aligntok, class_name):
            fixed[name] = [_LIBRARY, class_name]
            changes.append(f"{name}: {list(entry)} -> {fixed[name]}")
    return fixed, changes


def _files_to_upload(root: Path) -> Iterator[Path]:
    """Every file of the model folder that is uploaded: not hidden, not an unfinished save, not the old README."""
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if any(part.startswith(".") or part.endswith(".incomplete") for part in relative.parts):
            continue
        if path.is_file() and relative != Path("README.md"):
            yield path


def stage_upload_folder(model: ModelDirectory, destination: Path) -> list[str]:
    """Fills the empty directory `destination` with the model's files as they are uploaded; returns their paths.

    Weight files are hard links to the originals where the file system allows (weights are never edited in place;
    a copy of a multi-GB model would double its disk use), every other file is copied, and a pipeline's
    `model_index.json` is rewritten by [`normalized_model_index`]. The card (`README.md`) is written by the caller.
    """
    written = []
    for source in _files_to_upload(model.path):
        relative = source.relative_to(model.path)
        target = destination / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if relative == Path("model_index.json"):
            index, _ = normalized_model_index(model.config)
            target.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        elif source.name.endswith(_WEIGHT_SUFFIXES):
            try:
                os.link(source, target)
            except OSError:  # another file system, or links not allowed
                shutil.copy2(source, target)
        else:
            shutil.copy2(source, target)
        written.append(relative.as_posix())
    return written


# ---------------------------------------------------------------------------------------------------------------------
# Safetensors without torch: a content digest (to recognise the same weights at another path) and parameter counts
# ---------------------------------------------------------------------------------------------------------------------


def _safetensors_header(path: Path) -> tuple[dict[str, Any], int]:
    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length))
    header.pop("__metadata__", None)
    return header, 8 + length


def safetensors_weights_digest(directory: Path) -> str | None:
    """A hash of every tensor (name, dtype, shape, bytes) in the directory's safetensors files; None without any.

    Independent of how the weights are sharded and of file metadata, so a copy made by another `save_pretrained`
    (a pipeline's `vae/` saved from the tokenizer's own directory) has the same digest.
    """
    import hashlib

    files = sorted(path for path in directory.glob("*.safetensors") if path.is_file())
    if not files:
        return None
    tensors = []
    for path in files:
        header, data_start = _safetensors_header(path)
        tensors += [(name, path, data_start, entry) for name, entry in header.items()]
    digest = hashlib.sha256()
    for name, path, data_start, entry in sorted(tensors, key=lambda item: item[0]):
        begin, end = entry["data_offsets"]
        digest.update(json.dumps([name, entry["dtype"], entry["shape"]]).encode())
        with open(path, "rb") as handle:
            handle.seek(data_start + begin)
            remaining = end - begin
            while remaining:
                block = handle.read(min(remaining, 1 << 24))
                if not block:
                    raise HubPushError(
                        f"{path} is truncated ({name} ends past the end of the file); re-export the model."
                    )
                digest.update(block)
                remaining -= len(block)
    return digest.hexdigest()[:16]


def count_safetensors_parameters(directory: Path) -> int | None:
    """The number of weight values in the directory's safetensors files (from their headers), or None."""
    counts = count_parameters_by_module(directory)
    return sum(counts.values()) if counts else None


def count_parameters_by_module(directory: Path) -> dict[str, int]:
    """Weight values per top-level module (`encoder`, `adapter`, `decoder`, ...) from the safetensors headers."""
    counts: dict[str, int] = {}
    for path in sorted(path for path in directory.glob("*.safetensors") if path.is_file()):
        header, _ = _safetensors_header(path)
        for name, entry in header.items():
            count = 1
            for size in entry["shape"]:
                count *= size
            module = name.split(".", 1)[0]
            counts[module] = counts.get(module, 0) + count
    return counts
