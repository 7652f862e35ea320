"""Cropping boxes out of a source photo: the pure core (no Beam).

The frame, once: Open Images boxes are normalised coordinates in the frame of the *stored*
pixels, EXIF orientation ignored; the table's `Rotation` (0/90/180/270) is how many degrees
counter-clockwise the image and its boxes must turn to be upright. So we crop each box
from the stored pixels, then turn the crop counter-clockwise by `Rotation`. Only when
`Rotation` is absent (empty in the table) does the EXIF orientation tag orient the crop.

Speed: a photo is decoded once for all its boxes, at the smallest DCT scale (1/1, 1/2, 1/4,
1/8) that still gives every box at least the output resolution, and only as far as its
boxes need. For a JPEG, entropy (Huffman) decoding is most of the cost and cannot skip
ahead, so the lever is to stop early: `_jpegregion` (a small C extension over
libjpeg-turbo's libjpeg API, built by setup.py where libjpeg headers exist) decodes just the
rows and columns that the union of the boxes covers and never entropy-decodes the rows
below it. Where it is not built, simplejpeg (libjpeg-turbo) decodes the whole image at the
same scale; both give the same pixels (tested), and `decoder_name()` goes into the build
report. PIL is the fallback for other formats and JPEG colour spaces that libjpeg-turbo
will not convert (CMYK/YCCK).

Limits, checked before pixels are decoded, the same in every decoder, all failing the photo
as `too_large`:
- pixels: the header's width x height against Pillow's `Image.MAX_IMAGE_PIXELS`, compared
  here explicitly (not by turning PIL's warning into an error: warning filters are
  process-wide state, so under threads an over-limit image sometimes decoded);
- scans and scan data (`CropSpec.max_jpeg_scans`, `max_jpeg_megasamples`): a legal
  progressive JPEG of a few hundred KiB can hold thousands of scans and take many seconds
  to decode. The region decoder counts them in libjpeg's progress monitor; for the
  whole-image decoders `jpegscans.over_limits` counts them from the markers, by the same
  rule, so both stop at the same scan. A deterministic count of work, not a timer: a
  timer would make a dataset's contents depend on the machine's speed and load.

Both JPEG decoders give the same verdict on every file, so whether the region decoder is
built never changes which photos become examples: the marker walk runs first for both (a
file both damaged and over a scan limit is `too_large` in each), and the region decoder,
though it reconstructs only the boxes' rows, entropy-decodes the rows below them and reads
the file to its end-of-image marker, so damage anywhere fails the photo as `not_an_image`,
with libjpeg's words, as in the strict whole-image decode. (It once stopped at the boxes'
last row: damage below them went unnoticed there and failed the photo in the other.)
"""
from __future__ import annotations

import dataclasses
import io
import math

import numpy as np
import simplejpeg
from PIL import Image

from pipelines import jpegscans
from schemas import failures
from schemas.records import STAGE_CROP, Box

try:
    from pipelines import _jpegregion
    if not hasattr(_jpegregion, "LimitExceeded"):  # a stale build, without the scan limits
        _jpegregion = None
except ImportError:  # not built here (no C compiler or libjpeg headers): whole-image decodes
    _jpegregion = None

ASPECTS = ("pad", "stretch", "center")
NOT_AN_IMAGE = failures.declared(STAGE_CROP, "not_an_image")
TOO_SMALL = failures.declared(STAGE_CROP, "too_small")
TOO_LARGE = failures.declared(STAGE_CROP, "too_large")
UNEXPECTED = failures.declared(STAGE_CROP, "unexpected")  # anything else (crop_stage)

_EXIF_ORIENTATION = 0x0112
_EXIF_TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
                   4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
                   6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
                   8: Image.Transpose.ROTATE_90}


@dataclasses.dataclass(frozen=True)
class CropSpec:
    """How boxes become training images.

    Attributes:
      image_size: side of the square output, in pixels.
      margin: context added on each side, as a fraction of the box's width/height.
      square: widen the shorter side of the crop region to make it square (in the photo).
      aspect: how a non-square region becomes square: pad (letterbox, black borders),
        stretch (distort), center (fill, then cut the longer side's ends).
      min_crop_pixels: a region narrower or shorter than this in the full-resolution photo
        is a failure (`too_small`): upscaling it would teach the model blur.
      jpeg_quality: of the encoded crop.
      max_jpeg_scans: a JPEG with more scans (SOS markers) is `too_large` (0: no limit).
        Real progressive photos have about 10.
      max_jpeg_megasamples: a JPEG whose scans hold more than this many million samples,
        summed over the scans (each scan's components' 8x8 blocks, 64 samples each), is
        `too_large` (0: no limit). A baseline 4:2:0 photo of N megapixels holds 1.5 N, a
        progressive one about 8 N; the default passes any real photo under Pillow's pixel
        limit and stops the 1,000-scan kind in well under a second.
    """

    image_size: int = 224
    margin: float = 0.0
    square: bool = False
    aspect: str = "pad"
    min_crop_pixels: int = 16
    jpeg_quality: int = 90
    max_jpeg_scans: int = 100
    max_jpeg_megasamples: int = 2000

    def __post_init__(self):
        if self.aspect not in ASPECTS:
            raise ValueError(f"--aspect must be one of {ASPECTS}, not {self.aspect!r}")
        if not 8 <= self.image_size <= 4096:
            raise ValueError("--image_size must be between 8 and 4096")
        if not 0 <= self.margin <= 1:
            raise ValueError("--crop_margin must be between 0 and 1")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError("--jpeg_quality must be between 1 and 100")
        if self.max_jpeg_scans < 0 or self.max_jpeg_megasamples < 0:
            raise ValueError("--max_jpeg_scans and --max_jpeg_megasamples must be >= 0")


class DecodeError(Exception):
    """The bytes are not an image we can decode; `reason` is the failure reason."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


@dataclasses.dataclass(frozen=True)
class Decoded:
    """Decoded pixels and facts about the original photo.

    `pixels` (RGB uint8) is the block of the photo, scaled to `scaled_width` x
    `scaled_height` by DCT scaling, whose top-left pixel is `origin` (x, y) in that scaled
    image: the whole scaled image, or just the part the boxes need.
    """

    pixels: np.ndarray
    full_width: int
    full_height: int
    exif_orientation: int
    scaled_width: int
    scaled_height: int
    origin: tuple[int, int] = (0, 0)


def decoder_name() -> str:
    """Which JPEG decoder this machine uses, for the build report (see the module doc)."""
    if _jpegregion is not None:
        v = _jpegregion.LIBJPEG_TURBO_VERSION_NUMBER
        return f"libjpeg-turbo {v // 1000000}.{v // 1000 % 1000}.{v % 1000} region decoder"
    return f"simplejpeg {simplejpeg.__version__} whole-image decoder"


def _region(box: Box, spec: CropSpec) -> tuple[float, float, float, float]:
    """The normalised crop region for a box: margin, then square (in photo pixels)."""
    mx, my = (box.xmax - box.xmin) * spec.margin, (box.ymax - box.ymin) * spec.margin
    return (max(0.0, box.xmin - mx), min(1.0, box.xmax + mx),
            max(0.0, box.ymin - my), min(1.0, box.ymax + my))


def _square(x0: int, x1: int, y0: int, y1: int, w: int, h: int) -> tuple[int, int, int, int]:
    """Widen the shorter side to the longer one, centred, shifted to stay inside the photo."""
    side = min(max(x1 - x0, y1 - y0), w, h)

    def grow(a: int, b: int, limit: int) -> tuple[int, int]:
        a = max(0, min((a + b - side) // 2, limit - side))
        return a, a + side

    (x0, x1), (y0, y1) = grow(x0, x1, w), grow(y0, y1, h)
    return x0, x1, y0, y1


def _pixel_region(box: Box, spec: CropSpec, w: int, h: int) -> tuple[int, int, int, int]:
    """A box's crop region in the pixels of a w x h (scaled) image: (x0, x1, y0, y1), never
    empty, inside the image."""
    x0, x1, y0, y1 = _region(box, spec)
    px0, py0 = min(math.floor(x0 * w), w - 1), min(math.floor(y0 * h), h - 1)
    px1, py1 = max(min(math.ceil(x1 * w), w), px0 + 1), max(min(math.ceil(y1 * h), h), py0 + 1)
    if spec.square:
        px0, px1, py0, py1 = _square(px0, px1, py0, py1, w, h)
    return px0, px1, py0, py1


def _union(boxes: list[Box], spec: CropSpec, w: int, h: int) -> tuple[int, int, int, int]:
    """The smallest region (x0, y0, x1, y1) of a w x h image that holds every box's crop."""
    regions = [_pixel_region(box, spec, w, h) for box in boxes]
    return (min(r[0] for r in regions), min(r[2] for r in regions),
            max(r[1] for r in regions), max(r[3] for r in regions))


def _needed_scale(boxes: list[Box], spec: CropSpec, width: int, height: int) -> float:
    """The smallest decode scale that still gives every crop the output resolution."""
    scale = 0.0
    for box in boxes:
        x0, x1, y0, y1 = _region(box, spec)
        cw, ch = max((x1 - x0) * width, 1.0), max((y1 - y0) * height, 1.0)
        side = max(cw, ch) if spec.aspect == "pad" and not spec.square else min(cw, ch)
        scale = max(scale, spec.image_size / side)
    return min(scale, 1.0)


def _power_of_two(scale: float) -> int:
    """The largest reduction 1, 2, 4 or 8 that keeps at least `scale` of the resolution.
    libjpeg-turbo also scales by 3/8, 5/8, ..., but those cost more than a full decode."""
    for factor in (8, 4, 2):
        if scale <= 1 / factor:
            return factor
    return 1


def _pixel_limit() -> int:
    return Image.MAX_IMAGE_PIXELS or 2**62


def _check_pixels(width: int, height: int) -> None:
    """The decompression-bomb guard, from the header, before any pixel is decoded."""
    if width * height > _pixel_limit():
        raise DecodeError(TOO_LARGE, f"{width}x{height} pixels is over the "
                                            f"decompression-bomb limit")


def _over_limit(spec: CropSpec, kind: str, scan: int) -> DecodeError:
    """The failure for a JPEG past a limit, worded the same whichever decoder found it."""
    if kind == "scans":
        return DecodeError(TOO_LARGE, f"more than {spec.max_jpeg_scans} scans "
                                             f"(--max_jpeg_scans; real photos have about 10)")
    return DecodeError(TOO_LARGE, f"scans 1-{scan} hold more than "
                                         f"{spec.max_jpeg_megasamples} million samples "
                                         f"(--max_jpeg_megasamples)")


def _scan_limits(spec: CropSpec) -> tuple[int, int]:
    return spec.max_jpeg_scans, spec.max_jpeg_megasamples * jpegscans.BLOCKS_PER_MEGASAMPLE


def _check_scans(data: bytes, spec: CropSpec) -> None:
    """The scan limits, for decoders without a progress monitor (simplejpeg, PIL)."""
    over = jpegscans.over_limits(data, *_scan_limits(spec))
    if over is not None:
        raise _over_limit(spec, *over)


def check_limits(data: bytes, width: int, height: int, spec: CropSpec) -> None:
    """The checks every decode of an untrusted photo needs first (a preview's too), given
    the size its header declares.

    Raises:
      DecodeError: `too_large`: over the pixel limit, or a JPEG over the scan limits.
    """
    _check_pixels(width, height)
    if data[:3] == b"\xff\xd8\xff":
        _check_scans(data, spec)


def decode(data: bytes, boxes: list[Box], spec: CropSpec) -> Decoded:
    """Decode a photo once, at the smallest scale its boxes allow.

    Raises:
      DecodeError: not an image, a truncated or corrupt file (`not_an_image`), or more
        pixels, scans or scan data than the limits (`too_large`).
    """
    if data[:3] == b"\xff\xd8\xff":
        try:
            height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
        except ValueError as err:
            raise DecodeError(NOT_AN_IMAGE, f"bad JPEG header: {err}") from None
        _check_pixels(width, height)
        if colorspace in ("Gray", "YCbCr", "RGB"):
            factor = _power_of_two(_needed_scale(boxes, spec, width, height))
            sw, sh = math.ceil(width / factor), math.ceil(height / factor)
            orientation = _exif_orientation(data) if _has_exif(data) else 1
            try:
                _check_scans(data, spec)  # before either decoder, so both judge alike
                if _jpegregion is not None and data.endswith(b"\xff\xd9") and boxes:
                    left, top, right, bottom = _union(boxes, spec, sw, sh)
                    try:
                        block, bw, bh, x, y = _jpegregion.decode_region(
                            data, factor, left, top, right, bottom, *_scan_limits(spec))
                    except _jpegregion.LimitExceeded as err:  # a backstop: the walk counts more
                        raise _over_limit(spec, *err.args) from None
                    except ValueError:
                        # The same verdict, but libjpeg stops at its first complaint here and
                        # at its last there: the whole-image decode words the failure, so
                        # failures.jsonl does not depend on which decoder is built.
                        simplejpeg.decode_jpeg(data, colorspace="RGB", min_width=sw,
                                               min_height=sh)
                        raise
                    pixels = np.frombuffer(block, np.uint8).reshape(bh, bw, 3)
                    return Decoded(pixels, width, height, orientation, sw, sh, (x, y))
                pixels = simplejpeg.decode_jpeg(data, colorspace="RGB", min_width=sw,
                                                min_height=sh)
            except ValueError as err:
                detail = str(err).removeprefix("JPEG does not decode: ")
                raise DecodeError(NOT_AN_IMAGE, f"JPEG does not decode: {detail}") from None
            return Decoded(pixels, width, height, orientation, sw, sh)
        _check_scans(data, spec)
    return _decode_with_pil(data, boxes, spec)


def _has_exif(data: bytes) -> bool:
    return b"Exif\x00\x00" in data[:65536]


def _exif_orientation(data: bytes) -> int:
    try:
        with Image.open(io.BytesIO(data)) as img:
            return int(img.getexif().get(_EXIF_ORIENTATION, 1))
    except Exception:  # a broken EXIF block only loses orientation, never the photo
        return 1


def _decode_with_pil(data: bytes, boxes: list[Box], spec: CropSpec) -> Decoded:
    try:
        img = Image.open(io.BytesIO(data))  # reads the header only
        width, height = img.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        # Over twice the limit PIL refuses in open(); between once and twice it warns, which
        # raises only where some warning filter (process-wide) says so: too_large either way.
        raise DecodeError(TOO_LARGE, str(err)) from None
    except Exception as err:  # PIL raises many types for bad input; all mean the same
        raise DecodeError(NOT_AN_IMAGE, f"{type(err).__name__}: {err}") from None
    _check_pixels(width, height)
    try:
        orientation = int(img.getexif().get(_EXIF_ORIENTATION, 1))
        if img.format == "JPEG":
            factor = _power_of_two(_needed_scale(boxes, spec, width, height))
            img.draft(img.mode, (math.ceil(width / factor), math.ceil(height / factor)))
        img.load()
    except Exception as err:
        raise DecodeError(NOT_AN_IMAGE, f"{type(err).__name__}: {err}") from None
    pixels = _to_rgb(img)
    return Decoded(pixels, width, height, orientation, pixels.shape[1], pixels.shape[0])


def _to_rgb(img: Image.Image) -> np.ndarray:
    """Any PIL mode -> RGB uint8. Transparency is composited on white; 16-bit and float
    images are scaled, not clipped (PIL's own convert would clip 16-bit values at 255)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img).astype(np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        return np.repeat((arr / top * 255.0).round().clip(0, 255).astype(np.uint8)[..., None], 3, 2)
    if img.mode == "F":
        arr = np.asarray(img)
        return np.repeat((arr.clip(0, 1) * 255).round().astype(np.uint8)[..., None], 3, 2)
    if img.mode == "P" and "transparency" in img.info or img.mode in ("RGBA", "LA", "PA", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
    return np.asarray(img.convert("RGB"))


def _resize(region: Image.Image, spec: CropSpec) -> Image.Image:
    s = spec.image_size
    w, h = region.size
    if spec.aspect == "stretch":
        return region.resize((s, s), Image.Resampling.BILINEAR)
    if spec.aspect == "center":
        k = s / min(w, h)
        big = region.resize((max(s, round(w * k)), max(s, round(h * k))), Image.Resampling.BILINEAR)
        left, top = (big.width - s) // 2, (big.height - s) // 2
        return big.crop((left, top, left + s, top + s))
    k = s / max(w, h)
    small = region.resize((max(1, round(w * k)), max(1, round(h * k))), Image.Resampling.BILINEAR)
    canvas = Image.new("RGB", (s, s))
    canvas.paste(small, ((s - small.width) // 2, (s - small.height) // 2))
    return canvas


def crop_box(decoded: Decoded, box: Box, rotation: int | None, spec: CropSpec) -> bytes:
    """Crop one box, turn it upright, resize and encode it as JPEG.

    Raises:
      DecodeError: reason `too_small` when the region is under spec.min_crop_pixels.
    """
    px0, px1, py0, py1 = _pixel_region(box, spec, decoded.scaled_width, decoded.scaled_height)
    x0, x1, y0, y1 = _region(box, spec)
    full_w = (x1 - x0) * decoded.full_width
    full_h = (y1 - y0) * decoded.full_height
    if min(full_w, full_h) < spec.min_crop_pixels:
        raise DecodeError(TOO_SMALL, f"{full_w:.0f}x{full_h:.0f} px in the photo, "
                                            f"under --min_crop_pixels {spec.min_crop_pixels}")
    ox, oy = decoded.origin
    region = decoded.pixels[py0 - oy:py1 - oy, px0 - ox:px1 - ox]
    if rotation:
        region = np.rot90(region, k=(rotation // 90) % 4)  # counter-clockwise, as the table says
    image = Image.fromarray(np.ascontiguousarray(region))
    if rotation is None and decoded.exif_orientation in _EXIF_TRANSPOSE:
        image = image.transpose(_EXIF_TRANSPOSE[decoded.exif_orientation])
    out = np.asarray(_resize(image, spec))
    # 4:2:0 chroma, as PIL, TensorFlow and cjpeg write photos by default.
    return simplejpeg.encode_jpeg(np.ascontiguousarray(out), quality=spec.jpeg_quality,
                                  colorspace="RGB", colorsubsampling="420")


def upright_box(box: Box | tuple[float, float, float, float],
                rotation: int | None) -> tuple[float, float, float, float]:
    """Where a stored-frame box (xmin, xmax, ymin, ymax) lies once the photo is turned
    upright, i.e. counter-clockwise by `rotation` degrees."""
    if isinstance(box, Box):
        box = (box.xmin, box.xmax, box.ymin, box.ymax)
    xmin, xmax, ymin, ymax = box
    for _ in range((int(rotation or 0) // 90) % 4):  # one counter-clockwise quarter turn
        xmin, xmax, ymin, ymax = ymin, ymax, 1 - xmax, 1 - xmin
    return xmin, xmax, ymin, ymax


def crop_photo(data: bytes, boxes: list[Box], rotation: int | None,
               spec: CropSpec) -> list[tuple[Box, bytes | DecodeError]]:
    """Crop every box of one photo, decoding it once. Per box: JPEG bytes or the error."""
    try:
        decoded = decode(data, boxes, spec)
    except DecodeError as err:
        return [(box, err) for box in boxes]
    results: list[tuple[Box, bytes | DecodeError]] = []
    for box in boxes:
        try:
            results.append((box, crop_box(decoded, box, rotation, spec)))
        except DecodeError as err:
            results.append((box, err))
    return results
