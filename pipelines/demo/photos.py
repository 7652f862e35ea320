"""Synthetic photos whose class is visible only inside its box.

Each class gets a recognisable pattern (bands, stripes, checks, rings, dots, in a palette
derived from its MID) drawn inside its box, over a cluttered background of random shapes in
the same colours. A model can tell classes apart only from pixels inside the boxes, and
the bands are orientation-dependent: a crop taken from the wrong place or left sideways
shows up as bad accuracy in training.

Frames: Open Images' boxes are given in the frame of the stored pixels (EXIF ignored), and
`Rotation` is how many degrees counter-clockwise image *and* boxes must turn to be upright.
So `render_photo` draws the upright scene, then turns it clockwise by `rotation` to get the
stored pixels, and returns the boxes in that stored frame.
"""
from __future__ import annotations

import hashlib
import io

import numpy as np
from PIL import Image, ImageDraw


PATTERNS = ("hbands", "vstripes", "checks", "rings", "dots", "diagonal")


def class_style(mid: str, index: int | None = None) -> tuple[str, list[tuple[int, int, int]]]:
    """A class's pattern and palette: a function of its MID (or of its position in a demo,
    so the first two demo classes always get clearly different patterns)."""
    h = hashlib.sha256(mid.encode()).digest()
    pattern = PATTERNS[index % len(PATTERNS)] if index is not None else PATTERNS[h[0] % len(PATTERNS)]
    palette = [(h[i], h[i + 1], h[i + 2]) for i in range(1, 13, 3)]
    return pattern, palette


def _draw_pattern(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], pattern: str,
                  palette: list[tuple[int, int, int]]) -> None:
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    draw.rectangle(box, fill=palette[0])
    if pattern == "hbands":
        for k in range(4):
            draw.rectangle((x0, y0 + k * h // 4, x1, y0 + (k + 1) * h // 4 - h // 16), fill=palette[k])
    elif pattern == "vstripes":
        step = max(w // 6, 2)
        for k, x in enumerate(range(x0, x1, step)):
            draw.rectangle((x, y0, min(x + step // 2, x1), y1), fill=palette[1 + k % 3])
    elif pattern == "checks":
        step = max(min(w, h) // 5, 2)
        for i, x in enumerate(range(x0, x1, step)):
            for j, y in enumerate(range(y0, y1, step)):
                if (i + j) % 2:
                    draw.rectangle((x, y, min(x + step, x1), min(y + step, y1)), fill=palette[2])
    elif pattern == "rings":
        for k in range(5, 0, -1):
            dx, dy = w * k // 10, h * k // 10
            cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
            draw.ellipse((cx - dx, cy - dy, cx + dx, cy + dy), fill=palette[k % 4])
    elif pattern == "dots":
        step = max(min(w, h) // 4, 3)
        for x in range(x0 + step // 2, x1, step):
            for y in range(y0 + step // 2, y1, step):
                r = step // 3
                draw.ellipse((x - r, y - r, x + r, y + r), fill=palette[3])
    else:  # diagonal
        for k in range(-h, w, max(w // 5, 3)):
            draw.line((x0 + k, y0, x0 + k + h, y1), fill=palette[1], width=max(w // 12, 2))


def render_photo(image_id: str, objects: list[tuple[str, int | None, tuple[float, float, float, float]]],
                 size: tuple[int, int] = (1024, 768), rotation: int = 0,
                 mode: str = "RGB", fmt: str = "JPEG", quality: int = 90) -> bytes:
    """Draw a photo.

    Args:
      image_id: seeds the background clutter.
      objects: (mid, style index or None, upright box (xmin, xmax, ymin, ymax) normalised).
      size: upright (width, height).
      rotation: the table's Rotation; the stored pixels are the upright scene turned
        clockwise by it.
      mode: "RGB", "L", "CMYK", "P" or "RGBA" (the stored file's mode).
      fmt: "JPEG" or "PNG".

    Returns:
      the encoded file.
    """
    rng = np.random.default_rng(int(hashlib.sha256(image_id.encode()).hexdigest()[:8], 16))
    w, h = size
    img = Image.new("RGB", size, tuple(int(v) for v in rng.integers(0, 256, 3)))
    draw = ImageDraw.Draw(img)
    for _ in range(40):  # clutter: plain shapes in random colours, never a class pattern
        x, y = rng.integers(0, w), rng.integers(0, h)
        dx, dy = rng.integers(10, w // 4), rng.integers(10, h // 4)
        color = tuple(int(v) for v in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x, y, x + dx, y + dy), fill=color)
    for mid, index, (xmin, xmax, ymin, ymax) in objects:
        pattern, palette = class_style(mid, index)
        _draw_pattern(draw, (int(xmin * w), int(ymin * h), int(xmax * w) - 1, int(ymax * h) - 1),
                      pattern, palette)
    # Sensor-like noise: real photos are high-entropy, which is what makes decoding cost.
    noisy = np.asarray(img, dtype=np.int16) + rng.normal(0, 9, (h, w, 3)).astype(np.int16)
    img = Image.fromarray(noisy.clip(0, 255).astype(np.uint8))
    if rotation:
        img = img.rotate(-rotation, expand=True)  # PIL rotates counter-clockwise
    if mode != "RGB":
        img = img.convert(mode)
    out = io.BytesIO()
    img.save(out, format=fmt, **({"quality": quality} if fmt == "JPEG" else {}))
    return out.getvalue()


def stored_box(box: tuple[float, float, float, float], rotation: int) -> tuple[float, float, float, float]:
    """An upright box (xmin, xmax, ymin, ymax) in the stored frame: the upright scene turned
    clockwise by `rotation` degrees."""
    xmin, xmax, ymin, ymax = box
    for _ in range((rotation // 90) % 4):  # one clockwise quarter turn: (x, y) -> (1 - y, x)
        xmin, xmax, ymin, ymax = 1 - ymax, 1 - ymin, xmin, xmax
    return xmin, xmax, ymin, ymax
