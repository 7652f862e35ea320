"""Joining boxes to their image rows, one bucket of photos at a time, vectorised.

Pure functions over Arrow batches. The plan partitions boxes and image rows by a hash
bucket of ImageID (pipelines/keys.py), so every row of a photo meets in one bucket, and
`join_bucket` does for a whole bucket what was once done per photo:

- boxes are put in canonical order per photo (class, coordinates, flags) and numbered
  0..n-1: that `box_index` is stable across runs and row orders; an identical second box
  of the same class is a failure (`duplicate_box`), not a second example of the same pixels;
- a photo listed twice in the image table keeps the row that sorts first by its fields
  (row order never matters); a photo missing from it fails its boxes (`no_image_row`), an
  unusable row (odd Rotation, a size that is not a number) fails them with the reason
  (`bad_image_row`);
- each photo gets its split (all its boxes share it, so no photo leaks across splits).

`--max_per_class` keeps, per label, the boxes with the smallest seeded priority: each bucket
offers its n best per label (`limit_candidates`), a combiner keeps the n best of those
(`merge_candidates`), and the n-th of them is the threshold every bucket filters by
(`apply_limit`). The choice is a function of the boxes and the seed only.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines import keys
from schemas import failures
from schemas.records import BOX_BATCH, FAILURE_SCHEMA, IMAGE_BATCH, PLAN_BATCH, SPLITS, STAGE_JOIN

NO_IMAGE_ROW = failures.declared(STAGE_JOIN, "no_image_row")
BAD_IMAGE_ROW = failures.declared(STAGE_JOIN, "bad_image_row")
DUPLICATE_BOX = failures.declared(STAGE_JOIN, "duplicate_box")
DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)
SPLIT_SOURCES = ("hash", "openimages")
FLAGS = ("is_occluded", "is_truncated", "is_group_of", "is_depiction", "is_inside")
_CANONICAL = ("mid_index", "xmin", "xmax", "ymin", "ymax") + FLAGS
_IMAGE_COLUMNS = [f.name for f in IMAGE_BATCH if f.name not in ("image_id", "problem")]
_SMALLEST = {"original_size": pa.scalar(-2**63, pa.int64()),
             "rotation": pa.scalar(-2**15, pa.int16())}
PRIORITY = "priority"  # the --max_per_class rank, carried while the limit is decided
CANDIDATES = pa.schema([("label_index", pa.int32()), (PRIORITY, pa.float64()),
                        ("image_id", pa.uint64()), ("box_index", pa.int32())])


def check_fractions(fractions: Iterable[float]) -> tuple[float, float, float]:
    """Validate train/validation/test fractions: three non-negative numbers summing to 1."""
    f = tuple(float(x) for x in fractions)
    if len(f) != 3 or not all(math.isfinite(x) and x >= 0 for x in f) or abs(sum(f) - 1.0) > 1e-6:
        raise ValueError(f"--split_fractions needs three non-negative numbers (train, "
                         f"validation, test) that sum to 1, not {list(f)}")
    return f


@dataclasses.dataclass(frozen=True)
class JoinSpec:
    """What a bucket's join needs to know.

    Attributes:
      mids: the selected MIDs, sorted (boxes carry their place here as `mid_index`).
      labels: label names, by label index.
      split_source: `hash` (SHA-256 of ImageID and seed) or `openimages` (the table's
        Subset; photos with another Subset fall back to the hash).
      seed, fractions: of the hash split and of the --max_per_class priorities.
      priorities: add the PRIORITY column (only --max_per_class needs it).
    """

    mids: tuple[str, ...]
    labels: tuple[str, ...]
    split_source: str = "hash"
    seed: int = 0
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS
    priorities: bool = False

    def __post_init__(self):
        if self.split_source not in SPLIT_SOURCES:
            raise ValueError(f"--split_source must be hash or openimages, not "
                             f"{self.split_source!r}")


def assign_splits(image_ids: pa.Array, subsets: pa.Array, spec: JoinSpec) -> np.ndarray:
    """The index in SPLITS of each photo's split."""
    split = keys.splits_from_floats(keys.split_floats(image_ids, spec.seed), spec.fractions)
    if spec.split_source == "openimages":
        own = np.asarray(pc.index_in(subsets, value_set=pa.array(SPLITS)).to_numpy(
            zero_copy_only=False), float)
        split = np.where(np.isnan(own), split, np.nan_to_num(own)).astype(np.int64)
    return split


def _photo_splits(ids: np.ndarray, texts: pa.Array, subsets: pa.ChunkedArray,
                  spec: JoinSpec) -> np.ndarray:
    """assign_splits for rows sorted by photo, hashing each photo once."""
    if len(ids) == 0:
        return np.zeros(0, np.int64)
    first = np.concatenate([[True], ids[1:] != ids[:-1]])
    at = np.flatnonzero(first)
    per_photo = assign_splits(texts.take(pa.array(at)), subsets.take(pa.array(at)), spec)
    return per_photo[np.cumsum(first) - 1]


def _concat(tables: Iterable[pa.Table], schema: pa.Schema) -> pa.Table:
    tables = [t for t in tables if t is not None and t.num_rows]
    return pa.concat_tables(tables).combine_chunks() if tables else schema.empty_table()


def _failures(stage: str, image_ids: pa.Array, box_index, url, reason: str, detail,
              mids: pa.Array) -> pa.Table:
    n = len(image_ids)
    full = lambda v: v if isinstance(v, (pa.Array, pa.ChunkedArray, np.ndarray)) else [v] * n
    return pa.table({"stage": [stage] * n, "image_id": image_ids,
                     "box_index": pa.array(full(box_index), pa.int32()),
                     "url": pa.array(full(url), pa.string()), "reason": [reason] * n,
                     "detail": pa.array(full(detail), pa.string()), "mid": mids},
                    schema=FAILURE_SCHEMA)


def _first_row_per_photo(images: pa.Table) -> pa.Table:
    """One image row per ImageID: the first by all its fields (nulls first)."""
    if images.num_rows == 0:
        return images
    columns = ["image_id"] + _IMAGE_COLUMNS + ["problem"]
    # Nulls first: sort a copy where each null is the type's smallest value.
    nulls_first = pa.table({c: pc.fill_null(images[c], _SMALLEST[c]) if c in _SMALLEST
                            else images[c] for c in columns})
    images = images.take(pc.sort_indices(nulls_first, [(c, "ascending") for c in columns]))
    ids = images["image_id"].to_numpy()
    first = np.concatenate([[True], ids[1:] != ids[:-1]])
    return images.filter(pa.array(first))


def join_bucket(boxes: Iterable[pa.Table], images: Iterable[pa.Table],
                spec: JoinSpec) -> tuple[pa.Table, pa.Table]:
    """Join one bucket's boxes (BOX_BATCHes) with its image rows (IMAGE_BATCHes).

    Returns:
      (PLAN_BATCH sorted by image_id and box_index, with PRIORITY when spec.priorities;
      FAILURE_SCHEMA batch of duplicate boxes and boxes without a usable image row).
    """
    b = _concat(boxes, BOX_BATCH)
    if b.num_rows == 0:
        plan = PLAN_BATCH.empty_table()
        if spec.priorities:
            plan = plan.append_column(PRIORITY, pa.array([], pa.float64()))
        return plan, FAILURE_SCHEMA.empty_table()
    order = pc.sort_indices(b, [(c, "ascending") for c in ("image_id",) + _CANONICAL])
    cols = {name: c.to_numpy() for name, c in zip(b.column_names, b.take(order).columns)}
    ids = cols["image_id"]
    same_photo = np.concatenate([[False], ids[1:] == ids[:-1]])
    duplicate = same_photo.copy()
    for c in _CANONICAL:
        duplicate[1:] &= cols[c][1:] == cols[c][:-1]
    kept_so_far = np.cumsum(~duplicate)
    photo_start = np.maximum.accumulate(np.where(~same_photo, np.arange(len(ids)), 0))
    box_index = kept_so_far - kept_so_far[photo_start] + (~duplicate[photo_start]) - 1
    mid_names = pa.array(spec.mids).take(pa.array(cols["mid_index"]))
    id_text = keys.u64_to_image_ids(ids)
    failures = [_failures(STAGE_JOIN, id_text.filter(pa.array(duplicate)), -1, "",
                          DUPLICATE_BOX,
                          pa.array([f"same class and coordinates as box {k}"
                                    for k in box_index[duplicate]], pa.string()),
                          mid_names.filter(pa.array(duplicate)))]

    unique = ~duplicate
    rows = _first_row_per_photo(_concat(images, IMAGE_BATCH))
    row_ids = rows["image_id"].to_numpy()
    where = np.searchsorted(row_ids, ids)
    found = (where < len(row_ids)) & (row_ids[np.minimum(where, len(row_ids) - 1)] == ids
                                      if len(row_ids) else np.zeros(len(ids), bool))
    problem = np.full(len(ids), "", object)
    if len(row_ids):
        problem[found] = np.asarray(rows["problem"].to_numpy(zero_copy_only=False),
                                    object)[where[found]]
    missing = unique & ~found
    unusable = unique & found & (problem != "")
    failures.append(_failures(STAGE_JOIN, id_text.filter(pa.array(missing)),
                              box_index[missing], "", NO_IMAGE_ROW,
                              "ImageID not found in the image table",
                              mid_names.filter(pa.array(missing))))
    if unusable.any():
        at = pa.array(where[unusable])
        failures.append(_failures(STAGE_JOIN, id_text.filter(pa.array(unusable)),
                                  box_index[unusable], rows["original_url"].take(at),
                                  BAD_IMAGE_ROW, pa.array(problem[unusable], pa.string()),
                                  mid_names.filter(pa.array(unusable))))

    ok = unique & found & (problem == "")
    image = rows.take(pa.array(where[ok]))
    plan_ids = id_text.filter(pa.array(ok))
    split = np.asarray(SPLITS, object)[_photo_splits(ids[ok], plan_ids, image["subset"], spec)]
    plan = {"image_id": plan_ids, "box_index": box_index[ok].astype(np.int32),
            "mid": mid_names.filter(pa.array(ok)),
            "label": pa.array(spec.labels).take(pa.array(cols["label_index"][ok])),
            "label_index": cols["label_index"][ok].astype(np.int32)}
    plan.update({c: cols[c][ok] for c in ("xmin", "xmax", "ymin", "ymax") + FLAGS})
    plan["split"] = pa.array(split, pa.string())
    plan.update({c: image[c] for c in _IMAGE_COLUMNS})
    table = pa.table({f.name: plan[f.name] for f in PLAN_BATCH}, schema=PLAN_BATCH)
    if spec.priorities:
        table = table.append_column(PRIORITY, pa.array(keys.sample_priorities(
            plan_ids, table["mid"], [cols[c][ok] for c in ("xmin", "xmax", "ymin", "ymax")],
            [cols[c][ok] for c in FLAGS], spec.seed)))
    return table, pa.concat_tables(failures)


def _smallest_per_label(c: pa.Table, n: int) -> pa.Table:
    """Per label_index, the n candidates with the smallest (priority, image_id, box_index)."""
    if c.num_rows == 0:
        return c
    c = c.sort_by([("label_index", "ascending"), (PRIORITY, "ascending"),
                   ("image_id", "ascending"), ("box_index", "ascending")])
    labels = c["label_index"].to_numpy()
    starts = np.concatenate([[0], np.flatnonzero(labels[1:] != labels[:-1]) + 1])
    group_start = starts[np.searchsorted(starts, np.arange(len(labels)), side="right") - 1]
    return c.filter(pa.array(np.arange(len(labels)) - group_start < n))


def limit_candidates(plan: pa.Table, n: int) -> pa.Table:
    """A bucket's offer to the limit: per label, its n best boxes (CANDIDATES)."""
    ids, _ = keys.image_ids_to_u64(plan["image_id"])
    return _smallest_per_label(pa.table({
        "label_index": plan["label_index"], PRIORITY: plan[PRIORITY], "image_id": ids,
        "box_index": plan["box_index"]}, schema=CANDIDATES), n)


def merge_candidates(tables: Iterable[pa.Table], n: int) -> pa.Table:
    """The n best per label among several offers."""
    return _smallest_per_label(_concat(tables, CANDIDATES), n)


def thresholds(candidates: pa.Table, n: int) -> dict[int, tuple[float, int, int]]:
    """label index -> the n-th best (priority, image_id, box_index), for labels with more
    than n boxes (the others keep every box)."""
    best = _smallest_per_label(candidates, n)
    if best.num_rows == 0:
        return {}
    labels = best["label_index"].to_numpy()
    starts = np.concatenate([[0], np.flatnonzero(labels[1:] != labels[:-1]) + 1])
    counts = np.diff(np.append(starts, len(labels)))
    last = best.take(pa.array(starts[counts == n] + n - 1)).to_pylist()
    return {r["label_index"]: (r[PRIORITY], r["image_id"], r["box_index"]) for r in last}


def apply_limit(plan: pa.Table, limits: dict[int, tuple[float, int, int]],
                keep_priority: bool = False) -> tuple[pa.Table, int]:
    """Keep the boxes within their label's threshold. Returns (plan, boxes over the
    limit); PRIORITY is dropped unless keep_priority. Kept boxes keep their box_index."""
    done = (lambda t: t) if keep_priority else (lambda t: t.drop_columns([PRIORITY]))
    if plan.num_rows == 0 or not limits:
        return done(plan), 0
    label = plan["label_index"].to_numpy()
    prio = plan[PRIORITY].to_numpy()
    ids, _ = keys.image_ids_to_u64(plan["image_id"])
    index = plan["box_index"].to_numpy()
    keep = np.ones(plan.num_rows, bool)
    for label_index, (tp, tid, tbi) in limits.items():
        mine = label == label_index
        within = (prio < tp) | ((prio == tp) & ((ids < tid) | ((ids == tid) & (index <= tbi))))
        keep &= ~mine | within
    return done(plan.filter(pa.array(keep))), int((~keep).sum())
