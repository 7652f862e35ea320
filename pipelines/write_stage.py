"""The write stage: Beam transforms that write the dataset's shards in bounded memory.

No shuffle carries example bytes: every bundle writes its serialised examples into
key-sorted runs (pipelines/runs.py) of at most 64 MiB, only the runs' slices go through
the GroupByKey, and one merge per shard streams its slices into the shard in key order
(pipelines/shardio.py writes TFRecord or ArrayRecord). The pure core (layout, keys, the
shard rule, `finalize`) is pipelines/write.py.
"""
from __future__ import annotations

import collections
import hashlib
import io
import json
import math
import time

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.metrics import Metrics

from pipelines import files, runs, shardio
from pipelines.progress import Progress
from pipelines.write import (ATTRIBUTION, DatasetLayout, ShardInfo, example_key, pack_example,
                             shard_of, unpack_example)
from schemas import examples
from schemas.records import Crop


class _SerializeToRuns(beam.DoFn):
    """Crop -> a serialised, framed example in this bundle's sorted runs, plus the photo's
    attribution; emits the runs' slices. Examples go to partition (split, shard) when the
    shard count is fixed, else to (split,), to be sharded once the split's size is known."""

    def __init__(self, layout: DatasetLayout, labels: tuple[str, ...], num_shards: int):
        self._layout, self._labels, self._num_shards = layout, labels, num_shards
        self._bytes = Metrics.counter("write", "example_bytes")
        self._busy_us = Metrics.distribution("timing", "serialize_us")

    def setup(self):
        self._serializer = examples.Serializer(self._labels, self._layout.image_size)  # imports TF
        self._progress = Progress("crops serialized")

    def start_bundle(self):
        self._runs = runs.RunWriter(self._layout.runs_dir)

    def process(self, crop: Crop):
        start = time.perf_counter()
        data = self._serializer(crop)
        row = examples.manifest_row(crop, "", hashlib.sha256(crop.jpeg).hexdigest())
        part = ((crop.split, shard_of(crop.key, self._num_shards)) if self._num_shards
                else (crop.split,))
        out = self._runs.add(part, example_key(*crop.key), pack_example(data, row), len(data))
        img = crop.image
        out += self._runs.add((ATTRIBUTION,), img.image_id.encode("ascii"), json.dumps(
            [img.title, img.author, img.license, img.landing_url]).encode("utf-8"))
        self._busy_us.update(int((time.perf_counter() - start) * 1e6))
        self._bytes.inc(len(data))
        self._progress.add(crops=1, bytes=len(data))
        yield from out

    def finish_bundle(self):
        yield from runs.windowed(self._runs.flush())


class _Reshard(beam.DoFn):
    """One run's slice of a split -> the same examples in a new run, by (split, shard),
    now that the split's shard count is known. A slice is at most a run (64 MiB)."""

    def __init__(self, layout: DatasetLayout):
        self._layout = layout

    def process(self, s: runs.RunSlice, num_shards: dict):
        split = s.partition[0]
        n = num_shards[split]
        writer = runs.RunWriter(self._layout.runs_dir, limit_bytes=1 << 62)
        for key, value in runs.read_slice(s):
            shard = shard_of((key[:16].decode("ascii"), int.from_bytes(key[16:], "big")), n)
            writer.add((split, shard), key, value, len(unpack_example(value)[0]))
        yield from writer.flush()


class _MergeShard(beam.DoFn):
    """((split, shard), slices) -> the shard file, streamed from every run in key order
    (temp name, then rename), and its manifest part. Memory: a read buffer per run."""

    def __init__(self, layout: DatasetLayout):
        self._layout = layout
        self._shards = Metrics.counter("write", "shards")
        self._examples = Metrics.counter("write", "examples")
        self._busy_ms = Metrics.distribution("timing", "write_shard_ms")

    def process(self, element, num_shards: dict):
        (split, shard), slices = element
        start = time.perf_counter()
        n = num_shards[split]
        name = self._layout.shard_file(split, shard, n)
        rows = []
        with shardio.open_shard(self._layout.path(name), self._layout.file_format) as f:
            for _, value in runs.merge(slices):
                data, row = unpack_example(value)
                f.write(data)
                rows.append({**row, "shard": name})
        sink = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(rows, schema=examples.MANIFEST_SCHEMA), sink)
        files.write_bytes(self._layout.manifest_part(split, shard), sink.getvalue())
        self._shards.inc()
        self._examples.inc(f.count)
        self._busy_ms.update(int((time.perf_counter() - start) * 1000))
        labels = collections.Counter(r["label"] for r in rows)
        yield ShardInfo(split, shard, n, f.count, f.num_bytes, f.sha256,
                        tuple(sorted(labels.items())))


class WriteDataset(beam.PTransform):
    """Serialise crops and write them as deterministic TFDS shards, in bounded memory.

    No shuffle carries example bytes: each bundle writes its examples into sorted runs
    (pipelines/runs.py), only run slices go through the GroupByKey, and one merge per
    shard streams its slices into the shard file in key order. A shard's bytes are the
    same as when every example was held in memory and sorted: shard = hash of the key
    (`shard_of`), examples in key order, framed as TFRecords.

    Args:
      layout: output folder, dataset name and version.
      labels: label display names (ClassLabel names, in index order).
      shard_size_bytes: target shard size, used when num_shards is 0.
      num_shards: a fixed shard count per split (0: from shard_size_bytes).

    Returns:
      (PCollection of ShardInfo, one per non-empty shard; PCollection of the RunSlices
      of photo attributions, for `finalize`).
    """

    def __init__(self, layout: DatasetLayout, labels, shard_size_bytes: int, num_shards: int = 0):
        super().__init__()
        self._layout, self._labels = layout, tuple(labels)
        self._shard_size, self._num_shards = shard_size_bytes, num_shards

    def expand(self, crops):
        slices = crops | "Serialize" >> beam.ParDo(
            _SerializeToRuns(self._layout, self._labels, self._num_shards))
        attribution = slices | "Attribution" >> beam.Filter(lambda s: s.partition == (ATTRIBUTION,))
        example_slices = slices | "Examples" >> beam.Filter(lambda s: s.partition != (ATTRIBUTION,))
        fixed, size = self._num_shards, self._shard_size
        num_shards = (example_slices
                      | "BytesPerSplit" >> beam.Map(lambda s: (s.partition[0], s.size))
                      | "SumPerSplit" >> beam.CombinePerKey(sum)
                      | "ShardsPerSplit" >> beam.MapTuple(
                          lambda split, total: (split, fixed or max(1, math.ceil(total / size)))))
        if not fixed:
            example_slices = example_slices | "Reshard" >> beam.ParDo(
                _Reshard(self._layout), beam.pvalue.AsDict(num_shards))
        shards = (example_slices
                  | "KeyByShard" >> beam.Map(lambda s: (s.partition, s))
                  | "GroupShards" >> beam.GroupByKey()
                  | "MergeShards" >> beam.ParDo(_MergeShard(self._layout),
                                                beam.pvalue.AsDict(num_shards)))
        return shards, attribution


class _ExportJpeg(beam.DoFn):
    """Crop -> DIR/<split>/<label>/<image_id>_<box_index>.jpg (image_dataset_from_directory)."""

    def __init__(self, folder: str):
        self._folder = folder

    def process(self, crop: Crop):
        name = f"{crop.image.image_id}_{crop.box.box_index}.jpg"
        label = crop.box.label.replace("/", "_")
        files.write_bytes(files.join_path(self._folder, crop.split, label, name), crop.jpeg)


def export_folders(crops, folder: str):
    """Also write every crop as a JPEG file in the folder layout Keras reads."""
    return crops | "ExportFolders" >> beam.ParDo(_ExportJpeg(folder))
