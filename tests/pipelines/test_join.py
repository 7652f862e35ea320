"""The join of one bucket, vectorised: box order and indices, duplicates, orphans, splits,
the choice of --max_per_class (checked against plain Python on the same boxes)."""
import collections
import random

import numpy as np
import pyarrow as pa
import pytest

from pipelines import join, keys
from pipelines.demo.catalog import image_id_for
from pipelines.join import BAD_IMAGE_ROW, DUPLICATE_BOX, NO_IMAGE_ROW
from schemas.records import BOX_BATCH, IMAGE_BATCH, PLAN_BATCH

MIDS = ("/m/0cdn1", "/m/0l515")
SPEC = join.JoinSpec(MIDS, ("Hamburger", "Sandwich"))
PHOTO = "0123456789abcdef"


def _u64(image_id: str) -> int:
    return int(image_id, 16)


def _boxes(*boxes) -> pa.Table:
    """BOX_BATCH from (image_id, mid_index, x) tuples: an 0.2-wide box at x."""
    rows = [{"image_id": _u64(i), "mid_index": m, "label_index": m, "xmin": x, "xmax": x + 0.2,
             "ymin": 0.1, "ymax": 0.5, "is_occluded": 0, "is_truncated": 0, "is_group_of": 0,
             "is_depiction": 0, "is_inside": 0} for i, m, x in boxes]
    return pa.Table.from_pylist(rows, schema=BOX_BATCH)


def _images(*image_ids, **fields) -> pa.Table:
    rows = []
    for i in image_ids:
        row = dict(image_id=_u64(i), subset="train", original_url=f"u/{i}", landing_url="l",
                   license="lic", author_profile_url="a", author="A", title="t",
                   original_size=1, original_md5="m", thumbnail_url="", rotation=0, problem="")
        row.update(fields)
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=IMAGE_BATCH)


def test_box_index_follows_canonical_order_not_arrival_order():
    boxes = [(PHOTO, 0, 0.5), (PHOTO, 0, 0.1), (PHOTO, 1, 0.3)]
    a, _ = join.join_bucket([_boxes(*boxes)], [_images(PHOTO)], SPEC)
    b, _ = join.join_bucket([_boxes(*boxes[::-1][:1]), _boxes(*boxes[::-1][1:])],
                            [_images(PHOTO)], SPEC)
    assert a.equals(b) and a.schema.equals(PLAN_BATCH)
    assert list(zip(a["mid"].to_pylist(), a["xmin"].to_pylist(), a["box_index"].to_pylist())) == [
        ("/m/0cdn1", 0.1, 0), ("/m/0cdn1", 0.5, 1), ("/m/0l515", 0.3, 2)]
    assert a["label"].to_pylist() == ["Hamburger", "Hamburger", "Sandwich"]


def test_identical_boxes_are_one_example_and_one_duplicate_failure():
    plan, failures = join.join_bucket([_boxes((PHOTO, 0, 0.1), (PHOTO, 1, 0.3), (PHOTO, 1, 0.3))],
                                      [_images(PHOTO)], SPEC)
    assert plan["box_index"].to_pylist() == [0, 1]
    assert failures.to_pylist() == [{
        "stage": "join", "image_id": PHOTO, "box_index": -1, "url": "",
        "reason": DUPLICATE_BOX, "detail": "same class and coordinates as box 1",
        "mid": "/m/0l515"}]


def test_boxes_without_image_row_fail_with_no_image_row():
    other = "fedcba9876543210"
    plan, failures = join.join_bucket([_boxes((PHOTO, 0, 0.1), (PHOTO, 0, 0.4), (other, 1, 0.2))],
                                      [_images(other)], SPEC)
    assert plan["image_id"].to_pylist() == [other]
    assert [(f["image_id"], f["reason"], f["box_index"]) for f in failures.to_pylist()] == [
        (PHOTO, NO_IMAGE_ROW, 0), (PHOTO, NO_IMAGE_ROW, 1)]


def test_unusable_image_row_fails_its_boxes_with_the_reason():
    plan, failures = join.join_bucket(
        [_boxes((PHOTO, 0, 0.1))],
        [_images(PHOTO, rotation=None, problem="Rotation 45.0 is not one of 0, 90, 180, 270")],
        SPEC)
    assert plan.num_rows == 0
    [f] = failures.to_pylist()
    assert f["reason"] == BAD_IMAGE_ROW and "45.0" in f["detail"] and f["url"] == f"u/{PHOTO}"


def test_a_photo_listed_twice_keeps_the_row_that_sorts_first_whatever_the_order():
    rows = [_images(PHOTO, title="zebra"), _images(PHOTO, title="apple")]
    a, _ = join.join_bucket([_boxes((PHOTO, 0, 0.1))], rows, SPEC)
    b, _ = join.join_bucket([_boxes((PHOTO, 0, 0.1))], rows[::-1], SPEC)
    assert a["title"].to_pylist() == b["title"].to_pylist() == ["apple"]


def test_split_is_stable_seeded_and_close_to_the_fractions():
    ids = [image_id_for(3, i) for i in range(20_000)]
    texts, subsets = pa.array(ids), pa.array(["train"] * len(ids))
    splits = join.assign_splits(texts, subsets, SPEC)
    assert [("train", "validation", "test")[s] for s in splits[:500]] == [
        keys.split_of(i, 0, join.DEFAULT_FRACTIONS) for i in ids[:500]]
    counts = collections.Counter(splits.tolist())
    assert abs(counts[0] / len(ids) - 0.8) < 0.02 and abs(counts[1] / len(ids) - 0.1) < 0.02
    other = join.assign_splits(texts, subsets, join.JoinSpec(MIDS, SPEC.labels, seed=1))
    assert 0.2 < (splits != other).mean() < 0.5
    all_test = join.JoinSpec(MIDS, SPEC.labels, fractions=(0.0, 0.0, 1.0))
    assert set(join.assign_splits(texts[:100], subsets[:100], all_test).tolist()) == {2}


def test_openimages_split_source_keeps_subset():
    spec = join.JoinSpec(MIDS, SPEC.labels, split_source="openimages")
    got = join.assign_splits(pa.array([PHOTO, PHOTO]), pa.array(["validation", "weird"]), spec)
    assert got[0] == 1
    assert ("train", "validation", "test")[got[1]] == keys.split_of(PHOTO, 0, join.DEFAULT_FRACTIONS)


@pytest.mark.parametrize("bad", [(0.5, 0.5), (0.8, 0.1, 0.2), (1.2, -0.1, -0.1)])
def test_bad_fractions_are_refused(bad):
    with pytest.raises(ValueError, match="split_fractions"):
        join.check_fractions(bad)


def test_priority_depends_on_box_identity_and_seed_only():
    spec = join.JoinSpec(MIDS, SPEC.labels, priorities=True)
    relabelled = join.JoinSpec(MIDS, ("Burger", "Sandwich"), priorities=True)
    boxes = [_boxes((PHOTO, 0, 0.1), (PHOTO, 1, 0.3))]
    a, _ = join.join_bucket(boxes, [_images(PHOTO)], spec)
    b, _ = join.join_bucket(boxes, [_images(PHOTO, title="other")], relabelled)
    c, _ = join.join_bucket(boxes, [_images(PHOTO)], join.JoinSpec(MIDS, SPEC.labels, seed=1,
                                                                 priorities=True))
    assert a[join.PRIORITY].equals(b[join.PRIORITY])
    assert not a[join.PRIORITY].equals(c[join.PRIORITY])


def test_the_limit_keeps_each_labels_n_smallest_priorities_across_buckets():
    rng = random.Random(5)
    spec = join.JoinSpec(MIDS, SPEC.labels, priorities=True)
    photos = [image_id_for(9, i) for i in range(300)]
    buckets = collections.defaultdict(list)
    for p in photos:
        boxes = [(p, rng.randrange(2), round(rng.random() * 0.7, 6)) for _ in range(rng.randrange(1, 4))]
        buckets[int(keys.bucket_of(np.array([_u64(p)], np.uint64), 7)[0])].append((p, boxes))
    plans = [join.join_bucket([_boxes(*[b for _, bs in group for b in bs])],
                              [_images(*[p for p, _ in group])], spec)[0]
             for group in buckets.values()]
    n = 40
    offers = [join.limit_candidates(plan, n) for plan in plans]
    limits = join.thresholds(join.merge_candidates(offers[::-1], n), n)
    kept = pa.concat_tables([join.apply_limit(plan, limits)[0] for plan in plans])
    everything = pa.concat_tables(plans).to_pylist()
    expected = set()
    for label in (0, 1):
        mine = sorted((r[join.PRIORITY], r["image_id"], r["box_index"]) for r in everything
                      if r["label_index"] == label)
        expected |= {(i, b) for _, i, b in mine[:n]}
    assert set(zip(kept["image_id"].to_pylist(), kept["box_index"].to_pylist())) == expected
    assert join.PRIORITY not in kept.column_names
    assert collections.Counter(kept["label_index"].to_pylist()) == {0: n, 1: n}
