"""`open-sandwiches preview`: look at what a plan or a dataset holds.

    open-sandwiches preview --plan out/plan --cache_dir ~/.cache/open-sandwiches/images
    open-sandwiches preview --dataset out/hamburger_sandwich/1.0.0

From a plan (plus the download cache): a grid of source photos, upright, with their boxes
drawn and labelled (the article's figure). From a dataset: the same photo grid (from its
manifest), a contact sheet of crops per class and split, a bar chart of examples per class
and split, and a chart of failures by reason. `build` writes the dataset previews into
<dataset>/previews/ unless --no_previews.

Previews are for people and never decide whether a build completed: a photo that cannot be
drawn (it cropped fine because the region decoder never read the damage below its boxes,
say, but a full decode fails) is skipped, and so is a crop or a chart that fails; each
skip is logged and listed in previews/NOTES.txt.
"""
from __future__ import annotations

import collections
import hashlib
import io
import json
import logging
import os
import sys

import numpy as np
from PIL import Image, ImageDraw, ImageOps

from pipelines import crop, fetch, fetch_cache, shardio
from schemas import examples
from schemas.records import SPLITS

# One colour per label (cycled); the first is pure red, which tests look for.
COLORS = ((255, 0, 0), (0, 90, 255), (0, 170, 0), (255, 140, 0), (160, 0, 200), (0, 170, 170))
CELL = 256
NOTES_FILE = "NOTES.txt"

log = logging.getLogger(__name__)


def _skipped(notes: list[str], what: str, err: Exception) -> None:
    note = f"{what}: skipped ({type(err).__name__}: {err})"
    log.warning("preview: %s", note)
    notes.append(note)


def _cached_photo(cache_dir: str, image_id: str, source: str = "",
                 sha256: str = "") -> bytes | None:
    """A cached photo of the ImageID, from `source` if known (any of its cache folders),
    and with the manifest's sha256 of the source bytes if known: a mirror cached under
    two `--url_template`s has a folder each, and only one holds what the build used."""
    for src in ([source] if source else fetch.SOURCES):
        for path in fetch_cache.cached_photo_paths(cache_dir, src, image_id):
            data = fetch_cache.read_regular_file(path)  # the cache's own rule for its files
            if data is not None and (not sha256 or hashlib.sha256(data).hexdigest() == sha256):
                return data
    return None


def _cell(data: bytes, boxes: list[dict], rotation, colors: dict[str, tuple]) -> Image.Image:
    """One grid cell: the photo upright, fitted into CELL x CELL, boxes drawn on top (drawn
    after resizing, so the lines stay crisp)."""
    img = Image.open(io.BytesIO(data))
    crop.check_limits(data, img.width, img.height, crop.CropSpec())  # before decoding
    img = img.convert("RGB")
    turn = int(rotation or 0)
    if turn:
        img = img.rotate(turn, expand=True)  # counter-clockwise, as the table's Rotation says
    scale = CELL / max(img.size)
    img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))))
    cell = Image.new("RGB", (CELL, CELL), (255, 255, 255))
    ox, oy = (CELL - img.width) // 2, (CELL - img.height) // 2
    cell.paste(img, (ox, oy))
    draw = ImageDraw.Draw(cell)
    for b in boxes:
        x0, x1, y0, y1 = crop.upright_box((b["xmin"], b["xmax"], b["ymin"], b["ymax"]), turn)
        rect = (ox + x0 * img.width, oy + y0 * img.height, ox + x1 * img.width, oy + y1 * img.height)
        color = colors[b["label"]]
        draw.rectangle(rect, outline=color, width=3)
        draw.text((rect[0] + 4, rect[1] + 3), b["label"], fill=color)
    return cell


def photo_grid(rows: list[dict], cache_dir: str, per_class: int, path: str,
               notes: list[str] | None = None) -> int:
    """Source photos with boxes, `per_class` photos per label (first by ImageID). Rows are
    plan or manifest rows. A photo that cannot be drawn is skipped (the next one takes its
    place) and noted in `notes`. Returns the number of photos drawn."""
    notes = [] if notes is None else notes
    labels = list(dict.fromkeys(sorted((r["label_index"], r["label"]) for r in rows)))
    colors = {label: COLORS[i % len(COLORS)] for i, (_, label) in enumerate(labels)}
    by_image: dict[str, list[dict]] = collections.defaultdict(list)
    for r in rows:
        by_image[r["image_id"]].append(r)
    grid = Image.new("RGB", (CELL * per_class, CELL * max(1, len(labels))), (255, 255, 255))
    drawn = 0
    for row_i, (_, label) in enumerate(labels):
        ids = sorted({r["image_id"] for r in rows if r["label"] == label})
        col = 0
        for image_id in ids:
            if col == per_class:
                break
            boxes = by_image[image_id]
            data = _cached_photo(cache_dir, image_id, boxes[0].get("source", ""),
                                 boxes[0].get("source_sha256", ""))
            if data is None:
                continue
            try:
                cell = _cell(data, boxes, boxes[0].get("rotation"), colors)
            except Exception as err:  # a hostile or damaged photo: skip it, say so
                _skipped(notes, f"photo {image_id}", err)
                continue
            grid.paste(cell, (col * CELL, row_i * CELL))
            col += 1
            drawn += 1
    grid.save(path)
    return drawn


def _crops_by_class_and_split(dataset_dir: str, per_cell: int) -> dict[tuple[str, str], list[bytes]]:
    info = json.load(open(os.path.join(dataset_dir, "dataset_info.json")))
    features = examples.dataset_features(dataset_dir)
    labels = features[examples.LABEL].names
    out: dict[tuple[str, str], list[bytes]] = collections.defaultdict(list)
    splits = {split for split, _, n in examples.shards_of(info) if n}
    cells = len(labels) * len(splits)  # stop reading once every cell is full
    fmt = examples.file_format_of(info)
    for split, shard, n in examples.shards_of(info):
        if not n or all(len(out.get((label, split), ())) >= per_cell for label in labels):
            continue
        for record in shardio.read_records(os.path.join(dataset_dir, shard), fmt):
            ex = examples.decode(features, record)
            cell = out[(labels[int(ex[examples.LABEL])], split)]
            if len(cell) < per_cell:
                cell.append(ex[examples.IMAGE])
            if sum(len(c) >= per_cell for c in out.values()) == cells:
                return out
    return out


def contact_sheet(dataset_dir: str, per_cell: int, path: str, size: int = 96,
                  notes: list[str] | None = None) -> tuple[int, int]:
    """Crops in rows of (class, split), `per_cell` per row; a crop that does not decode is
    left blank and noted. Returns the image size."""
    notes = [] if notes is None else notes
    crops = _crops_by_class_and_split(dataset_dir, per_cell)
    keys = sorted(crops, key=lambda k: (k[0], SPLITS.index(k[1])
                                        if k[1] in SPLITS else 9))
    margin = 140
    sheet = Image.new("RGB", (margin + per_cell * size, max(1, len(keys)) * size), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for r, key in enumerate(keys):
        draw.text((6, r * size + size // 2 - 6), f"{key[0]} / {key[1]}", fill=(0, 0, 0))
        for c, jpeg in enumerate(crops[key]):
            try:
                tile = ImageOps.fit(Image.open(io.BytesIO(jpeg)).convert("RGB"), (size, size))
            except Exception as err:
                _skipped(notes, f"crop {c + 1} of {key[0]} / {key[1]}", err)
                continue
            sheet.paste(tile, (margin + c * size, r * size))
    sheet.save(path)
    return sheet.size


def counts_chart(report: dict, path: str) -> None:
    """Examples per class and split, as grouped bars."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    labels = list(report["examples"])
    x = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(max(5, 1.5 * len(labels)), 3.5))
    for k, split in enumerate(SPLITS):
        ax.bar(x + (k - 1) * 0.27, [report["examples"][l][split] for l in labels], 0.27, label=split)
    ax.set_xticks(x, labels, rotation=20, ha="right")
    ax.set_ylabel("examples")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def failures_chart(failures_jsonl: str, path: str) -> int:
    """Failure records by stage/reason, as horizontal bars. Returns the record count."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    counts = collections.Counter()
    with open(failures_jsonl) as f:
        for line in f:
            rec = json.loads(line)
            counts[f"{rec['stage']}/{rec['reason']}"] += 1
    items = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) or [("no failures", 0)]
    fig, ax = plt.subplots(figsize=(6, 0.4 * len(items) + 1.2))
    ax.barh([k for k, _ in items][::-1], [v for _, v in items][::-1], color="#d62728")
    ax.set_xlabel("failure records")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return sum(counts.values())


def dataset_previews(dataset_dir: str, cache_dir: str, per_class: int = 4) -> list[str]:
    """Write <dataset>/previews/{photos,crops,counts,failures}.png and, when anything was
    skipped, NOTES.txt; return the paths written. A preview that fails is skipped and noted,
    never raised: previews do not decide whether a dataset is complete."""
    import pyarrow.parquet as pq
    out = os.path.join(dataset_dir, "previews")
    os.makedirs(out, exist_ok=True)
    notes: list[str] = []
    paths: list[str] = []

    def attempt(name: str, draw) -> None:
        try:
            draw(os.path.join(out, name))
            paths.append(os.path.join(out, name))
        except Exception as err:
            _skipped(notes, name, err)

    if cache_dir and os.path.isdir(cache_dir):
        attempt("photos.png", lambda path: photo_grid(
            pq.read_table(os.path.join(dataset_dir, "manifest.parquet")).to_pylist(),
            cache_dir, per_class, path, notes))
    attempt("crops.png", lambda path: contact_sheet(dataset_dir, 2 * per_class, path,
                                                    notes=notes))
    attempt("counts.png", lambda path: counts_chart(
        json.load(open(os.path.join(dataset_dir, "build_report.json"))), path))
    attempt("failures.png", lambda path: failures_chart(
        os.path.join(dataset_dir, "failures.jsonl"), path))
    if notes:
        with open(os.path.join(out, NOTES_FILE), "w") as f:
            f.write("".join(note + "\n" for note in notes))
        paths.append(os.path.join(out, NOTES_FILE))
    return paths


def command(args) -> int:
    """`open-sandwiches preview` with parsed flags (pipelines/cli.py declares them)."""
    if bool(args.plan) == bool(args.dataset):
        raise ValueError("give exactly one of --plan DIR or --dataset DIR")
    cache_dir = args.cache_dir or fetch.default_cache_dir()
    if args.plan:
        from pipelines import plan
        rows = plan.read_plan(args.plan).to_pylist()
        out = args.output or os.path.join(args.plan, "photos.png")
        notes: list[str] = []
        n = photo_grid(rows, cache_dir, args.per_class, out, notes)
        print(f"wrote {out} ({n} photos found in {cache_dir})")
        for note in notes:
            print(f"  {note}")
        return 0
    if not os.path.isfile(os.path.join(args.dataset, "dataset_info.json")):
        raise FileNotFoundError(f"{args.dataset} is not a dataset written by build (it has "
                                f"no dataset_info.json)")
    for path in dataset_previews(args.dataset, cache_dir, args.per_class):
        print(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    from pipelines import cli
    return cli.run("preview", argv)


if __name__ == "__main__":
    sys.exit(main())
