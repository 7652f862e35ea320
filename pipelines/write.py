"""The Beam stage that writes the dataset: deterministic TFRecord shards in the TFDS layout.

    <output_dir>/<name>/<version>/<name>-<split>.tfrecord-NNNNN-of-MMMMM
                                  dataset_info.json, features.json   (tfds's own writer)
                                  manifest.parquet, failures.jsonl, ATTRIBUTION.md

Determinism: each example is keyed by (image_id, box_index); its shard is a hash of the
key; a shard's examples are sorted by key and serialised with deterministic=True; the
shard count comes from the split's total size (or --num_shards). So two builds of one
config give byte-identical shards whatever the runner, worker count or arrival order.
Each shard is written to a temp name and renamed. `Finalize` runs once, after every shard
(side inputs make it wait), and writes the metadata, manifest, failures and attribution.
"""
from __future__ import annotations

import collections
import dataclasses
import hashlib
import io
import json
import math
import re
import time

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.metrics import Metrics

from pipelines import files, tfrecord
from pipelines.progress import Progress
from schemas import examples
from schemas.records import STAGE_CROP, STAGE_FETCH, Crop, Failure

MANIFEST_FILE = "manifest.parquet"
FAILURES_FILE = "failures.jsonl"
ATTRIBUTION_FILE = "ATTRIBUTION.md"
REPORT_FILE = "build_report.json"
COMPLETED_FILE = "COMPLETED"
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_VERSION = re.compile(r"^\d+\.\d+\.\d+$")


@dataclasses.dataclass(frozen=True)
class DatasetLayout:
    """Where a dataset's files go."""

    output_dir: str
    name: str
    version: str

    def __post_init__(self):
        if not _NAME.match(self.name):
            raise ValueError(f"--dataset_name {self.name!r}: use lowercase letters, digits "
                             f"and underscores, starting with a letter")
        if not _VERSION.match(self.version):
            raise ValueError(f"--dataset_version {self.version!r} is not semantic (like 1.0.0)")

    @property
    def dir(self) -> str:
        return files.join_path(self.output_dir, self.name, self.version)

    @property
    def parts_dir(self) -> str:
        """Scratch space for per-shard manifest parts, beside (not inside) the dataset."""
        return files.join_path(self.output_dir, self.name, f".{self.version}.parts")

    def shard_file(self, split: str, shard: int, num_shards: int) -> str:
        return examples.shard_file(self.name, split, shard, num_shards)

    def path(self, name: str) -> str:
        return files.join_path(self.dir, name)


def default_dataset_name(labels) -> str:
    """hamburger_sandwich from ("Hamburger", "Sandwich")."""
    slug = "_".join(re.sub(r"[^a-z0-9]+", "_", l.lower()).strip("_") for l in labels)
    slug = re.sub(r"_+", "_", slug).strip("_")[:80] or "dataset"
    return slug if slug[0].isalpha() else f"d_{slug}"


def shard_of(key: tuple[str, int], num_shards: int) -> int:
    digest = hashlib.sha256(f"{key[0]}/{key[1]}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % num_shards


@dataclasses.dataclass(frozen=True)
class Record:
    """A serialised example on its way to its shard."""

    key: tuple[str, int]
    split: str
    data: bytes
    crop_meta: Crop  # the crop without its JPEG (kept for the manifest)
    jpeg_sha256: str


@dataclasses.dataclass(frozen=True)
class ShardInfo:
    split: str
    shard: int
    num_shards: int
    count: int
    num_bytes: int
    sha256: str
    labels: tuple[tuple[str, int], ...] = ()  # (label, examples) in this shard


class _Serialize(beam.DoFn):
    def __init__(self, labels: tuple[str, ...]):
        self._labels = labels
        self._bytes = Metrics.counter("write", "example_bytes")
        self._busy_us = Metrics.distribution("timing", "serialize_us")

    def setup(self):
        self._serializer = examples.Serializer(self._labels)  # imports TensorFlow
        self._progress = Progress("crops serialized")

    def process(self, crop: Crop):
        start = time.perf_counter()
        data = self._serializer(crop)
        self._busy_us.update(int((time.perf_counter() - start) * 1e6))
        self._bytes.inc(len(data))
        self._progress.add(crops=1, bytes=len(data))
        yield Record(crop.key, crop.split, data, dataclasses.replace(crop, jpeg=b""),
                     hashlib.sha256(crop.jpeg).hexdigest())


class _WriteShard(beam.DoFn):
    """((split, shard), records) -> one shard file (temp name, then rename) + manifest part."""

    def __init__(self, layout: DatasetLayout):
        self._layout = layout
        self._shards = Metrics.counter("write", "shards")
        self._examples = Metrics.counter("write", "examples")
        self._busy_ms = Metrics.distribution("timing", "write_shard_ms")

    def process(self, element, num_shards: dict):
        (split, shard), records = element
        start = time.perf_counter()
        records = sorted(records, key=lambda r: r.key)
        n = num_shards[split]
        name = self._layout.shard_file(split, shard, n)
        digest = hashlib.sha256()
        with files.open_for_write(self._layout.path(name)) as f:
            for r in records:
                framed = tfrecord.frame(r.data)
                digest.update(framed)
                f.write(framed)
        num_bytes = sum(len(r.data) + 16 for r in records)
        rows = [examples.manifest_row(r.crop_meta, name, r.jpeg_sha256) for r in records]
        sink = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(rows, schema=examples.MANIFEST_SCHEMA), sink)
        files.write_bytes(files.join_path(self._layout.parts_dir, f"{split}-{shard:05d}.parquet"),
                          sink.getvalue())
        self._shards.inc()
        self._examples.inc(len(records))
        self._busy_ms.update(int((time.perf_counter() - start) * 1000))
        labels = collections.Counter(r.crop_meta.box.label for r in records)
        yield ShardInfo(split, shard, n, len(records), num_bytes, digest.hexdigest(),
                        tuple(sorted(labels.items())))


class WriteDataset(beam.PTransform):
    """Serialise crops and write them as deterministic TFDS shards.

    Args:
      layout: output folder, dataset name and version.
      labels: label display names (ClassLabel names, in index order).
      shard_size_bytes: target shard size, used when num_shards is 0.
      num_shards: a fixed shard count per split (0: from shard_size_bytes).

    Returns:
      PCollection of ShardInfo, one per non-empty shard.
    """

    def __init__(self, layout: DatasetLayout, labels, shard_size_bytes: int, num_shards: int = 0):
        super().__init__()
        self._layout, self._labels = layout, tuple(labels)
        self._shard_size, self._num_shards = shard_size_bytes, num_shards

    def expand(self, crops):
        records = crops | "Serialize" >> beam.ParDo(_Serialize(self._labels))
        fixed, size = self._num_shards, self._shard_size
        num_shards = (records
                      | "BytesPerSplit" >> beam.Map(lambda r: (r.split, len(r.data)))
                      | "SumPerSplit" >> beam.CombinePerKey(sum)
                      | "ShardsPerSplit" >> beam.MapTuple(
                          lambda split, total: (split, fixed or max(1, math.ceil(total / size)))))
        return (records
                | "AssignShard" >> beam.Map(
                    lambda r, n: ((r.split, shard_of(r.key, n[r.split])), r),
                    beam.pvalue.AsDict(num_shards))
                | "GroupShards" >> beam.GroupByKey()
                | "WriteShards" >> beam.ParDo(_WriteShard(self._layout),
                                              beam.pvalue.AsDict(num_shards)))


def finalize(layout: DatasetLayout, labels, shards: list[ShardInfo], failures: list[Failure],
             planned_boxes: int) -> dict:
    """Write everything beside the shards once they all exist; return the dataset's counts.

    Fills in empty shard files (a hash can leave a shard empty), writes dataset_info.json
    and features.json through tfds.folder_dataset.write_metadata with split infos from the
    writers' own counts (so nothing is read back), merges the manifest parts in shard
    order, and writes failures.jsonl (sorted) and ATTRIBUTION.md.
    """
    import tensorflow_datasets as tfds

    by_split: dict[str, dict[int, ShardInfo]] = collections.defaultdict(dict)
    for info in shards:
        by_split[info.split][info.shard] = info
    split_infos = []
    for split in sorted(by_split, key=_split_order):
        infos = by_split[split]
        n = next(iter(infos.values())).num_shards
        for shard in range(n):
            if shard not in infos:
                files.write_bytes(layout.path(layout.shard_file(split, shard, n)), b"")
        split_infos.append(tfds.core.SplitInfo(
            name=split, shard_lengths=[infos[s].count if s in infos else 0 for s in range(n)],
            num_bytes=sum(i.num_bytes for i in infos.values())))
    if split_infos:
        tfds.folder_dataset.write_metadata(
            data_dir=layout.dir, features=examples.features(labels), split_infos=split_infos,
            check_data=False, supervised_keys=(examples.IMAGE, examples.LABEL),
            description=f"Open Images crops of {', '.join(labels)}, built by open-sandwiches.")
    attribution = _merge_manifest(layout, by_split)
    failures = sorted(failures)
    files.write_bytes(layout.path(FAILURES_FILE),
                      "".join(f.to_json() + "\n" for f in failures).encode("utf-8"))
    files.write_bytes(layout.path(ATTRIBUTION_FILE), _attribution_md(attribution).encode("utf-8"))
    counts = {label: {split: 0 for split in examples.SPLIT_ORDER} for label in labels}
    for info in shards:
        for label, n in info.labels:
            counts[label][info.split] += n
    n_examples = sum(i.count for i in shards)
    # Boxes of planned tasks end as an example or a fetch/crop failure; scan and join
    # failures concern boxes that never became part of a task.
    after_plan = sum(1 for f in failures if f.mid and f.stage in (STAGE_FETCH, STAGE_CROP))
    return {
        "examples": {label: {**c, "total": sum(c.values())} for label, c in counts.items()},
        "splits": {s.name: {"examples": sum(s.shard_lengths), "shards": len(s.shard_lengths),
                            "bytes": int(s.num_bytes)} for s in split_infos},
        "failures_by_stage_and_reason": dict(sorted(collections.Counter(
            f"{f.stage}/{f.reason}" for f in failures).items())),
        "invariant": {"planned_boxes": planned_boxes, "examples": n_examples,
                      "fetch_and_crop_failures": after_plan,
                      "lost": planned_boxes - n_examples - after_plan},
        "shard_sha256": {layout.shard_file(i.split, i.shard, i.num_shards): i.sha256
                         for i in sorted(shards, key=lambda i: (i.split, i.shard))},
    }


def _split_order(split: str) -> tuple[int, str]:
    order = examples.SPLIT_ORDER
    return (order.index(split) if split in order else len(order), split)


def _merge_manifest(layout: DatasetLayout, by_split) -> dict[str, tuple[str, str, str, str]]:
    """Concatenate manifest parts (split order, then shard) into one file; return the
    photos' attribution, image_id -> (title, author, license, landing_url)."""
    attribution: dict[str, tuple[str, str, str, str]] = {}
    sink = io.BytesIO()
    with pq.ParquetWriter(sink, examples.MANIFEST_SCHEMA, compression="zstd") as writer:
        for split in sorted(by_split, key=_split_order):
            for shard in sorted(by_split[split]):
                part = files.join_path(layout.parts_dir, f"{split}-{shard:05d}.parquet")
                table = pq.read_table(io.BytesIO(files.read_bytes(part)))
                writer.write_table(table)
                for row in table.select(["image_id", "title", "author", "license",
                                         "landing_url"]).to_pylist():
                    attribution[row["image_id"]] = (row["title"], row["author"],
                                                    row["license"], row["landing_url"])
    files.write_bytes(layout.path(MANIFEST_FILE), sink.getvalue())
    files.remove_tree(layout.parts_dir)
    return attribution


def _attribution_md(photos: dict[str, tuple[str, str, str, str]]) -> str:
    lines = ["# Attribution", "",
             "The images in this dataset are crops of photographs from Open Images "
             "(https://storage.googleapis.com/openimages/web/index.html), each under the "
             "licence named below (mostly CC BY 2.0). The licences require crediting the "
             "author and naming the licence when you share the images or the dataset.", "",
             "| ImageID | Title | Author | Licence | Source |", "|---|---|---|---|---|"]
    esc = lambda s: (s or "").replace("|", "\\|").replace("\n", " ")
    for image_id in sorted(photos):
        title, author, license_, landing = photos[image_id]
        lines.append(f"| {image_id} | {esc(title)} | {esc(author)} | {esc(license_)} | {esc(landing)} |")
    return "\n".join(lines) + "\n"


def check_destination(layout: DatasetLayout, overwrite: bool) -> None:
    """Refuse to build over a completed dataset unless --overwrite; clear a partial one.

    Raises:
      FileExistsError: a completed dataset of this name and version is there.
    """
    if files.exists(layout.path(COMPLETED_FILE)) and not overwrite:
        raise FileExistsError(f"{layout.dir} already holds a completed dataset; pass "
                              f"--overwrite to rebuild it, or choose another --dataset_version")
    files.remove_tree(layout.dir)
    files.remove_tree(layout.parts_dir)


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


def write_json(path: str, data: dict) -> None:
    files.write_bytes(path, json.dumps(data, indent=2, sort_keys=False).encode("utf-8"))

