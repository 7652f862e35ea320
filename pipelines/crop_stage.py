"""The Beam stage that cuts each fetched photo into one crop per box (see crop.py)."""
from __future__ import annotations

import logging
import time

import apache_beam as beam
from apache_beam.metrics import Metrics

from pipelines import crop
from pipelines.failures import FAILED
from schemas.records import STAGE_CROP, Box, Crop, Failure, FetchedPhoto

log = logging.getLogger(__name__)


def crop_or_fail(photo: FetchedPhoto,
                 spec: crop.CropSpec) -> list[tuple[Box, bytes | crop.DecodeError]]:
    """crop.crop_photo, with one rule at the photo's boundary: whatever it raises (a bug, a
    decoder's surprise, memory running out) becomes a `DecodeError` of reason `unexpected`
    for every box of the photo, so one photo never ends the job and no box goes missing."""
    task = photo.task
    try:
        return crop.crop_photo(photo.data, list(task.boxes), task.image.rotation, spec)
    except Exception as err:  # the boundary: anything, recorded, never raised
        log.warning("cropping %s raised %s; its %d boxes become failure records",
                    task.image_id, type(err).__name__, len(task.boxes), exc_info=True)
        error = crop.DecodeError(crop.UNEXPECTED, f"{type(err).__name__}: {err}")
        return [(box, error) for box in task.boxes]


class _CropPhoto(beam.DoFn):
    def __init__(self, spec: crop.CropSpec):
        self._spec = spec
        self._crops = Metrics.counter("crop", "crops")
        self._failed = Metrics.counter("crop", "failures")
        self._unexpected = Metrics.counter("crop", f"failed_{crop.UNEXPECTED}")
        self._busy_ms = Metrics.distribution("timing", "crop_ms")

    def process(self, photo: FetchedPhoto):
        task = photo.task
        start = time.perf_counter()
        # Every result is computed before the first is emitted: an error downstream (which
        # Beam raises through our yield) is never mistaken for this photo's.
        results = crop_or_fail(photo, self._spec)
        self._busy_ms.update(int((time.perf_counter() - start) * 1000))
        for box, out in results:
            if isinstance(out, crop.DecodeError):
                self._failed.inc()
                if out.reason == crop.UNEXPECTED:
                    self._unexpected.inc()
                yield beam.pvalue.TaggedOutput(FAILED, Failure(
                    STAGE_CROP, task.image_id, box.box_index, photo.url, out.reason,
                    out.detail, box.mid))
            else:
                self._crops.inc()
                yield Crop(task.image, box, task.split, out, photo.source, photo.url, photo.sha256)


class CropBoxes(beam.PTransform):
    """Crop every box of every photo.

    Returns:
      (PCollection of Crop, PCollection of Failure: one per box that could not be cropped,
      whatever went wrong with its photo).
    """

    def __init__(self, spec: crop.CropSpec):
        super().__init__()
        self._spec = spec

    def expand(self, photos):
        results = photos | "Crop" >> beam.ParDo(_CropPhoto(self._spec)).with_outputs(
            FAILED, main="crops")
        return results.crops, results[FAILED]
