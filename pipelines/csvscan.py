"""Reading big Open Images CSVs in byte ranges with pyarrow: the pure core of the scan.

Why byte ranges: the box table is 14.6M rows (1.2-2.3 GB). A range is the unit of
parallelism (Dataflow and Flink spread ranges over workers), and each range is parsed by
pyarrow's C++ CSV reader and filtered vectorised, so only matching rows ever become Python
objects. On this machine a per-row Beam parse of the box table took 135 s where a typed
pyarrow read took 3.5 s.

How a range finds its rows: a range [start, end) owns every record that *starts* inside
it. A record starts right after a newline and begins with 16 hex digits and a comma (every
Open Images table begins with ImageID; a quoted ImageID is accepted too). If no such line
appears within 1 MiB, the next plain line start is used instead, so a file without valid
ImageIDs is still split into bounded ranges. Requiring that shape, rather than any newline,
keeps a quoted title with a newline in it inside one record; a line that does not have
that shape (a bad ImageID, say) simply stays with the record before the boundary, and
pyarrow still parses it as its own row, so it becomes a failure record, not a lost row.
Both neighbours of a boundary apply the same rule, so every byte belongs to one range.

Rows that do not parse (wrong column count, a value that is not a number) become
`BadRow`s with their text; the scan never raises on data.
"""
from __future__ import annotations

import dataclasses
import io
import re
from typing import BinaryIO

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from pipelines import files
from schemas import openimages

_ROW_START = re.compile(rb'\n"?[0-9a-fA-F]{16}"?,')
_PROBE = 1 << 16
# If no line in this many bytes starts like a record (a file without hex ImageIDs), fall
# back to the next plain line start, so one range can never swallow a whole file.
_RESYNC_LIMIT = 1 << 20
DEFAULT_RANGE_BYTES = 64 << 20


@dataclasses.dataclass(frozen=True)
class TableFile:
    """A CSV table checked at pipeline-construction time.

    Attributes:
      path: local path or any Beam filesystem URL.
      size: bytes.
      header_end: offset of the first data row (just after the header line).
      variant: the layout's name (schemas.openimages.TableVariant.name).
    """

    path: str
    size: int
    header_end: int
    variant: str

    @property
    def layout(self) -> openimages.TableVariant:
        return openimages.variant_by_name(self.variant)


@dataclasses.dataclass(frozen=True)
class ByteRange:
    table: TableFile
    start: int
    end: int


@dataclasses.dataclass(frozen=True)
class BadRow:
    """A line that could not be parsed: where it was and why."""

    path: str
    offset: int
    text: str
    reason: str


def open_table(path: str, kind: str) -> TableFile:
    """Check a table exists and has a known header; fail with a clear message otherwise.

    Raises:
      FileNotFoundError: the file does not exist.
      schemas.openimages.TableFormatError: the header matches no known layout of `kind`.
    """
    size = files.file_size(path)
    if path.endswith((".gz", ".bz2", ".zip", ".zst", ".xz")):
        raise openimages.TableFormatError(
            f"{path}: compressed tables cannot be scanned in byte ranges; decompress it first")
    with files.open_binary(path) as f:
        head = f.read(min(size, _PROBE))
    newline = head.find(b"\n")
    if newline < 0 and len(head) < size:
        raise openimages.TableFormatError(f"{path}: no line break in the first {_PROBE} bytes")
    first_line = head if newline < 0 else head[:newline]
    variant = openimages.detect_variant(kind, first_line, path)
    header_end = (size if newline < 0 else newline + 1) if variant.has_header else 0
    return TableFile(path, size, header_end, variant.name)


def split_ranges(table: TableFile, range_bytes: int = DEFAULT_RANGE_BYTES) -> list[ByteRange]:
    """Cut a table's data bytes into ranges of about `range_bytes` (not yet line-aligned)."""
    if range_bytes <= 0:
        raise ValueError("range_bytes must be positive")
    starts = range(table.header_end, table.size, range_bytes)
    return [ByteRange(table, s, min(s + range_bytes, table.size)) for s in starts]


def record_start_at_or_after(f: BinaryIO, pos: int, table: TableFile) -> int:
    """The offset of the first record that starts at or after `pos` (table.size if none)."""
    if pos <= table.header_end:
        return table.header_end
    if pos >= table.size:
        return table.size
    # A record starts at pos exactly when the byte before it is a newline: so search
    # from pos - 1 for "\n" + ImageID + ",".
    f.seek(pos - 1)
    window = b""
    while len(window) < _RESYNC_LIMIT:
        block = f.read(_PROBE)
        window += block
        m = _ROW_START.search(window, max(0, len(window) - len(block) - 20))
        if m:
            return pos - 1 + m.start() + 1
        if not block:
            return table.size
    newline = window.find(b"\n")
    if newline < 0 or pos + newline >= table.size:
        return table.size
    return pos - 1 + newline + 1


def read_range(f: BinaryIO, rng: ByteRange) -> tuple[int, bytes]:
    """The bytes of the records a range owns, and the offset where they begin."""
    start = record_start_at_or_after(f, rng.start, rng.table)
    end = record_start_at_or_after(f, rng.end, rng.table) if rng.end < rng.table.size else rng.table.size
    if end <= start:
        return start, b""
    f.seek(start)
    return start, f.read(end - start)


def _csv_options(layout: openimages.TableVariant, columns: tuple[str, ...],
                 types: dict[str, pa.DataType], handler) -> tuple:
    read = pacsv.ReadOptions(column_names=list(layout.columns), block_size=8 << 20)
    parse = pacsv.ParseOptions(newlines_in_values=layout.kind == openimages.IMAGES,
                               invalid_row_handler=handler)
    convert = pacsv.ConvertOptions(column_types=types, include_columns=list(columns),
                                   strings_can_be_null=False, quoted_strings_can_be_null=False)
    return read, parse, convert


def parse_and_filter(data: bytes, table: TableFile, offset: int, columns: tuple[str, ...],
                     key_column: str, keys: pa.Array) -> tuple[pa.Table, list[BadRow], int]:
    """Parse a chunk of records and keep those whose `key_column` is in `keys`.

    Fast path: one typed pyarrow read and a vectorised `is_in` filter. If a value does not
    convert (a "abc" coordinate), the chunk is read again as text and only the rows that
    pass the key filter are converted one by one; those that fail become BadRows.

    Returns:
      (typed table with `columns`, rows that could not be parsed, rows parsed in all).
    """
    layout = table.layout
    bad: list[BadRow] = []

    def on_invalid(row) -> str:
        bad.append(BadRow(table.path, offset, (row.text or "")[:500],
                          f"expected {row.expected_columns} columns, found {row.actual_columns}"))
        return "skip"

    types = layout.arrow_types(columns)
    schema = pa.schema([(c, types[c]) for c in columns])
    if not data:
        return schema.empty_table(), bad, 0
    try:
        parsed = pacsv.read_csv(io.BytesIO(data), *_csv_options(layout, columns, types, on_invalid))
        return parsed.filter(pc.is_in(parsed[key_column], value_set=keys)), bad, parsed.num_rows
    except pa.ArrowInvalid:
        bad.clear()  # the slow path below sees the same invalid rows again
    as_text = {c: pa.string() for c in columns}
    text = pacsv.read_csv(io.BytesIO(data), *_csv_options(layout, columns, as_text, on_invalid))
    parsed_rows = text.num_rows
    text = text.filter(pc.is_in(text[key_column], value_set=keys))
    good = []
    for row in text.to_pylist():
        try:
            good.append({c: _convert(row[c], types[c]) for c in columns})
        except ValueError as err:
            bad.append(BadRow(table.path, offset, ",".join(str(row[c]) for c in columns)[:500],
                              str(err)))
    return pa.Table.from_pylist(good, schema=schema), bad, parsed_rows


def _convert(value: str, arrow_type: pa.DataType):
    """Convert one CSV text value like pyarrow would, raising ValueError when it cannot."""
    if pa.types.is_string(arrow_type):
        return value
    if value == "":
        return None
    if pa.types.is_integer(arrow_type):
        try:
            return int(value)
        except ValueError:
            raise ValueError(f"not an integer: {value!r}") from None
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"not a number: {value!r}") from None
