"""Catalogs and flag sets that pin down the plan's semantics, shared by the plan tests and
the script that recorded the golden outputs in tests/data/golden_plan/.

The golden outputs were written by the row-at-a-time plan (commit 36e1f11, before the
columnar plan); the columnar plan must give the same boxes, box_index, splits, limit
choice and failures for the same inputs. `quirky_catalog` adds what the generated catalogs
lack: duplicate boxes (identical, and equal after parsing but spelt differently), an image
row with an odd Rotation, a photo listed twice in the image table, invalid coordinates and
ImageIDs, and short rows.
"""
from __future__ import annotations

import csv
import gzip
import io
import json
import os
import random

from pipelines.demo import catalog

HAMBURGER, SANDWICH, SUBMARINE = "/m/0cdn1", "/m/0l515", "/m/06pcq"

# name -> (catalog, flags after --output_dir)
CASES = {
    "small_default": ("small", ["--classes", "Hamburger", "Sandwich"]),
    "quirky_default": ("quirky", ["--classes", "Hamburger", "Sandwich"]),
    "quirky_limit": ("quirky", ["--classes", "Hamburger", "Sandwich", "--max_per_class", "25",
                                "--seed", "3"]),
    "quirky_subclasses": ("quirky", ["--classes", "Sandwich", "--include_subclasses"]),
    "quirky_relabel_limit": ("quirky", ["--classes", "Sandwich", "Hamburger",
                                        "--include_subclasses", "--relabel_to_parent",
                                        "--max_per_class", "30", "--seed", "1"]),
    "quirky_openimages_split": ("quirky", ["--classes", "Hamburger", "Sandwich",
                                           "--split_source", "openimages"]),
    "quirky_fractions": ("quirky", ["--classes", "Hamburger", "Submarine sandwich",
                                    "--split_fractions", "0.5", "0.25", "0.25", "--seed", "9"]),
    "quirky_filters": ("quirky", ["--classes", "Hamburger", "Sandwich", "--is_occluded",
                                  "exclude", "--is_depiction", "only", "--min_box_size", "0.2"]),
}


def small_catalog(out: str) -> catalog.CatalogFiles:
    """The same catalog as tests/conftest.py's small_catalog fixture."""
    return catalog.write_catalog(out, ["Hamburger", "Sandwich"], n_images=60, seed=7,
                                 orphan_boxes=3)


def quirky_catalog(out: str) -> catalog.CatalogFiles:
    """400 photos of Hamburger, Sandwich and Submarine sandwich, plus hostile rows."""
    files = catalog.write_catalog(out, ["Hamburger", "Sandwich", "Submarine sandwich"],
                                  n_images=400, seed=13, orphan_boxes=6)
    rng = random.Random(13)
    with open(files.bbox_csv) as f:
        header, *lines = f.read().splitlines()
    with open(files.images_csv) as f:
        image_header, *image_lines = f.read().splitlines()
    ours = [l for l in lines if l.split(",")[2] in (HAMBURGER, SANDWICH, SUBMARINE)]
    extra = []
    for line in rng.sample(ours, 12):            # identical duplicates
        extra.append(line)
    for line in rng.sample(ours, 8):             # same values, other spelling
        f = line.split(",")
        f[4:8] = [repr(float(v)) + "0" if "e" not in repr(float(v)) else v for v in f[4:8]]
        extra.append(",".join(f))
    bad_id = ours[0].split(",")
    extra.append(",".join(["../../etc/passwd"] + bad_id[1:]))
    extra.append(",".join([bad_id[0].upper()] + bad_id[1:]))
    inverted = ours[1].split(",")
    inverted[4], inverted[5] = inverted[5], inverted[4]
    extra.append(",".join(inverted))
    nan = ours[2].split(",")
    nan[6] = "nan"
    extra.append(",".join(nan))
    flag = ours[3].split(",")
    flag[10] = "3"
    extra.append(",".join(flag))
    extra.append(",".join(ours[4].split(",")[:7]))  # a short row
    lines = lines + extra
    rng.shuffle(lines)
    with open(files.bbox_csv, "w", newline="") as f:
        f.write(header + "\n" + "\n".join(lines) + "\n")
    # An odd Rotation, and one photo listed twice (another title: the first in row order wins
    # nothing; the plan picks a row by content, never by position).
    odd = next(csv.reader([image_lines[5]]))
    odd[-1] = "45.0"
    twice = next(csv.reader([image_lines[9]]))
    twice[7] = "A second title"
    image_lines[5] = _csv_line(odd)
    image_lines.append(_csv_line(twice))
    with open(files.images_csv, "w", newline="") as f:
        f.write(image_header + "\n" + "\n".join(image_lines))
    return files


def _csv_line(fields: list[str]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerow(fields)  # quotes fields with newlines
    return out.getvalue()[:-2]


def make_catalog(kind: str, out: str) -> catalog.CatalogFiles:
    return {"small": small_catalog, "quirky": quirky_catalog}[kind](out)


def plan_records(rows: list[dict]) -> list[str]:
    """Plan rows as sorted JSON lines (floats as float32 values, as plan files store)."""
    return sorted(json.dumps(r, sort_keys=True, ensure_ascii=False) for r in rows)


def golden_dir(case: str) -> str:
    return os.path.join(os.path.dirname(__file__), "data", "golden_plan", case)


def read_golden(case: str) -> tuple[list[str], list[dict], dict]:
    """(plan records, failure records, summary without metrics) recorded for a case."""
    d = golden_dir(case)
    with gzip.open(os.path.join(d, "plan.jsonl.gz"), "rt", encoding="utf-8") as f:
        records = f.read().splitlines()
    with open(os.path.join(d, "failures.jsonl"), encoding="utf-8") as f:
        failures = [json.loads(line) for line in f]
    with open(os.path.join(d, "summary.json"), encoding="utf-8") as f:
        summary = json.load(f)
    return records, failures, summary
