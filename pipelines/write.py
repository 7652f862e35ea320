"""The write stage's pure core: the dataset's layout, keys and shard rule, and `finalize`.

pipelines/write_stage.py runs it in Beam. What a dataset is:

    <output_dir>/<name>/<version>/<name>-<split>.tfrecord-NNNNN-of-MMMMM
                                  dataset_info.json, features.json   (tfds's own writer)
                                  manifest.parquet, failures.jsonl, ATTRIBUTION.md

Determinism: each example is keyed by (image_id, box_index); its shard is a hash of the
key; a shard's examples are sorted by key and serialised with deterministic=True; the
shard count comes from the split's total size (or --num_shards). So two builds of one
config give byte-identical shards whatever the runner, worker count or arrival order.
Each shard is written to a temp name and renamed. `finalize` runs once, after every shard
(side inputs make it wait), and writes the metadata, manifest, failures and attribution.
"""
from __future__ import annotations

import collections
import dataclasses
import hashlib
import io
import json
import re
import struct

import pyarrow.parquet as pq

from pipelines import failures, files, runs, shardio
from schemas import examples
from schemas.records import SPLITS

MANIFEST_FILE = "manifest.parquet"
FAILURES_FILE = failures.FAILURES_FILE
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
    file_format: str = "tfrecord"
    image_size: int = 0  # side of every crop, declared in the features (0: unknown)

    def __post_init__(self):
        shardio.check_format(self.file_format)
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
        """Scratch space beside (not inside) the dataset: runs, spilled batches, manifest
        parts. Removed when the dataset is finalised, and by the next build if killed."""
        return files.join_path(self.output_dir, self.name, f".{self.version}.parts")

    @property
    def report_part(self) -> str:
        """The job's half of build_report.json (pipelines/report.py write_part)."""
        return files.join_path(self.output_dir, self.name, f".{self.version}.report-part.json")

    @property
    def runs_dir(self) -> str:
        return files.join_path(self.parts_dir, "runs")

    def manifest_part(self, split: str, shard: int) -> str:
        return files.join_path(self.parts_dir, "manifest", f"{split}-{shard:05d}.parquet")

    def shard_file(self, split: str, shard: int, num_shards: int) -> str:
        return examples.shard_file(self.name, split, shard, num_shards, self.file_format)

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
class ShardInfo:
    split: str
    shard: int
    num_shards: int
    count: int
    num_bytes: int
    sha256: str
    labels: tuple[tuple[str, int], ...] = ()  # (label, examples) in this shard


EXAMPLES, ATTRIBUTION = "examples", "attribution"
_LENGTH = struct.Struct(">I")


def example_key(image_id: str, box_index: int) -> bytes:
    """An example's run key: bytes in (image_id, box_index) order (ImageIDs are 16 hex)."""
    return image_id.encode("ascii") + box_index.to_bytes(4, "big")


def pack_example(data: bytes, manifest_row: dict) -> tuple[bytes, ...]:
    """A run value (in parts): the serialised example, then its manifest row."""
    return _LENGTH.pack(len(data)), data, json.dumps(manifest_row).encode("utf-8")


def unpack_example(value: bytes) -> tuple[memoryview, dict]:
    (n,) = _LENGTH.unpack_from(value)
    return memoryview(value)[4:4 + n], json.loads(value[4 + n:])


def finalize(layout: DatasetLayout, labels, shards: list[ShardInfo],
             failure_slices: list[runs.RunSlice], attribution_slices: list[runs.RunSlice],
             failure_counts: dict, planned_boxes: int) -> dict:
    """Write everything beside the shards once they all exist; return the dataset's counts.

    Fills in empty shard files (a hash can leave a shard empty), writes dataset_info.json
    and features.json through tfds.folder_dataset.write_metadata with split infos from the
    writers' own counts (so nothing is read back), and streams the manifest parts (in
    shard order), the failure runs (in record order) and the attribution runs (one line
    per photo, in ImageID order) into their files: memory stays a buffer per part or run.

    Args:
      failure_counts: totals of failures.count_failures.
    """
    import tensorflow_datasets as tfds

    by_split: dict[str, dict[int, ShardInfo]] = collections.defaultdict(dict)
    for info in shards:
        by_split[info.split][info.shard] = info
    split_infos = []
    digests = {layout.shard_file(i.split, i.shard, i.num_shards): i.sha256 for i in shards}
    for split in sorted(by_split, key=_split_order):
        infos = by_split[split]
        n = next(iter(infos.values())).num_shards
        for shard in range(n):
            if shard not in infos:  # a valid empty file of the format
                name = layout.shard_file(split, shard, n)
                with shardio.open_shard(layout.path(name), layout.file_format) as empty:
                    pass
                digests[name] = empty.sha256
        split_infos.append(tfds.core.SplitInfo(
            name=split, shard_lengths=[infos[s].count if s in infos else 0 for s in range(n)],
            num_bytes=sum(i.num_bytes for i in infos.values())))
    if split_infos:
        from pipelines.about import dataset_metadata
        tfds.folder_dataset.write_metadata(
            data_dir=layout.dir, features=examples.features(labels, layout.image_size), split_infos=split_infos,
            check_data=False, supervised_keys=(examples.IMAGE, examples.LABEL),
            **dataset_metadata(labels))
    file_digests = {MANIFEST_FILE: _merge_manifest(layout, by_split),
                    FAILURES_FILE: failures.merge_failures(failure_slices,
                                                           layout.path(FAILURES_FILE)),
                    ATTRIBUTION_FILE: _write_attribution(attribution_slices,
                                                         layout.path(ATTRIBUTION_FILE))}
    files.remove_tree(layout.parts_dir)
    counts = {label: {split: 0 for split in SPLITS} for label in labels}
    for info in shards:
        for label, n in info.labels:
            counts[label][info.split] += n
    n_examples = sum(i.count for i in shards)
    after_plan = failure_counts.get(failures.AFTER_PLAN, 0)
    return {
        "examples": {label: {**c, "total": sum(c.values())} for label, c in counts.items()},
        "splits": {s.name: {"examples": sum(s.shard_lengths), "shards": len(s.shard_lengths),
                            "bytes": int(s.num_bytes)} for s in split_infos},
        "failures_by_stage_and_reason": failures.by_reason(failure_counts),
        "invariant": {"planned_boxes": planned_boxes, "examples": n_examples,
                      "fetch_and_crop_failures": after_plan,
                      "lost": planned_boxes - n_examples - after_plan},
        "shard_sha256": dict(sorted(digests.items())),
        "file_sha256": file_digests,
    }


def _split_order(split: str) -> tuple[int, str]:
    order = SPLITS
    return (order.index(split) if split in order else len(order), split)


def _merge_manifest(layout: DatasetLayout, by_split) -> str:
    """Stream the manifest parts (split order, then shard) into one file; its sha256."""
    with files.open_for_write_hashed(layout.path(MANIFEST_FILE)) as f:
        with pq.ParquetWriter(f, examples.MANIFEST_SCHEMA, compression="zstd") as writer:
            for split in sorted(by_split, key=_split_order):
                for shard in sorted(by_split[split]):
                    part = layout.manifest_part(split, shard)
                    writer.write_table(pq.read_table(io.BytesIO(files.read_bytes(part))))
    return f.hexdigest()


_ATTRIBUTION_HEAD = (
    "# Attribution\n\n"
    "The images in this dataset are crops of photographs from Open Images "
    "(https://storage.googleapis.com/openimages/web/index.html), each under the "
    "licence named below (mostly CC BY 2.0). The licences require crediting the "
    "author and naming the licence when you share the images or the dataset.\n\n"
    "| ImageID | Title | Author | Licence | Source |\n|---|---|---|---|---|\n")


def _write_attribution(slices: list[runs.RunSlice], path: str) -> str:
    """ATTRIBUTION.md: one row per photo with an example, in ImageID order, streamed from
    the attribution runs (every crop of a photo wrote the same entry); its sha256."""
    esc = lambda s: (s or "").replace("|", "\\|").replace("\n", " ")
    with files.open_for_write_hashed(path) as f:
        f.write(_ATTRIBUTION_HEAD.encode("utf-8"))
        last = None
        for key, value in runs.merge(slices):
            if key == last:
                continue
            last = key
            title, author, license_, landing = json.loads(value)
            f.write(f"| {key.decode('ascii')} | {esc(title)} | {esc(author)} | "
                    f"{esc(license_)} | {esc(landing)} |\n".encode("utf-8"))
    return f.hexdigest()


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
    files.remove(layout.report_part)


def write_json(path: str, data: dict) -> None:
    files.write_bytes(path, json.dumps(data, indent=2, sort_keys=False).encode("utf-8"))

