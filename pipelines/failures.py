"""Failure records on their way to `failures.jsonl`: counted by combiners, written by runs.

Every stage's failures (Failure objects from fetch and crop, FAILURE_SCHEMA batches from the
plan) go through the same two steps, for `plan` and `build` alike:

- `count_failures` per element, added up by a combiner: records by 'stage/reason', and
  AFTER_PLAN, the fetch and crop failures of planned boxes, which the build's invariant
  needs (planned boxes = examples + AFTER_PLAN);
- `WriteFailureRuns` (pipelines/failures_stage.py, with the counting combiner) buffers
  records into sorted runs (pipelines/runs.py) and emits only their slices;
  `merge_failures` streams every run into one file, sorted like the records
  (by stage, image, box, ...), so the file is the same whatever the bundles were, and no
  worker ever holds every failure of a job.
"""
from __future__ import annotations

import collections

import pyarrow as pa

from pipelines import files, runs
from schemas.records import STAGE_CROP, STAGE_FETCH, Failure

FAILURES_FILE = "failures.jsonl"
FAILED = "failed"  # the output tag of every stage's failure records
AFTER_PLAN = "after_plan"


def records_of(failures: Failure | pa.Table) -> list[Failure]:
    """A Failure, or the rows of a FAILURE_SCHEMA batch, as Failure records."""
    if isinstance(failures, Failure):
        return [failures]
    return [Failure(**row) for row in failures.to_pylist()]


def after_plan(stage: str, mid: str) -> bool:
    """Whether a failure is of a planned box (fetch or crop), which the invariant counts."""
    return bool(mid) and stage in (STAGE_FETCH, STAGE_CROP)


def count_failures(failures: Failure | pa.Table) -> collections.Counter:
    """A Failure or a FAILURE_SCHEMA batch -> {'stage/reason': n, AFTER_PLAN: n}."""
    counts: collections.Counter = collections.Counter()
    for f in records_of(failures):
        counts[f"{f.stage}/{f.reason}"] += 1
        if after_plan(f.stage, f.mid):
            counts[AFTER_PLAN] += 1
    return counts


def by_reason(counts: dict) -> dict:
    """The 'stage/reason' counts of a count_failures total, sorted."""
    return dict(sorted((k, v) for k, v in counts.items() if k != AFTER_PLAN))


def entry(f: Failure) -> tuple[bytes, bytes]:
    """A failure record as a run entry: (key in the records' sort order, JSON line)."""
    key = runs.sort_key(f.stage, f.image_id, f.box_index, f.url, f.reason, f.detail, f.mid)
    return key, f.to_json().encode("utf-8")


def merge_failures(slices: list[runs.RunSlice], path: str) -> str:
    """Stream every failure run into one JSON Lines file, sorted like the records; returns
    the file's sha256."""
    with files.open_for_write_hashed(path) as f:
        for _, value in runs.merge(slices):
            f.write(value + b"\n")
    return f.hexdigest()
