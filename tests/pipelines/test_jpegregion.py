"""The region decoder (pipelines/_jpegregion.c): the same pixels as a whole-image decode,
so whether it is built never changes a dataset's bytes; errors; threads.

`.ci/run` sets OPEN_SANDWICHES_REQUIRE_REGION_DECODER=1, so there a missing build fails
these tests instead of skipping them.
"""
import io
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import simplejpeg
from PIL import Image

from pipelines import crop
from pipelines.demo import photos
from schemas.records import Box

HAMBURGER = "/m/0cdn1"


@pytest.fixture
def region():
    if crop._jpegregion is None:
        if os.environ.get("OPEN_SANDWICHES_REQUIRE_REGION_DECODER") == "1":
            pytest.fail("pipelines._jpegregion was not built (C compiler or libjpeg headers "
                        "missing?) but OPEN_SANDWICHES_REQUIRE_REGION_DECODER=1")
        pytest.skip("pipelines._jpegregion is not built here (needs a C compiler and libjpeg "
                    "headers): crops use whole-image decodes")
    return crop._jpegregion


def _jpeg(size=(1024, 768), subsampling=2, progressive=False, mode="RGB", seed="j") -> bytes:
    data = photos.render_photo(seed, [(HAMBURGER, 0, (0.2, 0.6, 0.3, 0.7))], size)
    img = Image.open(io.BytesIO(data)).convert(mode)
    out = io.BytesIO()
    img.save(out, "JPEG", quality=88, progressive=progressive,
             **({"subsampling": subsampling} if mode == "RGB" else {}))
    return out.getvalue()


def _box(xmin, xmax, ymin, ymax, index=0):
    return Box(HAMBURGER, xmin, xmax, ymin, ymax, 0, 0, 0, 0, 0, box_index=index)


ENCODINGS = {
    "4:2:0": {}, "4:2:2": {"subsampling": 1}, "4:4:4": {"subsampling": 0},
    "progressive": {"progressive": True}, "gray": {"mode": "L"},
    "odd size": {"size": (1001, 667)},
}


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_region_pixels_equal_the_whole_image_decode(region, encoding):
    data = _jpeg(**ENCODINGS[encoding])
    rng = np.random.default_rng(7)
    for denom in (1, 2, 4, 8):
        w0, h0 = Image.open(io.BytesIO(data)).size
        whole = simplejpeg.decode_jpeg(data, colorspace="RGB", min_width=-(-w0 // denom),
                                       min_height=-(-h0 // denom))
        h, w = whole.shape[:2]
        regions = [(0, 0, w, h), (0, 0, 1, 1), (w - 1, h - 1, w, h)]
        for _ in range(12):
            (left, right), (top, bottom) = sorted(rng.choice(w + 1, 2, replace=False)), \
                sorted(rng.choice(h + 1, 2, replace=False))
            regions.append((int(left), int(top), int(right), int(bottom)))
        for left, top, right, bottom in regions:
            block, bw, bh, x, y = region.decode_region(data, denom, left, top, right, bottom)
            pixels = np.frombuffer(block, np.uint8).reshape(bh, bw, 3)
            assert x <= left and x + bw >= right and (y, bh) == (top, bottom - top)
            np.testing.assert_array_equal(pixels[:, left - x:right - x],
                                          whole[top:bottom, left:right],
                                          err_msg=f"1/{denom} {(left, top, right, bottom)}")


SPECS = [crop.CropSpec(), crop.CropSpec(image_size=96, margin=0.2, square=True),
         crop.CropSpec(image_size=300, aspect="center"), crop.CropSpec(aspect="stretch")]


@pytest.mark.parametrize("spec", SPECS)
def test_crops_are_byte_identical_with_either_decoder(region, spec, monkeypatch):
    cases = []
    for i, rotation in enumerate((None, 0, 90, 180, 270)):
        boxes = [_box(0.05 + 0.1 * i, 0.3 + 0.1 * i, 0.5, 0.97, 0), _box(0.6, 0.95, 0.0, 0.2, 1),
                 _box(0.0, 1.0, 0.0, 1.0, 2)][:1 + i % 3]
        cases.append((_jpeg(seed=f"c{i}", **list(ENCODINGS.values())[i]), boxes, rotation))
    with_region = [crop.crop_photo(d, b, r, spec) for d, b, r in cases]
    monkeypatch.setattr(crop, "_jpegregion", None)
    assert crop.decoder_name().startswith("simplejpeg")
    whole = [crop.crop_photo(d, b, r, spec) for d, b, r in cases]
    assert with_region == whole
    assert all(isinstance(out, bytes) for photo in whole for _, out in photo)


def test_damage_anywhere_fails_the_photo_with_either_decoder(region, monkeypatch):
    data = bytearray(_jpeg())
    start = data.index(b"\xff\xda")  # start of scan: entropy data follows its header
    top, bottom = _box(0.1, 0.4, 0.0, 0.2), _box(0.1, 0.4, 0.8, 1.0)
    damaged = bytes(data[:start + 40]) + b"\xff\xd0" * 8 + bytes(data[start + 56:])  # early rows
    [(_, err)] = crop.crop_photo(damaged, [top], 0, crop.CropSpec(image_size=32))
    assert isinstance(err, crop.DecodeError) and err.reason == crop.NOT_AN_IMAGE
    cut = bytes(data[:len(data) // 2])  # no end-of-image marker: the whole-image path decides
    [(_, err)] = crop.crop_photo(cut, [top], 0, crop.CropSpec(image_size=32))
    assert isinstance(err, crop.DecodeError) and err.reason == crop.NOT_AN_IMAGE
    # Damage below the boxes' rows fails the photo too, as in the whole-image decode, with
    # the same words: which decoder is built never changes the examples or failures.jsonl.
    late = len(data) - 2000
    tail = bytes(data[:late]) + b"\xff\xd3" * 8 + bytes(data[late + 16:])
    noise = Image.fromarray((np.random.default_rng(0).integers(0, 4, (480, 640, 3)) * 64)
                            .astype(np.uint8))
    out = io.BytesIO()
    noise.save(out, "JPEG", quality=90)
    flipped = bytearray(out.getvalue())
    flipped[-40] ^= 0xFF  # a review's case: "34 extraneous bytes before marker 0xd9"
    marker = bytes(data[:len(data) * 5 // 6]) + b"\xff\x02" + bytes(data[len(data) * 5 // 6 + 2:])
    damaged_below = [tail, bytes(flipped), marker]  # marker: libjpeg warns, then errors
    with_region = [crop.crop_photo(d, [b], 0, crop.CropSpec(image_size=32))[0][1]
                   for d in damaged_below for b in (top, bottom)]
    monkeypatch.setattr(crop, "_jpegregion", None)
    whole = [crop.crop_photo(d, [b], 0, crop.CropSpec(image_size=32))[0][1]
             for d in damaged_below for b in (top, bottom)]
    for a, b in zip(with_region, whole):
        assert isinstance(a, crop.DecodeError) and a.reason == crop.NOT_AN_IMAGE
        assert (a.reason, a.detail) == (b.reason, b.detail)


def test_bad_arguments_are_value_errors(region):
    data = _jpeg(size=(320, 240))
    for args in [(3, 0, 0, 10, 10), (1, 0, 0, 321, 10), (1, 5, 5, 5, 9), (2, 0, 0, 10, 121),
                 (1, -1, 0, 10, 10)]:
        with pytest.raises(ValueError):
            region.decode_region(data, *args)
    with pytest.raises(ValueError, match="does not decode"):
        region.decode_region(b"\xff\xd8\xff\xe0 not a jpeg", 1, 0, 0, 1, 1)
    cmyk = io.BytesIO()
    Image.new("CMYK", (64, 64), (1, 2, 3, 4)).save(cmyk, "JPEG")
    with pytest.raises(ValueError, match="colour space"):
        region.decode_region(cmyk.getvalue(), 1, 0, 0, 8, 8)


def test_threads_decode_concurrently_with_the_same_results(region):
    photos_ = [_jpeg(seed=f"t{i}") for i in range(8)]
    boxes = [_box(0.1, 0.5, 0.2, 0.6)]
    alone = [crop.crop_photo(d, boxes, 0, crop.CropSpec()) for d in photos_]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda d: crop.crop_photo(d, boxes, 0, crop.CropSpec()),
                                 photos_ * 3))
    assert together == alone * 3
