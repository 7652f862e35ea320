"""The synthetic catalog is deterministic and in the real formats."""
import csv
import hashlib

import pytest

from pipelines import scan
from pipelines.demo import catalog
from schemas import openimages


def _digest(files: catalog.CatalogFiles) -> list[str]:
    return [hashlib.sha256(open(p, "rb").read()).hexdigest()
            for p in (files.bbox_csv, files.images_csv)]


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    a = catalog.write_catalog(str(tmp_path / "a"), ["Hamburger"], 30, seed=1)
    b = catalog.write_catalog(str(tmp_path / "b"), ["Hamburger"], 30, seed=1)
    c = catalog.write_catalog(str(tmp_path / "c"), ["Hamburger"], 30, seed=2)
    assert _digest(a) == _digest(b) != _digest(c)


@pytest.mark.parametrize("version, layout, crlf", [("v7", "boxes_13", False),
                                                   ("v4", "boxes_21", True)])
def test_layouts_are_detected_and_quirks_present(tmp_path, version, layout, crlf):
    files = catalog.write_catalog(str(tmp_path), ["Sandwich"], 40, seed=3, version=version,
                                  box_layout=layout, crlf=crlf)
    assert scan.open_table(files.bbox_csv, openimages.BOXES).variant == layout
    assert scan.open_table(files.images_csv, openimages.IMAGES).variant == "images_12"
    raw = open(files.images_csv, "rb").read()
    assert (b"\r\n" in raw) == crlf and not raw.endswith(b"\n")
    with open(files.images_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    assert {"", "0.0", "90.0", "180.0", "270.0"} <= {r["Rotation"] for r in rows}
    assert any("," in r["Title"] for r in rows) and any('"' in r["Author"] for r in rows)
    assert any(r["Thumbnail300KURL"] == "" for r in rows)
    assert all(len(r["OriginalMD5"]) == 24 and r["OriginalMD5"].endswith("==") for r in rows)
    class_list = open(files.class_descriptions, "rb").read()
    assert class_list.startswith(b"LabelName,DisplayName\r\n") == (version == "v7")


def test_full_size_writer_is_skewed_and_pins_chosen_classes(tmp_path):
    files = catalog.write_full_size(str(tmp_path), n_boxes=20_000, n_images=2_000, seed=0,
                                    class_boxes={"/m/0cdn1": 500}, chunk_images=700)
    import pandas as pd
    boxes = pd.read_csv(files.bbox_csv)
    images = pd.read_csv(files.images_csv)
    assert len(boxes) == 20_000 and len(images) == 2_000
    assert boxes.ImageID.is_monotonic_increasing
    assert set(boxes.ImageID) == set(images.ImageID)
    counts = boxes.LabelName.value_counts()
    assert abs(counts["/m/0cdn1"] - 500) < 100
    assert counts.iloc[0] > 20 * counts.iloc[len(counts) // 2]  # skewed
    assert scan.open_table(files.bbox_csv, openimages.BOXES).variant == "boxes_13"
