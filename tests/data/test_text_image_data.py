"""Aspect-ratio buckets, image-caption sources and the bucket batch sampler of text-to-image training."""

import io
import math

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from diffusers_aligntok.data import (
    PAPER_ASPECT_RATIOS,
    BucketBatchSampler,
    TextImageDatasetConfig,
    build_text_image_dataset,
    make_buckets,
    nearest_bucket,
)
from diffusers_aligntok.data.aspect_buckets import parse_aspect_ratio, resize_and_center_crop


@pytest.mark.parametrize("resolution", [256, 512, 1024])
def test_paper_buckets_are_token_aligned_equal_area_and_the_right_shape(resolution):
    buckets = make_buckets(resolution, PAPER_ASPECT_RATIOS, 16)
    assert len(set(buckets)) == len(PAPER_ASPECT_RATIOS)
    for bucket, ratio in zip(buckets, PAPER_ASPECT_RATIOS):
        assert bucket.width % 16 == 0 and bucket.height % 16 == 0
        assert abs(bucket.width * bucket.height / resolution**2 - 1) <= 0.1
        assert abs(math.log(bucket.aspect_ratio / parse_aspect_ratio(ratio))) < 0.05
    assert str(buckets[0]) == f"{resolution}x{resolution}"
    # Transposed ratios give transposed buckets.
    assert (buckets[1].width, buckets[1].height) == (buckets[2].height, buckets[2].width)


def test_buckets_refuse_ratios_the_resolution_cannot_tell_apart_and_bad_input():
    with pytest.raises(ValueError, match="lands on the same size"):
        make_buckets(32, PAPER_ASPECT_RATIOS, 4)
    with pytest.raises(ValueError, match="multiple of 16"):
        make_buckets(250, ["1:1"], 16)
    with pytest.raises(ValueError, match="width:height"):
        parse_aspect_ratio("16/9")


def test_images_go_to_the_bucket_of_nearest_shape_and_are_cropped_to_it():
    buckets = make_buckets(512, PAPER_ASPECT_RATIOS, 16)
    assert buckets[nearest_bucket(1920, 1080, buckets)] == buckets[PAPER_ASPECT_RATIOS.index("16:9")]
    assert buckets[nearest_bucket(1000, 1010, buckets)] == buckets[0]
    assert buckets[nearest_bucket(600, 900, buckets)] == buckets[PAPER_ASPECT_RATIOS.index("2:3")]
    bucket = buckets[PAPER_ASPECT_RATIOS.index("4:5")]
    assert resize_and_center_crop(Image.new("RGB", (801, 1003)), bucket).size == (bucket.width, bucket.height)


def test_builtin_captioned_shapes_cover_every_bucket_with_descriptive_captions():
    buckets = make_buckets(32, ["1:1", "3:4", "4:3"], 4)
    dataset = build_text_image_dataset(TextImageDatasetConfig(num_builtin_samples=60), buckets)
    assert len(dataset) == 60 and set(dataset.bucket_counts().values()) == {20}
    for index in (0, 10, 20):
        item = dataset[index]
        bucket = buckets[dataset.bucket_of[index]]
        assert item["pixel_values"].shape == (3, bucket.height, bucket.width)
        assert item["pixel_values"].min() >= -1 and item["pixel_values"].max() <= 1
        assert item["caption"].startswith(("a ", "an ")) and "background" in item["caption"]
    assert (
        dataset[0]["caption"]
        == build_text_image_dataset(TextImageDatasetConfig(num_builtin_samples=60), buckets)[0]["caption"]
    )


def test_parquet_shards_with_image_bytes_and_captions(tmp_path):
    rows = []
    for index in range(6):
        buffer = io.BytesIO()
        Image.new("RGB", (64, 48) if index % 2 else (48, 64), (index * 30, 0, 0)).save(buffer, format="PNG")
        rows.append({"image": {"bytes": buffer.getvalue(), "path": None}, "text": f"caption {index}"})
    rows.append({"image": {"bytes": b"not an image", "path": None}, "text": "broken"})
    pd.DataFrame(rows).to_parquet(tmp_path / "shard-0.parquet")
    buckets = make_buckets(32, ["1:1", "3:4", "4:3"], 8)
    dataset = build_text_image_dataset(TextImageDatasetConfig(source=str(tmp_path / "*.parquet")), buckets)
    assert dataset.skipped == {"empty_caption": 0, "too_small": 0, "unreadable": 1, "total": 7}
    assert dataset.bucket_counts() == {"32x32": 0, "24x32": 3, "32x24": 3}
    assert dataset[1]["caption"] == "caption 1" and dataset[1]["pixel_values"].shape == (3, 24, 32)


def test_a_source_with_nothing_usable_stops_with_the_counts(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    (tmp_path / "a.txt").write_text("tiny")
    Image.new("RGB", (64, 64)).save(tmp_path / "b.png")
    (tmp_path / "b.txt").write_text("   ")
    with pytest.raises(ValueError, match="1 have empty captions, 1 are smaller than their bucket"):
        build_text_image_dataset(TextImageDatasetConfig(source=str(tmp_path)), make_buckets(32, ["1:1"], 8))


def test_bucket_batch_sampler_is_deterministic_single_bucket_and_resumable():
    bucket_of = [index % 3 for index in range(50)]
    sampler = BucketBatchSampler(bucket_of, batch_size=4, seed=7)
    first = list(sampler)
    assert first == list(BucketBatchSampler(bucket_of, batch_size=4, seed=7))
    assert len(first) == len(sampler) == 3 * (16 // 4)
    assert all(len({bucket_of[i] for i in batch}) == 1 and len(batch) == 4 for batch in first)
    sampler.set_epoch(1)
    assert list(sampler) != first  # a fresh order every epoch
    sampler.set_epoch(0, start_batch=5)
    assert list(sampler) == first[5:]
    # Two ranks: the same bucket at every step, disjoint items, together one global batch.
    ranks = [list(BucketBatchSampler(bucket_of, batch_size=2, seed=7, num_replicas=2, rank=r)) for r in (0, 1)]
    for batch_0, batch_1 in zip(*ranks):
        assert {bucket_of[i] for i in batch_0} == {bucket_of[i] for i in batch_1}
        assert not set(batch_0) & set(batch_1)
    with pytest.raises(ValueError, match="No bucket holds a whole global batch"):
        BucketBatchSampler([0, 1, 2], batch_size=2)
    assert np.array_equal(np.sort(np.concatenate(first)), np.unique(np.concatenate(first)))  # no item twice


def test_webdataset_shards_of_jpg_and_txt(tmp_path):
    import tarfile

    with tarfile.open(tmp_path / "shard-000000.tar", "w") as archive:
        for index in range(4):
            for suffix, payload in (("jpg", None), ("txt", f"a photo number {index}".encode())):
                if payload is None:
                    buffer = io.BytesIO()
                    Image.new("RGB", (40, 40), (0, index * 50, 0)).save(buffer, format="JPEG")
                    payload = buffer.getvalue()
                info = tarfile.TarInfo(f"{index:06d}.{suffix}")
                info.size = len(payload)
                archive.addfile(info, io.BytesIO(payload))
    dataset = build_text_image_dataset(
        TextImageDatasetConfig(source=str(tmp_path / "*.tar")), make_buckets(32, ["1:1"], 8)
    )
    assert len(dataset) == 4 and dataset[2]["caption"] == "a photo number 2"
    assert dataset[2]["pixel_values"].shape == (3, 32, 32)
