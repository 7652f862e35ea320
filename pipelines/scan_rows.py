"""From parsed table rows to the plan's batches: validation and the user's filters, vectorised
(part of the scan stage's core; pipelines/scan.py parses, scan_stage.py runs both in Beam).

Pure functions over pyarrow tables; the scan DoFns call them once per byte range, and no
row becomes a Python object unless it fails (its failure record quotes it).

Bad values become failure records with a reason, never exceptions: NaN or out-of-range
coordinates, XMin >= XMax, Is* flags other than -1/0/1, ImageIDs that are not 16 lowercase
hex digits (an ImageID later names a cache file, so `../../etc` must never get that far).
"""
from __future__ import annotations

import collections
import dataclasses
import io

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines import keys
from schemas import openimages
from schemas import failures
from schemas.records import BOX_BATCH, FAILURE_SCHEMA, IMAGE_BATCH, STAGE_SCAN_BOXES, ImageRow

BAD_BOX = failures.declared(STAGE_SCAN_BOXES, "bad_box")
BAD_IMAGE_ID = failures.declared(STAGE_SCAN_BOXES, "bad_image_id")
FLAG_MODES = ("include", "exclude", "only")
# Coordinates written by pandas round-trips carry 1-ulp noise (1.0000000000000002).
_COORD_TOLERANCE = 1e-6

BOX_COLUMNS = ("ImageID", "LabelName", "XMin", "XMax", "YMin", "YMax") + openimages.IS_FLAGS
_FLAG_FIELDS = dict(zip(openimages.IS_FLAGS, ("is_occluded", "is_truncated", "is_group_of",
                                               "is_depiction", "is_inside")))
# Why a valid box was left out by the user's filters (not failures: the user asked for it).
FILTER_REASONS = tuple(f"filtered_{f}" for f in _FLAG_FIELDS.values()) + ("filtered_min_box_size",)
_ROTATIONS = (0, 90, 180, 270)
_IMAGE_FIELDS = dict(zip(openimages.variant_by_name("images_12").columns,
                         [f.name for f in IMAGE_BATCH][:12]))


@dataclasses.dataclass(frozen=True)
class BoxFilters:
    """The user's box filters. Each Is* flag: include (any value), exclude (drop boxes whose
    flag is 1; unknown -1 passes), only (keep boxes whose flag is 1; unknown -1 fails).
    min_box_size: the smallest box side kept, as a fraction of the photo's side."""

    is_occluded: str = "include"
    is_truncated: str = "include"
    is_group_of: str = "include"
    is_depiction: str = "include"
    is_inside: str = "include"
    min_box_size: float = 0.0

    def __post_init__(self):
        for field in _FLAG_FIELDS.values():
            if getattr(self, field) not in FLAG_MODES:
                raise ValueError(f"--{field} must be one of {FLAG_MODES}, "
                                 f"not {getattr(self, field)!r}")
        if not 0.0 <= self.min_box_size < 1.0:
            raise ValueError("--min_box_size is a fraction of the image side, in [0, 1)")


def _valid_coord(col: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return (col >= -_COORD_TOLERANCE) & (col <= 1.0 + _COORD_TOLERANCE)  # False for NaN


def _numbers(t: pa.Table, name: str, dtype, fill) -> np.ndarray:
    return np.asarray(pc.fill_null(t[name], fill).to_numpy(), dtype)


def _clamp(x: np.ndarray) -> np.ndarray:
    """min(max(x, 0.0), 1.0) as Python computes it, -0.0 included."""
    return np.where(x < 0.0, 0.0, np.where(x > 1.0, 1.0, x))


def box_batch(t: pa.Table, mids: tuple[str, ...], mid_to_index: dict[str, int],
              filters: BoxFilters) -> tuple[pa.Table, pa.Table, dict[str, int]]:
    """Validate and filter box rows already restricted to the selected MIDs.

    Args:
      t: rows with BOX_COLUMNS whose LabelName is selected.
      mids: the selected MIDs, sorted (a box's `mid_index` is its place here).
      mid_to_index: selected MID -> label index.
      filters: the user's Is* and size filters.

    Returns:
      (BOX_BATCH of the boxes kept, FAILURE_SCHEMA batch, rows dropped by each filter).
    """
    counts: dict[str, int] = collections.Counter()
    if t.num_rows == 0:
        return BOX_BATCH.empty_table(), FAILURE_SCHEMA.empty_table(), counts
    image_ids, id_ok = keys.image_ids_to_u64(t["ImageID"])
    coords = {c: _numbers(t, c, np.float64, np.nan) for c in ("XMin", "XMax", "YMin", "YMax")}
    flags = {f: _numbers(t, f, np.int64, 99) for f in openimages.IS_FLAGS}
    box_ok = np.ones(t.num_rows, bool)
    for c in coords.values():
        box_ok &= _valid_coord(c)
    box_ok &= (coords["XMin"] < coords["XMax"]) & (coords["YMin"] < coords["YMax"])
    for f in flags.values():
        box_ok &= (f >= -1) & (f <= 1)
    failures = _box_failures(t, ~id_ok, ~box_ok & id_ok)
    valid = id_ok & box_ok

    dropped = np.full(t.num_rows, -1)
    for reason, (flag, field) in enumerate(_FLAG_FIELDS.items()):
        mode = getattr(filters, field)
        if mode == "exclude":
            dropped[(dropped < 0) & (flags[flag] == 1)] = reason
        elif mode == "only":
            dropped[(dropped < 0) & (flags[flag] != 1)] = reason
    if filters.min_box_size > 0:
        small = ((coords["XMax"] - coords["XMin"] < filters.min_box_size)
                 | (coords["YMax"] - coords["YMin"] < filters.min_box_size))
        dropped[(dropped < 0) & small] = len(FILTER_REASONS) - 1
    for reason, n in zip(*np.unique(dropped[valid & (dropped >= 0)], return_counts=True)):
        counts[FILTER_REASONS[reason]] = int(n)
    keep = valid & (dropped < 0)

    mid_index = np.asarray(pc.index_in(t["LabelName"], value_set=pa.array(mids)).to_numpy(
        zero_copy_only=False), np.int16)[keep]
    label_of_mid = np.array([mid_to_index[m] for m in mids], np.int16)
    columns = {"image_id": image_ids[keep], "mid_index": mid_index,
               "label_index": label_of_mid[mid_index]}
    for c, name in zip(("XMin", "XMax", "YMin", "YMax"), ("xmin", "xmax", "ymin", "ymax")):
        columns[name] = _clamp(coords[c][keep])
    for flag, field in _FLAG_FIELDS.items():
        columns[field] = flags[flag][keep].astype(np.int8)
    return pa.Table.from_pydict(columns, schema=BOX_BATCH), failures, counts


def _box_failures(t: pa.Table, bad_id: np.ndarray, bad_box: np.ndarray) -> pa.Table:
    """Failure records for rows with a bad ImageID or a bad box, quoting each row."""
    rows = t.filter(pa.array(bad_id | bad_box)).select(list(BOX_COLUMNS)).to_pylist()
    which = bad_id[bad_id | bad_box]
    return pa.Table.from_pylist([{
        "stage": STAGE_SCAN_BOXES, "image_id": "" if is_bad_id else row["ImageID"],
        "box_index": -1, "url": "", "reason": BAD_IMAGE_ID if is_bad_id else BAD_BOX,
        "detail": "row " + ",".join(str(row[c]) for c in BOX_COLUMNS)[:400],
        "mid": row["LabelName"]} for row, is_bad_id in zip(rows, which)], schema=FAILURE_SCHEMA)


def image_batch(t: pa.Table) -> pa.Table:
    """Image-table rows (already restricted to wanted photos, with scan's `problem`
    column) as an IMAGE_BATCH. A Rotation other than 0/90/180/270 (or empty) is a problem,
    which the join turns into failure records for the photo's boxes."""
    ids, _ = keys.image_ids_to_u64(t["ImageID"])
    rotation = t["Rotation"] if "Rotation" in t.column_names else pa.nulls(t.num_rows, pa.float32())
    rot = np.asarray(pc.fill_null(rotation, 0.0).to_numpy(), np.float64)
    odd = np.asarray(rotation.is_valid(), bool) & ~np.isin(rot, _ROTATIONS)
    problems = t["problem"].to_pylist()
    for i in np.flatnonzero(odd):
        value = rotation[int(i)].as_py()
        problems[i] = problems[i] or f"Rotation {value!r} is not one of 0, 90, 180, 270"
    columns = {"image_id": ids}
    for column, field in _IMAGE_FIELDS.items():
        if field in ("image_id", "rotation"):
            continue
        columns[field] = t[column] if column in t.column_names else pa.array(
            [""] * t.num_rows)
    columns["rotation"] = pc.if_else(pa.array(odd), None, pc.cast(rotation, pa.int16(),
                                                                    safe=False))
    columns["problem"] = pa.array(problems, pa.string())
    return pa.table(columns).cast(IMAGE_BATCH)


def load_image_rows(path: str) -> list[ImageRow]:
    """A whole (small) image table as ImageRows, converted exactly as the scan converts
    them: for tests, benchmarks and tools that need the rows without a pipeline."""
    from pipelines import files, scan
    table = scan.open_table(path, openimages.IMAGES)
    out = []
    with io.BytesIO(files.read_bytes(path)) as f:
        for _, offset, data in scan.aligned_ranges(f, table, max(table.size, 1)):
            parsed, _ = scan.parse_images(data, table, offset, scan.all_image_ids(data))
            for row, image_id in zip(image_batch(parsed).to_pylist(),
                                     parsed["ImageID"].to_pylist()):
                row["image_id"] = image_id
                out.append(ImageRow(**row))
    return out
