"""The dataset's example spec and manifest columns: written by pipelines/, read by model/.

One TFDS `FeaturesDict`, defined here once. The writer serialises with it (through TFDS's
own example serializer, deterministically), `tfds.builder_from_directory` reads with the
`features.json` it produces, and the trainer uses the same keys.

TensorFlow and TFDS are imported lazily: Beam workers that only scan CSVs import this
package too, and must not pay TensorFlow's start-up.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from schemas.records import Crop

IMAGE = "image"
LABEL = "label"
MID = "mid"
IMAGE_ID = "image_id"
BOX_INDEX = "box_index"
BBOX = "bbox"
FLAGS = ("is_occluded", "is_truncated", "is_group_of", "is_depiction", "is_inside")
LICENSE = "license"
AUTHOR = "author"
LANDING_URL = "landing_url"

FILE_FORMATS = ("tfrecord", "array_record")  # TFDS's names, as in its file names


def shard_file(name: str, split: str, shard: int, num_shards: int,
               file_format: str = "tfrecord") -> str:
    """A shard's file name in the TFDS layout: <name>-<split>.<format>-NNNNN-of-MMMMM."""
    return f"{name}-{split}.{file_format}-{shard:05d}-of-{num_shards:05d}"


def file_format_of(dataset_info: dict) -> str:
    """The shards' format a dataset_info.json records."""
    return dataset_info.get("fileFormat") or "tfrecord"


def shards_of(dataset_info: dict) -> list[tuple[str, str, int]]:
    """(split, file name, examples) for every shard a dataset_info.json lists."""
    out = []
    fmt = file_format_of(dataset_info)
    for split in dataset_info.get("splits", []):
        lengths = [int(n) for n in split.get("shardLengths", [])]
        out += [(split["name"], shard_file(dataset_info["name"], split["name"], i, len(lengths),
                                           fmt), n) for i, n in enumerate(lengths)]
    return out


def features(labels: Sequence[str], image_size: int = 0):
    """The tfds FeaturesDict of one example. `image` holds the crop's JPEG bytes unchanged,
    every crop `image_size` square (0: unknown, for tools that only read); `bbox` is the box
    in the source photo (TFDS order: ymin, xmin, ymax, xmax)."""
    import tensorflow_datasets as tfds

    side = image_size or None
    spec = {
        IMAGE: tfds.features.Image(shape=(side, side, 3), encoding_format="jpeg"),
        LABEL: tfds.features.ClassLabel(names=list(labels)),
        MID: tfds.features.Text(),
        IMAGE_ID: tfds.features.Text(),
        BOX_INDEX: tfds.features.Scalar(np.int32),
        BBOX: tfds.features.BBoxFeature(),
        LICENSE: tfds.features.Text(),
        AUTHOR: tfds.features.Text(),
        LANDING_URL: tfds.features.Text(),
    }
    spec.update({flag: tfds.features.Scalar(np.int8) for flag in FLAGS})
    return tfds.features.FeaturesDict(spec)


def dataset_features(dataset_dir: str):
    """A built dataset's own FeaturesDict, from the features.json it was written with."""
    import tensorflow_datasets as tfds
    return tfds.features.FeatureConnector.from_config(dataset_dir)


def decode(features, record: bytes) -> dict:
    """A serialized example as numpy values, decoded with the dataset's own spec; the image
    stays encoded (its JPEG bytes, as stored)."""
    import tensorflow_datasets as tfds
    return features.deserialize_example_np(
        record, decoders={IMAGE: tfds.decode.SkipDecoding()})


def example_dict(crop: Crop) -> dict[str, Any]:
    """A crop as the feature values `features()` encodes."""
    b = crop.box
    out = {
        IMAGE: crop.jpeg, LABEL: b.label_index, MID: b.mid, IMAGE_ID: crop.image.image_id,
        BOX_INDEX: b.box_index, LICENSE: crop.image.license, AUTHOR: crop.image.author,
        LANDING_URL: crop.image.landing_url,
        BBOX: np.array([b.ymin, b.xmin, b.ymax, b.xmax], np.float32),
    }
    out.update({flag: getattr(b, flag) for flag in FLAGS})
    return out


class Serializer:
    """Crop -> serialized tf.train.Example bytes, identical in every process.

    Build it in a DoFn's setup(): it imports TensorFlow.
    """

    def __init__(self, labels: Sequence[str], image_size: int = 0):
        from tensorflow_datasets.core import example_serializer

        self.features = features(labels, image_size)
        self._serializer = example_serializer.ExampleSerializer(
            self.features.get_serialized_info())

    def __call__(self, crop: Crop) -> bytes:
        encoded = self.features.encode_example(example_dict(crop))
        proto = self._serializer.get_tf_example(encoded)
        # Without deterministic=True, map fields serialise in process-dependent order.
        return proto.SerializeToString(deterministic=True)


MANIFEST_SCHEMA = pa.schema([
    ("image_id", pa.string()),
    ("box_index", pa.int32()),
    ("split", pa.string()),
    ("shard", pa.string()),
    ("label", pa.string()),
    ("label_index", pa.int32()),
    ("mid", pa.string()),
    ("xmin", pa.float32()),
    ("xmax", pa.float32()),
    ("ymin", pa.float32()),
    ("ymax", pa.float32()),
    ("jpeg_sha256", pa.string()),
    ("source", pa.string()),
    ("url", pa.string()),
    ("source_sha256", pa.string()),
    ("author", pa.string()),
    ("license", pa.string()),
    ("landing_url", pa.string()),
    ("title", pa.string()),
    ("rotation", pa.int16()),
])


def manifest_row(crop: Crop, shard: str, jpeg_sha256: str) -> dict[str, Any]:
    b, img = crop.box, crop.image
    return {"image_id": img.image_id, "box_index": b.box_index, "split": crop.split,
            "shard": shard, "label": b.label, "label_index": b.label_index, "mid": b.mid,
            "xmin": b.xmin, "xmax": b.xmax, "ymin": b.ymin, "ymax": b.ymax,
            "jpeg_sha256": jpeg_sha256, "source": crop.source, "url": crop.url,
            "source_sha256": crop.source_sha256,
            "author": img.author, "license": img.license, "landing_url": img.landing_url,
            "title": img.title, "rotation": img.rotation}
