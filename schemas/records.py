"""Records that flow between stages, and the files that hold them.

The plan moves in Arrow batches, never one Python object per row: `BOX_BATCH` (scan ->
join), `IMAGE_BATCH` (scan -> join) and `PLAN_SCHEMA` (join -> plan files and the build),
with `FAILURE_SCHEMA` batches beside them. Only where a photo is fetched does a plan batch
become one `ImageTask` per photo (`Box`es and an `ImageRow`), the unit of download and
cropping. `Failure` is the one shape of every failure record, in every stage, as a
dataclass or as a FAILURE_SCHEMA row: the project's invariant (every selected box ends as
exactly one example or exactly one failure) is checked by counting these.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Iterator

import pyarrow as pa

SPLITS = ("train", "validation", "test")

# Stages, as they appear in failure records and reports.
STAGE_SCAN_BOXES = "scan_boxes"
STAGE_JOIN = "join"
STAGE_FETCH = "fetch"
STAGE_CROP = "crop"

# Failure reasons, what they mean and whether to retry them: schemas/failures.py.


@dataclasses.dataclass(frozen=True, order=True)
class Box:
    """One selected box, in the source photo's normalised coordinates (0..1).

    The coordinates are in the frame of the photo *after* the table's Rotation has been
    applied, as Open Images annotators saw it.
    """

    mid: str
    xmin: float
    xmax: float
    ymin: float
    ymax: float
    is_occluded: int
    is_truncated: int
    is_group_of: int
    is_depiction: int
    is_inside: int
    label: str = ""
    label_index: int = -1
    box_index: int = -1

    def canonical_key(self) -> tuple:
        """Identity of a box independent of row order and of the label set: used to order
        an image's boxes (and so assign box_index) and to detect duplicates."""
        return (self.mid, self.xmin, self.xmax, self.ymin, self.ymax, self.is_occluded,
                self.is_truncated, self.is_group_of, self.is_depiction, self.is_inside)


@dataclasses.dataclass(frozen=True)
class ImageRow:
    """The image-table fields a build needs, with empty text as "" and unknown numbers as None."""

    image_id: str
    subset: str
    original_url: str
    landing_url: str
    license: str
    author_profile_url: str
    author: str
    title: str
    original_size: int | None
    original_md5: str
    thumbnail_url: str
    rotation: int | None
    problem: str = ""  # non-empty: the row is unusable, and why


@dataclasses.dataclass(frozen=True)
class ImageTask:
    """One source photo and its selected boxes: the unit of download and cropping."""

    image: ImageRow
    boxes: tuple[Box, ...]
    split: str

    @property
    def image_id(self) -> str:
        return self.image.image_id


@dataclasses.dataclass(frozen=True, order=True)
class Failure:
    """A record that something was not turned into an example, and why.

    Attributes:
      stage: where it failed (STAGE_* constants, or a later stage's name).
      image_id: the photo, when known.
      box_index: the box within the photo, or -1 when the failure concerns a row or a photo
        before boxes were indexed.
      url: the URL involved, when any.
      reason: a short machine-readable reason (declared in schemas/failures.py).
      detail: human-readable context (the offending text, the HTTP status, ...).
      mid: the box's class MID, when known; lets reports count failures per class.
    """

    stage: str
    image_id: str
    box_index: int
    url: str
    reason: str
    detail: str
    mid: str = ""

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True, ensure_ascii=False)

    @classmethod
    def from_json(cls, line: str) -> "Failure":
        return cls(**json.loads(line))


FAILURE_SCHEMA = pa.schema([(f.name, pa.int32() if f.name == "box_index" else pa.string())
                            for f in dataclasses.fields(Failure)])


def failure_batch(failures: list[Failure]) -> pa.Table:
    """Failure records as a FAILURE_SCHEMA batch."""
    return pa.Table.from_pylist([dataclasses.asdict(f) for f in failures], schema=FAILURE_SCHEMA)


def failures_of(batch: pa.Table) -> list[Failure]:
    """A FAILURE_SCHEMA batch as Failure records."""
    return [Failure(**row) for row in batch.to_pylist()]


# One selected, valid box as the scan hands it to the join: the ImageID as its uint64
# (pipelines/keys.py), the MID as its place in the sorted list of selected MIDs (so integer
# order is string order), coordinates clamped to [0, 1].
BOX_BATCH = pa.schema([
    ("image_id", pa.uint64()),
    ("mid_index", pa.int16()),
    ("label_index", pa.int16()),
    ("xmin", pa.float64()),
    ("xmax", pa.float64()),
    ("ymin", pa.float64()),
    ("ymax", pa.float64()),
    ("is_occluded", pa.int8()),
    ("is_truncated", pa.int8()),
    ("is_group_of", pa.int8()),
    ("is_depiction", pa.int8()),
    ("is_inside", pa.int8()),
])

# One wanted image-table row: ImageRow's fields, with `problem` non-empty when the row is
# unusable (a Rotation that is not 0/90/180/270, a size that is not a number) and why.
IMAGE_BATCH = pa.schema([
    ("image_id", pa.uint64()),
    ("subset", pa.string()),
    ("original_url", pa.string()),
    ("landing_url", pa.string()),
    ("license", pa.string()),
    ("author_profile_url", pa.string()),
    ("author", pa.string()),
    ("title", pa.string()),
    ("original_size", pa.int64()),
    ("original_md5", pa.string()),
    ("thumbnail_url", pa.string()),
    ("rotation", pa.int16()),
    ("problem", pa.string()),
])

PLAN_SCHEMA = pa.schema([
    ("image_id", pa.string()),
    ("box_index", pa.int32()),
    ("mid", pa.string()),
    ("label", pa.string()),
    ("label_index", pa.int32()),
    ("xmin", pa.float32()),
    ("xmax", pa.float32()),
    ("ymin", pa.float32()),
    ("ymax", pa.float32()),
    ("is_occluded", pa.int8()),
    ("is_truncated", pa.int8()),
    ("is_group_of", pa.int8()),
    ("is_depiction", pa.int8()),
    ("is_inside", pa.int8()),
    ("split", pa.string()),
    ("original_url", pa.string()),
    ("thumbnail_url", pa.string()),
    ("original_md5", pa.string()),
    ("original_size", pa.int64()),
    ("rotation", pa.int16()),
    ("license", pa.string()),
    ("author", pa.string()),
    ("author_profile_url", pa.string()),
    ("title", pa.string()),
    ("landing_url", pa.string()),
    ("subset", pa.string()),
])
# What the join hands on (to the plan files and the build): PLAN_SCHEMA with the parsed
# float64 coordinates, which the crops are cut by; plan files store them as float32, like
# the TFDS BBoxFeature.
COORDINATES = ("xmin", "xmax", "ymin", "ymax")
PLAN_BATCH = pa.schema([pa.field(f.name, pa.float64()) if f.name in COORDINATES else f
                        for f in PLAN_SCHEMA])


def tasks_of(plan: pa.Table) -> Iterator[ImageTask]:
    """A PLAN_BATCH (sorted by image_id, box_index) as one ImageTask per photo: the
    only place the plan becomes Python objects, right where photos are fetched."""
    rows = plan.to_pylist()
    start = 0
    while start < len(rows):
        end = start + 1
        while end < len(rows) and rows[end]["image_id"] == rows[start]["image_id"]:
            end += 1
        r = rows[start]
        image = ImageRow(
            image_id=r["image_id"], subset=r["subset"], original_url=r["original_url"],
            landing_url=r["landing_url"], license=r["license"],
            author_profile_url=r["author_profile_url"], author=r["author"], title=r["title"],
            original_size=r["original_size"], original_md5=r["original_md5"],
            thumbnail_url=r["thumbnail_url"], rotation=r["rotation"])
        boxes = tuple(Box(mid=b["mid"], xmin=b["xmin"], xmax=b["xmax"], ymin=b["ymin"],
                          ymax=b["ymax"], is_occluded=b["is_occluded"],
                          is_truncated=b["is_truncated"], is_group_of=b["is_group_of"],
                          is_depiction=b["is_depiction"], is_inside=b["is_inside"],
                          label=b["label"], label_index=b["label_index"],
                          box_index=b["box_index"]) for b in rows[start:end])
        yield ImageTask(image=image, boxes=boxes, split=r["split"])
        start = end


@dataclasses.dataclass(frozen=True)
class FetchedPhoto:
    """A task whose source photo was downloaded and verified."""

    task: ImageTask
    data: bytes
    source: str  # which of --image_source gave it: original, thumbnail, cvdf, template
    url: str
    sha256: str = ""  # of `data`: lets a rebuild prove it saw the same source photo


@dataclasses.dataclass(frozen=True)
class Crop:
    """One box cut out of its photo: becomes one example of the dataset."""

    image: ImageRow
    box: Box
    split: str
    jpeg: bytes
    source: str
    url: str
    source_sha256: str = ""  # sha256 of the source photo's bytes (FetchedPhoto.sha256)

    @property
    def key(self) -> tuple[str, int]:
        return (self.image.image_id, self.box.box_index)
