"""ScanBoxes / ScanImages on real and generated tables equal a plain pandas filter."""
import apache_beam as beam
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from pipelines import batches, keys, scan, scan_rows, scan_stage
from pipelines.scan_stage import BOXES, FAILED, IMAGES, SCANNED, ScanBoxes, ScanImages
from schemas import openimages
from tests.conftest import collect, collected, data_path, make_pipeline

FOOT, HAND = "/m/031n1", "/m/0k65p"


def _pandas_boxes(paths, mid_to_index, labels, keep=lambda df: df):
    df = pd.concat([pd.read_csv(p) for p in paths])
    df = keep(df[df.LabelName.isin(list(mid_to_index))])
    return sorted((r.ImageID, r.LabelName, round(r.XMin, 9), round(r.XMax, 9), round(r.YMin, 9),
                   round(r.YMax, 9), r.IsOccluded, r.IsTruncated, r.IsGroupOf, r.IsDepiction,
                   r.IsInside, mid_to_index[r.LabelName]) for r in df.itertuples())


def _scan(tmp_path, paths, mid_to_index, filters=scan_rows.BoxFilters(), range_bytes=50_000):
    """ScanBoxes in a pipeline: (sorted box keys, failure records, scan counts)."""
    tables = [scan.open_table(p, openimages.BOXES) for p in paths]
    with make_pipeline() as p:
        out = p | ScanBoxes(tables, mid_to_index, filters, range_bytes, 5, str(tmp_path / "b"))
        collect(out[BOXES] | "Where" >> beam.Map(lambda kv: kv[1][1]), tmp_path / "boxes.pkl",
                "Boxes")
        collect(out[FAILED], tmp_path / "failed.pkl", "Failed")
        collect(out[SCANNED], tmp_path / "scanned.pkl", "Scanned")
    mids = sorted(mid_to_index)
    boxes = []
    for batch in batches.load(collected(tmp_path / "boxes.pkl")):
        for r in batch.to_pylist():
            boxes.append((f"{r['image_id']:016x}", mids[r["mid_index"]], *(
                round(r[c], 9) for c in ("xmin", "xmax", "ymin", "ymax")), r["is_occluded"],
                r["is_truncated"], r["is_group_of"], r["is_depiction"], r["is_inside"],
                r["label_index"]))
    failures = [f for t in collected(tmp_path / "failed.pkl") for f in t.to_pylist()]
    return sorted(boxes), failures, collected(tmp_path / "scanned.pkl")


@pytest.mark.parametrize("range_bytes", [4_000, 50_000, 1 << 26])
def test_scan_of_real_v4_rows_equals_pandas_filter(range_bytes, tmp_path):
    paths = [data_path("v4_bodyparts/test-annotations-bbox.csv"),
             data_path("v4_bodyparts/train-annotations-bbox.head2000.csv")]
    mids = {FOOT: 0, HAND: 1}
    expected = _pandas_boxes(paths, mids, None)
    assert len(expected) > 900
    boxes, failures, scanned = _scan(tmp_path, paths, mids, range_bytes=range_bytes)
    assert boxes == expected and failures == []
    per_table = {}
    for path, counts in scanned:  # one per range
        per_table[path] = per_table.get(path, scan_stage.TableScan()).add(counts)
    report = scan_stage.scan_report([scan.open_table(p, openimages.BOXES) for p in paths], per_table)
    assert all(r["complete"] for r in report.values())
    assert sum(r["rows_read"] for r in report.values()) == 2784 + 2000
    assert sum(r["rows_kept"] for r in report.values()) == len(expected)


def test_is_flag_filters_and_min_box_size_match_pandas(tmp_path):
    paths = [data_path("v4_bodyparts/test-annotations-bbox.csv")]
    mids = {FOOT: 0}
    filters = scan_rows.BoxFilters(is_occluded="exclude", is_truncated="only", min_box_size=0.05)
    expected = _pandas_boxes(paths, mids, None, lambda df: df[
        (df.IsOccluded != 1) & (df.IsTruncated == 1)
        & (df.XMax - df.XMin >= 0.05) & (df.YMax - df.YMin >= 0.05)])
    assert 0 < len(expected) < 464
    assert _scan(tmp_path, paths, mids, filters)[0] == expected


def test_unknown_flag_passes_exclude_and_fails_only(tmp_path):
    header = ",".join(openimages.variant_by_name("boxes_13").columns)
    ids = ["00000000000000a1", "00000000000000a2", "00000000000000a3"]
    lines = [header] + [f"{i},xclick,{FOOT},1,0.1,0.5,0.1,0.5,{flag},0,0,0,0"
                        for i, flag in zip(ids, (1, 0, -1))]
    path = tmp_path / "b.csv"
    path.write_text("\n".join(lines) + "\n")
    for mode, kept in (("exclude", ids[1:]), ("only", ids[:1]), ("include", ids)):
        boxes, _, _ = _scan(tmp_path / mode, [str(path)], {FOOT: 0},
                            scan_rows.BoxFilters(is_occluded=mode))
        assert [b[0] for b in boxes] == kept


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
    boxes, failures, _ = _scan(tmp_path, [str(path)], {FOOT: 0})
    assert [(b[0], b[5]) for b in boxes] == [("00000000000000b1", 0.6), ("00000000000000b6", 1.0)]
    assert sorted((f["image_id"], f["reason"], f["mid"]) for f in failures) == [
        ("", scan_rows.BAD_IMAGE_ID, FOOT), ("00000000000000b2", scan_rows.BAD_BOX, FOOT),
        ("00000000000000b3", scan_rows.BAD_BOX, FOOT), ("00000000000000b4", scan_rows.BAD_BOX, FOOT),
        ("00000000000000b5", scan_rows.BAD_BOX, FOOT)]


def test_scan_images_keeps_only_wanted_ids(small_catalog, tmp_path):
    df = pd.read_csv(small_catalog.images_csv, keep_default_na=False)
    wanted = sorted(df.ImageID)[::3]
    table = scan.open_table(small_catalog.images_csv, openimages.IMAGES)
    ids = np.sort(keys.image_ids_to_u64(pa.array(wanted))[0])
    with make_pipeline() as p:
        out = p | ScanImages([table], beam.pvalue.AsSingleton(p | beam.Create([ids])), 2_000, 3,
                             str(tmp_path / "b"))
        collect(out[IMAGES] | "Where" >> beam.Map(lambda kv: kv[1][1]), tmp_path / "images.pkl",
                "Images")
    got = sorted((f"{r['image_id']:016x}", r["title"], r["rotation"], r["problem"])
                 for t in batches.load(collected(tmp_path / "images.pkl")) for r in t.to_pylist())
    assert got == sorted((r.ImageID, r.Title, int(float(r.Rotation)) if r.Rotation != "" else None,
                          "") for r in df.itertuples() if r.ImageID in wanted)
