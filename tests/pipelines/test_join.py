"""Pure join logic: box order and indices, duplicates, orphans, splits, sampling."""
import collections
import dataclasses

import pytest

from pipelines import join
from schemas.records import (REASON_BAD_IMAGE_ROW, REASON_DUPLICATE_BOX, REASON_NO_IMAGE_ROW,
                             Box, ImageRow)
from pipelines.demo.catalog import image_id_for


def _box(mid="/m/0cdn1", x=0.1, **kw):
    return Box(mid=mid, xmin=x, xmax=x + 0.2, ymin=0.1, ymax=0.5, is_occluded=0,
               is_truncated=0, is_group_of=0, is_depiction=0, is_inside=0, **kw)


def _image(image_id="0123456789abcdef", **kw):
    fields = dict(image_id=image_id, subset="train", original_url="u", landing_url="l",
                  license="lic", author_profile_url="a", author="A", title="t",
                  original_size=1, original_md5="m", thumbnail_url="", rotation=0)
    fields.update(kw)
    return ImageRow(**fields)


def _split(row):
    return join.split_of(row.image_id, 0)


def test_box_index_follows_canonical_order_not_arrival_order():
    boxes = [_box(x=0.5), _box(x=0.1), _box(mid="/m/0l515", x=0.3)]
    a, _ = join.make_task("0123456789abcdef", boxes, [_image()], _split)
    b, _ = join.make_task("0123456789abcdef", list(reversed(boxes)), [_image()], _split)
    assert a == b
    assert [(x.mid, x.xmin, x.box_index) for x in a.boxes] == [
        ("/m/0cdn1", 0.1, 0), ("/m/0cdn1", 0.5, 1), ("/m/0l515", 0.3, 2)]


def test_identical_boxes_are_one_example_and_one_duplicate_failure():
    task, failures = join.make_task("0123456789abcdef", [_box(), _box()], [_image()], _split)
    assert len(task.boxes) == 1
    assert [(f.reason, f.mid) for f in failures] == [(REASON_DUPLICATE_BOX, "/m/0cdn1")]


def test_boxes_without_image_row_fail_with_no_image_row():
    task, failures = join.make_task("0123456789abcdef", [_box(), _box(x=0.4)], [], _split)
    assert task is None
    assert [(f.reason, f.box_index) for f in failures] == [(REASON_NO_IMAGE_ROW, 0),
                                                          (REASON_NO_IMAGE_ROW, 1)]


def test_unusable_image_row_fails_its_boxes_with_the_reason():
    row = _image(rotation=None, problem="Rotation 45.0 is not one of 0, 90, 180, 270")
    task, failures = join.make_task("0123456789abcdef", [_box()], [row], _split)
    assert task is None
    assert failures[0].reason == REASON_BAD_IMAGE_ROW and "45.0" in failures[0].detail


def test_split_is_stable_seeded_and_close_to_the_fractions():
    ids = [image_id_for(3, i) for i in range(20_000)]
    splits = [join.split_of(i, 0) for i in ids]
    assert splits == [join.split_of(i, 0) for i in ids]
    counts = collections.Counter(splits)
    assert abs(counts["train"] / len(ids) - 0.8) < 0.02
    assert abs(counts["validation"] / len(ids) - 0.1) < 0.02
    other_seed = [join.split_of(i, 1) for i in ids]
    assert 0.2 < sum(a != b for a, b in zip(splits, other_seed)) / len(ids) < 0.5
    assert {join.split_of(i, 0, (0.0, 0.0, 1.0)) for i in ids[:100]} == {"test"}


def test_openimages_split_source_keeps_subset():
    fn = join.make_split_fn("openimages", 0, join.DEFAULT_FRACTIONS)
    assert fn(_image(subset="validation")) == "validation"
    assert fn(_image(subset="weird")) == join.split_of("0123456789abcdef", 0)


@pytest.mark.parametrize("bad", [(0.5, 0.5), (0.8, 0.1, 0.2), (1.2, -0.1, -0.1)])
def test_bad_fractions_are_refused(bad):
    with pytest.raises(ValueError, match="split_fractions"):
        join.check_fractions(bad)


def test_sample_priority_depends_on_box_identity_and_seed_only():
    b = _box()
    assert join.sample_priority(0, "x", b) == join.sample_priority(
        0, "x", dataclasses.replace(b, box_index=5, label="other"))
    assert join.sample_priority(0, "x", b) != join.sample_priority(1, "x", b)
