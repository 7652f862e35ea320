"""The crop core: frames and rotation, formats, aspect policies, limits."""
import io

import numpy as np
import pytest
from PIL import Image

from pipelines import crop
from pipelines.demo import photos
from schemas.records import Box

HAMBURGER = "/m/0cdn1"
UPRIGHT = (0.2, 0.6, 0.3, 0.7)


def _box(b):
    return Box(HAMBURGER, b[0], b[1], b[2], b[3], 0, 0, 0, 0, 0, box_index=0)


def _pixels(jpeg: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB")).astype(int)


def _crop(data, box, rotation, **spec):
    [(_, out)] = crop.crop_photo(data, [_box(box)], rotation, crop.CropSpec(**spec))
    return out


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_rotated_photos_crop_the_same_pixels_as_upright(rotation):
    upright = _pixels(_crop(photos.render_photo("r", [(HAMBURGER, 0, UPRIGHT)]), UPRIGHT, 0,
                            aspect="stretch"))
    stored = photos.render_photo("r", [(HAMBURGER, 0, UPRIGHT)], rotation=rotation)
    assert Image.open(io.BytesIO(stored)).size == ((768, 1024) if rotation % 180 else (1024, 768))
    box = photos.stored_box(UPRIGHT, rotation)
    right = _pixels(_crop(stored, box, rotation, aspect="stretch"))
    assert np.abs(right - upright).mean() < 3
    # the same box left sideways (Rotation ignored) does not match: the test can fail
    wrong = _pixels(_crop(stored, box, 0, aspect="stretch"))
    assert np.abs(wrong - upright).mean() > 20


def test_stored_and_upright_boxes_are_inverse():
    for rotation in (0, 90, 180, 270):
        assert np.allclose(crop.upright_box(photos.stored_box(UPRIGHT, rotation), rotation), UPRIGHT)


def test_exif_orientation_is_used_only_when_rotation_is_absent():
    img = Image.open(io.BytesIO(photos.render_photo("e", [(HAMBURGER, 0, UPRIGHT)], rotation=90)))
    exif = Image.Exif()
    exif[0x0112] = 8  # "rotate 90 counter-clockwise to display"
    out = io.BytesIO()
    img.save(out, "JPEG", quality=95, exif=exif.tobytes())
    box = photos.stored_box(UPRIGHT, 90)
    upright = _pixels(_crop(photos.render_photo("e", [(HAMBURGER, 0, UPRIGHT)]), UPRIGHT, 0,
                            aspect="stretch"))
    by_exif = _pixels(_crop(out.getvalue(), box, None, aspect="stretch"))
    ignored = _pixels(_crop(out.getvalue(), box, 0, aspect="stretch"))
    assert np.abs(by_exif - upright).mean() < 4
    assert np.abs(ignored - upright).mean() > 20


@pytest.mark.parametrize("mode, fmt", [("RGB", "JPEG"), ("L", "JPEG"), ("CMYK", "JPEG"),
                                       ("RGB", "PNG"), ("P", "PNG"), ("RGBA", "PNG")])
def test_every_mode_becomes_an_rgb_crop_of_the_right_size(mode, fmt):
    data = photos.render_photo("m", [(HAMBURGER, 0, UPRIGHT)], (640, 480), 0, mode, fmt)
    out = Image.open(io.BytesIO(_crop(data, UPRIGHT, 0, image_size=96)))
    assert (out.format, out.mode, out.size) == ("JPEG", "RGB", (96, 96))


def test_sixteen_bit_png_is_scaled_not_clipped():
    arr = np.tile(np.linspace(0, 65535, 200), (100, 1)).astype(np.uint16)  # left to right
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    out = _pixels(_crop(buf.getvalue(), (0.0, 1.0, 0.0, 1.0), 0, aspect="stretch", image_size=32))
    assert out[:, :4].mean() < 40 and out[:, -4:].mean() > 215  # a ramp, not all white


@pytest.mark.parametrize("aspect", crop.ASPECTS)
def test_aspect_policies(aspect):
    data = photos.render_photo("a", [], (800, 600))
    wide = (0.1, 0.9, 0.4, 0.6)  # 640 x 120 px
    out = _pixels(_crop(data, wide, 0, aspect=aspect, image_size=64))
    assert out.shape == (64, 64, 3)
    black_rows = (out.reshape(64, -1).max(axis=1) < 12).sum()
    assert (black_rows > 40) == (aspect == "pad")


@pytest.mark.parametrize("region_decoder", [True, False])
def test_jpeg_is_decoded_at_a_reduced_scale_for_small_outputs(region_decoder, monkeypatch):
    if not region_decoder:
        monkeypatch.setattr(crop, "_jpegregion", None)
    data = photos.render_photo("s", [], (1024, 768))
    small = crop.decode(data, [_box((0.0, 1.0, 0.0, 1.0))], crop.CropSpec(image_size=128))
    full = crop.decode(data, [_box((0.45, 0.55, 0.45, 0.55))], crop.CropSpec(image_size=128))
    assert small.pixels.shape[:2] == (96, 128)  # 1/8 scale still covers 128 px
    assert (small.scaled_width, small.scaled_height, small.origin) == (128, 96, (0, 0))
    assert (full.scaled_width, full.scaled_height) == (1024, 768)
    assert (small.full_width, small.full_height) == (1024, 768)
    x, y = full.origin
    h, w = full.pixels.shape[:2]
    assert x <= 460 and y <= 345 and x + w >= 564 and y + h >= 423  # holds the box
    if region_decoder and crop._jpegregion is not None:
        assert h * w < 768 * 1024 / 10  # and, decoded by region, little else


def test_margin_square_and_too_small():
    data = photos.render_photo("t", [], (1000, 1000))
    spec = crop.CropSpec(image_size=32, min_crop_pixels=16)
    [(_, tiny)] = crop.crop_photo(data, [_box((0.5, 0.51, 0.5, 0.6))], 0, spec)
    assert isinstance(tiny, crop.DecodeError) and tiny.reason == crop.TOO_SMALL
    assert crop._region(_box((0.4, 0.6, 0.4, 0.5)), crop.CropSpec(margin=0.5)) == pytest.approx(
        (0.3, 0.7, 0.35, 0.55))
    assert crop._square(100, 300, 500, 550, 1000, 1000) == (100, 300, 425, 625)
    assert crop._square(0, 40, 990, 1000, 1000, 1000) == (0, 40, 960, 1000)


@pytest.mark.parametrize("data, reason", [
    (b"<html>not a photo</html>", crop.NOT_AN_IMAGE),
    (photos.render_photo("x", [])[:5000], crop.NOT_AN_IMAGE),        # truncated JPEG
    (photos.render_photo("x", [], fmt="PNG")[:3000], crop.NOT_AN_IMAGE),
])
def test_undecodable_photos_fail_every_box_with_a_reason(data, reason):
    results = crop.crop_photo(data, [_box(UPRIGHT), _box((0.1, 0.3, 0.1, 0.3))], 0, crop.CropSpec())
    assert [r.reason for _, r in results] == [reason, reason]


def test_decompression_bomb_guard_applies_to_both_decoders(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)
    for fmt in ("JPEG", "PNG"):
        data = photos.render_photo("b", [], (200, 200), fmt=fmt)
        [(_, err)] = crop.crop_photo(data, [_box(UPRIGHT)], 0, crop.CropSpec())
        assert err.reason == crop.TOO_LARGE, fmt


def test_crops_are_deterministic():
    data = photos.render_photo("d", [(HAMBURGER, 0, UPRIGHT)])
    assert _crop(data, UPRIGHT, 90) == _crop(data, UPRIGHT, 90)
