"""tf.data input pipeline from a dataset written by `build`.

Finds the split's shards through `tfds.builder_from_directory` (the dataset's own
metadata), reads them with parallel interleaved reads (TFRecord, or ArrayRecord through a
generator per shard), and parses only the two
features training needs, with the keys of schemas/examples: decoder (serialized bytes ->
dict) and parser (dict -> (image, label)) are separate, as in keras-io's TFRecord recipes.
Each JPEG is decoded once, in a parallel map; decoded images are cached in memory when
they fit; `prefetch` last. (Reading through tfds's as_dataset parsed all 14 features and
measured 4x slower.)
Order is a function of (seed, epoch) alone: each pass over the training split is shuffled
with a seed made from the seed and an epoch counter the trainer sets, so a run resumed at
epoch N sees the same batches an uninterrupted one does. Parallel reads and maps keep
their input order (deterministic=True), and the split's size is asserted, so Keras knows
how many steps an epoch has.
Augmentation is not done here: it lives in the model (preprocessing layers), so the saved
model serves raw images.
"""
from __future__ import annotations

import dataclasses
import json
import os

import tensorflow as tf
import tensorflow_datasets as tfds

from schemas import examples

AUTOTUNE = tf.data.AUTOTUNE
# Cache decoded images in memory below this many bytes (uint8 HxWx3 per example).
CACHE_LIMIT_BYTES = 2 << 30


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What the trainer needs to know about a built dataset."""

    labels: tuple[str, ...]
    split_sizes: dict[str, int]
    image_size: int  # side of the stored crops

    @classmethod
    def load(cls, dataset_dir: str) -> "DatasetInfo":
        builder = tfds.builder_from_directory(dataset_dir)
        labels = tuple(builder.info.features[examples.LABEL].names)
        sizes = {name: split.num_examples for name, split in builder.info.splits.items()}
        image_size = builder.info.features[examples.IMAGE].shape[0]
        if image_size is None:  # built before the features declared the crops' side
            report_path = os.path.join(dataset_dir, "build_report.json")
            image_size = 224
            if os.path.exists(report_path):
                with open(report_path) as f:
                    image_size = int(json.load(f).get("config", {}).get("image_size") or 224)
        return cls(labels, sizes, int(image_size))


def parse(records: tf.Tensor) -> dict:
    """The decoder's first half: a batch of serialized examples -> their JPEG bytes and
    labels, parsed with the keys of schemas/examples (only the features training needs;
    parsing a batch at once is cheaper than one by one)."""
    spec = {examples.IMAGE: tf.io.FixedLenFeature([], tf.string),
            examples.LABEL: tf.io.FixedLenFeature([], tf.int64)}
    return tf.io.parse_example(records, spec)


def decode(example: dict, resize_to: int = 0) -> dict:
    """The decoder's second half: JPEG bytes -> uint8 image, resized only when the model's
    input differs from the size the crops were built at."""
    image = tf.io.decode_jpeg(example[examples.IMAGE], channels=3)
    if resize_to:
        image = tf.image.resize(image, (resize_to, resize_to), antialias=True)
        image = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
    return {examples.IMAGE: image, examples.LABEL: example[examples.LABEL]}


def to_pair(example: dict) -> tuple[tf.Tensor, tf.Tensor]:
    """The parser: dict -> (image as float32 0..255, label) for Keras (works on batches)."""
    return tf.cast(example[examples.IMAGE], tf.float32), example[examples.LABEL]


def load_image(image_bytes: tf.Tensor, size: int) -> tf.Tensor:
    """One encoded image (JPEG, PNG, ...) -> float32 size x size x 3 pixels 0..255, resized
    as the crops were: what `predict` and the exported SavedModel feed the model."""
    image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
    image = tf.image.resize(image, (size, size), antialias=True)
    return tf.clip_by_value(tf.round(image), 0, 255)


def _file_format(builder) -> str:
    fmt = getattr(builder.info, "file_format", None)
    return getattr(fmt, "value", fmt) or "tfrecord"


def _array_record_chunks(path: bytes):
    """The serialized examples of one ArrayRecord shard, in order, 256 at a time (tf.data
    has no reader of its own for the format; TFDS reads it only through as_data_source).
    Chunks, not single records: each crossing from Python into tf.data costs, and chunks
    measured 1.6x faster."""
    from array_record.python.array_record_module import ArrayRecordReader
    reader = ArrayRecordReader(path.decode())
    n = reader.num_records()
    for start in range(0, n, 256):
        yield reader.read(start, min(n, start + 256))


def epoch_counter() -> tf.Variable:
    """The epoch whose order the next pass over a training dataset uses (each pass adds one;
    the trainer sets it at every epoch's start)."""
    return tf.Variable(0, dtype=tf.int64, trainable=False, name="data_epoch")


def make_dataset(dataset_dir: str, split: str, image_size: int, batch_size: int,
                 training: bool, seed: int = 0, cache: str = "auto",
                 epoch: tf.Variable | None = None) -> tf.data.Dataset:
    """Batched (image float32 0..255, label int64) pairs of one split.

    Training shuffles shard order and examples, seeded by (seed, epoch): `epoch` is a
    counter from `epoch_counter()` (a fresh one when not given, so passes differ). Without
    a cache, serialized records are shuffled before decoding (bytes are cheap to buffer);
    with the cache ("auto": when decoded images fit under CACHE_LIMIT_BYTES), images are
    decoded once, kept in memory, and shuffled there every epoch.
    """
    builder = tfds.builder_from_directory(dataset_dir)
    info = DatasetInfo.load(dataset_dir)
    file_format = _file_format(builder)
    n = builder.info.splits[split].num_examples
    paths = sorted(os.path.join(dataset_dir, f) for f in builder.info.splits[split].filenames)
    use_cache = cache == "true" or (cache == "auto"
                                    and n * image_size * image_size * 3 < CACHE_LIMIT_BYTES)
    buffer = max(1, min(n, 10_000))
    resize_to = image_size if image_size != info.image_size else 0
    counter = epoch if epoch is not None or not training else epoch_counter()

    def epoch_seed() -> tf.Tensor:
        """Inside a pass's function: read and bump the counter as the pass starts."""
        # This function's graph-level seed: with a global seed of 0, TF fails on tensor op
        # seeds (tensorflow#17284); it sets nothing outside the traced function.
        tf.random.set_seed(seed + 1)
        return tf.constant(seed, tf.int64) * 1_000_003 + counter.assign_add(1) - 1

    def read(files: tf.data.Dataset) -> tf.data.Dataset:
        if file_format == "array_record":
            return files.interleave(
                lambda path: tf.data.Dataset.from_generator(
                    _array_record_chunks, args=(path,),
                    output_signature=tf.TensorSpec([None], tf.string)).unbatch(),
                cycle_length=min(4, len(paths)), block_length=1, num_parallel_calls=AUTOTUNE,
                deterministic=True)
        return tf.data.TFRecordDataset(files, num_parallel_reads=min(4, len(paths)))

    def decoded(record_batches: tf.data.Dataset) -> tf.data.Dataset:
        # Outside the per-pass functions, so tf.data tunes these maps' parallelism.
        return (record_batches.map(parse, num_parallel_calls=AUTOTUNE, deterministic=True)
                .unbatch()
                .map(lambda ex: decode(ex, resize_to), num_parallel_calls=AUTOTUNE,
                     deterministic=True))

    def one_pass(make) -> tf.data.Dataset:
        """A dataset that builds each pass anew with make(epoch_seed): batches cross the
        flat_map, not single examples (it costs per element)."""
        return tf.data.Dataset.from_tensors(0).flat_map(lambda _: make(epoch_seed()))

    files = tf.data.Dataset.from_tensor_slices(paths)
    if not training:
        ds = decoded(read(files).batch(256))
        ds = (ds.cache() if use_cache else ds).batch(batch_size)
    elif not use_cache:  # shuffle serialized records (cheap to buffer), then decode
        ds = decoded(one_pass(lambda order: read(files.shuffle(len(paths), seed=order))
                              .shuffle(buffer, seed=order + 1).batch(256))).batch(batch_size)
    else:  # decode once, keep the images in memory, shuffle them there every pass
        images = decoded(read(files).batch(256)).cache()
        ds = one_pass(lambda order: images.shuffle(buffer, seed=order).batch(batch_size))
    # Batch uint8 images, then cast whole batches: a quarter of the bytes to move.
    ds = (ds.map(to_pair, num_parallel_calls=AUTOTUNE, deterministic=True)
          .apply(tf.data.experimental.assert_cardinality(-(-n // batch_size))))
    options = tf.data.Options()
    options.deterministic = True
    return ds.with_options(options).prefetch(AUTOTUNE)
