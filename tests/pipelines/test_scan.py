"""Byte-range reading: every record in exactly one range, whatever the range size."""

import numpy as np
import pyarrow as pa
import pytest

from pipelines import keys, scan, scan_rows
from schemas import openimages
from tests.conftest import data_path

IMAGES_HEADER = ",".join(openimages.variant_by_name("images_12").columns)


def _all_rows(path: str, kind: str, columns, key: str, keys, range_bytes: int):
    table = scan.open_table(path, kind)
    out, bad = [], []
    with open(path, "rb") as f:
        for rng in scan.split_ranges(table, range_bytes):
            offset, data = scan.read_range(f, rng)
            t, b, _ = scan.parse_and_filter(data, table, offset, columns, key, pa.array(keys))
            out += t.to_pylist()
            bad += b
    return out, bad


# 89 bytes is shorter than one row: most ranges own no record start at all.
@pytest.mark.parametrize("range_bytes", [89, 1000, 4096, 1 << 20])
def test_real_rows_are_read_once_for_any_range_size(range_bytes):
    path = data_path("v4_bodyparts/test-annotations-bbox.csv")
    import pandas as pd
    expected = pd.read_csv(path)[list(scan_rows.BOX_COLUMNS)].to_dict("records")
    mids = sorted({r["LabelName"] for r in expected})
    got, bad = _all_rows(path, openimages.BOXES, scan_rows.BOX_COLUMNS, "LabelName", mids, range_bytes)
    assert not bad
    assert len(got) == len(expected) == 2784
    key = lambda r: tuple(r[c] for c in scan_rows.BOX_COLUMNS)
    assert sorted(map(key, got)) == sorted(map(key, expected))


def _image_row(image_id: str, title: str, rotation: str = "0.0") -> str:
    return (f"{image_id},train,http://h/{image_id}.jpg,http://l/{image_id},lic,http://a,"
            f"Author,{title},123,AAAAAAAAAAAAAAAAAAAAAA==,,{rotation}")


@pytest.mark.parametrize("eol", ["\n", "\r\n"])
@pytest.mark.parametrize("final_newline", [True, False])
@pytest.mark.parametrize("range_bytes", [1, 13, 64, 1 << 20])
def test_quoted_titles_with_commas_and_newlines_crlf_and_no_final_newline(
        tmp_path, eol, final_newline, range_bytes):
    titles = ['"Lunch, again"', '"He said ""hi"""', '"two\nlines, 0123456789abcdef,"',
              "plain", '"three\r\nline\ntitle"']
    ids = [f"{i:016x}" for i in range(1, len(titles) + 1)]
    lines = [IMAGES_HEADER] + [_image_row(i, t, r) for i, t, r in
                               zip(ids, titles, ["0.0", "", "90", "270.0", "0"])]
    text = eol.join(lines) + (eol if final_newline else "")
    path = tmp_path / "images.csv"
    path.write_bytes(text.encode())
    table = scan.open_table(str(path), openimages.IMAGES)
    cols = table.layout.columns
    wanted = np.sort(keys.image_ids_to_u64(pa.array(ids))[0])
    got = []
    with open(path, "rb") as f:
        for _, offset, data in scan.aligned_ranges(f, table, range_bytes):
            t, _ = scan.parse_images(data, table, offset, wanted)
            assert set(t["problem"].to_pylist()) <= {""}
            got += t.select(list(cols)).to_pylist()
    assert [r["ImageID"] for r in got] == ids
    assert [r["Title"] for r in got] == ["Lunch, again", 'He said "hi"',
                                         "two\nlines, 0123456789abcdef,", "plain",
                                         "three\r\nline\ntitle"]
    assert [r["Rotation"] for r in got] == [0.0, None, 90.0, 270.0, 0.0]


def test_unparseable_rows_become_bad_rows_and_the_rest_survive(tmp_path):
    header = ",".join(openimages.variant_by_name("boxes_13").columns)
    good = "000026e7ee790996,freeform,/m/07j7r,1,0.071905,0.145346,0.206591,0.391306,0,1,1,0,0"
    lines = [header, good,
             "000026e7ee790997,freeform,/m/07j7r,1,0.1,0.2",              # truncated row
             "000026e7ee790998,freeform,/m/07j7r,1,abc,0.2,0.1,0.3,0,0,0,0,0",  # not a number
             good.replace("96,", "99,", 1)]
    path = tmp_path / "boxes.csv"
    path.write_text("\n".join(lines))  # and a missing final newline
    table = scan.open_table(str(path), openimages.BOXES)
    with open(path, "rb") as f:
        offset, data = scan.read_range(f, scan.split_ranges(table, 1 << 20)[0])
    t, bad, n = scan.parse_and_filter(data, table, offset, scan_rows.BOX_COLUMNS, "LabelName",
                                         pa.array(["/m/07j7r"]))
    assert [r["ImageID"] for r in t.to_pylist()] == ["000026e7ee790996", "000026e7ee790999"]
    assert sorted(b.reason for b in bad) == ["XMin: not a number: 'abc'",
                                             "expected 13 columns, found 6"]
    assert n == 4


def test_missing_file_and_compressed_file_fail_before_reading(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        scan.open_table(str(tmp_path / "nope.csv"), openimages.BOXES)
    gz = tmp_path / "boxes.csv.gz"
    gz.write_bytes(b"\x1f\x8b")
    with pytest.raises(openimages.TableFormatError, match="decompress"):
        scan.open_table(str(gz), openimages.BOXES)


def _box_chunk(tmp_path, n: int) -> tuple[scan.TableFile, int, bytes, list[str]]:
    """A box table of n Hamburger lines, as one chunk: (table, offset, data, lines)."""
    header = ",".join(openimages.variant_by_name("boxes_13").columns)
    lines = [f"{i:016x},xclick,/m/0cdn1,1,0.1,0.5,0.2,0.6,0,0,0,0,0" for i in range(n)]
    path = tmp_path / "boxes.csv"
    path.write_text("\n".join([header, *lines]) + "\n")
    table = scan.open_table(str(path), openimages.BOXES)
    with open(path, "rb") as f:
        offset, data = scan.read_range(f, scan.split_ranges(table, 1 << 20)[0])
    return table, offset, data, lines


def test_a_chunk_that_fails_for_an_unforeseen_reason_costs_only_its_failing_lines(
        tmp_path, monkeypatch):
    """Halving finds the lines that fail, each one bad row, and the rest parse; past
    MAX_UNREADABLE_LINES the cause is not a few lines, and the error is raised."""
    table, offset, data, lines = _box_chunk(tmp_path, 200)
    poison = {lines[7][:16], lines[120][:16], lines[199][:16]}
    real = scan._parse_and_filter

    def fails_on_poison(chunk, *args):
        if any(p.encode() in chunk for p in poison):
            raise RuntimeError("nobody foresaw this")
        return real(chunk, *args)
    monkeypatch.setattr(scan, "_parse_and_filter", fails_on_poison)
    t, bad, n = scan.parse_and_filter(data, table, offset, scan_rows.BOX_COLUMNS, "LabelName",
                                      pa.array(["/m/0cdn1"]))
    assert sorted(b.image_id for b in bad) == sorted(poison)
    assert all("RuntimeError: nobody foresaw this" in b.reason for b in bad)
    assert t.num_rows == 197 and n == 200
    # the offsets name the lines themselves
    assert {data[b.offset - offset:][:16].decode() for b in bad} == poison
    monkeypatch.setattr(scan, "MAX_UNREADABLE_LINES", 2)
    with pytest.raises(RuntimeError, match="nobody foresaw"):
        scan.parse_and_filter(data, table, offset, scan_rows.BOX_COLUMNS, "LabelName",
                              pa.array(["/m/0cdn1"]))


def test_lines_that_are_not_utf8_are_found_in_one_pass(tmp_path, monkeypatch):
    table, offset, data, lines = _box_chunk(tmp_path, 50)
    broken = data.replace(lines[3].encode(), lines[3][:-1].encode() + b"\xff")
    monkeypatch.setattr(scan, "_bisect", None)  # halving is not needed for these
    t, bad, n = scan.parse_and_filter(broken, table, offset, scan_rows.BOX_COLUMNS,
                                      "LabelName", pa.array(["/m/0cdn1"]))
    assert [b.image_id for b in bad] == [lines[3][:16]] and "not UTF-8" in bad[0].reason
    assert broken[bad[0].offset - offset:].startswith(lines[3][:16].encode())
    assert t.num_rows == 49 and n == 50


def test_a_table_is_cut_into_max_ranges_at_most(tmp_path, monkeypatch):
    table, _, _, _ = _box_chunk(tmp_path, 100)
    monkeypatch.setattr(scan, "MAX_RANGES", 10)
    ranges = scan.split_ranges(table, 1)
    assert len(ranges) <= 10
    assert ranges[0].start == table.header_end and ranges[-1].end == table.size
    assert all(a.end == b.start for a, b in zip(ranges, ranges[1:]))
