"""Image data for training AlignTok tokenizers (`build_image_dataset(ImageDatasetConfig(...))`) and image-caption data
for text-to-image training (`build_text_image_dataset(TextImageDatasetConfig(...), buckets)`).

Importing this package does not import `datasets`; only building a non-builtin data set does.
"""

from .aspect_buckets import PAPER_ASPECT_RATIOS, Bucket, make_buckets, nearest_bucket
from .builtin_shapes import SHAPE_CLASS_NAMES, ShapesDataset, save_shapes_image_folder, shape_mask
from .image_datasets import (
    ImageDataset,
    ImageDatasetConfig,
    ImageTransform,
    StreamingImageDataset,
    build_image_dataset,
    decode_image,
)
from .text_image_datasets import (
    BucketBatchSampler,
    TextImageDataset,
    TextImageDatasetConfig,
    build_text_image_dataset,
    collate_text_image_batch,
)


__all__ = [
    "PAPER_ASPECT_RATIOS",
    "SHAPE_CLASS_NAMES",
    "Bucket",
    "BucketBatchSampler",
    "TextImageDataset",
    "TextImageDatasetConfig",
    "build_text_image_dataset",
    "collate_text_image_batch",
    "make_buckets",
    "nearest_bucket",
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
