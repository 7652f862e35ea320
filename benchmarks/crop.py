"""Benchmark: our crop core vs plain PIL, on the same 200 generated 1024x768 photos, one core.

- baseline: what a straightforward script does per photo: `Image.open(...).convert("RGB")`
  (a full decode), then per box: crop, letterbox-resize to 224, `save(format="JPEG")`;
- ours: `crop.crop_photo` (one libjpeg-turbo decode at the smallest DCT scale that covers
  every box at 224 px, of only the rows and columns the boxes need when the region decoder
  is built, numpy crop, PIL resize, libjpeg-turbo encode);
- ours split in two: `decode` (crop.decode) and `post` (crop.crop_box for every box of an
  already decoded photo: cut, rotate, resize with PIL, encode);
- floor: what no decoder that checks a whole baseline JPEG can avoid: Huffman-decoding
  every row of it (timed as the region decoder at 1/8 scale, one column wide, so inverse
  DCT and colour work are nil; since 2026-12-02 it reads every file to its end, so that
  damage below the boxes fails the photo as in a whole-image decode).
  `bound` = PIL / (floor + post): the ratio this crop core would reach with a decoder that
  cost no more than that floor, i.e. the best any decoder could do for it;
- encode: encoding the finished 224x224 crops alone (simplejpeg). `limit` = PIL / (floor +
  encode): the ratio if decoding cost only its floor and cutting and resizing cost nothing.

Both produce the same number of 224x224 JPEG crops. Target: ours >= 2.5x. Asserts nothing.

    python -m benchmarks.crop [--photos 200] [--whole_image]
"""
from __future__ import annotations

import argparse
import io
import math
import os
import sys
import time

import numpy as np
import simplejpeg
from PIL import Image

from pipelines import crop
from pipelines.demo import photos
from schemas.records import Box


def _photo_set(n: int, kind: str):
    """Photos with their boxes. "closeups": one box of 30-90% of each side, as in food
    photos like the article's; "scenes": 1-3 boxes of 10-48%, one per quadrant."""
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        objects = []
        if kind == "closeups":
            w, h = rng.uniform(0.3, 0.9, 2)
            x0, y0 = rng.uniform(0, 1 - w), rng.uniform(0, 1 - h)
            objects.append(("/m/0cdn1", 0, (x0, x0 + w, y0, y0 + h)))
        else:
            for q in rng.permutation(4)[:int(rng.integers(1, 4))]:
                w, h = rng.uniform(0.1, 0.48, 2)
                x0 = (q % 2) * 0.5 + rng.uniform(0, 0.5 - w)
                y0 = (q // 2) * 0.5 + rng.uniform(0, 0.5 - h)
                objects.append(("/m/0cdn1", 0, (x0, x0 + w, y0, y0 + h)))
        data = photos.render_photo(f"bench{i}", objects, (1024, 768))
        boxes = [Box("/m/0cdn1", b[0], b[1], b[2], b[3], 0, 0, 0, 0, 0, box_index=j)
                 for j, (_, _, b) in enumerate(objects)]
        out.append((data, boxes))
    return out


def baseline(data: bytes, boxes: list[Box], size: int = 224) -> list[bytes]:
    img = Image.open(io.BytesIO(data)).convert("RGB")
    w, h = img.size
    out = []
    for b in boxes:
        region = img.crop((int(b.xmin * w), int(b.ymin * h), int(b.xmax * w), int(b.ymax * h)))
        k = size / max(region.size)
        region = region.resize((max(1, round(region.width * k)), max(1, round(region.height * k))),
                               Image.Resampling.BILINEAR)
        canvas = Image.new("RGB", (size, size))
        canvas.paste(region, ((size - region.width) // 2, (size - region.height) // 2))
        buf = io.BytesIO()
        canvas.save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def floor(region, data: bytes, boxes: list[Box]) -> None:
    """Entropy-decode the whole file, and reconstruct only one column of the rows down to
    the last one a box needs (see the doc)."""
    rows = math.ceil(max(b.ymax for b in boxes) * 768 / 8)
    region.decode_region(data, 8, 0, 0, 1, max(rows, 1))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--photos", type=int, default=200)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--whole_image", action="store_true",
                   help="measure the fallback: whole-image decodes, as where the region "
                        "decoder is not built")
    args = p.parse_args(argv)
    region = crop._jpegregion
    if args.whole_image:
        crop._jpegregion = None
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core
    spec = crop.CropSpec(image_size=224, aspect="pad", jpeg_quality=90)
    print(f"\n{args.photos} photos 1024x768 per set, crops to 224x224 (pad), one core, "
          f"best of {args.repeats}; JPEG decoder: {crop.decoder_name()}\n")
    print(f"{'set':<10}{'crops':>6}{'PIL s':>7}{'ours s':>7}{'decode':>7}{'post':>6}"
          f"{'floor':>7}{'encode':>7}{'ours crops/s':>13}{'ratio':>6}{'bound':>6}{'limit':>6}")
    for kind in ("closeups", "scenes"):
        work = _photo_set(args.photos, kind)
        n_crops = sum(len(b) for _, b in work)
        times = {"baseline": [], "ours": [], "decode": [], "post": [], "floor": [],
                 "encode": []}
        for _ in range(args.repeats):  # interleaved, so load drifts hit both alike
            start = time.perf_counter()
            base = [baseline(d, b) for d, b in work]
            times["baseline"].append(time.perf_counter() - start)
            start = time.perf_counter()
            ours = [crop.crop_photo(d, b, 0, spec) for d, b in work]
            times["ours"].append(time.perf_counter() - start)
            start = time.perf_counter()
            decoded = [crop.decode(d, b, spec) for d, b in work]
            times["decode"].append(time.perf_counter() - start)
            start = time.perf_counter()
            for dec, (_, b) in zip(decoded, work):
                for box in b:
                    crop.crop_box(dec, box, 0, spec)
            times["post"].append(time.perf_counter() - start)
            finished = [np.asarray(Image.open(io.BytesIO(c))) for r in ours for _, c in r]
            start = time.perf_counter()
            for pixels in finished:
                simplejpeg.encode_jpeg(pixels, quality=90, colorsubsampling="420")
            times["encode"].append(time.perf_counter() - start)
            if region is not None:
                start = time.perf_counter()
                for d, b in work:
                    floor(region, d, b)
                times["floor"].append(time.perf_counter() - start)
        assert sum(map(len, base)) == sum(map(len, ours)) == n_crops
        assert all(isinstance(c, bytes) for r in ours for _, c in r)
        b, o = min(times["baseline"]), min(times["ours"])
        dec, post = min(times["decode"]), min(times["post"])
        f, enc = min(times["floor"], default=math.nan), min(times["encode"])
        print(f"{kind:<10}{n_crops:>6}{b:>7.2f}{o:>7.2f}{dec:>7.2f}{post:>6.2f}{f:>7.2f}"
              f"{enc:>7.2f}{n_crops / o:>13.0f}{b / o:>6.2f}{b / (f + post):>6.2f}"
              f"{b / (f + enc):>6.2f}")
    print("\ntarget: >= 2.5x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
