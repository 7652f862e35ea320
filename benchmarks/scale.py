"""Benchmark: full-size builds on one machine: memory as the dataset grows, runners agreeing.

On the full-size synthetic tables (14.6M boxes, 1.74M images; benchmarks/.data), builds
datasets of two generated classes with over 200K boxes each (Eagle and Loveseat), capped by
`--max_per_class`, from the local image server with 100 ms added latency (its own process,
serving a pool of 300 rendered 640x480 photos for any ImageID), 224x224 crops. Each build
runs in its own process, so its peak memory is its own.

    python -m benchmarks.scale memory [--per_class 10000 50000]
        in-process builds of 20K and 100K crops: peak RSS of each, and the ratio (target:
        the larger build peaks at <= 1.3x the smaller);
    python -m benchmarks.scale modes [--per_class 10000 --runs 3]
        one in-process build and three multi_processing (2 workers) builds of the same
        20K crops: boxes lost by each (target: none) and whether their shards are
        byte-identical to the in-process build's;
    python -m benchmarks.scale rates [--per_class 10000]
        one in-process build, with stage shares and, side by side, the scan against the
        pyarrow baseline and the fetch against a sequential requests loop.

Asserts nothing; prints tables.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import requests

from benchmarks import common

LATENCY_MS = 100
CLASSES = ("Eagle", "Loveseat")


def _start_server(work: str) -> tuple[subprocess.Popen, str]:
    from pipelines.demo import catalog
    catalog.write_catalog(work, ["Hamburger", "Sandwich"], 300, seed=21, photos=True,
                          photo_size=(640, 480))
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.demo.server", work, "--port", "0",
                             "--latency_ms", str(LATENCY_MS), "--pool"],
                            stdout=subprocess.PIPE, text=True)
    return proc, proc.stdout.readline().split(" on ")[1].split()[0]


def child_build(args) -> dict:
    """The measured build, in its own process (its peak memory is its own)."""
    from pipelines import build
    files = common.full_size_tables(1.0)
    out = tempfile.mkdtemp(prefix="bench_scale_")
    workers = ["--direct_running_mode", "multi_processing", "--direct_num_workers", "2"] \
        if args.mode == "multi_processing" else []
    start = time.perf_counter()
    report = build.run([
        "--classes", *CLASSES, "--version", "v4", "--bbox_csv", files.bbox_csv,
        "--images_csv", files.images_csv, "--output_dir", out, "--max_per_class",
        str(args.per_class[0]), "--image_source", "template", "--url_template",
        args.base_url + "/{subset}/{image_id}.jpg", "--allow_private_network",
        "--cache_dir", os.path.join(out, "cache"), "--image_size", "224", "--no_previews",
        *workers])
    return {"seconds": time.perf_counter() - start, "report": report, **common.peak_rss_mib()}


def _build(base_url: str, per_class: int, mode: str) -> dict:
    return common.run_child(["-m", "benchmarks.scale", "child", "--base_url", base_url,
                             "--per_class", str(per_class), "--mode", mode])


def _peak(r: dict) -> float:
    return max(r["peak_rss_mib"], r["peak_child_rss_mib"])


def memory(base_url: str, sizes: list[int]) -> None:
    runs = [(n, _build(base_url, n, "in_memory")) for n in sizes]
    print(f"\n{'crops':>9}{'photos':>9}{'wall s':>9}{'peak MiB':>10}{'vs first':>10}{'lost':>6}")
    first = _peak(runs[0][1])
    for n, r in runs:
        inv = r["report"]["invariant"]
        photos = r["report"]["metrics"]["counters"].get("fetch/photos_fetched", 0)
        print(f"{inv['examples']:>9,}{photos:>9,}{r['seconds']:>9.0f}{_peak(r):>10.0f}"
              f"{_peak(r) / first:>10.2f}{inv['lost']:>6}")
    print("\ntarget: the larger build peaks at <= 1.3x the smaller")


def modes(base_url: str, per_class: int, n_runs: int) -> None:
    reference = _build(base_url, per_class, "in_memory")
    runs = [("in-process", reference)] + [(f"multi_processing #{i + 1}",
                                           _build(base_url, per_class, "multi_processing"))
                                          for i in range(n_runs)]
    digests = reference["report"]["shard_sha256"]
    print(f"\n{'build':<22}{'wall s':>8}{'peak MiB':>10}{'examples':>10}{'failures':>10}"
          f"{'lost':>6}  shards identical")
    for name, r in runs:
        inv = r["report"]["invariant"]
        same = r["report"]["shard_sha256"] == digests
        print(f"{name:<22}{r['seconds']:>8.0f}{_peak(r):>10.0f}{inv['examples']:>10,}"
              f"{inv['fetch_and_crop_failures']:>10,}{inv['lost']:>6}  {same}")


def rates(base_url: str, per_class: int) -> None:
    built = _build(base_url, per_class, "in_memory")
    baseline = common.run_child(["-m", "benchmarks.plan_scale", "--child", "baseline",
                                 "--selection", "25k"])
    files = common.full_size_tables(1.0)
    import pandas as pd
    ids = pd.read_csv(files.images_csv, usecols=["ImageID"], nrows=300).ImageID
    urls = [f"{base_url}/train/{i}.jpg" for i in ids]
    start = time.perf_counter()
    for url in urls:
        requests.get(url, timeout=30).raise_for_status()
    sequential_rate = len(urls) / (time.perf_counter() - start)
    r = built["report"]
    counters, timings = r["metrics"]["counters"], r["metrics"]["timings"]
    secs = built["seconds"]
    rows = counters["scan_boxes/rows_scanned"] + counters["scan_images/rows_scanned"]
    photos = counters["fetch/photos_fetched"] + counters.get("fetch/photos_failed", 0)
    crops = counters["crop/crops"]
    # The fetch window overlaps its photos, so it has no busy time of its own: it shows as
    # photos/s over the build's wall time below.
    busy = {"scan": timings["timing/scan_boxes_ms"]["sum"] + timings["timing/scan_images_ms"]["sum"],
            "join": timings["timing/join_ms"]["sum"], "crop": timings["timing/crop_ms"]["sum"],
            "serialize": timings["timing/serialize_us"]["sum"] / 1000,
            "write": timings["timing/write_shard_ms"]["sum"]}
    total = sum(busy.values())
    print(f"\nbuild of {crops:,} crops from {photos:,} photos, in-process, {LATENCY_MS} ms "
          f"latency: {secs:.0f} s, peak {_peak(built):.0f} MiB, lost {r['invariant']['lost']}")
    print(f"\n{'stage':<12}{'busy s':>9}{'share':>8}   (of the stages' busy time; fetch overlaps)")
    for stage, ms in busy.items():
        print(f"{stage:<12}{ms / 1000:>9.1f}{ms / total:>8.0%}")
    scan_s = busy["scan"] / 1000
    print(f"\nscan: {rows / scan_s / 1e6:.2f} M rows/s of stage time; pyarrow read+join of "
          f"two classes {baseline['seconds']:.1f} s")
    print(f"fetch: {photos / secs:.0f} photos/s over the build's wall time; sequential loop "
          f"{sequential_rate:.1f} photos/s ({photos / secs / sequential_rate:.0f}x)")
    print(f"crop: {crops / (busy['crop'] / 1000):.0f} crops/s per busy core")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=("memory", "modes", "rates", "child"))
    p.add_argument("--per_class", type=int, nargs="+", default=None)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--mode", choices=("multi_processing", "in_memory"), default="in_memory",
                   help=argparse.SUPPRESS)
    p.add_argument("--base_url", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.what == "child":
        print(json.dumps(child_build(args), default=str))
        return 0
    common.full_size_tables(1.0)
    server, base_url = _start_server(tempfile.mkdtemp(prefix="bench_scale_photos_"))
    try:
        if args.what == "memory":
            memory(base_url, args.per_class or [10_000, 50_000])
        elif args.what == "modes":
            modes(base_url, (args.per_class or [10_000])[0], args.runs)
        else:
            rates(base_url, (args.per_class or [10_000])[0])
    finally:
        server.terminate()
        server.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
