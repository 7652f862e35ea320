"""Reading big Open Images CSVs in byte ranges with pyarrow: the pure core of the scan stage
(pipelines/scan_stage.py runs it in Beam; scan_rows.py turns its rows into batches).

Why byte ranges: the box table is 14.6M rows (1.2-2.3 GB). A range is the unit of
parallelism (Dataflow and Flink spread ranges over workers), and each range is parsed by
pyarrow's C++ CSV reader and filtered vectorised, so rows never become Python objects.

A range [start, end) owns every record that *starts* inside it; both neighbours of a
boundary apply the same rule, so every byte belongs to exactly one range, whatever the
range size (`TableScan.bytes_covered` adds up to the file, and the scan report checks it):

- Box tables have no quoted fields in any Open Images version, so a record is a line and
  quoting is switched off: a stray quote (`"xclick`) is just a character, and a bad line
  costs only itself (one `bad_row`).
- Image tables quote titles and authors, which may hold newlines. A newline ends a record
  exactly when the quotes before it are balanced (RFC 4180; an escaped quote is two
  quotes). So a first pass counts each range's quotes, and a range's start parity is the
  sum of the counts before it: a line inside a quoted title that looks like a row
  (`\\n0123456789abcdef,...`) is never taken for one, at any range size. A stray quote
  would invert that parity for the rest of the file, so each run of quotes is classed by
  the bytes around it (`quoted_at`): one that can only open or close a field re-anchors
  the state, one inside a field (never in well-formed CSV) is ignored. In a well-formed
  table that is the plain count; the first pass gives each range's effect on the state
  (`quote_state`), and a stray quote costs only its own row, at any range size, unless a
  quoted field beside it starts or ends with a line break or comma (such quotes cannot
  tell which way they face). If no record start follows a boundary within 1 MiB, the
  next line start is used, so one range can never swallow a file.

Inside an image range, the records' ImageIDs are read with numpy before any CSV parsing,
and only the records of wanted photos are parsed: a plan for a few classes parses a few
percent of the image table. Values that do not convert (a "abc" coordinate, an Is* flag
past 64 bits) never raise: the range is parsed again as text and only the bad rows become
`BadRow`s.
"""
from __future__ import annotations

import dataclasses
import re
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from pipelines import files, keys
from schemas import openimages

_PROBE = 1 << 16
# If no record starts within this many bytes of a boundary (an unbalanced quote), fall back
# to the next plain line start, so one range can never swallow a whole file.
_RESYNC_LIMIT = 1 << 20
DEFAULT_RANGE_BYTES = 64 << 20
MAX_RANGES = 100_000  # per table, however small --scan_range_mb (each is a Beam element)
# Lines of one box-table chunk that may fail alone (found by halving the chunk) before the
# cause is taken to be something other than bad lines, and the chunk's error raised.
MAX_UNREADABLE_LINES = 1000
# An image table's quoting state at a byte (see quoted_at): (1 inside a quoted field, else
# 0; whether the last quote run that anchored it opened a field).
QuoteState = tuple[int, bool]
_QUOTED = re.compile(r'^"(.*)"$', re.DOTALL)


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

    @property
    def quoted(self) -> bool:
        """Whether fields may be quoted (image tables); box tables never are."""
        return self.layout.kind != openimages.BOXES


@dataclasses.dataclass(frozen=True)
class ByteRange:
    """Bytes [start, end) of a table; `index` is its place among the table's ranges."""

    table: TableFile
    start: int
    end: int
    index: int = 0


@dataclasses.dataclass(frozen=True)
class BadRow:
    """A record that could not be parsed: where it was and why."""

    path: str
    offset: int  # where the chunk (or, for a line found by halving, the line) starts
    text: str
    reason: str
    image_id: str = ""  # when the record starts with a valid ImageID


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
    """Cut a table's data bytes into ranges of about `range_bytes` (not yet aligned), and
    into MAX_RANGES at most, however small `range_bytes` (each range is a Beam element)."""
    if range_bytes <= 0:
        raise ValueError("range_bytes must be positive")
    range_bytes = max(range_bytes, -(-(table.size - table.header_end) // MAX_RANGES))
    starts = range(table.header_end, table.size, range_bytes)
    return [ByteRange(table, s, min(s + range_bytes, table.size), i)
            for i, s in enumerate(starts)]


def quote_state(f: BinaryIO, rng: ByteRange) -> tuple[bool, int, bool]:
    """The first pass of an image table's scan: what the range does to the quoting state
    (`quoted_at`'s rule), as (anchored, state, opened): anchored, the state after the
    range whatever it was before (a quote run in it opens or closes a field), and whether
    its last anchor opens one; else the parity by which it flips the state before it.
    `states_before` chains them. A quote run belongs to the range its first quote is in,
    and is read whole with the bytes around it."""
    table = rng.table
    lead = 1 if rng.start > table.header_end else 0  # the byte before: context only
    f.seek(rng.start - lead)
    data = f.read(rng.end - rng.start + lead)
    tail = b""
    while data.endswith(b'"') and not tail.strip(b'"'):  # a run running on past the end
        more = f.read(64)
        if not more:
            break
        tail += more
    if data.find(b'"', lead) < 0:
        return False, 0, False
    buf = np.frombuffer(data + tail if tail else data, np.uint8)
    first = lead
    if lead and buf[0] == 34:  # the rest of a run that began in the range before
        later = np.flatnonzero(buf[lead:] != 34)
        first = lead + (int(later[0]) if len(later) else len(buf) - lead)
    # Only the runs after the last anchor count, so the range's last MiB (from a byte that
    # is no quote: no run cut) is classed first, and all of it only if that holds no
    # anchor (classing 64 MiB costs ~60 ms, its last MiB ~1 ms).
    tail_from = max(first, len(data) - (1 << 20))
    while tail_from > first and buf[tail_from - 1] == 34:
        tail_from -= 1
    starts, _, opens, closes, flips = _quote_runs(buf, tail_from, owned=len(data))
    if tail_from > first and not (opens | closes).any():
        starts, _, opens, closes, flips = _quote_runs(buf, first, owned=len(data))
    anchored = np.flatnonzero(opens | closes)
    if not len(anchored):
        return False, int(flips[len(starts)]) % 2, False
    last = int(anchored[-1])
    return True, int(opens[last] + flips[len(starts)] - flips[last + 1]) % 2, bool(opens[last])


def states_before(summaries: list[tuple[bool, int, bool]]) -> list[QuoteState]:
    """The quoting state at each range's start and at the last one's end, from the ranges'
    `quote_state`s in order (outside, after no anchor, at the table's start)."""
    out, state, opened = [], 0, False
    for anchored, value, last_opened in summaries:
        out.append((state, opened))
        state, opened = (value, last_opened) if anchored else (state ^ value, opened)
    return out + [(state, opened)]


def record_start(f: BinaryIO, pos: int, table: TableFile,
                 state: QuoteState = (0, False)) -> int:
    """The first record start at or after `pos` (table.size if none).

    Args:
      state: for quoted tables, the quoting state at pos (`states_before`).
    """
    if pos <= table.header_end:
        return table.header_end
    if pos >= table.size:
        return table.size
    # A record starts at p when the byte before it is a newline outside quotes: search from
    # pos - 1 (window[0]). `state` holds every quote run that starts before pos, whole
    # (quote_state's ownership), so the rest of a run that pos cuts is skipped. A newline
    # is judged as record_starts judges it, once an anchor after it (or the file's end) is
    # in the window: a later byte can change it no more.
    f.seek(pos - 1)
    limit = min(_RESYNC_LIMIT, table.size - pos + 1)
    window = f.read(min(_PROBE, limit))
    first = 1
    if window[:1] == b'"':
        first = len(window) - len(window[1:].lstrip(b'"'))
    while True:
        buf = np.frombuffer(window, np.uint8)
        newlines = np.flatnonzero(buf == 10)
        if table.quoted and len(newlines):
            inside, settled = quoted_at(buf, newlines, state[0], first=first, ahead=True,
                                        opened=state[1], known=True)
            at_end = pos - 1 + len(window) >= table.size
            newlines = newlines[~inside & (settled | at_end)]
        if len(newlines):
            return min(pos + int(newlines[0]), table.size)
        if len(window) == limit:
            break
        window += f.read(min(len(window), limit - len(window)))  # read on, to the limit
    if len(window) < _RESYNC_LIMIT:  # reached the end of the file inside quotes
        return table.size
    newline = window.find(b"\n")  # resync: the next plain line start
    return table.size if newline < 0 else min(pos + newline, table.size)


def read_range(f: BinaryIO, rng: ByteRange, start_state: QuoteState = (0, False),
               end_state: QuoteState = (0, False)) -> tuple[int, bytes]:
    """The bytes of the records a range owns, and the offset where they begin.

    Args:
      start_state, end_state: the quoting state at rng.start and rng.end (quoted tables
        only; `states_before` of the ranges' `quote_state`s).
    """
    table = rng.table
    start = record_start(f, rng.start, table, start_state)
    end = record_start(f, rng.end, table, end_state) if rng.end < table.size else table.size
    if end <= start:
        return start, b""
    f.seek(start)
    return start, f.read(end - start)


def _quote_runs(buf: np.ndarray, first: int = 0, owned: int | None = None):
    """The runs of quotes in buf[first:owned] (owned: runs must start before it; their
    ends and the byte after them may lie beyond), classed by the bytes around them (see
    `quoted_at`): (starts, ends, opens, closes, flips), where flips[i] counts the runs
    before run i that flip the state without anchoring it (odd, separators both sides)."""
    q = np.flatnonzero(buf[first:] == 34) + first
    new_run = np.concatenate([[True], np.diff(q) > 1]) if len(q) else np.zeros(0, bool)
    starts = q[new_run]
    lengths = np.diff(np.append(np.flatnonzero(new_run), len(q))).astype(np.int64)
    if owned is not None:
        keep = starts < owned
        starts, lengths = starts[keep], lengths[keep]
    ends = starts + lengths
    # the byte before each run and after it (a line start before buf, a line end after)
    before = buf[np.maximum(starts - 1, 0)]
    before[starts == 0] = 10
    after = buf[np.minimum(ends, len(buf) - 1)]
    after[ends >= len(buf)] = 10
    odd = (lengths & 1).astype(bool)
    opening = (before == 44) | (before == 10)         # a comma or a line start before
    closing = (after == 44) | (after == 13) | (after == 10)  # a comma, CR or line end after
    opens = odd & opening & ~closing
    closes = odd & closing & ~opening
    flips = np.concatenate([[0], np.cumsum(odd & opening & closing)])
    return starts, ends, opens, closes, flips


def quoted_at(buf: np.ndarray, at: np.ndarray, state: int = 0, first: int = 0,
              ahead: bool = False, opened: bool = False, known: bool = False):
    """Whether each offset in `at` (sorted) lies inside a quoted field, given the state
    before buf[first] (0: outside) and counting only the quotes from there on.

    RFC 4180 alone would count quotes: a field opens and closes on odd ones, "" is an
    escaped quote. But one stray quote (an unclosed `"title`) then inverts every record
    boundary after it, to the end of the file. So each run of quotes is classed by the
    bytes around it. An odd run right after a separator (comma, line start) and not before
    one can only open a field (outside before it, inside after it); an odd run right before
    a separator (comma, CR, line end) and not after one can only close a field (inside
    before, outside after): both anchor the state. An odd run with a separator on each
    side is ambiguous and flips it, as in RFC 4180. An odd run with neither is no part of
    well-formed CSV at all (a quote inside a field is doubled) and is ignored. In a
    well-formed table this is the plain count.

    An offset's state is counted forward from the last anchor before it and, with
    `ahead`, also back from the next anchor after it (or from buf's end, which `ahead`
    takes for a record start, outside). The two disagree only where an anchor around the
    offset is a stray, and which one shows: an opening anchor followed by another opening
    (or the end) never closed, so the count back holds; a closing anchor after a closing
    (or the start) closed nothing, so the count forward holds; between a closing and an
    opening anchor the stray is an ambiguous run, and the offset is taken for outside.
    `state` and `opened` describe buf[first]: the state there, and whether the last anchor
    before it opened a field. With `known`, also return whether each offset has an anchor
    after it in buf: only then does a later byte no longer change its answer.
    """
    starts, ends, opens, closes, flips = _quote_runs(buf, first)
    n = len(starts)
    if not n:
        # no anchor: forward says `state`, and back from the end (with `ahead`) outside
        inside = np.full(len(at), bool(state) and not ahead)
        return (inside, np.zeros(len(at), bool)) if known else inside
    anchored = opens | closes
    k = np.searchsorted(ends, at, side="right")  # runs wholly before each offset
    # forward: from the last anchor before the offset (or the given state), then flips
    last = np.maximum.accumulate(np.where(anchored, np.arange(n), -1))
    prev = np.where(k > 0, last[np.maximum(k - 1, 0)], -1)
    base = np.where(prev >= 0, opens[np.maximum(prev, 0)], state)
    inside = (base + flips[k] - np.where(prev >= 0, flips[np.maximum(prev, 0) + 1], 0)) % 2 == 1
    if ahead:  # back from the next anchor (or the end: outside), less the flips between
        nxt = np.minimum.accumulate(np.where(anchored, np.arange(n), n)[::-1])[::-1]
        nxt = np.append(nxt, n)[k]
        before_next = np.where(nxt < n, closes[np.minimum(nxt, n - 1)], False)
        backward = (before_next + flips[nxt] - flips[k]) % 2 == 1
        # Where the two disagree, one of the anchors around the offset is a stray. An
        # opening quote followed by another opening (or the end) before any closing is the
        # stray: count back. A closing quote that follows a closing (or the start) is: count
        # forward. Otherwise the stray is an ambiguous run between: the offset is outside.
        after_open = np.where(prev >= 0, opens[np.maximum(prev, 0)], opened)
        inside = np.where(after_open & ~before_next, backward,
                          np.where(~after_open & before_next, inside, inside & backward))
        if known:
            return inside, nxt < n
    return inside


def record_starts(data: bytes, quoted: bool) -> np.ndarray:
    """Offsets of the records in an aligned chunk (which starts a record): after every
    newline outside quotes (`quoted_at`). Empty lines are not records."""
    buf = np.frombuffer(data, np.uint8)
    newlines = np.flatnonzero(buf == 10)
    if quoted:
        newlines = newlines[~quoted_at(buf, newlines, ahead=True)]
    starts = np.concatenate([[0], newlines + 1])
    ends = np.concatenate([newlines, [len(data)]])
    lengths = ends - starts
    blank = (lengths == 0) | ((lengths == 1) & (buf[np.minimum(starts, len(data) - 1)] == 13))
    return starts[(starts < len(data)) & ~blank]


def _csv_options(layout: openimages.TableVariant, columns: tuple[str, ...],
                 types: dict[str, pa.DataType], handler) -> tuple:
    read = pacsv.ReadOptions(column_names=list(layout.columns), block_size=8 << 20)
    quoted = layout.kind != openimages.BOXES
    parse = pacsv.ParseOptions(quote_char='"' if quoted else False, newlines_in_values=quoted,
                               invalid_row_handler=handler)
    convert = pacsv.ConvertOptions(column_types=types, include_columns=list(columns),
                                   strings_can_be_null=False, quoted_strings_can_be_null=False)
    return read, parse, convert


def _read_csv(data: bytes, table: TableFile, offset: int, columns: tuple[str, ...],
              types: dict[str, pa.DataType], bad: list[BadRow]) -> pa.Table:
    def on_invalid(row) -> str:
        text = row.text or ""
        bad.append(BadRow(table.path, offset, text[:500],
                          f"expected {row.expected_columns} columns, found {row.actual_columns}",
                          _leading_image_id(text)))
        return "skip"

    return pacsv.read_csv(pa.BufferReader(data), *_csv_options(table.layout, columns, types,
                                                                on_invalid))


def _leading_image_id(text: str) -> str:
    head = text[:18].lstrip('"')[:16]
    _, valid = keys.image_ids_to_u64(pa.array([head]))
    return head if valid[0] else ""


def parse_and_filter(data: bytes, table: TableFile, offset: int, columns: tuple[str, ...],
                     key_column: str, keys_: pa.Array) -> tuple[pa.Table, list[BadRow], int]:
    """Parse a chunk of records and keep those whose `key_column` is in `keys_`.

    Fast path: one typed pyarrow read and a vectorised `is_in` filter. If a value does not
    convert (an "abc" coordinate, an integer past 64 bits), the chunk is read again as
    text, the key filter applied, and each column converted with only its bad values
    failing their rows (`BadRow`s). If even that fails, a box table's lines that are not
    UTF-8 become BadRows (one pass), and should the rest still fail (anything nobody
    foresaw), the chunk is halved at line boundaries until the lines that fail are alone:
    each becomes one BadRow, up to MAX_UNREADABLE_LINES, and the rest parse as usual.

    Returns:
      (typed table with `columns`, rows that could not be parsed, rows read in all).
    """
    keys_ = _with_quoted(keys_, table)
    try:
        return _parse_and_filter(data, table, offset, columns, key_column, keys_)
    except Exception:
        if table.quoted:  # records may span lines: no line is a record of its own
            raise
    clean, not_utf8 = _without_bad_utf8(data, table, offset)
    try:
        t, bad, n = _parse_and_filter(clean, table, offset, columns, key_column, keys_)
    except Exception as err:
        t, bad, n = _bisect(clean, table, offset, columns, key_column, keys_, err,
                            [MAX_UNREADABLE_LINES])
    return t, sorted(bad + not_utf8, key=lambda b: b.offset), n + len(not_utf8)


def _without_bad_utf8(data: bytes, table: TableFile, offset: int
                      ) -> tuple[bytes, list[BadRow]]:
    """A box-table chunk less its lines that are not UTF-8, each a BadRow at its own
    offset: found in one pass, where halving would parse the chunk again per bad line."""
    try:
        data.decode("utf-8")
        return data, []
    except UnicodeDecodeError:
        pass
    kept, bad, pos = [], [], 0
    for line in data.splitlines(keepends=True):  # at CR, LF or CRLF, as the CSV reader
        try:
            line.decode("utf-8")
            kept.append(line)
        except UnicodeDecodeError as err:
            text = line.decode("utf-8", "replace").rstrip("\r\n")
            bad.append(BadRow(table.path, offset + pos, text[:500],
                              f"not UTF-8: {err.reason} at byte {err.start} of the line",
                              _leading_image_id(text)))
        pos += len(line)
    return b"".join(kept), bad


def _bisect(data: bytes, table: TableFile, offset: int, columns: tuple[str, ...],
            key_column: str, keys_: pa.Array, err: Exception, budget: list[int]
            ) -> tuple[pa.Table, list[BadRow], int]:
    """parse_and_filter of an unquoted chunk that raised `err`, one half at a time.
    `budget` counts the lines that may still fail alone: past MAX_UNREADABLE_LINES the
    cause is not a few bad lines, and the chunk's error is raised as it is."""
    body = data.rstrip(b"\r\n")
    cut = body.rfind(b"\n", 0, len(body) // 2 + 1) + 1 if b"\n" in body else 0
    if cut <= 0:
        cut = body.find(b"\n") + 1
    if cut <= 0:  # one line: it alone fails
        budget[0] -= 1
        if budget[0] < 0:
            raise err
        text = data.decode("utf-8", "replace").rstrip("\r\n")
        reason = f"unreadable: {type(err).__name__}: {err}"[:300]
        return _empty(table, columns), [BadRow(table.path, offset, text[:500], reason,
                                               _leading_image_id(text))], 1
    out_tables, out_bad, read = [], [], 0
    for start, part in ((0, data[:cut]), (cut, data[cut:])):
        try:
            t, b, n = _parse_and_filter(part, table, offset + start, columns, key_column, keys_)
        except Exception as part_err:
            t, b, n = _bisect(part, table, offset + start, columns, key_column, keys_,
                              part_err, budget)
        out_tables.append(t)
        out_bad += b
        read += n
    return pa.concat_tables(out_tables), out_bad, read


def _empty(table: TableFile, columns: tuple[str, ...]) -> pa.Table:
    types = table.layout.arrow_types(columns)
    return pa.schema([(c, types[c]) for c in columns]).empty_table()


def _parse_and_filter(data: bytes, table: TableFile, offset: int, columns: tuple[str, ...],
                      key_column: str, keys_: pa.Array) -> tuple[pa.Table, list[BadRow], int]:
    types = table.layout.arrow_types(columns)
    bad: list[BadRow] = []
    if not data:
        return _empty(table, columns), bad, 0
    try:
        parsed = _read_csv(data, table, offset, columns, types, bad)
        kept = _unquote(parsed.filter(pc.is_in(parsed[key_column], value_set=keys_)), table)
        return kept, bad, parsed.num_rows + len(bad)
    except pa.ArrowInvalid:
        bad.clear()  # the text read below sees the same invalid rows again
    text = _read_csv(data, table, offset, columns, {c: pa.string() for c in columns}, bad)
    read = text.num_rows + len(bad)
    text = _unquote(text.filter(pc.is_in(text[key_column], value_set=keys_)), table)
    good, more_bad = convert_text(text, types, table.path, offset)
    return good.select(list(columns)), bad + more_bad, read


def _with_quoted(keys_: pa.Array, table: TableFile) -> pa.Array:
    """Box tables are read with quoting off; a fully quoted value ("/m/0cdn1") means what
    it says (pandas and spreadsheets sometimes quote every field), so match it too."""
    if table.quoted:
        return keys_
    return pa.concat_arrays([keys_, pc.binary_join_element_wise('"', keys_, '"', "")])


def _unquote(t: pa.Table, table: TableFile) -> pa.Table:
    """Strip the quotes of fully quoted text values of a box table (rows already filtered)."""
    if table.quoted:
        return t
    for i, field in enumerate(t.schema):
        if pa.types.is_string(field.type) and pc.any(pc.starts_with(t[i], '"')).as_py():
            t = t.set_column(i, field.name,
                             pc.replace_substring_regex(t[i], _QUOTED.pattern, r"\1"))
    return t


def convert_text(text: pa.Table, types: dict[str, pa.DataType], path: str,
                 offset: int) -> tuple[pa.Table, list[BadRow]]:
    """Convert text columns to `types`; rows with a value that does not convert (or does
    not fit the type) become BadRows, the others convert vectorised."""
    ok = np.ones(text.num_rows, bool)
    why = [""] * text.num_rows
    for name, arrow_type in types.items():
        if name not in text.column_names or pa.types.is_string(arrow_type):
            continue
        for i, problem in _value_problems(text[name], arrow_type):
            if ok[i]:
                ok[i], why[i] = False, f"{name}: {problem}"
    bad = [BadRow(path, offset, ",".join(str(v) for v in row.values())[:500], why[i],
                  _leading_image_id(str(row.get("ImageID", ""))))
           for i, row in enumerate(text.to_pylist()) if not ok[i]]
    good = text.filter(pa.array(ok))
    columns = [_cast(good[name], types[name]) if name in types else good[name]
               for name in good.column_names]
    return pa.table(columns, names=good.column_names), bad


def _cast(col: pa.ChunkedArray, arrow_type: pa.DataType) -> pa.ChunkedArray:
    """Text to `arrow_type` as the CSV reader converts it ("" is null for numbers)."""
    if pa.types.is_string(arrow_type):
        return col
    return pc.cast(pc.if_else(pc.equal(col, ""), pa.scalar(None, pa.string()), col), arrow_type)


_JUDGED_TOGETHER = 1024  # values cast at once when looking for the ones that do not convert


def _casts(col: pa.ChunkedArray | pa.Array, arrow_type: pa.DataType) -> bool:
    """Whether Arrow's cast, the one that converts the column, takes these text values."""
    try:
        _cast(col, arrow_type)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return False
    return True


def _value_problems(col: pa.ChunkedArray, arrow_type: pa.DataType) -> list[tuple[int, str]]:
    """(row, why) for each text value of a column that does not convert to `arrow_type`.

    Judged by Arrow's own cast: Python's int() and float() accept spellings Arrow does not
    ('0_0', '+1', '١'), and a row kept on their word would fail the column's cast later.
    Vectorised: the whole column first, then slices of _JUDGED_TOGETHER, and value by
    value only inside a slice that fails."""
    if _casts(col, arrow_type):
        return []
    values = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    out = []
    for start in range(0, len(values), _JUDGED_TOGETHER):
        piece = values.slice(start, _JUDGED_TOGETHER)
        if _casts(piece, arrow_type):
            continue
        for i, value in enumerate(piece.to_pylist(), start):
            problem = _value_problem(value, arrow_type)
            if problem:
                out.append((i, problem))
    return out


def _value_problem(value: str, arrow_type: pa.DataType) -> str:
    """Why one CSV text value does not convert to `arrow_type` (by Arrow's cast), or ''."""
    if value == "" or _casts(pa.array([value], pa.string()), arrow_type):
        return ""
    if pa.types.is_integer(arrow_type):
        bits = arrow_type.bit_width
        try:
            fits = -(1 << (bits - 1)) <= int(value) < (1 << (bits - 1))
        except ValueError:
            fits = True
        return f"not an integer: {value!r}" if fits else f"{value!r} does not fit in {bits} bits"
    return f"not a number: {value!r}"


def parse_images(data: bytes, table: TableFile, offset: int,
                 wanted: np.ndarray) -> tuple[pa.Table, int]:
    """The image rows of wanted photos in an aligned chunk of an image table.

    Each record's ImageID is read before any CSV parsing (its first 16 characters, quoted
    or not); only the records of `wanted` photos (a sorted uint64 array) are parsed. A
    wanted row never vanishes: a size or Rotation that does not convert becomes null, and
    a record with the wrong number of fields becomes a row with only its ImageID; in both
    the row's `problem` says why, so the photo's boxes fail as `bad_image_row` with that
    reason.

    Returns:
      (the table's columns plus `problem`, records read in all).
    """
    layout = table.layout
    types = layout.arrow_types()
    schema = pa.schema([(c, types[c]) for c in layout.columns] + [("problem", pa.string())])
    if not data:
        return schema.empty_table(), 0
    starts = record_starts(data, quoted=True)
    keep, ids = _wanted_records(data, starts, wanted)
    if not keep.any():
        return schema.empty_table(), len(starts)
    ends = np.append(starts[1:], len(data))[keep]
    starts = starts[keep]
    records = [data[s:e] for s, e in zip(starts, ends)]
    chunk = data if len(records) == len(keep) else b"".join(records)
    if not chunk.endswith(b"\n"):
        chunk += b"\n"
    parsed = _parse_image_records(chunk, table, offset, schema)
    if parsed is None or parsed.num_rows != len(records) or not _same_ids(parsed, ids[keep]):
        # pyarrow split the records differently from ours (a stray quote: it reads RFC
        # 4180 to the letter), even into as many rows: parse them one by one, so a broken
        # record costs only itself.
        parts = [_parse_image_records(r if r.endswith(b"\n") else r + b"\n", table,
                                      offset + int(s), schema) for r, s in zip(records, starts)]
        parsed = pa.concat_tables([
            part if part is not None and part.num_rows == 1
            else _unparsed_row(r, "the record does not parse as one row", schema)
            for part, r in zip(parts, records)])
    return parsed, int(len(keep))


def _same_ids(parsed: pa.Table, ids: np.ndarray) -> bool:
    """Whether pyarrow's rows are our records: in order when none is bad (the common
    case, no sort), else as a set (bad rows come after the good ones)."""
    got = keys.image_ids_to_u64(parsed["ImageID"])[0]
    return np.array_equal(got, ids) or np.array_equal(np.sort(got), np.sort(ids))


def _parse_image_records(chunk: bytes, table: TableFile, offset: int,
                         schema: pa.Schema) -> pa.Table | None:
    """Parse records of wanted photos: typed, else as text with soft conversion. Records
    with the wrong field count become ImageID-only rows with a problem; None if pyarrow
    cannot parse the chunk at all."""
    layout = table.layout
    types = layout.arrow_types()
    bad: list[BadRow] = []
    try:
        try:
            parsed = _read_csv(chunk, table, offset, layout.columns, types, bad)
            parsed = parsed.append_column("problem", pa.array([""] * parsed.num_rows,
                                                              pa.string()))
        except pa.ArrowInvalid:
            bad.clear()
            text = _read_csv(chunk, table, offset, layout.columns,
                             {c: pa.string() for c in layout.columns}, bad)
            parsed = _soft_convert(text, {c: t for c, t in types.items()
                                          if not pa.types.is_string(t)})
    except pa.ArrowInvalid:
        return None
    extra = [_unparsed_row(b.text.encode("utf-8", "replace"), b.reason, schema) for b in bad]
    return pa.concat_tables([parsed.cast(schema)] + extra)


def _unparsed_row(record: bytes, reason: str, schema: pa.Schema) -> pa.Table:
    """A row that keeps only a broken record's ImageID, and why."""
    row = {f.name: ("" if pa.types.is_string(f.type) else None) for f in schema}
    row["ImageID"] = _leading_image_id(record[:18].decode("ascii", "replace"))
    row["problem"] = f"the image-table row does not parse: {reason}"
    return pa.Table.from_pylist([row], schema=schema)


def _wanted_records(data: bytes, starts: np.ndarray, wanted: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Which records begin with the ImageID of a wanted photo, and every record's leading
    ImageID as a uint64."""
    buf = np.frombuffer(data, np.uint8)
    first = starts + (buf[starts] == 34)  # a quoted ImageID
    block = buf[np.minimum(first[:, None] + np.arange(17), len(buf) - 1)]
    after = block[:, 16]
    ends_id = ((after == 44) | (after == 34)) & (first + 16 < len(buf))
    values, valid = keys.hex_block_to_u64(block[:, :16])
    found = np.minimum(np.searchsorted(wanted, values), max(len(wanted) - 1, 0))
    hit = (wanted[found] == values) if len(wanted) else np.zeros(len(values), bool)
    return hit & valid & ends_id, values


def _soft_convert(text: pa.Table, soft: dict[str, pa.DataType]) -> pa.Table:
    """Convert an image table's number columns; a value that does not convert becomes null
    and the row's `problem` names it."""
    problems = [""] * text.num_rows
    for name, arrow_type in soft.items():
        column = text[name]
        try:  # the common case: the column converts, in one cast
            converted = _cast(column, arrow_type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            values = column.to_pylist()
            for i, problem in _value_problems(column, arrow_type):
                values[i] = ""
                problems[i] = problems[i] or f"{name} {problem}"
            converted = _cast(pa.chunked_array([pa.array(values, pa.string())]), arrow_type)
        text = text.set_column(text.column_names.index(name), name, converted)
    return text.append_column("problem", pa.array(problems, pa.string()))


def aligned_ranges(f: BinaryIO, table: TableFile, range_bytes: int = DEFAULT_RANGE_BYTES):
    """Every range of a table with the bytes it owns, in one process: (range, offset,
    data). Both passes of the scan (quote counts, then records) run here in sequence; the
    Beam stages run them in parallel. For tests and tools on local tables."""
    ranges = split_ranges(table, range_bytes)
    states = states_before([quote_state(f, r) if table.quoted else (False, 0, False)
                            for r in ranges])
    for i, rng in enumerate(ranges):
        offset, data = read_range(f, rng, states[i], states[i + 1])
        yield rng, offset, data


def all_image_ids(data: bytes) -> np.ndarray:
    """Every valid ImageID at a record start of an image-table chunk, sorted: the filter
    that keeps every row."""
    starts = record_starts(data, quoted=True)
    if not len(starts):
        return np.zeros(0, np.uint64)
    buf = np.frombuffer(data, np.uint8)
    first = starts + (buf[starts] == 34)
    values, valid = keys.hex_block_to_u64(buf[np.minimum(first[:, None] + np.arange(16),
                                                         len(buf) - 1)])
    return np.unique(values[valid])
