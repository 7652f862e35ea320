"""Benchmark: `plan` on the full-size tables vs a plain pyarrow + pandas baseline.

Generates (once, cached in benchmarks/.data) a synthetic V4 box table of 14.6M rows
(~1.2 GB, 600 labels, skewed) and a 1.74M-row image table, then times, side by side:

- baseline: `pyarrow.csv.read_csv` of both tables with typed, selected columns, an
  `is_in` filter on the two classes, and a pandas merge on ImageID;
- ours: `plan` for the same two classes, DirectRunner (in-process FnApiRunner), and
  again in multi-processing mode with 2 workers.

Each runs in a fresh process, so its peak memory is its own. Target: plan / baseline <= 2.0
and peak memory under 1.5 GB. Prints a table; asserts nothing.

    python -m benchmarks.scan            # full size (first run generates ~1.8 GB of CSV)
    python -m benchmarks.scan --scale 0.05 --repeats 1
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

from benchmarks import common

CLASSES = ("Hamburger", "Sandwich")
MIDS = ("/m/0cdn1", "/m/0l515")


def baseline(bbox_csv: str, images_csv: str) -> dict:
    """What a careful engineer would write by hand: typed pyarrow reads and a pandas merge."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    start = time.perf_counter()
    box_cols = {"ImageID": pa.string(), "LabelName": pa.string(), "XMin": pa.float32(),
                "XMax": pa.float32(), "YMin": pa.float32(), "YMax": pa.float32(),
                "IsOccluded": pa.int8(), "IsTruncated": pa.int8(), "IsGroupOf": pa.int8(),
                "IsDepiction": pa.int8(), "IsInside": pa.int8()}
    boxes = pacsv.read_csv(bbox_csv, convert_options=pacsv.ConvertOptions(
        column_types=box_cols, include_columns=list(box_cols)))
    boxes = boxes.filter(pc.is_in(boxes["LabelName"], value_set=pa.array(MIDS))).to_pandas()
    image_cols = ["ImageID", "Subset", "OriginalURL", "OriginalLandingURL", "License",
                  "AuthorProfileURL", "Author", "Title", "OriginalSize", "OriginalMD5",
                  "Thumbnail300KURL", "Rotation"]
    images = pacsv.read_csv(images_csv, convert_options=pacsv.ConvertOptions(
        include_columns=image_cols),
        parse_options=pacsv.ParseOptions(newlines_in_values=True)).to_pandas()
    joined = boxes.merge(images, on="ImageID")
    return {"seconds": time.perf_counter() - start, "boxes": len(joined),
            **common.peak_rss_mib()}


def ours(bbox_csv: str, images_csv: str, workers: int) -> dict:
    from pipelines import plan

    out = tempfile.mkdtemp(prefix="bench_plan_")
    extra = (["--direct_running_mode", "multi_processing", "--direct_num_workers", str(workers)]
             if workers > 1 else [])
    start = time.perf_counter()
    summary = plan.run(["--classes", *CLASSES, "--version", "v4", "--bbox_csv", bbox_csv,
                        "--images_csv", images_csv, "--output_dir", out, *extra])
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "boxes": summary["totals"]["boxes"],
            "rows_scanned": summary["metrics"].get("scan_boxes/rows_scanned", 0),
            **common.peak_rss_mib()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", type=float, default=1.0, help="fraction of the full size")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--child", choices=("baseline", "plan"), help=argparse.SUPPRESS)
    p.add_argument("--workers", type=int, default=1, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    files = common.full_size_tables(args.scale)
    if args.child == "baseline":
        print(json.dumps(baseline(files.bbox_csv, files.images_csv)))
        return 0
    if args.child == "plan":
        print(json.dumps(ours(files.bbox_csv, files.images_csv, args.workers)))
        return 0

    size_mb = (os.path.getsize(files.bbox_csv) + os.path.getsize(files.images_csv)) / 2**20
    runs: dict[str, list[dict]] = {"baseline": [], "plan": [], "plan_mp2": []}
    child = ["-m", "benchmarks.scan", "--scale", str(args.scale)]
    for _ in range(args.repeats):  # interleaved, so drifts in machine load hit all alike
        runs["baseline"].append(common.run_child(child + ["--child", "baseline"]))
        runs["plan"].append(common.run_child(child + ["--child", "plan"]))
        runs["plan_mp2"].append(common.run_child(child + ["--child", "plan", "--workers", "2"]))
    base = statistics.median(r["seconds"] for r in runs["baseline"])
    print(f"\ninput: {size_mb:,.0f} MiB of CSV, "
          f"{runs['plan'][0]['rows_scanned']:,} box rows; {args.repeats} runs each, median\n")
    print(f"{'step':<34}{'seconds':>9}{'ratio':>8}{'peak MiB':>10}{'boxes':>9}")
    for name, label in (("baseline", "pyarrow read + pandas merge"),
                        ("plan", "plan, DirectRunner in-process"),
                        ("plan_mp2", "plan, multi_processing x2")):
        secs = statistics.median(r["seconds"] for r in runs[name])
        peak = max(max(r["peak_rss_mib"], r["peak_child_rss_mib"]) for r in runs[name])
        print(f"{label:<34}{secs:>9.1f}{secs / base:>8.2f}{peak:>10.0f}{runs[name][0]['boxes']:>9,}")
    rate = runs["plan"][0]["rows_scanned"] / statistics.median(r["seconds"] for r in runs["plan"])
    print(f"\nplan scan rate: {rate / 1e6:.2f} M box rows/s; target: ratio <= 2.0, peak < 1536 MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
