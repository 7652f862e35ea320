"""From filtered pyarrow tables to Boxes and ImageRows: validation and the user's filters.

Pure functions over pyarrow tables; the scan DoFns call them once per byte range. All
checks are vectorised, and only rows that survive (or fail) become Python objects.

Bad values become failure records with a reason, never exceptions: NaN or out-of-range
coordinates, XMin >= XMax, Is* flags other than -1/0/1, ImageIDs that are not 16 hex digits
(an ImageID later names a cache file, so `../../etc` must never get that far).
"""
from __future__ import annotations

import collections
import dataclasses
import io
from typing import Mapping

import pyarrow as pa
import pyarrow.compute as pc

from schemas import openimages
from schemas.records import (REASON_BAD_BOX, REASON_BAD_IMAGE_ID, STAGE_SCAN_BOXES, Box,
                             Failure, ImageRow)

FLAG_MODES = ("include", "exclude", "only")
IMAGE_ID_PATTERN = r"^[0-9a-f]{16}$"
# Coordinates written by pandas round-trips carry 1-ulp noise (1.0000000000000002).
_COORD_TOLERANCE = 1e-6

BOX_COLUMNS = ("ImageID", "LabelName", "XMin", "XMax", "YMin", "YMax") + openimages.IS_FLAGS
_FLAG_FIELDS = dict(zip(openimages.IS_FLAGS, ("is_occluded", "is_truncated", "is_group_of",
                                               "is_depiction", "is_inside")))
# Why a valid box was left out by the user's filters (not failures: the user asked for it).
FILTER_REASONS = tuple(f"filtered_{f}" for f in _FLAG_FIELDS.values()) + ("filtered_min_box_size",)


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


def _valid_coord(col: pa.ChunkedArray) -> pa.ChunkedArray:
    col = pc.cast(col, pa.float64())
    finite = pc.and_kleene(pc.is_valid(col), pc.invert(pc.is_nan(col)))
    in_range = pc.and_(pc.greater_equal(col, -_COORD_TOLERANCE),
                       pc.less_equal(col, 1.0 + _COORD_TOLERANCE))
    return pc.fill_null(pc.and_kleene(finite, in_range), False)


def _box_problems(t: pa.Table) -> list[str]:
    """For each row: '' if valid, else the reason code (validation, not the user's filters)."""
    id_ok = pc.fill_null(pc.match_substring_regex(t["ImageID"], IMAGE_ID_PATTERN), False)
    coords_ok = pc.and_(pc.and_(_valid_coord(t["XMin"]), _valid_coord(t["XMax"])),
                        pc.and_(_valid_coord(t["YMin"]), _valid_coord(t["YMax"])))
    ordered = pc.fill_null(pc.and_(pc.less(t["XMin"], t["XMax"]), pc.less(t["YMin"], t["YMax"])),
                           False)
    flags_ok = pa.chunked_array([pa.array([True] * t.num_rows)])
    for flag in openimages.IS_FLAGS:
        ok = pc.fill_null(pc.is_in(t[flag], value_set=pa.array([-1, 0, 1], pa.int8())), False)
        flags_ok = pc.and_(flags_ok, ok)
    box_ok = pc.and_(pc.and_(coords_ok, ordered), flags_ok)
    return [("" if b else REASON_BAD_BOX) if i else REASON_BAD_IMAGE_ID
            for i, b in zip(id_ok.to_pylist(), box_ok.to_pylist())]


def _clamp(x: float) -> float:
    return min(max(x, 0.0), 1.0)


def select_boxes(t: pa.Table, mid_to_index: Mapping[str, int], labels: tuple[str, ...],
                 filters: BoxFilters) -> tuple[list[tuple[str, Box]], list[Failure], dict[str, int]]:
    """Validate and filter box rows already restricted to the selected MIDs.

    Args:
      t: rows with BOX_COLUMNS whose LabelName is selected.
      mid_to_index: selected MID -> label index.
      labels: label display names.
      filters: the user's Is* and size filters.

    Returns:
      ((ImageID, Box) pairs, failure records, counts of rows dropped by each filter).
    """
    counts: dict[str, int] = collections.Counter()
    if t.num_rows == 0:
        return [], [], counts
    problems = _box_problems(t)
    rows = t.to_pylist()
    keep = []
    failures = []
    for row, problem in zip(rows, problems):
        if problem:
            failures.append(Failure(
                STAGE_SCAN_BOXES, row["ImageID"] if problem != REASON_BAD_IMAGE_ID else "", -1,
                "", problem, "row " + ",".join(str(row[c]) for c in BOX_COLUMNS)[:400],
                row["LabelName"]))
            continue
        dropped = _filtered_by(row, filters)
        if dropped:
            counts[dropped] += 1
            continue
        index = mid_to_index[row["LabelName"]]
        keep.append((row["ImageID"], Box(
            mid=row["LabelName"], xmin=_clamp(row["XMin"]), xmax=_clamp(row["XMax"]),
            ymin=_clamp(row["YMin"]), ymax=_clamp(row["YMax"]),
            is_occluded=row["IsOccluded"], is_truncated=row["IsTruncated"],
            is_group_of=row["IsGroupOf"], is_depiction=row["IsDepiction"],
            is_inside=row["IsInside"], label=labels[index], label_index=index)))
    return keep, failures, counts


def _filtered_by(row: dict, filters: BoxFilters) -> str:
    """The name of the first user filter that drops this row, or ''."""
    for flag, field in _FLAG_FIELDS.items():
        mode = getattr(filters, field)
        if mode == "exclude" and row[flag] == 1:
            return f"filtered_{field}"
        if mode == "only" and row[flag] != 1:
            return f"filtered_{field}"
    if filters.min_box_size > 0 and (
            row["XMax"] - row["XMin"] < filters.min_box_size
            or row["YMax"] - row["YMin"] < filters.min_box_size):
        return "filtered_min_box_size"
    return ""


_ROTATIONS = (0, 90, 180, 270)


def load_image_rows(path: str) -> list[ImageRow]:
    """A whole (small) image table as ImageRows, converted exactly as the scan converts
    them: for tests, benchmarks and tools that need the rows without a pipeline."""
    import pyarrow.csv as pacsv

    from pipelines import csvscan, files
    layout = csvscan.open_table(path, openimages.IMAGES).layout
    table = pacsv.read_csv(
        io.BytesIO(files.read_bytes(path)),
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(column_types=layout.arrow_types(),
                                             strings_can_be_null=False,
                                             quoted_strings_can_be_null=False))
    return [row for _, row in image_rows(table)]


def image_rows(t: pa.Table) -> list[tuple[str, ImageRow]]:
    """Turn image-table rows (already restricted to wanted ImageIDs) into ImageRows.

    A Rotation other than 0/90/180/270 (or empty) marks the row with a `problem`, which the
    join turns into failure records for its boxes.
    """
    out = []
    for row in t.to_pylist():
        rotation = row.get("Rotation")
        problem = ""
        if rotation is not None:
            if rotation != rotation or rotation not in _ROTATIONS:  # NaN or odd angle
                problem = f"Rotation {rotation!r} is not one of 0, 90, 180, 270"
                rotation = None
            else:
                rotation = int(rotation)
        out.append((row["ImageID"], ImageRow(
            image_id=row["ImageID"], subset=row["Subset"], original_url=row["OriginalURL"],
            landing_url=row["OriginalLandingURL"], license=row["License"],
            author_profile_url=row["AuthorProfileURL"], author=row["Author"],
            title=row["Title"], original_size=row["OriginalSize"],
            original_md5=row["OriginalMD5"], thumbnail_url=row["Thumbnail300KURL"],
            rotation=rotation, problem=problem)))
    return out
