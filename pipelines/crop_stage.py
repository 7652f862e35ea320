"""The Beam stage that cuts each fetched photo into one crop per box (see crop.py)."""
from __future__ import annotations

import time

import apache_beam as beam
from apache_beam.metrics import Metrics

from pipelines import crop
from pipelines.scan import FAILED
from schemas.records import STAGE_CROP, Crop, Failure, FetchedPhoto


class _CropPhoto(beam.DoFn):
    def __init__(self, spec: crop.CropSpec):
        self._spec = spec
        self._crops = Metrics.counter("crop", "crops")
        self._failed = Metrics.counter("crop", "failures")
        self._busy_ms = Metrics.distribution("timing", "crop_ms")

    def process(self, photo: FetchedPhoto):
        task = photo.task
        start = time.perf_counter()
        results = crop.crop_photo(photo.data, list(task.boxes), task.image.rotation, self._spec)
        self._busy_ms.update(int((time.perf_counter() - start) * 1000))
        for box, out in results:
            if isinstance(out, crop.DecodeError):
                self._failed.inc()
                yield beam.pvalue.TaggedOutput(FAILED, Failure(
                    STAGE_CROP, task.image_id, box.box_index, photo.url, out.reason,
                    out.detail, box.mid))
            else:
                self._crops.inc()
                yield Crop(task.image, box, task.split, out, photo.source, photo.url, photo.sha256)


class CropBoxes(beam.PTransform):
    """Crop every box of every photo.

    Returns:
      (PCollection of Crop, PCollection of Failure: one per box that could not be cropped).
    """

    def __init__(self, spec: crop.CropSpec):
        super().__init__()
        self._spec = spec

    def expand(self, photos):
        results = photos | "Crop" >> beam.ParDo(_CropPhoto(self._spec)).with_outputs(
            FAILED, main="crops")
        return results.crops, results[FAILED]
