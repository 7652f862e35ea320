"""The Open Images tables we read: their columns, pyarrow types, and header detection.

Google has published the same tables with small differences across versions (V4 to V7):
class lists with and without a header row, box tables with 13 or 21 columns, image tables
with or without `Rotation`. Every reader in this project goes through `detect_variant`, so a
file in an unknown shape fails at once with a message that names the file and the columns
it found, instead of producing silently wrong rows later.

Facts behind the variants (see also `pipelines/data/NOTICE.md`):
- class lists: V4/V5/V6 `class-descriptions-boxable.csv` have no header; V7's
  `oidv7-class-descriptions-boxable.csv` has `LabelName,DisplayName` and CRLF endings.
- box tables: 13 columns in V4/V5 (all splits) and in V6/V7 validation/test; 21 columns in
  `oidv6-train-annotations-bbox.csv` (adds the XClick* points).
- image tables: 12 columns with `Rotation` (`*-images-with-rotation.csv`,
  `*-images-boxable-with-rotation.csv`); the 11-column V4 form lacks it.
"""
from __future__ import annotations

import base64
import dataclasses
import hashlib

import pyarrow as pa

VERSIONS = ("v4", "v5", "v6", "v7")

CLASS_DESCRIPTIONS = "class_descriptions"
BOXES = "boxes"
IMAGES = "images"

IS_FLAGS = ("IsOccluded", "IsTruncated", "IsGroupOf", "IsDepiction", "IsInside")

_BOX_13 = (
    ("ImageID", pa.string()),
    ("Source", pa.string()),
    ("LabelName", pa.string()),
    ("Confidence", pa.float32()),
    ("XMin", pa.float64()),
    ("XMax", pa.float64()),
    ("YMin", pa.float64()),
    ("YMax", pa.float64()),
) + tuple((flag, pa.int64()) for flag in IS_FLAGS)  # wide: 128 is a bad flag, not a bad row

_XCLICKS = tuple((f"XClick{i}{axis}", pa.float32()) for axis in "XY" for i in range(1, 5))

_IMAGES_11 = (
    ("ImageID", pa.string()),
    ("Subset", pa.string()),
    ("OriginalURL", pa.string()),
    ("OriginalLandingURL", pa.string()),
    ("License", pa.string()),
    ("AuthorProfileURL", pa.string()),
    ("Author", pa.string()),
    ("Title", pa.string()),
    ("OriginalSize", pa.int64()),
    ("OriginalMD5", pa.string()),
    ("Thumbnail300KURL", pa.string()),
)


@dataclasses.dataclass(frozen=True)
class TableVariant:
    """One known layout of one kind of Open Images table.

    Attributes:
      kind: CLASS_DESCRIPTIONS, BOXES or IMAGES.
      name: a short stable name, recorded in plans and reports.
      columns: the column names, in file order.
      types: the pyarrow type each column is parsed as.
      has_header: whether the file's first line names the columns.
      versions: the Open Images versions that publish this layout.
      files: official file names that use it, for error messages.
    """

    kind: str
    name: str
    columns: tuple[str, ...]
    types: tuple[pa.DataType, ...]
    has_header: bool
    versions: tuple[str, ...]
    files: tuple[str, ...]

    def arrow_types(self, include: tuple[str, ...] | None = None) -> dict[str, pa.DataType]:
        """Column name -> type, for pyarrow's ConvertOptions(column_types=...)."""
        wanted = set(include) if include is not None else set(self.columns)
        return {c: t for c, t in zip(self.columns, self.types) if c in wanted}


def _variant(kind, name, cols, has_header, versions, files) -> TableVariant:
    return TableVariant(kind, name, tuple(c for c, _ in cols), tuple(t for _, t in cols),
                        has_header, versions, files)


_CLASS_COLS = (("LabelName", pa.string()), ("DisplayName", pa.string()))

VARIANTS: tuple[TableVariant, ...] = (
    _variant(CLASS_DESCRIPTIONS, "class_descriptions_noheader", _CLASS_COLS, False,
             ("v4", "v5", "v6"), ("class-descriptions-boxable.csv",)),
    _variant(CLASS_DESCRIPTIONS, "class_descriptions_header", _CLASS_COLS, True,
             ("v7",), ("oidv7-class-descriptions-boxable.csv",)),
    _variant(BOXES, "boxes_13", _BOX_13, True, VERSIONS,
             ("train-annotations-bbox.csv", "validation-annotations-bbox.csv",
              "test-annotations-bbox.csv")),
    _variant(BOXES, "boxes_21", _BOX_13 + _XCLICKS, True, ("v6", "v7"),
             ("oidv6-train-annotations-bbox.csv",)),
    _variant(IMAGES, "images_12", _IMAGES_11 + (("Rotation", pa.float32()),), True, VERSIONS,
             ("train-images-boxable-with-rotation.csv", "validation-images-with-rotation.csv",
              "test-images-with-rotation.csv", "oidv6-train-images-with-labels-with-rotation.csv")),
    _variant(IMAGES, "images_11", _IMAGES_11, True, ("v4",),
             ("train-images-boxable.csv", "validation-images.csv", "test-images.csv")),
)

# Alternative header rows seen in the wild for the class list; they name the same two columns.
_CLASS_HEADER_ALIASES = {("labelname", "displayname"), ("id", "name"), ("label", "name")}


def md5_base64(data: bytes) -> str:
    """The image table's OriginalMD5 format: base64 of the binary MD5 (24 characters)."""
    return base64.b64encode(hashlib.md5(data).digest()).decode("ascii")


class TableFormatError(ValueError):
    """A table's header matches none of the known layouts of its kind."""


def split_header(line: bytes | str) -> tuple[str, ...]:
    """Split a header line into column names, tolerating a BOM, CRLF and surrounding spaces."""
    if isinstance(line, bytes):
        line = line.decode("utf-8-sig", errors="replace")
    line = line.lstrip("\ufeff").rstrip("\r\n")
    return tuple(c.strip().strip('"') for c in line.split(","))


def detect_variant(kind: str, first_line: bytes | str, path: str = "<table>") -> TableVariant:
    """Return the layout of a table from its first line.

    Args:
      kind: CLASS_DESCRIPTIONS, BOXES or IMAGES.
      first_line: the file's first line (header, or first data row for headerless lists).
      path: the file's name, used in the error message.

    Raises:
      TableFormatError: naming the file, the columns found and the layouts expected.
    """
    found = split_header(first_line)
    candidates = [v for v in VARIANTS if v.kind == kind]
    if not candidates:
        raise ValueError(f"unknown table kind {kind!r}")
    if kind == CLASS_DESCRIPTIONS:
        if found and found[0].startswith(("/m/", "/g/")) and len(found) >= 2:
            return candidates[0]
        if tuple(c.lower() for c in found) in _CLASS_HEADER_ALIASES:
            return candidates[1]
    else:
        for variant in candidates:
            if found == variant.columns:
                return variant
    expected = "; ".join(
        f"{v.name} ({', '.join(v.files)}): {','.join(v.columns) if v.has_header else 'no header, MID,DisplayName rows'}"
        for v in candidates)
    raise TableFormatError(
        f"{path}: its first line has {len(found)} columns {','.join(found)!r}, which match no "
        f"known Open Images {kind} table. Expected one of: {expected}. Check that the file is "
        f"the right table (boxes vs images vs class list) and is not compressed.")


def variant_by_name(name: str) -> TableVariant:
    """Look a layout up by its stable name (as recorded in plans and reports)."""
    for v in VARIANTS:
        if v.name == name:
            return v
    raise KeyError(name)
