"""The Beam stage that downloads photos: a sliding window of requests per worker.

A DoFn sees one element at a time, but downloads are latency-bound: so `_FetchPhotos`
offers each task to a download window (fetch_window.py) built in `setup()`, and yields
every photo that has finished so far, whichever element it came from. `process()` blocks
only when --fetch_concurrency requests are in flight (or too many photos wait for paused
hosts), and then it yields results as they arrive; `finish_bundle()` drains the rest,
because a bundle's outputs must be emitted before it commits. Pools, sessions and host
state live for the DoFn's lifetime, across bundles. Each output carries the timestamp
and window of the element it came from, as if it had been emitted there.

Why not Beam's own async support: `apache_beam.transforms.async_dofn.AsyncWrapper`
(Beam 2.77) needs keyed input, per-key state and processing-time timers, emits results
only when a timer fires (every few seconds by default), and on the FnApiRunner in batch
mode the pipeline fails ("A total of 2 watermark-pending bundles did not execute",
measured here with 64 elements). It also reseeds Python's global `random` with the key.
So the window is our own, and tested here (it never exceeds --fetch_concurrency).

A photo that no source delivers, or any exception while fetching it, becomes one failure
record per box, so the invariant (every box is one example or one failure) holds here.
"""
from __future__ import annotations

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.utils.windowed_value import WindowedValue

from pipelines import fetch
from pipelines.fetch_window import Window
from pipelines.progress import Progress
from pipelines.failures import FAILED
from schemas.records import STAGE_FETCH, Failure, FetchedPhoto, ImageTask

# Fetcher.stats keys published as Beam counters (namespace "fetch"); the window's host
# controls (pauses, backoffs) and the cache's second opinions among them.
STAT_COUNTERS = ("requests", "retries", "cache_hits", "cache_stale", "cache_write_errors",
                 "answers_429", "answers_5xx", "host_pauses", "host_backoffs",
                 "deadline_cuts", "fallbacks")


def failures_for(task: ImageTask, stage: str, reason: str, detail: str, url: str) -> list[Failure]:
    """One failure record per box of a task."""
    return [Failure(stage, task.image_id, b.box_index, url, reason, detail, b.mid)
            for b in task.boxes]


class _FetchPhotos(beam.DoFn):
    def __init__(self, config: fetch.FetchConfig):
        self._config = config
        self._counters = {k: Metrics.counter("fetch", k)
                          for k in STAT_COUNTERS + ("photos_fetched", "photos_failed")}
        self._reasons = {r: Metrics.counter("fetch", f"failed_{r}") for r in fetch.REASONS}
        self._sources = {s: Metrics.counter("fetch", f"from_{s}") for s in fetch.SOURCES}

    def setup(self):
        self._fetcher = fetch.Fetcher(self._config)
        self._window = Window(self._fetcher, self._config.fetch_concurrency,
                              self._config.fetch_per_host)
        self._seen: dict[str, int] = {}
        self._progress = Progress("fetch")

    def teardown(self):
        self._window.close()
        self._fetcher.close()

    def process(self, task: ImageTask, timestamp=beam.DoFn.TimestampParam,
                window=beam.DoFn.WindowParam):
        key = (task, timestamp, window)
        try:
            while not self._window.offer(key, task.image):
                self._window.wait()
                yield from self._emit_all(self._window.take())
        except Exception as err:  # never let one photo end the job
            yield from self._emit(key, fetch.FetchFailed(fetch.UNEXPECTED,
                                                         f"{type(err).__name__}: {err}"))
        yield from self._emit_all(self._window.take())

    def finish_bundle(self):
        yield from self._emit_all(self._window.drain())
        self._publish_stats()

    def _emit_all(self, results):
        for key, result in results:
            yield from self._emit(key, result)

    def _emit(self, key, result):
        task, timestamp, window = key

        def at_source(value):
            return WindowedValue(value, timestamp, (window,))

        if isinstance(result, fetch.FetchFailed):
            self._counters["photos_failed"].inc()
            self._progress.add(photos=1, failed=1)
            self._reasons.get(result.reason, self._reasons[fetch.UNEXPECTED]).inc()
            for failure in failures_for(task, STAGE_FETCH, result.reason, result.detail,
                                        result.url):
                yield beam.pvalue.TaggedOutput(FAILED, at_source(failure))
            return
        self._counters["photos_fetched"].inc()
        self._progress.add(photos=1, failed=0)
        self._sources[result.source].inc()
        yield at_source(FetchedPhoto(task, result.data, result.source, result.url, result.sha256))

    def _publish_stats(self):
        """Fetcher.stats are counted on pool threads, where Beam's metrics do not reach:
        the DoFn's thread publishes what changed since the last time."""
        stats = dict(self._fetcher.stats)
        for key in STAT_COUNTERS:
            delta = stats.get(key, 0) - self._seen.get(key, 0)
            if delta:
                self._counters[key].inc(delta)
        self._seen = stats


class FetchImages(beam.PTransform):
    """Download each task's photo.

    Args:
      config: sources, concurrency, deadlines, timeouts, retries, cache, safety.

    Returns:
      (PCollection of FetchedPhoto, PCollection of Failure: one per box of a lost photo).
    """

    def __init__(self, config: fetch.FetchConfig):
        super().__init__()
        self._config = config

    def expand(self, tasks):
        results = tasks | "Fetch" >> beam.ParDo(_FetchPhotos(self._config)).with_outputs(
            FAILED, main="photos")
        return results.photos, results[FAILED]
