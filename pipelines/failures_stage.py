"""The failure records' Beam side: counted by a combiner, written as sorted runs.

Every stage's failures (Failure objects from fetch and crop, FAILURE_SCHEMA batches from
the plan) go through these, in `plan` and `build` alike; the pure core (counting, the
records' sort key, merging the runs into failures.jsonl) is pipelines/failures.py.
"""
from __future__ import annotations

import collections

import apache_beam as beam

from pipelines import runs
from pipelines.failures import count_failures, entry, records_of


class WriteFailureRuns(beam.DoFn):
    """Failure records (Failure objects or FAILURE_SCHEMA batches) -> sorted runs in a
    scratch folder; emits the runs' slices, for `merge_failures`."""

    def __init__(self, folder: str):
        self._folder = folder

    def start_bundle(self):
        self._writer = runs.RunWriter(self._folder)

    def process(self, failures):
        for f in records_of(failures):
            yield from self._writer.add(("failures",), *entry(f))

    def finish_bundle(self):
        yield from runs.windowed(self._writer.flush())


class CountFailures(beam.PTransform):
    """Failures -> one dict of count_failures totals (a singleton, {} when none)."""

    def expand(self, failures):
        return (failures
                | "Count" >> beam.Map(count_failures)
                | "Sum" >> beam.CombineGlobally(SumCounts()))


class SumCounts(beam.CombineFn):
    """Adds up Counters."""

    def create_accumulator(self):
        return collections.Counter()

    def add_input(self, acc, counts):
        acc.update(counts)
        return acc

    def merge_accumulators(self, accs):
        total = collections.Counter()
        for acc in accs:
            total.update(acc)
        return total

    def extract_output(self, acc):
        return dict(acc)
