"""Image data for tokenizer training: one config, one builder, every source yields the same items.

`build_image_dataset(ImageDatasetConfig(...))` returns a torch `Dataset` whose items are

    {"pixel_values": float32 (3, H, W) in [-1, 1], "label": int (-1 if the source has none), "num_skipped": int}

from any of these sources (`ImageDatasetConfig.source`):

- `"builtin:shapes"` (default): `ShapesDataset`, generated on the fly, no download.
- a local directory: an ImageNet layout (one sub-folder per class, labels from the folder names, sorted), or a
  folder of parquet or webdataset `.tar` shards. Read by `datasets.load_dataset(directory)`, which picks the
  `imagefolder`, `parquet` or `webdataset` builder from the file extensions and the splits from file/folder names.
- a glob or a single file (`"data/*.parquet"`, `"shards/*.tar"`, `"images/*/*.png"`): those files form `split`.
- a hub dataset id (`"ILSVRC/imagenet-1k"`): `datasets.load_dataset(id, split=..., streaming=...)`.

Images are stored undecoded (`datasets.Image(decode=False)`: bytes or a path) and decoded in `__getitem__`, so a
corrupt file costs one skipped item rather than a crashed run: the failure is logged once per file (and process),
the next index is tried (wrapping around), and the returned item says in `num_skipped` how many unreadable images
were passed over to produce it. Summing `num_skipped` over a batch, and `accelerator.gather` over ranks, counts
every skip exactly once, whatever the number of dataloader workers. More than `max_consecutive_failures` failures in
a row raise `RuntimeError`: that is a broken data set, not a few bad files.

Preprocessing follows the ADM / DiT / LightningDiT ImageNet recipe: convert to RGB (alpha composited on white),
resize with PIL's antialiased bicubic filter so the image just covers the target (the short side equals the target
for square targets), then centre or random crop, then an optional horizontal flip.

Randomness: the random crop and flip of item `index` draw from a generator seeded by `(seed, epoch, index)`
(`augmentation_generator`), never from a global RNG. Augmentation is therefore a pure function of the data order:
the same for any number of dataloader workers or ranks, and replayed exactly when a run resumes mid-epoch (a global
RNG would not be: dataloaders prefetch, so a checkpoint's RNG state is already a batch ahead). Call
`dataset.set_epoch(epoch)` each epoch for fresh augmentations; dataloader workers must not be persistent, so that they
see the new epoch. The builtin shapes themselves depend only on `(seed, index)`.

`datasets` is imported inside functions only: importing this module does not need it.
"""

import glob
import io
import logging
import operator
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from PIL import ExifTags, Image, ImageOps

from .builtin_shapes import ShapesDataset, augmentation_generator, normalize_resolution, pil_to_tensor


logger = logging.getLogger(__name__)

BUILTIN_SOURCES = ("builtin:shapes",)
IMAGE_COLUMN_CANDIDATES = ("image", "jpg", "jpeg", "png", "webp", "img")
LABEL_COLUMN_CANDIDATES = ("label", "cls", "class")
IMAGE_FILE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
PARQUET_EXTENSIONS = (".parquet",)
WEBDATASET_EXTENSIONS = (".tar",)
EXPECTED_LAYOUT = "expected class sub-folders with .jpg/.png/.webp files, parquet shards or .tar webdataset shards"
_GLOB_CHARACTERS = "*?["
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")


@dataclass
class ImageDatasetConfig:
    """Where the training images come from and how they are cropped.

    Args:
        source (`str`, defaults to `"builtin:shapes"`): `"builtin:shapes"`, a local directory (ImageNet layout:
            one sub-folder per class; or a folder of parquet / `.tar` webdataset shards), a glob or a single shard
            file (`"data/*.parquet"`, `"data/*.tar"`), or a hub dataset id (`"ILSVRC/imagenet-1k"`).
        split (`str`, defaults to `"train"`): the split to read. For a glob or single file, the name given to those
            files. Ignored by `builtin:shapes` (use another `seed` for held-out images).
        resolution (`int` or `(height, width)`, defaults to 256): output size; a pair for non-square training.
        center_crop (`bool`, defaults to `True`): centre crop; `False` crops at a random position.
        random_flip (`bool`, defaults to `True`): horizontal flip with probability 0.5.
        image_column (`str`, *optional*): column holding the images; `None` picks the first of
            `IMAGE_COLUMN_CANDIDATES` present, else the first column with a `datasets.Image` feature.
        label_column (`str`, *optional*): column holding integer (or class-name) labels; `None` picks the first of
            `LABEL_COLUMN_CANDIDATES` present, else the data set has no labels (every label is -1).
        max_samples (`int`, *optional*): keep only the first `max_samples` items (quick runs).
        num_builtin_samples (`int`, defaults to 2048): length of `builtin:shapes`.
        seed (`int`, defaults to 0): seed of `builtin:shapes` (image `i` depends only on `(seed, i)`).
        streaming (`bool`, defaults to `False`): `datasets` streaming mode, meant for hub data sets too large to
            download (also works for local shards); gives a torch `IterableDataset`.
        max_consecutive_failures (`int`, defaults to 100): more unreadable images than this in a row raise
            `RuntimeError` (the data set looks unreadable) instead of being skipped.
        cache_dir (`str`, *optional*): `datasets` cache directory; `None` uses `datasets`' default.
    """

    source: str = "builtin:shapes"
    split: str = "train"
    resolution: int | tuple[int, int] = 256
    center_crop: bool = True
    random_flip: bool = True
    image_column: str | None = None
    label_column: str | None = None
    max_samples: int | None = None
    num_builtin_samples: int = 2048
    seed: int = 0
    streaming: bool = False
    max_consecutive_failures: int = 100
    cache_dir: str | None = None

    def __post_init__(self):
        if isinstance(self.source, os.PathLike):
            self.source = os.fspath(self.source)
        if not isinstance(self.source, str) or not self.source:
            raise ValueError(
                f"source must be a non-empty string (a path, glob, hub id or 'builtin:shapes'), got {self.source!r}."
            )
        height, width = normalize_resolution(self.resolution)
        # YAML and JSON configs give lists; keep an int as an int so configs round-trip unchanged.
        if not isinstance(self.resolution, int):
            self.resolution = (height, width)
        if self.max_samples is not None and self.max_samples <= 0:
            raise ValueError(f"max_samples must be a positive int or None (all), got {self.max_samples}.")
        if self.num_builtin_samples <= 0:
            raise ValueError(f"num_builtin_samples must be positive, got {self.num_builtin_samples}.")
        if self.max_consecutive_failures < 0:
            raise ValueError(f"max_consecutive_failures must be >= 0, got {self.max_consecutive_failures}.")
        if self.seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {self.seed}.")

    @property
    def height_width(self) -> tuple[int, int]:
        return normalize_resolution(self.resolution)


class ImageTransform:
    """RGB PIL image -> float32 (3, H, W) tensor in [-1, 1]: cover-resize, centre/random crop, optional flip.

    The resize scales the image (bicubic, antialiased) by `max(H / h, W / w)`, so it just covers the target: for a
    square target the short side equals the target. Random crop offsets and the flip come from `generator` (torch's
    global RNG when it is None).
    """

    def __init__(self, resolution: int | Sequence[int], center_crop: bool = True, random_flip: bool = True):
        self.height, self.width = normalize_resolution(resolution)
        self.center_crop = center_crop
        self.random_flip = random_flip

    def __call__(self, image: Image.Image, generator: torch.Generator | None = None) -> tuple[torch.Tensor, bool]:
        """Returns the tensor and whether the image had to be upscaled."""
        width, height = image.size
        scale = max(self.height / height, self.width / width)
        upscaled = scale > 1.0
        if scale != 1.0:
            new_size = (max(self.width, round(width * scale)), max(self.height, round(height * scale)))
            image = image.resize(new_size, resample=Image.Resampling.BICUBIC)
            width, height = new_size
        if self.center_crop:
            left = int(round((width - self.width) / 2.0))
            top = int(round((height - self.height) / 2.0))
        else:
            top = int(torch.randint(height - self.height + 1, (), generator=generator).item())
            left = int(torch.randint(width - self.width + 1, (), generator=generator).item())
        if (left, top, width, height) != (0, 0, self.width, self.height):
            image = image.crop((left, top, left + self.width, top + self.height))
        if self.random_flip and torch.rand((), generator=generator) < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return pil_to_tensor(image), upscaled


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode as RGB: transparency is composited on white, 16-bit grey is scaled (not clipped) to 8 bits."""
    if image.mode in _SIXTEEN_BIT_MODES:
        image = image.convert("I").point(lambda value: value * (1 / 257)).convert("L")
    has_alpha = image.mode in _ALPHA_MODES or (image.mode in ("P", "L", "RGB") and "transparency" in image.info)
    if has_alpha:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def decode_image(payload: Any) -> Image.Image:
    """Fully decode one stored image (`{"bytes", "path"}` dict, raw bytes, a path or a PIL image) to RGB.

    Raises whatever PIL raises for a corrupt or truncated file (the whole image is decoded here, not lazily).
    """
    if isinstance(payload, Image.Image):
        image = payload
        image.load()
    else:
        if isinstance(payload, dict):
            data, path = payload.get("bytes"), payload.get("path")
        elif isinstance(payload, (bytes, bytearray, memoryview)):
            data, path = bytes(payload), None
        elif isinstance(payload, (str, os.PathLike)):
            data, path = None, os.fspath(payload)
        else:
            raise ValueError(f"no image in this row (got {type(payload).__name__})")
        if data is not None:
            image = Image.open(io.BytesIO(data))
            image.load()
        elif path is not None and os.path.exists(path):
            with open(path, "rb") as file:
                image = Image.open(file)
                image.load()
        elif path is not None:  # a remote path (hub, s3, ...): datasets knows how to open it
            from datasets import Image as ImageFeature

            image = ImageFeature(decode=True).decode_example({"path": path, "bytes": None})
            image.load()
        else:
            raise ValueError("the image field has neither bytes nor a path")
    if image.getexif().get(ExifTags.Base.Orientation, 1) not in (0, 1):
        image = ImageOps.exif_transpose(image)
    return to_rgb(image)


def _label_to_int(value: Any) -> int:
    if value is None:
        return -1
    if isinstance(value, (bytes, bytearray)):
        value = value.decode("utf-8")
    if isinstance(value, str):
        return int(value.strip())
    return int(value)


def _describe_payload(payload: Any) -> str | None:
    if isinstance(payload, dict):
        return payload.get("path")
    if isinstance(payload, (str, os.PathLike)):
        return os.fspath(payload)
    return None


class _DecodingMixin:
    """Decoding with warn-once-per-file and the consecutive-failure limit, shared by map-style and streaming."""

    def _init_decoding(self, image_column, label_column, transform, source_description, max_consecutive_failures):
        self.image_column = image_column
        self.label_column = label_column
        self.transform = transform
        self.source_description = source_description
        self.max_consecutive_failures = max_consecutive_failures
        # Per process: each dataloader worker keeps its own copy (a bad file may be reported once per worker).
        self.num_upscaled = 0
        self._warned_files: set[str] = set()
        self.augmentation_seed = 0
        self.epoch = 0

    def _try_decode(self, row: dict, position: int) -> tuple[Image.Image | None, Exception | None]:
        payload = row[self.image_column]
        try:
            return decode_image(payload), None
        except Exception as error:  # PIL raises OSError, SyntaxError, ValueError, struct.error, ... on bad data
            where = _describe_payload(payload)
            where = f"#{position} ({where})" if where else f"#{position}"
            if where not in self._warned_files:
                self._warned_files.add(where)
                logger.warning(
                    f"Skipping unreadable image {where} of {self.source_description}: {type(error).__name__}: {error}"
                )
            return None, error

    def _raise_unreadable(self, num_failures: int, position: int, error: Exception):
        raise RuntimeError(
            f"{num_failures} images in a row could not be decoded from {self.source_description} (the last was "
            f"#{position}: {type(error).__name__}: {error}); the data set looks unreadable. Check the files, or "
            f"raise max_consecutive_failures (now {self.max_consecutive_failures}) if this many bad images is "
            f"expected."
        ) from error

    def set_epoch(self, epoch: int):
        """Augmentations (and a shuffled streaming order) depend on the epoch; see the module docstring."""
        self.epoch = epoch
        if hasattr(self.hf_dataset, "set_epoch"):
            self.hf_dataset.set_epoch(epoch)

    def _make_item(self, image: Image.Image, row: dict, num_skipped: int, item_index: int) -> dict:
        generator = augmentation_generator(self.augmentation_seed, self.epoch, item_index)
        pixel_values, upscaled = self.transform(image, generator)
        self.num_upscaled += int(upscaled)
        label = _label_to_int(row[self.label_column]) if self.label_column is not None else -1
        return {"pixel_values": pixel_values, "label": label, "num_skipped": num_skipped}


class ImageDataset(_DecodingMixin, torch.utils.data.Dataset):
    """Map-style image data set over a `datasets.Dataset` whose image column is stored undecoded.

    Built by `build_image_dataset`; see the module docstring for the item format, skipping and randomness.

    Attributes:
        num_classes (`int` or `None`): number of classes, `None` without labels.
        class_names (`list[str]` or `None`): class names when the labels are a `ClassLabel` (folder names for an
            image folder).
        source_description (`str`): a short description for logs and metrics.
        num_upscaled (`int`): images this process had to upscale (per dataloader worker).
    """

    def __init__(
        self,
        hf_dataset,
        image_column: str,
        label_column: str | None,
        transform: ImageTransform,
        source_description: str,
        num_classes: int | None = None,
        class_names: list[str] | None = None,
        max_consecutive_failures: int = 100,
        max_samples: int | None = None,
    ):
        self.hf_dataset = hf_dataset
        self.num_classes = num_classes
        self.class_names = class_names
        self._length = len(hf_dataset) if max_samples is None else min(len(hf_dataset), max_samples)
        if self._length == 0:
            raise ValueError(f"{source_description} has no rows: {EXPECTED_LAYOUT}.")
        self._init_decoding(image_column, label_column, transform, source_description, max_consecutive_failures)

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: int) -> dict:
        index = operator.index(index)
        if index < 0:
            index += self._length
        if not 0 <= index < self._length:
            raise IndexError(f"index {index} out of range for {self.source_description} of length {self._length}")
        num_skipped = 0
        for attempt in range(self._length):  # at most once around the data set
            position = (index + attempt) % self._length
            row = self.hf_dataset[position]
            image, error = self._try_decode(row, position)
            if image is not None:
                return self._make_item(image, row, num_skipped, index)
            num_skipped += 1
            if num_skipped > self.max_consecutive_failures:
                self._raise_unreadable(num_skipped, position, error)
        self._raise_unreadable(num_skipped, position, error)


class StreamingImageDataset(_DecodingMixin, torch.utils.data.IterableDataset):
    """Iterable image data set over a streaming `datasets.IterableDataset` (`ImageDatasetConfig.streaming=True`).

    Each dataloader worker reads its own shards (`datasets` splits them by worker). Unreadable images are skipped
    as in `ImageDataset`: the next yielded item carries their count; skips after the last item are only logged.
    Shuffle or split by rank on `hf_dataset` (`shuffle(buffer_size=...)`, `datasets.distributed.split_dataset_by_node`)
    before iterating if the run needs it; accelerate can also dispatch batches from the main process.
    """

    def __init__(
        self,
        hf_dataset,
        image_column: str,
        label_column: str | None,
        transform: ImageTransform,
        source_description: str,
        num_classes: int | None = None,
        class_names: list[str] | None = None,
        max_consecutive_failures: int = 100,
    ):
        self.hf_dataset = hf_dataset
        self.num_classes = num_classes
        self.class_names = class_names
        self._init_decoding(image_column, label_column, transform, source_description, max_consecutive_failures)

    def __iter__(self):
        num_skipped = 0
        for position, row in enumerate(self.hf_dataset):
            image, error = self._try_decode(row, position)
            if image is None:
                num_skipped += 1
                if num_skipped > self.max_consecutive_failures:
                    self._raise_unreadable(num_skipped, position, error)
                continue
            yield self._make_item(image, row, num_skipped, position)
            num_skipped = 0
        if num_skipped:
            logger.warning(f"{num_skipped} unreadable images at the end of {self.source_description} were skipped.")


def _has_glob(source: str) -> bool:
    return any(character in source for character in _GLOB_CHARACTERS)


def _looks_like_local_path(source: str) -> bool:
    """Hub ids are `name` or `namespace/name`; anything else that does not exist is a missing local path."""
    lowered = source.lower()
    return (
        os.path.isabs(source)
        or source.startswith((".", "~"))
        or _has_glob(source)
        or source.count("/") > 1
        or (os.sep != "/" and os.sep in source)
        or lowered.endswith(IMAGE_FILE_EXTENSIONS + PARQUET_EXTENSIONS + WEBDATASET_EXTENSIONS)
    )


def _builder_for_file(path: str) -> str | None:
    lowered = path.lower()
    if lowered.endswith(PARQUET_EXTENSIONS):
        return "parquet"
    if lowered.endswith(WEBDATASET_EXTENSIONS):
        return "webdataset"
    if lowered.endswith(IMAGE_FILE_EXTENSIONS):
        return "imagefolder"
    return None


def _directory_has_data(directory: str) -> bool:
    """Whether any image, parquet or .tar file lies under `directory` (stops at the first one)."""
    for dirpath, dirnames, filenames in os.walk(directory):
        dirnames[:] = [name for name in dirnames if not name.startswith(".")]  # as datasets ignores hidden folders
        if any(_builder_for_file(name) and not name.startswith(".") for name in filenames):
            return True
    return False


def _load_dataset_naming_source(source: str, *args, **kwargs):
    """`datasets.load_dataset`, whose ValueErrors (no rows, unknown split, ...) then name the source."""
    import datasets

    try:
        return datasets.load_dataset(*args, **kwargs)
    except ValueError as error:
        raise ValueError(
            f"could not load {source} (split={kwargs.get('split')!r}): {error} ({EXPECTED_LAYOUT})"
        ) from error


def load_hf_dataset(config: ImageDatasetConfig):
    """The `datasets` data set for `config.source` (all columns, images as stored) and a short description."""
    import datasets

    source, split = config.source, config.split
    common = {"split": split, "streaming": config.streaming, "cache_dir": config.cache_dir}
    path = os.path.expanduser(source)
    if _has_glob(source) or os.path.isfile(path):
        files = [path]
        if _has_glob(source):
            files = sorted(name for name in glob.glob(path, recursive=True) if os.path.isfile(name))
        if not files:
            raise ValueError(f"no files match {source!r}: {EXPECTED_LAYOUT}.")
        builders = {_builder_for_file(name) for name in files}
        if None in builders:
            unsupported = next(name for name in files if _builder_for_file(name) is None)
            raise ValueError(
                f"{source!r} matches {unsupported!r}, which is not an image ({', '.join(IMAGE_FILE_EXTENSIONS)}), "
                f"parquet or .tar file: {EXPECTED_LAYOUT}."
            )
        if len(builders) > 1:
            raise ValueError(f"{source!r} mixes file kinds ({sorted(builders)}); point it at one kind of shard.")
        builder = builders.pop()
        hf_dataset = _load_dataset_naming_source(source, builder, data_files={split: files}, **common)
        return hf_dataset, f"{builder}:{source} ({len(files)} files)"
    if os.path.isdir(path):
        if not _directory_has_data(path):
            raise ValueError(f"no images found under {source}: {EXPECTED_LAYOUT}.")
        hf_dataset = _load_dataset_naming_source(source, path, **common)
        return hf_dataset, f"{hf_dataset.info.builder_name or 'folder'}:{source} (split={split})"
    if _looks_like_local_path(source):
        raise ValueError(
            f"{source} does not exist: expected a directory ({EXPECTED_LAYOUT}), a glob or file of such shards, a hub "
            f"dataset id such as 'ILSVRC/imagenet-1k', or one of {list(BUILTIN_SOURCES)}."
        )
    try:
        hf_dataset = datasets.load_dataset(source, **common)
    except Exception as error:
        raise ValueError(
            f"{source!r} is not a local path and could not be loaded as a hub dataset "
            f"({type(error).__name__}: {error})."
        ) from error
    return hf_dataset, f"hub:{source} (split={split}{', streaming' if config.streaming else ''})"


def pick_column(features, requested: str | None, candidates: Sequence[str], kind: str, source: str) -> str | None:
    """The column of `features` holding `kind` (`"image"`, `"label"`, `"caption"`): `requested` if given (an error
    naming the columns if it is missing), else the first of `candidates` present; for images, else the first `Image`
    feature (an error if there is none); for other kinds None."""
    import datasets

    columns = list(features)
    if requested is not None:
        if requested not in columns:
            raise ValueError(f"{kind}_column={requested!r} is not a column of {source}; its columns are {columns}.")
        return requested
    by_lowercase = {column.lower(): column for column in columns}
    for candidate in candidates:
        if candidate in by_lowercase:
            return by_lowercase[candidate]
    if kind == "image":
        for column, feature in features.items():
            if isinstance(feature, datasets.Image):
                return column
        raise ValueError(
            f"found no image column in {source} (columns {columns}; looked for {list(candidates)} and Image "
            f"features); set ImageDatasetConfig.image_column."
        )
    return None


def build_image_dataset(config: ImageDatasetConfig) -> torch.utils.data.Dataset:
    """The training data set described by `config`: `ShapesDataset`, `ImageDataset` or `StreamingImageDataset`.

    Every item is `{"pixel_values": float32 (3, H, W) in [-1, 1], "label": int, "num_skipped": int}`; the data set
    has `num_classes` (`None` without labels) and `source_description`. Under accelerate with several processes,
    build it inside `with accelerator.main_process_first():` so only one process writes the `datasets` cache.

    Raises:
        ValueError: the source does not exist, is empty or has no image column.
    """
    if config.source.startswith("builtin:"):
        if config.source not in BUILTIN_SOURCES:
            raise ValueError(f"unknown builtin data set {config.source!r}; available: {list(BUILTIN_SOURCES)}.")
        num_samples = config.num_builtin_samples
        if config.max_samples is not None:
            num_samples = min(num_samples, config.max_samples)
        return ShapesDataset(
            num_samples=num_samples, resolution=config.resolution, seed=config.seed, random_flip=config.random_flip
        )

    import datasets

    hf_dataset, description = load_hf_dataset(config)
    features = hf_dataset.features
    if features is None:  # some streaming data sets only know their columns after reading a row
        hf_dataset = hf_dataset._resolve_features()
        features = hf_dataset.features
    if not config.streaming and len(hf_dataset) == 0:
        raise ValueError(f"{config.source} has no rows in split {config.split!r}: {EXPECTED_LAYOUT}.")
    image_column = pick_column(features, config.image_column, IMAGE_COLUMN_CANDIDATES, "image", config.source)
    label_column = pick_column(features, config.label_column, LABEL_COLUMN_CANDIDATES, "label", config.source)
    if label_column == image_column:
        label_column = None
    hf_dataset = hf_dataset.select_columns([image_column] + ([label_column] if label_column else []))
    if isinstance(features[image_column], datasets.Image):
        hf_dataset = hf_dataset.cast_column(image_column, datasets.Image(decode=False))

    num_classes, class_names = None, None
    if label_column is not None:
        label_feature = features[label_column]
        is_string = isinstance(label_feature, datasets.Value) and label_feature.dtype in ("string", "large_string")
        if is_string and not config.streaming:
            hf_dataset = hf_dataset.class_encode_column(label_column)  # class names -> sorted integer ids
            label_feature = hf_dataset.features[label_column]
        if isinstance(label_feature, datasets.ClassLabel):
            num_classes, class_names = label_feature.num_classes, list(label_feature.names)
        elif not config.streaming:
            import pyarrow.compute

            largest = pyarrow.compute.max(hf_dataset.data.column(label_column)).as_py()
            num_classes = None if largest is None else _label_to_int(largest) + 1

    transform = ImageTransform(config.resolution, center_crop=config.center_crop, random_flip=config.random_flip)
    shared = {
        "image_column": image_column,
        "label_column": label_column,
        "transform": transform,
        "num_classes": num_classes,
        "class_names": class_names,
        "max_consecutive_failures": config.max_consecutive_failures,
    }
    if config.streaming:
        if config.max_samples is not None:
            hf_dataset = hf_dataset.take(config.max_samples)
        dataset = StreamingImageDataset(hf_dataset, source_description=description, **shared)
        dataset.augmentation_seed = config.seed
        return dataset
    dataset = ImageDataset(hf_dataset, source_description=description, max_samples=config.max_samples, **shared)
    dataset.augmentation_seed = config.seed
    dataset.source_description = f"{description}, n={len(dataset)}"
    return dataset
