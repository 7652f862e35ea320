"""Benchmark: `plan` at full size, for small to all-class selections, beside pyarrow.

On the full-size synthetic V4 tables (14.6M boxes, 1.74M images, 600 labels with Open
Images' skew: a few labels over a million boxes; benchmarks/.data), for selections of
about 25K boxes (Hamburger and Sandwich), 220K and 1.3M boxes (the generated labels
nearest those sizes) and all 600 classes, times side by side, each in a fresh process so
its peak memory is its own, interleaved, median of the runs:

- baseline: what a careful engineer writes with pyarrow alone: `pyarrow.csv.read_csv` of
  the box table's typed columns, an `is_in` filter, the image table read whole and
  filtered by ImageID, `Table.join`, and the joined table written as one zstd Parquet
  file (plan writes its rows too); its time without the write is printed beside;
- plan: `open-sandwiches plan` for the same classes on the in-process runner.

Targets (issue 13): plan / baseline <= 1.5 for every selection, plan's peak RSS <= 2 GB.
Prints a table; asserts nothing.

    python -m benchmarks.plan_scale                # full size; first run generates the tables
    python -m benchmarks.plan_scale --repeats 1 --selections 25k all
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

SELECTIONS = ("25k", "220k", "1.3m", "all")
_TARGETS = {"220k": 220_000, "1.3m": 1_300_000}


def _selection_mids(files, name: str) -> list[str] | None:
    """The MIDs of a selection (None: all classes), chosen once from the table's counts."""
    if name == "25k":
        return ["/m/0cdn1", "/m/0l515"]
    if name == "all":
        return None
    cache = os.path.join(os.path.dirname(files.bbox_csv), "label_counts.json")
    if not os.path.exists(cache):
        import pyarrow.compute as pc
        import pyarrow.csv as pacsv
        t = pacsv.read_csv(files.bbox_csv, convert_options=pacsv.ConvertOptions(
            include_columns=["LabelName"]))
        counts = {r["values"]: r["counts"] for r in pc.value_counts(t["LabelName"]).to_pylist()}
        with open(cache, "w") as f:
            json.dump(counts, f)
    with open(cache) as f:
        counts = json.load(f)
    return [min(counts, key=lambda m: abs(counts[m] - _TARGETS[name]))]


def baseline(files, mids: list[str] | None) -> dict:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    start = time.perf_counter()
    box_cols = {"ImageID": pa.string(), "LabelName": pa.string(), "XMin": pa.float64(),
                "XMax": pa.float64(), "YMin": pa.float64(), "YMax": pa.float64(),
                **{f: pa.int8() for f in ("IsOccluded", "IsTruncated", "IsGroupOf",
                                          "IsDepiction", "IsInside")}}
    boxes = pacsv.read_csv(files.bbox_csv, convert_options=pacsv.ConvertOptions(
        column_types=box_cols, include_columns=list(box_cols)))
    if mids is not None:
        boxes = boxes.filter(pc.is_in(boxes["LabelName"], value_set=pa.array(mids)))
    images = pacsv.read_csv(files.images_csv,
                            parse_options=pacsv.ParseOptions(newlines_in_values=True))
    images = images.filter(pc.is_in(images["ImageID"], value_set=pc.unique(boxes["ImageID"])))
    joined = boxes.join(images, "ImageID")
    read_join = time.perf_counter() - start
    out = tempfile.mkdtemp(prefix="bench_baseline_")
    pq.write_table(joined, os.path.join(out, "joined.parquet"), compression="zstd")
    return {"seconds": time.perf_counter() - start, "read_join_seconds": read_join,
            "boxes": joined.num_rows, **common.peak_rss_mib()}


def ours(files, mids: list[str] | None) -> dict:
    from pipelines import plan
    from pipelines.ontology import Ontology

    classes = mids if mids is not None else sorted(Ontology.load("v4").names)
    out = tempfile.mkdtemp(prefix="bench_plan_")
    start = time.perf_counter()
    summary = plan.run(["--classes", *classes, "--version", "v4", "--bbox_csv", files.bbox_csv,
                        "--images_csv", files.images_csv, "--output_dir", out])
    return {"seconds": time.perf_counter() - start, "boxes": summary["totals"]["boxes"],
            "plan_files": summary["plan_files"],
            "complete": all(s["complete"] for s in summary["scan"].values()),
            **common.peak_rss_mib()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--selections", nargs="+", choices=SELECTIONS, default=list(SELECTIONS))
    p.add_argument("--child", choices=("baseline", "plan"), help=argparse.SUPPRESS)
    p.add_argument("--selection", choices=SELECTIONS, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    files = common.full_size_tables(1.0)
    if args.child:
        mids = _selection_mids(files, args.selection)
        print(json.dumps((baseline if args.child == "baseline" else ours)(files, mids)))
        return 0
    rows = []
    for name in args.selections:
        runs: dict[str, list[dict]] = {"baseline": [], "plan": []}
        for _ in range(args.repeats):  # interleaved: drifts in machine load hit both alike
            for kind in ("baseline", "plan"):
                runs[kind].append(common.run_child(["-m", "benchmarks.plan_scale", "--child",
                                                    kind, "--selection", name]))
        base = statistics.median(r["seconds"] for r in runs["baseline"])
        ours_s = statistics.median(r["seconds"] for r in runs["plan"])
        peak = lambda k: max(max(r["peak_rss_mib"], r["peak_child_rss_mib"]) for r in runs[k])
        rows.append((name, runs["plan"][0]["boxes"], base,
                     statistics.median(r["read_join_seconds"] for r in runs["baseline"]),
                     peak("baseline"), ours_s, ours_s / base, peak("plan"),
                     runs["plan"][0]["boxes"] == runs["baseline"][0]["boxes"],
                     all(r["complete"] for r in runs["plan"])))
    print(f"\n14.6M box rows + 1.74M image rows; {args.repeats} runs each, median\n")
    print(f"{'selection':<10}{'boxes':>12}{'pyarrow s':>11}{'(no write)':>11}{'peak MiB':>10}"
          f"{'plan s':>9}{'ratio':>7}{'peak MiB':>10}  same boxes  scan adds up")
    for name, boxes, base, no_write, bpeak, ours_s, ratio, opeak, same, complete in rows:
        print(f"{name:<10}{boxes:>12,}{base:>11.1f}{no_write:>11.1f}{bpeak:>10.0f}"
              f"{ours_s:>9.1f}{ratio:>7.2f}{opeak:>10.0f}  {str(same):<10}  {complete}")
    print("\ntargets: ratio <= 1.5, plan peak <= 2048 MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
