"""The Beam stage that downloads photos: batched, concurrent, retried, cached, verified.

A DoFn sees one element at a time, but downloads are latency-bound: so tasks are batched
(`BatchElements`) and each batch runs on a thread pool and a connection pool built in
`setup()`, keeping --fetch_concurrency requests in flight per worker. A photo that no
source delivers becomes one failure record per box, so the invariant (every box is one
example or one failure) holds through this stage.
"""
from __future__ import annotations

import concurrent.futures
import time

import apache_beam as beam
from apache_beam.metrics import Metrics

from pipelines import fetch
from pipelines.progress import Progress
from pipelines.scan import FAILED
from schemas.records import STAGE_FETCH, Failure, FetchedPhoto, ImageTask


def failures_for(task: ImageTask, stage: str, reason: str, detail: str, url: str) -> list[Failure]:
    """One failure record per box of a task."""
    return [Failure(stage, task.image_id, b.box_index, url, reason, detail, b.mid)
            for b in task.boxes]


class _FetchBatch(beam.DoFn):
    def __init__(self, config: fetch.FetchConfig):
        self._config = config
        self._counters = {k: Metrics.counter("fetch", k)
                          for k in ("requests", "retries", "cache_hits", "photos_fetched",
                                    "photos_failed")}
        self._reasons = {r: Metrics.counter("fetch", f"failed_{r}") for r in fetch.REASONS}
        self._sources = {s: Metrics.counter("fetch", f"from_{s}") for s in fetch.SOURCES}
        self._busy_ms = Metrics.distribution("timing", "fetch_ms")

    def setup(self):
        self._fetcher = fetch.Fetcher(self._config)
        self._pool = concurrent.futures.ThreadPoolExecutor(self._config.fetch_concurrency,
                                                           thread_name_prefix="fetch")
        self._seen = dict(self._fetcher.stats)
        self._progress = Progress("fetch")

    def teardown(self):
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._fetcher.close()

    def process(self, batch: list[ImageTask]):
        start = time.perf_counter()
        futures = {self._pool.submit(self._fetcher.fetch, task.image): task for task in batch}
        for future in concurrent.futures.as_completed(futures):
            task = futures[future]
            try:
                got = future.result()
            except fetch.FetchFailed as err:
                self._counters["photos_failed"].inc()
                self._progress.add(photos=1, failed=1)
                self._reasons[err.reason].inc()
                for failure in failures_for(task, STAGE_FETCH, err.reason, err.detail, err.url):
                    yield beam.pvalue.TaggedOutput(FAILED, failure)
                continue
            self._counters["photos_fetched"].inc()
            self._progress.add(photos=1, failed=0)
            self._sources[got.source].inc()
            yield FetchedPhoto(task, got.data, got.source, got.url)
        stats = dict(self._fetcher.stats)
        for key in ("requests", "retries", "cache_hits"):
            self._counters[key].inc(stats.get(key, 0) - self._seen.get(key, 0))
        self._seen = stats
        self._busy_ms.update(int((time.perf_counter() - start) * 1000))


class FetchImages(beam.PTransform):
    """Download each task's photo.

    Args:
      config: sources, concurrency, timeouts, retries, cache, safety.

    Returns:
      (PCollection of FetchedPhoto, PCollection of Failure: one per box of a lost photo).
    """

    def __init__(self, config: fetch.FetchConfig):
        super().__init__()
        self._config = config

    def expand(self, tasks):
        n = self._config.fetch_concurrency
        results = (tasks
                   | "BatchTasks" >> beam.BatchElements(min_batch_size=1, max_batch_size=4 * n)
                   | "Fetch" >> beam.ParDo(_FetchBatch(self._config))
                   .with_outputs(FAILED, main="photos"))
        return results.photos, results[FAILED]
