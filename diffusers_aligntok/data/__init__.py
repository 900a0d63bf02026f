"""Image data for training AlignTok tokenizers: `build_image_dataset(ImageDatasetConfig(...))`.

Importing this package does not import `datasets`; only building a non-builtin data set does.
"""

from .builtin_shapes import SHAPE_CLASS_NAMES, ShapesDataset, save_shapes_image_folder, shape_mask
from .image_datasets import (
    ImageDataset,
    ImageDatasetConfig,
    ImageTransform,
    StreamingImageDataset,
    build_image_dataset,
    decode_image,
)


__all__ = [
    "SHAPE_CLASS_NAMES",
    "ImageDataset",
    "ImageDatasetConfig",
    "ImageTransform",
    "ShapesDataset",
    "StreamingImageDataset",
    "build_image_dataset",
    "decode_image",
    "save_shapes_image_folder",
    "shape_mask",
]
