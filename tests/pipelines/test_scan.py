"""ScanBoxes / ScanImages on real and generated tables equal a plain pandas filter."""
import apache_beam as beam
import pandas as pd
import pytest
from apache_beam.testing.util import assert_that, equal_to

from pipelines import csvscan, rows
from pipelines.scan import ScanBoxes, ScanImages
from schemas import openimages
from schemas.records import REASON_BAD_BOX, REASON_BAD_IMAGE_ID
from tests.conftest import data_path, make_pipeline

FOOT, HAND = "/m/031n1", "/m/0k65p"


def _box_key(image_id, box):
    return (image_id, box.mid, round(box.xmin, 9), round(box.xmax, 9), round(box.ymin, 9),
            round(box.ymax, 9), box.is_occluded, box.is_truncated, box.is_group_of,
            box.is_depiction, box.is_inside, box.label, box.label_index)


def _pandas_boxes(paths, mid_to_index, labels, keep=lambda df: df):
    df = pd.concat([pd.read_csv(p) for p in paths])
    df = keep(df[df.LabelName.isin(list(mid_to_index))])
    return [(r.ImageID, r.LabelName, round(r.XMin, 9), round(r.XMax, 9), round(r.YMin, 9),
             round(r.YMax, 9), r.IsOccluded, r.IsTruncated, r.IsGroupOf, r.IsDepiction,
             r.IsInside, labels[mid_to_index[r.LabelName]], mid_to_index[r.LabelName])
            for r in df.itertuples()]


def _scan(paths, mid_to_index, labels, filters=rows.BoxFilters(), range_bytes=50_000):
    tables = [csvscan.open_table(p, openimages.BOXES) for p in paths]
    with make_pipeline() as p:
        boxes, failures = p | ScanBoxes(tables, mid_to_index, labels, filters, range_bytes)
        yield boxes | "Key" >> beam.MapTuple(_box_key), failures


@pytest.mark.parametrize("range_bytes", [4_000, 50_000, 1 << 26])
def test_scan_of_real_v4_rows_equals_pandas_filter(range_bytes):
    paths = [data_path("v4_bodyparts/test-annotations-bbox.csv"),
             data_path("v4_bodyparts/train-annotations-bbox.head2000.csv")]
    mids, labels = {FOOT: 0, HAND: 1}, ("Human foot", "Human hand")
    expected = _pandas_boxes(paths, mids, labels)
    assert len(expected) > 900
    for boxes, failures in _scan(paths, mids, labels, range_bytes=range_bytes):
        assert_that(boxes, equal_to(expected), label="BoxesEqualPandas")
        assert_that(failures, equal_to([]), label="NoFailures")


def test_is_flag_filters_and_min_box_size_match_pandas():
    paths = [data_path("v4_bodyparts/test-annotations-bbox.csv")]
    mids, labels = {FOOT: 0}, ("Human foot",)
    filters = rows.BoxFilters(is_occluded="exclude", is_truncated="only", min_box_size=0.05)
    expected = _pandas_boxes(paths, mids, labels, lambda df: df[
        (df.IsOccluded != 1) & (df.IsTruncated == 1)
        & (df.XMax - df.XMin >= 0.05) & (df.YMax - df.YMin >= 0.05)])
    assert 0 < len(expected) < 464
    for boxes, failures in _scan(paths, mids, labels, filters):
        assert_that(boxes, equal_to(expected), label="FilteredBoxes")


def test_unknown_flag_passes_exclude_and_fails_only(tmp_path):
    header = ",".join(openimages.variant_by_name("boxes_13").columns)
    ids = ["00000000000000a1", "00000000000000a2", "00000000000000a3"]
    lines = [header] + [f"{i},xclick,{FOOT},1,0.1,0.5,0.1,0.5,{flag},0,0,0,0"
                        for i, flag in zip(ids, (1, 0, -1))]
    path = tmp_path / "b.csv"
    path.write_text("\n".join(lines) + "\n")
    for mode, kept in (("exclude", ids[1:]), ("only", ids[:1]), ("include", ids)):
        for boxes, _ in _scan([str(path)], {FOOT: 0}, ("Human foot",),
                              rows.BoxFilters(is_occluded=mode)):
            assert_that(boxes | beam.Map(lambda k: k[0]), equal_to(kept), label=f"Kept{mode}")


def test_invalid_boxes_and_image_ids_become_failures(tmp_path):
    header = ",".join(openimages.variant_by_name("boxes_13").columns)
    good = "00000000000000b1,xclick,{mid},1,0.1,0.5,0.2,0.6,0,0,0,0,0"
    lines = [header,
             good.format(mid=FOOT),
             good.format(mid=HAND),                                           # not selected
             f"../../etc/passwd,xclick,{FOOT},1,0.1,0.5,0.2,0.6,0,0,0,0,0",
             f"00000000000000b2,xclick,{FOOT},1,0.5,0.1,0.2,0.6,0,0,0,0,0",  # XMin > XMax
             f"00000000000000b3,xclick,{FOOT},1,NaN,0.5,0.2,0.6,0,0,0,0,0",
             f"00000000000000b4,xclick,{FOOT},1,0.1,1.5,0.2,0.6,0,0,0,0,0",
             f"00000000000000b5,xclick,{FOOT},1,0.1,0.5,0.2,0.6,0,7,0,0,0",   # bad flag
             f"00000000000000b6,xclick,{FOOT},1,0.1,0.5,0.2,1.0000000000000002,0,0,0,0,0"]
    path = tmp_path / "b.csv"
    path.write_text("\n".join(lines) + "\n")
    for boxes, failures in _scan([str(path)], {FOOT: 0}, ("Human foot",)):
        assert_that(boxes | beam.Map(lambda k: (k[0], k[5])),
                    equal_to([("00000000000000b1", 0.6), ("00000000000000b6", 1.0)]),
                    label="ValidBoxesClamped")
        assert_that(failures | beam.Map(lambda f: (f.image_id, f.reason, f.mid)), equal_to([
            ("", REASON_BAD_IMAGE_ID, FOOT), ("00000000000000b2", REASON_BAD_BOX, FOOT),
            ("00000000000000b3", REASON_BAD_BOX, FOOT), ("00000000000000b4", REASON_BAD_BOX, FOOT),
            ("00000000000000b5", REASON_BAD_BOX, FOOT)]), label="Failures")


def test_scan_images_keeps_only_wanted_ids(small_catalog):
    df = pd.read_csv(small_catalog.images_csv, keep_default_na=False)
    wanted = sorted(df.ImageID)[::3]
    table = csvscan.open_table(small_catalog.images_csv, openimages.IMAGES)
    with make_pipeline() as p:
        ids = p | "Ids" >> beam.Create(wanted)
        images, failures = p | ScanImages([table], beam.pvalue.AsList(ids), 2_000)
        assert_that(images | beam.MapTuple(lambda i, row: (i, row.title, row.rotation)),
                    equal_to([(r.ImageID, r.Title, int(float(r.Rotation)) if r.Rotation != "" else None)
                              for r in df.itertuples() if r.ImageID in wanted]), label="Images")
        assert_that(failures, equal_to([]), label="NoFailures")
