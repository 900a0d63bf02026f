"""`builtin:shapes`: a procedurally generated, class-labelled image data set that needs no download.

Each class is one shape (`SHAPE_CLASS_NAMES`), drawn with anti-aliasing (a coverage mask drawn at 4x and box-filtered
down) in a random fill colour over a flat or linear-gradient background of a contrasting colour, near the centre (a
jitter of up to 8% of the short side each way) at a random size, with a small rotation jitter (small enough that a
square never becomes a diamond and the bars stay horizontal). That gives a small tokenizer sharp edges, smooth
gradients and colour to reconstruct, and a class-conditional model something recognisable to generate, in offline
tests and demos.

The images are object-centred, like ImageNet's, on purpose. Where a shape sits is much harder for a small generator to
get right than what it is: the demo's tiny DiT (2000 CPU steps on one demo tokenizer's latents) drew the requested
class in 47.5% of 200 samples (judged by a held-out CNN) when shapes were placed anywhere in the frame, and in 74.5%
with this placement.

Image `i` depends only on `(seed, i)`: its random numbers come from `numpy.random.default_rng((seed, i))`, so it is
the same in every dataloader worker, on every rank and in every order. Only the optional horizontal flip uses
torch's global RNG, as every other source does (see `image_datasets.py`).
"""

import math
import os
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw


SHAPE_CLASS_NAMES: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "diamond",
    "cross",
    "ring",
    "star",
    "horizontal_bars",
    "crescent",
    "arrow",
)

_SUPERSAMPLING = 4  # masks are drawn at 4x the output size and box-filtered down: anti-aliased edges
_MAX_ROTATION_DEGREES = 15.0
# Shape size and placement, as fractions of the short side: with radius <= 0.36 and centre jitter <= 0.08 the circle of
# the shape's radius stays inside the frame (0.36 + 0.08 < 0.5).
_MIN_RADIUS, _MAX_RADIUS = 0.26, 0.36
_MAX_CENTRE_JITTER = 0.08
_MIN_LUMINANCE_CONTRAST = 0.3  # |Y(fill) - Y(background)| in [0, 1], against both ends of a gradient
_MAX_GRADIENT_STEP = 0.3  # per channel, so a gradient background never loses contrast with the shape


def normalize_resolution(resolution: int | Sequence[int]) -> tuple[int, int]:
    """`resolution` as `(height, width)`; raises ValueError unless it is a positive int or a pair of them."""
    if isinstance(resolution, (int, np.integer)) and not isinstance(resolution, bool):
        height = width = int(resolution)
    elif (
        isinstance(resolution, Sequence)
        and not isinstance(resolution, str)
        and len(resolution) == 2
        and all(isinstance(side, (int, np.integer)) and not isinstance(side, bool) for side in resolution)
    ):
        height, width = (int(side) for side in resolution)
    else:
        raise ValueError(f"resolution must be an int or a (height, width) pair of ints, got {resolution!r}.")
    if height <= 0 or width <= 0:
        raise ValueError(f"resolution must be positive, got {resolution!r}; use e.g. 256 or (256, 384).")
    return height, width


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """An RGB PIL image as a float32 (3, H, W) tensor in [-1, 1], the range every diffusers VAE takes."""
    array = np.asarray(image, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(127.5).sub_(1.0)


def _luminance(rgb: np.ndarray) -> float:
    return float(0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2])


def _rotate(points: np.ndarray, angle: float) -> np.ndarray:
    """Rotate (N, 2) points about the origin by `angle` radians (image y points down, so positive is clockwise)."""
    cos, sin = math.cos(angle), math.sin(angle)
    return points @ np.array([[cos, sin], [-sin, cos]])


def _regular_polygon(num_vertices: int, start_angle: float) -> np.ndarray:
    angles = start_angle + 2 * math.pi * np.arange(num_vertices) / num_vertices
    return np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _rectangle(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64)


# Each shape is a list of (polygon in units of the shape radius, centred on 0, fill 255 = add or 0 = cut out),
# drawn in order. Circles are 64-gons: at 4x supersampling they are indistinguishable from ellipses.
_CIRCLE = _regular_polygon(64, 0.0)
_STAR_POINTS = _regular_polygon(5, -math.pi / 2)
_STAR_NOTCHES = _regular_polygon(5, -math.pi / 2 + math.pi / 5) * 0.42
_STAR = np.stack([_STAR_POINTS, _STAR_NOTCHES], axis=1).reshape(10, 2)  # point, notch, point, ...
_SHAPE_POLYGONS: dict[str, list[tuple[np.ndarray, int]]] = {
    "circle": [(_CIRCLE, 255)],
    "square": [(_regular_polygon(4, math.pi / 4), 255)],
    "triangle": [(_regular_polygon(3, -math.pi / 2) + np.array([0.0, 0.2]), 255)],
    "diamond": [(_regular_polygon(4, -math.pi / 2) * np.array([0.62, 1.0]), 255)],
    "cross": [(_rectangle(-1.0, -0.28, 1.0, 0.28), 255), (_rectangle(-0.28, -1.0, 0.28, 1.0), 255)],
    "ring": [(_CIRCLE, 255), (_CIRCLE * 0.55, 0)],
    "star": [(_STAR, 255)],
    "horizontal_bars": [(_rectangle(-0.9, y, 0.9, y + 0.36), 255) for y in (-0.9, -0.18, 0.54)],
    "crescent": [(_CIRCLE, 255), (_CIRCLE * 0.85 + np.array([0.5, -0.1]), 0)],
    "arrow": [
        (_rectangle(-1.0, -0.2, 0.15, 0.2), 255),
        (np.array([[0.1, -0.65], [1.0, 0.0], [0.1, 0.65]]), 255),
    ],
}
assert tuple(_SHAPE_POLYGONS) == SHAPE_CLASS_NAMES


def shape_mask(
    class_name: str,
    resolution: int | Sequence[int],
    center: tuple[float, float],
    radius: float,
    angle: float = 0.0,
) -> np.ndarray:
    """Anti-aliased coverage of one shape: float32 (H, W) in [0, 1].

    Args:
        class_name (`str`): one of `SHAPE_CLASS_NAMES`.
        resolution (`int` or `(height, width)`): output size.
        center (`(x, y)`): shape centre in output pixels.
        radius (`float`): shape radius in output pixels (the circumradius for polygons).
        angle (`float`, defaults to 0): rotation in radians.
    """
    height, width = normalize_resolution(resolution)
    scale = _SUPERSAMPLING
    mask = Image.new("L", (width * scale, height * scale), 0)
    draw = ImageDraw.Draw(mask)
    offset = np.array(center, dtype=np.float64) * scale
    for polygon, fill in _SHAPE_POLYGONS[class_name]:
        points = _rotate(polygon * radius * scale, angle) + offset
        draw.polygon([tuple(point) for point in points.tolist()], fill=fill)
    return np.asarray(mask.reduce(scale), dtype=np.float32) / 255.0


def augmentation_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """The RNG for the augmentation of item `index` in `epoch`: a pure function of its arguments."""
    state = np.random.SeedSequence([seed, epoch, index]).generate_state(1, dtype=np.uint32)[0]
    return torch.Generator().manual_seed(int(state))


class ShapesDataset(torch.utils.data.Dataset):
    """Procedurally generated shapes with class labels (`builtin:shapes`), rendered on the fly in `__getitem__`.

    Args:
        num_samples (`int`, defaults to 2048): length of the data set.
        resolution (`int` or `(height, width)`, defaults to 256): image size; images are rendered at this size (no
            resize or crop).
        seed (`int`, defaults to 0): image `i` is a pure function of `(seed, i)`.
        random_flip (`bool`, defaults to `True`): horizontal flip with probability 0.5, drawn from
            `augmentation_generator(seed, epoch, index)` (see `set_epoch`).

    Items are `{"pixel_values": float32 (3, H, W) in [-1, 1], "label": int, "num_skipped": 0}`; labels are
    `i % num_classes`, so classes are balanced.
    """

    class_names: tuple[str, ...] = SHAPE_CLASS_NAMES
    num_classes: int = len(SHAPE_CLASS_NAMES)

    def __init__(
        self,
        num_samples: int = 2048,
        resolution: int | Sequence[int] = 256,
        seed: int = 0,
        random_flip: bool = True,
    ):
        if num_samples <= 0:
            raise ValueError(f"num_samples must be positive, got {num_samples}.")
        if seed < 0:
            raise ValueError(f"seed must be a non-negative int (it seeds numpy's SeedSequence), got {seed}.")
        self.num_samples = int(num_samples)
        self.height, self.width = normalize_resolution(resolution)
        self.seed = int(seed)
        self.random_flip = random_flip
        self.source_description = f"builtin:shapes (n={self.num_samples}, seed={self.seed})"
        self.epoch = 0

    def set_epoch(self, epoch: int):
        """Flips depend on the epoch, so each epoch sees fresh ones (and a resume replays them exactly)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def label(self, index: int) -> int:
        return index % self.num_classes

    def sample_parameters(self, index: int) -> dict:
        """The random choices behind image `index` (deterministic in `(seed, index)`)."""
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for a ShapesDataset of length {self.num_samples}")
        rng = np.random.default_rng((self.seed, index))
        short_side = min(self.height, self.width)
        radius = short_side * rng.uniform(_MIN_RADIUS, _MAX_RADIUS)
        jitter = rng.uniform(-_MAX_CENTRE_JITTER, _MAX_CENTRE_JITTER, size=2) * short_side
        center = (self.width / 2 + jitter[0], self.height / 2 + jitter[1])
        angle = math.radians(rng.uniform(-_MAX_ROTATION_DEGREES, _MAX_ROTATION_DEGREES))
        background_start = rng.uniform(0.0, 1.0, size=3)
        use_gradient = rng.uniform() < 0.5
        if use_gradient:
            step = rng.uniform(-_MAX_GRADIENT_STEP, _MAX_GRADIENT_STEP, size=3)
            background_end = np.clip(background_start + step, 0.0, 1.0)
        else:
            background_end = background_start
        gradient_angle = rng.uniform(0.0, 2 * math.pi)
        background_luminances = (_luminance(background_start), _luminance(background_end))
        for _ in range(16):
            fill = rng.uniform(0.0, 1.0, size=3)
            if all(abs(_luminance(fill) - y) >= _MIN_LUMINANCE_CONTRAST for y in background_luminances):
                break
        else:  # no luck: black or white, whichever contrasts more
            fill = np.zeros(3) if min(background_luminances) >= 0.5 else np.ones(3)
        return {
            "label": self.label(index),
            "center": center,
            "radius": radius,
            "angle": angle,
            "fill": fill,
            "background_start": background_start,
            "background_end": background_end,
            "gradient_angle": gradient_angle,
        }

    def render_image(self, index: int) -> Image.Image:
        """Image `index` as an RGB PIL image, before any flip."""
        params = self.sample_parameters(index)
        coverage = shape_mask(
            self.class_names[params["label"]],
            (self.height, self.width),
            params["center"],
            params["radius"],
            params["angle"],
        )[..., None]
        # Linear gradient along a random direction; t in [0, 1] across the image.
        direction_x, direction_y = math.cos(params["gradient_angle"]), math.sin(params["gradient_angle"])
        t = (
            np.arange(self.height, dtype=np.float32)[:, None] * direction_y
            + np.arange(self.width, dtype=np.float32)[None, :] * direction_x
        )
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
        start = params["background_start"].astype(np.float32)
        end = params["background_end"].astype(np.float32)
        background = start + t[..., None] * (end - start)
        image = background * (1.0 - coverage) + params["fill"].astype(np.float32) * coverage
        return Image.fromarray(np.round(image * 255.0).astype(np.uint8), mode="RGB")

    def __getitem__(self, index: int) -> dict:
        image = self.render_image(index)
        if self.random_flip and torch.rand((), generator=augmentation_generator(self.seed, self.epoch, index)) < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return {"pixel_values": pil_to_tensor(image), "label": self.label(index), "num_skipped": 0}


def save_shapes_image_folder(
    root: str | os.PathLike,
    num_images: int,
    resolution: int | Sequence[int] = 64,
    seed: int = 0,
) -> list[str]:
    """Write `builtin:shapes` images as an ImageNet-layout folder: `root/<class_name>/<index:06d>.png`.

    For tests and demos of the image-folder path. Returns the written file paths, in index order.
    """
    dataset = ShapesDataset(num_samples=num_images, resolution=resolution, seed=seed, random_flip=False)
    paths = []
    for index in range(num_images):
        class_dir = os.path.join(os.fspath(root), dataset.class_names[dataset.label(index)])
        os.makedirs(class_dir, exist_ok=True)
        path = os.path.join(class_dir, f"{index:06d}.png")
        dataset.render_image(index).save(path)
        paths.append(path)
    return paths
