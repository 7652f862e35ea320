"""Hostile input: property-based CSV tables, and images built to hurt a decoder."""
import io

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from pipelines import crop, scan, scan_rows
from pipelines.demo import photos
from schemas import openimages
from schemas.records import Box

MIDS = {"/m/0cdn1": 0, "/m/0l515": 1}
LABELS = ("Hamburger", "Sandwich")
BOX_HEADER = ",".join(openimages.variant_by_name("boxes_13").columns)

hex_id = st.text("0123456789abcdef", min_size=16, max_size=16)
coord = st.floats(0.0, 1.0, allow_nan=False).map(lambda v: round(v, 6))


@st.composite
def box_row(draw):
    """(CSV line, expected outcome): 'ok', 'bad_box', 'bad_image_id', 'bad_row' or 'other'."""
    kind = draw(st.sampled_from(["ok", "ok", "ok", "nan", "range", "inverted", "flag",
                                 "bad_id", "traversal", "short", "unknown_mid"]))
    mid = draw(st.sampled_from(sorted(MIDS)))
    image_id = draw(hex_id)
    x0, x1 = sorted(draw(st.lists(coord, min_size=2, max_size=2, unique=True)))
    y0, y1 = sorted(draw(st.lists(coord, min_size=2, max_size=2, unique=True)))
    flags = draw(st.lists(st.sampled_from([-1, 0, 1]), min_size=5, max_size=5))
    values = [image_id, "xclick", mid, "1", str(x0), str(x1), str(y0), str(y1)] + [str(f) for f in flags]
    expect = "ok"
    if kind == "nan":
        values[4], expect = "NaN", "bad_box"
    elif kind == "range":
        values[5], expect = "1.5", "bad_box"
    elif kind == "inverted":
        values[4], values[5], expect = str(x1), str(x0), "bad_box"
    elif kind == "flag":
        values[9], expect = "7", "bad_box"
    elif kind == "bad_id":
        values[0], expect = draw(st.text("ghijklmnopqrstuvwxyz", min_size=1, max_size=20)), "bad_image_id"
    elif kind == "traversal":
        values[0], expect = "../../etc/passwd", "bad_image_id"
    elif kind == "short":
        values, expect = values[:draw(st.integers(1, 12))], "bad_row"
    elif kind == "unknown_mid":
        values[2], expect = "/m/0notaclass", "other"
    return ",".join(values), expect


def _scan_boxes(path: str, range_bytes: int):
    table = scan.open_table(path, openimages.BOXES)
    mids = tuple(sorted(MIDS))
    got, failures, bad = [], [], []
    with open(path, "rb") as f:
        for _, offset, data in scan.aligned_ranges(f, table, range_bytes):
            t, b, _ = scan.parse_and_filter(data, table, offset, scan_rows.BOX_COLUMNS,
                                               "LabelName", pa.array(mids))
            boxes, fails, _ = scan_rows.box_batch(t, mids, MIDS, scan_rows.BoxFilters())
            got += boxes.to_pylist()
            failures += fails.to_pylist()
            bad += b
    return got, failures, bad


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(box_row(), min_size=1, max_size=40),
       eols=st.lists(st.sampled_from(["\n", "\r\n"]), min_size=41, max_size=41),
       final_newline=st.booleans(), duplicate=st.booleans(),
       range_bytes=st.sampled_from([7, 50, 333, 1 << 20]))
def test_every_box_row_is_parsed_right_or_becomes_a_failure(tmp_path_factory, lines, eols,
                                                           final_newline, duplicate, range_bytes):
    if duplicate:
        lines = lines + [lines[0]]
    text = BOX_HEADER + eols[0]
    text += "".join(line + eol for (line, _), eol in zip(lines, eols[1:] + ["\n"]))
    if not final_newline:
        text = text.rstrip("\r\n")
    path = tmp_path_factory.mktemp("hyp") / "boxes.csv"
    path.write_bytes(text.encode())
    got, failures, bad = _scan_boxes(str(path), range_bytes)
    expected = [e for _, e in lines]
    assert len(got) == expected.count("ok")
    assert sorted(f["reason"] for f in failures) == sorted(
        [scan_rows.BAD_BOX] * expected.count("bad_box") + [scan_rows.BAD_IMAGE_ID] * expected.count("bad_image_id"))
    assert len(bad) == expected.count("bad_row")
    ok_ids = sorted(line.split(",")[0] for line, e in lines if e == "ok")
    assert sorted(f"{b['image_id']:016x}" for b in got) == ok_ids
    assert all(0 <= b["xmin"] < b["xmax"] <= 1 and 0 <= b["ymin"] < b["ymax"] <= 1 for b in got)


@given(first=st.text(max_size=200))
@settings(max_examples=200, deadline=None)
def test_header_detection_never_crashes(first):
    for kind in (openimages.BOXES, openimages.IMAGES, openimages.CLASS_DESCRIPTIONS):
        try:
            openimages.detect_variant(kind, first)
        except openimages.TableFormatError:
            pass


# ---------------------------------------------------------------- hostile images

BOX = Box("/m/0cdn1", 0.1, 0.9, 0.1, 0.9, 0, 0, 0, 0, 0, box_index=0)


def _crop(data: bytes):
    [(_, out)] = crop.crop_photo(data, [BOX], 0, crop.CropSpec(image_size=64))
    return out


def test_huge_dimensions_in_a_tiny_file_are_refused_before_decoding():
    buf = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buf, "PNG")  # 400M pixels, a few KB
    assert len(buf.getvalue()) < 100_000
    assert _crop(buf.getvalue()).reason == crop.TOO_LARGE
    jpeg = bytearray(photos.render_photo("j", [], (64, 64)))
    sof = jpeg.index(b"\xff\xc0")  # baseline frame header: height and width at +5..+8
    jpeg[sof + 5:sof + 9] = (60000).to_bytes(2, "big") + (60000).to_bytes(2, "big")
    assert _crop(bytes(jpeg)).reason in (crop.TOO_LARGE, crop.NOT_AN_IMAGE)


def test_animated_gif_uses_its_first_frame():
    frames = [Image.new("RGB", (80, 80), c) for c in ((255, 0, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    out = np.asarray(Image.open(io.BytesIO(_crop(buf.getvalue()))))
    assert out[32, 32, 0] > 200 and out[32, 32, 2] < 60


def test_cmyk_jpeg_with_an_icc_profile_decodes():
    from PIL import ImageCms
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    img = Image.new("CMYK", (120, 90), (0, 255, 255, 0))  # red in CMYK
    buf = io.BytesIO()
    img.save(buf, "JPEG", icc_profile=profile)
    out = np.asarray(Image.open(io.BytesIO(_crop(buf.getvalue()))).convert("RGB"))
    assert out.shape == (64, 64, 3)


@pytest.mark.parametrize("cut", [10, 200, 2000])
def test_truncated_and_garbage_jpegs_fail_with_a_reason(cut):
    data = photos.render_photo("t", [], (320, 240))
    assert _crop(data[:cut]).reason == crop.NOT_AN_IMAGE
    assert _crop(b"\xff\xd8\xff" + bytes(5000)).reason == crop.NOT_AN_IMAGE
