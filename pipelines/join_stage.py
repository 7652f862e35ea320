"""The join stage: Beam transforms that join each bucket of photos and apply the limit.

Boxes and image rows arrive bucketed by ImageID, as the addresses of Arrow batches in
scratch files (pipelines/batches.py); one GroupByKey gathers each bucket's addresses and
its join runs vectorised (pipelines/join.py, the stage's pure core). Under
--max_per_class every bucket offers its n best boxes per label, a combiner keeps the n
best of those, and the n-th is the threshold every bucket is filtered by; meanwhile the
buckets' plans wait in scratch files, so no buffer holds the whole plan.
"""
from __future__ import annotations

import collections
import time

import apache_beam as beam
import pyarrow as pa
from apache_beam.metrics import Metrics

from pipelines import batches, join, scan_stage
from pipelines.failures import FAILED

PLAN, CANDIDATES = "plan", "candidates"


class _JoinBuckets(beam.DoFn):
    """(bucket, [(tag, batch)...]) -> (bucket, PLAN_BATCH); failures and, under
    --max_per_class, the bucket's candidates tagged. Under the limit, a bucket passes on
    only the boxes that are among its own n best per label: no others can be chosen."""

    def __init__(self, spec: join.JoinSpec, max_per_class: int, scratch: str):
        self._spec, self._n, self._scratch = spec, max_per_class, scratch
        self._boxes = Metrics.counter("join", "boxes")
        self._failed = Metrics.counter("join", "failures")
        self._over = Metrics.counter("limit", "boxes_over_limit")
        self._busy_ms = Metrics.distribution("timing", "join_ms")

    def process(self, element):
        bucket, tagged = element
        start = time.perf_counter()
        groups = collections.defaultdict(list)
        for tag, where in tagged:
            groups[tag].append(where)
        plan, failures = join.join_bucket(batches.load(groups[scan_stage.BOXES]),
                                          batches.load(groups[scan_stage.IMAGES]), self._spec)
        if self._n:
            candidates = join.limit_candidates(plan, self._n)
            plan, over = join.apply_limit(plan, join.thresholds(candidates, self._n),
                                          keep_priority=True)
            self._over.inc(over)
            yield beam.pvalue.TaggedOutput(CANDIDATES, candidates)
        self._boxes.inc(plan.num_rows)
        self._failed.inc(failures.num_rows)
        self._busy_ms.update(int((time.perf_counter() - start) * 1000))
        if failures.num_rows:
            yield beam.pvalue.TaggedOutput(FAILED, failures)
        if self._n:  # the limit waits for every bucket: the plan waits in a file
            yield from batches.spill(self._scratch, [(bucket, plan)])
        else:
            yield bucket, plan


class _MergeCandidates(beam.CombineFn):
    """The n best boxes per label over every bucket, then each label's threshold."""

    def __init__(self, n: int):
        self._n = n

    def create_accumulator(self):
        return join.CANDIDATES.empty_table()

    def add_input(self, acc, candidates):
        return join.merge_candidates([acc, candidates], self._n)

    def merge_accumulators(self, accs):
        return join.merge_candidates(accs, self._n)

    def extract_output(self, acc):
        return join.thresholds(acc, self._n)


class _ApplyLimit(beam.DoFn):
    def __init__(self):
        self._over = Metrics.counter("limit", "boxes_over_limit")

    def process(self, element, limits):
        bucket, where = element
        plan, over = join.apply_limit(pa.concat_tables(batches.load([where])), limits)
        self._over.inc(over)
        yield bucket, plan


class JoinBuckets(beam.PTransform):
    """Join bucketed boxes and image rows; apply --max_per_class.

    Args:
      spec: what the join needs (selected MIDs, labels, splits, seed).
      max_per_class: the limit (0: none).
      num_buckets: every bucket gets an element, so each writes its plan file, even empty.
      scratch: a folder for the limited plans while the threshold is found.

    Input: a tuple of PCollections of (bucket, (tag, RunSlice)), tags scan_stage.BOXES and
    scan_stage.IMAGES.

    Returns:
      (PCollection of (bucket, PLAN_BATCH), one per bucket; PCollection of FAILURE_SCHEMA
      batches).
    """

    def __init__(self, spec: join.JoinSpec, max_per_class: int, num_buckets: int, scratch: str):
        super().__init__()
        self._spec, self._n, self._buckets, self._scratch = (spec, max_per_class, num_buckets,
                                                              scratch)

    def expand(self, bucketed):
        every = (bucketed[0].pipeline
                 | "EveryBucket" >> beam.Create([(b, (None, None)) for b in range(self._buckets)]))
        joined = ((*bucketed, every)
                  | "Bucketed" >> beam.Flatten()
                  | "GroupBuckets" >> beam.GroupByKey()
                  | "Join" >> beam.ParDo(_JoinBuckets(self._spec, self._n, self._scratch))
                  .with_outputs(FAILED, CANDIDATES, main=PLAN))
        plan = joined[PLAN]
        if self._n:
            limits = joined[CANDIDATES] | "Thresholds" >> beam.CombineGlobally(
                _MergeCandidates(self._n))
            plan = plan | "LimitPerClass" >> beam.ParDo(_ApplyLimit(),
                                                        beam.pvalue.AsSingleton(limits))
        return plan, joined[FAILED]
