"""The scan stage: Beam transforms that read the box and image tables in byte ranges,
into buckets of photos. Its pure core is pipelines/scan.py (ranges, CSV parsing) and
pipelines/scan_rows.py (validation, filters, Arrow batches), which tests call without Beam.


`ScanBoxes` keeps the rows of the selected classes; `ScanImages` keeps the image rows of
the photos those boxes are on (the image table has no label column). Both hand on Arrow
batches keyed by a hash bucket of ImageID, so a photo's boxes and image row meet in one
bucket of the join; the batches wait in scratch files (pipelines/batches.py) and only
their addresses go through the shuffle. The photos the box scan found reach the image scan
as one value: a sorted uint64 array of their ImageIDs (pipelines/keys.py), 14 MB for all 1.74M photos.

Every range also reports what it read (`TableScan`): rows read = kept + filtered + failed,
and bytes covered. The plan's report adds them up per table, so a range that swallowed
rows, or bytes no range owned, is visible.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Iterable, Mapping

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.metrics import Metrics

from pipelines import batches, files, keys, scan, scan_rows
from pipelines.failures import FAILED
from schemas import failures
from schemas.records import FAILURE_SCHEMA, STAGE_SCAN_BOXES

BAD_ROW = failures.declared(STAGE_SCAN_BOXES, "bad_row")
IMAGE_IDS = "image_ids"
SCANNED = "scanned"
BOXES, IMAGES = "boxes", "images"


@dataclasses.dataclass(frozen=True)
class TableScan:
    """What the ranges of one table read (summed by `add`)."""

    ranges: int = 0
    bytes_covered: int = 0
    rows_read: int = 0
    rows_kept: int = 0
    rows_filtered: int = 0
    rows_failed: int = 0

    def add(self, other: "TableScan") -> "TableScan":
        return TableScan(*(a + b for a, b in zip(dataclasses.astuple(self),
                                                   dataclasses.astuple(other))))


def scan_report(tables: Iterable[scan.TableFile], scans: Mapping[str, TableScan]) -> dict:
    """Per table: what its ranges read, and whether it adds up (every data byte owned by
    one range; every row read kept, filtered or failed)."""
    out = {}
    for t in tables:
        s = scans.get(t.path, TableScan())
        data_bytes = t.size - t.header_end
        out[t.path] = {**dataclasses.asdict(s), "data_bytes": data_bytes,
                       "complete": (s.bytes_covered == data_bytes and s.rows_read ==
                                    s.rows_kept + s.rows_filtered + s.rows_failed)}
    return out


def _bad_row_failures(stage: str, bad: list[scan.BadRow]) -> pa.Table:
    return pa.Table.from_pylist([{
        "stage": stage, "image_id": "", "box_index": -1, "url": "", "reason": BAD_ROW,
        "detail": f"{b.path} (a record at or after byte {b.offset}): {b.reason}: {b.text!r}",
        "mid": ""}
        for b in bad], schema=FAILURE_SCHEMA)


def _ranges(tables: Iterable[scan.TableFile], range_bytes: int) -> list[scan.ByteRange]:
    return [r for t in tables for r in scan.split_ranges(t, range_bytes)]


def by_bucket(batch: pa.Table, num_buckets: int):
    """(bucket, rows of that bucket) for every bucket the batch has rows in."""
    if batch.num_rows == 0:
        return
    bucket = keys.bucket_of(batch["image_id"].to_numpy(), num_buckets)
    order = np.argsort(bucket, kind="stable")
    batch, bucket = batch.take(pa.array(order)), bucket[order]
    edges = np.flatnonzero(np.diff(bucket)) + 1
    for start, end in zip(np.concatenate([[0], edges]), np.concatenate([edges, [len(bucket)]])):
        yield int(bucket[start]), batch.slice(int(start), int(end - start))


def _spilled(scratch: str, batch: pa.Table, num_buckets: int, tag: str):
    """A range's batch, bucketed and spilled: (bucket, (tag, RunSlice)) per bucket."""
    for bucket, s in batches.spill(scratch, by_bucket(batch, num_buckets)):
        yield bucket, (tag, s)


class _ReadBoxRanges(beam.DoFn):
    """Byte range of a box table -> (bucket, boxes) for the selected MIDs; failures, the
    range's ImageIDs and its scan counts tagged."""

    def __init__(self, mid_to_index: Mapping[str, int], filters: scan_rows.BoxFilters,
                 num_buckets: int, scratch: str):
        self._mid_to_index = dict(mid_to_index)
        self._filters, self._buckets, self._scratch = filters, num_buckets, scratch
        self._rows_scanned = Metrics.counter("scan_boxes", "rows_scanned")
        self._rows_matched = Metrics.counter("scan_boxes", "rows_of_selected_classes")
        self._boxes_out = Metrics.counter("scan_boxes", "boxes_selected")
        self._failed = Metrics.counter("scan_boxes", "failures")
        self._filtered = {r: Metrics.counter("scan_boxes", r) for r in scan_rows.FILTER_REASONS}
        self._busy_ms = Metrics.distribution("timing", "scan_boxes_ms")

    def setup(self):
        self._mids = tuple(sorted(self._mid_to_index))
        self._keys = pa.array(self._mids, pa.string())

    def process(self, rng: scan.ByteRange):
        start = time.perf_counter()
        with files.open_binary(rng.table.path) as f:
            offset, data = scan.read_range(f, rng)
        table, bad, n = scan.parse_and_filter(data, rng.table, offset, scan_rows.BOX_COLUMNS,
                                                 "LabelName", self._keys)
        boxes, failures, dropped = scan_rows.box_batch(table, self._mids, self._mid_to_index,
                                                  self._filters)
        failures = pa.concat_tables([failures, _bad_row_failures(STAGE_SCAN_BOXES, bad)])
        self._rows_scanned.inc(n)
        self._rows_matched.inc(table.num_rows)
        for reason, count in dropped.items():
            self._filtered[reason].inc(count)
        self._boxes_out.inc(boxes.num_rows)
        self._failed.inc(failures.num_rows)
        self._busy_ms.update(int((time.perf_counter() - start) * 1000))
        yield from _spilled(self._scratch, boxes, self._buckets, BOXES)
        if failures.num_rows:
            yield beam.pvalue.TaggedOutput(FAILED, failures)
        yield beam.pvalue.TaggedOutput(IMAGE_IDS, _unique(boxes["image_id"].to_numpy()))
        failed = failures.num_rows
        yield beam.pvalue.TaggedOutput(SCANNED, (rng.table.path, TableScan(
            1, len(data), n, boxes.num_rows, n - boxes.num_rows - failed, failed)))


def _unique(ids: np.ndarray) -> np.ndarray:
    ids = np.sort(ids)
    return ids[np.concatenate([[True], ids[1:] != ids[:-1]])] if len(ids) else ids


class UnionOfIds(beam.CombineFn):
    """Sorted unique uint64 ImageIDs of many ranges, as one array."""

    def create_accumulator(self):
        return []

    def add_input(self, acc, ids):
        acc.append(ids)
        if len(acc) > 64:
            acc[:] = [_unique(np.concatenate(acc))]
        return acc

    def merge_accumulators(self, accs):
        return [a for acc in accs for a in acc]

    def extract_output(self, acc):
        return _unique(np.concatenate(acc)) if acc else np.zeros(0, np.uint64)


class ScanBoxes(beam.PTransform):
    """Scan box tables in byte ranges and keep the selected classes' valid boxes.

    Args:
      tables: box tables, checked by scan.open_table.
      mid_to_index: selected MID -> label index (the LabelSet).
      filters: the user's Is* and size filters.
      range_bytes: size of a range, the unit of parallelism.
      num_buckets: how many buckets of photos the join works in.
      scratch: a folder for the batches on their way to the join (pipelines/batches.py).

    Returns:
      a dict of PCollections: BOXES (bucket, (BOXES, RunSlice of BOX_BATCHes)), FAILED
      (FAILURE_SCHEMA batches), IMAGE_IDS (one sorted uint64 array of every photo found), SCANNED (table
      path, TableScan).
    """

    def __init__(self, tables, mid_to_index, filters, range_bytes, num_buckets, scratch):
        super().__init__()
        self._ranges = _ranges(tables, range_bytes)
        self._dofn = _ReadBoxRanges(mid_to_index, filters, num_buckets, scratch)

    def expand(self, pbegin):
        results = (pbegin
                   | "ListRanges" >> beam.Create(self._ranges)
                   | "SpreadRanges" >> beam.Reshuffle()
                   | "ReadRanges" >> beam.ParDo(self._dofn).with_outputs(
                       FAILED, IMAGE_IDS, SCANNED, main=BOXES))
        ids = results[IMAGE_IDS] | "AllImageIds" >> beam.CombineGlobally(UnionOfIds())
        return {BOXES: results[BOXES], FAILED: results[FAILED], IMAGE_IDS: ids,
                SCANNED: results[SCANNED]}


class _CountQuotes(beam.DoFn):
    """The first pass over an image table: what each range does to the quoting state
    (for record boundaries)."""

    def process(self, rng: scan.ByteRange):
        with files.open_binary(rng.table.path) as f:
            yield (rng.table.path, rng.index), scan.quote_state(f, rng)


class _ReadImageRanges(beam.DoFn):
    """Byte range of an image table -> (bucket, image rows) of the wanted photos."""

    def __init__(self, num_buckets: int, scratch: str):
        self._buckets, self._scratch = num_buckets, scratch
        self._rows_scanned = Metrics.counter("scan_images", "rows_scanned")
        self._rows_out = Metrics.counter("scan_images", "images_matched")
        self._failed = Metrics.counter("scan_images", "failures")
        self._busy_ms = Metrics.distribution("timing", "scan_images_ms")
        self._chained: dict = {}

    def _states(self, path: str, quotes: dict) -> list:
        """Every range's quoting state at its start, chained once per table and side input
        (each range doing it for the ranges before it was quadratic in their number)."""
        held = self._chained.get(path)
        if held is None or held[0] is not quotes:  # a new side input: chain it again
            n = sum(1 for p, _ in quotes if p == path)
            held = self._chained[path] = (
                quotes, scan.states_before([quotes[(path, i)] for i in range(n)]))
        return held[1]

    def process(self, rng: scan.ByteRange, wanted: np.ndarray, quotes: dict):
        start = time.perf_counter()
        states = self._states(rng.table.path, quotes)
        with files.open_binary(rng.table.path) as f:
            offset, data = scan.read_range(f, rng, states[rng.index], states[rng.index + 1])
        parsed, n = scan.parse_images(data, rng.table, offset, wanted)
        images = scan_rows.image_batch(parsed)
        failed = int(np.count_nonzero(images["problem"].to_numpy(zero_copy_only=False) != ""))
        self._rows_scanned.inc(n)
        self._rows_out.inc(images.num_rows)
        self._failed.inc(failed)
        self._busy_ms.update(int((time.perf_counter() - start) * 1000))
        yield from _spilled(self._scratch, images, self._buckets, IMAGES)
        yield beam.pvalue.TaggedOutput(SCANNED, (rng.table.path, TableScan(
            1, len(data), n, images.num_rows - failed, n - images.num_rows, failed)))


class ScanImages(beam.PTransform):
    """Scan image tables in byte ranges and keep the rows of the wanted photos.

    Args:
      tables: image tables, checked by scan.open_table.
      wanted: a side input (AsSingleton) of the sorted uint64 ImageIDs to keep.
      range_bytes: size of a range.
      num_buckets, scratch: as for ScanBoxes.

    Returns:
      a dict: IMAGES (bucket, (IMAGES, RunSlice of IMAGE_BATCHes)), SCANNED (table path,
      TableScan).
    """

    def __init__(self, tables, wanted, range_bytes, num_buckets, scratch):
        super().__init__()
        self._ranges = _ranges(tables, range_bytes)
        self._wanted, self._buckets, self._scratch = wanted, num_buckets, scratch

    def expand(self, pbegin):
        ranges = (pbegin
                  | "ListRanges" >> beam.Create(self._ranges)
                  | "SpreadRanges" >> beam.Reshuffle())
        quotes = ranges | "CountQuotes" >> beam.ParDo(_CountQuotes())
        results = ranges | "ReadRanges" >> beam.ParDo(
            _ReadImageRanges(self._buckets, self._scratch), self._wanted,
            beam.pvalue.AsDict(quotes)).with_outputs(SCANNED, main=IMAGES)
        return {IMAGES: results[IMAGES], SCANNED: results[SCANNED]}
