"""Beam stages that scan the box and image tables in byte ranges.

`ScanBoxes` keeps the rows of the selected classes; `ScanImages` keeps the image rows of
the photos those boxes are on (their ImageIDs arrive as a side input: the image table has
no label column). Both return `(rows, failures)`; the pure work lives in `csvscan` and
`rows`, which tests call without Beam.
"""
from __future__ import annotations

from typing import Iterable, Mapping

import apache_beam as beam
import pyarrow as pa
import time

from apache_beam.metrics import Metrics

from pipelines import csvscan, files, rows
from schemas.records import REASON_BAD_ROW, STAGE_SCAN_BOXES, STAGE_SCAN_IMAGES, Failure

FAILED = "failed"


def _bad_row_failure(stage: str, bad: csvscan.BadRow) -> Failure:
    return Failure(stage, "", -1, "", REASON_BAD_ROW,
                   f"{bad.path} (range from byte {bad.offset}): {bad.reason}: {bad.text!r}")


def _ranges(tables: Iterable[csvscan.TableFile], range_bytes: int) -> list[csvscan.ByteRange]:
    return [r for t in tables for r in csvscan.split_ranges(t, range_bytes)]


class _ReadBoxRanges(beam.DoFn):
    """Byte range of a box table -> (ImageID, Box) for the selected MIDs; failures tagged."""

    def __init__(self, mid_to_index: Mapping[str, int], labels: tuple[str, ...],
                 filters: rows.BoxFilters):
        self._mid_to_index = dict(mid_to_index)
        self._labels = tuple(labels)
        self._filters = filters
        self._rows_scanned = Metrics.counter("scan_boxes", "rows_scanned")
        self._rows_matched = Metrics.counter("scan_boxes", "rows_of_selected_classes")
        self._boxes_out = Metrics.counter("scan_boxes", "boxes_selected")
        self._failed = Metrics.counter("scan_boxes", "failures")
        self._filtered = {r: Metrics.counter("scan_boxes", r) for r in rows.FILTER_REASONS}
        self._busy_ms = Metrics.distribution("timing", "scan_boxes_ms")

    def setup(self):
        self._keys = pa.array(sorted(self._mid_to_index), pa.string())

    def process(self, rng: csvscan.ByteRange):
        start = time.perf_counter()
        with files.open_binary(rng.table.path) as f:
            offset, data = csvscan.read_range(f, rng)
        table, bad, n = csvscan.parse_and_filter(data, rng.table, offset, rows.BOX_COLUMNS,
                                                 "LabelName", self._keys)
        self._rows_scanned.inc(n)
        self._rows_matched.inc(table.num_rows)
        boxes, failures, dropped = rows.select_boxes(table, self._mid_to_index, self._labels,
                                                     self._filters)
        for reason, count in dropped.items():
            self._filtered[reason].inc(count)
        self._boxes_out.inc(len(boxes))
        self._failed.inc(len(failures) + len(bad))
        self._busy_ms.update(int((time.perf_counter() - start) * 1000))
        yield from boxes
        for failure in failures + [_bad_row_failure(STAGE_SCAN_BOXES, b) for b in bad]:
            yield beam.pvalue.TaggedOutput(FAILED, failure)


class ScanBoxes(beam.PTransform):
    """Scan box tables in byte ranges and keep the selected classes' valid boxes.

    Args:
      tables: box tables, checked by csvscan.open_table.
      mid_to_index: selected MID -> label index (the LabelSet).
      labels: label display names.
      filters: the user's Is* and size filters.
      range_bytes: size of a range, the unit of parallelism.

    Returns:
      (PCollection of (ImageID, Box), PCollection of Failure).
    """

    def __init__(self, tables, mid_to_index, labels, filters, range_bytes):
        super().__init__()
        self._ranges = _ranges(tables, range_bytes)
        self._dofn = _ReadBoxRanges(mid_to_index, labels, filters)

    def expand(self, pbegin):
        results = (pbegin
                   | "ListRanges" >> beam.Create(self._ranges)
                   | "SpreadRanges" >> beam.Reshuffle()
                   | "ReadRanges" >> beam.ParDo(self._dofn).with_outputs(FAILED, main="boxes"))
        return results.boxes, results[FAILED]


class _ReadImageRanges(beam.DoFn):
    """Byte range of an image table -> (ImageID, ImageRow) for the wanted ImageIDs."""

    def __init__(self):
        self._rows_scanned = Metrics.counter("scan_images", "rows_scanned")
        self._rows_out = Metrics.counter("scan_images", "images_matched")
        self._failed = Metrics.counter("scan_images", "failures")
        self._busy_ms = Metrics.distribution("timing", "scan_images_ms")
        self._keys_for = (None, None)

    def _keys(self, image_ids: Iterable[str]) -> pa.Array:
        """The side input as a pyarrow array, built once per side-input value: with all
        classes it holds 1.7M IDs, too many to rebuild for every byte range."""
        if self._keys_for[0] is not image_ids:
            self._keys_for = (image_ids, pa.array(sorted(set(image_ids)), pa.string()))
        return self._keys_for[1]

    def process(self, rng: csvscan.ByteRange, image_ids: Iterable[str]):
        start = time.perf_counter()
        keys = self._keys(image_ids)
        with files.open_binary(rng.table.path) as f:
            offset, data = csvscan.read_range(f, rng)
        table, bad, n = csvscan.parse_and_filter(data, rng.table, offset,
                                                 rng.table.layout.columns, "ImageID", keys)
        self._rows_scanned.inc(n)
        found = rows.image_rows(table)
        self._rows_out.inc(len(found))
        self._failed.inc(len(bad))
        self._busy_ms.update(int((time.perf_counter() - start) * 1000))
        yield from found
        for b in bad:
            yield beam.pvalue.TaggedOutput(FAILED, _bad_row_failure(STAGE_SCAN_IMAGES, b))


class ScanImages(beam.PTransform):
    """Scan image tables in byte ranges and keep the rows of the wanted photos.

    Args:
      tables: image tables, checked by csvscan.open_table.
      image_ids: a side input (AsList) of the ImageIDs the box scan found.
      range_bytes: size of a range.

    Returns:
      (PCollection of (ImageID, ImageRow), PCollection of Failure).
    """

    def __init__(self, tables, image_ids, range_bytes):
        super().__init__()
        self._ranges = _ranges(tables, range_bytes)
        self._image_ids = image_ids

    def expand(self, pbegin):
        results = (pbegin
                   | "ListRanges" >> beam.Create(self._ranges)
                   | "SpreadRanges" >> beam.Reshuffle()
                   | "ReadRanges" >> beam.ParDo(_ReadImageRanges(), self._image_ids)
                   .with_outputs(FAILED, main="images"))
        return results.images, results[FAILED]
