"""A synthetic Open Images catalog in the exact real formats, for tests, the demo and benchmarks.

Real class lists and hierarchy (packaged), generated box and image tables: the V4/V5 13-column
and V6 21-column box layouts, LF or CRLF endings, quoted titles and authors with commas and
quotes, empty and non-zero Rotation, base64 MD5s. Deterministic from a seed.

    open-sandwiches demo-catalog --output_dir /tmp/cat --classes Hamburger Sandwich --images 200

`write_catalog` writes a small catalog row by row (every quirk on purpose);
`write_full_size` writes the 14.6M-box / 1.74M-image tables vectorised, for benchmarks.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import urllib.parse

import numpy as np

from pipelines.demo.photos import render_photo, stored_box
from pipelines.ontology import Ontology, packaged_path
from schemas import openimages
from schemas.openimages import md5_base64

LICENSE = "https://creativecommons.org/licenses/by/2.0/"
SUBSETS = ("train", "validation", "test")
# Titles and authors that exercise CSV quoting the way real Flickr metadata does.
_TITLES = ("Lunch, again", 'The "best" burger in town', "...die FNF-Kerze", "_GUT6674",
           "Picnic", "Diner, 3am, \"closed\"", "Street food", "Untitled")
_AUTHORS = ("Michael Beat", "Karen", 'Jo "JJ" Smith', "LabHacker CD", "Ann, Bob & Co", "anon")


@dataclasses.dataclass(frozen=True)
class CatalogFiles:
    """Paths of a written catalog."""

    class_descriptions: str
    hierarchy: str
    bbox_csv: str
    images_csv: str

    def flags(self) -> list[str]:
        """The plan/build flags that point at these files."""
        return ["--class_descriptions", self.class_descriptions, "--hierarchy", self.hierarchy,
                "--bbox_csv", self.bbox_csv, "--images_csv", self.images_csv]


def image_id_for(seed: int, i: int) -> str:
    """A valid 16-hex-digit ImageID, stable for (seed, i)."""
    return hashlib.sha256(f"image:{seed}:{i}".encode()).hexdigest()[:16]


def _csv_field(text: str) -> str:
    if any(ch in text for ch in ',"\n\r'):
        return '"' + text.replace('"', '""') + '"'
    return text


def _copy_class_files(out_dir: str, version: str) -> tuple[str, str]:
    name = ("oidv7-class-descriptions-boxable.csv" if version == "v7"
            else "v4-class-descriptions-boxable.csv")
    dst = os.path.join(out_dir, "class-descriptions-boxable.csv")
    with open(packaged_path(name), "rb") as src, open(dst, "wb") as out:
        out.write(src.read())
    tree = os.path.join(out_dir, "bbox_labels_600_hierarchy.json")
    with open(packaged_path("bbox_labels_600_hierarchy.json"), "rb") as src, open(tree, "wb") as out:
        out.write(src.read())
    return dst, tree


def write_catalog(out_dir: str, classes: list[str], n_images: int = 100, seed: int = 0,
                  version: str = "v7", box_layout: str = "boxes_13", crlf: bool = False,
                  base_url: str = "http://127.0.0.1:8000", orphan_boxes: int = 0,
                  photos: bool = False, photo_size: tuple[int, int] = (1024, 768)) -> CatalogFiles:
    """Write a small catalog where each photo shows one chosen class (1-2 boxes), plus
    0-2 boxes of other classes, each box in its own quadrant, in the real formats.

    Args:
      out_dir: folder to write into (created).
      classes: names or MIDs of the classes photos are about.
      n_images: photos in the image table.
      seed: everything is a function of it.
      version: "v4" (headerless class list) or "v7" (header, CRLF class list).
      box_layout: "boxes_13" or "boxes_21" (adds XClick columns).
      crlf: write the box and image tables with CRLF line endings.
      base_url: where the photos are served: {base_url}/original/{id}.jpg, /thumbnail/...
      orphan_boxes: extra boxes of chosen classes on ImageIDs missing from the image table.
      photos: also render the photos into out_dir/photos (see demo/photos.py); the image
        table then carries their real sizes and MD5s. Some are PNG, grayscale, palette,
        RGBA or CMYK, and some are stored rotated (Rotation 90/180/270).
      photo_size: upright (width, height) of rendered photos.

    Returns:
      the written files.
    """
    os.makedirs(out_dir, exist_ok=True)
    rng = np.random.default_rng(seed)
    ont = Ontology.load("v7" if version not in openimages.VERSIONS else version)
    chosen = [ont.resolve(c) for c in classes]
    others = sorted(set(ont.names) - set(chosen))
    layout = openimages.variant_by_name(box_layout)
    eol = "\r\n" if crlf else "\n"
    class_csv, tree = _copy_class_files(out_dir, version)
    if photos:
        os.makedirs(os.path.join(out_dir, "photos"), exist_ok=True)

    box_lines, image_lines = [], []
    for i in range(n_images):
        image_id = image_id_for(seed, i)
        rotation = _ROTATIONS[i % len(_ROTATIONS)]
        main = chosen[i % len(chosen)]
        objects = [(main, i % len(chosen))] * int(rng.integers(1, 3))
        objects += [(others[int(rng.integers(len(others)))], None)
                    for _ in range(int(rng.integers(0, 3)))]
        quadrants = rng.permutation(4)[:len(objects)]
        placed = [(mid, style, _box_in_quadrant(rng, q)) for (mid, style), q in zip(objects, quadrants)]
        turn = int(float(rotation)) if rotation else 0
        for mid, _, upright in placed:
            box_lines.append(_box_line(rng, image_id, mid, stored_box(upright, turn), layout))
        data = None
        if photos:
            mode, fmt = _PHOTO_FORMATS[i % len(_PHOTO_FORMATS)]
            data = render_photo(image_id, placed, photo_size, turn, mode, fmt)
            ext = "jpg" if fmt == "JPEG" else "png"
            with open(os.path.join(out_dir, "photos", f"{image_id}.{ext}"), "wb") as f:
                f.write(data)
        subset = SUBSETS[int(rng.choice(3, p=[0.8, 0.1, 0.1]))]
        image_lines.append(_image_line(rng, image_id, subset, base_url, i, rotation, data))
    for j in range(orphan_boxes):
        box_lines.append(_box_line(rng, image_id_for(seed + 1, j), chosen[j % len(chosen)],
                                   _box_in_quadrant(rng, j % 4), layout))
    order = rng.permutation(len(box_lines))  # real files are sorted; ours must not rely on it
    bbox_csv = os.path.join(out_dir, "annotations-bbox.csv")
    with open(bbox_csv, "w", newline="") as f:
        f.write(",".join(layout.columns) + eol)
        f.write("".join(box_lines[k] + eol for k in order))
    images_csv = os.path.join(out_dir, "images-with-rotation.csv")
    with open(images_csv, "w", newline="") as f:
        f.write(",".join(openimages.variant_by_name("images_12").columns) + eol)
        f.write(eol.join(image_lines))  # no final newline, as in some real files
    files = CatalogFiles(class_csv, tree, bbox_csv, images_csv)
    with open(os.path.join(out_dir, "catalog.json"), "w") as f:
        json.dump({"classes": chosen, "images": n_images, "seed": seed, "version": version,
                   "box_layout": box_layout, "crlf": crlf, "photos": photos,
                   **dataclasses.asdict(files)}, f, indent=2)
    return files


# Rotation cells cycle through every form the real tables use.
_ROTATIONS = ("0.0", "0.0", "0.0", "", "90.0", "180.0", "270.0", "0")
# (PIL mode, format) of rendered photos: mostly RGB JPEGs, and every awkward kind.
_PHOTO_FORMATS = (("RGB", "JPEG"),) * 6 + (("L", "JPEG"), ("RGB", "PNG"), ("CMYK", "JPEG"),
                                          ("P", "PNG"), ("RGBA", "PNG"))


def _box_in_quadrant(rng: np.random.Generator, q: int) -> tuple[float, float, float, float]:
    """An upright box filling 55-95% of one quadrant, so boxes of a photo never overlap."""
    w, h = rng.uniform(0.55, 0.95, size=2) * 0.5
    x0 = (q % 2) * 0.5 + rng.uniform(0, 0.5 - w)
    y0 = (q // 2) * 0.5 + rng.uniform(0, 0.5 - h)
    return (float(x0), float(x0 + w), float(y0), float(y0 + h))


def _box_line(rng: np.random.Generator, image_id: str, mid: str,
              box: tuple[float, float, float, float], layout) -> str:
    x0, x1, y0, y1 = box
    flags = [int(v) for v in rng.choice([0, 0, 0, 1, -1], size=5)]
    # Coordinates in the three text forms seen in real files.
    style = int(rng.integers(3))
    fmt = ((lambda v: f"{v:.6f}"),                                 # V4 and oidv6 files
           (lambda v: str(np.float32(v))),                            # V5 shortest float32
           (lambda v: repr(float(np.nextafter(round(v, 6), 2.0)))),  # pandas 1-ulp noise
           )[style]
    fields = [image_id, "xclick", mid, "1", fmt(x0), fmt(x1), fmt(y0), fmt(y1)]
    fields += [str(f) for f in flags]
    if len(layout.columns) == 21:
        xm, ym = (x0 + x1) / 2, (y0 + y1) / 2
        fields += [f"{v:.6f}" for v in (x0, x1, xm, x0, y0, ym, y1, y0)]
    return ",".join(fields)


def _image_line(rng: np.random.Generator, image_id: str, subset: str, base_url: str, i: int,
                rotation: str, data: bytes | None) -> str:
    title = _TITLES[int(rng.integers(len(_TITLES)))]
    author = _AUTHORS[int(rng.integers(len(_AUTHORS)))]
    size = len(data) if data is not None else int(rng.integers(50_000, 900_000))
    md5 = md5_base64(data if data is not None else f"photo:{image_id}".encode())
    fields = [image_id, subset, f"{base_url}/original/{image_id}.jpg",
              f"https://www.flickr.com/photos/demo/{int(rng.integers(10**9))}", LICENSE,
              "https://www.flickr.com/people/demo/", author, title, str(size), md5,
              f"{base_url}/thumbnail/{image_id}.jpg" if i % 7 else "", rotation]
    return ",".join(_csv_field(f) for f in fields)


def write_full_size(out_dir: str, n_boxes: int = 14_600_000, n_images: int = 1_740_000,
                    seed: int = 0, class_boxes: dict[str, int] | None = None,
                    chunk_images: int = 100_000) -> CatalogFiles:
    """Write full-size box (13 columns, LF, sorted by ImageID) and image tables, vectorised.

    Labels follow a Zipf-like skew over the 600 boxable classes; `class_boxes` pins the box
    count of chosen MIDs (the classes a benchmark plans), spread over random photos.
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv

    os.makedirs(out_dir, exist_ok=True)
    class_csv, tree = _copy_class_files(out_dir, "v4")
    rng = np.random.default_rng(seed)
    ont = Ontology.load("v4")
    pinned = dict(class_boxes or {})
    free = sorted(set(ont.names) - set(pinned))
    weights = 1.0 / np.arange(1, len(free) + 1) ** 1.1
    weights = weights[rng.permutation(len(free))]
    p_free = weights / weights.sum() * (1 - sum(pinned.values()) / n_boxes)
    mids = np.array(free + list(pinned), dtype=object)
    p = np.concatenate([p_free, np.array(list(pinned.values()), float) / n_boxes])
    ids = np.array(sorted(image_id_for(seed, i) for i in range(n_images)), dtype=object)
    per_image = rng.multinomial(n_boxes - n_images, np.full(n_images, 1 / n_images)) + 1

    box_layout = openimages.variant_by_name("boxes_13")
    image_layout = openimages.variant_by_name("images_12")
    bbox_csv = os.path.join(out_dir, "train-annotations-bbox.csv")
    images_csv = os.path.join(out_dir, "train-images-boxable-with-rotation.csv")
    # Real box tables are never quoted; image tables quote only fields that need it.
    box_opts = pacsv.WriteOptions(include_header=False, quoting_style="none")
    with open(bbox_csv, "wb") as fb, open(images_csv, "wb") as fi:
        fb.write((",".join(box_layout.columns) + "\n").encode())
        fi.write((",".join(image_layout.columns) + "\n").encode())
        for start in range(0, n_images, chunk_images):
            stop = min(start + chunk_images, n_images)
            counts = per_image[start:stop]
            n = int(counts.sum())
            w = rng.uniform(0.02, 0.9, n)
            h = rng.uniform(0.02, 0.9, n)
            x0 = rng.uniform(0, 1, n) * (1 - w)
            y0 = rng.uniform(0, 1, n) * (1 - h)
            flags = {f: rng.choice(np.array([0, 0, 0, 1, -1], np.int8), n)
                     for f in openimages.IS_FLAGS}
            boxes = pa.table({
                "ImageID": pa.array(np.repeat(ids[start:stop], counts), pa.string()),
                "Source": pa.array(np.full(n, "xclick", dtype=object), pa.string()),
                "LabelName": pa.array(mids[rng.choice(len(mids), n, p=p)], pa.string()),
                "Confidence": pa.array(np.ones(n, np.int8)),
                "XMin": np.round(x0, 6), "XMax": np.round(x0 + w, 6),
                "YMin": np.round(y0, 6), "YMax": np.round(y0 + h, 6), **flags})
            pacsv.write_csv(boxes, fb, box_opts)
            chunk_ids = ids[start:stop]
            k = stop - start
            authors = np.array(_AUTHORS, dtype=object)[rng.integers(0, len(_AUTHORS), k)]
            titles = np.array(_TITLES, dtype=object)[rng.integers(0, len(_TITLES), k)]
            sizes = rng.integers(50_000, 9_000_000, k)
            fi.write("".join(
                ",".join((i, "train", f"https://farm1.staticflickr.com/1/{i}_o.jpg",
                          f"https://www.flickr.com/photos/x/{i}", LICENSE,
                          "https://www.flickr.com/people/x/", _csv_field(a), _csv_field(t),
                          str(n), md5_base64(i.encode()),
                          f"https://c1.staticflickr.com/1/{i}_z.jpg", "0.0")) + "\n"
                for i, a, t, n in zip(chunk_ids, authors, titles, sizes)).encode())
    return CatalogFiles(class_csv, tree, bbox_csv, images_csv)


def command(args) -> int:
    """`open-sandwiches demo-catalog` with parsed flags (pipelines/cli.py declares them)."""
    files = write_catalog(args.output_dir, args.classes, args.images, args.seed, args.version,
                          args.box_layout, args.crlf, args.base_url, photos=args.photos)
    print("wrote a catalog; plan it with:\n  open-sandwiches plan --classes "
          + " ".join(repr(c) for c in args.classes) + " " + " ".join(files.flags())
          + f" --output_dir {os.path.join(args.output_dir, 'plan')}")
    url = urllib.parse.urlsplit(args.base_url)
    if args.photos and url.scheme == "http" and url.hostname == "127.0.0.1":
        print(f"serve its photos (at --base_url {args.base_url}) with:\n  open-sandwiches "
              f"serve-images {args.output_dir} --port {url.port or 80}")
    return 0


def main(argv: list[str] | None = None) -> int:
    from pipelines import cli
    return cli.run("demo-catalog", argv)


if __name__ == "__main__":
    sys.exit(main())
