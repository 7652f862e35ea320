"""`plan` end to end on generated catalogs: equals a pandas join, deterministic, clear errors."""
import os

import numpy as np
import pandas as pd
import pytest

from pipelines import plan
from pipelines.demo import catalog
from pipelines.join import NO_IMAGE_ROW
from schemas.records import PLAN_SCHEMA, Failure
from tests.conftest import shuffled_copy

HAMBURGER, SANDWICH = "/m/0cdn1", "/m/0l515"


def _run(files: catalog.CatalogFiles, out, *extra) -> dict:
    return plan.run(["--classes", "Hamburger", "Sandwich", *files.flags(),
                     "--output_dir", str(out), "--scan_range_mb", "1", *extra])


def _read(out):
    return plan.read_plan(str(out)), [Failure(**f) for f in plan.read_failures(str(out))]




def test_plan_equals_a_pandas_join_and_orphans_are_failures(small_catalog, tmp_path):
    summary = _run(small_catalog, tmp_path)
    table, failures = _read(tmp_path)
    assert table.schema.equals(PLAN_SCHEMA)
    boxes = pd.read_csv(small_catalog.bbox_csv)
    images = pd.read_csv(small_catalog.images_csv, keep_default_na=False)
    selected = boxes[boxes.LabelName.isin([HAMBURGER, SANDWICH])]
    joined = selected.merge(images, on="ImageID")
    got = table.to_pandas()
    # plan files store coordinates as float32, like the TFDS BBoxFeature
    key = lambda df, cols: sorted((r[0], r[1], *(float(np.float32(v)) for v in r[2:]))
                                  for r in df[cols].itertuples(index=False))
    assert key(got, ["image_id", "mid", "xmin", "xmax", "ymin", "ymax"]) == key(
        joined.rename(columns={"ImageID": "image_id", "LabelName": "mid", "XMin": "xmin",
                               "XMax": "xmax", "YMin": "ymin", "YMax": "ymax"}),
        ["image_id", "mid", "xmin", "xmax", "ymin", "ymax"])
    by_id = images.set_index("ImageID")
    for row in got.itertuples():
        src = by_id.loc[row.image_id]
        assert (row.original_url, row.author, row.title, row.original_md5) == (
            src.OriginalURL, src.Author, src.Title, src.OriginalMD5)
        assert row.rotation == (None if src.Rotation == "" else int(float(src.Rotation))) or (
            pd.isna(row.rotation) and src.Rotation == "")
        assert row.label == {HAMBURGER: "Hamburger", SANDWICH: "Sandwich"}[row.mid]
        assert row.label_index == {HAMBURGER: 0, SANDWICH: 1}[row.mid]
    # every selected box is one plan row or one failure record
    assert len(got) + len([f for f in failures if f.mid]) == len(selected)
    assert [f.reason for f in failures] == [NO_IMAGE_ROW] * 3
    # all boxes of one photo share a split
    assert got.groupby("image_id").split.nunique().max() == 1
    assert summary["totals"]["boxes"] == len(got)
    assert summary["totals"]["images"] == got.image_id.nunique()
    assert summary["boxes"]["Hamburger"]["total"] == (got.label == "Hamburger").sum()
    assert summary["failures_by_reason"] == {"join/no_image_row": 3}
    assert summary["metrics"]["scan_boxes/rows_scanned"] == len(boxes)


def test_plan_does_not_depend_on_row_order_or_line_endings(small_catalog, tmp_path):
    shuffled = shuffled_copy(small_catalog, tmp_path / "shuffled")
    for files, out in ((small_catalog, tmp_path / "a"), (shuffled, tmp_path / "b")):
        _run(files, out, "--max_per_class", "20", "--seed", "3")
    names = sorted(os.listdir(tmp_path / "a"))
    assert names == sorted(os.listdir(tmp_path / "b"))
    assert plan.FAILURES_FILE in names and sum(n.startswith("plan-") for n in names) > 1
    for name in names:
        if name != plan.SUMMARY_FILE:  # the summary names the tables, which differ
            assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    table, _ = _read(tmp_path / "a")
    counts = table.to_pandas().label.value_counts()
    assert counts.to_dict() == {"Hamburger": 20, "Sandwich": 20}


def test_max_per_class_choice_changes_with_the_seed(small_catalog, tmp_path):
    keys = []
    for seed in (1, 2):
        _run(small_catalog, tmp_path / str(seed), "--max_per_class", "10", "--seed", str(seed))
        t, _ = _read(tmp_path / str(seed))
        keys.append(set(zip(t["image_id"].to_pylist(), t["box_index"].to_pylist())))
    assert len(keys[0]) == len(keys[1]) == 20 and keys[0] != keys[1]


def test_split_source_openimages_keeps_the_tables_subset(small_catalog, tmp_path):
    _run(small_catalog, tmp_path, "--split_source", "openimages")
    table, _ = _read(tmp_path)
    images = pd.read_csv(small_catalog.images_csv).set_index("ImageID")
    got = table.to_pandas()
    assert (got.split.values == images.loc[got.image_id].Subset.values).all()


def test_v6_layout_and_v4_class_list(tmp_path):
    files = catalog.write_catalog(str(tmp_path / "cat"), ["Airplane"], n_images=12, seed=2,
                                  version="v4", box_layout="boxes_21", crlf=True)
    summary = plan.run(["--classes", "Fixed-wing aircraft", "--version", "v4", *files.flags(),
                        "--output_dir", str(tmp_path / "out")])
    assert summary["labels"] == ["Airplane"]
    assert summary["images"]["Airplane"]["total"] == 12


def test_main_prints_the_summary_table(small_catalog, tmp_path, capsys):
    assert plan.main(["--classes", "Hamburger", "Sandwich", *small_catalog.flags(),
                      "--output_dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "boxes per class and split" in out and "Hamburger" in out
    assert "join/no_image_row: 3" in out


@pytest.mark.parametrize("change, message", [
    (lambda f, t: ["--classes", "Hamburgers", "Sandwich"], "Did you mean: Hamburger"),
    (lambda f, t: ["--bbox_csv", str(t / "missing.csv")], "input file not found"),
    (lambda f, t: ["--bbox_csv", f.images_csv], "match no known Open Images boxes table"),
    (lambda f, t: ["--split_fractions", "0.5", "0.5", "0.5"], "sum to 1"),
    (lambda f, t: ["--split_fractions", "nan", "0.5", "0.5"], "sum to 1"),
    (lambda f, t: ["--split_fractions", "0.5", "nan", "0.5"], "sum to 1"),
    (lambda f, t: ["--scan_range_mb", "inf"], "--scan_range_mb must be a positive number"),
    (lambda f, t: ["--scan_range_mb", "nan"], "--scan_range_mb must be a positive number"),
])
def test_mistakes_fail_before_the_pipeline_with_a_clear_message(
        small_catalog, tmp_path, capsys, change, message):
    argv = ["--classes", "Hamburger", "Sandwich", *small_catalog.flags(),
            "--output_dir", str(tmp_path / "out"), *change(small_catalog, tmp_path)]
    assert plan.main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_tiny_ranges_make_at_most_max_buckets_plan_files(small_catalog):
    """Two buckets per range, but a plan never writes more than MAX_BUCKETS files, however
    small the ranges (a 16 KB table at 1e-9 MiB once asked for 32,312)."""
    _, config, _ = plan.prepare(["--classes", "Hamburger", *small_catalog.flags(),
                                 "--output_dir", "unused", "--scan_range_mb", "1e-9"])
    assert config.num_buckets == plan.MAX_BUCKETS
