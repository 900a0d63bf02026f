"""The image-data layer: builtin shapes, image folders, parquet and webdataset shards, corrupt files, crops."""

import io
import itertools
import logging
import os
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from diffusers_aligntok.data import (
    SHAPE_CLASS_NAMES,
    ImageDatasetConfig,
    ImageTransform,
    ShapesDataset,
    build_image_dataset,
    decode_image,
    save_shapes_image_folder,
    shape_mask,
)


RESOLUTION = 32


def _config(tmp_path, source, **overrides):
    """A config whose `datasets` cache lives in the test's own folder."""
    overrides.setdefault("resolution", RESOLUTION)
    overrides.setdefault("random_flip", False)
    return ImageDatasetConfig(source=str(source), cache_dir=str(tmp_path / "hf_cache"), **overrides)


def _encode(image: Image.Image, image_format: str, **save_kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **save_kwargs)
    return buffer.getvalue()


def _row_paths(dataset) -> list[str]:
    return [row["path"] for row in dataset.hf_dataset[dataset.image_column]]


# ---------------------------------------------------------------------------------------------------- builtin shapes


def test_builtin_is_the_default_and_deterministic():
    config = ImageDatasetConfig(resolution=RESOLUTION, random_flip=False, num_builtin_samples=40)
    assert config.source == "builtin:shapes"
    dataset = build_image_dataset(config)
    assert isinstance(dataset, ShapesDataset) and len(dataset) == 40
    later_first = dataset[17]["pixel_values"]
    for index in range(17):  # order and earlier accesses do not matter
        dataset[index]
    assert torch.equal(dataset[17]["pixel_values"], later_first)
    rebuilt = build_image_dataset(config)
    assert all(torch.equal(rebuilt[i]["pixel_values"], dataset[i]["pixel_values"]) for i in range(10))
    other_seed = build_image_dataset(ImageDatasetConfig(resolution=RESOLUTION, random_flip=False, seed=1))
    assert all(not torch.equal(other_seed[i]["pixel_values"], dataset[i]["pixel_values"]) for i in range(10))
    assert len({dataset[i]["pixel_values"].sum().item() for i in range(20)}) == 20  # no two images alike


@pytest.mark.parametrize("resolution", [RESOLUTION, (24, 40)])
def test_builtin_items_shape_range_and_format(resolution):
    dataset = build_image_dataset(ImageDatasetConfig(resolution=resolution, num_builtin_samples=20))
    height, width = (resolution, resolution) if isinstance(resolution, int) else resolution
    for index in range(len(dataset)):
        item = dataset[index]
        assert set(item) == {"pixel_values", "label", "num_skipped"}
        pixels = item["pixel_values"]
        assert pixels.shape == (3, height, width) and pixels.dtype == torch.float32
        assert pixels.min() >= -1.0 and pixels.max() <= 1.0
        assert item["num_skipped"] == 0 and isinstance(item["label"], int)
    stacked = torch.stack([dataset[i]["pixel_values"] for i in range(len(dataset))])
    assert stacked.min() < -0.8 and stacked.max() > 0.8  # uses the whole range, not a grey blur


def test_builtin_labels_are_balanced_and_named():
    assert 8 <= len(SHAPE_CLASS_NAMES) <= 10 and len(set(SHAPE_CLASS_NAMES)) == len(SHAPE_CLASS_NAMES)
    num_classes = len(SHAPE_CLASS_NAMES)
    dataset = ShapesDataset(num_samples=5 * num_classes, resolution=16)
    assert dataset.num_classes == num_classes and tuple(dataset.class_names) == SHAPE_CLASS_NAMES
    assert "builtin:shapes" in dataset.source_description
    counts = np.bincount([dataset[i]["label"] for i in range(len(dataset))], minlength=num_classes)
    assert counts.tolist() == [5] * num_classes


def test_builtin_classes_look_different():
    # Same placement for every class: any two shapes overlap clearly less than they would if they were the same.
    masks = {name: shape_mask(name, 64, center=(32.0, 32.0), radius=22.0) for name in SHAPE_CLASS_NAMES}
    for name, mask in masks.items():
        assert 0.05 < mask.mean() < 0.7, name
        assert ((mask > 0.05) & (mask < 0.95)).any(), f"{name} is not anti-aliased"
    for first, second in itertools.combinations(SHAPE_CLASS_NAMES, 2):
        intersection = np.minimum(masks[first], masks[second]).sum()
        union = np.maximum(masks[first], masks[second]).sum()
        assert intersection / union < 0.8, (first, second, intersection / union)
    # In the rendered images the shape stands out from its background.
    dataset = ShapesDataset(num_samples=30, resolution=RESOLUTION, random_flip=False)
    for index in range(len(dataset)):
        params = dataset.sample_parameters(index)
        name = SHAPE_CLASS_NAMES[params["label"]]
        coverage = shape_mask(name, RESOLUTION, params["center"], params["radius"], params["angle"])
        pixels = dataset[index]["pixel_values"].numpy()
        inside, outside = pixels[:, coverage > 0.99].mean(axis=1), pixels[:, coverage < 0.01].mean(axis=1)
        assert np.abs(inside - outside).max() > 0.2, index


@pytest.mark.parametrize("resolution", [32, (48, 80)])
def test_builtin_shapes_are_object_centred_and_inside_the_frame(resolution):
    # The demo's DiT relies on this (object-centred data, like ImageNet): each shape covers a good part of the short
    # side, its centre of mass is near the image centre, and it is not cut off by the border.
    dataset = ShapesDataset(num_samples=60, resolution=resolution, random_flip=False)
    height, width = dataset.height, dataset.width
    short_side = min(height, width)
    rows, cols = np.mgrid[0:height, 0:width] + 0.5
    for index in range(len(dataset)):
        params = dataset.sample_parameters(index)
        coverage = shape_mask(
            SHAPE_CLASS_NAMES[params["label"]], (height, width), params["center"], params["radius"], params["angle"]
        )
        area = coverage.sum()
        assert area > 0.05 * short_side**2, index
        centroid = np.array([(coverage * cols).sum() / area, (coverage * rows).sum() / area])
        assert np.abs(centroid - [width / 2, height / 2]).max() < 0.2 * short_side, (index, centroid)
        # Nothing but anti-aliasing and the corners of the bars reaches the outermost pixels.
        border = np.concatenate([coverage[0], coverage[-1], coverage[:, 0], coverage[:, -1]])
        assert border.sum() < 0.02 * area, index


def test_builtin_flip_is_a_function_of_seed_epoch_and_index():
    dataset = ShapesDataset(num_samples=16, resolution=RESOLUTION, random_flip=True)
    unflipped = ShapesDataset(num_samples=16, resolution=RESOLUTION, random_flip=False)
    # Not the global RNG: re-seeding it or drawing from it changes nothing (a resume replays the same flips).
    torch.manual_seed(3)
    first = [dataset[i]["pixel_values"] for i in range(16)]
    torch.rand(100)
    assert all(torch.equal(a, dataset[i]["pixel_values"]) for i, a in enumerate(first))
    flipped = []
    for i, out in enumerate(first):
        plain = unflipped[i]["pixel_values"]
        assert torch.equal(out, plain) or torch.equal(out, plain.flip(-1))
        flipped.append(not torch.equal(out, plain))
    assert any(flipped) and not all(flipped)
    # A new epoch draws new flips.
    dataset.set_epoch(1)
    assert any(not torch.equal(a, dataset[i]["pixel_values"]) for i, a in enumerate(first))


# ------------------------------------------------------------------------------------------------------ image folder


def test_image_folder_labels_follow_folder_names(tmp_path):
    paths = save_shapes_image_folder(tmp_path / "images", num_images=20, resolution=RESOLUTION, seed=5)
    assert len(paths) == 20 and all(os.path.isfile(path) for path in paths)
    dataset = build_image_dataset(_config(tmp_path, tmp_path / "images"))
    assert len(dataset) == 20
    assert dataset.class_names == sorted(SHAPE_CLASS_NAMES) and dataset.num_classes == len(SHAPE_CLASS_NAMES)
    assert str(tmp_path / "images") in dataset.source_description
    reference = ShapesDataset(num_samples=20, resolution=RESOLUTION, seed=5, random_flip=False)
    for position, path in enumerate(_row_paths(dataset)):
        item = dataset[position]
        assert dataset.class_names[item["label"]] == os.path.basename(os.path.dirname(path))
        index = int(os.path.splitext(os.path.basename(path))[0])
        assert torch.equal(item["pixel_values"], reference[index]["pixel_values"])  # PNG round trip is lossless
        assert item["num_skipped"] == 0
    limited = build_image_dataset(_config(tmp_path, tmp_path / "images", max_samples=7))
    assert len(limited) == 7


def _truncated_jpeg() -> bytes:
    data = _encode(ShapesDataset(1, 64).render_image(0), "JPEG", quality=95)
    return data[: len(data) // 2]


@pytest.mark.parametrize(
    "bad_name, bad_bytes",
    [("circle/000003.png", b"this is not a png" * 10), ("circle/000004_truncated.jpg", _truncated_jpeg())],
    ids=["garbage_png", "truncated_jpeg"],
)
def test_corrupt_image_is_skipped_counted_and_reported(tmp_path, caplog, bad_name, bad_bytes):
    root = tmp_path / "images"
    save_shapes_image_folder(root, num_images=12, resolution=RESOLUTION)
    (root / bad_name).write_bytes(bad_bytes)
    dataset = build_image_dataset(_config(tmp_path, root))
    paths = _row_paths(dataset)
    bad_position = paths.index(str(root / bad_name))
    next_position = (bad_position + 1) % len(dataset)
    with caplog.at_level(logging.WARNING, logger="diffusers_aligntok.data"):
        item = dataset[bad_position]
        again = dataset[bad_position]
    expected = dataset[next_position]
    assert item["num_skipped"] == 1 and expected["num_skipped"] == 0
    assert torch.equal(item["pixel_values"], expected["pixel_values"]) and item["label"] == expected["label"]
    assert again["num_skipped"] == 1
    warnings = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1, "warn once per file"
    assert bad_name.split("/")[-1] in warnings[0].getMessage()


def test_skip_wraps_around_the_end(tmp_path):
    root = tmp_path / "images"
    save_shapes_image_folder(root, num_images=6, resolution=RESOLUTION)
    (root / "triangle" / "zzz_last.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")  # sorts last
    dataset = build_image_dataset(_config(tmp_path, root))
    last = len(dataset) - 1
    assert _row_paths(dataset)[last].endswith("zzz_last.png")
    item = dataset[last]
    assert item["num_skipped"] == 1 and torch.equal(item["pixel_values"], dataset[0]["pixel_values"])


def test_num_skipped_sums_exactly_across_dataloader_workers(tmp_path):
    root = tmp_path / "images"
    save_shapes_image_folder(root, num_images=12, resolution=RESOLUTION)
    for name in ("circle/000000.png", "square/000011.png"):
        (root / name).write_bytes(b"garbage")
    dataset = build_image_dataset(_config(tmp_path, root))
    loader = torch.utils.data.DataLoader(dataset, batch_size=4, num_workers=2)
    batches = list(loader)
    assert sum(int(batch["num_skipped"].sum()) for batch in batches) == 2
    assert sum(len(batch["label"]) for batch in batches) == 12
    assert batches[0]["pixel_values"].shape == (4, 3, RESOLUTION, RESOLUTION)


def test_all_corrupt_raises_naming_the_source(tmp_path):
    root = tmp_path / "broken"
    for class_name in ("cats", "dogs"):
        (root / class_name).mkdir(parents=True)
        for index in range(3):
            (root / class_name / f"{index}.png").write_bytes(b"garbage")
    dataset = build_image_dataset(_config(tmp_path, root))
    with pytest.raises(RuntimeError, match="unreadable") as error:  # fewer files than the limit: once around
        dataset[0]
    assert str(root) in str(error.value)
    limited = build_image_dataset(_config(tmp_path, root, max_consecutive_failures=2))
    with pytest.raises(RuntimeError, match="3 images in a row") as error:
        limited[1]
    assert str(root) in str(error.value)


def test_empty_or_missing_sources_raise_value_error(tmp_path):
    empty = tmp_path / "empty"
    (empty / "cats").mkdir(parents=True)
    (empty / "notes.txt").write_text("no images here")
    missing = tmp_path / "does_not_exist"
    for source, expected in [
        (empty, "no images found under"),
        (missing, "does not exist"),
        (tmp_path / "shards" / "*.parquet", "no files match"),
        ("nobody/no-such-dataset", "could not be loaded as a hub dataset"),  # offline in tests: fails fast
    ]:
        with pytest.raises(ValueError, match=expected) as error:
            build_image_dataset(_config(tmp_path, source))
        assert str(source) in str(error.value)


def test_config_validation():
    with pytest.raises(ValueError, match="resolution"):
        ImageDatasetConfig(resolution=0)
    with pytest.raises(ValueError, match="resolution"):
        ImageDatasetConfig(resolution=(256, -1))
    with pytest.raises(TypeError):
        ImageDatasetConfig(resolutoin=256)
    assert ImageDatasetConfig(resolution=[64, 96]).resolution == (64, 96)
    with pytest.raises(ValueError, match="unknown builtin"):
        build_image_dataset(ImageDatasetConfig(source="builtin:mnist"))


# ------------------------------------------------------------------------------------------- parquet and webdataset


def test_parquet_shards(tmp_path):
    import datasets

    shapes = ShapesDataset(num_samples=10, resolution=RESOLUTION, seed=2, random_flip=False)
    (tmp_path / "shards").mkdir()
    for shard, indices in enumerate([range(0, 6), range(6, 10)]):
        datasets.Dataset.from_dict(
            {
                "image": [{"bytes": _encode(shapes.render_image(i), "PNG"), "path": None} for i in indices],
                "label": [shapes.label(i) for i in indices],
            }
        ).to_parquet(str(tmp_path / "shards" / f"train-{shard:05d}.parquet"))
    for source in (tmp_path / "shards" / "*.parquet", tmp_path / "shards"):
        dataset = build_image_dataset(_config(tmp_path, source))
        assert len(dataset) == 10 and dataset.num_classes == 10
        for index in range(10):
            item = dataset[index]
            assert item["label"] == shapes.label(index)
            assert torch.equal(item["pixel_values"], shapes[index]["pixel_values"])


def test_parquet_written_by_pyarrow_with_raw_bytes(tmp_path):
    import pyarrow
    import pyarrow.parquet

    shapes = ShapesDataset(num_samples=4, resolution=RESOLUTION, random_flip=False)
    table = pyarrow.table(
        {
            "jpg": pyarrow.array([_encode(shapes.render_image(i), "PNG") for i in range(4)], type=pyarrow.binary()),
            "class": [f"name_{i % 2}" for i in range(4)],  # class names as strings
        }
    )
    pyarrow.parquet.write_table(table, str(tmp_path / "data.parquet"))
    dataset = build_image_dataset(_config(tmp_path, tmp_path / "data.parquet"))
    assert dataset.image_column == "jpg" and dataset.class_names == ["name_0", "name_1"]
    assert [dataset[i]["label"] for i in range(4)] == [0, 1, 0, 1]
    assert torch.equal(dataset[3]["pixel_values"], shapes[3]["pixel_values"])


def _write_webdataset_shard(path, shapes, indices):
    with tarfile.open(path, "w") as tar:
        for index in indices:
            members = {
                f"{index:06d}.jpg": _encode(shapes.render_image(index), "JPEG", quality=95, subsampling=0),
                f"{index:06d}.cls": str(shapes.label(index)).encode(),
            }
            for name, data in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def test_webdataset_tar_shards(tmp_path):
    shapes = ShapesDataset(num_samples=8, resolution=RESOLUTION, seed=4, random_flip=False)
    (tmp_path / "wds").mkdir()
    _write_webdataset_shard(tmp_path / "wds" / "000.tar", shapes, range(0, 5))
    _write_webdataset_shard(tmp_path / "wds" / "001.tar", shapes, range(5, 8))
    dataset = build_image_dataset(_config(tmp_path, tmp_path / "wds" / "*.tar"))
    assert len(dataset) == 8 and (dataset.image_column, dataset.label_column) == ("jpg", "cls")
    assert dataset.num_classes == 8  # largest label + 1 for plain integer labels
    for index in range(8):
        item = dataset[index]
        assert item["label"] == shapes.label(index)
        differences = [(item["pixel_values"] - shapes[i]["pixel_values"]).abs().mean().item() for i in range(8)]
        assert differences[index] < 0.05 and int(np.argmin(differences)) == index  # JPEG is lossy

    streaming = build_image_dataset(_config(tmp_path, tmp_path / "wds" / "*.tar", streaming=True, max_samples=6))
    assert isinstance(streaming, torch.utils.data.IterableDataset)
    items = list(streaming)
    assert [item["label"] for item in items] == [shapes.label(i) for i in range(6)]
    assert all(item["pixel_values"].shape == (3, RESOLUTION, RESOLUTION) for item in items)


# ------------------------------------------------------------------------------------- colour modes and transforms


def test_colour_modes_become_rgb(tmp_path):
    gray = Image.fromarray(np.tile(np.arange(40, dtype=np.uint8) * 6, (30, 1)), mode="L")
    rgba = Image.new("RGBA", (40, 30), (255, 0, 0, 0))  # fully transparent red: white after compositing
    rgba.paste((0, 0, 255, 255), (0, 0, 20, 30))
    palette = Image.new("RGB", (40, 30), (10, 200, 30)).convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    cmyk = Image.new("CMYK", (40, 30), (0, 255, 255, 0))
    sixteen_bit = Image.fromarray(np.full((30, 40), 128 * 257, dtype=np.uint16))
    decoded = {
        "gray": decode_image(_encode(gray, "PNG")),
        "rgba": decode_image(_encode(rgba, "PNG")),
        "palette": decode_image(_encode(palette, "PNG")),
        "cmyk": decode_image(_encode(cmyk, "JPEG")),
        "sixteen_bit": decode_image(_encode(sixteen_bit, "PNG")),
    }
    assert all(image.mode == "RGB" and image.size == (40, 30) for image in decoded.values())
    gray_pixels = np.asarray(decoded["gray"])
    assert (gray_pixels[..., 0] == gray_pixels[..., 2]).all() and gray_pixels.max() > 200
    assert tuple(np.asarray(decoded["rgba"])[0, 39]) == (255, 255, 255)
    assert tuple(np.asarray(decoded["rgba"])[0, 0]) == (0, 0, 255)
    assert (np.asarray(decoded["sixteen_bit"]) == 128).all()  # scaled to 8 bits, not clipped to white

    # Through the image-folder path too.
    root = tmp_path / "modes"
    for name, image in (("gray", gray), ("rgba", rgba)):
        (root / name).mkdir(parents=True)
        image.save(root / name / "0.png")
    dataset = build_image_dataset(_config(tmp_path, root))
    for index in range(2):
        assert dataset[index]["pixel_values"].shape == (3, RESOLUTION, RESOLUTION)
    assert dataset.num_upscaled == 2  # 30 px high < 32


def _ramp_image(width: int, height: int) -> Image.Image:
    """Every pixel distinct: red follows x, green follows y."""
    xs, ys = np.meshgrid(np.linspace(0, 255, width), np.linspace(0, 255, height))
    return Image.fromarray(np.stack([xs, ys, np.full_like(xs, 128)], axis=-1).astype(np.uint8), mode="RGB")


def test_random_crop_and_flip_are_reproducible_under_torch_seed():
    transform = ImageTransform(24, center_crop=False, random_flip=True)
    image = _ramp_image(60, 40)

    def draws(seed):
        torch.manual_seed(seed)
        return [transform(image)[0] for _ in range(6)]

    first, again, other = draws(0), draws(0), draws(1)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not all(torch.equal(a, b) for a, b in zip(first, other))
    assert len({tuple(out[:, 0, 0].tolist()) for out in first + other}) > 2  # crops actually move
    assert all(out.shape == (3, 24, 24) for out in first)


def test_center_crop_keeps_the_center():
    for width, height in ((96, 32), (32, 96)):
        image = Image.new("RGB", (width, height), (255, 0, 0))
        middle = (width // 2 - 16, height // 2 - 16)
        image.paste((0, 255, 0), (*middle, middle[0] + 32, middle[1] + 32))
        pixels, upscaled = ImageTransform(32, center_crop=True, random_flip=False)(image)
        assert not upscaled
        assert torch.equal(pixels, torch.tensor([-1.0, 1.0, -1.0]).view(3, 1, 1).expand(3, 32, 32))
    # A resize first: 200x100 -> 64x32, then the middle 32x32; non-square targets cover then crop.
    image = _ramp_image(200, 100)
    pixels, _ = ImageTransform(32, center_crop=True, random_flip=False)(image)
    red = (pixels[0] + 1) * 127.5
    assert abs(red.mean().item() - 127.5) < 4.0  # the middle of a left-to-right ramp
    pixels, _ = ImageTransform((20, 40), center_crop=True, random_flip=False)(_ramp_image(50, 50))
    assert pixels.shape == (3, 20, 40)
    green = (pixels[1] + 1) * 127.5
    assert abs(green.mean().item() - 127.5) < 4.0


def test_data_modules_import_datasets_lazily():
    # `import diffusers_aligntok` must not need `datasets`: no module-level import of it in this package.
    import ast

    import diffusers_aligntok.data as data_package

    package_dir = os.path.dirname(data_package.__file__)
    for file_name in sorted(os.listdir(package_dir)):
        if not file_name.endswith(".py"):
            continue
        with open(os.path.join(package_dir, file_name), encoding="utf-8") as file:
            tree = ast.parse(file.read())
        for node in tree.body:  # top-level statements only; imports inside functions are lazy
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            assert not any(name.split(".")[0] == "datasets" for name in names), (file_name, names)
